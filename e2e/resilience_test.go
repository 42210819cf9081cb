package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wxproxy/wxproxy/internal/testpki"
)

const (
	resAppID  = "wx7777777777777777"
	resSecret = "resilience-secret-0123456789abcd"
)

// startSimListeners runs one wechatsim on n loopback listeners and returns
// their URLs, in order (listener 0 first).
func startSimListeners(tb testing.TB, n int, args ...string) (*proc, []string) {
	tb.Helper()
	build(tb)
	var urls []string
	var listen []string
	for range n {
		listen = append(listen, "-listen", "127.0.0.1:0")
	}
	p := start(tb, bins.wechatsi, append(listen, args...), nil, func(line string) bool {
		if _, after, ok := strings.Cut(line, "wechatsim listening on "); ok {
			urls = append(urls, strings.TrimSpace(after))
		}
		return len(urls) == n
	})
	return p, urls
}

// deadURL is the URL of a loopback port nobody listens on.
func deadURL(tb testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	return "http://" + ln.Addr().String()
}

func postJSON(tb testing.TB, client *http.Client, url, body string, hdr ...string) (int, http.Header, []byte) {
	tb.Helper()
	req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		tb.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := client.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

// upstreamStates reads /admin/apps: the app's breaker and its upstreams'
// states, in order.
func upstreamStates(tb testing.TB, admin string) (breaker string, states []string) {
	tb.Helper()
	_, _, b := get(tb, admin+"/admin/apps")
	var apps []struct {
		Breaker   string `json:"breaker"`
		Upstreams []struct {
			URL   string `json:"url"`
			State string `json:"state"`
		} `json:"upstreams"`
	}
	if err := json.Unmarshal(b, &apps); err != nil || len(apps) != 1 {
		tb.Fatalf("/admin/apps: %s", b)
	}
	for _, u := range apps[0].Upstreams {
		states = append(states, u.State)
	}
	return apps[0].Breaker, states
}

// TestFailoverE2E: one simulator on two listeners (shared state) behind a
// primary that refuses connections. Requests of any method, the token
// fetch and the ticket fetch fail over at once; a fault on listener 0
// moves traffic to listener 1 without sending any request twice under
// load; /admin/apps and the metrics show it.
func TestFailoverE2E(t *testing.T) {
	p, sims := startSimListeners(t, 2, "-app", resAppID+":"+resSecret)
	s := &sim{proc: p, url: sims[0]}
	dead := deadURL(t)
	cfg := fmt.Sprintf(`
listen: 127.0.0.1:0
admin: {listen: 127.0.0.1:0}
apps:
  - name: main
    appid: %s
    secret: %s
    upstream: %s
    failover: [%s, %s]
    tickets: [jsapi]
    breaker: {consecutive_failures: 5, open_timeout: 1h}
`, resAppID, resSecret, dead, sims[0], sims[1])
	w := startProxy(t, t.TempDir(), cfg)
	methods := []string{http.MethodPost, http.MethodGet, http.MethodPut, http.MethodPost, http.MethodGet, http.MethodDelete}
	for i, m := range methods {
		code, _, b := do(t, m, w.url+"/cgi-bin/message/custom/send?n="+fmt.Sprint(i), "{}")
		if code != 200 || !strings.Contains(string(b), `"errcode":0`) {
			t.Fatalf("%s through failover: %d %s", m, code, b)
		}
	}
	// The ticket was fetched through the failover list too.
	code, _, b := get(t, w.url+"/cgi-bin/ticket/getticket?type=jsapi")
	if code != 200 || !strings.Contains(string(b), `"ticket":"`) {
		t.Fatalf("getticket through failover: %d %s", code, b)
	}
	if st := s.stats(t); st.TokenFetches[resAppID]["stable"] != 1 || st.APICalls["/cgi-bin/ticket/getticket"] != 1 {
		t.Errorf("token fetches %v, ticket fetches %d; want one of each, through the failover list", st.TokenFetches, st.APICalls["/cgi-bin/ticket/getticket"])
	}
	if _, states := upstreamStates(t, w.admin); strings.Join(states, ",") != "down,up,up" {
		t.Errorf("after %d requests on a refusing primary: %v, want down,up,up", len(methods), states)
	}

	// listener 0 now fails with 502; listener 1 is healthy.
	simPost(t, sims[0], "/sim/faults", `{"path":"/cgi-bin/message/custom/send","status":502,"listener":0}`)
	var wg sync.WaitGroup
	var mu sync.Mutex
	codes := map[int]int{}
	for g := range 6 {
		wg.Go(func() {
			for i := range 30 {
				code, _, _ := postJSON(t, http.DefaultClient, w.url+"/cgi-bin/message/custom/send", "{}", "X-Request-Id", fmt.Sprintf("load-%d-%d", g, i))
				mu.Lock()
				codes[code]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	// Listener 0 is down after 5 failures; requests in flight then may
	// add one each. Every 502 is WeChat's answer passed back, never sent
	// again: the simulator saw exactly one call per request.
	if codes[502] < 5 || codes[502] > 5+6 || codes[200] != 180-codes[502] || len(codes) > 2 {
		t.Errorf("answers %v: want 5 to 11 502s from WeChat (never resent) and the rest 200 from listener 1", codes)
	}
	st := s.stats(t)
	if n := st.APICalls["/cgi-bin/message/custom/send"]; n != int64(len(methods))+180 {
		t.Errorf("the simulator saw %d calls for %d requests: a request was sent twice", n, len(methods)+180)
	}
	if len(st.Duplicates) != 0 {
		t.Errorf("duplicate_request_ids = %v", st.Duplicates)
	}
	breaker, states := upstreamStates(t, w.admin)
	if got := strings.Join(states, ","); got != "down,down,up" || breaker != "closed" {
		t.Errorf("upstreams %s breaker %s, want down,down,up and closed", got, breaker)
	}
	_, _, m := get(t, w.admin+"/metrics")
	for _, want := range []string{
		fmt.Sprintf(`wxproxy_upstream_up{app="main",upstream=%q} 0`, dead),
		fmt.Sprintf(`wxproxy_upstream_up{app="main",upstream=%q} 0`, sims[0]),
		fmt.Sprintf(`wxproxy_upstream_up{app="main",upstream=%q} 1`, sims[1]),
		fmt.Sprintf(`wxproxy_failovers_total{app="main",from=%q,to=%q}`, dead, sims[0]),
		// Later requests skip both down upstreams: counted from the
		// primary they would have used.
		fmt.Sprintf(`wxproxy_failovers_total{app="main",from=%q,to=%q}`, dead, sims[1]),
	} {
		if !strings.Contains(string(m), want) {
			t.Errorf("metrics lack %s:\n%s", want, grepLines(string(m), "wxproxy_failovers_total", "wxproxy_upstream_up"))
		}
	}
}

// TestFailoverProbeE2E: an upstream marked down after
// breaker.consecutive_failures failures is probed again after
// open_timeout, and a good probe brings it back; the app's breaker opens
// only once every upstream is down.
func TestFailoverProbeE2E(t *testing.T) {
	p, sims := startSimListeners(t, 2, "-app", resAppID+":"+resSecret)
	s := &sim{proc: p, url: sims[0]}
	w := startProxy(t, t.TempDir(), fmt.Sprintf(`
listen: 127.0.0.1:0
admin: {listen: 127.0.0.1:0}
apps:
  - name: main
    appid: %s
    secret: %s
    upstream: %s
    failover: [%s]
    breaker: {consecutive_failures: 2, open_timeout: 2s}
`, resAppID, resSecret, sims[0], sims[1]))
	send := w.url + "/cgi-bin/message/custom/send"
	simPost(t, sims[0], "/sim/faults", `{"path":"/cgi-bin/message/custom/send","status":502,"listener":0}`)
	for i := range 2 {
		if code, _, b := postJSON(t, http.DefaultClient, send, "{}"); code != 502 {
			t.Fatalf("request %d on the failing primary: %d %s, want WeChat's 502 passed back", i, code, b)
		}
	}
	if _, states := upstreamStates(t, w.admin); states[0] == "up" || states[1] != "up" {
		t.Fatalf("after 2 failures: %v, want the primary down", states)
	}
	if code, _, b := postJSON(t, http.DefaultClient, send, "{}"); code != 200 {
		t.Fatalf("with the primary down: %d %s, want 200 from the failover", code, b)
	}
	if n := s.stats(t).APICalls["/cgi-bin/message/custom/send"]; n != 3 {
		t.Errorf("the simulator saw %d calls for 3 requests", n)
	}
	// The primary heals and the failover breaks: only a probe of the
	// primary can answer 200 now.
	if code, _, b := do(t, http.MethodDelete, sims[0]+"/sim/faults", ""); code != 200 {
		t.Fatalf("DELETE /sim/faults: %d %s", code, b)
	}
	simPost(t, sims[0], "/sim/faults", `{"path":"/cgi-bin/message/custom/send","status":502,"listener":1}`)
	waitFor(t, 15*time.Second, "the primary due for a probe after open_timeout", func() bool {
		_, states := upstreamStates(t, w.admin)
		return states[0] == "probing"
	})
	if code, _, b := postJSON(t, http.DefaultClient, send, "{}"); code != 200 {
		t.Fatalf("the probe: %d %s, want 200 from the healed primary", code, b)
	}
	if _, states := upstreamStates(t, w.admin); states[0] != "up" {
		t.Errorf("after a good probe: %v, want the primary up", states)
	}
	_, _, m := get(t, w.admin+"/metrics")
	if want := fmt.Sprintf(`wxproxy_upstream_up{app="main",upstream=%q} 1`, sims[0]); !strings.Contains(string(m), want) {
		t.Errorf("metrics lack %s", want)
	}

	// Both fail (errcode -1): the breaker stays closed while one is up,
	// and opens once both are down.
	if code, _, b := do(t, http.MethodDelete, sims[0]+"/sim/faults", ""); code != 200 {
		t.Fatalf("DELETE /sim/faults: %d %s", code, b)
	}
	simPost(t, sims[0], "/sim/faults", `{"path":"/cgi-bin/message/custom/send","errcode":-1}`)
	for range 2 {
		postJSON(t, http.DefaultClient, send, "{}")
	}
	if breaker, states := upstreamStates(t, w.admin); breaker != "closed" || states[0] == "up" || states[1] != "up" {
		t.Fatalf("one upstream down: breaker %s, upstreams %v; want closed with the failover up", breaker, states)
	}
	for range 2 {
		postJSON(t, http.DefaultClient, send, "{}")
	}
	waitFor(t, 10*time.Second, "the app's breaker open with every upstream down", func() bool {
		postJSON(t, http.DefaultClient, send, "{}")
		breaker, states := upstreamStates(t, w.admin)
		return breaker == "open" && states[0] != "up" && states[1] != "up"
	})
}

func simPost(tb testing.TB, base, path, body string) {
	tb.Helper()
	if code, _, b := do(tb, http.MethodPost, base+path, body); code != 200 {
		tb.Fatalf("POST %s: %d %s", path, code, b)
	}
}

// forwardProxy is an HTTP forward proxy on loopback, run by the test:
// CONNECT tunnels (https upstreams) and absolute-form requests (http ones),
// recording what it was asked for and the local address of every tunnel it
// dialled.
type forwardProxy struct {
	*httptest.Server
	mu       sync.Mutex
	connects []string        // CONNECT authorities
	plain    []string        // "METHOD path" of absolute-form requests
	tunnels  map[string]bool // local addresses of the tunnels' upstream connections
}

func startForwardProxy(tb testing.TB) *forwardProxy {
	tb.Helper()
	fp := &forwardProxy{tunnels: map[string]bool{}}
	fp.Server = httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodConnect {
			if host, _, _ := net.SplitHostPort(r.Host); host != "127.0.0.1" {
				http.Error(rw, "loopback only", http.StatusForbidden)
				return
			}
			up, err := net.Dial("tcp", r.Host)
			if err != nil {
				http.Error(rw, "dial failed", http.StatusBadGateway)
				return
			}
			fp.mu.Lock()
			fp.connects = append(fp.connects, r.Host)
			fp.tunnels[up.LocalAddr().String()] = true
			fp.mu.Unlock()
			conn, brw, err := http.NewResponseController(rw).Hijack()
			if err != nil {
				up.Close()
				return
			}
			_, _ = conn.Write([]byte("HTTP/1.1 200 Connection established\r\n\r\n"))
			go func() { _, _ = io.Copy(up, brw); up.Close() }()
			_, _ = io.Copy(conn, up)
			conn.Close()
			return
		}
		fp.mu.Lock()
		fp.plain = append(fp.plain, r.Method+" "+r.URL.Path)
		fp.mu.Unlock()
		if host, _, _ := net.SplitHostPort(r.URL.Host); r.URL.Scheme != "http" || host != "127.0.0.1" {
			http.Error(rw, "loopback only", http.StatusForbidden)
			return
		}
		out, _ := http.NewRequestWithContext(r.Context(), r.Method, r.URL.String(), r.Body)
		out.Header = r.Header.Clone()
		resp, err := http.DefaultTransport.RoundTrip(out)
		if err != nil {
			rw.WriteHeader(http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		for k, v := range resp.Header {
			rw.Header()[k] = v
		}
		rw.WriteHeader(resp.StatusCode)
		_, _ = io.Copy(rw, resp.Body)
	}))
	tb.Cleanup(fp.Close)
	return fp
}

func (fp *forwardProxy) seen() (connects, plain []string) {
	fp.mu.Lock()
	defer fp.mu.Unlock()
	return slices.Clone(fp.connects), slices.Clone(fp.plain)
}

func (fp *forwardProxy) tunnelled(addr string) bool {
	fp.mu.Lock()
	defer fp.mu.Unlock()
	return fp.tunnels[addr]
}

// TestEgressProxyE2E: with upstream_proxy and an http upstream, the token
// fetch and every request leave through the proxy (absolute-form); the
// proxy environment variables are not used.
func TestEgressProxyE2E(t *testing.T) {
	s := startSim(t, "-app", resAppID+":"+resSecret)
	fp := startForwardProxy(t)
	w := startProxy(t, t.TempDir(), fmt.Sprintf(`
listen: 127.0.0.1:0
admin: {listen: 127.0.0.1:0}
upstream_proxy: %s
apps: [{name: main, appid: %s, secret: %s, upstream: %s}]
`, fp.URL, resAppID, resSecret, s.url), "HTTP_PROXY=http://127.0.0.1:1", "HTTPS_PROXY=http://127.0.0.1:1")
	if code, _, b := postJSON(t, http.DefaultClient, w.url+"/cgi-bin/message/custom/send", "{}"); code != 200 {
		t.Fatalf("through upstream_proxy: %d %s", code, b)
	}
	_, plain := fp.seen()
	got := strings.Join(plain, "; ")
	if !strings.Contains(got, "POST /cgi-bin/stable_token") || !strings.Contains(got, "POST /cgi-bin/message/custom/send") {
		t.Errorf("the proxy saw %q; want the token fetch and the request", got)
	}
	st := s.stats(t)
	if st.APICalls["/cgi-bin/message/custom/send"] != 1 {
		t.Errorf("simulator calls %v", st.APICalls)
	}
}

// TestEgressProxyCONNECTE2E: an https upstream (the simulator behind a
// TLS front whose certificate the test CA signed, trusted through
// SSL_CERT_FILE) reached through upstream_proxy: the token fetch and the
// data plane both tunnel with CONNECT, the proxy sees no plain request,
// and every connection the upstream accepted is one of the proxy's
// tunnels — nothing left wxproxy any other way, whatever HTTP(S)_PROXY say.
func TestEgressProxyCONNECTE2E(t *testing.T) {
	s := startSim(t, "-app", resAppID+":"+resSecret)
	ts := newTLSSetup(t)
	simURL, _ := url.Parse(s.url)
	var mu sync.Mutex
	var accepted []string // remote addresses of the upstream's connections
	front := httptest.NewUnstartedServer(httputil.NewSingleHostReverseProxy(simURL))
	front.TLS = &tls.Config{Certificates: []tls.Certificate{ts.ca.Server(t).TLS}, MinVersion: tls.VersionTLS12}
	front.Config.ConnState = func(c net.Conn, st http.ConnState) {
		if st == http.StateNew {
			mu.Lock()
			accepted = append(accepted, c.RemoteAddr().String())
			mu.Unlock()
		}
	}
	front.StartTLS()
	defer front.Close()
	fp := startForwardProxy(t)
	w := startProxy(t, t.TempDir(), fmt.Sprintf(`
listen: 127.0.0.1:0
admin: {listen: 127.0.0.1:0}
upstream_proxy: %s
apps: [{name: main, appid: %s, secret: %s, upstream: %s}]
`, fp.URL, resAppID, resSecret, front.URL),
		"SSL_CERT_FILE="+ts.caFile, "HTTP_PROXY=http://127.0.0.1:1", "HTTPS_PROXY=http://127.0.0.1:1")
	for i := range 3 {
		code, _, b := postJSON(t, http.DefaultClient, w.url+"/cgi-bin/message/custom/send", "{}", "X-Request-Id", fmt.Sprint("egress-", i))
		if code != 200 || !strings.Contains(string(b), `"errcode":0`) {
			t.Fatalf("https upstream through upstream_proxy: %d %s", code, b)
		}
	}
	connects, plain := fp.seen()
	want := strings.TrimPrefix(front.URL, "https://")
	if len(connects) < 2 || len(plain) != 0 {
		t.Errorf("the proxy saw CONNECT %v and plain %v; want tunnels for the token fetch and the data plane, nothing plain", connects, plain)
	}
	for _, c := range connects {
		if c != want {
			t.Errorf("CONNECT %s, want only %s", c, want)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(accepted) == 0 {
		t.Fatal("the upstream accepted no connection")
	}
	for _, a := range accepted {
		if !fp.tunnelled(a) {
			t.Errorf("the upstream accepted a connection from %s, not one of the proxy's tunnels: something bypassed upstream_proxy", a)
		}
	}
	if st := s.stats(t); st.APICalls["/cgi-bin/message/custom/send"] != 3 || st.TokenFetches[resAppID]["stable"] != 1 {
		t.Errorf("simulator saw %v and token fetches %v", st.APICalls, st.TokenFetches)
	}
}

// tlsSetup writes a CA, a server certificate and the client CA into dir.
type tlsSetup struct {
	ca                *testpki.CA
	dir               string
	certFile, keyFile string
	caFile            string
}

func newTLSSetup(tb testing.TB) *tlsSetup {
	tb.Helper()
	s := &tlsSetup{ca: testpki.NewCA(tb, "wxproxy test CA"), dir: tb.TempDir()}
	s.certFile, s.keyFile = s.ca.Server(tb).Write(tb, s.dir, "tls")
	s.caFile = filepath.Join(s.dir, "ca.pem")
	if err := os.WriteFile(s.caFile, s.ca.PEM, 0o600); err != nil {
		tb.Fatal(err)
	}
	return s
}

// client returns an HTTPS client trusting the test CA, presenting a client
// certificate with CN cn (none when cn is ""), one connection at a time.
func (s *tlsSetup) client(tb testing.TB, cn string) *http.Client {
	cfg := &tls.Config{RootCAs: s.ca.Pool(), MinVersion: tls.VersionTLS12}
	if cn != "" {
		cfg.Certificates = []tls.Certificate{s.ca.Client(tb, cn).TLS}
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg, MaxConnsPerHost: 1, ForceAttemptHTTP2: false}, Timeout: 10 * time.Second}
}

// TestCallerTLSE2E: the caller port over TLS with client certificates as
// caller identity and per-key API allowlists; the certificate is rotated on
// file change and on reload without dropping an open connection.
func TestCallerTLSE2E(t *testing.T) {
	s := startSim(t, "-app", resAppID+":"+resSecret)
	ts := newTLSSetup(t)
	w := startProxy(t, ts.dir, fmt.Sprintf(`
listen: 127.0.0.1:0
admin: {listen: 127.0.0.1:0, token: admin-token-for-tests}
tls: {cert_file: tls.crt, key_file: tls.key, client_ca_file: ca.pem}
callers:
  keys:
    - {name: billing, cert_cn: billing-svc, apis: ["/cgi-bin/message/**", /cgi-bin/token]}
    - {name: ops, key: ops-key-0123456789}
apps: [{name: main, appid: %s, secret: %s, upstream: %s}]
`, resAppID, resSecret, s.url))
	base := strings.Replace(w.url, "http://", "https://", 1)
	billing := ts.client(t, "billing-svc")
	send := base + "/cgi-bin/message/custom/send"
	if code, _, b := postJSON(t, billing, send, "{}"); code != 200 {
		t.Fatalf("billing by certificate: %d %s", code, b)
	}
	for _, path := range []string{"/cgi-bin/user/get", "/cgi-bin/message/../user/get", "/cgi-bin/message/%2e%2e/user/get", "//cgi-bin/message/./..//user/get"} {
		if code, h, _ := postJSON(t, billing, base+path, "{}"); code != 403 || h.Get("X-WXProxy-Error") != "forbidden" {
			t.Errorf("billing outside its apis (%s): %d %q, want 403 forbidden", path, code, h.Get("X-WXProxy-Error"))
		}
	}
	if n := s.stats(t).APICalls["/cgi-bin/user/get"]; n != 0 {
		t.Errorf("WeChat saw /cgi-bin/user/get %d times from a key not allowed to call it", n)
	}
	resp, err := billing.Get(base + "/CGI-BIN/token?grant_type=client_credential&appid=" + resAppID + "&secret=x")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"access_token":"wxp.main.`) {
		t.Errorf("token endpoint on the allowlist: %d %s", resp.StatusCode, b)
	}
	stranger := ts.client(t, "stranger")
	if code, _, _ := postJSON(t, stranger, send, "{}"); code != 403 {
		t.Errorf("unknown certificate CN without a key: %d, want 403", code)
	}
	if code, _, b := postJSON(t, stranger, base+"/cgi-bin/user/get", "{}", "X-WXProxy-Key", "ops-key-0123456789"); code != 200 {
		t.Errorf("ops key over a certificate without a CN rule: %d %s", code, b)
	}
	if _, err := ts.client(t, "").Get(send); err == nil {
		t.Error("a caller without a client certificate completed a request")
	}

	// Rotation: keep one connection open, replace the files, and watch
	// new handshakes get the new certificate while the old connection
	// keeps working.
	var reused bool
	trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused }}
	doOn := func(c *http.Client) int {
		req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), http.MethodPost, send, strings.NewReader("{}"))
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("request: %v", err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	doOn(billing)
	serial := func() string {
		conn, err := tls.Dial("tcp", strings.TrimPrefix(base, "https://"), &tls.Config{RootCAs: ts.ca.Pool(), MinVersion: tls.VersionTLS12,
			Certificates: []tls.Certificate{ts.ca.Client(t, "billing-svc").TLS}})
		if err != nil {
			t.Fatalf("handshake: %v", err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	before := serial()
	next := ts.ca.Server(t)
	next.Write(t, ts.dir, "tls")
	waitFor(t, 15*time.Second, "the rotated certificate on new handshakes", func() bool { return serial() == next.Serial.String() })
	if before == next.Serial.String() {
		t.Fatal("serials do not differ")
	}
	if code := doOn(billing); code != 200 || !reused {
		t.Errorf("after rotation on the open connection: HTTP %d, reused %v", code, reused)
	}
	// A reload re-reads the files too.
	third := ts.ca.Server(t)
	third.Write(t, ts.dir, "tls")
	if code, _, b := postJSON(t, http.DefaultClient, w.admin+"/admin/reload", "", "Authorization", "Bearer admin-token-for-tests"); code != 200 {
		t.Fatalf("reload: %d %s", code, b)
	}
	if got := serial(); got != third.Serial.String() {
		t.Errorf("after reload the certificate is %s, want %s", got, third.Serial)
	}
	if code := doOn(billing); code != 200 || !reused {
		t.Errorf("after reload on the open connection: HTTP %d, reused %v", code, reused)
	}
}

// nodeSDK returns the directory of the Node SDK tests and the node binary,
// or skips the test when they are missing (fails with
// WXPROXY_REQUIRE_NODE=1, as CI sets).
func nodeSDK(tb testing.TB) (dir, node string) {
	tb.Helper()
	dir, _ = filepath.Abs("sdk/node")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "wechat-api")); err != nil {
		if os.Getenv("WXPROXY_REQUIRE_NODE") == "1" {
			tb.Fatalf("e2e/sdk/node/node_modules missing and WXPROXY_REQUIRE_NODE=1 (run npm ci there): %v", err)
		}
		tb.Skip("e2e/sdk/node/node_modules missing; run npm ci there")
	}
	node, err := exec.LookPath("node")
	if err != nil {
		if os.Getenv("WXPROXY_REQUIRE_NODE") == "1" {
			tb.Fatal("node not found and WXPROXY_REQUIRE_NODE=1")
		}
		tb.Skip("node not found")
	}
	return dir, node
}

// sdkFlow is what wechat_api_flow.js printed: the results of its steps, or
// the step that failed.
type sdkFlow struct {
	Token     string `json:"token"`
	Followers struct {
		ErrCode int `json:"errcode"`
		Echo    struct {
			AppID string `json:"appid"`
			Path  string `json:"path"`
		} `json:"echo"`
	} `json:"followers"`
	Sent struct {
		ErrCode int `json:"errcode"`
		Echo    struct {
			Method string `json:"method"`
			Path   string `json:"path"`
		} `json:"echo"`
	} `json:"sent"`

	// Failed is the step that failed ("" = none), Error its error.
	Failed string
	Error  string
	Output string // everything the script printed
}

// runSDKFlow runs wechat_api_flow.js against the wxproxy at host with env.
func runSDKFlow(tb testing.TB, host string, env ...string) sdkFlow {
	tb.Helper()
	dir, node := nodeSDK(tb)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "wechat_api_flow.js")
	cmd.Dir = dir
	cmd.Env = append(append(os.Environ(), "WXPROXY_HOST="+host, "APPID="+resAppID), env...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()
	res := sdkFlow{Output: stdout.String() + stderr.String()}
	if runErr != nil {
		var fail struct {
			Step  string `json:"step"`
			Error string `json:"error"`
		}
		if err := json.Unmarshal([]byte(lastLine(stderr.String())), &fail); err != nil || fail.Step == "" {
			tb.Fatalf("wechat-api flow: %v\n%s", runErr, res.Output)
		}
		res.Failed, res.Error = fail.Step, fail.Error
		return res
	}
	if err := json.Unmarshal([]byte(lastLine(stdout.String())), &res); err != nil {
		tb.Fatalf("output %q: %v", res.Output, err)
	}
	return res
}

func lastLine(s string) string {
	sc := bufio.NewScanner(strings.NewReader(s))
	var last string
	for sc.Scan() {
		last = sc.Text()
	}
	return last
}

// checkSDKFlow asserts that the whole flow worked through wxproxy and that
// no real token reached the SDK.
func checkSDKFlow(tb testing.TB, res sdkFlow, simURL string) {
	tb.Helper()
	if res.Failed != "" {
		tb.Fatalf("wechat-api flow failed at %s: %s\n%s", res.Failed, res.Error, res.Output)
	}
	if !strings.HasPrefix(res.Token, "wxp.main.") {
		tb.Errorf("the SDK got token %q, want a wxproxy placeholder", res.Token)
	}
	if res.Followers.Echo.AppID != resAppID || res.Followers.Echo.Path != "/cgi-bin/user/get" {
		tb.Errorf("getFollowers answered %+v", res.Followers)
	}
	if res.Sent.Echo.Method != "POST" || res.Sent.Echo.Path != "/cgi-bin/message/custom/send" {
		tb.Errorf("sendText answered %+v", res.Sent)
	}
	for _, live := range liveTokens(tb, simURL) {
		if strings.Contains(res.Output, live) {
			tb.Error("a real token reached the SDK")
		}
	}
}

// TestWechatAPINodeSDK: the real wechat-api npm client (which forces
// https://) runs its whole flow against wxproxy's TLS caller port: it
// fetches /cgi-bin/token (a placeholder answered locally), lists
// followers and sends a message.
func TestWechatAPINodeSDK(t *testing.T) {
	nodeSDK(t)
	s := startSim(t, "-app", resAppID+":"+resSecret)
	ts := newTLSSetup(t)
	w := startProxy(t, ts.dir, fmt.Sprintf(`
listen: 127.0.0.1:0
admin: {listen: 127.0.0.1:0}
tls: {cert_file: tls.crt, key_file: tls.key}
apps: [{name: main, appid: %s, secret: %s, upstream: %s}]
`, resAppID, resSecret, s.url))
	res := runSDKFlow(t, strings.TrimPrefix(w.url, "http://"), "NODE_EXTRA_CA_CERTS="+ts.caFile)
	checkSDKFlow(t, res, s.url)
}

// TestWechatAPINodeSDKClientCert: the real wechat-api client presents a
// client certificate through its own options (api.setOpts({cert, key,
// ca})) and is known by it: the key whose cert_cn is the certificate's CN
// admits it, with that key's API allowlist, and the access log names that
// key. A certificate of another CN, one whose key's allowlist lacks an API
// of the flow, or no certificate at all stop the flow where they should.
func TestWechatAPINodeSDKClientCert(t *testing.T) {
	nodeSDK(t)
	s := startSim(t, "-app", resAppID+":"+resSecret)
	ts := newTLSSetup(t)
	w := startProxy(t, ts.dir, fmt.Sprintf(`
listen: 127.0.0.1:0
admin: {listen: 127.0.0.1:0}
tls: {cert_file: tls.crt, key_file: tls.key, client_ca_file: ca.pem}
callers:
  keys:
    - {name: sdk, cert_cn: wechat-api-sdk, apps: [main], apis: [/cgi-bin/token, /cgi-bin/user/get, "/cgi-bin/message/**"]}
    - {name: sender, cert_cn: send-only, apis: [/cgi-bin/token, "/cgi-bin/message/**"]}
    - {name: ops, key: ops-key-0123456789}
apps: [{name: main, appid: %s, secret: %s, upstream: %s}]
`, resAppID, resSecret, s.url))
	host := strings.TrimPrefix(w.url, "http://")
	withCert := func(cn string) []string {
		cert, key := ts.ca.Client(t, cn).Write(t, ts.dir, "client-"+cn)
		return []string{"CLIENT_CERT=" + cert, "CLIENT_KEY=" + key, "CA_FILE=" + ts.caFile}
	}

	res := runSDKFlow(t, host, withCert("wechat-api-sdk")...)
	checkSDKFlow(t, res, s.url)
	var sdkLines int
	for line := range strings.SplitSeq(w.output(), "\n") {
		var rec struct {
			API    string `json:"api"`
			Caller string `json:"caller"`
			Status int    `json:"status"`
		}
		if json.Unmarshal([]byte(line), &rec) != nil || rec.API == "" {
			continue
		}
		if rec.Caller != "sdk" || rec.Status != 200 {
			t.Errorf("access line %s: want caller sdk, status 200", line)
		}
		sdkLines++
	}
	if sdkLines != 3 {
		t.Errorf("%d access lines, want 3 (token, user/get, custom/send):\n%s", sdkLines, w.output())
	}

	if res := runSDKFlow(t, host, withCert("send-only")...); res.Failed != "getFollowers" {
		t.Errorf("send-only certificate: flow failed at %q (%s), want getFollowers (outside its apis)", res.Failed, res.Error)
	}
	if res := runSDKFlow(t, host, withCert("stranger")...); res.Failed != "token" {
		t.Errorf("certificate of an unknown CN: flow failed at %q (%s), want token", res.Failed, res.Error)
	}
	if res := runSDKFlow(t, host, "NODE_EXTRA_CA_CERTS="+ts.caFile); res.Failed != "token" {
		t.Errorf("no client certificate: flow failed at %q (%s), want token", res.Failed, res.Error)
	}
	if st := s.stats(t); st.APICalls["/cgi-bin/user/get"] != 1 || st.APICalls["/cgi-bin/message/custom/send"] != 1 {
		t.Errorf("simulator calls %v: only the sdk certificate's flow should reach WeChat", st.APICalls)
	}
}

func liveTokens(tb testing.TB, simURL string) []string {
	tb.Helper()
	_, _, b := get(tb, simURL+"/sim/tokens")
	var m map[string][]string
	_ = json.Unmarshal(b, &m)
	var out []string
	for _, v := range m {
		out = append(out, v...)
	}
	return out
}

// grepLines returns the lines of s that start with one of prefixes.
func grepLines(s string, prefixes ...string) string {
	var out []string
	for line := range strings.SplitSeq(s, "\n") {
		for _, p := range prefixes {
			if strings.HasPrefix(line, p) {
				out = append(out, line)
			}
		}
	}
	return strings.Join(out, "\n")
}
