package token

import "context"

// These methods let one scheduler drive many Caches — a platform's
// thousands of merchant tokens — instead of a Run goroutine and timer per
// Cache. A Cache driven this way must not also be Run.

// Due reports whether the Cache has background work now: a proactive
// refresh, a retry after a failure, or a first load.
func (c *Cache) Due() bool { return c.wait() <= 0 }

// Step does the background work Run does when it is due: a proactive
// refresh before expiry, or a retry once the backoff allows one. Failures
// are logged and scheduled as in Run.
func (c *Cache) Step(ctx context.Context) {
	if !c.Due() {
		return
	}
	cur := c.held.load()
	reason, bad := ReasonStartup, ""
	if cur != nil {
		reason, bad = ReasonProactive, cur.Value
		if !cur.Valid(c.opts.Now()) {
			reason = ReasonInvalid
		}
	}
	_, _ = c.refresh(ctx, bad, reason) // failures are logged and scheduled by fail
}

// Sync adopts a newer token another replica saved in the shared store;
// call it when the store announces the Cache's key.
func (c *Cache) Sync(ctx context.Context) { c.sync(ctx) }

// Key is the Cache's store key.
func (c *Cache) Key() string { return c.opts.Key }

// Install makes t current and saves it, if it lives longer than the token
// held: for a token obtained outside the Source (a platform's
// api_query_auth answer carries the merchant's first token).
func (c *Cache) Install(ctx context.Context, t Token) bool {
	if !t.Valid(c.opts.Now()) {
		return false
	}
	if _, ok := c.install(&t, func(cur *Token) bool { return newer(&t, cur) }); !ok {
		return false
	}
	c.lease.save(ctx, t)
	return true
}
