package proxy_test

// Attacks that still get through. Each test fails today for the reason in
// its comment, and passes once the hole is closed.

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wxproxy/wxproxy/proxy"
)

// ridOf returns the rid a business echo carries.
func ridOf(tb testing.TB, a *answer) string {
	tb.Helper()
	var echo struct {
		Rid string `json:"rid"`
	}
	if err := json.Unmarshal(a.body, &echo); err != nil || echo.Rid == "" {
		tb.Fatalf("no rid in %d %.200s", a.status, a.body)
	}
	return echo.Rid
}

// WeChat's rid/get records at most 64 KiB of a call's query, and wxproxy
// appends access_token at the very end of the query it forwards. A caller
// pads its own query so that the record is cut one byte before the end of
// the token: rid/get then returns all of the token but its last byte. The
// scrubber only knows whole credentials, so the prefix reaches the caller,
// who finds the last character in at most 64 tries against WeChat. (The
// token's length is learnt by moving the padding: while the whole token
// fits, the answer shows a placeholder instead.) The request line is ~64
// KiB, inside the default max_header_bytes (64 KiB + net/http's 4 KiB).
func TestAdversaryRidGetTruncatedTokenPrefix(t *testing.T) {
	e := newEnv(t, envOptions{})
	tok := e.caches["main"].Current().Value
	const ridField = 64 << 10 // wechatsim maxRidField
	keep := len(tok) - 1
	pad := ridField - len("p=") - len("&access_token=") - keep
	a := e.do(t, http.MethodPost, "/cgi-bin/message/custom/send?p="+strings.Repeat("a", pad), []byte(`{}`))
	if a.header.Get("X-WXProxy-Error") != "" {
		t.Logf("padded query refused by wxproxy (%d %s): closed", a.status, a.header.Get("X-WXProxy-Error"))
		return
	}
	if a.ErrCode != 0 {
		t.Fatalf("padded call: %d %.200s", a.status, a.body)
	}
	got := e.do(t, http.MethodPost, "/cgi-bin/openapi/rid/get", []byte(`{"rid":"`+ridOf(t, a)+`"}`))
	if got.ErrCode != 0 {
		t.Fatalf("rid/get: %.300s", got.body)
	}
	for _, live := range e.liveTokens() {
		if strings.Contains(string(got.body), live[:len(live)-1]) {
			t.Fatalf("rid/get hands the caller %d of the %d bytes of a live token (request_url cut inside the token)", len(live)-1, len(live))
		}
	}
}

// A long answer streams through the scrubber after ModifyResponse has run;
// WeChat's trailer fields arrive after its body, so net/http fills
// resp.Trailer again (undeclared trailers are merged into a nil map) and
// ReverseProxy copies them to the caller, unscrubbed.
func TestAdversaryUndeclaredTrailerLeaksToken(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, `{"errcode":0,"errmsg":"ok","pad":"`+strings.Repeat("x", 16<<10)+`"}`)
		// Not announced in a Trailer header: sent after the last chunk.
		w.Header().Set(http.TrailerPrefix+"X-Echo", r.URL.Query().Get("access_token"))
	}))
	defer up.Close()
	e := newEnv(t, envOptions{upstream: up.URL})
	resp, err := http.Get(e.url + "/cgi-bin/user/get")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	noSecrets(t, "answer body", string(body), e.liveTokens())
	noSecrets(t, "answer trailers", headerText(resp.Trailer), e.liveTokens())
}

// ReverseProxy relays 1xx informational answers (103 Early Hints) from a
// client trace, before ModifyResponse ever sees a header: their header
// values reach the caller unscrubbed.
func TestAdversaryInformationalHeadersLeakToken(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "<https://example.invalid/x?access_token="+r.URL.Query().Get("access_token")+">; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Link")
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, `{"errcode":0,"errmsg":"ok"}`)
	}))
	defer up.Close()
	e := newEnv(t, envOptions{upstream: up.URL})
	var mu sync.Mutex
	var early []string
	trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
		mu.Lock()
		defer mu.Unlock()
		early = append(early, strconv.Itoa(code)+" "+headerText(http.Header(h)))
		return nil
	}}
	req, _ := http.NewRequest(http.MethodGet, e.url+"/cgi-bin/user/get", nil)
	req = req.WithContext(httptrace.WithClientTrace(req.Context(), trace))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	mu.Lock()
	defer mu.Unlock()
	noSecrets(t, "1xx answer headers", strings.Join(early, "\n"), e.liveTokens())
}

