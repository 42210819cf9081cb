// Package suite holds the credential chain of a WeCom service provider's
// suite (服务商第三方应用, SPEC §13): the suite_ticket WeCom pushes every
// 10 minutes (valid 30), the suite_access_token bought with it, for each
// corp that installed the suite its durable permanent_code and its
// access_token (get_corp_token), and, when configured, the provider token.
//
// It is the Open Platform's chain (package platform) on WeCom, and reuses
// its parts: the durable state lives in a platform.Store (the suite_ticket
// as its Ticket, each corp as a Record whose secret is the permanent
// code), every token is a token.Cache over a Source defined here, pushes
// arrive through the callback listener as a callback.Receiver, and corp
// tokens, which may number in the thousands, are driven by one scheduler
// (no goroutine or timer per corp); only corps called within CorpIdle are
// refreshed proactively.
package suite

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wxproxy/wxproxy/platform"
	"github.com/wxproxy/wxproxy/token"
	"github.com/wxproxy/wxproxy/wechat"
	"github.com/wxproxy/wxproxy/wxcrypt"
)

// Defaults.
const (
	TicketTTL          = 30 * time.Minute // a suite_ticket's life (WECHAT.md)
	defaultTick        = time.Second
	defaultConcurrency = 4
	// maxMisses bounds the memory of corpids recently found unknown.
	maxMisses = 1024
	missTTL   = 10 * time.Second
	maxCorps  = 100_000 // corps one suite holds at most
	usedCodes = 256     // auth codes remembered, so a duplicated push is harmless
)

// Options configures a Suite. Zero values take the defaults noted.
type Options struct {
	Name    string // the platform's name (path prefix)
	SuiteID string
	Secret  string // suite_secret
	// ProviderCorpID and ProviderSecret buy the provider token; with
	// ProviderSecret empty no provider token is held. ProviderCorpID is
	// also an accepted receive id (URL checks carry it).
	ProviderCorpID  string
	ProviderSecret  string
	PermanentCodeV2 bool // exchange auth codes with v2/get_permanent_code
	Crypter         *wxcrypt.Crypter
	Upstream        string       // base URL without a trailing slash
	Client          *http.Client // default a plain client
	Store           platform.Store
	Tokens          token.Store
	// Watch, if set, announces corps whose records another replica
	// changed (platform.RedisStore.Watch).
	Watch func(ctx context.Context) <-chan string

	RefreshBefore time.Duration // default 10m
	CorpIdle      time.Duration // default 24h
	FetchTimeout  time.Duration // one fetch; default 10s
	LockTTL       time.Duration // fleet refresh lock; default FetchTimeout + 5s
	TicketTTL     time.Duration // default 30m
	Tick          time.Duration // default 1s
	Concurrency   int           // default 4
	RecordsEvery  time.Duration // default 5m
	MinBackoff    time.Duration // default 1s

	Now    func() time.Time
	Logger *slog.Logger
	// OnInstall, if set, sees every token value that becomes current
	// before any caller can be handed it: corpid "" is the suite or the
	// provider token.
	OnInstall func(corpid, value string)
	// OnSecret, if set, sees every permanent code held.
	OnSecret func(value string)
	// OnRefresh, if set, is called after every fetch attempt; kind is
	// "suite", "provider" or "corp".
	OnRefresh    func(kind string, reason token.Reason, err error)
	OnStoreError func(op string, err error)
}

// Suite is one suite's credential chain. Make it with New and drive it
// with Run. It is safe for concurrent use.
type Suite struct {
	opts     Options
	log      *slog.Logger
	now      func() time.Time
	upstream string
	client   *http.Client
	store    platform.Store
	suiteTok *token.Cache
	provider *token.Cache // nil without a provider secret

	ticket atomic.Pointer[platform.Ticket]
	kick   chan struct{}
	loc    *time.Location

	mu    sync.RWMutex
	corps map[string]*Corp

	missMu sync.Mutex
	misses map[string]time.Time

	codeMu sync.Mutex
	codes  []*usedCode
}

