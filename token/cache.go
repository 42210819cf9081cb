package token

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync/atomic"
	"time"
)

// Sentinel errors callers branch on.
var (
	// ErrUnavailable means there is no usable token: fetching failed and the
	// cache is backing off before it tries again.
	ErrUnavailable = errors.New("token: no usable token")
	// ErrForceBudget means a forced refresh was refused locally because the
	// daily budget is spent or the last one was too recent.
	ErrForceBudget = errors.New("token: forced refresh budget exhausted")
	// ErrFetchBudget means Options.Budget refused a fetch.
	ErrFetchBudget = errors.New("token: daily fetch budget exhausted")
)

// Options configures a Cache. Zero values take the defaults noted. New
// reads it once; changing it afterwards has no effect.
type Options struct {
	App     string // app name, for logs
	Mode    Mode   // required unless Kind is set
	Fetcher Source // required: where the tokens come from
	Store   Store  // default: a new MemoryStore
	Key     string // store key; default App

	// Kind, if set, says how the Source's credentials behave, for a Source
	// that is none of the Modes (tickets, component, authorizer, suite or
	// corp tokens); it overrides Mode's Kind.
	Kind *Kind

	RefreshBefore time.Duration // proactive refresh lead; default 10m
	FetchTimeout  time.Duration // one fetch, including the store round trips; default 10s
	MinBackoff    time.Duration // first retry after a failed fetch; default 1s
	MaxBackoff    time.Duration // cap, and the wait after a configuration errcode; default 5m
	LockTTL       time.Duration // shared stores: how long a refresh lock lives (a LeaseLocker's is renewed); default FetchTimeout + 5s
	SyncEvery     time.Duration // shared stores: backstop re-read of the store; default 1s

	ForcedPerDay  int            // stable forced refreshes a day; default 20
	ForcedSpacing time.Duration  // minimum gap between forced refreshes; default 30s
	Location      *time.Location // day boundary of ForcedPerDay; default UTC+8

	Now    func() time.Time // default time.Now
	Rand   func() float64   // jitter source in [0,1); default math/rand/v2
	Logger *slog.Logger     // default: discard

	// OnRefresh, if set, is called after every refresh attempt that asked
	// WeChat, with its reason and outcome (nil on success).
	OnRefresh func(reason Reason, err error)
	// OnStoreError, if set, is called when the store fails; op is "load",
	// "save", "lock" or "budget".
	OnStoreError func(op string, err error)
	// OnInstall, if set, is called with every token value that becomes
	// current (fetched, loaded from the store or adopted from another
	// replica), before any caller can be handed it — so that it can be
	// scrubbed from answers. It must not block: other installs wait for it.
	OnInstall func(value string)
	// Budget, if set, is asked before every fetch of a metered Kind
	// (Classic, WeCom: each one counts against WeChat's daily limit); an
	// error refuses the fetch and backs off at MaxBackoff. Stable fetches
	// are budgeted by ForcedPerDay instead.
	Budget func(ctx context.Context) error
}

// Cache holds one credential — an app's access token, or any kind a Source
// fetches — and composes the small types that keep it: the hot-path holder
// (Current is one atomic load: no lock, no I/O, no allocation), the refresh
// flight (compare-and-refresh shared by concurrent callers, each waiting on
// its own ctx), the failure backoff, the forced-refresh budget, and the
// fleet lease of a shared Store. Get, Invalidate and Refresh take the slow
// path; Run loads the stored token and keeps it fresh in the background.
//
// A Cache must be made with New. It is safe for concurrent use. It knows
// nothing of any one credential kind: the Source fetches and the Kind
// describes. Cache is not a rate limiter: it caps forced refreshes and
// backs off after failures, but callers bound request volume elsewhere.
type Cache struct {
	held      holder
	opts      Options
	kind      Kind
	flight    flight
	backoff   backoff
	forced    forceBudget
	lease     *lease
	alarm     alarm
	refreshes atomic.Int64
}

// log is the Cache's logger: lines name its app.
func (c *Cache) log() logger { return logger{c.opts.Logger, c.opts.App} }

