// Package wechatsim is an in-process simulator of the WeChat and WeCom server
// APIs (api.weixin.qq.com, qyapi.weixin.qq.com) for tests, demos and load
// benchmarks.
//
// It models what a token-managing client has to survive: classic tokens that
// supersede each other with a 5-minute overlap, stable tokens that rotate on
// their own, WeCom tokens per corpsecret, daily and per-minute quotas, early
// invalidation, and injected faults. Every expiry, overlap, spacing and quota
// is measured on the simulator clock, which tests move forward instead of
// sleeping. A control API under /sim/ (and the matching Go methods) drives the
// clock, invalidates tokens, injects faults and reports what happened.
//
// Every answered WeChat call is recorded under a rid, the one its errmsg
// ends with (and the echo of a business call carries), so that
// /cgi-bin/openapi/rid/get can answer with what was sent, credentials
// included, as WeChat may.
//
// wechatsim is not a fake of WeChat's business APIs: any other path is
// answered with an echo of the request once its token and quota are checked.
package wechatsim

import (
	"errors"

	"fmt"
	"github.com/wxproxy/wxproxy/wxcrypt"
	"hash/maphash"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// App kinds, the values of App.Kind.
const (
	KindOfficial    = "official"    // Official Account: /cgi-bin/token, stable_token, /sns/oauth2
	KindMiniProgram = "miniprogram" // Mini Program: as official, plus /sns/jscode2session
	KindWeCom       = "wecom"       // WeCom app: /cgi-bin/gettoken with corpid + corpsecret
)

// DefaultTokenTTL is the expires_in of newly minted tokens when
// Options.TokenTTL is zero, as on WeChat.
const DefaultTokenTTL = 7200 * time.Second

// Paths of the token endpoints; PathToken and PathStableToken have built-in
// quotas (see Options.Quotas).
const (
	PathToken       = "/cgi-bin/token"
	PathStableToken = "/cgi-bin/stable_token"
	PathGetToken    = "/cgi-bin/gettoken"
	PathRidGet      = "/cgi-bin/openapi/rid/get"
)

// App is one application the simulator knows. Kind is KindOfficial (the
// default when empty), KindMiniProgram or KindWeCom; official accounts and
// mini programs behave alike. For KindWeCom, AppID is the corpid and Secret a
// corpsecret; several WeCom entries may share a corpid with different
// secrets, one per WeCom agent, and each secret has its own token. App is a
// plain value.
type App struct {
	AppID  string
	Secret string
	Kind   string
}

// Quota limits calls to one API path per appid (corpid for WeCom). Zero means
// unlimited. PerMinute is a fixed window on the simulator clock's minute
// (exceeding it answers 45011); PerDay resets at 00:00 Asia/Shanghai on the
// simulator clock (exceeding it answers 45009). Only calls that passed the
// credential or token check count. Quota is a plain value.
type Quota struct {
	PerMinute int
	PerDay    int
}

// Options configures a Server. The zero value of each field is usable: no
// apps (which New refuses), no API quotas beyond the token endpoints'
// defaults, no latency, DefaultTokenTTL, DefaultRidRecords and time.Now. New
// copies what it keeps, so Options may be reused or changed afterwards.
type Options struct {
	// Apps are the applications whose credentials the token endpoints accept.
	Apps []App
	// Quotas are per-API limits keyed by path ("/cgi-bin/message/custom/send").
	// "/cgi-bin/token" defaults to 2000 per day and "/cgi-bin/stable_token" to
	// 10000 per minute and 500000 per day; an entry here replaces the default.
	Quotas map[string]Quota
	// Latency is added to every WeChat answer (not to the control API).
	Latency time.Duration
	// TokenTTL is the lifetime (expires_in) of newly minted tokens and tickets;
	// 0 means DefaultTokenTTL. Short TTLs let refresh cycles run in seconds.
	TokenTTL time.Duration
	// TicketGrace is how long a superseded ticket stays valid after a
	// new one replaced it (WeChat's is undocumented; an old ticket was seen
	// working after a new one appeared); 0 means DefaultTicketGrace.
	TicketGrace time.Duration
	// RidRecords is how many of the newest calls rid/get can find; older
	// ones are forgotten first, and so are any beyond 256 MiB of records
	// (each field of a record keeps at most 64 KiB). 0 means
	// DefaultRidRecords.
	RidRecords int
	// Now is the base clock; the simulator clock is Now() plus an offset that
	// POST /sim/clock and Advance move forward. Nil means time.Now. It is
	// called from concurrent requests.
	Now func() time.Time
	// Components are Open Platform third-party platforms; their pushes go
	// to Callback (or each Component's own).
	Components []Component
	Callback   string
	// Suites are WeCom third-party suites; their pushes go to Callback (or
	// each Suite's own). Providers are WeCom service providers.
	Suites    []Suite
	Providers []Provider
	// PushClient sends the pushes; default a client with a 5 s timeout.
	PushClient *http.Client
}

// Sentinel errors of the Go control methods.
var (
	// ErrUnknownApp is returned for an appid (or corpid) the simulator does not know.
	ErrUnknownApp = errors.New("wechatsim: unknown app")
	// ErrNegativeAdvance is returned by Advance for a negative duration: the
	// simulator clock never goes back.
	ErrNegativeAdvance = errors.New("wechatsim: the clock cannot go back")
)

// Server is the simulator: an http.Handler answering the WeChat endpoints and
// the /sim/ control API. Create it with New. Server is safe for concurrent
// use; its state lives in memory and is lost with it.
type Server struct {
	apps    map[string]*appConfig // appid or corpid → config; never written after New
	order   []string              // appids in configuration order
	quotas  map[string]Quota      // effective per-path quotas; never written after New
	latency time.Duration
	ttl     time.Duration
	grace   time.Duration // TicketGrace with its default
	base    func() time.Time
	seed    maphash.Seed
	rids    int       // Options.RidRecords with its default
	bufs    sync.Pool // *businessBuf
	calls   sync.Pool // *call

	pushClient *http.Client

	maxSuiteCorps int // corps that may install one suite
	maxAuthCodes  int // unexchanged auth codes of one suite

	st atomic.Pointer[state] // replaced wholesale by Reset
}

// appConfig is the immutable part of an app.
type appConfig struct {
	id      string
	kind    string
	secrets []string // one for WeChat apps; one per agent for WeCom
	num     uint32   // 1 + its index in Server.order; records of calls use 0 for "no app"

	component string           // merchants: the component they authorized
	suite     string           // corps that installed a suite: the suite
	callback  string           // components and suites: where pushes go
	msgToken  string           // components and suites: the message token
	crypt     *wxcrypt.Crypter // components and suites: encrypts pushes
}

// New validates opts and returns a Server in its start state. Errors name the
// offending field, e.g. "wechatsim: apps[1].secret: required".
func New(opts Options) (*Server, error) {
	s := &Server{
		apps:    make(map[string]*appConfig),
		quotas:  map[string]Quota{PathToken: {PerDay: 2000}, PathStableToken: {PerMinute: 10000, PerDay: 500000}},
		latency: opts.Latency,
		ttl:     opts.TokenTTL,
		grace:   opts.TicketGrace,
		rids:    opts.RidRecords,
		base:    opts.Now,
		seed:    maphash.MakeSeed(),

		maxSuiteCorps: defaultMaxSuiteCorps,
		maxAuthCodes:  defaultMaxAuthCodes,
	}
	if len(opts.Apps) == 0 && len(opts.Components) == 0 && len(opts.Suites) == 0 && len(opts.Providers) == 0 {
		return nil, errors.New("wechatsim: apps: at least one app is required")
	}
	s.pushClient = opts.PushClient
	if s.pushClient == nil {
		s.pushClient = &http.Client{Timeout: 5 * time.Second}
	}
	for i, a := range opts.Apps {
		key := fmt.Sprintf("apps[%d]", i)
		kind := a.Kind
		if kind == "" {
			kind = KindOfficial
		}
		switch {
		case a.AppID == "":
			return nil, fmt.Errorf("wechatsim: %s.appid: required", key)
		case a.Secret == "":
			return nil, fmt.Errorf("wechatsim: %s.secret: required", key)
		case kind != KindOfficial && kind != KindMiniProgram && kind != KindWeCom:
			return nil, fmt.Errorf("wechatsim: %s.kind: %q is not official, miniprogram or wecom", key, a.Kind)
		case strings.ContainsAny(a.AppID, "/?#"):
			return nil, fmt.Errorf("wechatsim: %s.appid: %q may not contain '/', '?' or '#'", key, a.AppID)
		}
		c, dup := s.apps[a.AppID]
		switch {
		case !dup:
			c = &appConfig{id: a.AppID, kind: kind, num: uint32(len(s.order) + 1)}
			s.apps[a.AppID] = c
			s.order = append(s.order, a.AppID)
		case kind != KindWeCom || c.kind != KindWeCom:
			return nil, fmt.Errorf("wechatsim: %s.appid: %q is configured twice (only WeCom agents may share a corpid)", key, a.AppID)
		case c.hasSecret(a.Secret):
			return nil, fmt.Errorf("wechatsim: %s.secret: corpid %q already has this secret", key, a.AppID)
		}
		c.secrets = append(c.secrets, a.Secret)
	}
	for i, c := range opts.Components {
		key := fmt.Sprintf("components[%d]", i)
		switch {
		case c.AppID == "" || strings.ContainsAny(c.AppID, "/?#"):
			return nil, fmt.Errorf("wechatsim: %s.appid: required, without '/', '?' or '#'", key)
		case s.apps[c.AppID] != nil:
			return nil, fmt.Errorf("wechatsim: %s.appid: %q is configured twice", key, c.AppID)
		case c.Secret == "":
			return nil, fmt.Errorf("wechatsim: %s.secret: required", key)
		}
		crypt, err := wxcrypt.New(wxcrypt.Options{Token: c.Token, AESKey: c.AESKey})
		if err != nil {
			return nil, fmt.Errorf("wechatsim: %s: %w", key, err)
		}
		cb := c.Callback
		if cb == "" {
			cb = opts.Callback
		}
		s.apps[c.AppID] = &appConfig{id: c.AppID, kind: KindComponent, secrets: []string{c.Secret}, num: uint32(len(s.order) + 1),
			callback: cb, msgToken: c.Token, crypt: crypt}
		s.order = append(s.order, c.AppID)
	}
	for i, su := range opts.Suites {
		key := fmt.Sprintf("suites[%d]", i)
		switch {
		case su.SuiteID == "" || strings.ContainsAny(su.SuiteID, "/?#"):
			return nil, fmt.Errorf("wechatsim: %s.suite_id: required, without '/', '?' or '#'", key)
		case s.apps[su.SuiteID] != nil:
			return nil, fmt.Errorf("wechatsim: %s.suite_id: %q is configured twice", key, su.SuiteID)
		case su.Secret == "":
			return nil, fmt.Errorf("wechatsim: %s.secret: required", key)
		}
		crypt, err := wxcrypt.New(wxcrypt.Options{Token: su.Token, AESKey: su.AESKey})
		if err != nil {
			return nil, fmt.Errorf("wechatsim: %s: %w", key, err)
		}
		cb := su.Callback
		if cb == "" {
			cb = opts.Callback
		}
		s.apps[su.SuiteID] = &appConfig{id: su.SuiteID, kind: KindSuite, secrets: []string{su.Secret}, num: uint32(len(s.order) + 1),
			callback: cb, msgToken: su.Token, crypt: crypt}
		s.order = append(s.order, su.SuiteID)
	}
	for i, p := range opts.Providers {
		key := fmt.Sprintf("providers[%d]", i)
		switch {
		case p.CorpID == "" || strings.ContainsAny(p.CorpID, "/?#"):
			return nil, fmt.Errorf("wechatsim: %s.corpid: required, without '/', '?' or '#'", key)
		case s.apps[p.CorpID] != nil:
			return nil, fmt.Errorf("wechatsim: %s.corpid: %q is configured twice", key, p.CorpID)
		case p.Secret == "":
			return nil, fmt.Errorf("wechatsim: %s.secret: required", key)
		}
		s.apps[p.CorpID] = &appConfig{id: p.CorpID, kind: KindProvider, secrets: []string{p.Secret}, num: uint32(len(s.order) + 1)}
		s.order = append(s.order, p.CorpID)
	}
	for path, q := range opts.Quotas {
		switch {
		case !strings.HasPrefix(path, "/"):
			return nil, fmt.Errorf("wechatsim: quotas.%s: path must start with /", path)
		case q.PerMinute < 0:
			return nil, fmt.Errorf("wechatsim: quotas.%s.per_minute: must be >= 0", path)
		case q.PerDay < 0:
			return nil, fmt.Errorf("wechatsim: quotas.%s.per_day: must be >= 0", path)
		}
		s.quotas[path] = q
	}
	switch {
	case s.latency < 0:
		return nil, errors.New("wechatsim: latency: must be >= 0")
	case s.ttl < 0 || (s.ttl > 0 && s.ttl < time.Second):
		return nil, errors.New("wechatsim: token_ttl: must be at least 1s")
	case s.ttl == 0:
		s.ttl = DefaultTokenTTL
	}
	switch {
	case s.grace < 0:
		return nil, errors.New("wechatsim: ticket_grace: must be >= 0")
	case s.grace == 0:
		s.grace = DefaultTicketGrace
	}
	switch {
	case s.rids < 0:
		return nil, errors.New("wechatsim: rid_records: must be >= 0")
	case s.rids == 0:
		s.rids = DefaultRidRecords
	}
	if s.base == nil {
		s.base = time.Now
	}
	s.bufs.New = newBusinessBuf
	s.calls.New = newCall
	s.st.Store(s.newState())
	return s, nil
}

// ServeHTTP answers the WeChat endpoints and, under /sim/, the control API,
// as listener 0.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.serve(w, r, 0) }

// Listener returns the handler of listener n (0-based): one more address
// of the same WeChat (api, api2, ...), sharing every state with the
// others (a token minted on one works on all), and getting only the faults
// that name no listener or this one (Fault.Listener). Listener(0) is the
// Server itself.
func (s *Server) Listener(n int) http.Handler {
	if n == 0 {
		return s
	}
	return listenerHandler{s, n}
}

type listenerHandler struct {
	s *Server
	n int
}

func (h listenerHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.s.serve(w, r, h.n) }

func (s *Server) serve(w http.ResponseWriter, r *http.Request, listener int) {
	st := s.st.Load()
	path := r.URL.Path
	if path == "/sim" || strings.HasPrefix(path, "/sim/") {
		s.serveControl(st, w, r)
		return
	}
	st.stats.apiCalls.add(path, 1)
	c := s.calls.Get().(*call)
	c.begin(w, r, st.now())
	s.serveWeChat(st, c, r, listener)
	if !c.quiet {
		c.drain()
		st.ridLog.record(c, st.now())
	}
	c.end()
	s.calls.Put(c)
}

// serveWeChat answers a call to a WeChat endpoint.
func (s *Server) serveWeChat(st *state, w *call, r *http.Request, listener int) {
	path := r.URL.Path
	if s.latency > 0 && !sleep(r, s.latency) {
		w.quiet = true
		return
	}
	if f := st.faults.match(path, listener); f != nil {
		if done := s.applyFault(st, f, w, r); done {
			return
		}
	}
	if strings.HasPrefix(path, "/cgi-bin/component/") && s.serveComponent(st, w, r) {
		return
	}
	if strings.HasPrefix(path, pathServicePrefix) {
		s.serveService(st, w, r)
		return
	}
	switch path {
	case PathToken:
		s.classicToken(st, w, r)
	case PathStableToken:
		s.stableToken(st, w, r)
	case PathGetToken:
		s.weComToken(st, w, r)
	case PathRidGet:
		s.withToken(st, w, r, s.ridGet)
	case PathGetTicket, PathWeComJSAPITicket, PathWeComTicket:
		s.ticket(st, w, r)
	case "/cgi-bin/openapi/quota/get":
		s.withToken(st, w, r, s.quotaGet)
	case "/cgi-bin/clear_quota":
		s.withToken(st, w, r, s.clearQuota)
	case "/cgi-bin/media/get":
		s.withToken(st, w, r, s.mediaGet)
	case "/sns/jscode2session":
		s.jsCode2Session(st, w, r)
	case "/sns/oauth2/access_token":
		s.oauthToken(st, w, r)
	case "/sns/userinfo", "/sns/auth":
		s.oauthUser(st, w, r)
	default:
		s.withToken(st, w, r, s.business)
	}
}

// sleep waits d in real time, or until the request is cancelled; it reports
// whether the wait ran to its end.
func sleep(r *http.Request, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.Context().Done():
		return false
	}
}

