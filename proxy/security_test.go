package proxy_test

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sony/gobreaker/v2"
	"github.com/valyala/fasthttp"

	"github.com/wxproxy/wxproxy/proxy"
	"github.com/wxproxy/wxproxy/ratelimit"
	"github.com/wxproxy/wxproxy/wechat"
)

// raw sends one request exactly as written over a fresh connection to the
// proxy and returns the answer; for targets and framings no client sends.
func (e *env) raw(tb testing.TB, req string) (*http.Response, []byte) {
	tb.Helper()
	u, _ := url.Parse(e.url)
	conn, err := net.Dial("tcp", u.Host)
	if err != nil {
		tb.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, req); err != nil {
		tb.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		tb.Fatalf("%q: %v", req, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, body
}

// A request target that is not origin-form is refused before anything
// reads it, so the token can never be sent to a host the caller names.
func TestNonOriginFormTargetsRefused(t *testing.T) {
	e := newEnv(t, envOptions{})
	before := e.sim.Stats().APICalls
	for _, target := range []string{
		"GET a:http://evil.example/x HTTP/1.1",
		"GET http://evil.example/cgi-bin/x HTTP/1.1",
		"GET https://evil.example/cgi-bin/clear_quota HTTP/1.1",
		"CONNECT evil.example:443 HTTP/1.1",
		"OPTIONS * HTTP/1.1",
		"GET mailto:x@evil.example HTTP/1.1",
	} {
		resp, body := e.raw(t, target+"\r\nHost: wxproxy\r\nConnection: close\r\n\r\n")
		if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("X-WXProxy-Error") != "bad_request" {
			t.Errorf("%s: got %d %q %s; want 400 bad_request", target, resp.StatusCode, resp.Header.Get("X-WXProxy-Error"), body)
		}
	}
	if after := e.sim.Stats().APICalls; len(after) != len(before) {
		t.Errorf("WeChat saw calls for refused targets: %v → %v", before, after)
	}
}

// Every spelling of a path is classified as its clean form: blocks, local
// answers and quotas cannot be dodged, and WeChat gets the clean path.
func TestPathSpellings(t *testing.T) {
	e := newEnv(t, envOptions{quotas: &ratelimit.Settings{APIs: map[string]ratelimit.Limit{
		"/cgi-bin/message/custom/send": {PerMinute: 1, Burst: 1},
	}}})
	for _, p := range []string{
		"/cgi-bin//clear_quota", "/cgi-bin/./clear_quota", "/cgi-bin/clear_quota/", "/CGI-BIN/Clear_Quota",
		"/cgi-bin/x/../clear_quota", "//cgi-bin/clear_quota", "/cgi-bin/%63lear_quota", "/cgi-bin/clear_quota/v2/",
		"/main//cgi-bin/openapi/quota/clear", "/cgi-bin/component/clear_quota/v2", "/cgi-bin/clear_quota/.",
	} {
		checkError(t, e.do(t, http.MethodPost, p, []byte(`{"appid":"`+mainAppID+`"}`)), 403, wechat.CodeUnauthorized, "blocked_path")
	}
	for _, p := range []string{"/cgi-bin//token", "/cgi-bin/./token/", "/CGI-BIN/TOKEN"} {
		a := e.get(t, p+"?grant_type=client_credential&appid="+mainAppID+"&secret=x")
		if !strings.HasPrefix(a.AccessToken, "wxp.main.") {
			t.Errorf("%s: not answered locally: %d %s", p, a.status, a.body)
		}
	}
	if n := e.fetches(mainAppID); n != 1 {
		t.Errorf("token fetches = %d, want only wxproxy's own 1", n)
	}
	// One quota'd API under two spellings: the second is over the limit.
	if a := e.do(t, http.MethodPost, "/cgi-bin/message/custom/send", []byte(`{}`)); a.ErrCode != 0 {
		t.Fatalf("first send: %s", a.body)
	}
	checkError(t, e.do(t, http.MethodPost, "/cgi-bin//message/./custom/send/", []byte(`{}`)), 429, wechat.CodeMinuteQuota, "rate_limited")
	// WeChat gets the cleaned path; a fragment never leaves.
	a := e.get(t, "/cgi-bin//user/./info/../get?next_openid=a#frag")
	if a.Echo.Path != "/cgi-bin/user/get" || len(a.Echo.Query["next_openid"]) != 1 || a.Echo.Query["next_openid"][0] != "a" {
		t.Errorf("echo path %q query %v; want /cgi-bin/user/get, next_openid=a", a.Echo.Path, a.Echo.Query)
	}
	resp, body := e.raw(t, "GET /cgi-bin/user/get?next_openid=a#frag&access_token=x HTTP/1.1\r\nHost: w\r\nConnection: close\r\n\r\n")
	if resp.StatusCode != 200 || !bytes.Contains(body, []byte(`"query":{"next_openid":["a"]}`)) {
		t.Errorf("fragment forwarded: %d %s", resp.StatusCode, body)
	}
	for _, p := range []string{"/cgi-bin%2Fclear_quota", "/cgi-bin%2fx", "/cgi-bin%5Cx", "/../cgi-bin/x", "/cgi-bin/../../x", "/cgi-bin/%zz", "/cgi-bin/%00x",
		"/cgi-bin/token;x", "/cgi-bin/clear_quota%3b", "/cgi-bin/%C0%AFclear_quota", "/cgi-bin/clear_quota%20", "/cgi-bin/x?" + strings.Repeat("a", 17<<10)} {
		resp, body := e.raw(t, "GET "+p+" HTTP/1.1\r\nHost: w\r\nConnection: close\r\n\r\n")
		// net/http itself refuses a malformed escape, without the header.
		if resp.StatusCode != 400 || (resp.Header.Get("X-WXProxy-Error") != "bad_request" && p != "/cgi-bin/%zz") {
			t.Errorf("%s: %d %s; want 400 bad_request", p, resp.StatusCode, body)
		}
	}
	resp, body = e.raw(t, "GET /cgi-bin\\clear_quota HTTP/1.1\r\nHost: w\r\nConnection: close\r\n\r\n")
	if resp.StatusCode != 400 {
		t.Errorf(`raw "\" in the path: %d %s`, resp.StatusCode, body)
	}
}

// Caller bodies that break (bad chunking, truncated, too large, too slow)
// are the caller's error, never WeChat's: they get 4xx and the breaker
// stays closed for everyone else.
func TestBreakerNotPoisonedByCallerBodies(t *testing.T) {
	e := newEnv(t, envOptions{
		retryBodyBytes: 1 << 10, maxBodyBytes: 64 << 10, bodyTimeout: 300 * time.Millisecond,
		breaker: &proxy.BreakerSettings{ConsecutiveFailures: 3, OpenTimeout: time.Minute, HalfOpenRequests: 1},
	})
	big := strings.Repeat("x", 4<<10) // streamed: over retry_body_bytes
	bad := []struct {
		name, req string
		status    int
	}{
		{"bad chunk size", "POST /cgi-bin/x HTTP/1.1\r\nHost: w\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n", 400},
		{"bad chunk after streaming started", "POST /cgi-bin/x HTTP/1.1\r\nHost: w\r\nTransfer-Encoding: chunked\r\n\r\n1000\r\n" + big + "\r\nzz\r\n", 400},
		{"chunk cut off", "POST /cgi-bin/x HTTP/1.1\r\nHost: w\r\nTransfer-Encoding: chunked\r\n\r\n1000\r\n" + big[:100], 0},
		{"oversized chunked", "POST /cgi-bin/x HTTP/1.1\r\nHost: w\r\nTransfer-Encoding: chunked\r\n\r\n" + strings.Repeat("1000\r\n"+big+"\r\n", 20) + "0\r\n\r\n", 413},
		{"oversized length", "POST /cgi-bin/x HTTP/1.1\r\nHost: w\r\nContent-Length: 999999\r\n\r\n" + big, 413},
		{"truncated length, streamed", "POST /cgi-bin/x HTTP/1.1\r\nHost: w\r\nContent-Length: 8000\r\n\r\n" + big, 408},
		{"truncated length, buffered", "POST /cgi-bin/x HTTP/1.1\r\nHost: w\r\nContent-Length: 900\r\n\r\nabc", 408},
	}
	for range 2 {
		for _, b := range bad {
			u, _ := url.Parse(e.url)
			conn, err := net.Dial("tcp", u.Host)
			if err != nil {
				t.Fatal(err)
			}
			_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
			_, _ = io.WriteString(conn, b.req)
			if b.status == 0 {
				conn.(*net.TCPConn).CloseWrite() // the caller hangs up half way
			}
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			switch {
			case err != nil && b.status == 0: // no answer to a caller that left
			case err != nil:
				t.Errorf("%s: %v", b.name, err)
			case b.status != 0 && resp.StatusCode != b.status, resp.StatusCode >= 500:
				body, _ := io.ReadAll(resp.Body)
				t.Errorf("%s: got %d %s; want %d", b.name, resp.StatusCode, body, b.status)
			}
			conn.Close()
		}
	}
	if st := e.breaker.State(); st.State != "closed" || st.Counts.TotalFailures != 0 {
		t.Errorf("breaker %s with %d failures after caller errors; want closed, 0", st.State, st.Counts.TotalFailures)
	}
	if a := e.do(t, http.MethodPost, "/cgi-bin/x", []byte(`{}`)); a.status != 200 || a.ErrCode != 0 {
		t.Errorf("innocent caller: %d %s", a.status, a.body)
	}
}

// A declared Content-Length reserves nothing: buffers grow with the bytes
// that arrive, and all of them stay under max_buffered_bytes.
func TestBodyBuffersGrowWithBytes(t *testing.T) {
	const slow = 40
	e := newEnv(t, envOptions{bodyTimeout: 30 * time.Second, maxBuffered: 256 << 10})
	u, _ := url.Parse(e.url)
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	var conns []net.Conn
	for range slow {
		conn, err := net.Dial("tcp", u.Host)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, conn)
		// Declares 2 MiB, sends 10 bytes, then waits.
		_, _ = io.WriteString(conn, "POST /cgi-bin/x HTTP/1.1\r\nHost: w\r\nContent-Length: 2097152\r\n\r\n0123456789")
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	if !eventually(t, 5*time.Second, func() bool { return e.proxy.Buffered() >= slow*4<<10 }) {
		t.Fatalf("buffered %d bytes; want the %d slow bodies to have started", e.proxy.Buffered(), slow)
	}
	runtime.GC()
	var during runtime.MemStats
	runtime.ReadMemStats(&during)
	if grew := int64(during.HeapInuse) - int64(before.HeapInuse); grew > 16<<20 {
		t.Errorf("heap grew %d MiB for %d slow 2 MiB uploads; want it to grow with bytes received", grew>>20, slow)
	}
	if got := e.proxy.Buffered(); got > 256<<10 {
		t.Errorf("buffered %d bytes; want <= max_buffered_bytes 256 KiB", got)
	}
	// Past the budget, bodies stream and still arrive whole.
	body := bytes.Repeat([]byte("y"), 100<<10)
	if a := e.do(t, http.MethodPost, "/cgi-bin/x", body); a.ErrCode != 0 || a.Echo.BodyLen != len(body) {
		t.Errorf("body past the budget: %d %d bytes echoed: %s", a.status, a.Echo.BodyLen, a.body[:min(len(a.body), 200)])
	}
	for _, c := range conns {
		c.Close()
	}
	if !eventually(t, 5*time.Second, func() bool { return e.proxy.Buffered() == 0 }) {
		t.Errorf("buffered %d bytes after every request ended; want 0", e.proxy.Buffered())
	}
}

// An upstream that sends its headers and then stalls cannot hold the
// caller past upstream_timeout; nor can a caller's stalled body.
func TestStallsAreCut(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	stall := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer stall.Close()
	e := newEnv(t, envOptions{upstream: stall.URL, upTimeout: 300 * time.Millisecond, bodyTimeout: 300 * time.Millisecond})
	done := make(chan *answer, 1)
	go func() { done <- e.get(t, "/cgi-bin/x") }()
	select {
	case a := <-done:
		checkError(t, a, 504, wechat.CodeSystemError, "upstream_error")
	case <-time.After(10 * time.Second):
		t.Fatal("a stalled answer body held the caller past upstream_timeout")
	}
	resp, body := e.raw(t, "POST /cgi-bin/x HTTP/1.1\r\nHost: w\r\nContent-Length: 100\r\n\r\nabc")
	if resp.StatusCode != http.StatusRequestTimeout || !bytes.Contains(body, []byte(`"errcode":47001`)) {
		t.Errorf("stalled body: %d %s; want 408 47001", resp.StatusCode, body)
	}
}

// Answers are scrubbed: WeChat's rid/get echoes the URL of an earlier call,
// access_token included; a caller gets a placeholder of its own app, which
// it can even use.
func TestRidGetDoesNotReflectToken(t *testing.T) {
	e := newEnv(t, envOptions{})
	a := e.do(t, http.MethodPost, "/cgi-bin/message/custom/send?x=1", []byte(`{"touser":"o1"}`))
	var echo struct {
		Rid string `json:"rid"`
	}
	if err := json.Unmarshal(a.body, &echo); err != nil || echo.Rid == "" {
		t.Fatalf("no rid in %s", a.body)
	}
	got := e.do(t, http.MethodPost, "/cgi-bin/openapi/rid/get", []byte(`{"rid":"`+echo.Rid+`"}`))
	if got.ErrCode != 0 {
		t.Fatalf("rid/get: %s", got.body)
	}
	noSecrets(t, "rid/get answer", string(got.body)+headerText(got.header), e.liveTokens())
	var info struct {
		Request struct {
			RequestURL string `json:"request_url"`
		} `json:"request"`
	}
	_ = json.Unmarshal(got.body, &info)
	q, err := url.ParseQuery(info.Request.RequestURL)
	if err != nil || !strings.HasPrefix(q.Get("access_token"), "wxp.main.") {
		t.Fatalf("request_url %q: want the token replaced by a placeholder of app main", info.Request.RequestURL)
	}
	if c := len(got.body); strconv.Itoa(c) != got.header.Get("Content-Length") && got.header.Get("Content-Length") != "" {
		t.Errorf("Content-Length %s for a %d-byte answer", got.header.Get("Content-Length"), c)
	}
	// The placeholder read back is a working credential of app main.
	if b := e.get(t, "/cgi-bin/user/get?access_token="+url.QueryEscape(q.Get("access_token")), "X-WXProxy-App", ""); b.ErrCode != 0 || b.Echo.AppID != mainAppID {
		t.Errorf("placeholder from rid/get: %s", b.body)
	}
}

// A redirect from upstream is never followed and its Location is scrubbed.
func TestRedirectsNotFollowedAndScrubbed(t *testing.T) {
	var hits atomic.Int64
	target := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { hits.Add(1) }))
	defer target.Close()
	redirect := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Location", target.URL+"/steal?"+r.URL.RawQuery)
		w.Header().Set("X-Echo", r.URL.Query().Get("access_token"))
		w.WriteHeader(http.StatusTemporaryRedirect)
		_, _ = io.WriteString(w, "moved: "+r.URL.String())
	}))
	defer redirect.Close()
	e := newEnv(t, envOptions{upstream: redirect.URL})
	a := e.do(t, http.MethodPost, "/cgi-bin/x", []byte(`{}`))
	if a.status != http.StatusTemporaryRedirect {
		t.Fatalf("status %d; want the 307 passed back", a.status)
	}
	noSecrets(t, "redirect answer", string(a.body)+headerText(a.header), e.liveTokens())
	if !strings.Contains(a.header.Get("Location"), "access_token=wxp.main.") {
		t.Errorf("Location %q: want the token replaced by a placeholder", a.header.Get("Location"))
	}
	if n := hits.Load(); n != 0 {
		t.Errorf("the redirect target got %d requests; want 0", n)
	}
}

