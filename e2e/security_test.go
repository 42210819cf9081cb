package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/wxproxy/wxproxy/internal/redistest"
)

// rawDo sends req exactly as written to addr (host:port) and returns the
// status line's code and the whole answer.
func rawDo(tb testing.TB, addr, req string) (int, string) {
	tb.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	_, _ = io.WriteString(conn, req)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		tb.Fatalf("%q: %v", req, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// liveCredentials returns every token the simulator accepts now, and the
// app secret.
func (s *sim) liveCredentials(tb testing.TB) []string {
	tb.Helper()
	_, _, b := get(tb, s.url+"/sim/tokens")
	var toks map[string][]string
	if err := json.Unmarshal(b, &toks); err != nil {
		tb.Fatalf("sim tokens %s: %v", b, err)
	}
	out := []string{secret}
	for _, ts := range toks {
		out = append(out, ts...)
	}
	return out
}

// leakCheck collects everything a caller, an operator or a log reader can
// see, and fails on any live credential in it.
type leakCheck struct {
	mu   sync.Mutex
	seen strings.Builder
}

func (l *leakCheck) add(parts ...string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, p := range parts {
		l.seen.WriteString(p)
		l.seen.WriteByte('\n')
	}
}

func (l *leakCheck) do(tb testing.TB, method, url, body string, hdr ...string) (int, http.Header, []byte) {
	tb.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var h strings.Builder
	_ = resp.Header.Write(&h)
	l.add(h.String(), string(b))
	return resp.StatusCode, resp.Header, b
}

func (l *leakCheck) check(tb testing.TB, creds []string) {
	tb.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	text := l.seen.String()
	for _, c := range creds {
		if c != "" && strings.Contains(text, c) {
			i := strings.Index(text, c)
			tb.Errorf("credential %.6s… leaked: …%s…", c, text[max(0, i-120):min(len(text), i+len(c)+40)])
		}
	}
}

var ridRE = regexp.MustCompile(`rid: ([0-9a-f]+-[0-9a-f]{8}-[0-9a-f]{8})`)

// TestNoCredentialLeaves drives every path that can carry a credential —
// local answers, errors, retries, rid/get of business calls and of a
// failed token fetch, redirects, admin answers, debug logs, metrics — and
// finds no live token and no secret in anything seen.
func TestNoCredentialLeaves(t *testing.T) {
	s := startSim(t, "-app", appID+":"+secret)
	// wxproxy's first stable_token fetch fails; its errmsg names the rid,
	// and WeChat's rid/get would show that call's body: the AppSecret.
	s.post(t, "/sim/faults", `{"path":"/cgi-bin/stable_token","errcode":-1,"count":1}`)
	cfg := strings.Replace(proxyConfig(s.url, ""), "log: {format: json, level: info}", "log: {format: json, level: debug}", 1)
	cfg = strings.Replace(cfg, "admin: {listen: 127.0.0.1:0}", "admin: {listen: 127.0.0.1:0, token: \"${ADMIN_TOKEN}\"}", 1)
	p := startProxy(t, t.TempDir(), cfg, "E2E_SECRET="+secret, "ADMIN_TOKEN="+adminToken)
	waitFor(t, 15*time.Second, "readyz", func() bool { code, _, _ := get(t, p.admin+"/readyz"); return code == 200 })
	var l leakCheck

	// Local answers and SDK flows.
	l.do(t, "GET", p.url+"/cgi-bin/token?grant_type=client_credential&appid="+appID+"&secret=x", "")
	l.do(t, "POST", p.url+"/cgi-bin/stable_token", `{"grant_type":"client_credential","appid":"`+appID+`","secret":"x"}`)
	l.do(t, "GET", p.url+"/cgi-bin/gettoken?corpid=nope&corpsecret=x", "")
	l.do(t, "GET", p.url+"/sns/jscode2session?js_code=abc&grant_type=authorization_code", "")
	// A business call, then rid/get of it: request_url holds the token.
	_, _, b := l.do(t, "POST", p.url+"/cgi-bin/message/custom/send", `{"touser":"o"}`)
	var e struct {
		Rid string `json:"rid"`
	}
	if json.Unmarshal(b, &e); e.Rid == "" {
		t.Fatalf("no rid in the echo: %s", b)
	}
	code, _, b := l.do(t, "POST", p.url+"/cgi-bin/openapi/rid/get", `{"rid":"`+e.Rid+`"}`, "Accept-Encoding", "gzip")
	if code != 200 || !strings.Contains(string(b), "access_token=wxp.main.") {
		t.Errorf("rid/get of a business call: %d %s; want the token shown as a placeholder", code, b)
	}
	// rid/get of wxproxy's failed token fetch: request_body holds the secret.
	m := ridRE.FindStringSubmatch(p.output())
	if m == nil {
		t.Fatalf("no rid of the failed token fetch in the log:\n%s", p.output())
	}
	code, _, b = l.do(t, "POST", p.url+"/cgi-bin/openapi/rid/get", `{"rid":"`+m[1]+`"}`)
	if code != 200 || !strings.Contains(string(b), "***") {
		t.Errorf("rid/get of the token fetch: %d %s; want the secret shown as ***", code, b)
	}
	// Token errors and retries, upstream errors, an open breaker, quotas.
	s.post(t, "/sim/apps/"+appID+"/invalidate", "")
	l.do(t, "GET", p.url+"/cgi-bin/user/get", "")
	s.post(t, "/sim/faults", `{"path":"/cgi-bin/fail","status":502,"count":6}`)
	for range 6 {
		l.do(t, "GET", p.url+"/cgi-bin/fail?x=1", "")
	}
	s.post(t, "/sim/faults", `{"path":"/cgi-bin/moved","redirect":"http://127.0.0.1:1/elsewhere","count":1}`)
	l.do(t, "GET", p.url+"/cgi-bin/moved", "")
	l.do(t, "GET", p.url+"/cgi-bin/clear_quota", "")
	l.do(t, "GET", p.url+"/cgi-bin%2fx", "")
	// A caller who puts the secret into a path that wxproxy refuses: the
	// error is recorded for /admin/status, scrubbed.
	l.do(t, "GET", p.url+"/cgi-bin/"+secret, "", "X-WXProxy-App", "nope")
	// Admin answers and metrics.
	for _, path := range []string{"/readyz", "/metrics", "/admin/apps", "/admin/breakers", "/admin/quotas", "/admin/status"} {
		l.do(t, "GET", p.admin+path, "")
	}
	l.do(t, "POST", p.admin+"/admin/apps/main/refresh", "", "Authorization", "Bearer "+adminToken)
	l.add(p.output())
	l.check(t, s.liveCredentials(t))
}

// TestOddTargetsAndProxyEnv: a proxy in the environment never routes
// upstream traffic, and request targets that are not origin-form are
// refused before anything is forwarded.
func TestOddTargetsAndProxyEnv(t *testing.T) {
	var proxied atomic.Int64
	envProxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		proxied.Add(1)
		http.Error(w, "no", http.StatusBadGateway)
	}))
	defer envProxy.Close()
	s := startSim(t, "-app", appID+":"+secret)
	dir := t.TempDir()
	// The app's upstream is the simulator as 0.0.0.0:port: Go's
	// environment proxy rules exempt loopback names and addresses, but not
	// this one, which still reaches only this machine.
	cfg := strings.Replace(proxyConfig(s.url, ""), "upstream: "+s.url, "upstream: "+strings.Replace(s.url, "127.0.0.1", "0.0.0.0", 1), 1)
	p := startProxy(t, dir, cfg, "E2E_SECRET="+secret, "HTTP_PROXY="+envProxy.URL, "HTTPS_PROXY="+envProxy.URL, "http_proxy="+envProxy.URL, "NO_PROXY=", "no_proxy=")
	code, _, b := get(t, p.url+"/cgi-bin/user/get")
	if n := proxied.Load(); n != 0 || code != 200 {
		t.Errorf("the environment's proxy got %d requests (want 0); the call answered %d %s", n, code, b)
	}

	p2 := startProxy(t, t.TempDir(), proxyConfig(s.url, ""), "E2E_SECRET="+secret)
	waitFor(t, 15*time.Second, "readyz", func() bool { code, _, _ := get(t, p2.admin+"/readyz"); return code == 200 })
	addr := strings.TrimPrefix(p2.url, "http://")
	before := s.stats(t).APICalls
	for _, target := range []string{
		"GET a:http://evil.example/x", "GET http://evil.example/cgi-bin/clear_quota", "CONNECT evil.example:443",
		"OPTIONS *", "GET /cgi-bin%2Fclear_quota", "GET /../cgi-bin/x",
	} {
		if code, body := rawDo(t, addr, target+" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"); code != 400 {
			t.Errorf("%s: %d %s; want 400", target, code, body)
		}
	}
	for _, path := range []string{"/cgi-bin//clear_quota", "/cgi-bin/./clear_quota", "/cgi-bin/clear_quota/", "/CGI-BIN/CLEAR_QUOTA"} {
		if code, body := rawDo(t, addr, "POST "+path+" HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"); code != 403 {
			t.Errorf("%s: %d %s; want 403", path, code, body)
		}
	}
	after := s.stats(t).APICalls
	for k, v := range after {
		if v != before[k] {
			t.Errorf("WeChat saw %s for a refused request", k)
		}
	}
	// wxproxy's own answers are compact, without a trailing newline.
	_, _, b = get(t, p2.url+"/cgi-bin/token?grant_type=client_credential&appid="+appID+"&secret=x")
	if strings.HasSuffix(string(b), "\n") || strings.Contains(string(b), `": `) {
		t.Errorf("local token answer %q is not compact", b)
	}
}

