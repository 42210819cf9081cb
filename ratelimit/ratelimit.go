// Package ratelimit keeps callers under WeChat's quotas: per-API per-minute
// limits with burst (a token bucket, golang.org/x/time/rate), per-day
// counters that reset at midnight of a configured time zone, a daily budget
// of token fetches, and the memory of WeChat's own 45009/45011 answers, so
// an exhausted API is answered locally until its quota resets.
//
// A Limiter is not a fairness scheduler: it admits or refuses requests in
// the order they ask, and with OnLimit wait it delays a request at most
// MaxWait.
package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Sentinel errors; a *Denied matches one of them with errors.Is.
var (
	// ErrLimited means a per-minute limit is reached (WeChat's 45011).
	ErrLimited = errors.New("ratelimit: per-minute limit reached")
	// ErrExhausted means a daily quota is used up (WeChat's 45009).
	ErrExhausted = errors.New("ratelimit: daily quota exhausted")
)

// Scope says which limit refused a request; it is a metrics label.
type Scope string

// The scopes.
const (
	ScopeAPI      Scope = "api"      // a configured per-API or default limit
	ScopeCaller   Scope = "caller"   // a caller key's per-minute limit
	ScopeUpstream Scope = "upstream" // WeChat said 45009/45011 and the quota has not reset yet
	ScopeToken    Scope = "token"    // the daily token-fetch budget
)

// Denied is the error for a refused request.
type Denied struct {
	Scope      Scope
	Daily      bool          // a daily quota (45009) rather than a per-minute limit (45011)
	RetryAfter time.Duration // when asking again may succeed
}

func (d *Denied) Error() string {
	kind := "per-minute limit reached"
	if d.Daily {
		kind = "daily quota exhausted"
	}
	return fmt.Sprintf("ratelimit: %s (%s), retry after %s", kind, d.Scope, d.RetryAfter.Round(time.Second))
}

// Is makes errors.Is(err, ErrLimited) and errors.Is(err, ErrExhausted) work.
func (d *Denied) Is(target error) bool {
	return (target == ErrExhausted && d.Daily) || (target == ErrLimited && !d.Daily)
}

// Limit is a request limit; a zero field means no limit of that kind.
type Limit struct {
	PerMinute int
	PerDay    int
	Burst     int // requests that may pass at once; 0 = PerMinute (a full minute's worth)
}

func (l Limit) unlimited() bool { return l.PerMinute <= 0 && l.PerDay <= 0 }

// Settings are one app's quotas. Reloading replaces them as a whole.
type Settings struct {
	Default          Limit            // for APIs without their own entry
	APIs             map[string]Limit // by API path
	Location         *time.Location   // whose midnight starts a quota day; default UTC+8
	Wait             bool             // on a per-minute limit, wait up to MaxWait instead of refusing
	MaxWait          time.Duration
	RespectUpstream  bool // remember WeChat's 45009/45011 answers until the quota resets
	TokenFetchPerDay int  // 0 = no local cap
}

// maxKeys bounds how many distinct API paths get their own counters under
// the default limit; further paths share one, so random paths cannot grow
// memory.
const maxKeys = 4096

// Limiter enforces one app's Settings. It is safe for concurrent use.
type Limiter struct {
	name  string // key namespace, e.g. the app name
	store Store
	now   func() time.Time
	s     atomic.Pointer[Settings]

	keys  sync.Map     // api → *apiKeys, so the hot path builds no strings
	nkeys atomic.Int64 // entries in keys, bounded by maxKeys
	day   atomic.Pointer[dayCache]
}

// apiKeys are the store keys of one API.
type apiKeys struct{ upstream, api string }

// dayCache is the quota day of one clock minute in one zone.
type dayCache struct {
	minute int64
	loc    *time.Location
	day    string
}

// Options configures a Limiter.
type Options struct {
	Name  string           // key namespace; apps sharing a Store need distinct names
	Store Store            // default: a new LocalStore
	Now   func() time.Time // default time.Now
}

