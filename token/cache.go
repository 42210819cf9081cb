package token

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/wxproxy/wxproxy/wechat"
)

// Fetcher gets a token from WeChat. force asks for a forced refresh, which
// only Stable mode knows.
type Fetcher interface {
	Fetch(ctx context.Context, force bool) (Token, error)
}

// Locker is implemented by stores shared between processes: only the
// holder of a key's lock may fetch, so N replicas seeing the same dead token
// cause one fetch in all. unlock releases the lock if it is still ours.
type Locker interface {
	TryLock(ctx context.Context, key string, ttl time.Duration) (unlock func(), ok bool, err error)
}

// Watcher is implemented by stores that announce tokens saved by others.
type Watcher interface {
	Watch(ctx context.Context) <-chan string
}

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

// storeTimeout bounds one store round trip on the refresh path, so an
// unreachable shared store is noticed quickly.
const storeTimeout = 500 * time.Millisecond

// errStoreDown marks a refresh made while the shared store is unreachable.
var errStoreDown = errors.New("token: shared store unreachable")

// stableRotation is how long before expiry WeChat's stable_token normal
// mode starts handing out the next token.
const stableRotation = 5 * time.Minute

// Options configures a Cache. Zero values take the defaults noted.
type Options struct {
	App     string  // app name, for logs
	Mode    Mode    // required
	Fetcher Fetcher // required
	Store   Store   // default: a new MemoryStore
	Key     string  // store key; default App

	RefreshBefore time.Duration // proactive refresh lead; default 10m
	FetchTimeout  time.Duration // one fetch, including the store round trips; default 10s
	MinBackoff    time.Duration // first retry after a failed fetch; default 1s
	MaxBackoff    time.Duration // cap, and the wait after a configuration errcode; default 5m
	LockTTL       time.Duration // shared stores: how long a refresh lock lives; default FetchTimeout + 5s
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
	// OnStoreError, if set, is called when the store fails; op is "load" or "save".
	OnStoreError func(op string, err error)
	// OnInstall, if set, is called with every token value that becomes
	// current (fetched, loaded from the store or adopted from another
	// replica), before any caller can be handed it — so that it can be
	// scrubbed from answers. It must not block.
	OnInstall func(value string)
	// Budget, if set, is asked before every Classic or WeCom fetch (each
	// one counts against WeChat's daily limit); an error refuses the fetch
	// and backs off at MaxBackoff. Stable fetches are budgeted by
	// ForcedPerDay instead.
	Budget func(ctx context.Context) error
}

// Cache holds one app's token. Current is the hot path; the first Get,
// Invalidate and Refresh fetch through one shared flight. Run keeps the
// token fresh in the background. A Cache is safe for concurrent use.
//
// Cache is not a rate limiter: it caps forced stable refreshes and backs off
// after failures, but callers bound request volume elsewhere.
type Cache struct {
	opts Options
	cur  atomic.Pointer[Token]
	sf   singleflight.Group
	wake chan struct{}

	refreshes atomic.Int64

	mu          sync.Mutex
	failures    int
	retryAt     time.Time
	lastErr     error
	due         time.Time // next proactive refresh
	forcedDay   string
	forcedCount int
	lastForced  time.Time
	storeDown   bool // the last store operation failed
}

// New returns a Cache for one app. It does no I/O; call Run to load the
// stored token and keep it fresh.
func New(opts Options) (*Cache, error) {
	if opts.Fetcher == nil {
		return nil, errors.New("token: Options.Fetcher is required")
	}
	switch opts.Mode {
	case Stable, Classic, WeCom:
	default:
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
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	opts.Logger = opts.Logger.With("app", opts.App)
	return &Cache{opts: opts, wake: make(chan struct{}, 1)}, nil
}

func setDefault(d *time.Duration, v time.Duration) {
	if *d <= 0 {
		*d = v
	}
}

// Current returns the token in memory, or nil before the first one. It
// takes no lock and does no I/O; the caller checks Valid. The returned
// Token must not be modified.
func (c *Cache) Current() *Token { return c.cur.Load() }

// Get returns a valid token, fetching one if there is none. Concurrent
// callers share one fetch; each stops waiting when its own ctx ends.
func (c *Cache) Get(ctx context.Context) (*Token, error) {
	cur := c.cur.Load()
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
	if cur := c.cur.Load(); cur != nil {
		bad = cur.Value
	}
	return c.refresh(ctx, bad, ReasonManual)
}

// Refreshes is the number of tokens obtained from WeChat so far.
func (c *Cache) Refreshes() int64 { return c.refreshes.Load() }

// Status is a snapshot of a Cache for health checks and the admin API.
type Status struct {
	Token     *Token    // nil before the first token
	Refreshes int64     // tokens obtained from WeChat
	Failures  int       // consecutive failed fetches
	LastError error     // the last failure, nil after a success; never holds a secret
	RetryAt   time.Time // when a failing cache tries again
}

// Status returns a snapshot of the cache.
func (c *Cache) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	return Status{Token: c.cur.Load(), Refreshes: c.refreshes.Load(), Failures: c.failures, LastError: c.lastErr, RetryAt: c.retryAt}
}

