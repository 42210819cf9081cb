// Package proxy is wxproxy's caller-facing engine: it finds the app of a
// request, answers SDK token requests locally, injects the app's current
// access_token, forwards to WeChat, and refreshes and retries once when
// WeChat rejects the token.
//
// The caller port and the upstream client are fasthttp (a server and one
// fasthttp.HostClient per upstream); the admin port stays on net/http. A
// request runs one straight line of stages, each in its own file, with its
// state passed from stage to stage (serve, below):
//
//	hygiene.go  framing and target checks, the cleaned path
//	access.go   who may call (before anything else is decided for them)
//	route.go    which app
//	local.go    token, ticket and JS-SDK endpoints answered here
//	quota.go    caller and API limits
//	body.go     the body, buffered for replay or streamed
//	inject.go   the upstream request: token, credentials, headers
//	forward.go  one upstream round trip, through the breaker (breaker.go)
//	inspect.go  the errcode peek of the answer
//	retry.go    refresh and retry once on a token error
//	scrub.go    credentials replaced in the answer, which is then sent
//	errors.go   the one funnel through which every wxproxy error is sent
//	log.go      the access line and the request metrics
package proxy

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"

	"github.com/wxproxy/wxproxy/failover"
	"github.com/wxproxy/wxproxy/ratelimit"
	"github.com/wxproxy/wxproxy/token"
)

const jsonContentType = "application/json; encoding=utf-8"

// Header names as fasthttp normalises them.
const (
	headerApp     = "X-Wxproxy-App"
	headerKey     = "X-Wxproxy-Key"
	headerRetried = "X-Wxproxy-Retried"
	headerError   = "X-Wxproxy-Error"
	headerReqID   = "X-Request-Id"
)

// TokenSource is what the proxy needs of an app's token holder; *token.Cache
// implements it.
type TokenSource interface {
	Current() *token.Token
	Get(ctx context.Context) (*token.Token, error)
	Invalidate(ctx context.Context, bad string) (*token.Token, error)
}

var _ TokenSource = (*token.Cache)(nil)

// Tickets is what the proxy needs of an app's ticket holder;
// *token.Tickets implements it. Get returns an error wrapping
// token.ErrUnknownTicketType for a type the app's kind does not have.
type Tickets interface {
	Get(ctx context.Context, typ token.TicketType) (*token.Token, error)
	Statuses() []token.TicketStatus
}

var _ Tickets = (*token.Tickets)(nil)

// Quotas is what the proxy needs of a rate limiter; *ratelimit.Limiter
// implements it. Allow returns a *ratelimit.Denied to refuse.
type Quotas interface {
	Allow(ctx context.Context, api string) error
	Observe(ctx context.Context, api string, errcode int) error
}

var _ Quotas = (*ratelimit.Limiter)(nil)

// App is one WeChat account behind the proxy.
type App struct {
	Name     string // path prefix /{Name}/ and X-WXProxy-App value
	Kind     string // official | miniprogram | wecom
	AppID    string // corpid for WeCom
	Secret   string // corpsecret for WeCom; only sent upstream, never logged
	Upstream *url.URL
	Tokens   TokenSource
	Quotas   Quotas   // nil = no local limits
	Breaker  *Breaker // nil = no breaker
	// TokenWait bounds how long a request whose token WeChat rejected
	// waits for the refresh (here or on another replica) before the token
	// error goes back to the caller; 0 = as long as the refresh takes.
	TokenWait time.Duration
	Tickets   Tickets // nil = no tickets (ticket requests are refused)
	AgentID   int64   // WeCom: the agent of Secret, for wx.agentConfig; 0 = unknown
	// Upstreams, if it has more than one upstream, is the app's failover
	// list (SPEC §14): its first URL must be Upstream. Requests go to the
	// first upstream that is up; the app's token fetches share the Set.
	// Nil, or one upstream: Upstream only, no failover.
	Upstreams *failover.Set

	plat   *platform               // set for a platform's component and merchants
	fp     atomic.Pointer[fpCache] // last logged token fingerprint
	phKey  []byte                  // placeholder MAC key, set by New
	lastPH atomic.Pointer[string]  // last placeholder verified
	up     *upstream               // the client for Upstream, set by New
	// failover and ups are Upstreams and a client per upstream, set by
	// New when the app has failover upstreams; nil otherwise.
	failover *failover.Set
	ups      []*upstream
}