// sameUntilExpiry is how WeCom's suite, provider and corp tokens behave:
// a fetch hands back the token held until it expires, with the full
// expires_in.
var sameUntilExpiry = token.Kind{Rotation: -1, FixedLifetime: true}

// New returns a Suite. It does no I/O; Run loads the stored state.
func New(opts Options) (*Suite, error) {
	if opts.Name == "" || opts.SuiteID == "" || opts.Secret == "" || opts.Crypter == nil || opts.Upstream == "" {
		return nil, errors.New("suite: Name, SuiteID, Secret, Crypter and Upstream are required")
	}
	if opts.ProviderSecret != "" && opts.ProviderCorpID == "" {
		return nil, errors.New("suite: ProviderSecret needs ProviderCorpID")
	}
	if opts.Client == nil {
		opts.Client = &http.Client{Timeout: 10 * time.Second}
	}
	if opts.Store == nil {
		opts.Store = new(platform.MemoryStore)
	}
	if opts.Tokens == nil {
		opts.Tokens = new(token.MemoryStore)
	}
	setDefault(&opts.RefreshBefore, 10*time.Minute)
	setDefault(&opts.CorpIdle, 24*time.Hour)
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
	s := &Suite{
		opts: opts, now: opts.Now, upstream: opts.Upstream, client: opts.Client, store: opts.Store,
		log:    opts.Logger.With("platform", opts.Name),
		kick:   make(chan struct{}, 1),
		loc:    time.FixedZone("UTC+8", 8*3600),
		corps:  map[string]*Corp{},
		misses: map[string]time.Time{},
	}
	var err error
	s.suiteTok, err = s.holder("suite_access_token", SuiteKey(opts.Name, opts.SuiteID), "suite", token.SourceFunc(s.fetchSuite), opts.FetchTimeout,
		func(v string) { s.onInstall("", v) })
	if err != nil {
		return nil, err
	}
	if opts.ProviderSecret != "" {
		s.provider, err = s.holder("provider_access_token", ProviderKey(opts.Name, opts.ProviderCorpID), "provider", token.SourceFunc(s.fetchProvider), opts.FetchTimeout,
			func(v string) { s.onInstall("", v) })
		if err != nil {
			return nil, err
		}
	}
	return s, nil
}

// holder makes the token.Cache of one credential of the suite.
func (s *Suite) holder(credential, key, kind string, src token.Source, fetchTimeout time.Duration, install func(string)) (*token.Cache, error) {
	k := sameUntilExpiry
	app := s.opts.Name
	if kind == "corp" {
		app = key
	}
	return token.New(token.Options{
		App:           app,
		Kind:          &k,
		Fetcher:       src,
		Store:         s.opts.Tokens,
		Key:           key,
		RefreshBefore: s.opts.RefreshBefore,
		FetchTimeout:  fetchTimeout,
		LockTTL:       s.opts.LockTTL,
		MinBackoff:    s.opts.MinBackoff,
		Location:      s.loc,
		Now:           s.opts.Now,
		Logger:        s.opts.Logger.With("credential", credential),
		OnInstall:     install,
		OnRefresh:     func(r token.Reason, err error) { s.onRefresh(kind, r, err) },
		OnStoreError:  s.opts.OnStoreError,
	})
}

func setDefault(d *time.Duration, v time.Duration) {
	if *d <= 0 {
		*d = v
	}
}

func (s *Suite) onInstall(corpid, v string) {
	if s.opts.OnInstall != nil {
		s.opts.OnInstall(corpid, v)
	}
}

func (s *Suite) onSecret(v string) {
	if s.opts.OnSecret != nil && v != "" {
		s.opts.OnSecret(v)
	}
}

func (s *Suite) onRefresh(kind string, r token.Reason, err error) {
	if s.opts.OnRefresh != nil {
		s.opts.OnRefresh(kind, r, err)
	}
}

func (s *Suite) storeError(op string, err error) {
	s.log.Warn("suite store failed", "op", op, "err", err)
	if s.opts.OnStoreError != nil {
		s.opts.OnStoreError(op, err)
	}
}