// Wrong corpsecrets are throttled per caller address: the 11th miss in a
// minute, and anything after it from that address, gets 429 without a
// comparison; other addresses are not affected.
func TestCorpSecretGuessingThrottled(t *testing.T) {
	e := newEnv(t, envOptions{})
	ask := func(ip, secret string) int {
		return serveFrom(e.proxy, http.MethodGet, "/cgi-bin/gettoken?corpid="+corpID+"&corpsecret="+url.QueryEscape(secret), ip)
	}
	for i := range 10 {
		if code := ask("10.0.0.1", "guess-"+strconv.Itoa(i)); code != http.StatusNotFound {
			t.Fatalf("miss %d: %d, want 404", i, code)
		}
	}
	if code := ask("10.0.0.1", "guess-x"); code != http.StatusTooManyRequests {
		t.Errorf("11th miss: %d, want 429", code)
	}
	if code := ask("10.0.0.1", agentA); code != http.StatusTooManyRequests {
		t.Errorf("right secret from a blocked address: %d, want 429 (no oracle)", code)
	}
	if code := ask("10.0.0.2", agentA); code != http.StatusOK {
		t.Errorf("right secret from another address: %d, want 200", code)
	}
}

// wxproxy's own JSON answers are compact with no trailing newline.
func TestCompactJSON(t *testing.T) {
	e := newEnv(t, envOptions{})
	for _, a := range []*answer{
		e.get(t, "/cgi-bin/token?grant_type=client_credential&appid="+mainAppID+"&secret=x"),
		e.get(t, "/cgi-bin/gettoken?corpid="+corpID+"&corpsecret="+agentA),
		e.get(t, "/cgi-bin/clear_quota"),
		e.get(t, "/nope/x", "X-WXProxy-App", "nope"),
	} {
		var compact bytes.Buffer
		if err := json.Compact(&compact, a.body); err != nil || !bytes.Equal(compact.Bytes(), a.body) {
			t.Errorf("answer %q is not compact", a.body)
		}
	}
}

