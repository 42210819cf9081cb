package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wxproxy/wxproxy/internal/redistest"
)

const (
	suiteID        = "wwsuite0000000001"
	suiteSecret    = "e2e-suite-secret-0123456789abcdef"
	suiteToken     = "e2esuitetoken"
	suiteKey       = "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR"
	providerCorp   = "wwprovider0000001"
	providerSecret = "e2e-provider-secret-0123456789abcd"
	corpA          = "wwcorpa000000000a"
	corpB          = "wwcorpb000000000b"
)

func suiteConfig(simURL, cbAddr, storePath string) string {
	return fmt.Sprintf(`
listen: 127.0.0.1:0
admin: {listen: 127.0.0.1:0, token: e2e-admin-token}
log: {format: json, level: info}
store: {kind: file, path: %s}
apps: []
platforms:
  - name: suiteco
    kind: wecom_suite
    suite_id: %s
    secret: %s
    token: %s
    encoding_aes_key: %s
    provider_corpid: %s
    provider_secret: %s
    upstream: %s
callbacks:
  listen: %s
`, storePath, suiteID, suiteSecret, suiteToken, suiteKey, providerCorp, providerSecret, simURL, cbAddr)
}

// TestWeComSuite runs a WeCom suite's chain through the real binaries:
// WeCom's URL check, suite_ticket and install pushes over the callback
// listener, calls as a corp, suite and provider APIs, unmodified-SDK
// credential endpoints answered with placeholders, get_permanent_code
// captured, the admin API, no credential leaking, and a restart on the
// file store that costs no fetch.
func TestWeComSuite(t *testing.T) {
	dir := t.TempDir()
	cb := freeAddr(t)
	s := startSim(t, "-suite", suiteID+":"+suiteSecret+":"+suiteToken+":"+suiteKey, "-provider", providerCorp+":"+providerSecret,
		"-callback", "http://"+cb+"/callback/suiteco")
	storePath := filepath.Join(dir, "tokens.json")
	w := startProxy(t, dir, suiteConfig(s.url, cb, storePath))

	// No suite_ticket yet: not ready, and suite calls get 503 ticket_missing.
	if code, _, b := get(t, w.admin+"/readyz"); code != 503 || !strings.Contains(string(b), "suite_ticket") {
		t.Fatalf("readyz before a ticket: %d %s", code, b)
	}
	code, hdr, b := get(t, w.url+"/suiteco/cgi-bin/service/get_pre_auth_code")
	if code != 503 || hdr.Get("X-WXProxy-Error") != "ticket_missing" || decode(t, b).ErrCode != 61006 {
		t.Fatalf("call without a ticket: %d %s %s", code, hdr.Get("X-WXProxy-Error"), b)
	}

	// WeCom's URL check of the callback, addressed to the provider corpid.
	_, _, vb := do(t, http.MethodPost, s.url+"/sim/suites/"+suiteID+"/verify-url", `{"receive_id":"`+providerCorp+`"}`)
	var verified struct {
		Verified bool   `json:"verified"`
		Body     string `json:"body"`
		Echo     string `json:"echo"`
	}
	json.Unmarshal(vb, &verified)
	if !verified.Verified || verified.Body != verified.Echo {
		t.Fatalf("URL verification: %s", vb)
	}

	s.post(t, "/sim/suites/"+suiteID+"/push-ticket", "")
	waitFor(t, 10*time.Second, "ready", func() bool { c, _, _ := get(t, w.admin+"/readyz"); return c == 200 })

	// Suite API: the suite token is injected as suite_access_token.
	code, _, b = get(t, w.url+"/suiteco/cgi-bin/service/get_pre_auth_code?suite_access_token=forged")
	if code != 200 || !strings.Contains(string(b), "pre_auth_code") {
		t.Fatalf("get_pre_auth_code: %d %s", code, b)
	}
	// Provider API: the provider token as provider_access_token.
	code, _, b = do(t, http.MethodPost, w.url+"/suiteco/cgi-bin/service/get_login_info", `{"auth_code":"x"}`)
	if e := decode(t, b); code != 200 || e.ErrCode != 0 || e.Echo.AppID != providerCorp {
		t.Fatalf("provider API: %d %s", code, b)
	}
	// The simulator echoes provider_access_token and suite_access_token
	// back (only access_token is left out): wxproxy must scrub them.
	echoes := string(b)
	code, _, b = get(t, w.url+"/suiteco/cgi-bin/service/get_admin_list?agentid=1")
	if code != 200 || !strings.Contains(string(b), `"suite_access_token":["wxp.suiteco.`) || !strings.Contains(echoes, `"provider_access_token":["wxp.suiteco.`) {
		t.Fatalf("echoed suite and provider tokens not replaced by placeholders:\n%s\n%s", echoes, b)
	}
	echoes += string(b)

	// A corp installs the suite: create_auth is exchanged at once.
	s.post(t, "/sim/suites/"+suiteID+"/install", `{"corpid":"`+corpA+`"}`)
	code, _, b = get(t, w.url+"/suiteco@"+corpA+"/cgi-bin/user/get?userid=u1")
	if e := decode(t, b); code != 200 || e.ErrCode != 0 || e.Echo.AppID != corpA {
		t.Fatalf("call as the corp: %d %s", code, b)
	}
	req, _ := http.NewRequest(http.MethodGet, w.url+"/cgi-bin/user/list?department_id=1", nil)
	req.Header.Set("X-WXProxy-App", "suiteco@"+corpA)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
		t.Fatalf("call as the corp by header: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	if code, hdr, _ := get(t, w.url+"/suiteco@wwnobody/cgi-bin/user/get"); code != 404 || hdr.Get("X-WXProxy-Error") != "unknown_app" {
		t.Errorf("unknown corp: %d %s", code, hdr.Get("X-WXProxy-Error"))
	}

	// rid/get of a call as the corp shows its request_url with the token:
	// a placeholder of the corp reaches the caller instead.
	var rid struct {
		Rid string `json:"rid"`
	}
	if json.Unmarshal(b, &rid); rid.Rid == "" {
		t.Fatalf("no rid in the echo: %s", b)
	}
	code, _, b = do(t, http.MethodPost, w.url+"/suiteco@"+corpA+"/cgi-bin/openapi/rid/get", `{"rid":"`+rid.Rid+`"}`)
	if code != 200 || !strings.Contains(string(b), "access_token=wxp.suiteco@"+corpA+".") {
		t.Fatalf("rid/get as the corp: %d %s; want the corp token shown as a placeholder", code, b)
	}
	echoes += string(b)

	// WeCom kills the corp's token: the call is refreshed and retried.
	s.post(t, "/sim/apps/"+corpA+"/invalidate", "")
	code, hdr, b = get(t, w.url+"/suiteco@"+corpA+"/cgi-bin/user/get?userid=u1")
	if e := decode(t, b); code != 200 || e.ErrCode != 0 || hdr.Get("X-WXProxy-Retried") != "1" {
		t.Fatalf("after invalidation: %d retried=%q %s", code, hdr.Get("X-WXProxy-Retried"), b)
	}

	// Unmodified SDK: suite, provider and corp tokens are placeholders.
	_, _, b = do(t, http.MethodPost, w.url+"/cgi-bin/service/get_suite_token", `{"suite_id":"`+suiteID+`","suite_secret":"x","suite_ticket":"y"}`)
	var st struct {
		Token string `json:"suite_access_token"`
	}
	json.Unmarshal(b, &st)
	if !strings.HasPrefix(st.Token, "wxp.suiteco.") {
		t.Fatalf("get_suite_token: %s", b)
	}
	_, _, b = do(t, http.MethodPost, w.url+"/cgi-bin/service/get_corp_token?suite_access_token="+st.Token, `{"auth_corpid":"`+corpA+`","permanent_code":"anything"}`)
	var ct struct {
		Token string `json:"access_token"`
	}
	json.Unmarshal(b, &ct)
	if !strings.HasPrefix(ct.Token, "wxp.suiteco@"+corpA+".") {
		t.Fatalf("get_corp_token: %s", b)
	}
	_, _, b = do(t, http.MethodPost, w.url+"/cgi-bin/service/get_provider_token", `{"corpid":"`+providerCorp+`","provider_secret":"x"}`)
	var pt struct {
		Token string `json:"provider_access_token"`
	}
	json.Unmarshal(b, &pt)
	if !strings.HasPrefix(pt.Token, "wxp.suiteco.") {
		t.Fatalf("get_provider_token: %s", b)
	}
	code, _, b = get(t, w.url+"/cgi-bin/user/get?userid=u2&access_token="+ct.Token)
	if e := decode(t, b); code != 200 || e.Echo.AppID != corpA {
		t.Fatalf("corp placeholder: %d %s", code, b)
	}
	code, _, b = get(t, w.url+"/cgi-bin/service/get_pre_auth_code?suite_access_token="+st.Token)
	if code != 200 || !strings.Contains(string(b), "pre_auth_code") {
		t.Fatalf("suite placeholder: %d %s", code, b)
	}
	code, _, b = do(t, http.MethodPost, w.url+"/cgi-bin/service/get_login_info?provider_access_token="+pt.Token, `{}`)
	if e := decode(t, b); code != 200 || e.Echo.AppID != providerCorp {
		t.Fatalf("provider placeholder: %d %s", code, b)
	}

	// get_permanent_code with the code of a create_auth wxproxy already
	// exchanged: the captured result, with placeholders.
	// (This create_auth is addressed to the provider corpid, as WeCom was
	// seen doing; one addressed to a stranger is refused.)
	_, _, sb := do(t, http.MethodPost, s.url+"/sim/suites/"+suiteID+"/install", `{"corpid":"wwstranger0000001","receive_id":"wwstranger"}`)
	if !strings.Contains(string(sb), `"status":400`) {
		t.Errorf("a push addressed to a stranger: %s", sb)
	}
	if code, _, _ := get(t, w.url+"/suiteco@wwstranger0000001/cgi-bin/user/get"); code != 404 {
		t.Errorf("a corp from a refused push: %d, want 404", code)
	}
	_, _, ib := do(t, http.MethodPost, s.url+"/sim/suites/"+suiteID+"/install", `{"corpid":"`+corpB+`","receive_id":"`+providerCorp+`"}`)
	var inst struct {
		AuthCode string `json:"auth_code"`
	}
	json.Unmarshal(ib, &inst)
	code, _, b = do(t, http.MethodPost, w.url+"/cgi-bin/service/get_permanent_code?suite_access_token="+st.Token, `{"auth_code":"`+inst.AuthCode+`"}`)
	if code != 200 || !strings.Contains(string(b), `"corpid":"`+corpB+`"`) || !strings.Contains(string(b), "wxp.permanent_code.held-by-wxproxy") ||
		!strings.Contains(string(b), "wxp.suiteco@"+corpB+".") || strings.Contains(string(b), "permanentcode@@@") {
		t.Fatalf("get_permanent_code: %d %s", code, b)
	}
	permAnswer := string(b)

	// Admin: corps listed, an import with a wrong code refused, metrics.
	_, _, list := get(t, w.admin+"/admin/platforms/suiteco/authorizers?limit=10")
	_, _, plats := get(t, w.admin+"/admin/platforms")
	if !strings.Contains(string(list), `"total":2`) || !strings.Contains(string(list), `"corpid":"`+corpA+`"`) ||
		!strings.Contains(string(plats), `"kind":"wecom_suite"`) || !strings.Contains(string(plats), `"ok":2`) {
		t.Errorf("admin lists: %s\n%s", list, plats)
	}
	code, ib2 := adminPost(t, w, "/admin/platforms/suiteco/authorizers", `{"corpid":"wwimported0000001","permanent_code":"not-a-real-permanent-code"}`)
	if code != 502 || strings.Contains(string(ib2), "not-a-real-permanent-code") {
		t.Errorf("import with a wrong code: %d %s", code, ib2)
	}
	if code, _ := adminPost(t, w, "/admin/platforms/suiteco/authorizers", `{"corpid":"x"}`); code != 400 {
		t.Errorf("import without a code: %d", code)
	}
	if code, _ := adminPost(t, w, "/admin/platforms/suiteco/start-push", ""); code != 400 {
		t.Errorf("start-push on a suite: %d", code)
	}
	_, _, metrics := get(t, w.admin+"/metrics")
	if !strings.Contains(string(metrics), `wxproxy_authorizers{platform="suiteco",state="ok"} 2`) {
		t.Error("wxproxy_authorizers of the suite missing")
	}

	// No credential reaches a caller or the admin API.
	_, _, tokens := get(t, s.url+"/sim/tokens")
	var live map[string][]string
	json.Unmarshal(tokens, &live)
	_, _, status := get(t, w.admin+"/admin/status")
	seen := echoes + permAnswer + string(list) + string(plats) + string(ib2) + string(status) + st.Token + ct.Token + pt.Token
	for id, ts := range live {
		for _, tok := range ts {
			if strings.Contains(seen, tok) {
				t.Errorf("a live token of %s reached a caller or the admin API", id)
			}
		}
	}
	for _, secret := range []string{"permanentcode@@@", suiteSecret, providerSecret, suiteKey} {
		if strings.Contains(seen, secret) {
			t.Errorf("%s reached a caller or the admin API", secret)
		}
	}

	// reset_permanent_code: the new code is exchanged; calls go on after
	// the corp token dies.
	s.post(t, "/sim/suites/"+suiteID+"/reset-permanent-code", `{"corpid":"`+corpA+`"}`)
	s.post(t, "/sim/apps/"+corpA+"/invalidate", "")
	code, _, b = get(t, w.url+"/suiteco@"+corpA+"/cgi-bin/user/get?userid=u1")
	if e := decode(t, b); code != 200 || e.ErrCode != 0 {
		t.Fatalf("after reset_permanent_code: %d %s", code, b)
	}
	// cancel_auth drops the corp.
	s.post(t, "/sim/suites/"+suiteID+"/uninstall", `{"corpid":"`+corpB+`"}`)
	if code, _, _ := get(t, w.url+"/suiteco@"+corpB+"/cgi-bin/user/get"); code != 404 {
		t.Errorf("uninstalled corp: %d, want 404", code)
	}

	// Restart on the file store: no suite, provider or corp fetch.
	before := s.stats(t)
	if err := w.stop(t); err != nil {
		t.Fatalf("stop: %v", err)
	}
	w2 := startProxy(t, dir, suiteConfig(s.url, cb, storePath))
	code, _, b = get(t, w2.url+"/suiteco@"+corpA+"/cgi-bin/user/get?userid=u3")
	if e := decode(t, b); code != 200 || e.Echo.AppID != corpA {
		t.Fatalf("after restart: %d %s", code, b)
	}
	after := s.stats(t)
	for _, k := range []struct{ id, kind string }{{suiteID, "suite"}, {providerCorp, "provider"}, {corpA, "corp"}} {
		if a, b := after.TokenFetches[k.id][k.kind], before.TokenFetches[k.id][k.kind]; a != b {
			t.Errorf("restart fetched %s tokens: %d → %d", k.kind, b, a)
		}
	}
	// A push with a bad signature: 401, and nothing changes.
	code, _, _ = do(t, http.MethodPost, "http://"+cb+"/callback/suiteco?timestamp=1&nonce=1&msg_signature=00", "<xml><Encrypt>AAAA</Encrypt></xml>")
	if code != 401 {
		t.Errorf("bad signature: %d", code)
	}
}

