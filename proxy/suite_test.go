package proxy_test

import (
	"context"
	"encoding/json"
	"errors"
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

	"github.com/wxproxy/wxproxy/proxy"
	"github.com/wxproxy/wxproxy/token"
	"github.com/wxproxy/wxproxy/wechat"
)

// rotating is a TokenSource whose Invalidate mints the next token.
type rotating struct {
	prefix string
	n      atomic.Int64
	cur    atomic.Pointer[token.Token]
	err    error
}

func newRotating(prefix string) *rotating {
	r := &rotating{prefix: prefix}
	r.next()
	return r
}

func (r *rotating) next() *token.Token {
	n := r.n.Add(1)
	t := &token.Token{Value: r.prefix + "-" + strings.Repeat("z", 20) + string(rune('a'+n)), ObtainedAt: time.Now(), ExpiresAt: time.Now().Add(time.Hour)}
	r.cur.Store(t)
	return t
}

func (r *rotating) Current() *token.Token { return r.cur.Load() }
func (r *rotating) Get(context.Context) (*token.Token, error) {
	if r.err != nil {
		return nil, r.err
	}
	return r.cur.Load(), nil
}
func (r *rotating) Invalidate(_ context.Context, bad string) (*token.Token, error) {
	if cur := r.cur.Load(); cur.Value != bad {
		return cur, nil
	}
	return r.next(), nil
}

type fakeCorps struct{ corps map[string]*rotating }

func (f fakeCorps) Merchant(_ context.Context, corpid string) (proxy.TokenSource, error) {
	if c := f.corps[corpid]; c != nil {
		return c, nil
	}
	return nil, errors.New("unknown corp")
}

func (f fakeCorps) QueryAuth(context.Context, string) (proxy.Authorization, error) {
	return proxy.Authorization{}, errors.New("not an open platform")
}

type suiteEnv struct {
	url                     string
	suiteTok, provTok, corp *rotating
	mu                      sync.Mutex
	seen                    []*http.Request
	dead                    map[string]int    // token → errcode WeCom answers for it
	answers                 map[string]string // path → WeCom's answer, instead of the echo
	exchanged               []string
}

func (e *suiteEnv) last() *http.Request {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.seen) == 0 {
		return nil
	}
	return e.seen[len(e.seen)-1]
}

func newSuiteEnv(t *testing.T, withProvider bool, acc ...proxy.Access) *suiteEnv {
	e := &suiteEnv{suiteTok: newRotating("suitetok"), provTok: newRotating("providertok"), corp: newRotating("corptok"), dead: map[string]int{}, answers: map[string]string{}}
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.mu.Lock()
		e.seen = append(e.seen, r)
		q := r.URL.Query()
		for _, p := range []string{"access_token", "suite_access_token", "provider_access_token"} {
			if code := e.dead[q.Get(p)]; code != 0 {
				e.mu.Unlock()
				io.WriteString(w, `{"errcode":`+itoa(code)+`,"errmsg":"dead"}`)
				return
			}
		}
		if a, ok := e.answers[r.URL.Path]; ok {
			e.mu.Unlock()
			io.WriteString(w, a)
			return
		}
		e.mu.Unlock()
		// Echo the token back, as WeChat's rid/get may.
		io.WriteString(w, `{"errcode":0,"errmsg":"ok","echo":"`+r.URL.RawQuery+`"}`)
	}))
	t.Cleanup(up.Close)
	u, _ := url.Parse(up.URL)
	pl := proxy.Platform{Name: "suiteco", Kind: proxy.PlatformWeComSuite, ComponentAppID: "wwsuite0000000001", Secret: "suitesecret",
		Upstream: u, Component: e.suiteTok, Merchants: fakeCorps{map[string]*rotating{"wwcorpa": e.corp}},
		PermanentCode: func(_ context.Context, code string) (proxy.SuiteInstallation, error) {
			if code == "used" {
				return proxy.SuiteInstallation{}, &wechat.APIError{Code: 40078, Msg: "invalid auth_code"}
			}
			e.mu.Lock()
			e.exchanged = append(e.exchanged, code)
			e.mu.Unlock()
			return proxy.SuiteInstallation{CorpID: "wwcorpa", HasToken: false, Answer: map[string]json.RawMessage{
				"auth_corp_info": json.RawMessage(`{"corpid":"wwcorpa","corp_name":"A"}`), "errcode": json.RawMessage(`0`)}}, nil
		},
	}
	if withProvider {
		pl.Provider, pl.ProviderCorpID = e.provTok, "wwprovider"
	}
	opts := proxy.Options{Platforms: []proxy.Platform{pl}}
	if len(acc) > 0 {
		opts.Access = acc[0]
	}
	p, err := proxy.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{e.suiteTok.Current().Value, e.provTok.Current().Value} {
		p.HoldPlatformToken("suiteco", "", v)
	}
	p.HoldPlatformToken("suiteco", "wwcorpa", e.corp.Current().Value)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go p.Serve(ln)
	t.Cleanup(func() { p.Shutdown(context.Background()) })
	e.url = "http://" + ln.Addr().String()
	return e
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

