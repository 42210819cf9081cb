package proxy_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sony/gobreaker/v2"

	"github.com/wxproxy/wxproxy/proxy"
	"github.com/wxproxy/wxproxy/ratelimit"
	"github.com/wxproxy/wxproxy/token"
	"github.com/wxproxy/wxproxy/wechatsim"
)

// Accounts known to the simulator in every test.
const (
	mainAppID  = "wx1111111111111111"
	mainSecret = "main-secret-0123456789"
	miniAppID  = "wx2222222222222222"
	miniSecret = "mini-secret-0123456789"
	corpID     = "ww3333333333333333"
	agentA     = "agent-a-secret-0123456789"
	agentB     = "agent-b-secret-0123456789"
	agentBID   = 1000002 // corp-b's agent_id
)

// env is a proxy in front of an in-process simulator, both over real HTTP.
type env struct {
	sim     *wechatsim.Server
	simURL  string
	url     string // the proxy
	caches  map[string]*token.Cache
	tickets map[string]*token.Tickets // every app's, all held on demand
	logs    *syncBuffer
	proxy   *proxy.Proxy
	limiter *ratelimit.Limiter
	breaker *proxy.Breaker
	metrics *proxy.Metrics // when envOptions.registry is set
}

type envOptions struct {
	mode           token.Mode // of app "main"; default Stable
	defaultApp     string     // default "main"; "-" for none
	retryBodyBytes int64
	maxBodyBytes   int64
	transport      *proxy.Client
	simWrap        func(http.Handler) http.Handler // wraps the simulator's handler (to see what reaches WeChat)
	noStartup      bool                            // do not fetch the first tokens before returning
	quotas         *ratelimit.Settings             // for app "main"
	breaker        *proxy.BreakerSettings          // for app "main"
	access         proxy.Access
	registry       *prometheus.Registry
	simQuotas      map[string]wechatsim.Quota
	maxBuffered    int64
	bodyTimeout    time.Duration
	headerTimeout  time.Duration
	upTimeout      time.Duration
	upstream       string // instead of the simulator, for apps' requests (token fetches still go to the simulator)
	onBreaker      func(app string, to gobreaker.State)
	tls            *tls.Config // serve the caller port over TLS with this
	onError        func(proxy.ErrorReport)
	now            func() time.Time // the proxy's and the tickets' clock; default time.Now
}

func newEnv(tb testing.TB, o envOptions) *env {
	tb.Helper()
	sim, err := wechatsim.New(wechatsim.Options{Quotas: o.simQuotas, Apps: []wechatsim.App{
		{AppID: mainAppID, Secret: mainSecret, Kind: wechatsim.KindOfficial},
		{AppID: miniAppID, Secret: miniSecret, Kind: wechatsim.KindMiniProgram},
		{AppID: corpID, Secret: agentA, Kind: wechatsim.KindWeCom},
		{AppID: corpID, Secret: agentB, Kind: wechatsim.KindWeCom},
	}})
	if err != nil {
		tb.Fatal(err)
	}
	var simHandler http.Handler = sim
	if o.simWrap != nil {
		simHandler = o.simWrap(sim)
	}
	simSrv := httptest.NewServer(simHandler)
	tb.Cleanup(simSrv.Close)
	up, _ := url.Parse(simSrv.URL)
	if o.upstream != "" {
		up, _ = url.Parse(o.upstream)
	}

	if o.mode == "" {
		o.mode = token.Stable
	}
	switch o.defaultApp {
	case "":
		o.defaultApp = "main"
	case "-":
		o.defaultApp = ""
	}
	e := &env{sim: sim, simURL: simSrv.URL, caches: map[string]*token.Cache{}, tickets: map[string]*token.Tickets{}, logs: &syncBuffer{}}
	logger := slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	var reg prometheus.Registerer
	if o.registry != nil {
		e.metrics, reg = proxy.NewMetrics(o.registry), o.registry
	}
	client := simSrv.Client()
	specs := []struct {
		name, kind, appid, secret string
		mode                      token.Mode
	}{
		{"main", proxy.KindOfficial, mainAppID, mainSecret, o.mode},
		{"mini", proxy.KindMiniProgram, miniAppID, miniSecret, token.Classic},
		{"corp-a", proxy.KindWeCom, corpID, agentA, token.WeCom},
		{"corp-b", proxy.KindWeCom, corpID, agentB, token.WeCom},
	}
	var apps []*proxy.App
	for _, s := range specs {
		name := s.name
		onRefresh := func(token.Reason, error) {}
		if e.metrics != nil {
			name := s.name
			onRefresh = func(r token.Reason, err error) { e.metrics.TokenRefreshed(name, r, err) }
		}
		c, err := token.New(token.Options{
			App: s.name, Mode: s.mode, Logger: logger, OnRefresh: onRefresh,
			OnInstall: func(v string) { e.proxy.HoldToken(name, v) },
			Fetcher:   &token.HTTPFetcher{Mode: s.mode, Upstream: simSrv.URL, AppID: s.appid, Secret: s.secret, Client: client},
		})
		if err != nil {
			tb.Fatal(err)
		}
		e.caches[s.name] = c
		kind := token.TicketKind()
		tickets, err := token.NewTickets(token.TicketTypes(s.kind == proxy.KindWeCom), nil, func(typ token.TicketType) (*token.Cache, error) {
			return token.New(token.Options{App: name, Kind: &kind, Logger: logger, Now: o.now,
				Fetcher: &token.TicketSource{Type: typ, Upstream: simSrv.URL, Tokens: c, Client: client, Now: o.now},
				OnRefresh: func(r token.Reason, err error) {
					if e.metrics != nil {
						e.metrics.TicketRefreshed(name, typ, r, err)
					}
				}})
		})
		if err != nil {
			tb.Fatal(err)
		}
		e.tickets[s.name] = tickets
		app := &proxy.App{Name: s.name, Kind: s.kind, AppID: s.appid, Secret: s.secret, Upstream: up, Tokens: c, Tickets: tickets}
		if s.name == "corp-b" {
			app.AgentID = agentBID
		}
		if s.name == "main" {
			if o.quotas != nil {
				e.limiter = ratelimit.New(*o.quotas, ratelimit.Options{Name: "main"})
				app.Quotas = e.limiter
			}
			if o.breaker != nil {
				app.Breaker = proxy.NewBreaker("main", *o.breaker, o.onBreaker)
				e.breaker = app.Breaker
			}
		}
		apps = append(apps, app)
	}
	p, err := proxy.New(proxy.Options{
		Apps: apps, DefaultApp: o.defaultApp, Logger: logger,
		RetryBodyBytes: o.retryBodyBytes, MaxBodyBytes: o.maxBodyBytes, Transport: o.transport,
		Access: o.access, Metrics: e.metrics, Registry: reg,
		MaxBufferedBytes: o.maxBuffered, BodyReadTimeout: o.bodyTimeout, UpstreamTimeout: o.upTimeout,
		ReadHeaderTimeout: o.headerTimeout, OnError: o.onError, Now: o.now,
	})
	if err != nil {
		tb.Fatal(err)
	}
	e.proxy = p
	if o.tls != nil {
		e.url = serveOn(tb, p, o.tls)
	} else {
		e.url = serve(tb, p)
	}
	if !o.noStartup {
		for name, c := range e.caches {
			if _, err := c.Get(context.Background()); err != nil {
				tb.Fatalf("startup token for %s: %v", name, err)
			}
		}
	}
	return e
}

