package proxy_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wxproxy/wxproxy/proxy"
	"github.com/wxproxy/wxproxy/ratelimit"
	"github.com/wxproxy/wxproxy/token"
	"github.com/wxproxy/wxproxy/wechat"
)

// Attacks on the third-party platform surfaces of the caller port (SPEC
// §12): a fake WeChat that answers what the test wants, a component and
// merchants with fixed tokens, and a caller that tries to get a credential
// out or reach what it should not.

const (
	atkComponentToken = "COMPONENT-TOKEN-0123456789abcdefghij"
	atkMerchantToken  = "MERCHANT-TOKEN-A-0123456789abcdefghij"
	atkMerchantAppID  = "wxmerchant0000000a"
	atkComponentAppID = "wxc0ffee0000000001"
	// A refresh token WeChat knows and wxproxy does not hold (a merchant
	// authorized while wxproxy was down, or before it was deployed).
	atkUnheldRefresh = "refreshtoken@@@UNHELD-0123456789abcdefghijklmnop"
)

// fixedTokens is a TokenSource with one token that never changes.
type fixedTokens struct{ t *token.Token }

func newFixed(v string) fixedTokens {
	return fixedTokens{&token.Token{Value: v, ObtainedAt: time.Now(), ExpiresAt: time.Now().Add(time.Hour)}}
}
func (f fixedTokens) Current() *token.Token                     { return f.t }
func (f fixedTokens) Get(context.Context) (*token.Token, error) { return f.t, nil }
func (f fixedTokens) Invalidate(context.Context, string) (*token.Token, error) {
	return f.t, nil
}

// fakeMerchants holds one merchant; exchanges counts the authorization
// codes it was asked to exchange with WeChat (nil = not counted).
type fakeMerchants struct {
	m         proxy.TokenSource
	exchanges *atomic.Int32
	queryAuth *func(code string) (proxy.Authorization, error) // nil or *nil = refuse every code
}

func (f fakeMerchants) Merchant(_ context.Context, appid string) (proxy.TokenSource, error) {
	if appid == atkMerchantAppID {
		return f.m, nil
	}
	return nil, errors.New("unknown merchant")
}
func (f fakeMerchants) QueryAuth(_ context.Context, code string) (proxy.Authorization, error) {
	if f.exchanges != nil {
		f.exchanges.Add(1)
	}
	if f.queryAuth != nil && *f.queryAuth != nil {
		return (*f.queryAuth)(code)
	}
	return proxy.Authorization{}, errors.New("no")
}

// platformEnv is a proxy with platform "acme" in front of a fake WeChat.
type platformEnv struct {
	url   string
	proxy *proxy.Proxy

	mu      sync.Mutex
	seen    []*http.Request // what reached WeChat
	answers map[string]string

	exchanges atomic.Int32                                   // api_query_auth exchanges asked of the platform
	queryAuth func(code string) (proxy.Authorization, error) // what the exchange gives; nil = refused
}

func newPlatformEnv(tb testing.TB, access ...proxy.Access) *platformEnv {
	tb.Helper()
	return newPlatformEnvBuffered(tb, 0, access...)
}

