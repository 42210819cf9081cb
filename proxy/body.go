package proxy

import (
	"errors"
	"io"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/valyala/fasthttp"
)

// body is a caller's request body as the proxy forwards it: in hand
// (replay true: bytes, possibly none) or streaming from the caller (then
// stream and size, -1 when unknown).
type body struct {
	cb     callerBody
	bytes  []byte
	replay bool
	held   *heldBody
	stream io.Reader
	size   int
}

// armBody puts every request body, before anything reads it, behind
// max_body_bytes and a callerBody that tells the caller's faults from
// WeChat's. The body read deadline (body_read_timeout) is armed by the
// server as soon as the head has arrived (newServer), so no path — a local
// token answer decoding its JSON, an early refusal whose unread body the
// server drains — reads a caller's body without it.
func (p *Proxy) armBody(r *request) {
	h := &r.ctx.Request.Header
	cl := h.ContentLength()
	if cl == 0 || cl == -2 {
		return
	}
	var in io.Reader = r.ctx.RequestBodyStream()
	if in == nil { // a server without StreamRequestBody read it already
		in = &prefix{b: r.ctx.Request.Body()}
	}
	r.body.cb = callerBody{r: in, limit: p.maxBody, declared: int64(cl), armed: true}
}

// prepareBody bounds the request body by max_body_bytes and buffers it
// when it fits in retry_body_bytes and the shared buffer budget
// (max_buffered_bytes), so that a token retry can replay it byte for byte.
// A larger body streams to WeChat and is not replayed. Buffers grow with
// the bytes that actually arrive; a declared Content-Length reserves
// nothing.
//
// Every read of the caller's body goes through a callerBody, which records
// the caller's own failures (bad chunk framing, a truncated body, a slow
// sender, an oversized body) so they are answered as the caller's error and
// never count against WeChat.
func (p *Proxy) prepareBody(r *request) error {
	b := &r.body
	cb := &b.cb
	if cb.declared > p.maxBody {
		return errTooLarge(p.maxBody)
	}
	if !cb.armed {
		b.replay = true
		return nil
	}
	b.size = -1
	if cb.declared >= 0 {
		b.size = int(cb.declared)
	}
	if cb.declared > p.retryBody {
		b.stream = cb // streams; too large to replay
		return nil
	}
	buf, err := p.buffers.read(cb, p.retryBody)
	switch {
	case err != nil:
		p.buffers.release(buf)
		return bodyError(err)
	case buf.streamRest:
		// Over retry_body_bytes or the buffer budget: send what was read,
		// then stream the rest.
		b.stream = io.MultiReader(&prefix{b: buf.b}, cb)
		b.held = buf
		return nil
	}
	b.bytes, b.replay, b.held = buf.b, true, buf
	return nil
}

// prefix reads a byte slice without a bytes.Reader's allocation.
type prefix struct{ b []byte }

func (p *prefix) Read(dst []byte) (int, error) {
	if len(p.b) == 0 {
		return 0, io.EOF
	}
	n := copy(dst, p.b)
	p.b = p.b[n:]
	return n, nil
}

// callerBody is the caller's request body as the proxy reads it. It
// enforces max_body_bytes, turns a body that ends before its
// Content-Length into io.ErrUnexpectedEOF (fasthttp reports it as the end),
// and remembers the first read error, which is always the caller's doing.
type callerBody struct {
	r        io.Reader
	limit    int64
	declared int64 // Content-Length, -1 chunked
	n        int64
	armed    bool  // the request has a body
	err      error // first caller-side read error
	eof      bool  // read to its end
}

func (b *callerBody) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if b.eof {
		return 0, io.EOF
	}
	n, err := b.r.Read(p)
	b.n += int64(n)
	switch {
	case b.n > b.limit:
		err = errTooLarge(b.limit)
	case err == io.EOF && b.declared >= 0 && b.n < b.declared:
		err = io.ErrUnexpectedEOF
	}
	switch {
	case err == io.EOF:
		b.eof = true
	case err != nil:
		b.err = err
	}
	return n, err
}