// SuiteKey is the store key of a suite's suite_access_token.
func SuiteKey(name, suiteID string) string { return "suite:" + name + ":" + suiteID }

// ProviderKey is the store key of a suite's provider token.
func ProviderKey(name, corpid string) string { return "provider:" + name + ":" + corpid }

// Name is the platform's name.
func (s *Suite) Name() string { return s.opts.Name }

// SuiteID is the suite's id.
func (s *Suite) SuiteID() string { return s.opts.SuiteID }

// ProviderCorpID is the provider's corpid, or "".
func (s *Suite) ProviderCorpID() string { return s.opts.ProviderCorpID }

// Component is the holder of the suite_access_token (the name matches
// the Open Platform's, whose component token it stands for).
func (s *Suite) Component() *token.Cache { return s.suiteTok }

// Provider is the holder of the provider token, or nil when none is
// configured.
func (s *Suite) Provider() *token.Cache { return s.provider }

// Ticket returns the newest suite_ticket held, or nil.
func (s *Suite) Ticket() *platform.Ticket { return s.ticket.Load() }

// ErrTicketMissing is wrapped by suite token fetches while no valid
// suite_ticket is held. It carries 61006, the errcode wxproxy answers as
// ticket_missing for every platform kind.
var ErrTicketMissing = &wechat.APIError{Code: wechat.CodeComponentTicketInvalid, Msg: "no valid suite_ticket held yet (WeCom pushes one every 10 minutes to the callback URL; it can be pushed by hand from the provider console)"}

// errUnauthorized is the error of a corp whose permanent code WeCom no
// longer accepts. It carries 61023, the errcode wxproxy answers as
// authorizer_unauthorized for every platform kind.
func errUnauthorized(corpid string) error {
	return fmt.Errorf("suite: corp %s: %w", corpid, &wechat.APIError{Code: wechat.CodeRefreshTokenInvalid, Msg: "the corp's permanent_code is no longer valid; the corp must install the suite again"})
}

// validTicket returns the newest valid suite_ticket, reading the store
// (another replica may have received a newer push); nil if none.
func (s *Suite) validTicket(ctx context.Context) *platform.Ticket {
	if st, err := s.store.LoadTicket(ctx, s.opts.Name); err == nil {
		s.adoptTicket(st)
	} else if !errors.Is(err, platform.ErrNotFound) {
		s.storeError("load_ticket", err)
	}
	if t := s.ticket.Load(); t.Valid(s.now()) {
		return t
	}
	return nil
}

// adoptTicket makes t the held ticket if it is newer (by its push's
// TimeStamp; of two made in the same second, the one received last).
func (s *Suite) adoptTicket(t platform.Ticket) bool {
	for {
		cur := s.ticket.Load()
		if cur != nil && (t.CreateTime < cur.CreateTime || t.CreateTime == cur.CreateTime && (t.Value == cur.Value || t.ReceivedAt.Before(cur.ReceivedAt))) {
			return false
		}
		if s.ticket.CompareAndSwap(cur, &t) {
			return true
		}
	}
}

// fetchSuite is the Source of the suite_access_token.
func (s *Suite) fetchSuite(ctx context.Context, _ bool) (token.Token, error) {
	t := s.validTicket(ctx)
	if t == nil {
		return token.Token{}, fmt.Errorf("suite %s: %w", s.opts.Name, ErrTicketMissing)
	}
	var ans struct {
		Token     string `json:"suite_access_token"`
		ExpiresIn int64  `json:"expires_in"`
	}
	err := s.call(ctx, pathSuiteToken, "", "", map[string]string{
		"suite_id": s.opts.SuiteID, "suite_secret": s.opts.Secret, "suite_ticket": t.Value,
	}, &ans)
	var api *wechat.APIError
	if errors.As(err, &api) && api.Code == codeSuiteTicket {
		return token.Token{}, fmt.Errorf("suite %s: WeCom refused the suite_ticket (40085): %w", s.opts.Name, ErrTicketMissing)
	}
	if err != nil {
		return token.Token{}, err
	}
	return answerToken(ans.Token, ans.ExpiresIn, s.now())
}