// TestAdminPprofAndIdleTimeout: the profiler is off unless configured and
// then needs the bearer token; idle keep-alive connections are closed.
func TestAdminPprofAndIdleTimeout(t *testing.T) {
	s := startSim(t, "-app", appID+":"+secret)
	p := startProxy(t, t.TempDir(), proxyConfig(s.url, "idle_timeout: 1s"), "E2E_SECRET="+secret)
	if code, _, _ := get(t, p.admin+"/debug/pprof/"); code != 404 {
		t.Errorf("pprof without admin.pprof: %d, want 404", code)
	}
	cfg := strings.Replace(proxyConfig(s.url, ""), "admin: {listen: 127.0.0.1:0}", "admin: {listen: 127.0.0.1:0, pprof: true, token: \"${ADMIN_TOKEN}\"}", 1)
	p2 := startProxy(t, t.TempDir(), cfg, "E2E_SECRET="+secret, "ADMIN_TOKEN="+adminToken)
	if code, _ := authed(t, "GET", p2.admin+"/debug/pprof/", ""); code != 403 {
		t.Errorf("pprof without the token: %d, want 403", code)
	}
	if code, _ := authed(t, "GET", p2.admin+"/debug/pprof/", adminToken); code != 200 {
		t.Errorf("pprof with the token: %d, want 200", code)
	}

	conn, err := net.Dial("tcp", strings.TrimPrefix(p.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, _ = io.WriteString(conn, "GET /cgi-bin/user/get HTTP/1.1\r\nHost: x\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	if _, err := br.ReadByte(); err != io.EOF {
		t.Errorf("idle keep-alive connection: read %v; want EOF (closed after idle_timeout)", err)
	}
}

// TestReloadRaisesQuotaAtOnce: raising a per-minute limit on SIGHUP takes
// effect at once.
func TestReloadRaisesQuotaAtOnce(t *testing.T) {
	s := startSim(t, "-app", appID+":"+secret)
	dir := t.TempDir()
	quota := func(n int) string {
		return fmt.Sprintf("    quotas:\n      apis:\n        /cgi-bin/message/custom/send: {per_minute: %d, burst: %d}\n", n, n)
	}
	p := startProxy(t, dir, proxyConfig(s.url, "")+quota(10), "E2E_SECRET="+secret)
	send := func() int {
		code, _, _ := do(t, "POST", p.url+"/cgi-bin/message/custom/send", "{}")
		return code
	}
	for range 10 {
		send()
	}
	if code := send(); code != 429 {
		t.Fatalf("11th call: %d, want 429", code)
	}
	if err := writeFile(dir+"/wxproxy.yaml", proxyConfig(s.url, "")+quota(100)); err != nil {
		t.Fatal(err)
	}
	_ = p.cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, 10*time.Second, "reload", func() bool { return strings.Contains(p.output(), "configuration reloaded") })
	for i := range 30 {
		if code := send(); code != 200 {
			t.Fatalf("call %d after raising the limit to 100: %d", i, code)
		}
	}
}

// TestMemoryFlat: 20,000 distinct paths and 200 slow uploads grow neither
// wxproxy's heap nor, in Redis mode, the number of Redis keys.
func TestMemoryFlat(t *testing.T) {
	if testing.Short() {
		t.Skip("sends 40,000 requests")
	}
	s := startSim(t, "-app", appID+":"+secret)
	rs := redistest.Start(t)
	rdb := rs.Client(t)
	for _, mode := range []string{"memory", "redis"} {
		t.Run(mode, func(t *testing.T) {
			extra := "max_body_bytes: 10MiB\nbody_read_timeout: 60s"
			if mode == "redis" {
				extra += fmt.Sprintf("\nstore:\n  kind: redis\n  redis: {url: %q, key_prefix: \"mem:\"}", rs.URL)
			}
			// GOGC=25 keeps the heap in use close to what is live.
			p := startProxy(t, t.TempDir(), proxyConfig(s.url, extra)+
				"    quotas: {default: {per_minute: 100000, per_day: 10000000}}\n", "E2E_SECRET="+secret, "GOGC=25")
			waitFor(t, 15*time.Second, "readyz", func() bool { code, _, _ := get(t, p.admin+"/readyz"); return code == 200 })
			paths := func(n int) {
				var wg sync.WaitGroup
				next := atomic.Int64{}
				for range 16 {
					wg.Go(func() {
						for next.Add(1) <= int64(n) {
							resp, err := http.Get(p.url + "/cgi-bin/" + strconv.FormatUint(rand.Uint64(), 36) + "/x")
							if err == nil {
								_, _ = io.Copy(io.Discard, resp.Body)
								resp.Body.Close()
							}
						}
					})
				}
				wg.Wait()
			}
			paths(2000) // warm up
			heap0, rss0 := memOf(t, p)
			keys0 := rdb.DBSize(t.Context()).Val()
			paths(20000)
			heap1, rss1 := memOf(t, p)
			keys1 := rdb.DBSize(t.Context()).Val()
			t.Logf("%s: 20,000 distinct paths: heap %d → %d KiB, RSS %d → %d KiB, Redis keys %d → %d",
				mode, heap0>>10, heap1>>10, rss0>>10, rss1>>10, keys0, keys1)
			if heap1-heap0 > 16<<20 {
				t.Errorf("heap grew %d MiB with distinct paths", (heap1-heap0)>>20)
			}
			if keys1-keys0 > 20 {
				t.Errorf("Redis keys grew %d → %d with distinct paths", keys0, keys1)
			}

			// 200 uploads declare 2 MiB and send 10 bytes.
			addr := strings.TrimPrefix(p.url, "http://")
			var conns []net.Conn
			for range 200 {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					t.Fatal(err)
				}
				conns = append(conns, c)
				_, _ = io.WriteString(c, "POST /cgi-bin/x HTTP/1.1\r\nHost: x\r\nContent-Length: 2097152\r\n\r\n0123456789")
			}
			// Every upload has reached the handler once 200 first chunks
			// are buffered.
			waitFor(t, 15*time.Second, "200 uploads buffering", func() bool { return metric(t, p, "wxproxy_buffered_body_bytes") >= 200*4<<10 })
			heap2, rss2 := memOf(t, p)
			t.Logf("%s: 200 slow 2 MiB uploads: heap %d → %d KiB, RSS %d → %d KiB", mode, heap1>>10, heap2>>10, rss1>>10, rss2>>10)
			if heap2-heap1 > 32<<20 {
				t.Errorf("heap grew %d MiB for 200 uploads of 10 bytes", (heap2-heap1)>>20)
			}
			for _, c := range conns {
				c.Close()
			}
		})
	}
}

// metric reads one unlabelled metric of wxproxy; -1 if it is missing.
func metric(tb testing.TB, p *wxp, name string) int64 {
	tb.Helper()
	_, _, b := get(tb, p.admin+"/metrics")
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return int64(f)
		}
	}
	return -1
}

// memOf reads wxproxy's heap in use (from /metrics) and its RSS.
func memOf(tb testing.TB, p *wxp) (heap, rss int64) {
	tb.Helper()
	heap = metric(tb, p, "go_memstats_heap_inuse_bytes")
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err == nil {
		for line := range strings.SplitSeq(string(st), "\n") {
			if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
				kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
				rss = kb << 10
			}
		}
	}
	return heap, rss
}