// Now returns the simulator clock: the base clock plus every Advance.
func (s *Server) Now() time.Time { return s.st.Load().now() }

// Advance moves the simulator clock forward by d, as POST /sim/clock does.
// A negative d returns ErrNegativeAdvance.
func (s *Server) Advance(d time.Duration) error {
	if d < 0 {
		return ErrNegativeAdvance
	}
	s.st.Load().offset.Add(int64(d))
	return nil
}

// Reset returns the simulator to its start state: tokens, tickets, quotas,
// statistics, faults, recorded calls and the clock offset, as POST
// /sim/reset does. Requests in flight finish against the old state.
func (s *Server) Reset() { s.st.Store(s.newState()) }

// Invalidate kills every live token of appid at once, as WeChat sometimes
// does: an app's classic, stable and WeCom tokens (a corpid for WeCom), a
// component's or merchant's, a suite's or provider's, and those a corp got
// from every suite it installed. Later calls with them answer 40001 (suite
// APIs: 42009). It returns the number of tokens killed, or ErrUnknownApp.
func (s *Server) Invalidate(appid string) (int, error) {
	st := s.st.Load()
	targets := st.suiteCorps(appid)
	if a, ok := st.apps[appid]; ok {
		targets = append(targets, a)
	} else if a = st.merchant(appid); a != nil {
		targets = append(targets, a)
	}
	if len(targets) == 0 {
		return 0, ErrUnknownApp
	}
	n := 0
	for _, a := range targets {
		n += st.invalidate(a)
	}
	return n, nil
}

// Tokens returns, per appid (corpid for WeCom), every app token (classic,
// stable, WeCom; not users' OAuth tokens) that the simulator would accept now:
// classic ones first, then stable, then WeCom, each oldest first. Apps without
// one are absent.
func (s *Server) Tokens() map[string][]string { return s.st.Load().liveTokens() }

// Stats returns a snapshot of what the simulator has seen since the start or
// the last Reset.
func (s *Server) Stats() Stats { return s.st.Load().snapshot() }
