// Package platform holds the credential chain of a WeChat Open Platform
// third-party platform (第三方平台, SPEC §12): the component_verify_ticket
// WeChat pushes every 10 minutes, the component_access_token bought with
// it, and for each merchant (authorizer) its durable refresh token and its
// authorizer_access_token.
//
// The component token and every merchant token are token.Caches over
// Sources defined here, so they get the holder's hot path, compare-and-
// refresh, backoff and fleet lease. The component token runs its own Cache
// loop; merchant tokens, which may number in the ten thousands, are driven
// by one scheduler per platform (no goroutine or timer per merchant), and
// only merchants called within AuthorizerIdle are refreshed proactively.
//
// Pushes arrive through HandlePush (the callback listener decodes HTTP);
// the caller port reaches merchants through Merchant, whose TokenSource
// reads the held token from memory with no store round trip.
package platform

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wxproxy/wxproxy/token"
	"github.com/wxproxy/wxproxy/wechat"
	"github.com/wxproxy/wxproxy/wxcrypt"
)

// Defaults.
const (
	TicketTTL          = 12 * time.Hour // a component_verify_ticket's life (WECHAT.md)
	defaultTick        = time.Second
	defaultConcurrency = 4
	// maxMisses bounds the memory of appids recently found unknown, so
	// a caller naming random appids cannot make every request a store
	// round trip nor grow memory.
	maxMisses  = 1024
	missTTL    = 10 * time.Second
	maxRecords = 100_000 // merchants one platform holds at most
	usedCodes  = 256     // authorization codes remembered, so a duplicated push is harmless
)

// Options configures a Platform. Zero values take the defaults noted.
type Options struct {
	Name           string // the platform's name (path prefix)
	ComponentAppID string
	Secret         string // component_appsecret
	Crypter        *wxcrypt.Crypter
	Upstream       string       // base URL without a trailing slash
	Client         *http.Client // for the component APIs; default a plain client
	Store          Store        // tickets and merchant records; default a MemoryStore
	Tokens         token.Store  // component and merchant tokens; default a token.MemoryStore
	// Watch, if set, announces merchants whose records another replica
	// changed (RedisStore.Watch).
	Watch func(ctx context.Context) <-chan string

	RefreshBefore  time.Duration // default 10m
	AuthorizerIdle time.Duration // default 24h
	FetchTimeout   time.Duration // one fetch; default 10s
	LockTTL        time.Duration // fleet refresh lock; default FetchTimeout + 5s
	TicketTTL      time.Duration // default 12h
	Tick           time.Duration // how often the scheduler looks for due merchants; default 1s
	Concurrency    int           // proactive merchant refreshes at once; default 4
	RecordsEvery   time.Duration // backstop re-read of all records in a shared store; default 5m
	MinBackoff     time.Duration // first retry after a failed fetch; default 1s

	Now    func() time.Time
	Logger *slog.Logger
	// OnInstall, if set, sees every token value that becomes current
	// before any caller can be handed it: appid "" is the component token.
	OnInstall func(appid, value string)
	// OnSecret, if set, sees every refresh token held, so that it can be
	// scrubbed from answers and logs.
	OnSecret func(value string)
	// OnRefresh, if set, is called after every fetch attempt; kind is
	// "component", "authorizer" or "ticket" (a merchant's).
	OnRefresh func(kind string, reason token.Reason, err error)
	// OnStoreError, if set, is called when a store fails.
	OnStoreError func(op string, err error)
}

// Platform is one third-party platform's credential chain. Make it with
// New and drive it with Run. It is safe for concurrent use.
type Platform struct {
	opts      Options
	name      string
	appid     string
	secret    string
	upstream  string
	client    *http.Client
	store     Store
	log       *slog.Logger
	now       func() time.Time
	component *token.Cache

	ticket atomic.Pointer[Ticket]
	kick   chan struct{}  // a new ticket arrived while the component token is missing
	loc    *time.Location // shared by every holder (each would make its own)

	// Shared by every merchant's holder, made once.
	merchantKind      token.Kind // each fetch mints a new token; the old one lives 5 more minutes
	onMerchantRefresh func(token.Reason, error)
	ticketKind        token.Kind
	onTicketRefresh   func(token.Reason, error)

	mu        sync.RWMutex
	merchants map[string]*Merchant

	missMu sync.Mutex
	misses map[string]time.Time

	codeMu sync.Mutex
	codes  []*usedCode // authorization codes exchanged recently, oldest first
}

