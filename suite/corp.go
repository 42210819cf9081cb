package suite

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/wxproxy/wxproxy/platform"
	"github.com/wxproxy/wxproxy/token"
	"github.com/wxproxy/wxproxy/wechat"
)

// Corp is one corp that installed the suite: its permanent code and its
// held access token. It is the proxy's TokenSource for calls made as the
// corp: Current is one atomic load (plus a store of the last-use time),
// with no store round trip. It is safe for concurrent use.
type Corp struct {
	s            *Suite
	corpid       string
	cache        *token.Cache
	code         atomic.Pointer[string] // the permanent code
	unauthorized atomic.Bool
	busy         atomic.Bool
	used         atomic.Int64 // unix seconds of the last call; 0 = none since start
	authorizedAt atomic.Int64 // unix seconds: cancel_auth pushes older than this do not drop it
}

// CorpID is the corp's corpid.
func (c *Corp) CorpID() string { return c.corpid }

// Cache is the holder of the corp's token.
func (c *Corp) Cache() *token.Cache { return c.cache }

func (c *Corp) touch() {
	now := c.s.now().Unix()
	if c.used.Load() != now {
		c.used.Store(now)
	}
}

// Current returns the held corp token, or nil for a corp whose permanent
// code is no longer valid. It records the call for proactive refreshes.
func (c *Corp) Current() *token.Token {
	c.touch()
	if c.unauthorized.Load() {
		return nil
	}
	return c.cache.Current()
}

// Get returns a valid token, fetching one if needed.
func (c *Corp) Get(ctx context.Context) (*token.Token, error) {
	c.touch()
	if c.unauthorized.Load() {
		return nil, errUnauthorized(c.corpid)
	}
	t, err := c.cache.Get(ctx)
	if err == nil && c.unauthorized.Load() {
		return nil, errUnauthorized(c.corpid)
	}
	return t, err
}

// Invalidate is compare-and-refresh after WeCom rejected bad (40014,
// 42001, 40001).
func (c *Corp) Invalidate(ctx context.Context, bad string) (*token.Token, error) {
	if c.unauthorized.Load() {
		return nil, errUnauthorized(c.corpid)
	}
	return c.cache.Invalidate(ctx, bad)
}

// State is ok, refreshing or unauthorized.
func (c *Corp) State() string {
	switch {
	case c.unauthorized.Load():
		return platform.StateUnauthorized
	case c.cache.Status().Failures > 0:
		return platform.StateRefreshing
	}
	return platform.StateOK
}

func (c *Corp) info(now time.Time) CorpInfo {
	st := c.cache.Status()
	in := CorpInfo{CorpID: c.corpid, State: c.State(), Refreshes: st.Refreshes, ConsecutiveFail: st.Failures}
	if pc := c.code.Load(); pc != nil {
		in.PermanentCodeFP = token.Fingerprint(*pc)
	}
	if t := st.Token; t != nil {
		in.Fingerprint = token.Fingerprint(t.Value)
		exp := t.ExpiresAt
		in.ExpiresAt = &exp
		in.TTLSeconds = max(int64(t.ExpiresAt.Sub(now).Seconds()), 0)
	}
	if u := c.used.Load(); u > 0 {
		lu := time.Unix(u, 0)
		in.LastUsed = &lu
	}
	return in
}

// fetch is the Source of the corp's token: get_corp_token with the suite
// token and the permanent code. 40084 (the permanent code is cancelled or
// not this provider's) marks the corp unauthorized.
func (c *Corp) fetch(ctx context.Context, _ bool) (token.Token, error) {
	if c.unauthorized.Load() {
		return token.Token{}, errUnauthorized(c.corpid)
	}
	pc := c.code.Load()
	if pc == nil || *pc == "" {
		return token.Token{}, fmt.Errorf("suite: corp %s has no permanent code", c.corpid)
	}
	var ans struct {
		Token     string `json:"access_token"`
		ExpiresIn int64  `json:"expires_in"`
	}
	s := c.s
	err := s.withSuite(ctx, func(tok string) error {
		return s.call(ctx, pathCorpToken, "suite_access_token", tok, map[string]string{
			"auth_corpid": c.corpid, "permanent_code": *pc,
		}, &ans)
	})
	var api *wechat.APIError
	if errors.As(err, &api) && api.Code == codePermanentCode {
		c.markUnauthorized(ctx, *pc)
		return token.Token{}, errUnauthorized(c.corpid)
	}
	if err != nil {
		return token.Token{}, err
	}
	return answerToken(ans.Token, ans.ExpiresIn, s.now())
}

