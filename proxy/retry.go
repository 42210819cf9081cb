package proxy

import (
	"context"

	"github.com/wxproxy/wxproxy/wechat"
)

// roundTrip is where the token retry is decided. It makes one attempt
// (breaker, inject, forward, inspect); on 40001, 40014 or 42001 it
// refreshes the token (compare-and-refresh: concurrent failures cause one
// refresh, here or, in a fleet, on another replica), waiting up to the
// app's TokenWait for it, and replays the request once with the new
// token, if its body was buffered. A second token error goes back to the caller as WeChat
// sent it.
func (p *Proxy) roundTrip(r *request) (*answer, error) {
	ans, err := p.attempt(r)
	if err != nil {
		return nil, err
	}
	if r.mode != modeInject || !r.hasCode || !isTokenError(r.app, r.errcode) {
		return ans, nil
	}
	ctx := context.Background()
	if w := r.app.TokenWait; w > 0 {
		// The refresh goes on without us; later callers find its token.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, w)
		defer cancel()
	}
	fresh, ierr := r.app.Tokens.Invalidate(ctx, r.token)
	if ierr != nil || fresh.Value == r.token || !r.body.replay {
		// No better token, or a body that cannot be replayed: the refresh
		// (if any) is done, so the caller's own retry will succeed.
		return ans, nil
	}
	ans.close()
	if p.metrics != nil {
		p.metrics.observeRetry(r.app.Name, r.errcode)
	}
	r.token, r.retried, r.hasCode = fresh.Value, true, false
	return p.attempt(r)
}

// isTokenError reports whether code says the token injected for app is
// no good: 40001, 40014, 42001 for every app; for a WeCom suite's own
// APIs also 42009 (suite_access_token expired) and 40082 (invalid suite
// or provider token).
func isTokenError(app *App, code int) bool {
	if wechat.IsTokenError(code) {
		return true
	}
	return (app.Kind == KindSuite || app.Kind == KindProvider) && (code == codeSuiteTokenExpired || code == codeSuiteTokenInvalid)
}

// WeCom's errcodes of suite tokens.
const (
	codeSuiteTokenExpired = 42009
	codeSuiteTokenInvalid = 40082
)
