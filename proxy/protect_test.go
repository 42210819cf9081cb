package proxy_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/wxproxy/wxproxy/proxy"
	"github.com/wxproxy/wxproxy/ratelimit"
	"github.com/wxproxy/wxproxy/token"
	"github.com/wxproxy/wxproxy/wechat"
	"github.com/wxproxy/wxproxy/wechatsim"
)

func TestLocalQuotas(t *testing.T) {
	e := newEnv(t, envOptions{quotas: &ratelimit.Settings{
		APIs: map[string]ratelimit.Limit{
			"/cgi-bin/minute": {PerMinute: 60, Burst: 3},
			"/cgi-bin/daily":  {PerDay: 2},
		},
	}})
	for i := range 3 {
		if a := e.get(t, "/cgi-bin/minute"); a.ErrCode != 0 {
			t.Fatalf("call %d within burst: %s", i, a.body)
		}
	}
	a := e.get(t, "/cgi-bin/minute")
	checkError(t, a, 429, wechat.CodeMinuteQuota, "rate_limited")
	if ra, err := strconv.Atoi(a.header.Get("Retry-After")); err != nil || ra < 1 {
		t.Errorf("Retry-After = %q, want whole seconds >= 1", a.header.Get("Retry-After"))
	}
	e.get(t, "/cgi-bin/daily")
	e.get(t, "/cgi-bin/daily")
	checkError(t, e.get(t, "/cgi-bin/daily"), 429, wechat.CodeDailyQuota, "quota_exhausted")
	if got := e.sim.Stats().APICalls["/cgi-bin/daily"]; got != 2 {
		t.Errorf("WeChat saw %d daily calls, want 2 (the third answered locally)", got)
	}
	// Other APIs and other apps are unaffected.
	if a := e.get(t, "/cgi-bin/other"); a.ErrCode != 0 {
		t.Errorf("unlimited API: %s", a.body)
	}
}

func TestQuotaWaitMode(t *testing.T) {
	e := newEnv(t, envOptions{quotas: &ratelimit.Settings{
		APIs: map[string]ratelimit.Limit{"/cgi-bin/x": {PerMinute: 600, Burst: 1}}, // one per 100ms
		Wait: true, MaxWait: 2 * time.Second,
	}})
	start := time.Now()
	for range 4 {
		if a := e.get(t, "/cgi-bin/x"); a.ErrCode != 0 {
			t.Fatalf("wait mode refused: %s", a.body)
		}
	}
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Errorf("4 calls at 10/s took %v, want them paced (>= 300ms)", d)
	}
}

