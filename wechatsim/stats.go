package wechatsim

import (
	"hash/maphash"
	"sync"
	"sync/atomic"
)

// Stats is a snapshot of what the simulator has seen since the start or the
// last reset; GET /sim/stats answers it as JSON. A Stats is a plain value,
// owned by its receiver.
type Stats struct {
	// TokenFetches counts every call to a token endpoint naming a known app,
	// whatever its outcome, per appid (corpid for WeCom, suite id for
	// suites, corpid for providers and for corps that installed a suite).
	// Every configured app is present.
	TokenFetches map[string]TokenFetches `json:"token_fetches"`
	// TicketFetches counts every call to a ticket endpoint whose token
	// names a known app and whose type the app's kind has, whatever its
	// outcome, per appid (corpid for WeCom) and type: jsapi and wx_card for
	// WeChat apps, corp_jsapi (get_jsapi_ticket) and agent_config for WeCom.
	// Every configured app is present with every type of its kind (suites
	// and providers hold no tickets and are absent).
	TicketFetches map[string]map[string]int64 `json:"ticket_fetches"`
	// APICalls counts every call to a WeChat endpoint, per path, including
	// token endpoints, failed and faulted calls.
	APICalls map[string]int64 `json:"api_calls"`
	// Errcodes counts every non-zero errcode answered, faults included.
	Errcodes map[int]int64 `json:"errcodes"`
	// DuplicateRequestIDs lists X-Request-Id values seen on more than one
	// successful business-API call, in the order their first repeat arrived.
	// It is never nil.
	DuplicateRequestIDs []string `json:"duplicate_request_ids"`
}

// TokenFetches counts one app's calls to the token endpoints. Stable counts
// normal-mode stable_token calls, StableForced those with force_refresh.
type TokenFetches struct {
	Classic      int64 `json:"classic"`
	Stable       int64 `json:"stable"`
	StableForced int64 `json:"stable_forced"`
	WeCom        int64 `json:"wecom"`
	Component    int64 `json:"component,omitempty"`  // api_component_token calls (components)
	Authorizer   int64 `json:"authorizer,omitempty"` // api_authorizer_token and api_query_auth calls (merchants)
	Suite        int64 `json:"suite,omitempty"`      // get_suite_token calls (suites)
	Corp         int64 `json:"corp,omitempty"`       // get_corp_token and v1 get_permanent_code calls (corps that installed a suite, summed over suites)
	Provider     int64 `json:"provider,omitempty"`   // get_provider_token calls (providers)
}

// idShards spreads request-id bookkeeping over independent locks.
const idShards = 64

// stats is the live, concurrently updated form of Stats.
type stats struct {
	apiCalls counts[string]
	errcodes counts[int]

	seed maphash.Seed
	ids  [idShards]idShard

	dupMu  sync.Mutex
	dupSet map[string]struct{}
	dups   []string
}

// idShard remembers hashes of request ids: 8 bytes per id however long it
// is, so a long load test stays affordable. Two ids sharing a 64-bit hash
// would count as a duplicate; the odds are negligible.
type idShard struct {
	mu   sync.Mutex
	seen map[uint64]struct{}
	_    [48]byte // keep shards on separate 64-byte cache lines
}

func (s *stats) init(seed maphash.Seed) {
	s.apiCalls.m = make(map[string]*atomic.Int64)
	s.errcodes.m = make(map[int]*atomic.Int64)
	s.seed = seed
	for i := range s.ids {
		s.ids[i].seen = make(map[uint64]struct{})
	}
	s.dupSet = make(map[string]struct{})
}

// seeRequestID records a successful business call carrying id.
func (s *stats) seeRequestID(id string) {
	h := maphash.String(s.seed, id)
	sh := &s.ids[h%idShards]
	sh.mu.Lock()
	_, dup := sh.seen[h]
	if !dup {
		sh.seen[h] = struct{}{}
	}
	sh.mu.Unlock()
	if !dup {
		return
	}
	s.dupMu.Lock()
	if _, ok := s.dupSet[id]; !ok {
		s.dupSet[id] = struct{}{}
		s.dups = append(s.dups, id)
	}
	s.dupMu.Unlock()
}

// counts is a set of named counters; adding to an existing one takes only a
// read lock and an atomic add.
type counts[K comparable] struct {
	mu sync.RWMutex
	m  map[K]*atomic.Int64
}

func (c *counts[K]) add(k K, n int64) {
	c.mu.RLock()
	v := c.m[k]
	c.mu.RUnlock()
	if v == nil {
		c.mu.Lock()
		if v = c.m[k]; v == nil {
			v = new(atomic.Int64)
			c.m[k] = v
		}
		c.mu.Unlock()
	}
	v.Add(n)
}

func (c *counts[K]) snapshot() map[K]int64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make(map[K]int64, len(c.m))
	for k, v := range c.m {
		out[k] = v.Load()
	}
	return out
}

// snapshot implements Server.Stats.
func (st *state) snapshot() Stats {
	out := Stats{
		TokenFetches:  make(map[string]TokenFetches, len(st.apps)),
		TicketFetches: make(map[string]map[string]int64, len(st.apps)),
		APICalls:      st.stats.apiCalls.snapshot(),
		Errcodes:      st.stats.errcodes.snapshot(),
	}
	for _, a := range st.allApps() {
		// A corp that installed several suites (or is also configured)
		// adds up over its appStates.
		id := a.cfg.id
		f := out.TokenFetches[id]
		f.Classic += a.fetchClassic.Load()
		f.Stable += a.fetchStable.Load()
		f.StableForced += a.fetchForced.Load()
		f.WeCom += a.fetchWeCom.Load()
		f.Component += a.fetchComponent.Load()
		f.Authorizer += a.fetchAuthorizer.Load()
		f.Suite += a.fetchSuite.Load()
		f.Corp += a.fetchCorp.Load()
		f.Provider += a.fetchProvider.Load()
		out.TokenFetches[id] = f
		types := []int{ticketJSAPI, ticketWxCard}
		switch a.cfg.kind {
		case KindWeCom:
			types = []int{ticketCorpJSAPI, ticketAgentConfig}
		case KindSuite, KindProvider:
			types = nil
		}
		tf := out.TicketFetches[id]
		if tf == nil && types != nil {
			tf = make(map[string]int64, len(types))
			out.TicketFetches[id] = tf
		}
		for _, typ := range types {
			tf[ticketNames[typ]] += a.fetchTickets[typ].Load()
		}
	}
	st.stats.dupMu.Lock()
	out.DuplicateRequestIDs = append([]string{}, st.stats.dups...)
	st.stats.dupMu.Unlock()
	return out
}