// serve runs p on a loopback listener, as wxproxy serve does, and returns
// its base URL; the server is shut down when the test ends.
func serve(tb testing.TB, p *proxy.Proxy) string { return serveOn(tb, p, nil) }

// serveOn is serve, over TLS when cfg is set (as wxproxy serve does with
// tls:); the URL is then https://.
func serveOn(tb testing.TB, p *proxy.Proxy, cfg *tls.Config) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	scheme := "http://"
	if cfg != nil {
		scheme = "https://"
		ln = tls.NewListener(ln, cfg)
	}
	done := make(chan error, 1)
	go func() { done <- p.Serve(ln) }()
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = p.Shutdown(ctx)
		<-done
	})
	return scheme + ln.Addr().String()
}

// answer is a decoded WeChat-shaped answer.
type answer struct {
	status  int
	header  http.Header
	body    []byte
	ErrCode int    `json:"errcode"`
	ErrMsg  string `json:"errmsg"`
	Echo    struct {
		AppID      string              `json:"appid"`
		Method     string              `json:"method"`
		Path       string              `json:"path"`
		Query      map[string][]string `json:"query"`
		BodySHA256 string              `json:"body_sha256"`
		BodyLen    int                 `json:"body_len"`
		RequestID  string              `json:"request_id"`
	} `json:"echo"`
	AccessToken string `json:"access_token"`
	ExpiresIn   int    `json:"expires_in"`
	OpenID      string `json:"openid"`
}

func (e *env) do(tb testing.TB, method, path string, body []byte, hdr ...string) *answer {
	tb.Helper()
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, e.url+path, r)
	if err != nil {
		tb.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := noRedirects.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	a := &answer{status: resp.StatusCode, header: resp.Header}
	if a.body, err = io.ReadAll(resp.Body); err != nil {
		tb.Fatal(err)
	}
	if strings.Contains(resp.Header.Get("Content-Type"), "json") {
		if err := json.Unmarshal(a.body, a); err != nil {
			tb.Fatalf("%s %s: bad JSON %q: %v", method, path, a.body, err)
		}
	}
	return a
}

func (e *env) get(tb testing.TB, path string, hdr ...string) *answer {
	tb.Helper()
	return e.do(tb, http.MethodGet, path, nil, hdr...)
}

// noRedirects is a client that shows a redirect instead of following it.
var noRedirects = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// simPost calls the simulator's control API.
func (e *env) simPost(tb testing.TB, path, body string) {
	tb.Helper()
	resp, err := http.Post(e.simURL+path, "application/json", strings.NewReader(body))
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		tb.Fatalf("POST %s: %d %s", path, resp.StatusCode, b)
	}
}

// fetches is the total number of token endpoint calls the simulator saw.
func (e *env) fetches(appid string) int64 {
	f := e.sim.Stats().TokenFetches[appid]
	return f.Classic + f.Stable + f.StableForced + f.WeCom
}

// liveTokens returns every app token the simulator would accept now.
func (e *env) liveTokens() []string {
	var all []string
	for _, ts := range e.sim.Tokens() {
		all = append(all, ts...)
	}
	return all
}

// syncBuffer is a log sink safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// eventually polls cond until it holds or the deadline passes.
func eventually(tb testing.TB, d time.Duration, cond func() bool) bool {
	tb.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if cond() {
			return true
		}
		time.Sleep(5 * time.Millisecond)
	}
	return cond()
}
