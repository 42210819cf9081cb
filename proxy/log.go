package proxy

import (
	"context"
	"log/slog"
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

// finish ends a request once: its metrics and its access line. It runs
// when the handler returns, or, for a streamed answer, when the stream is
// closed.
func (p *Proxy) finish(r *request) {
	if r.finished.Swap(true) {
		return
	}
	status := r.ctx.Response.StatusCode()
	d := p.now().Sub(r.start)
	if p.metrics != nil {
		app := "unknown"
		if r.app != nil {
			app = r.app.Name
		}
		p.metrics.observeRequest(app, r.api, status, r.outcome(), d)
		if r.scrubbed {
			p.metrics.observeScrubbed(app)
		}
	}
	p.logAccess(r, status, d)
	if r.err != nil && p.onError != nil {
		rep := ErrorReport{Time: r.start.Add(d), Kind: r.err.Kind, Path: r.path, Status: status, Msg: r.err.Msg}
		if r.app != nil {
			rep.App = r.app.Name
		}
		p.onError(rep)
	}
}

// logAccess writes the one access line of a request. Tokens appear only as
// fingerprints; the query, which may carry secrets, is never logged.
func (p *Proxy) logAccess(r *request, status int, d time.Duration) {
	ctx := context.Background()
	if !p.log.Enabled(ctx, slog.LevelInfo) {
		return
	}
	caller := r.caller
	if caller == "" {
		caller = remoteIP(r.ctx).String()
	}
	app := ""
	if r.app != nil {
		app = r.app.Name
	}
	attrs := []slog.Attr{
		slog.String("app", app),
		slog.String("api", r.path),
		slog.String("method", string(r.ctx.Method())),
		slog.Int("status", status),
		slog.Duration("duration", d),
		slog.Bool("retried", r.retried),
		slog.String("caller", caller),
		slog.String("request_id", r.reqID),
		slog.String("outcome", r.outcome()),
	}
	if r.hasCode {
		attrs = append(attrs, slog.Int("errcode", r.errcode))
	}
	if r.token != "" {
		attrs = append(attrs, slog.String("token", r.app.fingerprint(r.token)))
	}
	if r.err != nil {
		attrs = append(attrs, slog.String("error", string(r.err.Kind)))
		if r.err.Err != nil {
			attrs = append(attrs, slog.String("cause", r.err.Err.Error()))
		}
	}
	p.log.LogAttrs(ctx, slog.LevelInfo, "request", attrs...)
}
