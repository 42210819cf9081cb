package proxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/wxproxy/wxproxy/wechat"
)

// peekSize is how much of a JSON answer is read to find its errcode.
// WeChat's error answers are a few hundred bytes.
const peekSize = 8 << 10

// retryTransport is where the token retry is decided. It scans each JSON
// answer for its errcode; on 40001, 40014 or 42001 it refreshes the token
// (compare-and-refresh: concurrent failures cause one refresh) and replays
// the request once with the new token, if its body was buffered. A second
// token error goes back to the caller as WeChat sent it.
type retryTransport struct {
	next http.RoundTripper
	p    *Proxy
}

func (t *retryTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	c := callFrom(req.Context())
	if c == nil {
		return t.next.RoundTrip(req)
	}
	resp, err := t.attempt(req, c)
	if err != nil {
		return nil, err
	}
	if c.mode != modeInject || !c.hasCode || !wechat.IsTokenError(c.errcode) {
		return resp, nil
	}
	fresh, ierr := c.app.Tokens.Invalidate(req.Context(), c.token)
	if ierr != nil || fresh.Value == c.token || !c.replay {
		// No better token, or a body that cannot be replayed: the refresh
		// (if any) is done, so the caller's own retry will succeed.
		return resp, nil
	}
	resp.Body.Close()
	if t.p.metrics != nil {
		t.p.metrics.observeRetry(c.app.Name, c.errcode)
	}
	r2 := req.Clone(req.Context())
	r2.URL.RawQuery = injectToken(c.query, fresh.Value)
	r2.Body, r2.ContentLength = nil, int64(len(c.body))
	if len(c.body) > 0 {
		r2.Body = io.NopCloser(bytes.NewReader(c.body))
	}
	c.token, c.retried, c.hasCode = fresh.Value, true, false
	if resp, err = t.attempt(r2, c); err != nil {
		return nil, err
	}
	resp.Header[headerRetried] = []string{"1"}
	return resp, nil
}

// attempt makes one upstream call through the app's breaker, scans the
// answer's errcode, and reports the outcome to the breaker, the quotas and
// the metrics. Transport errors, HTTP 5xx and errcode -1 are failures;
// business errcodes are not: WeChat answered.
func (t *retryTransport) attempt(req *http.Request, c *call) (*http.Response, error) {
	app := c.app
	var done func(error)
	if app.Breaker != nil {
		// A half-open breaker lets a few probes through. One whose body
		// still streams from the caller could hold a probe for as long as
		// the caller likes, keeping the breaker from closing for everyone:
		// only requests whose body is in hand may probe.
		if !c.replay && app.Breaker.halfOpen() {
			return nil, &Error{Kind: KindCircuitOpen, Msg: "WeChat is recovering for app " + app.Name + "; large uploads wait until it has, retry after Retry-After seconds", RetryAfter: time.Second}
		}
		var err error
		if done, err = app.Breaker.Allow(); err != nil {
			return nil, &Error{Kind: KindCircuitOpen, Msg: "WeChat is failing for app " + app.Name + "; calls are paused, retry after Retry-After seconds", RetryAfter: app.Breaker.RetryAfter(), Err: err}
		}
	}
	start := time.Now()
	resp, err := t.next.RoundTrip(req)
	if err == nil {
		// The peek's deadline starts with the answer's headers: time the
		// caller spent sending its body is not WeChat's.
		err = c.scan(resp, time.Now().Add(t.p.upTimeout))
	}
	if t.p.metrics != nil {
		t.p.metrics.observeUpstream(app.Name, time.Since(start))
	}
	if err != nil {
		if cf := c.callerFault(); cf != nil {
			err = cf // the caller's body failed, not WeChat
		}
	}
	if done != nil {
		var pe *Error
		switch {
		case err != nil && req.Context().Err() != nil:
			done(context.Canceled) // the caller left; says nothing about WeChat
		case errors.As(err, &pe) && pe.callersFault():
			done(context.Canceled) // a bad body from the caller; says nothing about WeChat
		case err != nil, resp.StatusCode >= 500, c.hasCode && c.errcode == wechat.CodeSystemError:
			done(errFailure)
		default:
			done(nil)
		}
		app.Breaker.Settle()
	}

	if err != nil {
		return nil, err
	}
	if c.hasCode && c.errcode != wechat.CodeOK {
		if t.p.metrics != nil {
			t.p.metrics.observeErrcode(app.Name, c.path, c.errcode)
		}
		if app.Quotas != nil && wechat.IsQuotaError(c.errcode) {
			if oerr := app.Quotas.Observe(req.Context(), c.path, c.errcode); oerr != nil {
				t.p.log.Warn("quota store failed", "app", app.Name, "err", oerr)
			}
		}
	}
	return resp, nil
}

// scan reads the start of every non-binary answer, records its errcode
// (JSON and text answers), and puts the bytes back in front of the rest
// of the body, which streams. The read must finish by deadline (the
// request's upstream_timeout): an upstream that stalls after its headers
// cannot hold the caller longer. The peek buffer is pooled and returned
// when the body is closed.
func (c *call) scan(resp *http.Response, deadline time.Time) error {
	ct := resp.Header.Get("Content-Type")
	if binaryAnswer(resp.Header) || resp.Body == nil || resp.Body == http.NoBody {
		return nil
	}
	body := resp.Body
	stall := time.AfterFunc(time.Until(deadline), func() { body.Close() })
	pb := peekPool.Get().(*peekBody)
	n, err := io.ReadFull(body, pb.buf[:])
	if !stall.Stop() {
		err = errPeekTimeout
	}
	switch err {
	case io.EOF, io.ErrUnexpectedEOF: // the whole answer is in the buffer
		body.Close()
		pb.rest = nil
	case nil:
		pb.rest = body
	default:
		body.Close()
		peekPool.Put(pb)
		return wechat.RedactError(err)
	}
	pb.n = n
	pb.r.Reset(pb.buf[:n])
	resp.Body = pb
	if scannable(ct) {
		c.errcode, c.hasCode = wechat.ScanErrcode(pb.buf[:n])
	}
	return nil
}

// errPeekTimeout is an upstream that sent its headers but not its body
// within upstream_timeout.
var errPeekTimeout = &Error{Kind: KindUpstreamTimeout, Msg: "WeChat sent no answer body within upstream_timeout; retry later"}

// peekBody is an answer body whose first bytes were read for the errcode.
type peekBody struct {
	buf  [peekSize]byte
	n    int
	r    bytes.Reader
	rest io.ReadCloser // nil when buf holds the whole answer
}

var peekPool = sync.Pool{New: func() any { return new(peekBody) }}

func (b *peekBody) Read(p []byte) (int, error) {
	if b.r.Len() > 0 || b.rest == nil {
		return b.r.Read(p)
	}
	return b.rest.Read(p)
}

// Close closes the rest of the answer and returns the buffer to the pool.
// The body must not be used afterwards.
func (b *peekBody) Close() error {
	var err error
	if b.rest != nil {
		err = b.rest.Close()
		b.rest = nil
	}
	b.r.Reset(nil)
	peekPool.Put(b)
	return err
}

// scannable reports whether an answer of this Content-Type may carry an
// errcode: JSON, historically text/plain, or none given. Media is not read.
func scannable(contentType string) bool {
	mt, _, _ := strings.Cut(contentType, ";")
	mt = strings.TrimSpace(mt)
	return mt == "" || strings.EqualFold(mt, "application/json") || strings.EqualFold(mt, "text/plain") || strings.EqualFold(mt, "text/json")
}
