package proxy

import (
	"bytes"
	"context"
	"io"
	"mime"
	"net/http"
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
	r2.URL.RawQuery = injectToken(req.URL.RawQuery, fresh.Value)
	r2.Body, r2.ContentLength = nil, int64(len(c.body))
	if len(c.body) > 0 {
		r2.Body = io.NopCloser(bytes.NewReader(c.body))
	}
	c.token, c.retried, c.hasCode = fresh.Value, true, false
	if resp, err = t.attempt(r2, c); err != nil {
		return nil, err
	}
	resp.Header.Set("X-WXProxy-Retried", "1")
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
		var err error
		if done, err = app.Breaker.Allow(); err != nil {
			return nil, &Error{Kind: KindCircuitOpen, Msg: "WeChat is failing for app " + app.Name + "; calls are paused, retry after Retry-After seconds", RetryAfter: app.Breaker.RetryAfter(), Err: err}
		}
	}
	start := time.Now()
	resp, err := t.next.RoundTrip(req)
	if err == nil {
		err = c.scan(resp)
	}
	if t.p.metrics != nil {
		t.p.metrics.observeUpstream(app.Name, time.Since(start))
	}
	if done != nil {
		switch {
		case err != nil && req.Context().Err() != nil:
			done(context.Canceled) // the caller left; says nothing about WeChat
		case err != nil, resp.StatusCode >= 500, c.hasCode && c.errcode == wechat.CodeSystemError:
			done(errFailure)
		default:
			done(nil)
		}
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

// scan reads the start of a JSON (or text) answer, records its errcode,
// and puts the bytes back in front of the rest of the body, which streams.
func (c *call) scan(resp *http.Response) error {
	if !scannable(resp.Header.Get("Content-Type")) {
		return nil
	}
	buf := make([]byte, peekSize)
	n, err := io.ReadFull(resp.Body, buf)
	buf = buf[:n]
	switch err {
	case io.EOF, io.ErrUnexpectedEOF: // the whole answer is in buf
		resp.Body.Close()
		resp.Body = io.NopCloser(bytes.NewReader(buf))
	case nil:
		resp.Body = readCloser{io.MultiReader(bytes.NewReader(buf), resp.Body), resp.Body}
	default:
		resp.Body.Close()
		return wechat.RedactError(err)
	}
	c.errcode, c.hasCode = wechat.ScanErrcode(buf)
	return nil
}

// scannable reports whether an answer of this Content-Type may carry an
// errcode: JSON, historically text/plain, or none given. Media is not read.
func scannable(contentType string) bool {
	if contentType == "" {
		return true
	}
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		return false
	}
	return mt == "application/json" || mt == "text/plain" || mt == "text/json"
}