// newPlatformEnvBuffered is newPlatformEnv with MaxBufferedBytes set.
func newPlatformEnvBuffered(tb testing.TB, maxBuffered int64, access ...proxy.Access) *platformEnv {
	tb.Helper()
	e := &platformEnv{answers: map[string]string{}}
	var acc proxy.Access
	if len(access) > 0 {
		acc = access[0]
	}
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.mu.Lock()
		e.seen = append(e.seen, r)
		ans, ok := e.answers[r.URL.Path]
		e.mu.Unlock()
		if !ok {
			ans = `{"errcode":0,"errmsg":"ok"}`
		}
		w.Header().Set("Content-Type", "application/json; encoding=utf-8")
		_, _ = io.WriteString(w, ans)
	}))
	tb.Cleanup(up.Close)
	u, _ := url.Parse(up.URL)
	p, err := proxy.New(proxy.Options{
		Logger: slog.New(slog.DiscardHandler),
		Access: acc, MaxBufferedBytes: maxBuffered,
		Platforms: []proxy.Platform{{
			Name: "acme", ComponentAppID: atkComponentAppID, Secret: "component-secret-0123456789abcdef", Upstream: u,
			Component: newFixed(atkComponentToken), Merchants: fakeMerchants{newFixed(atkMerchantToken), &e.exchanges, &e.queryAuth},
		}},
	})
	if err != nil {
		tb.Fatal(err)
	}
	p.HoldPlatformToken("acme", "", atkComponentToken)
	p.HoldPlatformToken("acme", atkMerchantAppID, atkMerchantToken)
	e.url = serve(tb, p)
	e.proxy = p
	return e
}

func (e *platformEnv) answer(path, body string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.answers[path] = body
}