// New returns a Limiter enforcing s.
func New(s Settings, opts Options) *Limiter {
	if opts.Store == nil {
		opts.Store = NewLocalStore()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	l := &Limiter{name: opts.Name, store: opts.Store, now: opts.Now}
	l.Update(s)
	return l
}

// Update replaces the settings; counts already made are kept.
func (l *Limiter) Update(s Settings) {
	if s.Location == nil {
		s.Location = time.FixedZone("UTC+8", 8*3600)
	}
	l.s.Store(&s)
}

// Settings returns the settings in force.
func (l *Limiter) Settings() Settings { return *l.s.Load() }

// Allow admits one call to api, or returns a *Denied. With Wait set it may
// block up to MaxWait for a per-minute limit; it returns ctx.Err() if ctx
// ends first. Errors of the Store (Redis unreachable) are returned as is;
// the caller decides whether to fail open.
func (l *Limiter) Allow(ctx context.Context, api string) error {
	s := l.s.Load()
	now := l.now()
	keys := l.apiKeys(api)
	if s.RespectUpstream {
		until, daily, err := l.store.Remembered(ctx, keys.upstream, now)
		if err != nil {
			return err
		}
		if until.After(now) {
			return &Denied{Scope: ScopeUpstream, Daily: daily, RetryAfter: until.Sub(now)}
		}
	}
	lim, ok := s.APIs[api]
	if !ok {
		lim = s.Default
	}
	if lim.unlimited() {
		return nil
	}
	maxWait := time.Duration(0)
	if s.Wait {
		maxWait = s.MaxWait
	}
	return l.take(ctx, keys.api, lim, s, now, maxWait, ScopeAPI)
}

func (l *Limiter) apiKeys(api string) *apiKeys {
	if k, ok := l.keys.Load(api); ok {
		return k.(*apiKeys)
	}
	k := &apiKeys{upstream: l.key("upstream", api), api: l.key("api", api)}
	if l.nkeys.Load() < maxKeys {
		if _, loaded := l.keys.LoadOrStore(api, k); !loaded {
			l.nkeys.Add(1)
		}
	}
	return k
}

// dayOf returns the quota day of now, computed once a minute.
func (l *Limiter) dayOf(now time.Time, loc *time.Location) string {
	m := now.Unix() / 60
	if d := l.day.Load(); d != nil && d.minute == m && d.loc == loc {
		return d.day
	}
	d := &dayCache{minute: m, loc: loc, day: now.In(loc).Format(time.DateOnly)}
	l.day.Store(d)
	return d.day
}

// AllowTokenFetch admits one token fetch under TokenFetchPerDay.
func (l *Limiter) AllowTokenFetch(ctx context.Context) error {
	s := l.s.Load()
	if s.TokenFetchPerDay <= 0 {
		return nil
	}
	return l.take(ctx, l.key("token", ""), Limit{PerDay: s.TokenFetchPerDay}, s, l.now(), 0, ScopeToken)
}

// Observe records WeChat's answer to a call of api: 45009 is remembered
// until the next quota day, 45011 until the next minute. Other codes are
// ignored, and so is everything without RespectUpstream.
func (l *Limiter) Observe(ctx context.Context, api string, errcode int) error {
	s := l.s.Load()
	if !s.RespectUpstream || (errcode != 45009 && errcode != 45011) {
		return nil
	}
	now := l.now()
	daily := errcode == 45009
	until := now.Truncate(time.Minute).Add(time.Minute)
	if daily {
		until = nextMidnight(now, s.Location)
	}
	return l.store.Remember(ctx, l.apiKeys(api).upstream, until, daily)
}

func (l *Limiter) take(ctx context.Context, key string, lim Limit, s *Settings, now time.Time, maxWait time.Duration, scope Scope) error {
	if lim.Burst <= 0 {
		lim.Burst = lim.PerMinute
	}
	wait, err := l.store.Take(ctx, key, lim, now, l.dayOf(now, s.Location), maxWait)
	if err != nil {
		var d *Denied
		if errors.As(err, &d) {
			d.Scope = scope
			if d.Daily {
				d.RetryAfter = nextMidnight(now, s.Location).Sub(now)
			}
		}
		return err
	}
	if wait <= 0 {
		return nil
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func (l *Limiter) key(kind, api string) string { return l.name + "|" + kind + "|" + api }

func nextMidnight(now time.Time, loc *time.Location) time.Time {
	y, m, d := now.In(loc).Date()
	return time.Date(y, m, d+1, 0, 0, 0, 0, loc)
}

// Usage is the state of one API's quota, for the admin API.
type Usage struct {
	API            string     `json:"api"`
	PerMinute      int        `json:"per_minute"`
	PerDay         int        `json:"per_day"`
	Burst          int        `json:"burst"`
	UsedMinute     int64      `json:"used_minute"`
	UsedDay        int64      `json:"used_day"`
	UpstreamLimit  string     `json:"upstream_exhausted,omitempty"` // "45009" or "45011" while remembered
	UpstreamResets *time.Time `json:"upstream_resets_at,omitempty"`
}

// Usage reports every configured API and every API with recorded usage or
// remembered upstream exhaustion.
func (l *Limiter) Usage(ctx context.Context) ([]Usage, error) {
	s := l.s.Load()
	now := l.now()
	day := now.In(s.Location).Format(time.DateOnly)
	apis := map[string]bool{}
	for api := range s.APIs {
		apis[api] = true
	}
	seen, err := l.store.Keys(ctx, l.name+"|")
	if err != nil {
		return nil, err
	}
	for _, k := range seen {
		if _, api, ok := splitKey(k); ok && api != "" {
			apis[api] = true
		}
	}
	out := make([]Usage, 0, len(apis))
	for api := range apis {
		lim, ok := s.APIs[api]
		if !ok {
			lim = s.Default
		}
		u := Usage{API: api, PerMinute: lim.PerMinute, PerDay: lim.PerDay, Burst: lim.Burst}
		if u.UsedMinute, u.UsedDay, err = l.store.Used(ctx, l.key("api", api), now, day); err != nil {
			return nil, err
		}
		until, daily, err := l.store.Remembered(ctx, l.key("upstream", api), now)
		if err != nil {
			return nil, err
		}
		if until.After(now) {
			u.UpstreamLimit = "45011"
			if daily {
				u.UpstreamLimit = "45009"
			}
			u.UpstreamResets = &until
		}
		out = append(out, u)
	}
	slices.SortFunc(out, func(a, b Usage) int { return strings.Compare(a.API, b.API) })
	return out, nil
}

func splitKey(k string) (kind, api string, ok bool) {
	_, rest, ok := strings.Cut(k, "|")
	if !ok {
		return "", "", false
	}
	return strings.Cut(rest, "|")
}
