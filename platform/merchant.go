package platform

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/wxproxy/wxproxy/token"
	"github.com/wxproxy/wxproxy/wechat"
)

// Merchant is one authorizer of the platform: its refresh token and its
// held authorizer token. It is the proxy's TokenSource for calls made on
// the merchant's behalf: Current is one atomic load (plus a store of the
// last-use time, which decides proactive refreshes), with no store round
// trip. It is safe for concurrent use.
type Merchant struct {
	p            *Platform
	appid        string
	cache        *token.Cache
	refresh      atomic.Pointer[string]
	unauthorized atomic.Bool
	busy         atomic.Bool  // a scheduled refresh is running
	used         atomic.Int64 // unix seconds of the last call; 0 = none since start
	authorizedAt atomic.Int64 // unix seconds: pushes older than this do not drop it
	// tickets by slot of merchantTicketTypes; nil until first demanded
	tickets [len(merchantTicketTypes)]atomic.Pointer[token.Cache]
}

// AppID is the merchant's authorizer_appid.
func (m *Merchant) AppID() string { return m.appid }

// Cache is the holder of the merchant's authorizer token.
func (m *Merchant) Cache() *token.Cache { return m.cache }

// touch records a call now, at most once a second's worth of writes.
func (m *Merchant) touch() {
	now := m.p.now().Unix()
	if m.used.Load() != now {
		m.used.Store(now)
	}
}

// Current returns the held authorizer token, or nil for a merchant that
// must authorize again. It records the call for proactive refreshes.
func (m *Merchant) Current() *token.Token {
	m.touch()
	if m.unauthorized.Load() {
		return nil
	}
	return m.cache.Current()
}

// Get returns a valid token, fetching one if needed; a merchant that must
// authorize again gets an error wrapping WeChat's 61023.
func (m *Merchant) Get(ctx context.Context) (*token.Token, error) {
	m.touch()
	if m.unauthorized.Load() {
		return nil, errUnauthorized(m.appid)
	}
	t, err := m.cache.Get(ctx)
	if err == nil && m.unauthorized.Load() {
		return nil, errUnauthorized(m.appid)
	}
	return t, err
}

// Invalidate is compare-and-refresh after WeChat rejected bad.
func (m *Merchant) Invalidate(ctx context.Context, bad string) (*token.Token, error) {
	if m.unauthorized.Load() {
		return nil, errUnauthorized(m.appid)
	}
	return m.cache.Invalidate(ctx, bad)
}

// State is ok, refreshing or unauthorized.
func (m *Merchant) State() string {
	switch {
	case m.unauthorized.Load():
		return StateUnauthorized
	case m.cache.Status().Failures > 0:
		return StateRefreshing
	}
	return StateOK
}

// Info is what the admin API shows of the merchant.
func (m *Merchant) Info() AuthorizerInfo { return m.info(m.p.now()) }

func (m *Merchant) info(now time.Time) AuthorizerInfo {
	st := m.cache.Status()
	in := AuthorizerInfo{AppID: m.appid, State: m.State(), Refreshes: st.Refreshes, ConsecutiveFail: st.Failures}
	if rt := m.refresh.Load(); rt != nil {
		in.RefreshTokenFP = token.Fingerprint(*rt)
	}
	if t := st.Token; t != nil {
		in.Fingerprint = token.Fingerprint(t.Value)
		exp := t.ExpiresAt
		in.ExpiresAt = &exp
		in.TTLSeconds = max(int64(t.ExpiresAt.Sub(now).Seconds()), 0)
	}
	if u := m.used.Load(); u > 0 {
		lu := time.Unix(u, 0)
		in.LastUsed = &lu
	}
	for _, ts := range m.Tickets().Statuses() {
		if t := ts.Token; t != nil {
			in.Tickets = append(in.Tickets, TicketInfo{Type: string(ts.Type), Fingerprint: token.Fingerprint(t.Value),
				ExpiresAt: t.ExpiresAt, TTLSeconds: max(int64(t.ExpiresAt.Sub(now).Seconds()), 0)})
		}
	}
	return in
}

// fetch is the Source of the merchant's token: api_authorizer_token with
// the component token and the refresh token. A refresh token WeChat
// returns replaces the stored one; 61023 marks the merchant unauthorized.
func (m *Merchant) fetch(ctx context.Context, _ bool) (token.Token, error) {
	if m.unauthorized.Load() {
		return token.Token{}, errUnauthorized(m.appid)
	}
	rt := m.refresh.Load()
	if rt == nil || *rt == "" {
		return token.Token{}, fmt.Errorf("platform: merchant %s has no refresh token", m.appid)
	}
	var ans struct {
		Token     string `json:"authorizer_access_token"`
		ExpiresIn int64  `json:"expires_in"`
		Refresh   string `json:"authorizer_refresh_token"`
	}
	p := m.p
	err := p.withComponent(ctx, func(tok string) error {
		return p.call(ctx, pathAuthorizerToken, tok, map[string]string{
			"component_appid": p.appid, "authorizer_appid": m.appid, "authorizer_refresh_token": *rt,
		}, &ans)
	})
	var api *wechat.APIError
	if errors.As(err, &api) && api.Code == wechat.CodeRefreshTokenInvalid {
		m.markUnauthorized(ctx, *rt)
		return token.Token{}, errUnauthorized(m.appid)
	}
	if err != nil {
		return token.Token{}, err
	}
	t, err := answerToken(ans.Token, ans.ExpiresIn, p.now())
	if err != nil {
		return token.Token{}, err
	}
	if ans.Refresh != "" && ans.Refresh != *rt {
		p.onSecret(ans.Refresh)
		m.refresh.Store(&ans.Refresh)
		if err := p.store.PutRecord(ctx, p.name, m.record()); err != nil {
			p.storeError("save_authorizer", err)
		}
		p.log.Info("merchant refresh token replaced by WeChat", "authorizer", m.appid, "fingerprint", token.Fingerprint(ans.Refresh))
	}
	return t, nil
}