// App kinds.
const (
	KindOfficial    = "official"
	KindMiniProgram = "miniprogram"
	KindWeCom       = "wecom"
)

// Options configures a Proxy. Zero values take the defaults noted.
type Options struct {
	Apps           []*App
	Platforms      []Platform // third-party platforms (SPEC §12); their names share the app namespace
	DefaultApp     string     // app for requests that name none; "" = none
	MaxBodyBytes   int64      // default 10 MiB
	RetryBodyBytes int64      // default 2 MiB
	// MaxBufferedBytes bounds all request bodies buffered at once for
	// replay; past it bodies stream. Default 256 MiB.
	MaxBufferedBytes int64
	// BodyReadTimeout bounds the time a caller may take to send its body
	// (408 after it), counted from the end of its headers; 0 = no bound.
	BodyReadTimeout time.Duration
	// ReadHeaderTimeout bounds the time a caller may take to send its
	// request line and headers; 0 = no bound.
	ReadHeaderTimeout time.Duration
	// IdleTimeout closes keep-alive connections idle longer; 0 = 120 s.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds the request line and headers; default 64 KiB.
	MaxHeaderBytes int
	// UpstreamTimeout bounds the wait for WeChat's answer headers and the
	// errcode peek of its body. Default 10 s.
	UpstreamTimeout time.Duration
	Transport       *Client          // default NewClient(TransportOptions{Timeout: UpstreamTimeout})
	Logger          *slog.Logger     // access lines at Info; default discard
	Now             func() time.Time // default time.Now
	Access          Access           // who may call; the zero Access allows everyone
	// Metrics, if set, receives the request metrics; Registry, if set,
	// gets the token TTL and breaker state gauges of these apps.
	Metrics  *Metrics
	Registry prometheus.Registerer
	// OnError, if set, is told of every error wxproxy answers itself
	// (for the status console's recent errors). It runs on the request's
	// goroutine after the answer is written and must be quick.
	OnError func(ErrorReport)
}

// ErrorReport is an error wxproxy answered a caller. Msg is the text the
// caller was sent (no token or secret); Path may be anything a caller
// sent: whoever shows it must treat it as untrusted text.
type ErrorReport struct {
	Time   time.Time
	Kind   Kind
	App    string // "" when no app was resolved
	Path   string // the request path without the app prefix or query
	Status int
	Msg    string
}

// Proxy is the caller-facing engine. It is safe for concurrent use; Serve
// runs it on a listener, Shutdown drains it.
type Proxy struct {
	apps      map[string]*App
	appList   []*App
	byAppID   map[string][]*App
	def       *App
	maxBody   int64
	retryBody int64
	log       *slog.Logger
	now       func() time.Time
	ids       idGen
	metrics   *Metrics
	onError   func(ErrorReport)
	access    atomic.Pointer[access]
	client    *Client
	srv       *fasthttp.Server

	bodyTimeout time.Duration
	upTimeout   time.Duration
	buffers     buffers
	misses      missThrottle
	uploads     chan struct{} // streaming uploads in flight (maxStreamingUploads)
	held        *held

	platforms   map[string]*platform // by name
	byComponent map[string]*platform // by component appid (a suite: by suite id)
	byProvider  map[string]*platform // WeCom suites by provider corpid
}