func (e *platformEnv) post(tb testing.TB, path, body string) (int, http.Header, string) {
	tb.Helper()
	resp, err := http.Post(e.url+path, "application/json", strings.NewReader(body))
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

// WeChat's authorization-management APIs answer every merchant's refresh
// token. wxproxy only scrubs the credentials it holds, so a refresh token
// it does not hold (a merchant authorized while it was down, or before it
// was deployed — exactly the migration case of POST .../recover) went to
// any caller of /{p}/cgi-bin/component/api_get_authorizer_list, and with
// it the power to mint that merchant's tokens outside wxproxy. rid/get
// echoes such an answer again, JSON-escaped inside response_body.
func TestAttackComponentAnswersHideUnheldRefreshTokens(t *testing.T) {
	e := newPlatformEnv(t)
	e.answer("/cgi-bin/component/api_get_authorizer_list",
		`{"total_count":1,"list":[{"authorizer_appid":"wxm","refresh_token":"`+atkUnheldRefresh+`","auth_time":1}]}`)
	e.answer("/cgi-bin/component/api_get_authorizer_info",
		`{"authorizer_info":{"nick_name":"m"},"authorization_info":{"authorizer_appid":"wxm","authorizer_refresh_token" : "`+atkUnheldRefresh+`"}}`)
	e.answer("/cgi-bin/openapi/rid/get",
		`{"errcode":0,"errmsg":"ok","request":{"request_url":"component_access_token=`+atkComponentToken+`","request_body":"{\"component_appid\":\"x\"}",`+
			`"response_body":"{\"list\":[{\"authorizer_appid\":\"wxm\",\"refresh_token\":\"`+atkUnheldRefresh+`\"}]}"}}`)
	// A long list streams past the errcode peek.
	long := `{"total_count":500,"list":[` + strings.Repeat(`{"authorizer_appid":"wxmerchant000000x","refresh_token":"`+atkUnheldRefresh+`","auth_time":1},`, 499) +
		`{"authorizer_appid":"wxmerchant000000y","refresh_token":"` + atkUnheldRefresh + `","auth_time":1}]}`
	e.answer("/wxa/long_list", long)
	for _, path := range []string{
		"/acme/cgi-bin/component/api_get_authorizer_list",
		"/acme/cgi-bin/component/api_get_authorizer_info",
		"/acme/cgi-bin/openapi/rid/get",
		"/acme/wxa/long_list",
	} {
		code, _, body := e.post(t, path, `{"component_appid":"`+atkComponentAppID+`"}`)
		if code != 200 {
			t.Errorf("%s: HTTP %d %s", path, code, body)
		}
		if strings.Contains(body, "UNHELD") || strings.Contains(body, atkComponentToken) {
			t.Errorf("%s: a refresh token or the component token reached the caller: %.300s", path, body)
		}
		if !strings.Contains(body, "refresh_token") {
			t.Errorf("%s: the answer lost its shape: %.300s", path, body)
		}
	}
}

// api_component_token and api_start_push_ticket take the component secret
// in their body and no token (SPEC §12, WECHAT.md): wxproxy injects no
// token into them on any route. On a merchant's route the merchant's token
// went to them, where WeChat keeps it with the call's rid.
func TestAttackNoTokenIntoSecretTakingComponentAPIs(t *testing.T) {
	e := newPlatformEnv(t)
	for _, path := range []string{
		"/acme@" + atkMerchantAppID + "/cgi-bin/component/api_component_token",
		"/acme@" + atkMerchantAppID + "/cgi-bin/component/api_start_push_ticket",
		"/acme/cgi-bin/component/api_start_push_ticket",
		"/acme@" + atkMerchantAppID + "/cgi-bin/component/API_START_PUSH_TICKET/",
	} {
		e.mu.Lock()
		e.seen = nil
		e.mu.Unlock()
		e.post(t, path+"?access_token=caller&component_access_token=caller2", `{"component_appid":"`+atkComponentAppID+`"}`)
		e.mu.Lock()
		for _, r := range e.seen {
			if q := r.URL.RawQuery; strings.Contains(q, atkMerchantToken) || strings.Contains(q, atkComponentToken) {
				t.Errorf("%s: WeChat got a token: %s", path, q)
			}
		}
		e.mu.Unlock()
	}
}

// api_query_auth is answered by wxproxy, but each call exchanges a code
// with WeChat (quota'd per component). A caller key's per-minute limit
// applies to it like to any forwarded call: before, local answers skipped
// every limit, so a caller held to 1 a minute could spend the component's
// api_query_auth quota for everyone.
func TestAttackQueryAuthHonoursCallerLimit(t *testing.T) {
	lim := ratelimit.New(ratelimit.Settings{Default: ratelimit.Limit{PerMinute: 1, Burst: 1}}, ratelimit.Options{Name: "caller:slow"})
	e := newPlatformEnv(t, proxy.Access{Keys: []proxy.CallerKey{{Name: "slow", Key: "slow-key-0123456789", Limiter: lim}}})
	var limited int
	for i := range 5 {
		req, _ := http.NewRequest(http.MethodPost, e.url+"/acme/cgi-bin/component/api_query_auth",
			strings.NewReader(`{"component_appid":"`+atkComponentAppID+`","authorization_code":"code`+string(rune('a'+i))+`"}`))
		req.Header.Set("X-WXProxy-Key", "slow-key-0123456789")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusTooManyRequests {
			limited++
		}
	}
	if n := e.exchanges.Load(); n > 1 || limited != 4 {
		t.Errorf("5 api_query_auth calls at 1/minute: %d exchanges with WeChat, %d limited; want 1 and 4", n, limited)
	}
}

// A web page's OAuth on behalf of a merchant (/sns/oauth2/component/*)
// answers the *user's* refresh_token, which the caller needs: it is not a
// platform credential and passes unmasked.
func TestComponentOAuthRefreshTokenPasses(t *testing.T) {
	e := newPlatformEnv(t)
	const user = `{"access_token":"user-oauth-token","expires_in":7200,"refresh_token":"user-refresh-token","openid":"o1","scope":"snsapi_base"}`
	e.answer("/sns/oauth2/component/access_token", user)
	e.answer("/sns/oauth2/component/refresh_token", user)
	for _, path := range []string{"/acme/sns/oauth2/component/access_token", "/acme/sns/oauth2/component/refresh_token"} {
		resp, err := http.Get(e.url + path + "?appid=wxm&code=c&grant_type=authorization_code&component_appid=" + atkComponentAppID)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != user {
			t.Errorf("%s: %d %s, want WeChat's answer unchanged", path, resp.StatusCode, b)
		}
	}
}

// A key allowed only /cgi-bin/message/** reaches nothing else on a
// platform, whatever spelling, route or method it tries, local answers
// included; WeChat sees none of the refused calls.
func TestAttackAPIAllowlistOnPlatformRoutes(t *testing.T) {
	e := newPlatformEnv(t, proxy.Access{Keys: []proxy.CallerKey{{Name: "msg", Key: "msg-key-0123456789", APIs: []string{"/cgi-bin/message/**"}}}})
	m := "/acme@" + atkMerchantAppID
	for _, tc := range []struct{ method, path, header string }{
		{"GET", m + "/cgi-bin/user/get", ""},
		{"GET", m + "/cgi-bin/message/../user/get", ""},
		{"GET", m + "/cgi-bin/message/%2e%2e/user/get", ""},
		{"GET", strings.ToUpper(m) + "/cgi-bin/user/get", ""},
		{"HEAD", m + "/cgi-bin/user/get", ""},
		{"GET", "/cgi-bin/user/get", "acme@" + atkMerchantAppID},
		{"POST", "/acme/cgi-bin/component/api_component_token", ""},
		{"POST", "/cgi-bin/component/api_component_token", ""},
		{"POST", "/acme/cgi-bin/component/api_query_auth", ""},
		{"POST", "/acme/cgi-bin/component/api_get_authorizer_list", ""},
		{"POST", "/acme/cgi-bin/openapi/rid/get", ""},
		{"GET", m + "/cgi-bin/ticket/getticket?type=jsapi", ""},
		{"GET", "/wxproxy/jssdk/config?url=http://a/&app=acme", ""},
		{"GET", m + "/cgi-bin/token?grant_type=client_credential&appid=" + atkMerchantAppID, ""},
	} {
		req, _ := http.NewRequest(tc.method, e.url+tc.path, strings.NewReader(`{"component_appid":"`+atkComponentAppID+`","authorization_code":"c"}`))
		req.Header.Set("X-WXProxy-Key", "msg-key-0123456789")
		if tc.header != "" {
			req.Header.Set("X-WXProxy-App", tc.header)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden && resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%s %s (app %q): HTTP %d, want 403", tc.method, tc.path, tc.header, resp.StatusCode)
		}
	}
	e.mu.Lock()
	seen := len(e.seen)
	e.mu.Unlock()
	if seen != 0 || e.exchanges.Load() != 0 {
		t.Errorf("WeChat saw %d refused calls and %d exchanges", seen, e.exchanges.Load())
	}
	// The allowed API works on a merchant's route.
	req, _ := http.NewRequest(http.MethodPost, e.url+m+"/cgi-bin/message/custom/send", strings.NewReader(`{}`))
	req.Header.Set("X-WXProxy-Key", "msg-key-0123456789")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
		t.Errorf("allowed API: %v %v", resp.StatusCode, err)
	}
}