func call(t *testing.T, method, u, body string) (int, map[string]any, http.Header) {
	t.Helper()
	req, _ := http.NewRequest(method, u, strings.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s %s: %d %s", method, u, resp.StatusCode, b)
	}
	return resp.StatusCode, m, resp.Header
}

// TestSuiteRouting: /{p}@{corpid}/ injects the corp token as
// access_token, /{p}/ the suite token as suite_access_token and the
// provider token as provider_access_token for provider APIs; caller
// tokens are stripped; no real token reaches the caller.
func TestSuiteRouting(t *testing.T) {
	e := newSuiteEnv(t, true)
	for _, tc := range []struct{ path, param, want string }{
		{"/suiteco@wwcorpa/cgi-bin/user/get?userid=u&access_token=mine", "access_token", e.corp.Current().Value},
		{"/suiteco/cgi-bin/service/get_pre_auth_code?suite_access_token=mine", "suite_access_token", e.suiteTok.Current().Value},
		{"/suiteco/cgi-bin/service/get_admin_list?access_token=x", "suite_access_token", e.suiteTok.Current().Value},
		{"/suiteco/cgi-bin/service/get_login_info?provider_access_token=mine", "provider_access_token", e.provTok.Current().Value},
		{"/suiteco/cgi-bin/license/create_new_order", "provider_access_token", e.provTok.Current().Value},
	} {
		code, m, _ := call(t, "POST", e.url+tc.path, `{}`)
		if code != 200 || m["errcode"] != float64(0) {
			t.Fatalf("%s: %d %v", tc.path, code, m)
		}
		q := e.last().URL.Query()
		if got := q[tc.param]; len(got) != 1 || got[0] != tc.want {
			t.Errorf("%s: %s = %v, want the held token", tc.path, tc.param, got)
		}
		for _, other := range []string{"access_token", "suite_access_token", "provider_access_token", "component_access_token"} {
			if other != tc.param && q.Has(other) {
				t.Errorf("%s: the caller's %s was forwarded", tc.path, other)
			}
		}
		if s, _ := m["echo"].(string); strings.Contains(s, "tok-") {
			t.Errorf("%s: a real token reached the caller: %s", tc.path, s)
		}
	}
	// X-WXProxy-App names a corp too.
	req, _ := http.NewRequest("GET", e.url+"/cgi-bin/user/list", nil)
	req.Header.Set("X-WXProxy-App", "suiteco@wwcorpa")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
		t.Fatalf("X-WXProxy-App: %v %v", resp, err)
	}
	if got := e.last().URL.Query().Get("access_token"); got != e.corp.Current().Value {
		t.Errorf("X-WXProxy-App corp token = %q", got)
	}
	// An unknown corp is 404 unknown_app.
	if code, m, h := call(t, "GET", e.url+"/suiteco@wwnobody/cgi-bin/user/list", ""); code != 404 || h.Get("X-WXProxy-Error") != "unknown_app" {
		t.Errorf("unknown corp: %d %v", code, m)
	}
}

// TestSuiteRetry: 42009 on a suite API and 42001 on a corp API each
// refresh their token once and replay the request.
func TestSuiteRetry(t *testing.T) {
	e := newSuiteEnv(t, true)
	e.mu.Lock()
	e.dead[e.suiteTok.Current().Value] = 42009
	e.dead[e.corp.Current().Value] = 42001
	e.dead[e.provTok.Current().Value] = 40082
	e.mu.Unlock()
	for _, path := range []string{"/suiteco/cgi-bin/service/get_pre_auth_code", "/suiteco@wwcorpa/cgi-bin/user/list", "/suiteco/cgi-bin/service/get_login_info"} {
		code, m, h := call(t, "POST", e.url+path, `{}`)
		if code != 200 || m["errcode"] != float64(0) || h.Get("X-WXProxy-Retried") != "1" {
			t.Errorf("%s: %d %v retried=%q", path, code, m, h.Get("X-WXProxy-Retried"))
		}
	}
	for _, r := range []*rotating{e.suiteTok, e.corp, e.provTok} {
		if r.n.Load() != 2 {
			t.Errorf("%s refreshed %d times, want 1", r.prefix, r.n.Load()-1)
		}
	}
	// 42009 on a corp API is not a corp token error.
	e.mu.Lock()
	e.dead[e.corp.Current().Value] = 42009
	e.mu.Unlock()
	if _, m, h := call(t, "GET", e.url+"/suiteco@wwcorpa/cgi-bin/user/list", ""); m["errcode"] != float64(42009) || h.Get("X-WXProxy-Retried") != "" {
		t.Errorf("42009 on a corp API: %v", m)
	}
}

