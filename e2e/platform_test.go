package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const (
	compID     = "wxc0ffee0000000001"
	compSecret = "e2e-component-secret-0123456789ab"
	compToken  = "e2emsgtoken"
	compKey    = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"
	merchantA  = "wxmerchant0000000a"
)

// freeAddr returns a loopback address that was free a moment ago: the
// simulator must know the callback URL before wxproxy starts.
func freeAddr(tb testing.TB) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func platformConfig(simURL, cbAddr, storePath string) string {
	store := "store: {kind: memory}"
	if storePath != "" {
		store = "store: {kind: file, path: " + storePath + "}"
	}
	return fmt.Sprintf(`
listen: 127.0.0.1:0
admin: {listen: 127.0.0.1:0, token: e2e-admin-token}
log: {format: json, level: info}
%s
apps: []
platforms:
  - name: acme
    kind: open_platform
    component_appid: %s
    secret: %s
    token: %s
    encoding_aes_key: %s
    upstream: %s
callbacks:
  listen: %s
`, store, compID, compSecret, compToken, compKey, simURL, cbAddr)
}

func adminPost(tb testing.TB, w *wxp, path, body string) (int, []byte) {
	tb.Helper()
	req, _ := http.NewRequest(http.MethodPost, w.admin+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer e2e-admin-token")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	_, _ = fmt.Fprint(&b, "")
	buf := make([]byte, 64<<10)
	n, _ := resp.Body.Read(buf)
	return resp.StatusCode, buf[:n]
}

// TestOpenPlatform runs the whole chain through the real binaries: pushes
// over the callback listener, merchants called on behalf, unmodified-SDK
// component endpoints answered with placeholders, the admin API, and a
// restart on the file store that costs no fetch.
func TestOpenPlatform(t *testing.T) {
	dir := t.TempDir()
	cb := freeAddr(t)
	s := startSim(t, "-component", compID+":"+compSecret+":"+compToken+":"+compKey, "-callback", "http://"+cb+"/callback/acme")
	storePath := filepath.Join(dir, "tokens.json")
	w := startProxy(t, dir, platformConfig(s.url, cb, storePath))

	// No ticket yet: not ready, and calls get 503 ticket_missing.
	if code, _, b := get(t, w.admin+"/readyz"); code != 503 || !strings.Contains(string(b), "component_verify_ticket") {
		t.Fatalf("readyz before a ticket: %d %s", code, b)
	}
	code, hdr, b := do(t, http.MethodPost, w.url+"/acme/cgi-bin/component/api_create_preauthcode", `{"component_appid":"`+compID+`"}`)
	if code != 503 || hdr.Get("X-WXProxy-Error") != "ticket_missing" || decode(t, b).ErrCode != 61006 {
		t.Fatalf("call without a ticket: %d %s %s", code, hdr.Get("X-WXProxy-Error"), b)
	}

	s.post(t, "/sim/platforms/"+compID+"/push-ticket", "")
	waitFor(t, 10*time.Second, "ready", func() bool { c, _, _ := get(t, w.admin+"/readyz"); return c == 200 })

	// Component API: the component token is injected as component_access_token.
	code, _, b = do(t, http.MethodPost, w.url+"/acme/cgi-bin/component/api_create_preauthcode?component_access_token=forged", `{"component_appid":"`+compID+`"}`)
	if code != 200 || !strings.Contains(string(b), "pre_auth_code") {
		t.Fatalf("preauthcode: %d %s", code, b)
	}

	// A merchant authorizes: the push is exchanged at once.
	s.post(t, "/sim/platforms/"+compID+"/authorize", `{"authorizer_appid":"`+merchantA+`"}`)
	code, _, b = get(t, w.url+"/acme@"+merchantA+"/cgi-bin/user/get?next_openid=")
	if e := decode(t, b); code != 200 || e.ErrCode != 0 || e.Echo.AppID != merchantA {
		t.Fatalf("call on behalf by prefix: %d %s", code, b)
	}
	req, _ := http.NewRequest(http.MethodGet, w.url+"/cgi-bin/user/info?openid=o1", nil)
	req.Header.Set("X-WXProxy-App", "acme@"+merchantA)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("call on behalf by header: %v %v", resp.StatusCode, err)
	}
	resp.Body.Close()
	if code, hdr, _ := get(t, w.url+"/acme@wxunknown000000000/cgi-bin/user/get"); code != 404 || hdr.Get("X-WXProxy-Error") != "unknown_app" {
		t.Errorf("unknown merchant: %d %s", code, hdr.Get("X-WXProxy-Error"))
	}

	// Unmodified SDK: component and authorizer tokens are placeholders.
	code, _, b = do(t, http.MethodPost, w.url+"/cgi-bin/component/api_component_token",
		`{"component_appid":"`+compID+`","component_appsecret":"whatever","component_verify_ticket":"whatever"}`)
	var ct struct {
		Token string `json:"component_access_token"`
	}
	json.Unmarshal(b, &ct)
	if code != 200 || !strings.HasPrefix(ct.Token, "wxp.acme.") {
		t.Fatalf("api_component_token: %d %s", code, b)
	}
	code, _, b = do(t, http.MethodPost, w.url+"/cgi-bin/component/api_authorizer_token?component_access_token="+ct.Token,
		`{"component_appid":"`+compID+`","authorizer_appid":"`+merchantA+`","authorizer_refresh_token":"anything"}`)
	var at struct {
		Token   string `json:"authorizer_access_token"`
		Refresh string `json:"authorizer_refresh_token"`
	}
	json.Unmarshal(b, &at)
	if code != 200 || !strings.HasPrefix(at.Token, "wxp.acme@"+merchantA+".") {
		t.Fatalf("api_authorizer_token: %d %s", code, b)
	}
	// The merchant placeholder routes to the merchant with no prefix.
	code, _, b = get(t, w.url+"/cgi-bin/user/get?access_token="+at.Token)
	if e := decode(t, b); code != 200 || e.Echo.AppID != merchantA {
		t.Fatalf("merchant placeholder: %d %s", code, b)
	}
	// The component placeholder routes component APIs with no prefix.
	code, _, b = do(t, http.MethodPost, w.url+"/cgi-bin/component/api_create_preauthcode?component_access_token="+ct.Token, `{"component_appid":"`+compID+`"}`)
	if code != 200 || !strings.Contains(string(b), "pre_auth_code") {
		t.Fatalf("component placeholder: %d %s", code, b)
	}
	// api_query_auth through wxproxy: results captured, placeholders returned.
	var auth struct {
		Code string `json:"authorization_code"`
	}
	_, _, ab := do(t, http.MethodPost, s.url+"/sim/platforms/"+compID+"/authorize", `{"authorizer_appid":"wxmerchant0000000b"}`)
	json.Unmarshal(ab, &auth)
	code, _, b = do(t, http.MethodPost, w.url+"/cgi-bin/component/api_query_auth?component_access_token="+ct.Token,
		`{"component_appid":"`+compID+`","authorization_code":"`+auth.Code+`"}`)
	if code != 200 || !strings.Contains(string(b), `"authorizer_appid":"wxmerchant0000000b"`) || !strings.Contains(string(b), "wxp.acme@wxmerchant0000000b.") ||
		strings.Contains(string(b), "refreshtoken@@@") {
		t.Fatalf("api_query_auth: %d %s", code, b)
	}
	// Blocked: component clear_quota.
	if code, hdr, _ := do(t, http.MethodPost, w.url+"/acme/cgi-bin/component/clear_quota/v2", `{}`); code != 403 || hdr.Get("X-WXProxy-Error") != "blocked_path" {
		t.Errorf("component clear_quota: %d", code)
	}

	// No credential reaches a caller: every live token and refresh token
	// of the simulator is absent from what the caller and admin saw.
	_, _, tokens := get(t, s.url+"/sim/tokens")
	var live map[string][]string
	json.Unmarshal(tokens, &live)
	_, _, list := get(t, w.admin+"/admin/platforms/acme/authorizers?limit=10")
	_, _, plats := get(t, w.admin+"/admin/platforms")
	seen := string(b) + string(list) + string(plats) + ct.Token + at.Token + at.Refresh
	for id, ts := range live {
		for _, tok := range ts {
			if strings.Contains(seen, tok) {
				t.Errorf("a live token of %s reached a caller or the admin API", id)
			}
		}
	}
	if strings.Contains(seen, "refreshtoken@@@") || strings.Contains(seen, compSecret) {
		t.Error("a refresh token or the component secret reached a caller or the admin API")
	}
	if !strings.Contains(string(list), `"total":2`) || !strings.Contains(string(plats), `"ok":2`) {
		t.Errorf("admin lists: %s\n%s", list, plats)
	}
	_, _, metrics := get(t, w.admin+"/metrics")
	if !strings.Contains(string(metrics), `wxproxy_authorizers{platform="acme",state="ok"} 2`) {
		t.Error("wxproxy_authorizers missing")
	}

	// Admin: recover and start-push.
	if code, b := adminPost(t, w, "/admin/platforms/acme/recover", ""); code != 200 || !strings.Contains(string(b), `"listed":2`) {
		t.Errorf("recover: %d %s", code, b)
	}
	if code, b := adminPost(t, w, "/admin/platforms/acme/start-push", ""); code != 200 {
		t.Errorf("start-push: %d %s", code, b)
	}
	// A merchant that unauthorizes is dropped.
	s.post(t, "/sim/platforms/"+compID+"/unauthorize", `{"authorizer_appid":"wxmerchant0000000b"}`)
	if code, _, _ := get(t, w.url+"/acme@wxmerchant0000000b/cgi-bin/user/get"); code != 404 {
		t.Errorf("unauthorized merchant: %d, want 404", code)
	}

	// Restart on the file store: no component fetch, no merchant fetch.
	before := s.stats(t)
	if err := w.stop(t); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "tokens.platforms.json")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("platform state file: %v %v", fi, err)
	}
	w2 := startProxy(t, dir, platformConfig(s.url, cb, storePath))
	code, _, b = get(t, w2.url+"/acme@"+merchantA+"/cgi-bin/user/get")
	if e := decode(t, b); code != 200 || e.Echo.AppID != merchantA {
		t.Fatalf("after restart: %d %s", code, b)
	}
	after := s.stats(t)
	for _, k := range []struct{ id, kind string }{{compID, "component"}, {merchantA, "authorizer"}} {
		if a, b := after.TokenFetches[k.id][k.kind], before.TokenFetches[k.id][k.kind]; a != b {
			t.Errorf("restart fetched %s tokens: %d → %d", k.kind, b, a)
		}
	}
	// A push with a bad signature: 401.
	code, _, _ = do(t, http.MethodPost, "http://"+cb+"/callback/acme?timestamp=1&nonce=1&msg_signature=00", "<xml><Encrypt>AAAA</Encrypt></xml>")
	if code != 401 {
		t.Errorf("bad signature: %d", code)
	}
	if code, _, _ := get(t, "http://"+cb+"/admin/platforms"); code != 404 {
		t.Errorf("callback listener serves other paths: %d", code)
	}
}