// api_query_auth is answered by wxproxy from what the exchange with WeChat
// gave: WeChat's errmsg when it refused the code, func_info as WeChat sent
// it. Both are WeChat's text and pass the scrubber like any answer (before,
// a local answer was written unscanned).
func TestAttackQueryAuthAnswerIsScrubbed(t *testing.T) {
	e := newPlatformEnv(t)
	for _, qa := range []func(string) (proxy.Authorization, error){
		func(string) (proxy.Authorization, error) {
			return proxy.Authorization{}, &wechat.APIError{Code: 61009, Msg: "code invalid for component_access_token=" + atkComponentToken}
		},
		func(string) (proxy.Authorization, error) {
			return proxy.Authorization{AppID: atkMerchantAppID, ExpiresIn: 7200,
				FuncInfo: []byte(`[{"echo":"` + atkMerchantToken + `","authorizer_refresh_token":"` + atkUnheldRefresh + `"}]`)}, nil
		},
	} {
		e.mu.Lock()
		e.queryAuth = qa
		e.mu.Unlock()
		code, _, body := e.post(t, "/acme/cgi-bin/component/api_query_auth", `{"component_appid":"`+atkComponentAppID+`","authorization_code":"c"}`)
		if code != 200 || strings.Contains(body, atkComponentToken) || strings.Contains(body, atkMerchantToken) || strings.Contains(body, "UNHELD") {
			t.Errorf("api_query_auth: %d %s", code, body)
		}
	}
}