// The encoding check reads only the first Content-Encoding field. An answer
// with "Content-Encoding: identity" and "Content-Encoding: gzip" (the list
// "identity, gzip": gzip applied last) is neither decoded by the transport
// (it decodes only a lone "gzip") nor refused by wxproxy; the scrubber scans
// compressed bytes and finds nothing, and the caller's client gunzips the
// token. Same with an empty first field.
func TestAdversaryContentEncodingListEvadesScrubber(t *testing.T) {
	for _, ce := range [][]string{{"identity", "gzip"}, {"", "gzip"}} {
		up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			var buf bytes.Buffer
			zw := gzip.NewWriter(&buf)
			_, _ = io.WriteString(zw, `{"errcode":0,"errmsg":"ok","echo":"`+r.URL.Query().Get("access_token")+`"}`)
			_ = zw.Close()
			w.Header().Set("Content-Type", "application/json")
			w.Header()["Content-Encoding"] = ce
			_, _ = w.Write(buf.Bytes())
		}))
		e := newEnv(t, envOptions{upstream: up.URL})
		req, _ := http.NewRequest(http.MethodGet, e.url+"/cgi-bin/user/get", nil)
		resp, err := (&http.Transport{DisableCompression: true}).RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		up.Close()
		if resp.StatusCode != http.StatusOK {
			continue // refused: fine
		}
		// Undo the codings in reverse order of application, as a client does.
		codings := resp.Header.Values("Content-Encoding")
		for i := len(codings) - 1; i >= 0; i-- {
			if strings.EqualFold(strings.TrimSpace(codings[i]), "gzip") {
				zr, err := gzip.NewReader(bytes.NewReader(body))
				if err != nil {
					t.Fatalf("%q: %v", ce, err)
				}
				body, _ = io.ReadAll(zr)
			}
		}
		noSecrets(t, "answer with Content-Encoding "+strconv.Quote(strings.Join(ce, ", ")), string(body), e.liveTokens())
	}
}

// The corpsecret throttle tracks 4096 addresses a minute and puts every
// further address in one shared counter, checked before the secret is
// compared. One caller with many addresses (an IPv6 /64 holds 2^64) fills
// the table and spends the shared counter's 10 misses: for the rest of the
// minute every new caller address gets 429 even with the right corpsecret.
func TestAdversaryCorpSecretThrottleSharedSlotDoS(t *testing.T) {
	e := newEnv(t, envOptions{})
	if s := time.Now().Second(); s > 50 {
		time.Sleep(time.Duration(61-s) * time.Second) // stay inside one throttle window
	}
	ask := func(ip, secret string) int {
		return serveFrom(e.proxy, http.MethodGet, "/cgi-bin/gettoken?corpid="+corpID+"&corpsecret="+url.QueryEscape(secret), ip)
	}
	n := 0
	addr := func() string { n++; return "2001:db8:bad::" + strconv.FormatInt(int64(n), 16) }
	for range 4096 + 10 {
		ask(addr(), "wrong")
	}
	if code := ask("2001:db8:600d::1", agentA); code != http.StatusOK {
		t.Errorf("an innocent caller with the right corpsecret gets %d after another caller's misses; want 200", code)
	}
}

// Local token endpoints read the body without body_read_timeout:
// POST /cgi-bin/stable_token with a body that never completes holds a
// handler goroutine and its connection for ever.
func TestAdversaryStableTokenBodyNotTimed(t *testing.T) {
	e := newEnv(t, envOptions{bodyTimeout: 300 * time.Millisecond})
	u, _ := url.Parse(e.url)
	conn, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, _ = io.WriteString(conn, "POST /cgi-bin/stable_token HTTP/1.1\r\nHost: w\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"appid\":")
	_ = conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer 3 s after a stalled stable_token body (body_read_timeout 300 ms): %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestTimeout {
		t.Errorf("stalled stable_token body: %d; want 408", resp.StatusCode)
	}
}

// A request refused before its body is read (no caller key, blocked path,
// unknown app, bad target, rate limited, ...) has no read deadline, since
// body_read_timeout is only armed in prepareBody: net/http then reads and
// discards up to 256 KiB of the unread body (before it even sends the
// answer) with no bound in time. A caller without any key so holds
// connections and goroutines open for ever by trickling a body.
func TestAdversaryRejectedRequestBodyNotTimed(t *testing.T) {
	e := newEnv(t, envOptions{bodyTimeout: 300 * time.Millisecond,
		access: proxy.Access{Keys: []proxy.CallerKey{{Name: "k", Key: "caller-key-0123456789"}}}})
	u, _ := url.Parse(e.url)
	conn, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, _ = io.WriteString(conn, "POST /cgi-bin/x HTTP/1.1\r\nHost: w\r\nContent-Length: 100000\r\n\r\nabc")
	// The proxy must answer and drop the connection within body_read_timeout.
	_ = conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	got, err := io.ReadAll(conn)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("keyless caller trickling a body: connection still open 3 s later (body_read_timeout 300 ms); got %q", got)
	}
}