// markUnauthorized records WeCom's 40084 for the permanent code pc,
// unless a new one arrived meanwhile.
func (c *Corp) markUnauthorized(ctx context.Context, pc string) {
	if cur := c.code.Load(); cur == nil || *cur != pc {
		return
	}
	if c.unauthorized.Swap(true) {
		return
	}
	c.s.log.Warn("corp's permanent code refused (40084); it must install the suite again", "corpid", c.corpid)
	if err := c.s.store.PutRecord(ctx, c.s.opts.Name, c.record()); err != nil {
		c.s.storeError("save_corp", err)
	}
}

// record is the corp's durable record: its permanent code is kept where
// an Open Platform merchant keeps its refresh token.
func (c *Corp) record() platform.Record {
	r := platform.Record{AppID: c.corpid, State: platform.StateOK, UpdatedAt: c.s.now(), AuthorizedAt: c.authorizedAt.Load()}
	if pc := c.code.Load(); pc != nil {
		r.RefreshToken = *pc
	}
	if c.unauthorized.Load() {
		r.State = platform.StateUnauthorized
	}
	return r
}

// CorpKey is the store key of a corp's token (the Open Platform's
// merchant key: the file store drops it with the corp's record).
func CorpKey(name, corpid string) string { return platform.MerchantKey(name, corpid) }

func (s *Suite) newCorp(corpid string) *Corp {
	c := &Corp{s: s, corpid: corpid}
	// Options are valid by construction: New cannot fail. The suite
	// token may be fetched first, hence twice the fetch timeout.
	c.cache, _ = s.holder("corp_access_token", CorpKey(s.opts.Name, corpid), "corp", token.SourceFunc(c.fetch), 2*s.opts.FetchTimeout,
		func(v string) { s.onInstall(corpid, v) })
	return c
}

// adoptRecord adds or updates the corp of r.
func (s *Suite) adoptRecord(r platform.Record) *Corp {
	if r.AppID == "" {
		return nil
	}
	s.onSecret(r.RefreshToken)
	s.mu.Lock()
	c := s.corps[r.AppID]
	if c == nil {
		if len(s.corps) >= maxCorps {
			s.mu.Unlock()
			s.log.Error("too many corps; not adding", "corpid", r.AppID, "max", maxCorps)
			return nil
		}
		c = s.newCorp(r.AppID)
		s.corps[r.AppID] = c
	}
	s.mu.Unlock()
	pc := r.RefreshToken
	c.code.Store(&pc)
	c.unauthorized.Store(r.State == platform.StateUnauthorized)
	if r.AuthorizedAt > c.authorizedAt.Load() {
		c.authorizedAt.Store(r.AuthorizedAt)
	}
	s.missMu.Lock()
	delete(s.misses, r.AppID)
	s.missMu.Unlock()
	return c
}

func (s *Suite) drop(corpid string) {
	s.mu.Lock()
	delete(s.corps, corpid)
	s.mu.Unlock()
}

func (s *Suite) lookup(corpid string) *Corp {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.corps[corpid]
}

// ErrUnknownCorp means the suite holds no permanent code of the corp.
var ErrUnknownCorp = errors.New("suite: corp has not installed this suite")

// Corp returns the corp corpid. A corp not held in memory is looked up in
// the store (another replica may have just added it), at most once per
// corpid every 10 seconds, so unknown corpids cost no store round trip
// per request and no memory beyond maxMisses.
func (s *Suite) Corp(ctx context.Context, corpid string) (*Corp, error) {
	if c := s.lookup(corpid); c != nil {
		return c, nil
	}
	if corpid == "" || len(corpid) > 64 {
		return nil, ErrUnknownCorp
	}
	now := s.now()
	s.missMu.Lock()
	if at, ok := s.misses[corpid]; ok && now.Sub(at) < missTTL {
		s.missMu.Unlock()
		return nil, ErrUnknownCorp
	}
	s.missMu.Unlock()
	r, err := s.store.Record(ctx, s.opts.Name, corpid)
	if err == nil {
		if c := s.adoptRecord(r); c != nil {
			return c, nil
		}
	} else if !errors.Is(err, platform.ErrNotFound) {
		s.storeError("load_corp", err)
	}
	s.missMu.Lock()
	if len(s.misses) >= maxMisses {
		for k, at := range s.misses {
			if now.Sub(at) >= missTTL || len(s.misses) >= maxMisses {
				delete(s.misses, k)
			}
		}
	}
	s.misses[corpid] = now
	s.missMu.Unlock()
	return nil, ErrUnknownCorp
}

// Misses is how many unknown corpids are remembered (bounded by 1024).
func (s *Suite) Misses() int {
	s.missMu.Lock()
	defer s.missMu.Unlock()
	return len(s.misses)
}
