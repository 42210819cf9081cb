package token

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/wxproxy/wxproxy/failover"
	"github.com/wxproxy/wxproxy/wechat"
)

// TicketType names a kind of ticket: what a JS-SDK page signs with.
type TicketType string

// The ticket types of SPEC §11. WeChat apps (official accounts, mini
// programs) have jsapi and wx_card; WeCom apps the corp's jsapi ticket and
// the agent's ticket.
const (
	TicketJSAPI       TicketType = "jsapi"        // GET /cgi-bin/ticket/getticket?type=jsapi
	TicketWxCard      TicketType = "wx_card"      // GET /cgi-bin/ticket/getticket?type=wx_card
	TicketCorpJSAPI   TicketType = "corp_jsapi"   // WeCom GET /cgi-bin/get_jsapi_ticket
	TicketAgentConfig TicketType = "agent_config" // WeCom GET /cgi-bin/ticket/get?type=agent_config
)

// TicketTypes returns the ticket types of an app: WeCom's when wecom, else
// WeChat's. The slice is new on every call.
func TicketTypes(wecom bool) []TicketType {
	if wecom {
		return []TicketType{TicketCorpJSAPI, TicketAgentConfig}
	}
	return []TicketType{TicketJSAPI, TicketWxCard}
}

// ErrUnknownTicketType means a ticket type that the app's kind does not
// have; nothing is fetched or held for it.
var ErrUnknownTicketType = errors.New("token: unknown ticket type")

// TicketKind is how tickets behave: a fetch within validity hands back the
// same ticket and invalidates nobody's (so a replica cut off from its fleet
// may fetch on its own), expires_in is the full lifetime on every fetch,
// and the token fetch budget does not count them (WeChat limits them
// separately).
func TicketKind() Kind {
	return Kind{Shared: true, Unmetered: true, FixedLifetime: true}
}

// AccessTokens is what a TicketSource needs of the access token holder it
// fetches with; *Cache implements it. An Open Platform merchant's or a
// WeCom corp's holder serves as well as an app's.
type AccessTokens interface {
	Get(ctx context.Context) (*Token, error)
	Invalidate(ctx context.Context, bad string) (*Token, error)
}

var (
	_ AccessTokens = (*Cache)(nil)
	_ Source       = (*TicketSource)(nil)
)

// maxTicketLifetime bounds the expires_in a ticket answer may claim:
// tickets live 2 hours; an answer claiming more than a day is malformed.
const maxTicketLifetime = 24 * time.Hour

// maxTicketLen bounds a ticket's length (WeCom documents at most 512 bytes).
const maxTicketLen = 1024

// TicketSource is the Source of one type of ticket: it fetches it from
// Upstream with the current access token of Tokens. When WeChat rejects
// the token (40001, 40014, 42001) it asks Tokens to replace that token —
// compare-and-refresh, so concurrent failures cost one token fetch — and
// fetches the ticket once more with the new one. It keeps no state and
// does not back off; the Cache does. Its fields must not change after
// first use; it is then safe for concurrent use. Errors never contain the
// access token.
type TicketSource struct {
	Type     TicketType
	Upstream string // base URL, e.g. https://api.weixin.qq.com
	// Failover, if set, replaces Upstream: each fetch goes to the first of
	// the app's upstreams that is up, as the app's token fetches do.
	Failover *failover.Set
	// OnFailover, if set, is told when a fetch moves from one upstream to
	// another (for wxproxy_failovers_total).
	OnFailover func(from, to string)
	Tokens     AccessTokens
	Client     *http.Client
	Now        func() time.Time // default time.Now
}

// Fetch gets the ticket; force is ignored (a ticket has no forced refresh).
func (s *TicketSource) Fetch(ctx context.Context, _ bool) (Token, error) {
	tok, err := s.Tokens.Get(ctx)
	if err != nil {
		return Token{}, fmt.Errorf("token: %s ticket: no access_token: %w", s.Type, err)
	}
	t, err := s.fetch(ctx, tok.Value)
	var apiErr *wechat.APIError
	if err == nil || !errors.As(err, &apiErr) || !wechat.IsTokenError(apiErr.Code) {
		return t, err
	}
	fresh, ierr := s.Tokens.Invalidate(ctx, tok.Value)
	if ierr != nil {
		return Token{}, fmt.Errorf("%w (and refreshing the access_token failed: %w)", err, ierr)
	}
	if fresh.Value == tok.Value {
		return Token{}, err
	}
	return s.fetch(ctx, fresh.Value)
}