// fetchProvider is the Source of the provider token.
func (s *Suite) fetchProvider(ctx context.Context, _ bool) (token.Token, error) {
	var ans struct {
		Token     string `json:"provider_access_token"`
		ExpiresIn int64  `json:"expires_in"`
	}
	err := s.call(ctx, pathProviderToken, "", "", map[string]string{
		"corpid": s.opts.ProviderCorpID, "provider_secret": s.opts.ProviderSecret,
	}, &ans)
	if err != nil {
		return token.Token{}, err
	}
	return answerToken(ans.Token, ans.ExpiresIn, s.now())
}

func answerToken(value string, expiresIn int64, now time.Time) (token.Token, error) {
	if value == "" || expiresIn <= 0 {
		return token.Token{}, errors.New("suite: answer has no token or expires_in")
	}
	return token.Token{Value: value, ObtainedAt: now, ExpiresAt: now.Add(time.Duration(expiresIn) * time.Second)}, nil
}

// withSuite calls fn with a valid suite token and, if WeCom rejects it
// (42009 expired, 40082, 40001, 40014, 42001), once more with a refreshed
// one.
func (s *Suite) withSuite(ctx context.Context, fn func(tok string) error) error {
	tok, err := s.suiteTok.Get(ctx)
	if err != nil {
		return err
	}
	err = fn(tok.Value)
	var api *wechat.APIError
	if !errors.As(err, &api) || !isSuiteTokenError(api.Code) {
		return err
	}
	if tok, err = s.suiteTok.Invalidate(ctx, tok.Value); err != nil {
		return err
	}
	return fn(tok.Value)
}

// Ready returns nil when the suite can serve calls: a valid suite token
// is held, or can be fetched because a valid suite_ticket is; and the
// provider token, when configured, is held.
func (s *Suite) Ready() error {
	now := s.now()
	if !s.suiteTok.Current().Valid(now) {
		if !s.ticket.Load().Valid(now) {
			return fmt.Errorf("platform %s: no valid suite_ticket (check the callback URL in the WeCom provider console, where a ticket can also be pushed by hand)", s.opts.Name)
		}
		return fmt.Errorf("platform %s: no suite_access_token (fetching it fails; see the log)", s.opts.Name)
	}
	if s.provider != nil && !s.provider.Current().Valid(now) {
		return fmt.Errorf("platform %s: no provider_access_token (fetching it fails; check provider_corpid and provider_secret)", s.opts.Name)
	}
	return nil
}

// Run loads the stored ticket and corps, then keeps the suite, provider
// and corp tokens fresh until ctx ends.
func (s *Suite) Run(ctx context.Context) {
	if t, err := s.store.LoadTicket(ctx, s.opts.Name); err == nil {
		s.adoptTicket(t)
	} else if !errors.Is(err, platform.ErrNotFound) {
		s.storeError("load_ticket", err)
	}
	s.loadRecords(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { s.suiteTok.Run(ctx) })
	if s.provider != nil {
		wg.Go(func() { s.provider.Run(ctx) })
	}
	if s.opts.Watch != nil {
		wg.Go(func() { s.watchRecords(ctx) })
	}
	if tw, ok := s.opts.Tokens.(token.Watcher); ok {
		wg.Go(func() { s.watchTokens(ctx, tw) })
	}
	s.schedule(ctx)
	wg.Wait()
}

// loadRecords reads every corp record and adopts them; corps no longer
// stored are dropped.
func (s *Suite) loadRecords(ctx context.Context) {
	if err := platform.LoadRecords(ctx, s.store, s.opts.Name, &s.mu, s.corps, s.adoptRecord); err != nil {
		s.storeError("load_corps", err)
	}
}