func TestUpstreamQuotaRemembered(t *testing.T) {
	e := newEnv(t, envOptions{
		// Listed (with no local limit) so its exhaustion is remembered:
		// unlisted, unknown APIs share one quota key and are not.
		quotas:    &ratelimit.Settings{RespectUpstream: true, APIs: map[string]ratelimit.Limit{"/cgi-bin/limited": {}}},
		simQuotas: map[string]wechatsim.Quota{"/cgi-bin/limited": {PerDay: 1}},
	})
	if a := e.get(t, "/cgi-bin/limited"); a.ErrCode != 0 {
		t.Fatalf("first call: %s", a.body)
	}
	// WeChat answers 45009 once; wxproxy passes it on and remembers.
	if a := e.get(t, "/cgi-bin/limited"); a.ErrCode != wechat.CodeDailyQuota || a.header.Get("X-WXProxy-Error") != "" {
		t.Fatalf("second call: want WeChat's own 45009, got %s", a.body)
	}
	before := e.sim.Stats().APICalls["/cgi-bin/limited"]
	for range 5 {
		checkError(t, e.get(t, "/cgi-bin/limited"), 429, wechat.CodeDailyQuota, "quota_exhausted")
	}
	if got := e.sim.Stats().APICalls["/cgi-bin/limited"]; got != before {
		t.Errorf("remembered exhaustion still reached WeChat: %d → %d", before, got)
	}
	u, err := e.limiter.Usage(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, q := range u {
		if q.API == "/cgi-bin/limited" && q.UpstreamLimit == "45009" && q.UpstreamResets != nil {
			found = true
		}
	}
	if !found {
		t.Errorf("usage does not show the remembered 45009: %+v", u)
	}
}

var testBreaker = proxy.BreakerSettings{
	ConsecutiveFailures: 3, FailureRatio: 1, MinRequests: 1000,
	Interval: time.Minute, OpenTimeout: 300 * time.Millisecond, HalfOpenRequests: 1,
}

func TestBreaker(t *testing.T) {
	reg := prometheus.NewRegistry()
	e := newEnv(t, envOptions{breaker: &testBreaker, registry: reg})
	gauge := func() float64 {
		mfs, _ := reg.Gather()
		for _, mf := range mfs {
			if mf.GetName() == "wxproxy_breaker_state" {
				for _, m := range mf.GetMetric() {
					if m.GetLabel()[0].GetValue() == "main" {
						return m.GetGauge().GetValue()
					}
				}
			}
		}
		return -1
	}
	// Business errcodes are WeChat answering: they never trip the breaker.
	e.simPost(t, "/sim/faults", `{"path":"/cgi-bin/x","errcode":40003,"count":10}`)
	for range 10 {
		e.get(t, "/cgi-bin/x")
	}
	if st := e.breaker.State().State; st != "closed" {
		t.Fatalf("after business errors breaker is %s, want closed", st)
	}
	// Three failures of the kinds that count: 5xx, errcode -1, a dropped connection.
	e.simPost(t, "/sim/faults", `{"path":"/cgi-bin/x","status":502,"count":1}`)
	e.get(t, "/cgi-bin/x")
	e.simPost(t, "/sim/faults", `{"path":"/cgi-bin/x","errcode":-1,"count":1}`)
	e.get(t, "/cgi-bin/x")
	e.simPost(t, "/sim/faults", `{"path":"/cgi-bin/x","drop":true,"count":1}`)
	// A POST: net/http silently re-sends an idempotent GET once on a dropped
	// keep-alive connection, but never a POST.
	e.do(t, "POST", "/cgi-bin/x", []byte("{}"))
	if st := e.breaker.State().State; st != "open" {
		t.Fatalf("after 3 failures breaker is %s (%+v), want open", st, e.breaker.State().Counts)
	}
	if g := gauge(); g != 2 {
		t.Errorf("wxproxy_breaker_state = %v while open, want 2", g)
	}
	before := e.sim.Stats().APICalls["/cgi-bin/x"]
	a := e.get(t, "/cgi-bin/x")
	checkError(t, a, 503, -1, "circuit_open")
	if a.header.Get("Retry-After") == "" {
		t.Error("circuit_open without Retry-After")
	}
	if got := e.sim.Stats().APICalls["/cgi-bin/x"]; got != before {
		t.Error("an open breaker let a call reach WeChat")
	}
	// After open_timeout one probe goes through; its success closes the breaker.
	if !eventually(t, 5*time.Second, func() bool { return e.breaker.State().State == "half-open" }) {
		t.Fatalf("breaker did not go half-open")
	}
	if a := e.get(t, "/cgi-bin/x"); a.ErrCode != 0 {
		t.Fatalf("probe: %s", a.body)
	}
	if st := e.breaker.State().State; st != "closed" {
		t.Errorf("after a good probe breaker is %s, want closed", st)
	}
	if g := gauge(); g != 0 {
		t.Errorf("wxproxy_breaker_state = %v after recovery, want 0", g)
	}
}

func TestBreakerUpdate(t *testing.T) {
	b := proxy.NewBreaker("a", testBreaker, nil)
	for range 3 {
		done, err := b.Allow()
		if err != nil {
			t.Fatal(err)
		}
		done(errors.New("boom"))
	}
	if b.State().State != "open" {
		t.Fatal("not open")
	}
	b.Update(testBreaker) // unchanged settings keep the state
	if b.State().State != "open" {
		t.Error("unchanged settings reset the breaker")
	}
	s := testBreaker
	s.ConsecutiveFailures = 10
	b.Update(s)
	if b.State().State != "closed" {
		t.Error("new settings did not take effect")
	}
}

// recorder remembers the headers of every upstream request.
type headerRecorder struct {
	mu   sync.Mutex
	seen []http.Header
}

func (h *headerRecorder) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.mu.Lock()
		h.seen = append(h.seen, r.Header.Clone())
		h.mu.Unlock()
		next.ServeHTTP(w, r)
	})
}