// While the breaker is half-open, one probe decides for everyone. A request
// whose body is too large to buffer takes the probe before its body has
// arrived, and a caller that trickles that body holds the probe for up to
// body_read_timeout; its 408 is then excluded, so WeChat's recovery is never
// confirmed. Meanwhile every other caller gets 503 circuit_open, though
// WeChat is healthy: one caller keeps the breaker from closing.
func TestAdversaryHalfOpenProbeHeldBySlowBody(t *testing.T) {
	e := newEnv(t, envOptions{
		retryBodyBytes: 1 << 10, maxBodyBytes: 1 << 20, bodyTimeout: 10 * time.Second,
		breaker: &proxy.BreakerSettings{ConsecutiveFailures: 1, OpenTimeout: 200 * time.Millisecond, HalfOpenRequests: 1},
	})
	e.simPost(t, "/sim/faults", `{"path":"/cgi-bin/fail","status":502,"count":1}`)
	e.get(t, "/cgi-bin/fail")
	if st := e.breaker.State().State; st != "open" {
		t.Fatalf("breaker %s after a 502; want open", st)
	}
	if !eventually(t, 5*time.Second, func() bool { return e.breaker.State().State == "half-open" }) {
		t.Fatal("breaker did not go half-open")
	}
	u, _ := url.Parse(e.url)
	conn, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, _ = io.WriteString(conn, "POST /cgi-bin/x HTTP/1.1\r\nHost: w\r\nContent-Length: 4096\r\n\r\n{\"a\":")
	time.Sleep(300 * time.Millisecond) // the slow request is now streaming its body to WeChat
	a := e.get(t, "/cgi-bin/user/get")
	if a.status != http.StatusOK || a.ErrCode != 0 {
		t.Errorf("innocent caller while another trickles a body through the half-open breaker: %d %s %s; want 200",
			a.status, a.header.Get("X-WXProxy-Error"), a.body)
	}
}

// The errcode peek is bounded by upstream_timeout counted from the start of
// the round trip, which includes sending the caller's body. A request whose
// body streams (larger than retry_body_bytes) and takes longer than
// upstream_timeout to arrive — a slow sender well within body_read_timeout,
// or just a large media upload on a slow link — gets 504 although WeChat
// answered at once (and acted on it), and counts as a breaker failure: a
// caller opens the breaker for everyone by sending two bodies slowly.
func TestAdversarySlowBodyCountsAsUpstreamTimeout(t *testing.T) {
	e := newEnv(t, envOptions{
		retryBodyBytes: 1 << 10, maxBodyBytes: 1 << 20, bodyTimeout: 10 * time.Second, upTimeout: 300 * time.Millisecond,
		breaker: &proxy.BreakerSettings{ConsecutiveFailures: 2, OpenTimeout: time.Minute, HalfOpenRequests: 1},
	})
	u, _ := url.Parse(e.url)
	half := strings.Repeat("x", 2<<10)
	for i := range 2 {
		conn, err := net.Dial("tcp", u.Host)
		if err != nil {
			t.Fatal(err)
		}
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		_, _ = io.WriteString(conn, "POST /cgi-bin/x HTTP/1.1\r\nHost: w\r\nContent-Length: 4096\r\n\r\n"+half)
		time.Sleep(600 * time.Millisecond) // twice upstream_timeout; far inside body_read_timeout
		_, _ = io.WriteString(conn, half)
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		conn.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("slow upload %d: %d %s %s; want WeChat's 200 answer", i, resp.StatusCode, resp.Header.Get("X-WXProxy-Error"), body)
		}
	}
	if st := e.breaker.State(); st.State != "closed" {
		t.Errorf("breaker %s (%d failures) after two slow uploads; want closed", st.State, st.Counts.TotalFailures)
	}
	if a := e.get(t, "/cgi-bin/user/get"); a.status != http.StatusOK {
		t.Errorf("innocent caller after two slow uploads: %d %s", a.status, a.body)
	}
}
