// Package ratelimit keeps callers under WeChat's quotas: per-API per-minute
// limits with burst (a token bucket: golang.org/x/time/rate in process,
// GCRA in Redis), per-day counters that reset at midnight of a configured
// time zone, a daily budget of token fetches, and the memory of WeChat's own
// 45009/45011 answers, so an exhausted API is answered locally until its
// quota resets. Counts are kept per quota key — a configured or well-known
// API, or Other for every other path — so callers cannot grow them.
//
// A Limiter is not a fairness scheduler: it admits or refuses requests in
// the order they ask, and with OnLimit wait it delays a request at most
// MaxWait.
package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wxproxy/wxproxy/wechat"
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
	RetryAfter time.Duration // when asking again may succeed: whole seconds, at least one
}

func (d *Denied) Error() string {
	kind := "per-minute limit reached"
	if d.Daily {
		kind = "daily quota exhausted"
	}
	return fmt.Sprintf("ratelimit: %s (%s), retry after %s", kind, d.Scope, retryAfter(d.RetryAfter))
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
	APIs             map[string]Limit // by API path, matched ASCII case-insensitively and without one trailing slash
	Location         *time.Location   // whose midnight starts a quota day; default UTC+8
	Wait             bool             // on a per-minute limit, wait up to MaxWait instead of refusing
	MaxWait          time.Duration
	RespectUpstream  bool // remember WeChat's 45009/45011 answers until the quota resets
	TokenFetchPerDay int  // 0 = no local cap
}

// Other is the quota key shared by every API that is neither configured
// in Settings.APIs nor in wechat.WellKnownAPIs. Its counts live under
// Settings.Default; WeChat's 45009/45011 for it are not remembered.
const Other = "(other)"

// minRetryAfter is the shortest RetryAfter of a Denied: Retry-After is a
// whole number of seconds, at least 1 (SPEC §5).
const minRetryAfter = time.Second

// Limiter enforces one app's Settings. It is safe for concurrent use.
//
// A Limiter maps every API path to a quota key before any Store sees it: a
// configured API and a well-known one (wechat.WellKnownAPIs) keep their own
// key, every other path shares Other. So its memory and its Redis keys are
// bounded by the configuration, whatever paths callers send.
type Limiter struct {
	name  string // key namespace, e.g. the app name
	store Store
	now   func() time.Time
	cfg   atomic.Pointer[config]
	token string // store key of the token-fetch budget
	day   atomic.Pointer[dayCache]

	updMu    sync.Mutex                             // serialises Update (reloads and quota syncs)
	settings atomic.Pointer[Settings]               // as last given to Update, before adoption
	wechat   atomic.Pointer[map[string]WeChatQuota] // WeChat's figures by canonical API (SyncWeChat)
}

// config is Settings compiled for the hot path; Update replaces it whole.
type config struct {
	s      Settings
	quotas map[string]*quota // by canonical path: configured and well-known APIs
	other  *quota
	maxLen int // of the paths in quotas: a longer path is Other at once
}

// quota is one quota key of a Limiter and its store keys, built once per
// Update so that Allow builds no strings.
type quota struct {
	api        string // canonical path, or Other
	configured bool   // listed in Settings.APIs
	lim        Limit
	key        string // store key of its counts
	upstream   string // store key of remembered exhaustion; "" = never remembered
}

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
	l.token = l.key("token", "")
	l.Update(s)
	return l
}

// Update replaces the settings; counts already made are kept, and a changed
// per-minute limit takes effect at once: this minute's allowance becomes the
// new burst minus what was used. The keys of s.APIs are canonicalised (lower
// case, no trailing slash); of keys that collide, one already canonical
// wins, else the first in sort order.
func (l *Limiter) Update(s Settings) {
	l.updMu.Lock()
	defer l.updMu.Unlock()
	l.update(s)
}

