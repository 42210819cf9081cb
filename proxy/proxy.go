// Package proxy is wxproxy's caller-facing engine: it finds the app of a
// request, answers SDK token requests locally, injects the app's current
// access_token, forwards to WeChat through httputil.ReverseProxy, and
// refreshes and retries once when WeChat rejects the token.
//
// Where things happen, by file: route.go finds the app; inject.go rewrites
// the query; local.go answers token endpoints and handles /sns/ paths;
// retry.go decides the token retry; body.go buffers bodies for replay;
// errors.go maps every failure to what the caller sees.
package proxy

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wxproxy/wxproxy/ratelimit"
	"github.com/wxproxy/wxproxy/token"
	"github.com/wxproxy/wxproxy/wechat"
)

const jsonContentType = "application/json; encoding=utf-8"

// Header names in canonical form, so lookups do not allocate to
// canonicalise them.
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

	fp atomic.Pointer[fpCache] // last logged token fingerprint
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
	DefaultApp     string            // app for requests that name none; "" = none
	MaxBodyBytes   int64             // default 10 MiB
	RetryBodyBytes int64             // default 2 MiB
	Transport      http.RoundTripper // default NewTransport(10 * time.Second)
	Logger         *slog.Logger      // access lines at Info; default discard
	Now            func() time.Time  // default time.Now
	Access         Access            // who may call; the zero value allows everyone
	// Metrics, if set, receives the request metrics; Registry, if set,
	// gets the token TTL and breaker state gauges of these apps.
	Metrics  *Metrics
	Registry prometheus.Registerer
}

// Proxy is the caller-facing handler. It is safe for concurrent use.
type Proxy struct {
	apps      map[string]*App
	appList   []*App
	byAppID   map[string][]*App
	def       *App
	maxBody   int64
	retryBody int64
	log       *slog.Logger
	now       func() time.Time
	rp        *httputil.ReverseProxy
	ids       idGen
	metrics   *Metrics
	access    atomic.Pointer[access]
}

// New returns a Proxy for opts.Apps.
func New(opts Options) (*Proxy, error) {
	if len(opts.Apps) == 0 {
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
		p.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if p.now == nil {
		p.now = time.Now
	}
	transport := opts.Transport
	if transport == nil {
		transport = NewTransport(10 * time.Second)
	}
	p.ids.init()
	p.metrics = opts.Metrics
	p.SetAccess(opts.Access)
	if opts.Registry != nil {
		g := &gauges{p: p,
			ttl: prometheus.NewDesc("wxproxy_token_ttl_seconds", "Seconds the current token has left (0 = none).", []string{"app"}, nil),
			brk: prometheus.NewDesc("wxproxy_breaker_state", "Circuit breaker state: 0 closed, 1 half-open, 2 open.", []string{"app"}, nil),
		}
		if err := opts.Registry.Register(g); err != nil {
			return nil, fmt.Errorf("proxy: register gauges: %w", err)
		}
	}
	p.rp = &httputil.ReverseProxy{
		Rewrite:      p.rewrite,
		Transport:    &retryTransport{next: transport, p: p},
		BufferPool:   newBufferPool(),
		ErrorHandler: p.upstreamError,
	}
	return p, nil
}

// NewTransport returns the upstream transport: a keep-alive pool sized for
// a busy proxy, with upstreamTimeout bounding the wait for WeChat's answer
// headers (a long media download is not cut off).
func NewTransport(upstreamTimeout time.Duration) *http.Transport {
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   512,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   5 * time.Second,
		ResponseHeaderTimeout: upstreamTimeout,
		ExpectContinueTimeout: time.Second,
	}
}

// call is the state of one request, shared by the handler, the rewrite and
// the retry transport through the request context.
type call struct {
	app     *App
	path    string // path without the app prefix
	rawPath string // its escaped form, when it differs
	mode    mode
	token   string // the token injected, for compare-and-refresh
	body    []byte // the buffered body, when it can be replayed
	replay  bool
	reqID   string
	caller  string // key name, or the caller's IP
	retried bool
	errcode int
	hasCode bool
	local   bool // answered by wxproxy itself (token endpoints)

	// Allocated with the call rather than on their own.
	rec      recorder
	reqIDHdr [1]string
	err      *Error // the wxproxy error answered, if any
}