// TestSuiteLocalAnswers: the credential endpoints answer locally with
// placeholders that route back to the suite, its provider and its corps.
func TestSuiteLocalAnswers(t *testing.T) {
	e := newSuiteEnv(t, true)
	n := len(e.seen)
	_, m, _ := call(t, "POST", e.url+"/cgi-bin/service/get_suite_token", `{"suite_id":"wwsuite0000000001","suite_secret":"x","suite_ticket":"y"}`)
	suitePH, _ := m["suite_access_token"].(string)
	if !strings.HasPrefix(suitePH, "wxp.suiteco.") || m["expires_in"] != float64(7200) || m["errcode"] != float64(0) {
		t.Fatalf("get_suite_token = %v", m)
	}
	_, m, _ = call(t, "POST", e.url+"/cgi-bin/service/get_provider_token", `{"corpid":"wwprovider","provider_secret":"x"}`)
	provPH, _ := m["provider_access_token"].(string)
	if !strings.HasPrefix(provPH, "wxp.suiteco.") {
		t.Fatalf("get_provider_token = %v", m)
	}
	_, m, _ = call(t, "POST", e.url+"/cgi-bin/service/get_corp_token?suite_access_token="+suitePH, `{"auth_corpid":"wwcorpa","permanent_code":"whatever"}`)
	corpPH, _ := m["access_token"].(string)
	if !strings.HasPrefix(corpPH, "wxp.suiteco@wwcorpa.") {
		t.Fatalf("get_corp_token = %v", m)
	}
	if len(e.seen) != n {
		t.Errorf("a credential endpoint was forwarded")
	}
	// The placeholders route: no prefix needed.
	call(t, "GET", e.url+"/cgi-bin/service/get_pre_auth_code?suite_access_token="+suitePH, "")
	if got := e.last().URL.Query().Get("suite_access_token"); got != e.suiteTok.Current().Value {
		t.Errorf("suite placeholder routed with %q", got)
	}
	call(t, "POST", e.url+"/cgi-bin/service/get_login_info?provider_access_token="+provPH, "{}")
	if got := e.last().URL.Query().Get("provider_access_token"); got != e.provTok.Current().Value {
		t.Errorf("provider placeholder routed with %q", got)
	}
	call(t, "GET", e.url+"/cgi-bin/user/list?access_token="+corpPH, "")
	if got := e.last().URL.Query().Get("access_token"); got != e.corp.Current().Value {
		t.Errorf("corp placeholder routed with %q", got)
	}
	// get_permanent_code: exchanged by the suite; placeholders returned.
	_, m, _ = call(t, "POST", e.url+"/suiteco/cgi-bin/service/get_permanent_code", `{"auth_code":"code-1"}`)
	if m["permanent_code"] != "wxp.permanent_code.held-by-wxproxy" || !strings.HasPrefix(m["access_token"].(string), "wxp.suiteco@wwcorpa.") {
		t.Errorf("get_permanent_code = %v", m)
	}
	if info, _ := m["auth_corp_info"].(map[string]any); info["corpid"] != "wwcorpa" {
		t.Errorf("auth_corp_info = %v", m["auth_corp_info"])
	}
	_, m, _ = call(t, "POST", e.url+"/suiteco/cgi-bin/service/v2/get_permanent_code", `{"auth_code":"code-2"}`)
	if _, has := m["access_token"]; has || m["permanent_code"] != "wxp.permanent_code.held-by-wxproxy" {
		t.Errorf("v2/get_permanent_code = %v", m)
	}
	if len(e.exchanged) != 2 || len(e.seen) != n+3 {
		t.Errorf("exchanged %v; forwarded %d", e.exchanged, len(e.seen)-n)
	}
	// A refused code comes back in WeCom's shape.
	_, m, _ = call(t, "POST", e.url+"/suiteco/cgi-bin/service/get_permanent_code", `{"auth_code":"used"}`)
	if m["errcode"] != float64(40078) {
		t.Errorf("refused code = %v", m)
	}
	// Bad input.
	for _, tc := range []struct{ path, body string }{
		{"/suiteco/cgi-bin/service/get_permanent_code", `{}`},
		{"/suiteco/cgi-bin/service/get_corp_token", `{"auth_corpid":"wwnobody"}`},
		{"/cgi-bin/service/get_suite_token", `{"suite_id":"wwother"}`},
		{"/suiteco/cgi-bin/service/get_suite_token", `not json`},
	} {
		if code, m, _ := call(t, "POST", e.url+tc.path, tc.body); code < 400 || m["errcode"] == float64(0) {
			t.Errorf("%s %s: %d %v", tc.path, tc.body, code, m)
		}
	}
}

// TestSuiteWithoutProvider: provider APIs and get_provider_token are
// refused with a clear error when no provider is configured.
func TestSuiteWithoutProvider(t *testing.T) {
	e := newSuiteEnv(t, false)
	for _, path := range []string{"/suiteco/cgi-bin/service/get_login_info", "/suiteco/cgi-bin/service/get_provider_token"} {
		code, m, h := call(t, "POST", e.url+path, `{}`)
		if code != 503 || h.Get("X-WXProxy-Error") != "token_unavailable" || !strings.Contains(m["errmsg"].(string), "provider_secret") {
			t.Errorf("%s: %d %v", path, code, m)
		}
	}
}