// errTooLarge is a body over max_body_bytes.
func errTooLarge(limit int64) *Error {
	return &Error{Kind: KindBodyTooLarge, Msg: "request body is larger than max_body_bytes (" + strconv.FormatInt(limit, 10) + " bytes)"}
}

// bodyError turns a failure to read the caller's body into the caller's
// error: 413 over max_body_bytes, 408 too slow, else 400.
func bodyError(err error) error {
	var pe *Error
	var te interface{ Timeout() bool }
	switch {
	case errors.As(err, &pe):
		return pe
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		return &Error{Kind: KindBodyTooLarge, Msg: "request body is larger than max_body_bytes", Err: err}
	case errors.As(err, &te) && te.Timeout():
		return &Error{Kind: KindBodyTimeout, Msg: "request body did not arrive within body_read_timeout", Err: err}
	case errors.Is(err, io.ErrUnexpectedEOF):
		return &Error{Kind: KindBadRequest, Msg: "request body is shorter than its Content-Length or its chunked framing is broken", Err: err}
	}
	return &Error{Kind: KindBadRequest, Msg: "request body could not be read (malformed or cut off)", Err: err}
}

// callerFault returns the caller's body error behind a failed upstream
// call, if the failure was the caller's doing.
func (r *request) callerFault() error {
	if r.body.cb.err != nil {
		return bodyError(r.body.cb.err)
	}
	return nil
}

// buffers lends request body buffers within a byte budget shared by all
// requests (max_buffered_bytes). Small buffers are pooled.
type buffers struct {
	budget int64
	used   atomic.Int64
	pool   sync.Pool
}

// heldBody is one buffered request body and its share of the budget,
// which is always the capacity of b.
type heldBody struct {
	b          []byte
	reserved   int64
	streamRest bool // the body did not fit; the rest is still unread
}

const (
	firstChunk  = 4 << 10  // first buffer size; the buffer doubles from there
	poolMaxSize = 64 << 10 // larger buffers are not pooled
)

// read reads r into a held buffer of at most limit bytes, reserving budget
// before every growth. When the body is longer than limit or the budget is
// spent, it stops with streamRest set and the bytes read so far in b.
func (bs *buffers) read(r io.Reader, limit int64) (*heldBody, error) {
	h, _ := bs.pool.Get().(*heldBody)
	if h == nil || !bs.reserve(h, int64(cap(h.b))) {
		h = new(heldBody)
	}
	for {
		if len(h.b) == cap(h.b) {
			next := min(int64(max(firstChunk, 2*cap(h.b))), limit+1)
			if next <= int64(cap(h.b)) || !bs.reserve(h, next-int64(cap(h.b))) {
				h.streamRest = true
				return h, nil
			}
			nb := make([]byte, len(h.b), next)
			copy(nb, h.b)
			h.b = nb
		}
		n, err := r.Read(h.b[len(h.b):cap(h.b)])
		h.b = h.b[:len(h.b)+n]
		if int64(len(h.b)) > limit {
			h.streamRest = true
			return h, nil
		}
		if err == io.EOF {
			return h, nil
		}
		if err != nil {
			return h, err
		}
	}
}

// reserve takes n more bytes of the budget for h, if they are free.
func (bs *buffers) reserve(h *heldBody, n int64) bool {
	if n == 0 {
		return true
	}
	if bs.used.Add(n) > bs.budget {
		bs.used.Add(-n)
		return false
	}
	h.reserved += n
	return true
}

// release gives h's budget back and pools small buffers.
func (bs *buffers) release(h *heldBody) {
	if h == nil {
		return
	}
	bs.used.Add(-h.reserved)
	h.reserved, h.streamRest = 0, false
	if cap(h.b) > poolMaxSize {
		return
	}
	h.b = h.b[:0]
	bs.pool.Put(h)
}

// Buffered reports the bytes of request bodies buffered right now.
func (p *Proxy) Buffered() int64 { return p.buffers.used.Load() }