// refresh runs doRefresh in the one shared flight. The flight runs on a
// context no caller can cancel, bounded by FetchTimeout; each caller waits
// on its own ctx.
func (c *Cache) refresh(ctx context.Context, bad string, reason Reason) (*Token, error) {
	// A manual refresh has its own flight: joining another one would hand
	// the operator a token that was never refreshed.
	key := "refresh"
	if reason == ReasonManual {
		key = "manual"
	}
	ch := c.sf.DoChan(key, func() (any, error) {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.opts.FetchTimeout)
		defer cancel()
		return c.doRefresh(fctx, bad, reason)
	})
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case r := <-ch:
		if r.Err != nil {
			return nil, r.Err
		}
		return r.Val.(*Token), nil
	}
}

func (c *Cache) doRefresh(ctx context.Context, bad string, reason Reason) (*Token, error) {
	now := c.opts.Now()
	cur := c.cur.Load()
	// Compare: the token to replace is no longer current, so someone
	// refreshed while this caller waited.
	if cur.Valid(now) && cur.Value != bad {
		return cur, nil
	}
	// A newer token may be in the store (another replica refreshed).
	if reason != ReasonManual && !c.isStoreDown() {
		if st, ok := c.loadStore(ctx); ok && st.Valid(now) && st.Value != bad && (cur == nil || st.ExpiresAt.After(cur.ExpiresAt)) {
			c.install(&st)
			c.opts.Logger.Info("token adopted from store", "fingerprint", Fingerprint(st.Value), "reason", reason)
			return &st, nil
		}
	}
	c.mu.Lock()
	retryAt, lastErr := c.retryAt, c.lastErr
	c.mu.Unlock()
	if reason != ReasonManual && now.Before(retryAt) {
		return nil, fmt.Errorf("%w until %s: %w", ErrUnavailable, retryAt.Format(time.RFC3339), lastErr)
	}

	alone := false // the shared store is down: act without the fleet
	if locker, ok := c.opts.Store.(Locker); ok {
		var adopted *Token
		var unlock func()
		var err error
		if c.isStoreDown() {
			err = errStoreDown // known down: do not wait on it; the backstop re-probes
		} else {
			adopted, unlock, err = c.acquire(ctx, locker, bad)
		}
		switch {
		case adopted != nil:
			return adopted, nil
		case err == nil:
			defer unlock()
		case ctx.Err() != nil:
			return nil, err
		default:
			if err != errStoreDown {
				c.storeError("lock", err)
			}
			// Stable normal mode cannot invalidate anyone: fetch alone.
			// Classic and WeCom fetches would: only for a token that has
			// really expired.
			if c.opts.Mode != Stable && cur.Valid(now) {
				c.deferRecheck(now)
				return cur, nil
			}
			alone = true
		}
	}

	force := false
	if reason == ReasonManual && c.opts.Mode == Stable {
		if alone || !c.takeForce(now) {
			return nil, ErrForceBudget
		}
		force = true
	}
	t, err := c.fetch(ctx, reason, force)
	if err != nil {
		return nil, err
	}
	if c.opts.Mode == Stable && !force && bad != "" && t.Value == bad && reason == ReasonInvalid {
		// Normal mode handed back the token WeChat just rejected: only a
		// forced refresh replaces it.
		if alone || !c.takeForce(now) {
			c.opts.Logger.Warn("token rejected but forced refresh budget exhausted", "fingerprint", Fingerprint(bad))
			return &t, nil
		}
		if t, err = c.fetch(ctx, reason, true); err != nil {
			return nil, err
		}
	}
	c.refreshes.Add(1)
	c.install(&t)
	if err := c.opts.Store.Save(ctx, c.opts.Key, t); err != nil {
		c.storeError("save", err)
	} else {
		c.storeOK()
	}
	c.opts.Logger.Info("token refreshed", "reason", reason, "forced", force,
		"fingerprint", Fingerprint(t.Value), "expires_in", int(t.ExpiresAt.Sub(now).Seconds()))
	return &t, nil
}