// markUnauthorized records WeChat's 61023 for the refresh token rt, unless
// a new one arrived meanwhile.
func (m *Merchant) markUnauthorized(ctx context.Context, rt string) {
	if cur := m.refresh.Load(); cur == nil || *cur != rt {
		return
	}
	if m.unauthorized.Swap(true) {
		return
	}
	m.p.log.Warn("merchant must authorize the platform again (61023)", "authorizer", m.appid)
	if err := m.p.store.PutRecord(ctx, m.p.name, m.record()); err != nil {
		m.p.storeError("save_authorizer", err)
	}
}

// record is the merchant's durable record.
func (m *Merchant) record() Record {
	r := Record{AppID: m.appid, State: StateOK, UpdatedAt: m.p.now(), AuthorizedAt: m.authorizedAt.Load()}
	if rt := m.refresh.Load(); rt != nil {
		r.RefreshToken = *rt
	}
	if m.unauthorized.Load() {
		r.State = StateUnauthorized
	}
	return r
}

// newMerchant makes the holder of one merchant. What all merchants of
// the platform share (the Kind, the refresh hook, the time zone, the
// logger) is made once in New: a platform holds thousands of merchants.
func (p *Platform) newMerchant(appid string) *Merchant {
	m := &Merchant{p: p, appid: appid}
	key := MerchantKey(p.name, appid) // also the holder's name in logs
	// Options are valid by construction: New cannot fail.
	m.cache, _ = token.New(token.Options{
		App:           key,
		Kind:          &p.merchantKind,
		Fetcher:       (*merchantSource)(m),
		Store:         p.opts.Tokens,
		Key:           key,
		RefreshBefore: p.opts.RefreshBefore,
		FetchTimeout:  2 * p.opts.FetchTimeout, // the component token may be fetched first
		LockTTL:       p.opts.LockTTL,
		MinBackoff:    p.opts.MinBackoff,
		Location:      p.loc,
		Now:           p.now,
		Logger:        p.opts.Logger,
		OnInstall:     func(v string) { p.onInstall(appid, v) },
		OnRefresh:     p.onMerchantRefresh,
		OnStoreError:  p.opts.OnStoreError,
	})
	return m
}

// merchantSource is a Merchant seen as the Source of its token, without
// the allocation of a method value per merchant.
type merchantSource Merchant

func (s *merchantSource) Fetch(ctx context.Context, force bool) (token.Token, error) {
	return (*Merchant)(s).fetch(ctx, force)
}

// adoptRecord adds or updates the merchant of r.
func (p *Platform) adoptRecord(r Record) *Merchant {
	if r.AppID == "" {
		return nil
	}
	p.onSecret(r.RefreshToken)
	p.mu.Lock()
	m := p.merchants[r.AppID]
	if m == nil {
		if len(p.merchants) >= maxRecords {
			p.mu.Unlock()
			p.log.Error("too many merchants; not adding", "authorizer", r.AppID, "max", maxRecords)
			return nil
		}
		m = p.newMerchant(r.AppID)
		p.merchants[r.AppID] = m
	}
	p.mu.Unlock()
	rt := r.RefreshToken
	m.refresh.Store(&rt)
	m.unauthorized.Store(r.State == StateUnauthorized)
	if r.AuthorizedAt > m.authorizedAt.Load() {
		m.authorizedAt.Store(r.AuthorizedAt)
	}
	p.missMu.Lock()
	delete(p.misses, r.AppID)
	p.missMu.Unlock()
	return m
}

// drop forgets a merchant.
func (p *Platform) drop(appid string) {
	p.mu.Lock()
	delete(p.merchants, appid)
	p.mu.Unlock()
}

// lookup returns a known merchant or nil.
func (p *Platform) lookup(appid string) *Merchant {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.merchants[appid]
}

// ErrUnknownMerchant means the platform holds no authorization of the
// merchant named.
var ErrUnknownMerchant = errors.New("platform: merchant not authorized to this platform")

// Merchant returns the merchant appid. A merchant not held in memory is
// looked up in the store (another replica may have just added it), at
// most once per appid every 10 seconds, so unknown appids cost no store
// round trip per request.
func (p *Platform) Merchant(ctx context.Context, appid string) (*Merchant, error) {
	if m := p.lookup(appid); m != nil {
		return m, nil
	}
	if appid == "" || len(appid) > 64 {
		return nil, ErrUnknownMerchant
	}
	now := p.now()
	p.missMu.Lock()
	if at, ok := p.misses[appid]; ok && now.Sub(at) < missTTL {
		p.missMu.Unlock()
		return nil, ErrUnknownMerchant
	}
	p.missMu.Unlock()
	r, err := p.store.Record(ctx, p.name, appid)
	if err == nil {
		if m := p.adoptRecord(r); m != nil {
			return m, nil
		}
	} else if !errors.Is(err, ErrNotFound) {
		p.storeError("load_authorizer", err)
	}
	p.missMu.Lock()
	if len(p.misses) >= maxMisses {
		for k, at := range p.misses {
			if now.Sub(at) >= missTTL || len(p.misses) >= maxMisses {
				delete(p.misses, k)
			}
		}
	}
	p.misses[appid] = now
	p.missMu.Unlock()
	return nil, ErrUnknownMerchant
}