// New returns a Proxy for opts.Apps.
func New(opts Options) (*Proxy, error) {
	if len(opts.Apps) == 0 && len(opts.Platforms) == 0 {
		return nil, errors.New("proxy: no apps")
	}
	p := &Proxy{
		apps:      make(map[string]*App, len(opts.Apps)),
		byAppID:   make(map[string][]*App),
		maxBody:   opts.MaxBodyBytes,
		retryBody: opts.RetryBodyBytes,
		log:       opts.Logger,
		now:       opts.Now,
	}
	for _, a := range opts.Apps {
		if a.Name == "" || a.Tokens == nil || a.Upstream == nil {
			return nil, fmt.Errorf("proxy: app %q needs a name, a token source and an upstream", a.Name)
		}
		if _, dup := p.apps[a.Name]; dup {
			return nil, fmt.Errorf("proxy: duplicate app %q", a.Name)
		}
		a.phKey = placeholderKey(a.Name, a.AppID, a.Secret)
		p.apps[a.Name] = a
		p.appList = append(p.appList, a)
		p.byAppID[a.AppID] = append(p.byAppID[a.AppID], a)
	}
	if opts.DefaultApp != "" {
		if p.def = p.apps[opts.DefaultApp]; p.def == nil {
			return nil, fmt.Errorf("proxy: default app %q is not configured", opts.DefaultApp)
		}
	}
	if p.maxBody <= 0 {
		p.maxBody = 10 << 20
	}
	if p.retryBody <= 0 {
		p.retryBody = 2 << 20
	}
	p.retryBody = min(p.retryBody, p.maxBody)
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	if p.now == nil {
		p.now = time.Now
	}
	p.bodyTimeout, p.upTimeout = opts.BodyReadTimeout, opts.UpstreamTimeout
	if p.upTimeout <= 0 {
		p.upTimeout = 10 * time.Second
	}
	p.buffers.budget = opts.MaxBufferedBytes
	if p.buffers.budget <= 0 {
		p.buffers.budget = 256 << 20
	}
	p.misses = missThrottle{limit: maxSecretMisses, now: p.now}
	p.uploads = make(chan struct{}, maxStreamingUploads)
	p.held = newHeld(p.appList)
	// Every line the proxy (and fasthttp through it) logs passes the
	// scrubber: libraries quote header values and request targets in
	// their errors.
	// Given a ScrubHandler (server wraps its root logger, so the token
	// holders' lines are scrubbed too), the proxy supplies its scrubber;
	// otherwise it wraps its own logger.
	if sh, ok := p.log.Handler().(*ScrubHandler); ok {
		sh.SetScrubber(p.Scrub)
	} else {
		sh := NewScrubHandler(p.log.Handler())
		sh.SetScrubber(p.Scrub)
		p.log = slog.New(sh)
	}
	p.client = opts.Transport
	if p.client == nil {
		var err error
		if p.client, err = NewClient(TransportOptions{Timeout: p.upTimeout}); err != nil {
			return nil, err
		}
	}
	for _, a := range p.appList {
		up, err := p.client.upstream(a.Upstream)
		if err != nil {
			return nil, fmt.Errorf("proxy: app %q: %w", a.Name, err)
		}
		a.up = up
		if a.Upstreams == nil || a.Upstreams.Len() < 2 {
			continue
		}
		if a.Upstreams.URL(0) != a.Upstream.String() {
			return nil, fmt.Errorf("proxy: app %q: the first of Upstreams must be Upstream", a.Name)
		}
		a.failover, a.ups = a.Upstreams, []*upstream{up}
		for i := 1; i < a.Upstreams.Len(); i++ {
			u, err := url.Parse(a.Upstreams.URL(i))
			if err == nil {
				up, err = p.client.upstream(u)
			}
			if err != nil {
				return nil, fmt.Errorf("proxy: app %q: failover upstream %d: %w", a.Name, i, err)
			}
			a.ups = append(a.ups, up)
		}
	}
	if err := p.initPlatforms(opts.Platforms); err != nil {
		return nil, err
	}
	p.ids.init()
	p.metrics = opts.Metrics
	p.onError = opts.OnError
	p.SetAccess(opts.Access)
	if opts.Registry != nil {
		g := &gauges{p: p,
			ttl: prometheus.NewDesc("wxproxy_token_ttl_seconds", "Seconds the current token has left (0 = none).", []string{"app"}, nil),
			tkt: prometheus.NewDesc("wxproxy_ticket_ttl_seconds", "Seconds each held ticket has left (0 = none).", []string{"app", "type"}, nil),
			brk: prometheus.NewDesc("wxproxy_breaker_state", "Circuit breaker state: 0 closed, 1 half-open, 2 open.", []string{"app"}, nil),
			buf: prometheus.NewDesc("wxproxy_buffered_body_bytes", "Bytes of request bodies held for replay right now (bounded by max_buffered_bytes).", nil, nil),
			up:  prometheus.NewDesc("wxproxy_upstream_up", "Whether an upstream of the app is up (1) or marked down (0).", []string{"app", "upstream"}, nil),
		}
		if err := opts.Registry.Register(g); err != nil {
			return nil, fmt.Errorf("proxy: register gauges: %w", err)
		}
	}
	p.srv = p.newServer(opts)
	return p, nil
}