type callKey struct{}

func callFrom(ctx context.Context) *call {
	c, _ := ctx.Value(callKey{}).(*call)
	return c
}

// mode is how a forwarded request is rewritten.
type mode uint8

const (
	modeInject      mode = iota // strip the caller's access_token, append the app's
	modeCredentials             // set appid and secret (jscode2session, oauth2)
	modePassthrough             // forward untouched (/sns/userinfo: a user's token)
)

// ServeHTTP serves one caller request.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := p.now()
	c := &call{reqID: r.Header.Get(headerReqID)}
	if c.reqID == "" {
		c.reqID = p.ids.next()
	}
	c.rec.ResponseWriter = w
	rec := &c.rec
	if err := p.serve(rec, r, c); err != nil {
		p.fail(rec, r, c, err)
	}
	d := p.now().Sub(start)
	if p.metrics != nil {
		app := "unknown"
		if c.app != nil {
			app = c.app.Name
		}
		p.metrics.observeRequest(app, c.path, rec.status, c.outcome(), d)
	}
	p.logAccess(r, c, rec.status, d)
}

// outcome is the metrics label of how a request ended.
func (c *call) outcome() string {
	switch {
	case c.err != nil:
		return string(c.err.Kind)
	case c.local:
		return "local"
	case c.hasCode && c.errcode != 0:
		return "wechat_error"
	}
	return "ok"
}

func (p *Proxy) serve(w http.ResponseWriter, r *http.Request, c *call) error {
	c.path = r.URL.Path
	key, err := p.access.Load().admit(r)
	if key != nil {
		c.caller = key.Name
	}
	if err != nil {
		return err
	}
	app, err := p.route(r, c)
	if err != nil {
		return err
	}
	if app != nil && !key.mayUse(app.Name) {
		return &Error{Kind: KindForbidden, Msg: "your caller key may not use app " + app.Name}
	}
	switch kind := classifyPath(c.path); kind {
	case pathToken, pathStableToken, pathGetToken:
		return p.answerToken(w, r, c, app, kind, key)
	case pathBlocked:
		return &Error{Kind: KindBlockedPath, Msg: "quota-clearing calls are refused; use the admin API"}
	case pathCredentials:
		c.mode = modeCredentials
	case pathSNS:
		c.mode = modePassthrough
	}
	if app == nil {
		if app = p.def; app == nil {
			return errNoApp
		}
	}
	c.app = app
	if !key.mayUse(app.Name) {
		return &Error{Kind: KindForbidden, Msg: "your caller key may not use app " + app.Name}
	}
	if err := p.checkLimits(r.Context(), c, key); err != nil {
		return err
	}
	if err := p.prepareBody(w, r, c); err != nil {
		return err
	}
	if c.mode == modeInject {
		tok := app.Tokens.Current()
		if !tok.Valid(p.now()) {
			if tok, err = app.Tokens.Get(r.Context()); err != nil {
				return &Error{Kind: KindTokenUnavailable, Msg: "no access_token for app " + app.Name + " (fetching it fails; see the wxproxy log)", Err: err}
			}
		}
		c.token = tok.Value
	}
	p.rp.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), callKey{}, c)))
	return nil
}

// checkLimits applies the caller's own limit, then the app's quota for
// the API. A quota store that fails (Redis down) does not block traffic.
func (p *Proxy) checkLimits(ctx context.Context, c *call, key *CallerKey) error {
	if key != nil && key.Limiter != nil {
		if err := p.limitError(c, key.Limiter.Allow(ctx, ""), ratelimit.ScopeCaller); err != nil {
			return err
		}
	}
	if c.app.Quotas != nil {
		return p.limitError(c, c.app.Quotas.Allow(ctx, c.path), ratelimit.ScopeAPI)
	}
	return nil
}

