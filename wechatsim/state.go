package wechatsim

import (
	"crypto/rand"
	"encoding/base64"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wxproxy/wxproxy/wechat"
)

// state is everything POST /sim/reset throws away. Handlers load it once per
// request, so a reset never mixes two states within one answer.
type state struct {
	base   func() time.Time
	offset atomic.Int64 // nanoseconds added to base; only grows

	apps map[string]*appState // appid or corpid → state; the map is never written after newState

	components []string      // component appids, in configuration order; never written after newState
	suites     []string      // suite ids, in configuration order; never written after newState
	merchNum   atomic.Uint32 // numbers merchants' records of calls (appConfig.num)

	mu     sync.RWMutex
	tokens map[string]*record // the one token index: classic, stable, WeCom and user tokens

	faults faultList
	stats  stats
	ridLog *ridLog
}

func (s *Server) newState() *state {
	st := &state{
		base:   s.base,
		apps:   make(map[string]*appState, len(s.apps)),
		tokens: make(map[string]*record),
		ridLog: newRidLog(s.rids, ridChunkSize, ridChunks),
	}
	for id, c := range s.apps {
		a := &appState{
			cfg:      c,
			weCom:    make(map[string]*record),
			tickets:  make(map[string]*ticket),
			hourly:   make(map[string]*hourWindow),
			counters: newCounterSet(),
		}
		switch c.kind {
		case KindComponent:
			a.plat = &platformState{codes: map[string]authCode{}, merchants: map[string]*appState{}}
		case KindSuite:
			a.suite = &suiteState{codes: map[string]authCode{}, corps: map[string]*appState{}}
		}
		st.apps[id] = a
	}
	for _, id := range s.order {
		switch s.apps[id].kind {
		case KindComponent:
			st.components = append(st.components, id)
		case KindSuite:
			st.suites = append(st.suites, id)
		}
	}
	st.merchNum.Store(1 << 24)
	st.stats.init(s.seed)
	return st
}

// now returns the simulator clock.
func (st *state) now() time.Time { return st.base().Add(time.Duration(st.offset.Load())) }

// tokenKind says which endpoint minted a token.
type tokenKind uint8

const (
	kindClassic tokenKind = iota
	kindStable
	kindWeCom
	kindUser // a user's OAuth token from /sns/oauth2/access_token
	kindComponent
	kindAuthorizer
	kindSuite    // suite_access_token
	kindCorp     // a corp's token from get_corp_token
	kindProvider // provider_access_token
	numKinds
)

// record is one minted token. expires never changes; dies is written under the
// owning appState's mutex and read without it on the hot path.
type record struct {
	token   string
	app     *appState
	kind    tokenKind
	openid  string // user tokens: the user
	secret  string // WeCom tokens: the corpsecret (the agent) it was minted for
	expires int64  // unix nanoseconds; at or after it the token answers 42001
	dies    atomic.Int64
}

// die sets when r stops being accepted (answering 40001): at t or at the
// death already set, whichever is earlier. The caller holds r.app.mu, which
// makes the load-then-store safe; readers only load.
func (r *record) die(t int64) {
	if d := r.dies.Load(); d == 0 || t < d {
		r.dies.Store(t)
	}
}

// status returns the errcode using r at now would get: 0, 40001 or 42001.
func (r *record) status(now int64) int {
	if d := r.dies.Load(); d != 0 && now >= d {
		return wechat.CodeInvalidCredential
	}
	if now >= r.expires {
		return wechat.CodeTokenExpired
	}
	return 0
}

// remaining returns the whole seconds r has left at now.
func (r *record) remaining(now int64) int64 { return (r.expires - now) / int64(time.Second) }

// appState is the mutable state of one app (one corpid for WeCom).
type appState struct {
	cfg *appConfig

	mu         sync.Mutex
	minted     [numKinds][]*record    // records still in the token index, oldest first
	classic    *record                // the latest classic token
	stable     *record                // what stable normal mode returns
	weCom      map[string]*record     // corpsecret → current token
	tickets    map[string]*ticket     // ticketKey → current ticket
	hourly     map[string]*hourWindow // WeCom ticket limits per corp or agent and path
	forcedDay  int64                  // Shanghai day of forcedN
	forcedN    int                    // forced stable refreshes on forcedDay
	lastForced int64                  // unix nanoseconds of the last forced refresh; 0 = none
	clearMonth int64                  // Shanghai month of clearN
	clearN     int                    // clear_quota calls in clearMonth

	counters *counterSet // quota counters per API path

	plat  *platformState // components only
	merch *merchantState // merchants (authorizers) only
	suite *suiteState    // suites only
	corp  *corpState     // corps that installed a suite only
	held  *record        // suites, providers and suites' corps: the token handed out while valid

	fetchClassic, fetchStable, fetchForced, fetchWeCom atomic.Int64
	fetchTickets                                       [numTicketTypes]atomic.Int64
	fetchComponent, fetchAuthorizer                    atomic.Int64
	fetchSuite, fetchCorp, fetchProvider               atomic.Int64
}