// The breaker's state-change callback runs outside gobreaker's mutex: a
// slow one (a blocked log write) does not stall other requests.
func TestBreakerCallbackOutsideMutex(t *testing.T) {
	unblock := make(chan struct{})
	var once sync.Once
	defer once.Do(func() { close(unblock) })
	e := newEnv(t, envOptions{
		breaker:   &proxy.BreakerSettings{ConsecutiveFailures: 1, OpenTimeout: time.Minute, HalfOpenRequests: 1},
		onBreaker: func(string, gobreaker.State) { <-unblock },
	})
	e.simPost(t, "/sim/faults", `{"path":"/cgi-bin/fail","status":502,"count":1}`)
	go e.get(t, "/cgi-bin/fail") // trips the breaker; its callback blocks
	if !eventually(t, 5*time.Second, func() bool {
		done := make(chan string, 1)
		go func() { done <- e.breaker.State().State }()
		select {
		case st := <-done:
			return st == "open"
		case <-time.After(time.Second):
			return false
		}
	}) {
		t.Fatal("breaker state unreadable or not open while its callback blocks")
	}
	once.Do(func() { close(unblock) })
}

// Body-copy errors are logged through the proxy's logger and the access
// line says the answer broke off.
func TestCopyErrorLogged(t *testing.T) {
	cut := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "image/jpeg")
		w.Header().Set("Content-Length", "100000")
		w.WriteHeader(200)
		_, _ = w.Write(make([]byte, 1000))
		w.(http.Flusher).Flush()
		conn, _, _ := w.(http.Hijacker).Hijack()
		conn.Close()
	}))
	defer cut.Close()
	e := newEnv(t, envOptions{upstream: cut.URL})
	req, _ := http.NewRequest(http.MethodGet, e.url+"/cgi-bin/media/get?media_id=1", nil)
	if resp, err := http.DefaultClient.Do(req); err == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	if !eventually(t, 5*time.Second, func() bool { return strings.Contains(e.logs.String(), `"outcome":"aborted"`) }) {
		t.Errorf("no access line with outcome aborted:\n%s", e.logs.String())
	}
	if !strings.Contains(e.logs.String(), "body copy") {
		t.Errorf("the copy error did not reach the proxy's logger:\n%s", e.logs.String())
	}
}

