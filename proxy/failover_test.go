package proxy_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/wxproxy/wxproxy/failover"
	"github.com/wxproxy/wxproxy/proxy"
	"github.com/wxproxy/wxproxy/token"
	"github.com/wxproxy/wxproxy/wechatsim"
)

// foEnv is a proxy whose one app has failover upstreams: any of a dead
// port and listeners of one simulator.
type foEnv struct {
	sim     *wechatsim.Server
	url     string
	set     *failover.Set
	breaker *proxy.Breaker
	reg     *prometheus.Registry
	now     atomic.Int64 // the failover clock, unix nanoseconds
	ups     []string
}

// deadURL returns the URL of a loopback port nobody listens on.
func deadURL(tb testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "http://" + addr
}

// newFoEnv starts the simulator's listeners and a proxy; ups lists the
// upstreams in order: "dead" or a listener index ("0", "1").
func newFoEnv(tb testing.TB, ups ...string) *foEnv {
	tb.Helper()
	return newFoEnvTimeout(tb, 0, ups...)
}

// newFoEnvTimeout is newFoEnv with the upstream timeout given (0 = the
// default).
func newFoEnvTimeout(tb testing.TB, timeout time.Duration, ups ...string) *foEnv {
	tb.Helper()
	sim, err := wechatsim.New(wechatsim.Options{Apps: []wechatsim.App{{AppID: mainAppID, Secret: mainSecret}}})
	if err != nil {
		tb.Fatal(err)
	}
	e := &foEnv{sim: sim, reg: prometheus.NewRegistry()}
	e.now.Store(time.Now().UnixNano())
	for _, u := range ups {
		if u == "dead" {
			e.ups = append(e.ups, deadURL(tb))
			continue
		}
		var n int
		fmt.Sscan(u, &n)
		srv := httptest.NewServer(sim.Listener(n))
		tb.Cleanup(srv.Close)
		e.ups = append(e.ups, srv.URL)
	}
	e.set, err = failover.New(failover.Options{URLs: e.ups, Settings: failover.Settings{Failures: 3, OpenTimeout: time.Minute},
		Now: func() time.Time { return time.Unix(0, e.now.Load()) }})
	if err != nil {
		tb.Fatal(err)
	}
	metrics := proxy.NewMetrics(e.reg)
	transport, err := proxy.NewTransport(proxy.TransportOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	cache, err := token.New(token.Options{App: "main", Mode: token.Stable, OnInstall: func(string) {},
		Fetcher: &token.HTTPFetcher{Mode: token.Stable, AppID: mainAppID, Secret: mainSecret,
			Client: &http.Client{Transport: transport}, Failover: e.set,
			OnFailover: func(from, to string) { metrics.Failover("main", from, to) }}})
	if err != nil {
		tb.Fatal(err)
	}
	e.breaker = proxy.NewBreaker("main", proxy.BreakerSettings{ConsecutiveFailures: 3, FailureRatio: 1, MinRequests: 1000, OpenTimeout: time.Minute, HalfOpenRequests: 1}, nil)
	primary, _ := url.Parse(e.ups[0])
	p, err := proxy.New(proxy.Options{Apps: []*proxy.App{{Name: "main", Kind: proxy.KindOfficial, AppID: mainAppID, Secret: mainSecret,
		Upstream: primary, Upstreams: e.set, Tokens: cache, Breaker: e.breaker}}, DefaultApp: "main", Metrics: metrics, Registry: e.reg,
		UpstreamTimeout: timeout})
	if err != nil {
		tb.Fatal(err)
	}
	e.url = serve(tb, p)
	return e
}

func (e *foEnv) advance(d time.Duration) { e.now.Add(int64(d)) }

// post sends a business call and returns the HTTP status and errcode.
func (e *foEnv) post(tb testing.TB, id string) (int, int) {
	tb.Helper()
	req, _ := http.NewRequest("POST", e.url+"/cgi-bin/message/custom/send", strings.NewReader(`{"touser":"x"}`))
	req.Header.Set("X-Request-Id", id)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var a struct {
		ErrCode int `json:"errcode"`
	}
	_ = json.Unmarshal(b, &a)
	return resp.StatusCode, a.ErrCode
}

func (e *foEnv) states() string {
	var out []string
	for _, s := range e.set.States() {
		out = append(out, s.State)
	}
	return strings.Join(out, ",")
}

// TestFailoverConnect: the primary refuses connections, so every request
// (a POST) and the token fetch go at once to the next upstream; after
// breaker.consecutive_failures connect failures the primary is down and
// no longer tried.
func TestFailoverConnect(t *testing.T) {
	e := newFoEnv(t, "dead", "0")
	for i := range 5 {
		if code, errcode := e.post(t, fmt.Sprint("c", i)); code != 200 || errcode != 0 {
			t.Fatalf("request %d: HTTP %d errcode %d, want 200/0 through the failover upstream", i, code, errcode)
		}
	}
	if got := e.states(); got != "down,up" {
		t.Errorf("upstream states = %s, want down,up", got)
	}
	if st := e.breaker.State().State; st != "closed" {
		t.Errorf("app breaker %s, want closed while an upstream is up", st)
	}
	// The token fetch plus three requests failed over; later ones skip
	// the down primary and count as failovers too.
	if n := testutil.ToFloat64(failovers(t, e.reg, e.ups[0], e.ups[1])); n < 5 {
		t.Errorf("wxproxy_failovers_total = %v, want >= 5", n)
	}
	if got := gauge(t, e.reg, "wxproxy_upstream_up", e.ups[0]); got != 0 {
		t.Errorf("wxproxy_upstream_up{primary} = %v, want 0", got)
	}
	if got := gauge(t, e.reg, "wxproxy_upstream_up", e.ups[1]); got != 1 {
		t.Errorf("wxproxy_upstream_up{failover} = %v, want 1", got)
	}
}

// TestFailoverNeverResends: answers that may come from WeChat (HTTP 502
// here) go back to the caller and are never sent to another upstream;
// after the failure count the primary is down and requests go to the
// second listener; after open_timeout one probe brings the primary back.
func TestFailoverNeverResends(t *testing.T) {
	e := newFoEnv(t, "0", "1")
	if err := e.sim.AddFault(wechatsim.Fault{Path: "/cgi-bin/message/custom/send", Status: 502, Listener: new(0)}); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if code, _ := e.post(t, fmt.Sprint("a", i)); code != 502 {
			t.Fatalf("request %d: HTTP %d, want WeChat's 502 passed back (not resent)", i, code)
		}
	}
	if got := e.states(); got != "down,up" {
		t.Fatalf("after 3 failures: %s, want down,up", got)
	}
	if code, errcode := e.post(t, "b"); code != 200 || errcode != 0 {
		t.Fatalf("after failover: HTTP %d errcode %d", code, errcode)
	}
	calls := e.sim.Stats().APICalls["/cgi-bin/message/custom/send"]
	if calls != 4 {
		t.Errorf("simulator saw %d calls, want 4 (each request sent once)", calls)
	}
	// Recovery: the fault is gone, and after open_timeout a probe goes to
	// the primary.
	e.sim.ClearFaults()
	e.advance(time.Minute)
	if got := e.states(); got != "probing,up" {
		t.Errorf("after open_timeout: %s, want probing,up", got)
	}
	if code, _ := e.post(t, "c"); code != 200 {
		t.Fatalf("probe: HTTP %d", code)
	}
	if got := e.states(); got != "up,up" {
		t.Errorf("after a good probe: %s, want up,up", got)
	}
	if d := e.sim.Stats().DuplicateRequestIDs; len(d) != 0 {
		t.Errorf("duplicate_request_ids = %v", d)
	}
}

