package proxy

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// prepareBody bounds the request body by max_body_bytes and the time the
// caller may take to send it (body_read_timeout), and buffers it when it
// fits in retry_body_bytes and the shared buffer budget
// (max_buffered_bytes), so that a token retry can replay it byte for byte.
// A larger body streams to WeChat and is not replayed. Buffers grow with
// the bytes that actually arrive; a declared Content-Length reserves
// nothing.
//
// Every read of the caller's body goes through a callerBody, which records
// the caller's own failures (bad chunk framing, a truncated body, a slow
// sender, an oversized body) so they are answered as the caller's error and
// never count against WeChat.
func (p *Proxy) prepareBody(r *http.Request, c *call) error {
	if r.ContentLength > p.maxBody {
		return &Error{Kind: KindBodyTooLarge, Msg: "request body is larger than max_body_bytes (" + strconv.FormatInt(p.maxBody, 10) + " bytes)"}
	}
	if !hasBody(r) {
		c.replay = true
		return nil
	}
	cb := &c.cbody
	if r.ContentLength > p.retryBody {
		return nil // streams; too large to replay
	}
	buf, err := p.buffers.read(cb, p.retryBody)
	switch {
	case err != nil:
		p.buffers.release(buf)
		return c.bodyError(err)
	case buf.streamRest:
		// Over retry_body_bytes or the buffer budget: send what was read,
		// then stream the rest.
		r.Body = readCloser{io.MultiReader(bytes.NewReader(buf.b), cb), cb}
		c.held = buf
		return nil
	}
	c.body, c.replay, c.held = buf.b, true, buf
	return nil
}

func hasBody(r *http.Request) bool {
	return r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0
}

// armBody puts every request body, before anything reads it, behind
// max_body_bytes, the body read deadline (body_read_timeout) and a
// callerBody that tells the caller's faults from WeChat's. It runs first,
// so that no path — a local token answer decoding its JSON, an early
// refusal whose unread body net/http drains — reads a caller's body
// without a deadline.
func (p *Proxy) armBody(w http.ResponseWriter, r *http.Request, c *call) {
	if !hasBody(r) {
		return
	}
	rc := http.NewResponseController(w)
	if p.bodyTimeout > 0 && rc.SetReadDeadline(p.now().Add(p.bodyTimeout)) == nil {
		c.clearDeadline = rc
	}
	cb := &c.cbody
	cb.rc, cb.c = http.MaxBytesReader(w, r.Body, p.maxBody), c
	r.Body = cb
}

// callerBody is the caller's request body as the proxy reads it. It
// remembers the first read error that is the caller's doing, and clears
// the body read deadline once the body has arrived, so a slow upstream
// answer is never cut by the caller's deadline.
type callerBody struct {
	rc  io.ReadCloser
	c   *call
	err error // first caller-side read error
	eof bool  // read to its end
}

func (b *callerBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	switch {
	case err == io.EOF:
		b.eof = true
		b.c.bodyDone()
	case err != nil && b.err == nil:
		b.err = err
	}
	return n, err
}

func (b *callerBody) Close() error { return b.rc.Close() }

// bodyDone lifts the body read deadline once the body is in. It stays in
// force otherwise: net/http may still read (discard) the rest of a body the
// proxy gave up on, and a slow caller must not hold the connection then.
func (c *call) bodyDone() {
	if c.clearDeadline != nil {
		_ = c.clearDeadline.SetReadDeadline(time.Time{})
		c.clearDeadline = nil
	}
}

// bodyError turns a failure to read the caller's body into the caller's
// error: 413 over max_body_bytes, 408 too slow, else 400.
func (c *call) bodyError(err error) error {
	var mbe *http.MaxBytesError
	var te interface{ Timeout() bool }
	switch {
	case errors.As(err, &mbe):
		return &Error{Kind: KindBodyTooLarge, Msg: "request body is larger than max_body_bytes (" + strconv.FormatInt(mbe.Limit, 10) + " bytes)", Err: err}
	case errors.As(err, &te) && te.Timeout():
		return &Error{Kind: KindBodyTimeout, Msg: "request body did not arrive within body_read_timeout", Err: err}
	case errors.Is(err, io.ErrUnexpectedEOF):
		return &Error{Kind: KindBadRequest, Msg: "request body is shorter than its Content-Length or its chunked framing is broken", Err: err}
	}
	return &Error{Kind: KindBadRequest, Msg: "request body could not be read (malformed or cut off)", Err: err}
}

// callerFault returns the caller's body error behind a failed upstream
// call, if the failure was the caller's doing.
func (c *call) callerFault() error {
	if c.cbody.c != nil && c.cbody.err != nil {
		return c.bodyError(c.cbody.err)
	}
	return nil
}

type readCloser struct {
	io.Reader
	io.Closer
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
