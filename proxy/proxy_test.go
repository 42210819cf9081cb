package proxy_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wxproxy/wxproxy/proxy"
	"github.com/wxproxy/wxproxy/token"
	"github.com/wxproxy/wxproxy/wechat"
)

func TestInjectsTokenAndStripsCallers(t *testing.T) {
	e := newEnv(t, envOptions{})
	a := e.get(t, "/cgi-bin/user/info?openid=o1&access_token=caller-garbage&lang=zh_CN", "X-WXProxy-Key", "k", "X-Forwarded-For", "1.2.3.4")
	if a.status != 200 || a.ErrCode != 0 {
		t.Fatalf("status %d errcode %d: %s", a.status, a.ErrCode, a.body)
	}
	if got, want := a.Echo.AppID, mainAppID; got != want {
		t.Errorf("echo appid = %q, want %q", got, want)
	}
	if _, ok := a.Echo.Query["access_token"]; ok {
		t.Errorf("simulator echoed access_token in query: %v", a.Echo.Query)
	}
	if got := fmt.Sprint(a.Echo.Query); got != "map[lang:[zh_CN] openid:[o1]]" {
		t.Errorf("query = %s", got)
	}
	if a.Echo.RequestID == "" {
		t.Error("no X-Request-Id reached WeChat")
	}
	// The real token never reaches the caller.
	for _, tok := range e.liveTokens() {
		if bytes.Contains(a.body, []byte(tok)) || strings.Contains(fmt.Sprint(a.header), tok) {
			t.Fatal("a live token reached the caller")
		}
	}
}

func TestRouting(t *testing.T) {
	e := newEnv(t, envOptions{})
	ph := e.get(t, "/cgi-bin/token?grant_type=client_credential&appid="+miniAppID+"&secret=whatever").AccessToken
	tests := []struct {
		name      string
		path      string
		hdr       []string
		wantAppID string
		wantPath  string
	}{
		{"path prefix", "/mini/cgi-bin/x", nil, miniAppID, "/cgi-bin/x"},
		{"header", "/cgi-bin/x", []string{"X-WXProxy-App", "mini"}, miniAppID, "/cgi-bin/x"},
		{"prefix beats header", "/main/cgi-bin/x", []string{"X-WXProxy-App", "mini"}, mainAppID, "/cgi-bin/x"},
		{"placeholder", "/cgi-bin/x?access_token=" + ph, nil, miniAppID, "/cgi-bin/x"},
		{"default app", "/cgi-bin/x", nil, mainAppID, "/cgi-bin/x"},
		{"wecom agent", "/corp-b/cgi-bin/user/get?userid=u", nil, corpID, "/cgi-bin/user/get"},
		{"not an app prefix", "/unknown/cgi-bin/x", nil, mainAppID, "/unknown/cgi-bin/x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := e.get(t, tt.path, tt.hdr...)
			if a.ErrCode != 0 || a.Echo.AppID != tt.wantAppID || a.Echo.Path != tt.wantPath {
				t.Errorf("GET %s: errcode %d, appid %q, path %q; want appid %q path %q", tt.path, a.ErrCode, a.Echo.AppID, a.Echo.Path, tt.wantAppID, tt.wantPath)
			}
		})
	}
}

func TestUnknownApp(t *testing.T) {
	e := newEnv(t, envOptions{defaultApp: "-"})
	tests := []struct {
		name string
		path string
		hdr  []string
	}{
		{"no app, no default", "/cgi-bin/x", nil},
		{"unknown header", "/cgi-bin/x", []string{"X-WXProxy-App", "nope"}},
		{"stale placeholder", "/cgi-bin/x?access_token=wxp.gone.abc", nil},
		{"unknown appid", "/cgi-bin/token?grant_type=client_credential&appid=wx9999999999999999&secret=x", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := e.get(t, tt.path, tt.hdr...)
			checkError(t, a, 404, wechat.CodeInvalidAppID, "unknown_app")
		})
	}
}

func checkError(tb testing.TB, a *answer, status, errcode int, kind string) {
	tb.Helper()
	if a.status != status || a.ErrCode != errcode || a.header.Get("X-WXProxy-Error") != kind {
		tb.Errorf("got %d errcode %d X-WXProxy-Error %q (%s); want %d %d %q", a.status, a.ErrCode, a.header.Get("X-WXProxy-Error"), a.body, status, errcode, kind)
	}
	if !strings.HasPrefix(a.ErrMsg, "wxproxy: ") {
		tb.Errorf("errmsg %q does not start with \"wxproxy: \"", a.ErrMsg)
	}
	if got := a.header.Get("Content-Type"); !strings.HasPrefix(got, "application/json") {
		tb.Errorf("Content-Type = %q, want JSON", got)
	}
}