// TestFailoverTimeoutAndDropNotResent: a POST that reached WeChat and got
// no answer — it timed out, or the connection was closed on it — is
// answered with wxproxy's error and never sent to the next upstream, though
// that one is up; the failures count towards marking the primary down.
func TestFailoverTimeoutAndDropNotResent(t *testing.T) {
	e := newFoEnvTimeout(t, 500*time.Millisecond, "0", "1")
	calls := func() int64 { return e.sim.Stats().APICalls["/cgi-bin/message/custom/send"] }
	if err := e.sim.AddFault(wechatsim.Fault{Path: "/cgi-bin/message/custom/send", Latency: 1500 * time.Millisecond, Count: 1, Listener: new(0)}); err != nil {
		t.Fatal(err)
	}
	if code, _ := e.post(t, "slow"); code != 504 {
		t.Errorf("timed out on the primary: HTTP %d, want 504", code)
	}
	if n := calls(); n != 1 {
		t.Errorf("after a timeout the simulator saw %d calls, want 1 (not resent)", n)
	}
	if err := e.sim.AddFault(wechatsim.Fault{Path: "/cgi-bin/message/custom/send", Drop: true, Count: 1, Listener: new(0)}); err != nil {
		t.Fatal(err)
	}
	if code, _ := e.post(t, "dropped"); code != 502 {
		t.Errorf("connection closed by the primary: HTTP %d, want 502", code)
	}
	if n := calls(); n != 2 {
		t.Errorf("after a dropped connection the simulator saw %d calls, want 2 (not resent)", n)
	}
	if err := e.sim.AddFault(wechatsim.Fault{Path: "/cgi-bin/message/custom/send", Drop: true, Count: 1, Listener: new(0)}); err != nil {
		t.Fatal(err)
	}
	e.post(t, "dropped-again")
	if got := e.states(); got != "down,up" {
		t.Errorf("after 3 failures (timeout, drop, drop): %s, want down,up", got)
	}
	if code, errcode := e.post(t, "after"); code != 200 || errcode != 0 || calls() != 4 {
		t.Errorf("next request: HTTP %d errcode %d, %d calls; want 200 on the failover, 4 calls", code, errcode, calls())
	}
}

