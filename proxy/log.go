package proxy

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/wxproxy/wxproxy/token"
)

// fpCache remembers the fingerprint of the token last logged for an app,
// so the access log does not hash the same token on every request.
type fpCache struct{ value, fp string }

func (a *App) fingerprint(tok string) string {
	if c := a.fp.Load(); c != nil && c.value == tok {
		return c.fp
	}
	c := &fpCache{value: tok, fp: token.Fingerprint(tok)}
	a.fp.Store(c)
	return c.fp
}

// recorder remembers the status sent to the caller.
type recorder struct {
	http.ResponseWriter
	status int
}

func (r *recorder) WriteHeader(code int) {
	if code >= 100 && code < 200 {
		// Informational answers (103 Early Hints, ...) would reach the
		// caller before the scrubber sees their headers: none pass.
		return
	}
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the real writer (flush, deadlines).
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// logAccess writes the one access line of a request. Tokens appear only as
// fingerprints; the query, which may carry secrets, is never logged.
func (p *Proxy) logAccess(r *http.Request, c *call, status int, d time.Duration) {
	ctx := context.Background()
	if !p.log.Enabled(ctx, slog.LevelInfo) {
		return
	}
	caller := c.caller
	if caller == "" {
		var err error
		if caller, _, err = net.SplitHostPort(r.RemoteAddr); err != nil {
			caller = r.RemoteAddr
		}
	}
	app := ""
	if c.app != nil {
		app = c.app.Name
	}
	attrs := []slog.Attr{
		slog.String("app", app),
		slog.String("api", c.path),
		slog.String("method", r.Method),
		slog.Int("status", status),
		slog.Duration("duration", d),
		slog.Bool("retried", c.retried),
		slog.String("caller", caller),
		slog.String("request_id", c.reqID),
		slog.String("outcome", c.outcome()),
	}
	if c.hasCode {
		attrs = append(attrs, slog.Int("errcode", c.errcode))
	}
	if c.token != "" {
		attrs = append(attrs, slog.String("token", c.app.fingerprint(c.token)))
	}
	if c.err != nil {
		attrs = append(attrs, slog.String("error", string(c.err.Kind)))
		if c.err.Err != nil {
			attrs = append(attrs, slog.String("cause", c.err.Err.Error()))
		}
	}
	p.log.LogAttrs(ctx, slog.LevelInfo, "request", attrs...)
}