// Proxy environment variables never route upstream traffic; the explicit
// upstream_proxy does.
func TestEgressProxy(t *testing.T) {
	tr, err := proxy.NewTransport(proxy.TransportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if tr.Proxy != nil {
		t.Error("the default transport consults a proxy (HTTP_PROXY from the environment)")
	}
	var seen atomic.Int64
	fwd := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen.Add(1) // a forward proxy: absolute-form request
		out, _ := http.NewRequestWithContext(r.Context(), r.Method, r.URL.String(), r.Body)
		out.Header = r.Header.Clone()
		resp, err := http.DefaultTransport.RoundTrip(out)
		if err != nil {
			w.WriteHeader(502)
			return
		}
		defer resp.Body.Close()
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		_, _ = io.Copy(w, resp.Body)
	}))
	defer fwd.Close()
	client, err := proxy.NewClient(proxy.TransportOptions{Proxy: fwd.URL})
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, envOptions{transport: client})
	if a := e.get(t, "/cgi-bin/user/get"); a.ErrCode != 0 {
		t.Fatalf("through upstream_proxy: %s", a.body)
	}
	if seen.Load() == 0 {
		t.Error("upstream_proxy was not used")
	}
	for _, bad := range []string{"socks5://x:1", "http://", "::"} {
		if _, err := proxy.NewTransport(proxy.TransportOptions{Proxy: bad}); err == nil {
			t.Errorf("NewTransport(Proxy: %q) accepted", bad)
		}
		if _, err := proxy.NewClient(proxy.TransportOptions{Proxy: bad}); err == nil {
			t.Errorf("NewClient(Proxy: %q) accepted", bad)
		}
	}
}