// TestWeComSuiteFleet: two replicas on Redis, pushes reaching one. The
// suite and provider tokens are fetched once for the fleet, a corp
// installed through one replica is served by the other with the same
// token, and a corp token WeCom kills costs one fetch however many calls
// on both replicas see it.
func TestWeComSuiteFleet(t *testing.T) {
	rs := redistest.Start(t)
	cb0, cb1 := freeAddr(t), freeAddr(t)
	s := startSim(t, "-suite", suiteID+":"+suiteSecret+":"+suiteToken+":"+suiteKey, "-provider", providerCorp+":"+providerSecret,
		"-callback", "http://"+cb0+"/callback/suiteco")
	cfg := func(cb string) string {
		c := suiteConfig(s.url, cb, "unused")
		return strings.Replace(c, "store: {kind: file, path: unused}", fmt.Sprintf("store:\n  kind: redis\n  redis: {url: %q, key_prefix: %q}", rs.URL, t.Name()+":"), 1)
	}
	w0 := startProxy(t, t.TempDir(), cfg(cb0))
	w1 := startProxy(t, t.TempDir(), cfg(cb1))
	s.post(t, "/sim/suites/"+suiteID+"/push-ticket", "")
	for _, w := range []*wxp{w0, w1} {
		waitFor(t, 15*time.Second, "replica ready", func() bool { c, _, _ := get(t, w.admin+"/readyz"); return c == 200 })
	}
	st := s.stats(t)
	if got := st.TokenFetches[suiteID]["suite"]; got != 1 {
		t.Errorf("suite token fetches = %d, want 1 for the fleet", got)
	}
	if got := st.TokenFetches[providerCorp]["provider"]; got != 1 {
		t.Errorf("provider token fetches = %d, want 1 for the fleet", got)
	}
	s.post(t, "/sim/suites/"+suiteID+"/install", `{"corpid":"`+corpA+`"}`) // reaches w0 only
	for _, w := range []*wxp{w1, w0} {
		code, _, b := get(t, w.url+"/suiteco@"+corpA+"/cgi-bin/user/get?userid=u1")
		if e := decode(t, b); code != 200 || e.Echo.AppID != corpA {
			t.Fatalf("corp call: %d %s", code, b)
		}
	}
	before := s.stats(t).TokenFetches[corpA]["corp"]
	s.post(t, "/sim/apps/"+corpA+"/invalidate", "")
	var wg sync.WaitGroup
	for i := range 40 {
		w := []*wxp{w0, w1}[i%2]
		wg.Go(func() {
			code, _, b := get(t, w.url+"/suiteco@"+corpA+"/cgi-bin/user/get?userid=u2")
			if e := decode(t, b); code != 200 || e.ErrCode != 0 {
				t.Errorf("after invalidation: %d %s", code, b)
			}
		})
	}
	wg.Wait()
	if got := s.stats(t).TokenFetches[corpA]["corp"] - before; got != 1 {
		t.Errorf("corp token fetches after one invalidation = %d, want 1 for the fleet", got)
	}
}