func TestSDKTokenFlowIsLocal(t *testing.T) {
	e := newEnv(t, envOptions{})
	before := map[string]int64{mainAppID: e.fetches(mainAppID), corpID: e.fetches(corpID)}
	tests := []struct {
		name, method, path, body string
		wantApp                  string
		wecom                    bool
	}{
		{"classic", "GET", "/cgi-bin/token?grant_type=client_credential&appid=" + mainAppID + "&secret=anything", "", mainAppID, false},
		{"stable", "POST", "/cgi-bin/stable_token", `{"grant_type":"client_credential","appid":"` + mainAppID + `","secret":"x","force_refresh":true}`, mainAppID, false},
		{"wecom agent a", "GET", "/cgi-bin/gettoken?corpid=" + corpID + "&corpsecret=" + agentA, "", corpID, true},
		{"wecom agent b by prefix", "GET", "/corp-b/cgi-bin/gettoken?corpid=" + corpID + "&corpsecret=wrong", "", corpID, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var body []byte
			if tt.body != "" {
				body = []byte(tt.body)
			}
			a := e.do(t, tt.method, tt.path, body)
			if a.status != 200 || !strings.HasPrefix(a.AccessToken, "wxp.") || a.ExpiresIn != 7200 {
				t.Fatalf("token answer %d %s", a.status, a.body)
			}
			if got := bytes.Contains(a.body, []byte(`"errcode":0`)); got != tt.wecom {
				t.Errorf("errcode 0 present = %v, want %v (WeCom shape)", got, tt.wecom)
			}
			// The SDK then calls an API with its token: it works.
			api := e.get(t, "/cgi-bin/user/info?openid=o&access_token="+a.AccessToken)
			if api.ErrCode != 0 || api.Echo.AppID != tt.wantApp {
				t.Errorf("API with placeholder: errcode %d appid %q: %s", api.ErrCode, api.Echo.AppID, api.body)
			}
		})
	}
	// Agent selection by corpsecret.
	a := e.get(t, "/cgi-bin/gettoken?corpid="+corpID+"&corpsecret="+agentB)
	if got, want := a.AccessToken[:len("wxp.corp-b.")], "wxp.corp-b."; got != want {
		t.Errorf("gettoken with agent B's secret → %q, want prefix %q", a.AccessToken, want)
	}
	checkError(t, e.get(t, "/cgi-bin/gettoken?corpid="+corpID+"&corpsecret=nobody"), 404, 40013, "unknown_app")
	checkError(t, e.do(t, "POST", "/cgi-bin/stable_token", []byte("appid=x")), 400, 47001, "bad_request")
	for id, n := range before {
		if got := e.fetches(id); got != n {
			t.Errorf("simulator token fetches for %s: %d → %d, want no new fetch", id, n, got)
		}
	}
}

func TestCredentialPaths(t *testing.T) {
	e := newEnv(t, envOptions{})
	// jscode2session: the caller sends no secret; wxproxy sets appid and secret.
	a := e.get(t, "/mini/sns/jscode2session?js_code=code123&grant_type=authorization_code&appid=fake&secret=fake")
	if a.status != 200 || a.OpenID == "" || a.ErrCode != 0 {
		t.Fatalf("jscode2session: %s", a.body)
	}
	// OAuth: code → user token; /sns/userinfo carries the USER's token untouched.
	a = e.get(t, "/sns/oauth2/access_token?code=c1&grant_type=authorization_code")
	if a.AccessToken == "" || a.ErrCode != 0 {
		t.Fatalf("oauth2/access_token: %s", a.body)
	}
	u := e.get(t, "/sns/userinfo?access_token="+a.AccessToken+"&openid="+a.OpenID)
	if u.ErrCode != 0 || u.OpenID != a.OpenID {
		t.Errorf("/sns/userinfo with the user's token: %s", u.body)
	}
	// With an app token in its place it fails: proof wxproxy did not inject one.
	u = e.get(t, "/sns/userinfo?access_token=not-a-user-token&openid=x")
	if u.ErrCode == 0 {
		t.Errorf("/sns/userinfo with a bogus token succeeded: wxproxy injected something")
	}
}