// A gzip answer is decoded before it is scrubbed: a caller asking for
// gzip cannot get an answer the scrubber could not read.
func TestEncodedAnswersAreScrubbed(t *testing.T) {
	e := newEnv(t, envOptions{})
	a := e.do(t, http.MethodPost, "/cgi-bin/message/custom/send", []byte(`{}`))
	var echo struct {
		Rid string `json:"rid"`
	}
	_ = json.Unmarshal(a.body, &echo)
	req, _ := http.NewRequest(http.MethodPost, e.url+"/cgi-bin/openapi/rid/get", strings.NewReader(`{"rid":"`+echo.Rid+`"}`))
	req.Header.Set("Accept-Encoding", "gzip, br, deflate")
	resp, err := (&http.Transport{DisableCompression: true}).RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if ce := resp.Header.Get("Content-Encoding"); ce != "" {
		t.Errorf("answer encoded %q; want plain", ce)
	}
	noSecrets(t, "rid/get with Accept-Encoding", string(body), e.liveTokens())
}

// serveFrom serves one request in process as if it came from ip (a
// listener on loopback cannot fake other caller addresses) and returns the
// status.
func serveFrom(p *proxy.Proxy, method, target, ip string) int {
	var ctx fasthttp.RequestCtx
	var req fasthttp.Request
	req.Header.SetMethod(method)
	req.SetRequestURI(target)
	req.Header.SetHost("wxproxy")
	ctx.Init(&req, &net.TCPAddr{IP: net.ParseIP(ip), Port: 1234}, nil)
	p.Handler()(&ctx)
	return ctx.Response.StatusCode()
}

