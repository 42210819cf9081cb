package e2e

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"
)

const (
	merchantB     = "wxmerchant0000000b"
	merchantGone  = "wxmerchant0000000c" // imported after it left: WeChat answers 61023
	keyAll        = "e2e-key-all-0123456789"
	keyPlatform   = "e2e-key-acme-0123456789"
	keyOneMerchnt = "e2e-key-one-0123456789"
)

// call sends a request with the caller key and, if set, the app header.
func call(tb testing.TB, method, url, key, app, body string) (int, http.Header, []byte) {
	tb.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		tb.Fatal(err)
	}
	req.Header.Set("X-WXProxy-Key", key)
	if app != "" {
		req.Header.Set("X-WXProxy-App", app)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 32<<10)
	for {
		n, err := resp.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return resp.StatusCode, resp.Header, []byte(b.String())
}

// TestOpenPlatformRouting: the platform's errors and routes through the
// real binaries — ticket_missing on every route while no ticket is held
// (and /readyz naming the platform), each merchant's placeholder from a
// local api_authorizer_token answer routing to that merchant,
// authorizer_unauthorized for a merchant WeChat answers 61023 for (by
// prefix and by header), and caller keys limited to a platform or to one
// merchant of it, and merchants' jsapi tickets held and answered locally.
func TestOpenPlatformRouting(t *testing.T) {
	dir := t.TempDir()
	cb := freeAddr(t)
	s := startSim(t, "-component", compID+":"+compSecret+":"+compToken+":"+compKey, "-callback", "http://"+cb+"/callback/acme")
	cfg := platformConfig(s.url, cb, "") + `
callers:
  keys:
    - {name: all, key: ` + keyAll + `}
    - {name: platform, key: ` + keyPlatform + `, apps: [acme]}
    - {name: one, key: ` + keyOneMerchnt + `, apps: [acme@` + merchantA + `]}
`
	w := startProxy(t, dir, cfg)

	// No ticket: /readyz names the platform and the ticket; the component
	// and an imported merchant (whose token needs the component's) get
	// 503 ticket_missing, by prefix and by header.
	code, _, b := get(t, w.admin+"/readyz")
	if code != 503 || !strings.Contains(string(b), "acme") || !strings.Contains(string(b), "component_verify_ticket") {
		t.Fatalf("readyz without a ticket: %d %s", code, b)
	}
	if code, b := adminPost(t, w, "/admin/platforms/acme/authorizers", `{"authorizer_appid":"`+merchantB+`","refresh_token":"refresh-token-from-the-old-system-0001"}`); code == 200 {
		t.Fatalf("import without a ticket succeeded: %s", b)
	}
	for _, tc := range []struct{ name, url, app string }{
		{"component by prefix", w.url + "/acme/cgi-bin/component/api_get_authorizer_list", ""},
		{"merchant by prefix", w.url + "/acme@" + merchantB + "/cgi-bin/user/get", ""},
		{"merchant by header", w.url + "/cgi-bin/user/get", "acme@" + merchantB},
	} {
		code, hdr, b := call(t, http.MethodPost, tc.url, keyAll, tc.app, `{"component_appid":"`+compID+`"}`)
		if code != 503 || hdr.Get("X-WXProxy-Error") != "ticket_missing" || decode(t, b).ErrCode != 61006 {
			t.Errorf("%s without a ticket: %d %q %s", tc.name, code, hdr.Get("X-WXProxy-Error"), b)
		}
	}

	s.post(t, "/sim/platforms/"+compID+"/push-ticket", "")
	waitFor(t, 10*time.Second, "ready", func() bool { c, _, _ := get(t, w.admin+"/readyz"); return c == 200 })
	s.post(t, "/sim/platforms/"+compID+"/authorize", `{"authorizer_appid":"`+merchantA+`"}`)
	s.post(t, "/sim/platforms/"+compID+"/authorize", `{"authorizer_appid":"`+merchantB+`"}`)
	waitFor(t, 10*time.Second, "two merchants", func() bool {
		_, _, b := get(t, w.admin+"/admin/platforms/acme/authorizers?state=ok")
		return strings.Contains(string(b), merchantA) && strings.Contains(string(b), merchantB)
	})

	// Each merchant's placeholder, from the local api_authorizer_token
	// answer of an unmodified SDK, routes to that merchant.
	code, _, b = call(t, http.MethodPost, w.url+"/cgi-bin/component/api_component_token", keyAll, "",
		`{"component_appid":"`+compID+`","component_appsecret":"x","component_verify_ticket":"x"}`)
	var ct struct {
		Token string `json:"component_access_token"`
	}
	if err := json.Unmarshal(b, &ct); err != nil || code != 200 || !strings.HasPrefix(ct.Token, "wxp.acme.") {
		t.Fatalf("api_component_token: %d %s", code, b)
	}
	placeholders := map[string]string{}
	for _, m := range []string{merchantA, merchantB} {
		code, _, b := call(t, http.MethodPost, w.url+"/cgi-bin/component/api_authorizer_token?component_access_token="+ct.Token, keyAll, "",
			`{"component_appid":"`+compID+`","authorizer_appid":"`+m+`","authorizer_refresh_token":"ignored"}`)
		var at struct {
			Token string `json:"authorizer_access_token"`
		}
		if err := json.Unmarshal(b, &at); err != nil || code != 200 || !strings.HasPrefix(at.Token, "wxp.acme@"+m+".") {
			t.Fatalf("api_authorizer_token of %s: %d %s", m, code, b)
		}
		placeholders[m] = at.Token
	}
	if placeholders[merchantA] == placeholders[merchantB] {
		t.Fatal("two merchants got one placeholder")
	}
	for _, m := range []string{merchantA, merchantB} {
		code, _, b := call(t, http.MethodGet, w.url+"/cgi-bin/user/get?access_token="+placeholders[m], keyAll, "", "")
		if e := decode(t, b); code != 200 || e.ErrCode != 0 || e.Echo.AppID != m {
			t.Errorf("placeholder of %s: %d %s", m, code, b)
		}
	}

	// Merchants' tickets are held on demand and answered locally: a second
	// ask, by prefix or header, costs WeChat nothing; each merchant has
	// its own.
	tickets := map[string]string{}
	for _, m := range []string{merchantA, merchantB} {
		for _, app := range []string{"", "acme@" + m} {
			url := w.url + "/acme@" + m + "/cgi-bin/ticket/getticket?type=jsapi"
			if app != "" {
				url = w.url + "/cgi-bin/ticket/getticket?type=jsapi"
			}
			code, _, b := call(t, http.MethodGet, url, keyAll, app, "")
			var ta struct {
				ErrCode   int    `json:"errcode"`
				Ticket    string `json:"ticket"`
				ExpiresIn int64  `json:"expires_in"`
			}
			if err := json.Unmarshal(b, &ta); err != nil || code != 200 || ta.ErrCode != 0 || ta.Ticket == "" || ta.ExpiresIn <= 0 {
				t.Fatalf("jsapi ticket of %s (header %q): %d %s", m, app, code, b)
			}
			if prev, ok := tickets[m]; ok && prev != ta.Ticket {
				t.Errorf("jsapi ticket of %s changed between two asks", m)
			}
			tickets[m] = ta.Ticket
		}
	}
	if tickets[merchantA] == tickets[merchantB] {
		t.Error("two merchants got one jsapi ticket")
	}
	for _, m := range []string{merchantA, merchantB} {
		if n := s.ticketFetchesOf(t, m)["jsapi"]; n != 1 {
			t.Errorf("jsapi ticket fetches of %s = %d, want 1", m, n)
		}
	}
	if _, _, b := get(t, w.admin+"/admin/platforms/acme/authorizers"); !strings.Contains(string(b), `"tickets":[{"type":"jsapi","fingerprint":`) || strings.Contains(string(b), tickets[merchantA]) {
		t.Errorf("admin list of merchants' tickets (fingerprints only): %s", b)
	}
	// Pages sign with a merchant's ticket through /wxproxy/jssdk/config.
	code, _, b = call(t, http.MethodGet, w.url+"/wxproxy/jssdk/config?url=https%3A%2F%2Fshop.example%2Fp&app=acme@"+merchantA, keyAll, "", "")
	var sig struct {
		AppID     string `json:"appId"`
		Signature string `json:"signature"`
	}
	if err := json.Unmarshal(b, &sig); err != nil || code != 200 || sig.AppID != merchantA || len(sig.Signature) != 40 {
		t.Errorf("jssdk config of a merchant: %d %s", code, b)
	}
	if code, _, b := call(t, http.MethodGet, w.url+"/wxproxy/jssdk/config?url=https%3A%2F%2Fshop.example%2Fp&app=acme@"+merchantB, keyOneMerchnt, "", ""); code != 403 {
		t.Errorf("jssdk config of a merchant the key may not use: %d %s", code, b)
	}
	if code, _, b := call(t, http.MethodGet, w.url+"/acme@"+merchantA+"/cgi-bin/ticket/getticket?type=agent_config", keyAll, "", ""); code != 400 {
		t.Errorf("a ticket type merchants do not have: %d %s", code, b)
	}

	// WeChat kills merchantA's token: the call is retried once with a new
	// one (one authorizer fetch), and WeChat's rid/get of it, which shows
	// the URL with the token, is answered with the merchant's placeholder.
	fetches := s.stats(t).TokenFetches[merchantA]["authorizer"]
	s.post(t, "/sim/apps/"+merchantA+"/invalidate", "")
	code, _, b = call(t, http.MethodGet, w.url+"/acme@"+merchantA+"/cgi-bin/user/get", keyAll, "", "")
	var echoed struct {
		ErrCode int    `json:"errcode"`
		Rid     string `json:"rid"`
	}
	if err := json.Unmarshal(b, &echoed); err != nil || code != 200 || echoed.ErrCode != 0 || echoed.Rid == "" {
		t.Fatalf("call with a killed merchant token: %d %s", code, b)
	}
	if got := s.stats(t).TokenFetches[merchantA]["authorizer"]; got != fetches+1 {
		t.Errorf("authorizer fetches after a killed token: %d → %d, want one", fetches, got)
	}
	code, _, b = call(t, http.MethodPost, w.url+"/acme@"+merchantA+"/cgi-bin/openapi/rid/get", keyAll, "", `{"rid":"`+echoed.Rid+`"}`)
	if code != 200 || !strings.Contains(string(b), "access_token=wxp.acme@"+merchantA+".") {
		t.Errorf("rid/get of a merchant's call: %d %s; want its token shown as the merchant's placeholder", code, b)
	}
	// A merchant WeChat answers 61023 for (it authorized, then left; an
	// operator imports it from an old system): 503 authorizer_unauthorized,
	// by prefix and by header, listed and counted as unauthorized.
	s.post(t, "/sim/platforms/"+compID+"/authorize", `{"authorizer_appid":"`+merchantGone+`"}`)
	waitFor(t, 10*time.Second, "the merchant held", func() bool {
		_, _, b := get(t, w.admin+"/admin/platforms/acme/authorizers")
		return strings.Contains(string(b), merchantGone)
	})
	s.post(t, "/sim/platforms/"+compID+"/unauthorize", `{"authorizer_appid":"`+merchantGone+`"}`)
	waitFor(t, 10*time.Second, "the merchant dropped", func() bool {
		_, _, b := get(t, w.admin+"/admin/platforms/acme/authorizers")
		return !strings.Contains(string(b), merchantGone)
	})
	if code, b := adminPost(t, w, "/admin/platforms/acme/authorizers", `{"authorizer_appid":"`+merchantGone+`","refresh_token":"refresh-token-wechat-never-issued-0002"}`); code != 502 || !strings.Contains(string(b), `"state":"unauthorized"`) {
		t.Errorf("import of a dead refresh token: %d %s", code, b)
	}
	for _, tc := range []struct{ name, url, app string }{
		{"by prefix", w.url + "/acme@" + merchantGone + "/cgi-bin/user/get", ""},
		{"by header", w.url + "/cgi-bin/user/get", "acme@" + merchantGone},
	} {
		code, hdr, b := call(t, http.MethodGet, tc.url, keyAll, tc.app, "")
		if code != 503 || hdr.Get("X-WXProxy-Error") != "authorizer_unauthorized" || decode(t, b).ErrCode != 61023 {
			t.Errorf("unauthorized merchant %s: %d %q %s", tc.name, code, hdr.Get("X-WXProxy-Error"), b)
		}
	}
	code, hdr, b := call(t, http.MethodGet, w.url+"/acme@"+merchantGone+"/cgi-bin/ticket/getticket?type=jsapi", keyAll, "", "")
	if code != 503 || hdr.Get("X-WXProxy-Error") != "authorizer_unauthorized" {
		t.Errorf("ticket of an unauthorized merchant: %d %q %s", code, hdr.Get("X-WXProxy-Error"), b)
	}
	if _, _, b := get(t, w.admin+"/admin/platforms/acme/authorizers?state=unauthorized"); !strings.Contains(string(b), merchantGone) || !strings.Contains(string(b), `"total":1`) {
		t.Errorf("unauthorized list: %s", b)
	}
	if _, _, b := get(t, w.admin+"/metrics"); !strings.Contains(string(b), `wxproxy_authorizers{platform="acme",state="unauthorized"} 1`) {
		t.Error(`wxproxy_authorizers{state="unauthorized"} is not 1`)
	}

	// Caller keys: "platform" may use the component and every merchant;
	// "one" only merchantA, however it is named.
	for _, tc := range []struct {
		name, key, method, url, app string
		want                        int
	}{
		{"platform: merchant A", keyPlatform, http.MethodGet, w.url + "/acme@" + merchantA + "/cgi-bin/user/get", "", 200},
		{"platform: merchant B by header", keyPlatform, http.MethodGet, w.url + "/cgi-bin/user/get", "acme@" + merchantB, 200},
		{"platform: component", keyPlatform, http.MethodPost, w.url + "/acme/cgi-bin/component/api_get_authorizer_list", "", 200},
		{"one: merchant A by prefix", keyOneMerchnt, http.MethodGet, w.url + "/acme@" + merchantA + "/cgi-bin/user/get", "", 200},
		{"one: merchant A by header", keyOneMerchnt, http.MethodGet, w.url + "/cgi-bin/user/get", "acme@" + merchantA, 200},
		{"one: merchant A by placeholder", keyOneMerchnt, http.MethodGet, w.url + "/cgi-bin/user/get?access_token=" + placeholders[merchantA], "", 200},
		{"one: merchant B by prefix", keyOneMerchnt, http.MethodGet, w.url + "/acme@" + merchantB + "/cgi-bin/user/get", "", 403},
		{"one: merchant B by header", keyOneMerchnt, http.MethodGet, w.url + "/cgi-bin/user/get", "acme@" + merchantB, 403},
		{"one: merchant B by placeholder", keyOneMerchnt, http.MethodGet, w.url + "/cgi-bin/user/get?access_token=" + placeholders[merchantB], "", 403},
		{"one: component", keyOneMerchnt, http.MethodPost, w.url + "/acme/cgi-bin/component/api_get_authorizer_list", "", 403},
		{"one: component token", keyOneMerchnt, http.MethodPost, w.url + "/cgi-bin/component/api_component_token", "", 403},
	} {
		code, hdr, b := call(t, tc.method, tc.url, tc.key, tc.app, `{"component_appid":"`+compID+`","offset":0,"count":10}`)
		if code != tc.want {
			t.Errorf("%s: %d %s %s, want %d", tc.name, code, hdr.Get("X-WXProxy-Error"), b, tc.want)
		}
		if tc.want == 403 && hdr.Get("X-WXProxy-Error") != "forbidden" {
			t.Errorf("%s: error %q, want forbidden", tc.name, hdr.Get("X-WXProxy-Error"))
		}
	}
}

// ticketFetchesOf reads ticket_fetches of appid from the simulator.
func (s *sim) ticketFetchesOf(tb testing.TB, appid string) map[string]int64 {
	tb.Helper()
	_, _, b := get(tb, s.url+"/sim/stats")
	var st struct {
		TicketFetches map[string]map[string]int64 `json:"ticket_fetches"`
	}
	if err := json.Unmarshal(b, &st); err != nil {
		tb.Fatalf("sim stats %s: %v", b, err)
	}
	return st.TicketFetches[appid]
}
