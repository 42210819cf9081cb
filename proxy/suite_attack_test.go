package proxy_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/wxproxy/wxproxy/proxy"
	"github.com/wxproxy/wxproxy/ratelimit"
)

// get_permanent_code is answered by wxproxy, but each call exchanges an
// auth code with WeCom using the suite token. A caller key's per-minute
// limit applies to it like to any forwarded call (as for api_query_auth):
// before, the local answer skipped every limit, so a caller held to 1 a
// minute could drive unbounded exchanges with WeCom.
func TestAttackPermanentCodeHonoursCallerLimit(t *testing.T) {
	lim := ratelimit.New(ratelimit.Settings{Default: ratelimit.Limit{PerMinute: 1, Burst: 1}}, ratelimit.Options{Name: "caller:slow"})
	e := newSuiteEnv(t, true, proxy.Access{Keys: []proxy.CallerKey{{Name: "slow", Key: "slow-key-0123456789", Limiter: lim}}})
	var limited int
	for i := range 5 {
		path := "/suiteco/cgi-bin/service/get_permanent_code"
		if i%2 == 1 {
			path = "/suiteco/cgi-bin/service/v2/get_permanent_code"
		}
		req, _ := http.NewRequest(http.MethodPost, e.url+path, strings.NewReader(`{"auth_code":"code`+string(rune('a'+i))+`"}`))
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
	e.mu.Lock()
	n := len(e.exchanged)
	e.mu.Unlock()
	if n > 1 || limited != 4 {
		t.Errorf("5 get_permanent_code calls at 1/minute: %d exchanges with WeCom, %d limited; want 1 and 4", n, limited)
	}
}

// A permanent code of a corp wxproxy does not hold cannot be scrubbed, so
// every answer of a suite or provider API has the value of each member
// named *permanent_code masked, plain or JSON-escaped inside a string (as
// the refresh tokens of a component's answers). Before, only
// get_permanent_code's two spellings were answered with a placeholder: a
// spelling wxproxy does not know (a future v3, as v2 came after v1) or
// any other answer carrying one went to the caller as WeCom sent it.
func TestAttackSuiteAnswersHideUnheldPermanentCodes(t *testing.T) {
	e := newSuiteEnv(t, true)
	const unheld = "UNHELD-permanent-code-of-another-corp-0123456789"
	e.mu.Lock()
	e.answers["/cgi-bin/service/v3/get_permanent_code"] = `{"errcode":0,"errmsg":"ok","permanent_code":"` + unheld + `","auth_corp_info":{"corpid":"wwother"}}`
	e.answers["/cgi-bin/service/get_login_info"] = `{"errcode":0,"errmsg":"ok","response_body":"{\"permanent_code\":\"` + unheld + `\"}"}`
	e.mu.Unlock()
	for _, path := range []string{"/suiteco/cgi-bin/service/v3/get_permanent_code", "/suiteco/cgi-bin/service/get_login_info"} {
		req, _ := http.NewRequest(http.MethodPost, e.url+path, strings.NewReader(`{"auth_code":"c"}`))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.Contains(string(b), unheld) || !strings.Contains(string(b), "wxp.permanent_code.held-by-wxproxy") {
			t.Errorf("%s: %d %s: an unheld permanent code reached the caller", path, resp.StatusCode, b)
		}
	}
	// A corp's own answers are not a suite's: left alone.
	e.mu.Lock()
	e.answers["/cgi-bin/user/get"] = `{"errcode":0,"errmsg":"ok","permanent_code":"not-a-suite-answer"}`
	e.mu.Unlock()
	_, m, _ := call(t, "GET", e.url+"/suiteco@wwcorpa/cgi-bin/user/get?userid=u", "")
	if m["permanent_code"] != "not-a-suite-answer" {
		t.Errorf("corp answer changed: %v", m)
	}
}

// callers.keys[].apps naming a suite stands for the suite, its provider
// and all its corps, as a platform's name does for its merchants; naming
// one corp ({suite}@{corpid}) gives that corp only, never the suite or
// provider token. Before, a key naming the suite got 403 on its corps.
func TestSuiteCallerKeyApps(t *testing.T) {
	e := newSuiteEnv(t, true, proxy.Access{Keys: []proxy.CallerKey{
		{Name: "suite", Key: "suite-key-0123456789", Apps: []string{"suiteco"}},
		{Name: "corp", Key: "corp-key-0123456789", Apps: []string{"suiteco@wwcorpa"}},
	}})
	for _, tc := range []struct {
		key, method, path, body string
		want                    int
	}{
		{"suite-key-0123456789", "GET", "/suiteco@wwcorpa/cgi-bin/user/list", "", 200},
		{"suite-key-0123456789", "GET", "/suiteco/cgi-bin/service/get_pre_auth_code", "", 200},
		{"suite-key-0123456789", "POST", "/suiteco/cgi-bin/service/get_login_info", "{}", 200},
		{"corp-key-0123456789", "GET", "/suiteco@wwcorpa/cgi-bin/user/list", "", 200},
		{"corp-key-0123456789", "GET", "/suiteco/cgi-bin/service/get_pre_auth_code", "", 403},
		{"corp-key-0123456789", "POST", "/suiteco/cgi-bin/service/get_login_info", "{}", 403},
		{"corp-key-0123456789", "POST", "/suiteco/cgi-bin/service/get_corp_token", `{"auth_corpid":"wwcorpa"}`, 403},
		{"corp-key-0123456789", "POST", "/cgi-bin/service/get_suite_token", `{"suite_id":"wwsuite0000000001"}`, 403},
		{"corp-key-0123456789", "POST", "/cgi-bin/service/get_provider_token", `{"corpid":"wwprovider"}`, 403},
	} {
		req, _ := http.NewRequest(tc.method, e.url+tc.path, strings.NewReader(tc.body))
		req.Header.Set("X-WXProxy-Key", tc.key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("%s %s %s: %d %s, want %d", tc.key[:4], tc.method, tc.path, resp.StatusCode, b, tc.want)
		}
	}
}