func TestBlockedPaths(t *testing.T) {
	e := newEnv(t, envOptions{})
	before := e.sim.Stats().APICalls
	for _, p := range []string{"/cgi-bin/clear_quota", "/cgi-bin/clear_quota/v2", "/cgi-bin/openapi/quota/clear", "/main/cgi-bin/clear_quota"} {
		checkError(t, e.do(t, "POST", p, []byte(`{"appid":"`+mainAppID+`"}`)), 403, 48001, "blocked_path")
	}
	after := e.sim.Stats().APICalls
	for _, p := range []string{"/cgi-bin/clear_quota", "/cgi-bin/clear_quota/v2", "/cgi-bin/openapi/quota/clear"} {
		if after[p] != before[p] {
			t.Errorf("%s reached WeChat", p)
		}
	}
}

func TestRetryReplaysBody(t *testing.T) {
	for _, mode := range []token.Mode{token.Stable, token.Classic} {
		t.Run(string(mode), func(t *testing.T) {
			e := newEnv(t, envOptions{mode: mode})
			body := []byte(`{"touser":"o1","msgtype":"text","text":{"content":"你好"}}`)
			sum := sha256.Sum256(body)
			before := e.fetches(mainAppID)
			if _, err := e.sim.Invalidate(mainAppID); err != nil {
				t.Fatal(err)
			}
			a := e.do(t, "POST", "/cgi-bin/message/custom/send?x=1", body)
			if a.ErrCode != 0 {
				t.Fatalf("after invalidation: %s", a.body)
			}
			if got := a.header.Get("X-WXProxy-Retried"); got != "1" {
				t.Errorf("X-WXProxy-Retried = %q, want 1", got)
			}
			if got, want := a.Echo.BodySHA256, hex.EncodeToString(sum[:]); got != want {
				t.Errorf("replayed body sha256 = %s, want %s", got, want)
			}
			if got := e.fetches(mainAppID) - before; got != 1 {
				t.Errorf("token fetches = %d, want 1", got)
			}
			// The next call needs no retry.
			if a := e.get(t, "/cgi-bin/x"); a.header.Get("X-WXProxy-Retried") != "" || a.ErrCode != 0 {
				t.Errorf("second call: retried=%q %s", a.header.Get("X-WXProxy-Retried"), a.body)
			}
		})
	}
}

// TestConcurrentDeadToken: 200 requests meet one dead token; exactly one
// fetch, no token error reaches a caller, nothing is sent twice.
func TestConcurrentDeadToken(t *testing.T) {
	for _, tc := range []struct {
		mode  token.Mode
		app   string
		appid string
	}{
		{token.Stable, "main", mainAppID},
		{token.Classic, "main", mainAppID},
		{token.WeCom, "corp-a", corpID},
	} {
		t.Run(string(tc.mode), func(t *testing.T) {
			o := envOptions{mode: tc.mode}
			if tc.mode == token.WeCom {
				o.mode = token.Stable // "main" stays an official account
			}
			e := newEnv(t, o)
			before := e.fetches(tc.appid)
			if _, err := e.sim.Invalidate(tc.appid); err != nil {
				t.Fatal(err)
			}
			var wg sync.WaitGroup
			errs := make(chan string, 200)
			for i := range 200 {
				wg.Go(func() {
					body := fmt.Appendf(nil, `{"n":%d}`, i)
					req, _ := http.NewRequest("POST", e.url+"/"+tc.app+"/cgi-bin/message/custom/send", bytes.NewReader(body))
					req.Header.Set("X-Request-Id", fmt.Sprintf("req-%d", i))
					resp, err := http.DefaultClient.Do(req)
					if err != nil {
						errs <- err.Error()
						return
					}
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if code, _ := wechat.ScanErrcode(b); code != 0 {
						errs <- string(b)
					}
				})
			}
			wg.Wait()
			close(errs)
			for msg := range errs {
				t.Errorf("caller saw an error: %s", msg)
			}
			if got := e.fetches(tc.appid) - before; got != 1 {
				t.Errorf("token fetches = %d, want exactly 1", got)
			}
			if d := e.sim.Stats().DuplicateRequestIDs; len(d) != 0 {
				t.Errorf("requests sent twice: %v", d)
			}
		})
	}
}