// update is Update with updMu held.
func (l *Limiter) update(s Settings) {
	given := s
	l.settings.Store(&given)
	if s.Location == nil {
		s.Location = time.FixedZone("UTC+8", 8*3600)
	}
	apis := make(map[string]Limit, len(s.APIs))
	for _, api := range slices.Sorted(maps.Keys(s.APIs)) {
		c := canonical(api)
		if _, dup := apis[c]; !dup || c == api {
			apis[c] = s.APIs[api]
		}
	}
	s.APIs = apis
	c := &config{s: s, quotas: make(map[string]*quota, len(apis)+len(wechat.WellKnownAPIs))}
	add := func(api string, lim Limit, configured bool) {
		if api == Other {
			return
		}
		c.quotas[api] = &quota{api: api, configured: configured, lim: lim, key: l.key("api", api), upstream: l.key("upstream", api)}
		c.maxLen = max(c.maxLen, len(api))
	}
	for _, api := range wechat.WellKnownAPIs {
		add(canonical(api), s.Default, false)
	}
	for api, lim := range apis {
		add(api, l.adopt(api, lim), true)
	}
	// Other is not remembered: one unknown API's 45009 would otherwise
	// block every unknown API until midnight.
	c.other = &quota{api: Other, lim: s.Default, key: l.key("api", Other)}
	l.cfg.Store(c)
}

// Settings returns the settings in force, with canonical API keys.
func (l *Limiter) Settings() Settings { return l.cfg.Load().s }

// Allow admits one call to api, or returns a *Denied. With Wait set it may
// block up to MaxWait for a per-minute limit; it returns ctx.Err() if ctx
// ends first. Errors of the Store (Redis unreachable) are returned as is;
// the caller decides whether to fail open.
func (l *Limiter) Allow(ctx context.Context, api string) error {
	c := l.cfg.Load()
	q := c.quota(api)
	now := l.now()
	if c.s.RespectUpstream && q.upstream != "" {
		until, daily, err := l.store.Remembered(ctx, q.upstream, now)
		if err != nil {
			return err
		}
		if until.After(now) {
			return &Denied{Scope: ScopeUpstream, Daily: daily, RetryAfter: retryAfter(until.Sub(now))}
		}
	}
	if q.lim.unlimited() {
		return nil
	}
	maxWait := time.Duration(0)
	if c.s.Wait {
		maxWait = c.s.MaxWait
	}
	return l.take(ctx, q.key, q.lim, &c.s, now, maxWait, ScopeAPI)
}

// quota returns the quota key of api: its own if configured or well known,
// else Other. It matches ASCII case-insensitively and ignores one trailing
// slash, and allocates nothing for paths up to 256 bytes.
func (c *config) quota(api string) *quota {
	if n := len(api); n > 1 && api[n-1] == '/' {
		api = api[:n-1]
	}
	if len(api) > c.maxLen {
		return c.other
	}
	if q, ok := c.quotas[api]; ok { // already canonical: the common case
		return q
	}
	if !hasUpper(api) {
		return c.other
	}
	var buf [256]byte
	b := buf[:0]
	if len(api) > len(buf) {
		b = make([]byte, 0, len(api))
	}
	if q, ok := c.quotas[string(appendLower(b, api))]; ok { // the conversion does not allocate
		return q
	}
	return c.other
}

// canonical is the form in which API paths are compared: ASCII lower case,
// without one trailing slash.
func canonical(api string) string {
	if n := len(api); n > 1 && api[n-1] == '/' {
		api = api[:n-1]
	}
	if !hasUpper(api) {
		return api
	}
	return string(appendLower(make([]byte, 0, len(api)), api))
}

func hasUpper(s string) bool {
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'Z' {
			return true
		}
	}
	return false
}

func appendLower(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		b = append(b, c)
	}
	return b
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
	c := l.cfg.Load()
	if c.s.TokenFetchPerDay <= 0 {
		return nil
	}
	return l.take(ctx, l.token, Limit{PerDay: c.s.TokenFetchPerDay}, &c.s, l.now(), 0, ScopeToken)
}