// watchRecords follows record changes announced by other replicas, with a
// periodic full re-read as a backstop.
func (s *Suite) watchRecords(ctx context.Context) {
	platform.FollowRecords(ctx, s.opts.Watch(ctx), s.opts.RecordsEvery, s.reloadRecord, s.loadRecords)
}

// watchTokens adopts corp tokens other replicas announce.
func (s *Suite) watchTokens(ctx context.Context, w token.Watcher) {
	prefix := s.opts.Name + "@"
	for key := range w.Watch(ctx) {
		if len(key) <= len(prefix) || key[:len(prefix)] != prefix {
			continue
		}
		if c := s.lookup(key[len(prefix):]); c != nil {
			c.cache.Sync(ctx)
		}
	}
}

func (s *Suite) reloadRecord(ctx context.Context, corpid string) {
	r, err := s.store.Record(ctx, s.opts.Name, corpid)
	switch {
	case errors.Is(err, platform.ErrNotFound):
		s.drop(corpid)
	case err != nil:
		s.storeError("load_corp", err)
	default:
		s.adoptRecord(r)
	}
}

// schedule is the one scheduler of the suite's corps: every Tick it
// refreshes, Concurrency at a time, those due whose last call is within
// CorpIdle. Idle corps cost nothing until called again.
func (s *Suite) schedule(ctx context.Context) {
	platform.Schedule(ctx, s.opts.Tick, s.opts.Concurrency, s.kick, func(ctx context.Context) {
		if !s.suiteTok.Current().Valid(s.now()) {
			_, _ = s.suiteTok.Refresh(ctx)
		}
	}, s.due, func(c *Corp) *atomic.Bool { return &c.busy }, func(ctx context.Context, c *Corp) { c.cache.Step(ctx) })
}

// due returns the corps whose proactive refresh or retry is due.
func (s *Suite) due() []*Corp {
	idle := s.now().Add(-s.opts.CorpIdle).Unix()
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []*Corp
	for _, c := range s.corps {
		used := c.used.Load()
		if used == 0 || used < idle || c.unauthorized.Load() || c.busy.Load() {
			continue
		}
		if c.cache.Due() {
			out = append(out, c)
		}
	}
	return out
}

// Stats counts the corps by state.
func (s *Suite) Stats() platform.Stats {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var st platform.Stats
	for _, c := range s.corps {
		switch c.State() {
		case platform.StateUnauthorized:
			st.Unauthorized++
		case platform.StateRefreshing:
			st.Refreshing++
		default:
			st.OK++
		}
	}
	return st
}

// CorpInfo is what the admin API shows of a corp: never a token or
// permanent code, only fingerprints and times.
type CorpInfo struct {
	CorpID          string     `json:"corpid"`
	State           string     `json:"state"`
	Fingerprint     string     `json:"fingerprint,omitempty"`
	ExpiresAt       *time.Time `json:"expires_at,omitempty"`
	TTLSeconds      int64      `json:"ttl_seconds"`
	PermanentCodeFP string     `json:"permanent_code_fingerprint"`
	LastUsed        *time.Time `json:"last_used,omitempty"`
	Refreshes       int64      `json:"refreshes"`
	ConsecutiveFail int        `json:"failures"`
}

// Corps lists corps by corpid, those in state only when state is set,
// from offset, at most limit; total counts all that match.
func (s *Suite) Corps(state string, offset, limit int) (list []CorpInfo, total int) {
	s.mu.RLock()
	cs := make([]*Corp, 0, len(s.corps))
	for _, c := range s.corps {
		if state == "" || c.State() == state {
			cs = append(cs, c)
		}
	}
	s.mu.RUnlock()
	slices.SortFunc(cs, func(a, b *Corp) int { return cmp.Compare(a.corpid, b.corpid) })
	total = len(cs)
	if offset >= len(cs) {
		return []CorpInfo{}, total
	}
	cs = cs[offset:min(len(cs), offset+limit)]
	now := s.now()
	list = make([]CorpInfo, 0, len(cs))
	for _, c := range cs {
		list = append(list, c.info(now))
	}
	return list, total
}