func TestLargeBodyNotReplayedButRefreshed(t *testing.T) {
	e := newEnv(t, envOptions{mode: token.Classic, retryBodyBytes: 1024})
	big := bytes.Repeat([]byte("x"), 4096)
	before := e.fetches(mainAppID)
	if _, err := e.sim.Invalidate(mainAppID); err != nil {
		t.Fatal(err)
	}
	a := e.do(t, "POST", "/cgi-bin/media/uploadimg", big)
	if a.ErrCode != wechat.CodeInvalidCredential || a.header.Get("X-WXProxy-Retried") != "" {
		t.Fatalf("large body after invalidation: want WeChat's 40001 unretried, got %s", a.body)
	}
	// The refresh happened before that answer: the caller's own retry succeeds.
	a = e.do(t, "POST", "/cgi-bin/media/uploadimg", big)
	if a.ErrCode != 0 || a.Echo.BodyLen != len(big) {
		t.Errorf("caller's retry: %s", a.body)
	}
	if got := e.fetches(mainAppID) - before; got != 1 {
		t.Errorf("token fetches = %d, want 1", got)
	}
	// Chunked bodies (unknown length) are buffered when small, streamed when large.
	for _, n := range []int{100, 4096} {
		req, _ := http.NewRequest("POST", e.url+"/cgi-bin/x", io.MultiReader(bytes.NewReader(make([]byte, n))))
		req.ContentLength = -1
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !bytes.Contains(b, fmt.Appendf(nil, `"body_len":%d`, n)) {
			t.Errorf("chunked body of %d: %s", n, b)
		}
	}
}

func TestBodyTooLarge(t *testing.T) {
	e := newEnv(t, envOptions{maxBodyBytes: 1000, retryBodyBytes: 100})
	before := e.sim.Stats().APICalls["/cgi-bin/x"]
	checkError(t, e.do(t, "POST", "/cgi-bin/x", make([]byte, 1001)), 413, 44002, "body_too_large")
	if after := e.sim.Stats().APICalls["/cgi-bin/x"]; after != before {
		t.Errorf("an oversize body with Content-Length reached WeChat")
	}
	// Unknown length, discovered while streaming.
	req, _ := http.NewRequest("POST", e.url+"/cgi-bin/x", io.MultiReader(bytes.NewReader(make([]byte, 5000))))
	req.ContentLength = -1
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 413 {
		t.Errorf("chunked oversize body: status %d, want 413", resp.StatusCode)
	}
}