// A long component answer is read whole to be masked; that memory comes
// out of max_buffered_bytes like a buffered body, so many callers asking
// at once cannot hold more than the budget. Over it the answer is refused
// (never sent unmasked), and the budget is given back.
func TestAttackMaskedAnswersShareTheBufferBudget(t *testing.T) {
	e := newPlatformEnvBuffered(t, 32<<10)
	long := `{"list":[` + strings.Repeat(`{"authorizer_appid":"wxm","refresh_token":"`+atkUnheldRefresh+`"},`, 999) + `{}]}` // ~85 KiB
	e.answer("/cgi-bin/component/api_get_authorizer_list", long)
	code, _, body := e.post(t, "/acme/cgi-bin/component/api_get_authorizer_list", `{}`)
	if code == 200 || strings.Contains(body, "UNHELD") {
		t.Errorf("an answer over max_buffered_bytes: HTTP %d (%d bytes); want it refused, never unmasked", code, len(body))
	}
	if n := e.proxy.Buffered(); n != 0 {
		t.Errorf("buffered after the answer: %d bytes, want 0", n)
	}
	short := `{"list":[{"authorizer_appid":"wxm","refresh_token":"` + atkUnheldRefresh + `"}],"pad":"` + strings.Repeat("x", 12<<10) + `"}`
	e.answer("/cgi-bin/component/api_get_authorizer_list", short)
	if code, _, body := e.post(t, "/acme/cgi-bin/component/api_get_authorizer_list", `{}`); code != 200 || strings.Contains(body, "UNHELD") {
		t.Errorf("an answer within the budget: HTTP %d, masked %v", code, !strings.Contains(body, "UNHELD"))
	}
	if n := e.proxy.Buffered(); n != 0 {
		t.Errorf("buffered after the answer: %d bytes, want 0", n)
	}
}

// Placeholders are bound to their holder: one whose name is changed to
// another merchant's or platform's is no placeholder at all (404, never
// the other's token), and a genuine one under another route's prefix gets
// that route's token, never its own.
func TestAttackPlaceholderCannotBeRetargeted(t *testing.T) {
	e := newPlatformEnv(t)
	_, _, body := e.post(t, "/acme/cgi-bin/component/api_authorizer_token", `{"component_appid":"`+atkComponentAppID+`","authorizer_appid":"`+atkMerchantAppID+`"}`)
	var ans struct {
		Token string `json:"authorizer_access_token"`
	}
	if err := json.Unmarshal([]byte(body), &ans); err != nil || !strings.HasPrefix(ans.Token, "wxp.acme@"+atkMerchantAppID+".") {
		t.Fatalf("merchant placeholder: %s", body)
	}
	enc := ans.Token[strings.LastIndexByte(ans.Token, '.')+1:]
	for _, forged := range []string{"wxp.acme." + enc, "wxp.acme@wxother00000000." + enc, "wxp.beta@" + atkMerchantAppID + "." + enc, ans.Token[:len(ans.Token)-1] + "A"} {
		resp, err := http.Get(e.url + "/cgi-bin/user/get?access_token=" + url.QueryEscape(forged))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("forged placeholder %s: HTTP %d, want 404", forged, resp.StatusCode)
		}
	}
	e.mu.Lock()
	e.seen = nil
	e.mu.Unlock()
	resp, err := http.Get(e.url + "/acme/cgi-bin/user/get?access_token=" + url.QueryEscape(ans.Token))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.seen) != 1 || e.seen[0].URL.Query().Get("access_token") != atkComponentToken || strings.Contains(e.seen[0].URL.RawQuery, atkMerchantToken) {
		t.Errorf("a merchant placeholder under the component's prefix: WeChat got %v", e.seen)
	}
}