// New returns a Cache for one credential. It does no I/O; call Run to load
// the stored token and keep it fresh.
func New(opts Options) (*Cache, error) {
	if opts.Fetcher == nil {
		return nil, errors.New("token: Options.Fetcher is required")
	}
	kind, ok := opts.Mode.kind()
	if opts.Kind != nil {
		kind, ok = *opts.Kind, ok || opts.Mode == ""
	}
	if !ok {
		return nil, fmt.Errorf("token: unknown mode %q", opts.Mode)
	}
	if opts.Store == nil {
		opts.Store = new(MemoryStore)
	}
	if opts.Key == "" {
		opts.Key = opts.App
	}
	setDefault(&opts.RefreshBefore, 10*time.Minute)
	setDefault(&opts.FetchTimeout, 10*time.Second)
	setDefault(&opts.MinBackoff, time.Second)
	setDefault(&opts.MaxBackoff, 5*time.Minute)
	setDefault(&opts.ForcedSpacing, 30*time.Second)
	setDefault(&opts.LockTTL, opts.FetchTimeout+5*time.Second)
	setDefault(&opts.SyncEvery, time.Second)
	if opts.ForcedPerDay == 0 {
		opts.ForcedPerDay = 20
	}
	if opts.Location == nil {
		opts.Location = time.FixedZone("UTC+8", 8*3600)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Rand == nil {
		opts.Rand = rand.Float64
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	c := &Cache{opts: opts, kind: kind}
	c.held.onInstall = opts.OnInstall
	c.flight.current, c.flight.now, c.flight.timeout = c.held.load, opts.Now, opts.FetchTimeout
	if _, shared := opts.Store.(Locker); shared {
		// A refresh may first wait out a dead holder's lock.
		c.flight.timeout += opts.LockTTL
	}
	c.backoff.min, c.backoff.max, c.backoff.rand = opts.MinBackoff, opts.MaxBackoff, opts.Rand
	c.forced.perDay, c.forced.spacing, c.forced.loc = opts.ForcedPerDay, opts.ForcedSpacing, opts.Location
	c.lease = newLease(opts.Store, opts.Key, opts.LockTTL, opts.SyncEvery, opts.Now, c.log(), opts.OnStoreError)
	return c, nil
}

func setDefault(d *time.Duration, v time.Duration) {
	if *d <= 0 {
		*d = v
	}
}

// Current returns the token in memory, or nil before the first one. It
// takes no lock and does no I/O; the caller checks Valid. The returned
// Token must not be modified.
func (c *Cache) Current() *Token { return c.held.cur.Load() }

// Get returns a valid token, fetching one if there is none. Concurrent
// callers share one fetch; each stops waiting when its own ctx ends.
func (c *Cache) Get(ctx context.Context) (*Token, error) {
	cur := c.held.load()
	if cur.Valid(c.opts.Now()) {
		return cur, nil
	}
	reason := ReasonInvalid
	if cur == nil {
		reason = ReasonStartup
	}
	return c.refresh(ctx, "", reason)
}

// Invalidate is compare-and-refresh: WeChat rejected the token bad. If the
// current token is already another one, Invalidate returns it without
// asking WeChat; otherwise it refreshes once, shared by every concurrent
// caller that saw bad. In Stable mode it forces a refresh only when normal
// mode hands back bad itself, within the forced-refresh budget.
func (c *Cache) Invalidate(ctx context.Context, bad string) (*Token, error) {
	return c.refresh(ctx, bad, ReasonInvalid)
}

// Refresh replaces the current token on an operator's request. In Stable
// mode that is a forced refresh, refused with ErrForceBudget when the budget
// is spent. It ignores the failure backoff.
func (c *Cache) Refresh(ctx context.Context) (*Token, error) {
	var bad string
	if cur := c.held.load(); cur != nil {
		bad = cur.Value
	}
	return c.refresh(ctx, bad, ReasonManual)
}

// Refreshes is the number of tokens obtained from WeChat so far.
func (c *Cache) Refreshes() int64 { return c.refreshes.Load() }

// Status is a snapshot of a Cache for health checks and the admin API.
// The zero Status describes a cache that holds nothing and never failed.
type Status struct {
	Token     *Token    // nil before the first token
	Refreshes int64     // tokens obtained from WeChat
	Failures  int       // consecutive failed fetches
	LastError error     // the last failure, nil after a success; never holds a secret
	RetryAt   time.Time // when a failing cache tries again
}

// Status returns a snapshot of the cache.
func (c *Cache) Status() Status {
	failures, retryAt, lastErr := c.backoff.state()
	return Status{Token: c.held.load(), Refreshes: c.refreshes.Load(), Failures: failures, LastError: lastErr, RetryAt: retryAt}
}

// refresh replaces bad in the shared flight. A manual refresh has its own
// flight: joining another one would hand the operator a token that was
// never refreshed.
func (c *Cache) refresh(ctx context.Context, bad string, reason Reason) (*Token, error) {
	key := "refresh"
	if reason == ReasonManual {
		key = "manual"
	}
	return c.flight.do(ctx, key, bad, func(ctx context.Context) (*Token, error) {
		return c.replace(ctx, bad, reason)
	})
}

// replace runs inside the flight, once bad is known to be current (or
// there is no valid token). It adopts a newer token from the store if
// another replica already replaced bad; else, outside the backoff, it
// takes the fleet lease and fetches, forcing within the budget when a
// Forcible Source hands back the rejected token itself.
func (c *Cache) replace(ctx context.Context, bad string, reason Reason) (*Token, error) {
	now := c.opts.Now()
	cur := c.held.load()
	if reason != ReasonManual && !c.lease.isDown() {
		if st, ok := c.lease.load(ctx); ok && st.Valid(now) && st.Value != bad {
			held, adopted := c.install(&st, func(cur *Token) bool { return cur == nil || st.ExpiresAt.After(cur.ExpiresAt) })
			if adopted {
				c.log().Info("token adopted from store", "fingerprint", Fingerprint(st.Value), "reason", reason)
				return held, nil
			}
			if held.Valid(now) && held.Value != bad {
				return held, nil // replaced while the store was read
			}
		} else if ok && st.Valid(now) && reason == ReasonProactive {
			if held, adopted := c.adoptConfirmed(&st, now); adopted {
				return held, nil
			}
		}
	}
	if reason != ReasonManual {
		if err := c.backoff.blocked(now); err != nil {
			return nil, err
		}
	}

	alone := false                     // the shared store is down: act without the fleet
	var confirmed func(st *Token) bool // nil: only a newer token is adopted
	if reason == ReasonProactive {
		confirmed = func(st *Token) bool { return c.confirmed(st, c.held.load(), now) }
	}
	adopt, g, err := c.lease.acquire(ctx, bad, c.held.load, confirmed)
	switch {
	case adopt != nil && adopt.Value == bad:
		held, _ := c.adoptConfirmed(adopt, now)
		return held, nil
	case adopt != nil:
		held, adopted := c.install(adopt, func(cur *Token) bool { return newer(adopt, cur) })
		if adopted {
			c.log().Info("token adopted from store", "fingerprint", Fingerprint(adopt.Value))
		}
		return held, nil
	case err == nil:
		defer g.Release()
	case ctx.Err() != nil:
		return nil, err
	default:
		// A Shared kind's normal fetch cannot invalidate anyone: fetch
		// alone. Others would: only for a token that has really expired;
		// meanwhile look again soon, without counting a failure.
		if !c.kind.Shared && cur.Valid(now) {
			c.alarm.set(now.Add(c.opts.SyncEvery))
			return cur, nil
		}
		alone = true
	}

	force := false
	if reason == ReasonManual && c.kind.Forcible {
		if alone || !c.lease.takeForced(ctx, &c.forced, now) {
			return nil, ErrForceBudget
		}
		force = true
	}
	t, err := c.fetch(ctx, reason, force)
	if err != nil {
		return nil, err
	}
	if c.kind.Forcible && !force && bad != "" && t.Value == bad && reason == ReasonInvalid {
		// The normal fetch handed back the token WeChat just rejected:
		// only a forced refresh replaces it.
		if alone || !c.lease.takeForced(ctx, &c.forced, now) {
			c.log().Warn("token rejected but forced refresh budget exhausted", "fingerprint", Fingerprint(bad))
			return &t, nil
		}
		if t, err = c.fetch(ctx, reason, true); err != nil {
			return nil, err
		}
	}
	if c.kind.FixedLifetime {
		t = keepExpiry(t, c.held.load(), now)
	}
	c.refreshes.Add(1)
	if g == nil { // alone: the store is down
		c.install(&t, nil)
		c.lease.save(ctx, t)
	} else if err := g.save(ctx, t); errors.Is(err, ErrLeaseLost) {
		// Our lease ran out while we fetched (this process was paused or
		// cut off) and another replica may have replaced the token: its
		// token is the fleet's, ours must not overwrite it.
		if st, ok := c.lease.load(ctx); ok && st.Valid(c.opts.Now()) && st.Value != bad {
			held, _ := c.install(&st, nil)
			c.log().Warn("refresh lease lost while fetching; adopted the fleet's token instead of ours",
				"fingerprint", Fingerprint(st.Value), "discarded", Fingerprint(t.Value))
			return held, nil
		}
		c.install(&t, nil)
	} else {
		c.install(&t, nil)
	}
	c.log().Info("token refreshed", "reason", reason, "forced", force,
		"fingerprint", Fingerprint(t.Value), "expires_in", int(t.ExpiresAt.Sub(now).Seconds()))
	return &t, nil
}

// fetch asks the Source, within the fetch budget, and records the outcome
// for backoff and metrics.
func (c *Cache) fetch(ctx context.Context, reason Reason, force bool) (Token, error) {
	if c.opts.Budget != nil && !c.kind.Unmetered {
		if err := c.opts.Budget(ctx); err != nil {
			err = fmt.Errorf("%w: %w", ErrFetchBudget, err)
			c.fail(err)
			return Token{}, err
		}
	}
	t, err := c.opts.Fetcher.Fetch(ctx, force)
	if c.opts.OnRefresh != nil {
		c.opts.OnRefresh(reason, err)
	}
	if err != nil {
		c.fail(err)
		return Token{}, err
	}
	return t, nil
}

// fail backs off after a failed fetch, logs it, and wakes Run to retry.
func (c *Cache) fail(err error) {
	d, failures := c.backoff.fail(c.opts.Now(), err)
	attrs := []any{"err", err, "failures", failures, "retry_in", d.Round(time.Millisecond).String()}
	apiErr, configErr := configError(err)
	if apiErr != nil {
		attrs = append(attrs, "errcode", apiErr.Code)
	}
	if configErr {
		c.log().Error("token fetch failed: check appid, secret and IP whitelist", attrs...)
	} else {
		c.log().Warn("token fetch failed", attrs...)
	}
	c.alarm.poke()
}

// install makes t current if ok accepts the token it replaces (nil: always),
// then clears the failure state and schedules the next proactive refresh.
// It returns the token held afterwards and whether it is t.
func (c *Cache) install(t *Token, ok func(cur *Token) bool) (*Token, bool) {
	now := c.opts.Now()
	return c.held.install(t, ok, func(prev *Token) {
		c.backoff.reset()
		c.alarm.set(c.next(prev, t, now))
	})
}

// confirmed reports whether st, read from the shared store, is the token
// cur itself as another replica got it back from WeChat within the
// proactive window (checked after cur was, less than the refresh lead
// ago): a proactive refresh due now would ask WeChat for what the fleet
// has just been told, so the replica adopts st instead. Without this, the
// early check of a ticket — WeChat hands back the same one until it
// expires — would cost one fetch per replica instead of one per fleet.
// In a store of one process st is always this replica's own token.
func (c *Cache) confirmed(st, cur *Token, now time.Time) bool {
	return cur != nil && st.Value == cur.Value && st.checked().After(cur.checked()) &&
		now.Sub(st.checked()) < c.kind.lead(cur, c.opts.RefreshBefore)
}

// adoptConfirmed installs st, the held token confirmed by another replica,
// so that the next proactive refresh is scheduled as if this replica had
// fetched it. It returns the token held afterwards and whether it is st.
func (c *Cache) adoptConfirmed(st *Token, now time.Time) (*Token, bool) {
	held, adopted := c.install(st, func(cur *Token) bool { return c.confirmed(st, cur, now) })
	if adopted {
		c.opts.Logger.Info("token confirmed by another replica; not fetched again",
			"fingerprint", Fingerprint(st.Value), "checked_at", st.CheckedAt)
	}
	return held, adopted
}

// keepExpiry returns t with the expiry of cur when both are the same
// credential and cur's expiry is the earlier one still ahead: a Source of a
// FixedLifetime kind reports the full lifetime on every fetch, so only the
// first sighting tells when it ends. t's own ObtainedAt becomes its
// CheckedAt.
func keepExpiry(t Token, cur *Token, now time.Time) Token {
	if cur != nil && cur.Value == t.Value && cur.ExpiresAt.After(now) && cur.ExpiresAt.Before(t.ExpiresAt) {
		// ObtainedAt goes back to the first sighting: CheckedAt keeps when
		// WeChat handed the credential out again, for the fleet.
		t.CheckedAt = t.ObtainedAt
		t.ObtainedAt, t.ExpiresAt = cur.ObtainedAt, cur.ExpiresAt
	}
	return t
}