func TestCallerAccess(t *testing.T) {
	rec := &headerRecorder{}
	e := newEnv(t, envOptions{simWrap: rec.wrap, access: proxy.Access{
		AllowCIDRs: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
		Keys: []proxy.CallerKey{
			{Name: "billing", Key: "billing-key-123", Apps: []string{"main"}},
			{Name: "ops", Key: "ops-key-456"},
			{Name: "slow", Key: "slow-key-789", Limiter: ratelimit.New(ratelimit.Settings{Default: ratelimit.Limit{PerMinute: 60, Burst: 2}}, ratelimit.Options{Name: "caller:slow"})},
		},
	}})
	tests := []struct {
		name   string
		path   string
		key    string
		status int
	}{
		{"no key", "/cgi-bin/x", "", 403},
		{"wrong key", "/cgi-bin/x", "nope", 403},
		{"good key", "/cgi-bin/x", "billing-key-123", 200},
		{"key limited to main", "/mini/cgi-bin/x", "billing-key-123", 403},
		{"key limited to main, token by appid", "/cgi-bin/token?appid=" + miniAppID, "billing-key-123", 403},
		{"unrestricted key", "/mini/cgi-bin/x", "ops-key-456", 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var hdr []string
			if tt.key != "" {
				hdr = []string{"X-WXProxy-Key", tt.key}
			}
			a := e.get(t, tt.path, hdr...)
			if a.status != tt.status {
				t.Errorf("status %d, want %d: %s", a.status, tt.status, a.body)
			}
			if tt.status == 403 {
				checkError(t, a, 403, wechat.CodeUnauthorized, "forbidden")
			}
		})
	}
	for _, h := range rec.seen {
		for k := range h {
			if strings.HasPrefix(strings.ToLower(k), "x-wxproxy-") {
				t.Errorf("%s was forwarded to WeChat", k)
			}
		}
	}
	if len(rec.seen) == 0 {
		t.Fatal("no upstream request recorded")
	}
	// Per-caller limit.
	e.get(t, "/cgi-bin/x", "X-WXProxy-Key", "slow-key-789")
	e.get(t, "/cgi-bin/x", "X-WXProxy-Key", "slow-key-789")
	limited := e.get(t, "/cgi-bin/x", "X-WXProxy-Key", "slow-key-789")
	checkError(t, limited, 429, wechat.CodeMinuteQuota, "rate_limited")
	if !strings.Contains(limited.ErrMsg, "caller key") {
		t.Errorf("per-caller rejection does not name the caller limit: %q", limited.ErrMsg)
	}
	if !strings.Contains(e.logs.String(), `"caller":"billing"`) {
		t.Error("access log does not name the caller key")
	}

	// Reload: new rules apply at once.
	e.proxy.SetAccess(proxy.Access{AllowCIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}})
	checkError(t, e.get(t, "/cgi-bin/x"), 403, wechat.CodeUnauthorized, "forbidden")
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	e := newEnv(t, envOptions{registry: reg, breaker: &testBreaker, quotas: &ratelimit.Settings{APIs: map[string]ratelimit.Limit{"/cgi-bin/menu/get": {PerDay: 1}}}})
	e.get(t, "/cgi-bin/user/info")
	e.get(t, "/cgi-bin/menu/get")
	e.get(t, "/cgi-bin/menu/get") // rejected
	if _, err := e.sim.Invalidate(mainAppID); err != nil {
		t.Fatal(err)
	}
	e.get(t, "/cgi-bin/user/info") // retried
	e.get(t, "/cgi-bin/token?appid="+mainAppID)

	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, mf := range mfs {
		names[mf.GetName()] = true
	}
	for _, n := range []string{"wxproxy_requests_total", "wxproxy_request_duration_seconds", "wxproxy_upstream_duration_seconds",
		"wxproxy_token_ttl_seconds", "wxproxy_token_retries_total", "wxproxy_ratelimit_rejections_total",
		"wxproxy_breaker_state", "wxproxy_wechat_errors_total"} {
		if !names[n] {
			t.Errorf("metric %s missing", n)
		}
	}
	if got := testutil.ToFloat64(mustCounter(t, reg, "wxproxy_token_retries_total", map[string]string{"app": "main", "errcode": "40001"})); got != 1 {
		t.Errorf("token retries = %v, want 1", got)
	}
	if got := testutil.ToFloat64(mustCounter(t, reg, "wxproxy_ratelimit_rejections_total", map[string]string{"app": "main", "api": "/cgi-bin/menu/get", "scope": "api"})); got != 1 {
		t.Errorf("rejections = %v, want 1", got)
	}

	// A flood of random paths creates no new series.
	series := func() int {
		n, err := testutil.GatherAndCount(reg, "wxproxy_requests_total", "wxproxy_wechat_errors_total")
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	e.get(t, "/cgi-bin/random/0")
	before := series()
	for i := range 200 {
		e.get(t, fmt.Sprintf("/cgi-bin/random/%d?x=%d", i, i))
	}
	if after := series(); after != before {
		t.Errorf("random paths grew the series: %d → %d", before, after)
	}
}

// mustCounter finds one counter child of a registered vector by labels.
func mustCounter(tb testing.TB, reg *prometheus.Registry, name string, labels map[string]string) prometheus.Collector {
	tb.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if v, ok := labels[lp.GetName()]; ok && v != lp.GetValue() {
					continue next
				}
			}
			c := prometheus.NewCounter(prometheus.CounterOpts{Name: "x"})
			c.Add(m.GetCounter().GetValue())
			return c
		}
	}
	tb.Fatalf("no %s%v", name, labels)
	return nil
}