// newServer configures the caller port (SPEC §3, §5). fasthttp's own
// parser is stricter than net/http's in places and looser in others;
// hygiene.go closes the difference (see checkFraming).
func (p *Proxy) newServer(opts Options) *fasthttp.Server {
	maxHeader := opts.MaxHeaderBytes
	if maxHeader <= 0 {
		maxHeader = 64 << 10
	}
	idle := opts.IdleTimeout
	if idle <= 0 {
		idle = 120 * time.Second
	}
	bodyTimeout := p.bodyTimeout
	if bodyTimeout <= 0 {
		bodyTimeout = 100 * 365 * 24 * time.Hour // no bound, but the head's deadline must not cut the body
	}
	return &fasthttp.Server{
		Handler:      p.handle,
		ErrorHandler: p.parseError,
		// The head (request line and headers) must arrive within
		// read_header_timeout: fasthttp arms ReadTimeout at its first byte.
		// HeaderReceived then re-arms the read deadline for the body
		// (body_read_timeout). No write timeout: it would cut long media.
		ReadTimeout: opts.ReadHeaderTimeout,
		IdleTimeout: idle,
		HeaderReceived: func(h *fasthttp.RequestHeader) fasthttp.RequestConfig {
			if h.ContentLength() == 0 {
				return fasthttp.RequestConfig{} // no body: nothing to re-arm
			}
			// MaxRequestBodySize 1: with StreamRequestBody, fasthttp reads
			// at most this much of a body before the handler runs and
			// streams the rest, so every body byte goes through the
			// proxy's own accounting (max_body_bytes, buffers that grow
			// with bytes received, the caller-fault record).
			return fasthttp.RequestConfig{ReadTimeout: bodyTimeout, MaxRequestBodySize: 1}
		},
		StreamRequestBody:            true,
		ReadBufferSize:               maxHeader, // a head that does not fit is refused
		DisablePreParseMultipartForm: true,      // bodies pass as bytes, never parsed
		NoDefaultServerHeader:        true,
		SecureErrorLogMessage:        true, // fasthttp's errors never quote a request (its query may hold a secret)
		NoDefaultContentType:         true,
		CloseOnShutdown:              true,
		Logger:                       fasthttpLogger{p.log},
	}
}

// Serve serves callers on ln until Shutdown. It returns nil after a
// Shutdown.
func (p *Proxy) Serve(ln net.Listener) error {
	return p.srv.Serve(ln)
}

// Shutdown stops accepting connections and waits for requests in flight
// (their answers included) until ctx ends; idle connections are closed.
func (p *Proxy) Shutdown(ctx context.Context) error {
	return p.srv.ShutdownWithContext(ctx)
}

// Handler returns the fasthttp handler behind Serve, for embedding the
// proxy in another fasthttp server.
func (p *Proxy) Handler() fasthttp.RequestHandler { return p.handle }

// request is the state of one caller request. It is created by handle and
// passed explicitly to the stages that need it; nothing reaches it through
// a context.
type request struct {
	ctx     *fasthttp.RequestCtx
	start   time.Time
	app     *App
	path    string // cleaned path without the app prefix: what is forwarded
	api     string // its classification key: lower-case, no trailing "/"
	query   string // raw query without a fragment
	mode    mode
	token   string // the token injected, for compare-and-refresh
	param   string // the query parameter the token goes under; "" = access_token
	reqID   string
	caller  string // key name, or "" (the caller's IP is logged then)
	retried bool
	errcode int
	hasCode bool
	local   bool // answered by wxproxy itself (token, ticket and JS-SDK endpoints)

	body     body   // the caller's body as it is forwarded
	err      *Error // the wxproxy error answered, if any
	scrubbed bool   // a credential was replaced in the answer
	copyErr  bool   // the answer broke off while being copied
	finished atomic.Bool
}

