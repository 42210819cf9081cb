package proxy

import (
	"context"
	"errors"

	"github.com/wxproxy/wxproxy/ratelimit"
)

// checkLimits applies the caller's own limit, then the app's quota for
// the API. A quota store that fails (Redis down) does not block traffic.
func (p *Proxy) checkLimits(ctx context.Context, r *request, key *CallerKey) error {
	if key != nil && key.Limiter != nil {
		if err := p.limitError(r, key.Limiter.Allow(ctx, ""), ratelimit.ScopeCaller); err != nil {
			return err
		}
	}
	if r.app.Quotas != nil {
		return p.limitError(r, r.app.Quotas.Allow(ctx, r.api), ratelimit.ScopeAPI)
	}
	return nil
}

func (p *Proxy) limitError(r *request, err error, scope ratelimit.Scope) error {
	if err == nil {
		return nil
	}
	var d *ratelimit.Denied
	if !errors.As(err, &d) {
		if !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
			p.log.Warn("quota store failed; request let through", "app", r.app.Name, "err", err)
			if p.metrics != nil {
				p.metrics.StoreError("quota")
			}
			return nil
		}
		return err
	}
	if scope == ratelimit.ScopeCaller {
		d.Scope = scope // a caller key's limiter is an ordinary Limiter, which says "api"
	}
	if p.metrics != nil {
		p.metrics.observeRejection(r.app.Name, r.api, string(d.Scope))
	}
	var who string
	switch d.Scope {
	case ratelimit.ScopeCaller:
		who = "your caller key's per-minute limit"
	case ratelimit.ScopeUpstream:
		who = "WeChat's quota for " + r.path + " (remembered from its answer)"
	default:
		who = "the local limit for " + r.path
	}
	if d.Daily {
		return &Error{Kind: KindQuotaExhausted, Msg: "daily quota exhausted: " + who + "; it resets at midnight", RetryAfter: d.RetryAfter, Err: err}
	}
	return &Error{Kind: KindRateLimited, Msg: "too many requests: " + who + "; retry after Retry-After seconds", RetryAfter: d.RetryAfter, Err: err}
}