// New returns a Platform. It does no I/O; Run loads the stored state.
func New(opts Options) (*Platform, error) {
	if opts.Name == "" || opts.ComponentAppID == "" || opts.Secret == "" || opts.Crypter == nil || opts.Upstream == "" {
		return nil, errors.New("platform: Name, ComponentAppID, Secret, Crypter and Upstream are required")
	}
	if opts.Client == nil {
		opts.Client = &http.Client{Timeout: 10 * time.Second}
	}
	if opts.Store == nil {
		opts.Store = new(MemoryStore)
	}
	if opts.Tokens == nil {
		opts.Tokens = new(token.MemoryStore)
	}
	setDefault(&opts.RefreshBefore, 10*time.Minute)
	setDefault(&opts.AuthorizerIdle, 24*time.Hour)
	setDefault(&opts.FetchTimeout, 10*time.Second)
	setDefault(&opts.LockTTL, opts.FetchTimeout+5*time.Second)
	setDefault(&opts.TicketTTL, TicketTTL)
	setDefault(&opts.Tick, defaultTick)
	setDefault(&opts.RecordsEvery, 5*time.Minute)
	if opts.Concurrency <= 0 {
		opts.Concurrency = defaultConcurrency
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	p := &Platform{
		opts: opts, name: opts.Name, appid: opts.ComponentAppID, secret: opts.Secret,
		upstream: opts.Upstream, client: opts.Client, store: opts.Store, now: opts.Now,
		log:       opts.Logger.With("platform", opts.Name),
		kick:      make(chan struct{}, 1),
		loc:       time.FixedZone("UTC+8", 8*3600),
		merchants: map[string]*Merchant{},
		misses:    map[string]time.Time{},
	}
	p.onMerchantRefresh = func(r token.Reason, err error) { p.onRefresh("authorizer", r, err) }
	p.ticketKind = token.TicketKind()
	p.onTicketRefresh = func(r token.Reason, err error) { p.onRefresh("ticket", r, err) }
	kind := token.Kind{} // each fetch mints a new token; the old one lives 5 more minutes
	var err error
	p.component, err = token.New(token.Options{
		App:           opts.Name,
		Kind:          &kind,
		Fetcher:       token.SourceFunc(p.fetchComponent),
		Store:         opts.Tokens,
		Key:           ComponentKey(opts.Name, opts.ComponentAppID),
		RefreshBefore: opts.RefreshBefore,
		FetchTimeout:  opts.FetchTimeout,
		LockTTL:       opts.LockTTL,
		MinBackoff:    opts.MinBackoff,
		Now:           opts.Now,
		Logger:        opts.Logger.With("credential", "component_access_token"),
		OnInstall:     func(v string) { p.onInstall("", v) },
		OnRefresh:     func(r token.Reason, err error) { p.onRefresh("component", r, err) },
		OnStoreError:  opts.OnStoreError,
	})
	if err != nil {
		return nil, err
	}
	return p, nil
}

func setDefault(d *time.Duration, v time.Duration) {
	if *d <= 0 {
		*d = v
	}
}

func (p *Platform) onInstall(appid, v string) {
	if p.opts.OnInstall != nil {
		p.opts.OnInstall(appid, v)
	}
}

func (p *Platform) onSecret(v string) {
	if p.opts.OnSecret != nil && v != "" {
		p.opts.OnSecret(v)
	}
}

func (p *Platform) onRefresh(kind string, r token.Reason, err error) {
	if p.opts.OnRefresh != nil {
		p.opts.OnRefresh(kind, r, err)
	}
}

func (p *Platform) storeError(op string, err error) {
	p.log.Warn("platform store failed", "op", op, "err", err)
	if p.opts.OnStoreError != nil {
		p.opts.OnStoreError(op, err)
	}
}

// Name is the platform's name.
func (p *Platform) Name() string { return p.name }

// ComponentAppID is the component app's appid.
func (p *Platform) ComponentAppID() string { return p.appid }

// Component is the holder of the component token.
func (p *Platform) Component() *token.Cache { return p.component }

// ErrTicketMissing is wrapped by component token fetches while no valid
// component_verify_ticket is held; it is WeChat's 61006 so that callers
// branch on the code (the proxy answers 503 ticket_missing).
var ErrTicketMissing = &wechat.APIError{Code: wechat.CodeComponentTicketInvalid, Msg: "no valid component_verify_ticket held yet (WeChat pushes one every 10 minutes to the callback URL; POST /admin/platforms/{p}/start-push asks for one)"}

// errUnauthorized is the error of a merchant that must authorize again.
func errUnauthorized(appid string) error {
	return fmt.Errorf("platform: merchant %s: %w", appid, &wechat.APIError{Code: wechat.CodeRefreshTokenInvalid, Msg: "the merchant's authorization is gone; it must authorize the platform again"})
}

// Ticket returns the newest ticket held, or nil.
func (p *Platform) Ticket() *Ticket { return p.ticket.Load() }

// validTicket returns the newest valid ticket, reading the store (another
// replica may have received a newer push); nil if none.
func (p *Platform) validTicket(ctx context.Context) *Ticket {
	if st, err := p.store.LoadTicket(ctx, p.name); err == nil {
		p.adoptTicket(st)
	} else if !errors.Is(err, ErrNotFound) {
		p.storeError("load_ticket", err)
	}
	if t := p.ticket.Load(); t.Valid(p.now()) {
		return t
	}
	return nil
}

// adoptTicket makes t the held ticket if it is newer.
func (p *Platform) adoptTicket(t Ticket) bool {
	for {
		cur := p.ticket.Load()
		if cur != nil && !newerTicket(&t, cur) {
			return false
		}
		if p.ticket.CompareAndSwap(cur, &t) {
			return true
		}
	}
}

// fetchComponent is the Source of the component token.
func (p *Platform) fetchComponent(ctx context.Context, _ bool) (token.Token, error) {
	t := p.validTicket(ctx)
	if t == nil {
		return token.Token{}, fmt.Errorf("platform %s: %w", p.name, ErrTicketMissing)
	}
	var ans struct {
		Token     string `json:"component_access_token"`
		ExpiresIn int64  `json:"expires_in"`
	}
	err := p.call(ctx, pathComponentToken, "", map[string]string{
		"component_appid": p.appid, "component_appsecret": p.secret, "component_verify_ticket": t.Value,
	}, &ans)
	if err != nil {
		return token.Token{}, err
	}
	return answerToken(ans.Token, ans.ExpiresIn, p.now())
}

func answerToken(value string, expiresIn int64, now time.Time) (token.Token, error) {
	if value == "" || expiresIn <= 0 {
		return token.Token{}, errors.New("platform: answer has no token or expires_in")
	}
	return token.Token{Value: value, ObtainedAt: now, ExpiresAt: now.Add(time.Duration(expiresIn) * time.Second)}, nil
}

// withComponent calls fn with a valid component token and, if WeChat
// rejects it (40001, 40014, 42001), once more with a refreshed one.
func (p *Platform) withComponent(ctx context.Context, fn func(tok string) error) error {
	tok, err := p.component.Get(ctx)
	if err != nil {
		return err
	}
	err = fn(tok.Value)
	var api *wechat.APIError
	if !errors.As(err, &api) || !wechat.IsTokenError(api.Code) {
		return err
	}
	if tok, err = p.component.Invalidate(ctx, tok.Value); err != nil {
		return err
	}
	return fn(tok.Value)
}

// Ready returns nil when the platform can serve calls: a valid component
// token is held, or can be fetched because a valid ticket is.
func (p *Platform) Ready() error {
	now := p.now()
	if p.component.Current().Valid(now) {
		return nil
	}
	if !p.ticket.Load().Valid(now) {
		return fmt.Errorf("platform %s: no valid component_verify_ticket (check the callback URL in WeChat's console, or POST /admin/platforms/%s/start-push)", p.name, p.name)
	}
	return fmt.Errorf("platform %s: no component_access_token (fetching it fails; see the log)", p.name)
}

// Run loads the stored ticket and merchants, then keeps the component
// token and the merchants' tokens fresh until ctx ends.
func (p *Platform) Run(ctx context.Context) {
	if t, err := p.store.LoadTicket(ctx, p.name); err == nil {
		p.adoptTicket(t)
	} else if !errors.Is(err, ErrNotFound) {
		p.storeError("load_ticket", err)
	}
	p.loadRecords(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { p.component.Run(ctx) })
	if p.opts.Watch != nil {
		wg.Go(func() { p.watchRecords(ctx) })
	}
	if tw, ok := p.opts.Tokens.(token.Watcher); ok {
		wg.Go(func() { p.watchTokens(ctx, tw) })
	}
	p.schedule(ctx)
	wg.Wait()
}

// loadRecords reads every merchant record and adopts them: new merchants
// are added, changed refresh tokens and states taken, dropped ones
// removed.
func (p *Platform) loadRecords(ctx context.Context) {
	if err := LoadRecords(ctx, p.store, p.name, &p.mu, p.merchants, p.adoptRecord); err != nil {
		p.storeError("load_authorizers", err)
	}
}

// watchRecords follows record changes announced by other replicas, with a
// periodic full re-read as a backstop.
func (p *Platform) watchRecords(ctx context.Context) {
	FollowRecords(ctx, p.opts.Watch(ctx), p.opts.RecordsEvery, p.reloadRecord, p.loadRecords)
}

// watchTokens adopts merchant tokens and tickets other replicas announce.
func (p *Platform) watchTokens(ctx context.Context, w token.Watcher) {
	prefix := p.name + "@"
	for key := range w.Watch(ctx) {
		if appid, ok := strings.CutPrefix(key, prefix); ok && appid != "" {
			if m := p.lookup(appid); m != nil {
				m.cache.Sync(ctx)
			}
			continue
		}
		if typ, appid, ok := parseTicketKey(p.name, key); ok {
			if m := p.lookup(appid); m != nil {
				if c := m.heldTicket(typ); c != nil {
					c.Sync(ctx)
				}
			}
		}
	}
}

// reloadRecord re-reads one merchant's record.
func (p *Platform) reloadRecord(ctx context.Context, appid string) {
	r, err := p.store.Record(ctx, p.name, appid)
	switch {
	case errors.Is(err, ErrNotFound):
		p.drop(appid)
	case err != nil:
		p.storeError("load_authorizer", err)
	default:
		p.adoptRecord(r)
	}
}

// schedule is the one scheduler of the platform's merchants: every Tick
// it refreshes, Concurrency at a time, those due whose last call is
// within AuthorizerIdle. Idle merchants cost nothing until called again.
func (p *Platform) schedule(ctx context.Context) {
	Schedule(ctx, p.opts.Tick, p.opts.Concurrency, p.kick, func(ctx context.Context) {
		if !p.component.Current().Valid(p.now()) {
			_, _ = p.component.Refresh(ctx)
		}
	}, p.due, func(m *Merchant) *atomic.Bool { return &m.busy }, func(ctx context.Context, m *Merchant) { m.step(ctx) })
}

// due returns the merchants whose proactive refresh or retry is due.
func (p *Platform) due() []*Merchant {
	now := p.now()
	idle := now.Add(-p.opts.AuthorizerIdle).Unix()
	p.mu.RLock()
	defer p.mu.RUnlock()
	var out []*Merchant
	for _, m := range p.merchants {
		used := m.used.Load()
		if used == 0 || used < idle || m.unauthorized.Load() || m.busy.Load() {
			continue
		}
		if m.cache.Due() || m.dueTickets() {
			out = append(out, m)
		}
	}
	return out
}

// Stats counts merchants by state.
type Stats struct {
	OK, Refreshing, Unauthorized int
}

// Stats counts the merchants by state: unauthorized (needs a new
// authorization), refreshing (its token is failing to refresh), ok.
func (p *Platform) Stats() Stats {
	p.mu.RLock()
	defer p.mu.RUnlock()
	var s Stats
	for _, m := range p.merchants {
		switch m.State() {
		case StateUnauthorized:
			s.Unauthorized++
		case StateRefreshing:
			s.Refreshing++
		default:
			s.OK++
		}
	}
	return s
}

// StateRefreshing is the listed state of a merchant whose token fetches
// are failing.
const StateRefreshing = "refreshing"

// AuthorizerInfo is what the admin API shows of a merchant: never a token
// or refresh token, only fingerprints and times.
type AuthorizerInfo struct {
	AppID           string     `json:"authorizer_appid"`
	State           string     `json:"state"`
	Fingerprint     string     `json:"fingerprint,omitempty"`
	ExpiresAt       *time.Time `json:"expires_at,omitempty"`
	TTLSeconds      int64      `json:"ttl_seconds"`
	RefreshTokenFP  string     `json:"refresh_token_fingerprint"`
	LastUsed        *time.Time `json:"last_used,omitempty"`
	Refreshes       int64      `json:"refreshes"`
	ConsecutiveFail int        `json:"failures"`
	// Tickets are the merchant's JS-SDK tickets held (on demand).
	Tickets []TicketInfo `json:"tickets,omitempty"`
}

// TicketInfo is what the admin API shows of a merchant's ticket.
type TicketInfo struct {
	Type        string    `json:"type"`
	Fingerprint string    `json:"fingerprint"`
	ExpiresAt   time.Time `json:"expires_at"`
	TTLSeconds  int64     `json:"ttl_seconds"`
}

// Authorizers lists merchants by appid, those in state only when state is
// set, from offset, at most limit; total counts all that match.
func (p *Platform) Authorizers(state string, offset, limit int) (list []AuthorizerInfo, total int) {
	p.mu.RLock()
	ms := make([]*Merchant, 0, len(p.merchants))
	for _, m := range p.merchants {
		if state == "" || m.State() == state {
			ms = append(ms, m)
		}
	}
	p.mu.RUnlock()
	slices.SortFunc(ms, func(a, b *Merchant) int { return cmp.Compare(a.appid, b.appid) })
	total = len(ms)
	if offset >= len(ms) {
		return []AuthorizerInfo{}, total
	}
	ms = ms[offset:min(len(ms), offset+limit)]
	now := p.now()
	list = make([]AuthorizerInfo, 0, len(ms))
	for _, m := range ms {
		list = append(list, m.info(now))
	}
	return list, total
}
