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
	"strings"
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

	fp     atomic.Pointer[fpCache] // last logged token fingerprint
	phKey  []byte                  // placeholder MAC key, set by New
	lastPH atomic.Pointer[string]  // last placeholder verified
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
	DefaultApp     string // app for requests that name none; "" = none
	MaxBodyBytes   int64  // default 10 MiB
	RetryBodyBytes int64  // default 2 MiB
	// MaxBufferedBytes bounds all request bodies buffered at once for
	// replay; past it bodies stream. Default 256 MiB.
	MaxBufferedBytes int64
	// BodyReadTimeout bounds the time a caller may take to send its body
	// (408 after it); 0 = no bound.
	BodyReadTimeout time.Duration
	// UpstreamTimeout bounds the wait for WeChat's answer headers and the
	// errcode peek of its body. Default 10 s.
	UpstreamTimeout time.Duration
	Transport       http.RoundTripper // default NewTransport(TransportOptions{Timeout: UpstreamTimeout})
	Logger          *slog.Logger      // access lines at Info; default discard
	Now             func() time.Time  // default time.Now
	Access          Access            // who may call; the zero value allows everyone
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

	bodyTimeout time.Duration
	upTimeout   time.Duration
	buffers     buffers
	misses      missThrottle
	held        *held
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
		p.log = slog.New(slog.NewTextHandler(io.Discard, nil))
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
	p.held = newHeld(p.appList)
	transport := opts.Transport
	if transport == nil {
		var err error
		if transport, err = NewTransport(TransportOptions{Timeout: p.upTimeout}); err != nil {
			return nil, err
		}
	}
	p.ids.init()
	p.metrics = opts.Metrics
	p.SetAccess(opts.Access)
	if opts.Registry != nil {
		g := &gauges{p: p,
			ttl: prometheus.NewDesc("wxproxy_token_ttl_seconds", "Seconds the current token has left (0 = none).", []string{"app"}, nil),
			brk: prometheus.NewDesc("wxproxy_breaker_state", "Circuit breaker state: 0 closed, 1 half-open, 2 open.", []string{"app"}, nil),
			buf: prometheus.NewDesc("wxproxy_buffered_body_bytes", "Bytes of request bodies held for replay right now (bounded by max_buffered_bytes).", nil, nil),
		}
		if err := opts.Registry.Register(g); err != nil {
			return nil, fmt.Errorf("proxy: register gauges: %w", err)
		}
	}
	p.rp = &httputil.ReverseProxy{
		Rewrite:        p.rewrite,
		Transport:      &retryTransport{next: transport, p: p},
		ModifyResponse: p.scrubAnswer,
		BufferPool:     newBufferPool(),
		ErrorHandler:   p.upstreamError,
		ErrorLog:       slog.NewLogLogger(p.log.Handler(), slog.LevelWarn),
	}
	return p, nil
}

// TransportOptions configures NewTransport.
type TransportOptions struct {
	// Timeout bounds the wait for WeChat's answer headers (a long media
	// download is not cut off). Default 10 s.
	Timeout time.Duration
	// Proxy, if set, is the HTTP proxy (http://host:port) all upstream
	// traffic goes through, with CONNECT for https. Proxy environment
	// variables (HTTP_PROXY, ...) are never used: an egress route is a
	// decision, not an accident of the environment.
	Proxy string
}

// NewTransport returns the upstream transport: a keep-alive pool sized for
// a busy proxy. It never follows redirects (no http.RoundTripper does) and
// never reads proxy settings from the environment.
func NewTransport(o TransportOptions) (*http.Transport, error) {
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	t := &http.Transport{
		Proxy:                  nil, // explicit: no HTTP_PROXY from the environment
		DialContext:            (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		ForceAttemptHTTP2:      true,
		MaxIdleConns:           1024,
		MaxIdleConnsPerHost:    512,
		IdleConnTimeout:        90 * time.Second,
		TLSHandshakeTimeout:    5 * time.Second,
		ResponseHeaderTimeout:  o.Timeout,
		ExpectContinueTimeout:  time.Second,
		MaxResponseHeaderBytes: 64 << 10,
	}
	if o.Proxy != "" {
		u, err := url.Parse(o.Proxy)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, errors.New("proxy: upstream_proxy must be an http:// or https:// URL with a host")
		}
		t.Proxy = http.ProxyURL(u)
	}
	return t, nil
}