// Token shape: "86_" followed by tokenRandLen base64url characters, like the
// real thing. Anything else answers 40014.
const (
	tokenPrefix    = "86_"
	tokenRandBytes = 96
	tokenRandLen   = tokenRandBytes / 3 * 4
	tokenLen       = len(tokenPrefix) + tokenRandLen
	retireAfter    = int64(24 * time.Hour) // expired tokens answer 42001 this long, then 40001
	overlap        = int64(5 * time.Minute)
)

// randomString returns base64url text of n random bytes from crypto/rand.
func randomString(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails since Go 1.24
	return base64.RawURLEncoding.EncodeToString(b)
}

// wellFormed reports whether tok has the shape of the simulator's tokens.
func wellFormed(tok string) bool {
	if len(tok) != tokenLen || tok[:len(tokenPrefix)] != tokenPrefix {
		return false
	}
	for i := len(tokenPrefix); i < len(tok); i++ {
		c := tok[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// mint creates a token of kind for a, valid for ttl from now, and indexes it;
// openid is the user of a user token.
// The caller holds a.mu. Records of the same kind that no longer matter are
// dropped from the index on the way: killed ones (an unknown token answers
// 40001 just the same) and those expired for more than a day.
func (st *state) mint(a *appState, kind tokenKind, now int64, ttl time.Duration, openid string) *record {
	return st.mintOwned(a, kind, now, ttl, openid, "")
}

// mintOwned is mint for a WeCom token, which belongs to the agent of secret.
func (st *state) mintOwned(a *appState, kind tokenKind, now int64, ttl time.Duration, openid, secret string) *record {
	r := &record{token: tokenPrefix + randomString(tokenRandBytes), app: a, kind: kind, openid: openid, secret: secret, expires: now + int64(ttl)}
	keep := a.minted[kind][:0]
	var drop []*record
	for _, old := range a.minted[kind] {
		if d := old.dies.Load(); (d != 0 && now >= d) || now >= old.expires+retireAfter {
			drop = append(drop, old)
		} else {
			keep = append(keep, old)
		}
	}
	clear(a.minted[kind][len(keep):])
	a.minted[kind] = append(keep, r)
	st.mu.Lock()
	for _, old := range drop {
		delete(st.tokens, old.token)
	}
	st.tokens[r.token] = r
	st.mu.Unlock()
	return r
}

// supersede applies WeChat's overlap rule when a new token of kind replaces
// prev: prev lives min(its expiry, 5 minutes) more and every older token of
// that kind dies now. The caller holds a.mu.
func supersede(a *appState, kind tokenKind, prev *record, now int64) {
	for _, r := range a.minted[kind] {
		if r != prev {
			r.die(now)
		}
	}
	if prev != nil {
		prev.die(min(prev.expires, now+overlap))
	}
}

// lookup finds the record of tok; it answers 41001, 40014 or 40001 when there
// is none, and 40001 or 42001 for a dead one.
func (st *state) lookup(tok string, now int64) (*record, int) {
	switch {
	case tok == "":
		return nil, wechat.CodeTokenMissing
	case !wellFormed(tok):
		return nil, wechat.CodeInvalidToken
	}
	st.mu.RLock()
	r := st.tokens[tok]
	st.mu.RUnlock()
	if r == nil {
		return nil, wechat.CodeInvalidCredential
	}
	return r, r.status(now)
}

// invalidate kills every live app token of a; it returns how many.
func (st *state) invalidate(a *appState) int {
	now := st.now().UnixNano()
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for _, kind := range appKinds {
		for _, r := range a.minted[kind] {
			if r.status(now) == 0 {
				n++
			}
			r.die(now)
		}
	}
	a.classic, a.stable, a.held = nil, nil, nil
	clear(a.weCom)
	return n
}

// appKinds are the kinds of app tokens (not users' OAuth tokens).
var appKinds = []tokenKind{kindClassic, kindStable, kindWeCom, kindComponent, kindAuthorizer, kindSuite, kindCorp, kindProvider}

// allApps returns every app: configured ones, components' merchants and
// the corps that installed suites. A corp that installed several suites
// (or is also configured) appears once per suite.
func (st *state) allApps() []*appState {
	out := make([]*appState, 0, len(st.apps))
	for _, a := range st.apps {
		out = append(out, a)
	}
	for _, id := range st.components {
		c := st.apps[id]
		c.mu.Lock()
		for _, m := range c.plat.merchants {
			out = append(out, m)
		}
		c.mu.Unlock()
	}
	for _, id := range st.suites {
		su := st.apps[id]
		su.mu.Lock()
		for _, c := range su.suite.corps {
			out = append(out, c)
		}
		su.mu.Unlock()
	}
	return out
}

// liveTokens implements Server.Tokens.
func (st *state) liveTokens() map[string][]string {
	now := st.now().UnixNano()
	out := make(map[string][]string)
	for _, a := range st.allApps() {
		id := a.cfg.id
		a.mu.Lock()
		for _, kind := range appKinds {
			for _, r := range a.minted[kind] {
				if r.status(now) == 0 {
					out[id] = append(out[id], r.token)
				}
			}
		}
		a.mu.Unlock()
	}
	return out
}