func headerText(h http.Header) string {
	var b strings.Builder
	_ = h.Write(&b)
	return b.String()
}

// noSecrets fails when text holds a live token or an app secret.
func noSecrets(tb testing.TB, what, text string, tokens []string) {
	tb.Helper()
	for _, s := range append(tokens, mainSecret, miniSecret, agentA, agentB) {
		if s != "" && strings.Contains(text, s) {
			tb.Errorf("%s holds a credential %.6s…:\n%s", what, s, text)
		}
	}
}

// A long download outlives upstream_timeout: the deadline bounds WeChat's
// headers and the errcode peek, not a media file or a long answer that
// streams on after them.
func TestLongAnswersOutliveUpstreamTimeout(t *testing.T) {
	const parts, part = 6, 4 << 10
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ct := "image/jpeg"
		if r.URL.Path == "/cgi-bin/long" {
			ct = "application/json"
		}
		w.Header().Set("Content-Type", ct)
		w.Header().Set("Content-Length", strconv.Itoa(3*part+parts*part))
		w.WriteHeader(200)
		_, _ = w.Write(bytes.Repeat([]byte("a"), 3*part)) // past the 8 KiB peek
		for range parts {
			w.(http.Flusher).Flush()
			time.Sleep(100 * time.Millisecond) // the slow upstream under test, 600 ms in all
			_, _ = w.Write(bytes.Repeat([]byte("b"), part))
		}
	}))
	defer slow.Close()
	e := newEnv(t, envOptions{upstream: slow.URL, upTimeout: 250 * time.Millisecond})
	for _, path := range []string{"/cgi-bin/media/get?media_id=1", "/cgi-bin/long"} {
		resp, err := http.Get(e.url + path)
		if err != nil {
			t.Fatal(err)
		}
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil || n != 3*part+parts*part || resp.StatusCode != 200 {
			t.Errorf("%s: %d, %d of %d bytes, %v; want the whole answer", path, resp.StatusCode, n, 3*part+parts*part, err)
		}
	}
}