// TestFailoverAllDown: the app's breaker opens only once every upstream is
// down.
func TestFailoverAllDown(t *testing.T) {
	e := newFoEnv(t, "0", "1")
	if err := e.sim.AddFault(wechatsim.Fault{Path: "/cgi-bin/message/custom/send", Errcode: -1}); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		e.post(t, fmt.Sprint("x", i))
	}
	if st := e.breaker.State().State; st != "closed" {
		t.Fatalf("breaker %s with one upstream up, want closed", st)
	}
	for i := range 3 {
		e.post(t, fmt.Sprint("y", i))
	}
	if got := e.states(); got != "down,down" {
		t.Fatalf("states %s, want down,down", got)
	}
	// Every upstream down: requests are refused locally and count, so the
	// app's breaker opens.
	for i := range 3 {
		if code, _ := e.post(t, fmt.Sprint("z", i)); code != 503 {
			t.Errorf("all down: HTTP %d, want 503", code)
		}
	}
	if st := e.breaker.State().State; st != "open" {
		t.Errorf("breaker %s with every upstream down, want open", st)
	}
}

// TestFailoverUnderLoad: concurrent POSTs while the first upstream refuses
// connections and the second fails at random; no request reaches WeChat
// twice, and every answer is WeChat's own or a clean wxproxy error.
func TestFailoverUnderLoad(t *testing.T) {
	e := newFoEnv(t, "dead", "0", "1")
	if err := e.sim.AddFault(wechatsim.Fault{Path: "/cgi-bin/message/custom/send", Status: 503, Probability: 0.4, Listener: new(0)}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var ok, failed atomic.Int64
	for w := range 8 {
		wg.Go(func() {
			for i := range 40 {
				code, _ := e.post(t, fmt.Sprintf("load-%d-%d", w, i))
				switch code {
				case 200:
					ok.Add(1)
				case 502, 503:
					failed.Add(1)
				default:
					t.Errorf("HTTP %d", code)
				}
			}
		})
	}
	wg.Wait()
	st := e.sim.Stats()
	if len(st.DuplicateRequestIDs) != 0 {
		t.Errorf("duplicate_request_ids = %v, want none", st.DuplicateRequestIDs)
	}
	if got := st.APICalls["/cgi-bin/message/custom/send"]; got > 320 {
		t.Errorf("simulator saw %d calls for 320 requests", got)
	}
	if ok.Load() < 200 {
		t.Errorf("%d of 320 succeeded (%d failed); failover should carry most", ok.Load(), failed.Load())
	}
}

func failovers(tb testing.TB, reg *prometheus.Registry, from, to string) prometheus.Collector {
	tb.Helper()
	return gatherOne(tb, reg, "wxproxy_failovers_total", map[string]string{"app": "main", "from": from, "to": to})
}

func gauge(tb testing.TB, reg *prometheus.Registry, name, upstream string) float64 {
	tb.Helper()
	return testutil.ToFloat64(gatherOne(tb, reg, name, map[string]string{"app": "main", "upstream": upstream}))
}

// gatherOne finds one sample of reg by name and labels, as a collector
// testutil can read.
func gatherOne(tb testing.TB, reg *prometheus.Registry, name string, labels map[string]string) prometheus.Collector {
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
			v := m.GetCounter().GetValue() + m.GetGauge().GetValue()
			return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "x"}, func() float64 { return v })
		}
	}
	var buf bytes.Buffer
	fmt.Fprintf(&buf, "no %s%v", name, labels)
	tb.Fatal(buf.String())
	return nil
}