// acquire takes the refresh lock of a shared store. While another replica
// holds it, acquire waits for that replica's token and returns it (adopted).
// The holder re-reads the store before fetching: a token newer than the
// one to replace is adopted instead.
func (c *Cache) acquire(ctx context.Context, locker Locker, bad string) (adopted *Token, unlock func(), err error) {
	const poll = 25 * time.Millisecond
	for {
		lctx, cancel := context.WithTimeout(ctx, storeTimeout)
		unlock, ok, err := locker.TryLock(lctx, c.opts.Key, c.opts.LockTTL)
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				err = fmt.Errorf("%w: %w", errStoreDown, err)
			}
			return nil, nil, err
		}
		// Read the store first, then look at the current token: an
		// announcement installs a token only after it is stored, so
		// between the two nothing can be missed.
		st := c.newerInStore(ctx, bad)
		if cur := c.cur.Load(); cur.Valid(c.opts.Now()) && cur.Value != bad {
			st = cur // already replaced, by us or by an announcement
		}
		if st != nil {
			if ok {
				unlock()
			}
			if st != c.cur.Load() {
				c.install(st)
				c.opts.Logger.Info("token adopted from store", "fingerprint", Fingerprint(st.Value))
			}
			return st, nil, nil
		}
		if ok {
			return nil, unlock, nil
		}
		t := time.NewTimer(poll)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, nil, ctx.Err()
		case <-t.C:
		}
	}
}

// newerInStore returns the stored token if it is valid, is not bad, and
// is newer than the current one.
func (c *Cache) newerInStore(ctx context.Context, bad string) *Token {
	st, ok := c.loadStore(ctx)
	if !ok || !st.Valid(c.opts.Now()) || st.Value == bad {
		return nil
	}
	if cur := c.cur.Load(); cur != nil && (st.Value == cur.Value || !st.ExpiresAt.After(cur.ExpiresAt)) {
		return nil
	}
	return &st
}

// deferRecheck schedules the background loop to look again soon, without
// counting a failure: used while the shared store is down.
func (c *Cache) deferRecheck(now time.Time) {
	c.mu.Lock()
	c.due = now.Add(c.opts.SyncEvery)
	c.mu.Unlock()
	c.poke()
}

