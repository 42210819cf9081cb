package token

import (
	"context"
	"sync"
	"time"
)

// Run loads a stored token (a restart with a valid stored token costs no
// fetch) and then keeps the token fresh until ctx ends: it refreshes before
// expiry with jitter and retries failed fetches with exponential backoff.
// With a shared store it adopts tokens other replicas announce, re-reading
// the store as a backstop. Callers never wait on a proactive refresh. Run
// returns when ctx is done; call it once per Cache.
func (c *Cache) Run(ctx context.Context) {
	if st, ok := c.lease.load(ctx); ok && st.Valid(c.opts.Now()) {
		if _, ok := c.install(&st, func(cur *Token) bool { return cur == nil }); ok {
			c.log().Info("token reused from store", "fingerprint", Fingerprint(st.Value),
				"expires_in", int(st.ExpiresAt.Sub(c.opts.Now()).Seconds()))
		}
	}
	wake := c.alarm.channel()
	timer := time.NewTimer(0)
	defer timer.Stop()
	updates, backstop, stop := c.lease.watch(ctx)
	defer stop()
	for {
		timer.Reset(c.wait())
		select {
		case <-ctx.Done():
			return
		case <-wake:
			continue
		case key, ok := <-updates:
			if !ok {
				updates = nil
			} else if key == c.opts.Key {
				c.sync(ctx)
			}
			continue
		case <-backstop:
			c.sync(ctx)
			continue
		case <-timer.C:
		}
		c.Step(ctx) // unless rescheduled meanwhile
	}
}

// sync adopts a newer token that another replica saved.
func (c *Cache) sync(ctx context.Context) {
	st := c.lease.sync(ctx, c.held.load)
	if st == nil {
		return
	}
	if _, ok := c.install(st, func(cur *Token) bool { return newer(st, cur) }); ok {
		c.log().Info("token adopted from store", "fingerprint", Fingerprint(st.Value))
	}
}

// wait returns how long until the background loop has work.
func (c *Cache) wait() time.Duration {
	now := c.opts.Now()
	if d, failing := c.backoff.wait(now); d > 0 || failing {
		return d
	}
	if c.held.load() == nil {
		return 0
	}
	return max(c.alarm.at().Sub(now), 0)
}

// next is when the proactive refresh is due after t replaced prev at now.
func (c *Cache) next(prev, t *Token, now time.Time) time.Time {
	if prev != nil && prev.Value == t.Value {
		if c.kind.FixedLifetime {
			// WeChat hands back the same ticket until it expires: the
			// next one exists only then, so ask once, at its expiry.
			return t.ExpiresAt
		}
		// The Source handed back the same token (stable normal mode,
		// WeCom): ask again halfway to its expiry, when it will have
		// rotated.
		return now.Add(max(t.ExpiresAt.Sub(now)/2, time.Second))
	}
	lead := c.kind.lead(t, c.opts.RefreshBefore)
	return t.ExpiresAt.Add(-lead).Add(time.Duration(c.opts.Rand() * 0.2 * float64(lead)))
}

// alarm is when the background loop next has work, with a wake-up for a
// loop waiting on an older time. It is safe for concurrent use; the zero
// due time is "now". The wake-up channel is made by the loop that waits
// on it (channel): a Cache driven by Step has none and pays nothing.
type alarm struct {
	mu   sync.Mutex
	due  time.Time
	wake chan struct{} // buffered, capacity 1; nil until channel
}

// channel returns the wake-up channel, made on first use.
func (a *alarm) channel() <-chan struct{} {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.wake == nil {
		a.wake = make(chan struct{}, 1)
	}
	return a.wake
}

// set moves the alarm to t and wakes the loop.
func (a *alarm) set(t time.Time) {
	a.mu.Lock()
	a.due = t
	a.mu.Unlock()
	a.poke()
}

// at returns when the alarm is due.
func (a *alarm) at() time.Time {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.due
}

// poke wakes the loop to look at the state again; it never blocks.
func (a *alarm) poke() {
	a.mu.Lock()
	wake := a.wake
	a.mu.Unlock()
	if wake == nil {
		return // nobody waits on it
	}
	select {
	case wake <- struct{}{}:
	default:
	}
}