func TestBinaryAnswerStreams(t *testing.T) {
	e := newEnv(t, envOptions{})
	const n = 3 << 20
	req, _ := http.NewRequest("GET", e.url+"/cgi-bin/media/get?media_id=size-"+fmt.Sprint(n), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got, err := io.Copy(io.Discard, resp.Body)
	if err != nil || got != n {
		t.Fatalf("media body: %d bytes, err %v; want %d", got, err, n)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "image/jpeg" {
		t.Errorf("Content-Type = %q", ct)
	}
	if resp.Header.Get("Content-Disposition") == "" {
		t.Error("Content-Disposition not passed back")
	}
}

func TestTokenExpiredIsRetried(t *testing.T) {
	e := newEnv(t, envOptions{mode: token.Classic})
	if err := e.sim.Advance(2*3600e9 + 1e9); err != nil { // 2h1s: the token expired in WeChat's eyes
		t.Fatal(err)
	}
	a := e.get(t, "/cgi-bin/x")
	if a.ErrCode != 0 || a.header.Get("X-WXProxy-Retried") != "1" {
		t.Errorf("after expiry: retried=%q %s", a.header.Get("X-WXProxy-Retried"), a.body)
	}
	if got := e.sim.Stats().Errcodes[wechat.CodeTokenExpired]; got != 1 {
		t.Errorf("simulator answered 42001 %d times, want 1", got)
	}
}

func TestStableForcesWhenNormalModeReturnsRejected(t *testing.T) {
	e := newEnv(t, envOptions{mode: token.Stable})
	// WeChat rejects a token that normal mode still returns (count 1).
	e.simPost(t, "/sim/faults", `{"path":"/cgi-bin/x","errcode":40001,"count":1}`)
	a := e.get(t, "/cgi-bin/x")
	if a.ErrCode != 0 || a.header.Get("X-WXProxy-Retried") != "1" {
		t.Fatalf("first rejection: %s", a.body)
	}
	if got := e.sim.Stats().TokenFetches[mainAppID].StableForced; got != 1 {
		t.Errorf("forced refreshes = %d, want 1", got)
	}
	// Within 30 s a second rejection cannot force: WeChat's answer goes back.
	e.simPost(t, "/sim/faults", `{"path":"/cgi-bin/x","errcode":40001,"count":1}`)
	a = e.get(t, "/cgi-bin/x")
	if a.ErrCode != wechat.CodeInvalidCredential {
		t.Errorf("second rejection: want WeChat's 40001, got %s", a.body)
	}
	if got := e.sim.Stats().TokenFetches[mainAppID].StableForced; got != 1 {
		t.Errorf("forced refreshes = %d, want still 1", got)
	}
}

func TestTokenUnavailable(t *testing.T) {
	e := newEnv(t, envOptions{noStartup: true})
	e.simPost(t, "/sim/faults", `{"path":"/cgi-bin/stable_token","status":500}`)
	a := e.get(t, "/cgi-bin/x")
	checkError(t, a, 503, -1, "token_unavailable")
	// Backing off: further calls do not hammer the token endpoint.
	for range 20 {
		e.get(t, "/cgi-bin/x")
	}
	if got := e.sim.Stats().APICalls["/cgi-bin/stable_token"]; got != 1 {
		t.Errorf("token endpoint calls while failing = %d, want 1", got)
	}
}

func TestUpstreamErrors(t *testing.T) {
	t.Run("unreachable", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		e := newEnv(t, envOptions{transport: redirectTransport(addr)})
		checkError(t, e.get(t, "/cgi-bin/x"), 502, -1, "upstream_error")
	})
	t.Run("drop", func(t *testing.T) {
		e := newEnv(t, envOptions{})
		e.simPost(t, "/sim/faults", `{"path":"/cgi-bin/x","drop":true}`)
		checkError(t, e.get(t, "/cgi-bin/x"), 502, -1, "upstream_error")
	})
	t.Run("timeout", func(t *testing.T) {
		tr, err := proxy.NewClient(proxy.TransportOptions{Timeout: 50 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		e := newEnv(t, envOptions{transport: tr})
		e.simPost(t, "/sim/faults", `{"path":"/cgi-bin/x","latency":"2s","count":1}`)
		checkError(t, e.get(t, "/cgi-bin/x"), 504, -1, "upstream_error")
	})
	t.Run("upstream 5xx passes through", func(t *testing.T) {
		e := newEnv(t, envOptions{})
		e.simPost(t, "/sim/faults", `{"path":"/cgi-bin/x","status":502,"count":1}`)
		if a := e.get(t, "/cgi-bin/x"); a.status != 502 || a.header.Get("X-WXProxy-Error") != "" {
			t.Errorf("upstream 502: got %d %q", a.status, a.header.Get("X-WXProxy-Error"))
		}
	})
}

// redirectTransport sends every request to addr.
func redirectTransport(addr string) *proxy.Client {
	c, err := proxy.NewClient(proxy.TransportOptions{Dial: func(string) (net.Conn, error) {
		return net.Dial("tcp", addr)
	}})
	if err != nil {
		panic(err)
	}
	return c
}

func TestNothingLeaks(t *testing.T) {
	e := newEnv(t, envOptions{mode: token.Classic})
	e.simPost(t, "/sim/faults", `{"path":"/cgi-bin/x","drop":true,"count":1}`)
	var bodies bytes.Buffer
	for _, p := range []string{"/cgi-bin/x", "/cgi-bin/token?appid=" + mainAppID + "&secret=" + mainSecret, "/mini/sns/jscode2session?js_code=c", "/cgi-bin/y"} {
		a := e.get(t, p)
		bodies.Write(a.body)
		fmt.Fprint(&bodies, a.header)
	}
	if _, err := e.sim.Invalidate(mainAppID); err != nil {
		t.Fatal(err)
	}
	a := e.get(t, "/cgi-bin/x")
	bodies.Write(a.body)
	secrets := append(e.liveTokens(), mainSecret, miniSecret, agentA, agentB)
	logs := e.logs.String()
	for _, s := range secrets {
		if strings.Contains(logs, s) {
			t.Errorf("log contains a token or secret")
		}
		if strings.Contains(bodies.String(), s) {
			t.Errorf("a response contains a token or secret")
		}
	}
	if !strings.Contains(logs, `"msg":"request"`) {
		t.Error("no access log lines")
	}
}