// fetch asks WeChat for the ticket with the access token tok, at the first
// upstream that is up when the source has a failover list.
func (s *TicketSource) fetch(ctx context.Context, tok string) (Token, error) {
	if s.Failover == nil {
		t, _, err := s.fetchAt(ctx, s.Upstream, tok)
		return t, err
	}
	var t Token
	err := s.Failover.Do(func(base string) (failover.Outcome, error) {
		var o failover.Outcome
		var err error
		t, o, err = s.fetchAt(ctx, base, tok)
		return o, err
	}, s.onFailover)
	return t, err
}

func (s *TicketSource) onFailover(from, to int) {
	if s.OnFailover != nil {
		s.OnFailover(s.Failover.URL(from), s.Failover.URL(to))
	}
}

// fetchAt asks the upstream at base for the ticket.
func (s *TicketSource) fetchAt(ctx context.Context, base, tok string) (Token, failover.Outcome, error) {
	path, typ, err := TicketPath(s.Type)
	if err != nil {
		return Token{}, failover.Neutral, err
	}
	q := "access_token=" + url.QueryEscape(tok)
	if typ != "" {
		q += "&type=" + typ
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(base, "/")+path+"?"+q, nil)
	if err != nil {
		return Token{}, failover.Neutral, fmt.Errorf("token: build %s ticket request: %w", s.Type, wechat.RedactError(err))
	}
	what := string(s.Type) + " ticket"
	body, o, err := send(ctx, s.Client, req, what)
	if err != nil {
		return Token{}, o, err
	}
	now := time.Now()
	if s.Now != nil {
		now = s.Now()
	}
	t, err := parseTicket(body, now, what)
	if code, ok := wechat.ScanErrcode(body); ok && code == wechat.CodeSystemError {
		return t, failover.Failure, err
	}
	return t, failover.Success, err
}

// TicketPath returns the WeChat path and type parameter ("" for none) that
// fetch a ticket of typ, or ErrUnknownTicketType.
func TicketPath(typ TicketType) (path, param string, err error) {
	switch typ {
	case TicketJSAPI, TicketWxCard:
		return "/cgi-bin/ticket/getticket", string(typ), nil
	case TicketCorpJSAPI:
		return "/cgi-bin/get_jsapi_ticket", "", nil
	case TicketAgentConfig:
		return "/cgi-bin/ticket/get", string(typ), nil
	}
	return "", "", fmt.Errorf("%w %q", ErrUnknownTicketType, typ)
}