// mode is how a forwarded request is rewritten.
type mode uint8

const (
	modeInject      mode = iota // strip the caller's access_token, append the app's
	modeCredentials             // set appid and secret (jscode2session, oauth2)
	modePassthrough             // forward untouched (/sns/userinfo: a user's token)
)

// handle serves one caller request: the stages of serve, then the one
// error funnel, then the access line (now, or when a streamed answer ends).
func (p *Proxy) handle(ctx *fasthttp.RequestCtx) {
	r := &request{ctx: ctx, start: p.now()}
	r.reqID = string(ctx.Request.Header.Peek(headerReqID))
	if r.reqID == "" || len(r.reqID) > 128 {
		r.reqID = p.ids.next()
	}
	streaming, err := p.serve(r)
	if err != nil {
		p.fail(r, err)
	}
	p.buffers.release(r.body.held)
	r.body.held = nil
	if !streaming {
		p.finish(r)
	}
}

// serve runs the stages of one request in order. It reports whether the
// answer is streaming (the access line is then written when it ends).
func (p *Proxy) serve(r *request) (streaming bool, err error) {
	ctx := r.ctx
	// hygiene: framing, then the target, before anything reads either.
	if err := checkFraming(&ctx.Request.Header); err != nil {
		return false, err
	}
	p.armBody(r)
	t, err := cleanTarget(&ctx.Request.Header)
	if err != nil {
		return false, err
	}
	r.path, r.api, r.query = t.path, apiKey(t.path), t.query
	// access
	key, err := p.access.Load().admit(ctx)
	if key != nil {
		r.caller = key.Name
	}
	if err != nil {
		return false, err
	}
	// route
	app, err := p.route(ctx, r)
	if err != nil {
		return false, err
	}
	if app != nil && !key.mayUseApp(app) {
		return false, &Error{Kind: KindForbidden, Msg: "your caller key may not use app " + app.Name}
	}
	if !key.mayCall(r.api) {
		return false, &Error{Kind: KindForbidden, Msg: "your caller key may not call this API (see callers.keys[].apis)"}
	}
	if app != nil && (app.Kind == KindComponent || app.Kind == KindSuite) || app == nil && len(p.platforms) > 0 && (r.api == apiComponentToken || isSuiteTokenAPI(r.api)) {
		if done, err := p.servePlatformLocal(r, app, key); done {
			return false, err
		}
	}
	switch kind := classifyPath(r.api); kind {
	case pathToken, pathStableToken, pathGetToken:
		return false, p.answerToken(r, app, kind, key) // local
	case pathTicket:
		return false, p.answerTicket(r, app, key) // local
	case pathJSSDKConfig:
		return false, p.answerJSSDKConfig(r, app, key) // local
	case pathReserved:
		return false, &Error{Kind: KindBadRequest, Msg: "/wxproxy/ is reserved for wxproxy's own endpoints (GET /wxproxy/jssdk/config)"}
	case pathBlocked:
		return false, &Error{Kind: KindBlockedPath, Msg: "quota-clearing calls are refused; use the admin API"}
	case pathCredentials:
		r.mode = modeCredentials
	case pathSNS, pathNoToken:
		r.mode = modePassthrough
	}
	if app != nil && app.plat != nil {
		if app, err = platformMode(r, app); err != nil {
			return false, err
		}
	}
	if app == nil {
		if app = p.def; app == nil {
			return false, errNoApp
		}
	}
	r.app = app
	if !key.mayUseApp(app) {
		return false, &Error{Kind: KindForbidden, Msg: "your caller key may not use app " + app.Name}
	}
	// quota
	if err := p.checkLimits(context.Background(), r, key); err != nil {
		return false, err
	}
	// body
	if err := p.prepareBody(r); err != nil {
		return false, err
	}
	// token
	if r.mode == modeInject {
		tok := app.Tokens.Current()
		if !tok.Valid(p.now()) {
			if tok, err = app.Tokens.Get(context.Background()); err != nil {
				if app.plat != nil {
					return false, p.platformError(app, err)
				}
				return false, &Error{Kind: KindTokenUnavailable, Msg: "no access_token for app " + app.Name + " (fetching it fails; see the wxproxy log)", Err: err}
			}
		}
		r.token = tok.Value
	}
	// breaker → inject → forward → inspect → refresh+retry
	ans, err := p.roundTrip(r)
	if err != nil {
		return false, err
	}
	// scrub, and send
	mask := maskRefreshTokens
	if app.Kind == KindSuite || app.Kind == KindProvider {
		mask = maskPermanentCodes
	}
	if app.Kind == KindComponent && !strings.HasPrefix(r.api, "/sns/") || app.Kind == KindSuite || app.Kind == KindProvider {
		held, err := p.maskComponentAnswer(r, ans, mask)
		if err != nil {
			return false, err
		}
		defer p.buffers.release(held) // sendAnswer copies a whole answer
	}
	return p.sendAnswer(r, ans)
}