func (p *Proxy) limitError(c *call, err error, scope ratelimit.Scope) error {
	if err == nil {
		return nil
	}
	var d *ratelimit.Denied
	if !errors.As(err, &d) {
		if !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
			p.log.Warn("quota store failed; request let through", "app", c.app.Name, "err", err)
			if p.metrics != nil {
				p.metrics.StoreError("quota")
			}
			return nil
		}
		return err
	}
	if scope == ratelimit.ScopeCaller {
		d.Scope = scope // a caller key's limiter is an ordinary Limiter, which says "api"
	}
	if p.metrics != nil {
		p.metrics.observeRejection(c.app.Name, c.path, string(d.Scope))
	}
	var who string
	switch d.Scope {
	case ratelimit.ScopeCaller:
		who = "your caller key's per-minute limit"
	case ratelimit.ScopeUpstream:
		who = "WeChat's quota for " + c.path + " (remembered from its answer)"
	default:
		who = "the local limit for " + c.path
	}
	if d.Daily {
		return &Error{Kind: KindQuotaExhausted, Msg: "daily quota exhausted: " + who + "; it resets at midnight", RetryAfter: d.RetryAfter, Err: err}
	}
	return &Error{Kind: KindRateLimited, Msg: "too many requests: " + who + "; retry after Retry-After seconds", RetryAfter: d.RetryAfter, Err: err}
}

var errNoApp = &Error{Kind: KindUnknownApp, Msg: "request names no app: use the path prefix /{app}/, the X-WXProxy-App header, or set default_app"}

// rewrite builds the upstream request (httputil.ReverseProxy.Rewrite).
func (p *Proxy) rewrite(pr *httputil.ProxyRequest) {
	c := callFrom(pr.In.Context())
	u, out := c.app.Upstream, pr.Out
	out.URL.Scheme, out.URL.Host = u.Scheme, u.Host
	out.URL.Path = u.Path + c.path
	out.URL.RawPath = ""
	if c.rawPath != "" {
		out.URL.RawPath = u.EscapedPath() + c.rawPath
	}
	switch c.mode {
	case modeInject:
		out.URL.RawQuery = injectToken(pr.In.URL.RawQuery, c.token)
	case modeCredentials:
		out.URL.RawQuery = setCredentials(pr.In.URL.RawQuery, c.app.AppID, c.app.Secret)
	}
	out.Host = ""
	for k := range out.Header {
		if hasPrefixFold(k, "X-Wxproxy-") || hasPrefixFold(k, "X-Forwarded-") {
			delete(out.Header, k)
		}
	}
	c.reqIDHdr[0] = c.reqID
	out.Header[headerReqID] = c.reqIDHdr[:]
	if c.replay {
		out.Body, out.ContentLength = nil, int64(len(c.body))
		if len(c.body) > 0 {
			out.Body = io.NopCloser(bytes.NewReader(c.body))
		}
	}
}

// upstreamError is the ReverseProxy's error handler.
func (p *Proxy) upstreamError(w http.ResponseWriter, r *http.Request, err error) {
	p.fail(w, r, callFrom(r.Context()), err)
}

// fail answers err: the one funnel through which every wxproxy error
// reaches a caller.
func (p *Proxy) fail(w http.ResponseWriter, r *http.Request, c *call, err error) {
	if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		// The caller went away; nobody is left to answer.
		c.err = &Error{Kind: KindUpstream, Msg: "caller cancelled", Err: err}
		if rec, ok := w.(*recorder); ok && rec.status == 0 {
			rec.status = 499
		}
		return
	}
	e := classify(wechat.RedactError(err))
	c.err = e
	writeError(w, e)
}

func writeJSON(w io.Writer, v any) {
	_ = json.NewEncoder(w).Encode(v) // the caller is gone if this fails
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && equalFold(s[:len(prefix)], prefix)
}

func equalFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range len(a) {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
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

// bufferPool lends ReverseProxy its 32 KiB copy buffers. It is a bounded
// free list rather than a sync.Pool because httputil.BufferPool passes
// slices by value, and boxing one for sync.Pool allocates on every Put.
type bufferPool struct{ free chan []byte }

func newBufferPool() *bufferPool { return &bufferPool{free: make(chan []byte, 256)} }

func (b *bufferPool) Get() []byte {
	select {
	case buf := <-b.free:
		return buf
	default:
		return make([]byte, 32<<10)
	}
}

func (b *bufferPool) Put(buf []byte) {
	select {
	case b.free <- buf:
	default: // enough buffers idle; let this one go
	}
}