// parseTicket turns a ticket endpoint's answer into a Token.
func parseTicket(body []byte, now time.Time, what string) (Token, error) {
	if err := answerError(body); err != nil {
		return Token{}, err
	}
	var r struct {
		Ticket    string `json:"ticket"`
		ExpiresIn int64  `json:"expires_in"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return Token{}, fmt.Errorf("token: decode %s answer: %w", what, err)
	}
	switch {
	case r.Ticket == "" || r.ExpiresIn <= 0:
		return Token{}, fmt.Errorf("token: %s answer has no ticket or expires_in", what)
	case len(r.Ticket) > maxTicketLen:
		return Token{}, fmt.Errorf("token: %s answer: ticket longer than %d bytes", what, maxTicketLen)
	case time.Duration(r.ExpiresIn) > maxTicketLifetime/time.Second:
		return Token{}, fmt.Errorf("token: %s answer: expires_in %d is more than a day", what, r.ExpiresIn)
	}
	return Token{Value: r.Ticket, ObtainedAt: now, ExpiresAt: now.Add(time.Duration(r.ExpiresIn) * time.Second)}, nil
}

// Tickets holds the tickets of one account: a Cache per type, made up
// front for the types it is told to hold and on first demand for any other
// type the account's kind has — never for another type, so what it holds
// is bounded. Run keeps every held ticket fresh. Tickets is safe for
// concurrent use; make it with NewTickets.
//
// Tickets knows nothing of where a ticket comes from: newCache builds the
// Cache of a type (a TicketSource over the account's access tokens, a
// store key, metrics), so an app, an Open Platform merchant or a WeCom
// corp can each hold their own.
type Tickets struct {
	allowed  []TicketType
	held     []TicketType // configured: fetched at start, gate readiness
	newCache func(TicketType) (*Cache, error)

	mu     sync.Mutex
	caches map[TicketType]*Cache
	order  []TicketType    // held types first, then in order of demand
	runCtx context.Context // set by Run; nil before
	wg     sync.WaitGroup
}

// NewTickets returns the tickets of an account whose kind has the types
// allowed, holding those of held (each must be allowed) from the start.
// newCache builds the Cache of a type; it is called once per type.
func NewTickets(allowed, held []TicketType, newCache func(TicketType) (*Cache, error)) (*Tickets, error) {
	ts := &Tickets{allowed: slices.Clone(allowed), held: slices.Clone(held), newCache: newCache, caches: make(map[TicketType]*Cache)}
	for _, typ := range held {
		if _, err := ts.cache(typ); err != nil {
			return nil, err
		}
	}
	return ts, nil
}

// cache returns the Cache of typ, making it (and starting its Run, once
// Run runs) on first demand.
func (ts *Tickets) cache(typ TicketType) (*Cache, error) {
	if !slices.Contains(ts.allowed, typ) {
		return nil, fmt.Errorf("%w %q", ErrUnknownTicketType, typ)
	}
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if c := ts.caches[typ]; c != nil {
		return c, nil
	}
	c, err := ts.newCache(typ)
	if err != nil {
		return nil, err
	}
	ts.caches[typ] = c
	ts.order = append(ts.order, typ)
	if ts.runCtx != nil && ts.runCtx.Err() == nil {
		ts.wg.Go(func() { c.Run(ts.runCtx) })
	}
	return c, nil
}

// Get returns a valid ticket of typ: the held one, or one fetched now (a
// type not held yet is held from then on). Concurrent callers share one
// fetch; each stops waiting when its own ctx ends. A type the account's
// kind does not have is ErrUnknownTicketType.
func (ts *Tickets) Get(ctx context.Context, typ TicketType) (*Token, error) {
	c, err := ts.cache(typ)
	if err != nil {
		return nil, err
	}
	return c.Get(ctx)
}

// Refresh fetches the ticket of typ again on an operator's request. WeChat
// hands back the same ticket within its validity, so this re-reads it.
func (ts *Tickets) Refresh(ctx context.Context, typ TicketType) (*Token, error) {
	c, err := ts.cache(typ)
	if err != nil {
		return nil, err
	}
	return c.Refresh(ctx)
}

// TicketStatus is a snapshot of one ticket for health checks and the admin
// API. Held says it is one the account was told to hold (not only fetched
// on demand).
type TicketStatus struct {
	Type TicketType
	Held bool
	Status
}

// Statuses returns a snapshot of every ticket held, those held from the
// start first.
func (ts *Tickets) Statuses() []TicketStatus {
	ts.mu.Lock()
	order := slices.Clone(ts.order)
	caches := make([]*Cache, len(order))
	for i, typ := range order {
		caches[i] = ts.caches[typ]
	}
	ts.mu.Unlock()
	out := make([]TicketStatus, len(order))
	for i, typ := range order {
		out[i] = TicketStatus{Type: typ, Held: slices.Contains(ts.held, typ), Status: caches[i].Status()}
	}
	return out
}

// Run loads the held tickets from the store (a restart costs no fetch) and
// keeps them, and those fetched on demand later, fresh until ctx ends. It
// returns when every ticket's background refresh has stopped; call it once.
func (ts *Tickets) Run(ctx context.Context) {
	ts.mu.Lock()
	ts.runCtx = ctx
	for _, typ := range ts.order {
		c := ts.caches[typ]
		ts.wg.Go(func() { c.Run(ctx) })
	}
	ts.mu.Unlock()
	<-ctx.Done()
	ts.mu.Lock() // no cache starts after this: runCtx is done
	ts.mu.Unlock()
	ts.wg.Wait()
}