// fetch asks WeChat and records the outcome for backoff and metrics.
func (c *Cache) fetch(ctx context.Context, reason Reason, force bool) (Token, error) {
	if c.opts.Budget != nil && c.opts.Mode != Stable {
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

func (c *Cache) fail(err error) {
	now := c.opts.Now()
	c.mu.Lock()
	c.failures++
	d := c.opts.MaxBackoff
	var apiErr *wechat.APIError
	configErr := errors.As(err, &apiErr) && wechat.IsConfigError(apiErr.Code)
	budget := errors.Is(err, ErrFetchBudget)
	if !configErr && !budget && c.failures < 32 {
		d = min(c.opts.MinBackoff<<(c.failures-1), c.opts.MaxBackoff)
	}
	d = d/2 + time.Duration(c.opts.Rand()*float64(d/2)) // jitter in [d/2, d)
	c.retryAt, c.lastErr = now.Add(d), err
	failures := c.failures
	c.mu.Unlock()
	attrs := []any{"err", err, "failures", failures, "retry_in", d.Round(time.Millisecond).String()}
	if apiErr != nil {
		attrs = append(attrs, "errcode", apiErr.Code)
	}
	if configErr {
		c.opts.Logger.Error("token fetch failed: check appid, secret and IP whitelist", attrs...)
	} else {
		c.opts.Logger.Warn("token fetch failed", attrs...)
	}
	c.poke()
}

// install makes t current, clears the failure state and schedules the next
// proactive refresh.
func (c *Cache) install(t *Token) {
	if c.opts.OnInstall != nil {
		c.opts.OnInstall(t.Value)
	}
	now := c.opts.Now()
	c.mu.Lock()
	prev := c.cur.Load()
	c.cur.Store(t)
	c.failures, c.retryAt, c.lastErr = 0, time.Time{}, nil
	if prev != nil && prev.Value == t.Value {
		// WeChat handed back the same token (stable normal mode, WeCom):
		// ask again halfway to its expiry, when it will have rotated.
		c.due = now.Add(max(t.ExpiresAt.Sub(now)/2, time.Second))
	} else {
		lead := c.lead(t)
		c.due = t.ExpiresAt.Add(-lead).Add(time.Duration(c.opts.Rand() * 0.2 * float64(lead)))
	}
	c.mu.Unlock()
	c.poke()
}

// lead is how long before expiry the proactive refresh is due. Classic
// tokens can be replaced at any time (the old one lives 5 more minutes).
// Stable normal mode only rotates in its last minutes, so asking earlier
// returns the same token. WeCom returns the same token until it expires.
func (c *Cache) lead(t *Token) time.Duration {
	half := t.Lifetime() / 2
	switch c.opts.Mode {
	case Stable:
		return min(c.opts.RefreshBefore, stableRotation, half)
	case WeCom:
		return 0
	}
	return min(c.opts.RefreshBefore, half)
}

func (c *Cache) takeForce(now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	day := now.In(c.opts.Location).Format(time.DateOnly)
	if day != c.forcedDay {
		c.forcedDay, c.forcedCount = day, 0
	}
	if c.forcedCount >= c.opts.ForcedPerDay || (!c.lastForced.IsZero() && now.Sub(c.lastForced) < c.opts.ForcedSpacing) {
		return false
	}
	c.forcedCount++
	c.lastForced = now
	return true
}

func (c *Cache) loadStore(ctx context.Context) (Token, bool) {
	ctx, cancel := context.WithTimeout(ctx, storeTimeout)
	defer cancel()
	t, err := c.opts.Store.Load(ctx, c.opts.Key)
	if err != nil {
		if !errors.Is(err, ErrNotFound) {
			c.storeError("load", err)
		} else {
			c.storeOK()
		}
		return Token{}, false
	}
	c.storeOK()
	return t, true
}

// storeError counts every failure and logs the first of a run, so an
// outage does not flood the log.
func (c *Cache) storeError(op string, err error) {
	c.mu.Lock()
	first := !c.storeDown
	c.storeDown = true
	c.mu.Unlock()
	if first {
		c.opts.Logger.Warn("token store failed; serving the cached token", "op", op, "err", err)
	}
	if c.opts.OnStoreError != nil {
		c.opts.OnStoreError(op, err)
	}
}

func (c *Cache) isStoreDown() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.storeDown
}

func (c *Cache) storeOK() {
	c.mu.Lock()
	was := c.storeDown
	c.storeDown = false
	c.mu.Unlock()
	if was {
		c.opts.Logger.Info("token store reachable again")
	}
}

// sync adopts a newer token that another replica saved. A store that
// lost its data (Redis restarted empty) gets the current token back, so
// replicas that start later reuse it instead of fetching.
func (c *Cache) sync(ctx context.Context) {
	sctx, cancel := context.WithTimeout(ctx, storeTimeout)
	defer cancel()
	st, err := c.opts.Store.Load(sctx, c.opts.Key)
	switch {
	case errors.Is(err, ErrNotFound):
		c.storeOK()
		if cur := c.cur.Load(); cur.Valid(c.opts.Now()) {
			if err := c.opts.Store.Save(sctx, c.opts.Key, *cur); err != nil {
				c.storeError("save", err)
			} else {
				c.opts.Logger.Info("token restored to the store", "fingerprint", Fingerprint(cur.Value))
			}
		}
	case err != nil:
		c.storeError("load", err)
	default:
		c.storeOK()
		cur := c.cur.Load()
		if st.Valid(c.opts.Now()) && (cur == nil || (st.Value != cur.Value && st.ExpiresAt.After(cur.ExpiresAt))) {
			c.install(&st)
			c.opts.Logger.Info("token adopted from store", "fingerprint", Fingerprint(st.Value))
		}
	}
}

func (c *Cache) poke() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// Run loads a stored token (a restart with a valid stored token costs no
// fetch) and then keeps the token fresh until ctx ends: it refreshes before
// expiry with jitter and retries failed fetches with exponential backoff.
// Callers never wait on a proactive refresh. Run returns when ctx is done.
func (c *Cache) Run(ctx context.Context) {
	if st, ok := c.loadStore(ctx); ok && st.Valid(c.opts.Now()) && c.cur.Load() == nil {
		c.install(&st)
		c.opts.Logger.Info("token reused from store", "fingerprint", Fingerprint(st.Value),
			"expires_in", int(st.ExpiresAt.Sub(c.opts.Now()).Seconds()))
	}
	timer := time.NewTimer(0)
	defer timer.Stop()
	// With a shared store, tokens saved by other replicas arrive by
	// announcement, with a periodic re-read as a backstop.
	var updates <-chan string
	var backstop <-chan time.Time
	if w, ok := c.opts.Store.(Watcher); ok {
		updates = w.Watch(ctx)
	}
	if _, ok := c.opts.Store.(Locker); ok {
		t := time.NewTicker(c.opts.SyncEvery)
		defer t.Stop()
		backstop = t.C
	}
	for {
		timer.Reset(c.wait())
		select {
		case <-ctx.Done():
			return
		case <-c.wake:
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
		if c.wait() > 0 {
			continue // rescheduled meanwhile
		}
		cur := c.cur.Load()
		reason, bad := ReasonStartup, ""
		if cur != nil {
			reason, bad = ReasonProactive, cur.Value
			if !cur.Valid(c.opts.Now()) {
				reason = ReasonInvalid
			}
		}
		_, _ = c.refresh(ctx, bad, reason) // failures are logged and scheduled by fail
	}
}

// wait returns how long until the background loop has work.
func (c *Cache) wait() time.Duration {
	now := c.opts.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if now.Before(c.retryAt) {
		return c.retryAt.Sub(now)
	}
	if c.cur.Load() == nil || c.failures > 0 {
		return 0
	}
	return max(c.due.Sub(now), 0)
}