// Observe records WeChat's answer to a call of api: 45009 is remembered
// until the next quota day, 45011 until the next minute. Other codes are
// ignored, and so is everything without RespectUpstream. Nothing is
// remembered for Other: an unknown path's 45009 would otherwise refuse
// every unknown API until midnight, so those calls go on to WeChat and get
// its answer themselves.
func (l *Limiter) Observe(ctx context.Context, api string, errcode int) error {
	c := l.cfg.Load()
	if !c.s.RespectUpstream || (errcode != 45009 && errcode != 45011) {
		return nil
	}
	q := c.quota(api)
	if q.upstream == "" {
		return nil
	}
	now := l.now()
	daily := errcode == 45009
	until := now.Truncate(time.Minute).Add(time.Minute)
	if daily {
		until = nextMidnight(now, c.s.Location)
	}
	return l.store.Remember(ctx, q.upstream, until, daily)
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
			d.RetryAfter = retryAfter(d.RetryAfter)
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

// retryAfter rounds d up to whole seconds, at least one: what the caller
// is told must not invite it back before asking can succeed.
func retryAfter(d time.Duration) time.Duration {
	return max(minRetryAfter, (d + time.Second - 1).Truncate(time.Second))
}

func (l *Limiter) key(kind, api string) string { return l.name + "|" + kind + "|" + api }

func nextMidnight(now time.Time, loc *time.Location) time.Time {
	y, m, d := now.In(loc).Date()
	return time.Date(y, m, d+1, 0, 0, 0, 0, loc)
}

// Usage is the state of one API's quota, for the admin API.
type Usage struct {
	API            string     `json:"api"` // a path, or Other
	PerMinute      int        `json:"per_minute"`
	PerDay         int        `json:"per_day"`
	Burst          int        `json:"burst"`
	UsedMinute     int64      `json:"used_minute"`
	UsedDay        int64      `json:"used_day"`
	UpstreamLimit  string     `json:"upstream_exhausted,omitempty"` // "45009" or "45011" while remembered
	UpstreamResets *time.Time `json:"upstream_resets_at,omitempty"`
	// WeChat is what /cgi-bin/openapi/quota/get last said of the API
	// (quotas.sync_from_wechat); PerDay is its daily limit when none is
	// configured.
	WeChat *WeChatQuota `json:"wechat,omitempty"`
}

// Usage reports every configured API, and every well-known API and Other
// with usage today or remembered upstream exhaustion. It asks the Store
// about each quota key in turn (a bounded set), never scans it.
func (l *Limiter) Usage(ctx context.Context) ([]Usage, error) {
	c := l.cfg.Load()
	now := l.now()
	day := now.In(c.s.Location).Format(time.DateOnly)
	var wq map[string]WeChatQuota
	if m := l.wechat.Load(); m != nil {
		wq = *m
	}
	out := make([]Usage, 0, len(c.s.APIs)+1)
	for _, q := range append(slices.Collect(maps.Values(c.quotas)), c.other) {
		u := Usage{API: q.api, PerMinute: q.lim.PerMinute, PerDay: q.lim.PerDay, Burst: q.lim.Burst}
		if w, ok := wq[q.api]; ok && q.configured {
			u.WeChat = &w
		}
		var err error
		if u.UsedMinute, u.UsedDay, err = l.store.Used(ctx, q.key, now, day); err != nil {
			return nil, err
		}
		if q.upstream != "" {
			until, daily, err := l.store.Remembered(ctx, q.upstream, now)
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
		}
		if q.configured || u.UsedMinute > 0 || u.UsedDay > 0 || u.UpstreamResets != nil {
			out = append(out, u)
		}
	}
	slices.SortFunc(out, func(a, b Usage) int { return strings.Compare(a.API, b.API) })
	return out, nil
}
