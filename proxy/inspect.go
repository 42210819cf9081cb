package proxy

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/wxproxy/wxproxy/wechat"
)

// peekSize is how much of a JSON answer is read to find its errcode.
// WeChat's error answers are a few hundred bytes.
const peekSize = 8 << 10

// answer is an upstream answer after inspection: its head, and its body as
// the peeked bytes plus, when the answer is longer, the rest still to
// stream. close must be called once the answer is done with.
type answer struct {
	resp  *fasthttp.Response
	peek  *peekBuf  // nil for media, which is not peeked
	whole []byte    // the whole body when it is in hand (peek.buf[:n] or the response's own buffer)
	rest  io.Reader // the unread rest of the body; nil when whole
}

type peekBuf struct{ buf [peekSize]byte }

var peekPool = sync.Pool{New: func() any { return new(peekBuf) }}

// close releases the upstream response (its connection goes back to the
// pool, or is closed when the body was not read to its end) and the peek
// buffer.
func (a *answer) close() {
	if a.resp != nil {
		_ = a.resp.CloseBodyStream()
		fasthttp.ReleaseResponse(a.resp)
		a.resp = nil
	}
	if a.peek != nil {
		peekPool.Put(a.peek)
		a.peek = nil
	}
}

// inspect reads the start of every non-binary answer and records its
// errcode (JSON and text answers). The HostClient's read deadline, armed
// when the request has been written (upstream_timeout), still holds while
// the peek reads: an upstream that stalls after its headers cannot hold
// the caller longer. When more of the answer is left to stream (media,
// long answers), the deadline is lifted, so a long download is not cut;
// a small answer, read whole by the peek, costs no deadline change.
func (p *Proxy) inspect(r *request, resp *fasthttp.Response) (*answer, error) {
	a := &answer{resp: resp}
	stream := resp.BodyStream()
	if binaryAnswer(&resp.Header) {
		a.rest = stream
		if stream == nil {
			a.whole = resp.Body()
		} else {
			setReadDeadline(resp, time.Time{})
		}
		return a, nil
	}
	if stream == nil {
		a.whole = resp.Body()
	} else {
		pb := peekPool.Get().(*peekBuf)
		a.peek = pb
		n, err := readPeek(stream, pb.buf[:])
		switch {
		case err == io.EOF:
			a.whole = pb.buf[:n]
		case err == nil:
			a.whole, a.rest = pb.buf[:n], stream // whole holds the first bytes only
			setReadDeadline(resp, time.Time{})
		default:
			var te interface{ Timeout() bool }
			a.close()
			if errors.As(err, &te) && te.Timeout() {
				return nil, errPeekTimeout
			}
			return nil, wechat.RedactError(err)
		}
	}
	if scannable(resp.Header.ContentType()) {
		r.errcode, r.hasCode = wechat.ScanErrcode(a.whole)
	}
	return a, nil
}

// readPeek fills buf from r; err is nil when buf is full, io.EOF when the
// body ended within it, else the read error.
func readPeek(r io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// errPeekTimeout is an upstream that sent its headers but not its body
// within upstream_timeout.
var errPeekTimeout = &Error{Kind: KindUpstreamTimeout, Msg: "WeChat sent no answer body within upstream_timeout; retry later"}

// scannable reports whether an answer of this Content-Type may carry an
// errcode: JSON, historically text/plain, or none given. Media is not read.
func scannable(contentType []byte) bool {
	mt, _, _ := bytes.Cut(contentType, []byte(";"))
	mt = bytes.TrimSpace(mt)
	return len(mt) == 0 || bytes.EqualFold(mt, []byte("application/json")) || bytes.EqualFold(mt, []byte("text/plain")) || bytes.EqualFold(mt, []byte("text/json"))
}

// binaryAnswer reports whether an answer is media that passes unchanged:
// exactly one Content-Type, and that one binary.
func binaryAnswer(h *fasthttp.ResponseHeader) bool {
	return len(h.PeekAll("Content-Type")) == 1 && binary(string(h.ContentType()))
}

// binary reports whether an answer of this Content-Type is media that
// passes unchanged: images, audio, video and octet-streams. Everything
// else, including answers with no type and SVG (which is XML text), is
// scanned.
func binary(contentType string) bool {
	mt, _, _ := strings.Cut(contentType, ";")
	mt = strings.TrimSpace(mt)
	if strings.EqualFold(mt, "image/svg+xml") {
		return false
	}
	for _, p := range [...]string{"image/", "audio/", "video/"} {
		if len(mt) >= len(p) && strings.EqualFold(mt[:len(p)], p) {
			return true
		}
	}
	return strings.EqualFold(mt, "application/octet-stream")
}