// call is the state of one request, shared by the handler, the rewrite and
// the retry transport through the request context.
type call struct {
	app     *App
	path    string // cleaned path without the app prefix: what is forwarded
	api     string // its classification key: lower-case, no trailing "/"
	query   string // raw query without a fragment
	mode    mode
	token   string // the token injected, for compare-and-refresh
	body    []byte // the buffered body, when it can be replayed
	held    *heldBody
	replay  bool
	reqID   string
	caller  string // key name, or the caller's IP
	retried bool
	errcode int
	hasCode bool
	local   bool // answered by wxproxy itself (token endpoints)

	// Allocated with the call rather than on their own.
	rec           recorder
	reqIDHdr      [1]string
	cbody         callerBody
	clearDeadline *http.ResponseController // set while a body read deadline is armed
	err           *Error                   // the wxproxy error answered, if any
	scrubbed      bool                     // a credential was replaced in the answer
	copyErr       bool                     // the answer broke off while being copied
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
	if c.reqID == "" || len(c.reqID) > 128 {
		c.reqID = p.ids.next()
	}
	c.rec.ResponseWriter = w
	rec := &c.rec
	defer func() {
		// ReverseProxy aborts with http.ErrAbortHandler when copying the
		// answer fails; the request is still logged and counted, as such.
		v := recover()
		if v != nil {
			c.copyErr = true
		}
		p.buffers.release(c.held)
		d := p.now().Sub(start)
		if p.metrics != nil {
			app := "unknown"
			if c.app != nil {
				app = c.app.Name
			}
			p.metrics.observeRequest(app, c.api, rec.status, c.outcome(), d)
			if c.scrubbed {
				p.metrics.observeScrubbed(app)
			}
		}
		p.logAccess(r, c, rec.status, d)
		if v != nil {
			panic(v)
		}
	}()
	if err := p.serve(rec, r, c); err != nil {
		p.fail(rec, r, c, err)
	}
}

// outcome is the metrics label of how a request ended.
func (c *call) outcome() string {
	switch {
	case c.err != nil:
		return string(c.err.Kind)
	case c.copyErr:
		return "aborted"
	case c.local:
		return "local"
	case c.hasCode && c.errcode != 0:
		return "wechat_error"
	}
	return "ok"
}

func (p *Proxy) serve(w http.ResponseWriter, r *http.Request, c *call) error {
	p.armBody(w, r, c)
	t, err := cleanTarget(r)
	if err != nil {
		return err
	}
	c.path, c.api, c.query = t.path, apiKey(t.path), t.query
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
	switch kind := classifyPath(c.api); kind {
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
	if err := p.prepareBody(r, c); err != nil {
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
		return p.limitError(c, c.app.Quotas.Allow(ctx, c.api), ratelimit.ScopeAPI)
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
		p.metrics.observeRejection(c.app.Name, c.api, string(d.Scope))
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
	// The upstream URL is built from parts wxproxy decided on, never from
	// the caller's URL: scheme and host are the app's upstream, the path
	// is the cleaned one, the query has no fragment.
	*out.URL = url.URL{Scheme: u.Scheme, Host: u.Host, Path: strings.TrimSuffix(u.Path, "/") + c.path}
	switch c.mode {
	case modeInject:
		out.URL.RawQuery = injectToken(c.query, c.token)
	case modeCredentials:
		out.URL.RawQuery = setCredentials(c.query, c.app.AppID, c.app.Secret)
	default:
		out.URL.RawQuery = c.query
	}
	out.Host = ""
	for k := range out.Header {
		if hasPrefixFold(k, "X-Wxproxy-") || hasPrefixFold(k, "X-Forwarded-") {
			delete(out.Header, k)
		}
	}
	// The answer must come back in a form the scrubber can read: without
	// Accept-Encoding the transport asks for gzip itself and decodes it.
	// A range of an answer could cut a credential part way.
	delete(out.Header, "Accept-Encoding")
	delete(out.Header, "Range")
	delete(out.Header, "If-Range")
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
	if cf := c.callerFault(); cf != nil {
		err = cf // the caller's body broke the upstream call: the caller's error
	}
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
	if hasBody(r) && !c.cbody.eof {
		// The body was not read to its end: do not let net/http drain it
		// for keep-alive; close the connection after this answer.
		w.Header().Set("Connection", "close")
	}
	writeError(w, e)
}

// writeJSON writes v as compact JSON with no trailing newline: some SDKs
// fail to parse anything else.
func writeJSON(w io.Writer, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		return // only plain structs of strings and numbers are written
	}
	_, _ = w.Write(b) // the caller is gone if this fails
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