var errNoApp = &Error{Kind: KindUnknownApp, Msg: "request names no app: use the path prefix /{app}/, the X-WXProxy-App header, or set default_app"}

// outcome is the metrics label of how a request ended.
func (r *request) outcome() string {
	switch {
	case r.err != nil:
		return string(r.err.Kind)
	case r.copyErr:
		return "aborted"
	case r.local:
		return "local"
	case r.hasCode && r.errcode != 0:
		return "wechat_error"
	}
	return "ok"
}

// idGen makes request IDs: a random per-process prefix and a counter,
// unique without a syscall per request.
type idGen struct {
	prefix string
	n      atomic.Uint64
}

func (g *idGen) init() {
	var b [6]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	g.prefix = hex.EncodeToString(b[:]) + "-"
}

func (g *idGen) next() string {
	var b [32]byte
	out := append(b[:0], g.prefix...)
	n := strconv.AppendUint(b[len(out):len(out)], g.n.Add(1), 16)
	return string(b[:len(out)+len(n)])
}

// fasthttpLogger routes fasthttp's own messages to the proxy's logger.
type fasthttpLogger struct{ log *slog.Logger }

func (l fasthttpLogger) Printf(format string, args ...any) {
	l.log.Warn("caller port: " + fmt.Sprintf(format, args...))
}

var _ io.Closer = (*answerStream)(nil)

// platformMode decides how a request to a platform app is forwarded: a
// component API gets the component token under the parameter its path
// uses, and none for api_start_push_ticket; a merchant has no secret, so
// the appid+secret endpoints are refused (use /{p}/sns/component/...).
func platformMode(r *request, app *App) (*App, error) {
	switch app.Kind {
	case KindAuthorizer:
		if r.mode == modeCredentials {
			return nil, &Error{Kind: KindBlockedPath, Msg: "a merchant has no AppSecret here: use the component endpoints (/{platform}/sns/component/jscode2session, /{platform}/sns/oauth2/component/access_token)"}
		}
		return app, nil
	case KindCorp:
		if r.mode == modeCredentials {
			return nil, &Error{Kind: KindBlockedPath, Msg: "a corp of a suite has no secret here: its token is injected as access_token"}
		}
		return app, nil
	case KindSuite, KindProvider:
		return suiteMode(r, app.plat)
	}
	switch {
	case r.api == apiStartPush:
		r.mode = modePassthrough
	case strings.HasPrefix(r.api, "/sns/component/"), strings.HasPrefix(r.api, "/sns/oauth2/component/"):
		r.mode, r.param = modeInject, componentParam(r.api)
	case r.mode == modeInject:
		r.param = componentParam(r.api)
	case r.mode == modeCredentials:
		return nil, &Error{Kind: KindBlockedPath, Msg: "the component has no AppSecret here: use /{platform}/sns/component/... with the component token"}
	}
	return app, nil
}