// TestNoLeakOnErrorPaths drives every error path and checks that no token
// or secret reaches a log line, a response body or a header.
func TestNoLeakOnErrorPaths(t *testing.T) {
	e := newEnv(t, envOptions{mode: token.Classic, breaker: &testBreaker, quotas: &ratelimit.Settings{RespectUpstream: true, APIs: map[string]ratelimit.Limit{"/cgi-bin/q": {PerDay: 1}}}})
	var out strings.Builder
	collect := func(a *answer) {
		out.Write(a.body)
		for k, v := range a.header {
			fmt.Fprintf(&out, "%s: %v\n", k, v)
		}
	}
	// Token errors and retries.
	e.sim.Invalidate(mainAppID)
	collect(e.get(t, "/cgi-bin/x"))
	e.simPost(t, "/sim/faults", `{"path":"/cgi-bin/x","errcode":40001,"count":2}`)
	collect(e.get(t, "/cgi-bin/x"))
	// Quotas, blocked paths, credentials paths, local token answers.
	collect(e.get(t, "/cgi-bin/q"))
	collect(e.get(t, "/cgi-bin/q"))
	collect(e.get(t, "/cgi-bin/clear_quota"))
	collect(e.get(t, "/mini/sns/jscode2session?js_code=c&secret=caller-sent-this"))
	collect(e.get(t, "/cgi-bin/token?grant_type=client_credential&appid="+mainAppID+"&secret="+mainSecret))
	// Upstream drops and 5xx, then the open breaker.
	e.simPost(t, "/sim/faults", `{"path":"/cgi-bin/x","drop":true,"count":3}`)
	for range 4 {
		collect(e.get(t, "/cgi-bin/x"))
	}
	// Token fetch failures whose transport errors carry the URL with secret=.
	dead := newEnv(t, envOptions{mode: token.Classic, noStartup: true, transport: redirectTransport("127.0.0.1:1")})
	dead.simPost(t, "/sim/faults", `{"path":"/cgi-bin/token","drop":true}`)
	collect(dead.get(t, "/cgi-bin/x"))
	collect(dead.get(t, "/mini/cgi-bin/x"))
	if !strings.Contains(dead.logs.String(), "token fetch failed") {
		t.Fatal("the fetch failure path was not exercised")
	}

	logs := e.logs.String() + dead.logs.String()
	secrets := append(append(e.liveTokens(), dead.liveTokens()...), mainSecret, miniSecret, agentA, agentB)
	for _, s := range secrets {
		if strings.Contains(logs, s) {
			t.Errorf("a log line holds a token or secret (%.6s…)", s)
		}
		if strings.Contains(out.String(), s) {
			t.Errorf("a response holds a token or secret (%.6s…)", s)
		}
	}
	if !strings.Contains(logs, "REDACTED") && !strings.Contains(logs, "token fetch failed") {
		t.Error("expected redacted fetch errors in the log")
	}
}

// TestDashboardMetricsExist: every metric the shipped Grafana dashboard
// queries is one wxproxy exports.
func TestDashboardMetricsExist(t *testing.T) {
	b, err := os.ReadFile("../configs/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash map[string]any
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("dashboard is not valid JSON: %v", err)
	}
	reg := prometheus.NewRegistry()
	e := newEnv(t, envOptions{registry: reg, breaker: &testBreaker, quotas: &ratelimit.Settings{APIs: map[string]ratelimit.Limit{"/cgi-bin/x": {PerDay: 1}}}})
	e.get(t, "/cgi-bin/x")
	e.get(t, "/cgi-bin/x")
	e.simPost(t, "/sim/faults", `{"path":"/cgi-bin/y","errcode":40003,"count":1}`)
	e.get(t, "/cgi-bin/y")
	e.sim.Invalidate(mainAppID)
	e.get(t, "/cgi-bin/y")
	e.metrics.StoreError("token_save") // the memory store never fails
	e.get(t, "/cgi-bin/ticket/getticket?type=jsapi")
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, mf := range mfs {
		have[mf.GetName()] = true
		if mf.GetType().String() == "HISTOGRAM" {
			have[mf.GetName()+"_bucket"] = true
		}
	}
	used := regexp.MustCompile(`wxproxy_[a-z_]+`).FindAllString(string(b), -1)
	if len(used) < 10 {
		t.Fatalf("dashboard references only %d metrics", len(used))
	}
	for _, name := range used {
		if !have[name] {
			t.Errorf("dashboard queries %s, which wxproxy does not export", name)
		}
	}
}