// An https upstream: TLS is done below fasthttp (so the raw answer head
// can be checked), and the whole exchange still works, scrubbing included.
func TestHTTPSUpstream(t *testing.T) {
	up := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"errcode":0,"errmsg":"ok","seen":"`+r.URL.RawQuery+`","tls":`+strconv.FormatBool(r.TLS != nil)+`}`)
	}))
	defer up.Close()
	pool := x509.NewCertPool()
	pool.AddCert(up.Certificate())
	c, err := proxy.NewClient(proxy.TransportOptions{TLS: &tls.Config{RootCAs: pool}})
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, envOptions{upstream: up.URL, transport: c})
	a := e.get(t, "/cgi-bin/user/get?x=1")
	if a.status != 200 || !strings.Contains(string(a.body), `"tls":true`) || !strings.Contains(string(a.body), "access_token=wxp.main.") {
		t.Errorf("through an https upstream: %d %s", a.status, a.body)
	}
	noSecrets(t, "https answer", string(a.body), e.liveTokens())
}

// The log choke point: a credential in any message or string value, in a
// group or an error, is replaced before the line is written.
func TestScrubHandler(t *testing.T) {
	var buf bytes.Buffer
	sh := proxy.NewScrubHandler(slog.NewJSONHandler(&buf, nil))
	log := slog.New(sh).With("pre", "x "+mainSecret)
	log.Info("before the scrubber is set") // passes unchanged, with what With captured
	sh.SetScrubber(func(s string) string { return strings.ReplaceAll(s, mainSecret, "***") })
	log.Info("secret "+mainSecret, "plain", "nothing here", "err", errors.New("bad "+mainSecret),
		slog.Group("g", "v", mainSecret), "n", 3)
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("got %d lines: %s", len(lines), buf.String())
	}
	if strings.Contains(lines[1], mainSecret) || !strings.Contains(lines[1], `"msg":"secret ***"`) ||
		!strings.Contains(lines[1], `"err":"bad ***"`) || !strings.Contains(lines[1], `"g":{"v":"***"}`) || !strings.Contains(lines[1], `"n":3`) {
		t.Errorf("scrubbed line: %s", lines[1])
	}
}
