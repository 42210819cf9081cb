package e2e

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestPlatformAttacks runs a hostile caller and a hostile stranger against
// the real binaries of a third-party platform deployment: a merchant whose
// refresh token wxproxy does not hold (state lost, as in a migration), the
// authorization-management APIs that answer refresh tokens, rid/get, and
// garbage on the internet-facing callback listener. At the end nothing the
// caller, the stranger, the admin API or the log saw holds a live token or
// a refresh token.
func TestPlatformAttacks(t *testing.T) {
	dir := t.TempDir()
	cb := freeAddr(t)
	s := startSim(t, "-component", compID+":"+compSecret+":"+compToken+":"+compKey, "-callback", "http://"+cb+"/callback/acme")
	w := startProxy(t, dir, platformConfig(s.url, cb, ""))
	s.post(t, "/sim/platforms/"+compID+"/push-ticket", "")
	waitFor(t, 10*time.Second, "ready", func() bool { c, _, _ := get(t, w.admin+"/readyz"); return c == 200 })
	s.post(t, "/sim/platforms/"+compID+"/authorize", `{"authorizer_appid":"`+merchantA+`"}`)
	// wxproxy restarts on the memory store: it holds no merchant now,
	// while WeChat still lists merchantA with its refresh token.
	if err := w.stop(t); err != nil {
		t.Fatal(err)
	}
	w = startProxy(t, dir, platformConfig(s.url, cb, ""))
	s.post(t, "/sim/platforms/"+compID+"/push-ticket", "")
	waitFor(t, 10*time.Second, "ready again", func() bool { c, _, _ := get(t, w.admin+"/readyz"); return c == 200 })

	var seen strings.Builder
	call := func(method, path, body string) (int, http.Header, []byte) {
		code, hdr, b := do(t, method, w.url+path, body)
		seen.Write(b)
		for k, vs := range hdr {
			seen.WriteString(k + ": " + strings.Join(vs, ",") + "\n")
		}
		return code, hdr, b
	}
	comp := `{"component_appid":"` + compID + `"`
	code, _, b := call(http.MethodPost, "/acme/cgi-bin/component/api_get_authorizer_list", comp+`,"offset":0,"count":500}`)
	if code != 200 || !strings.Contains(string(b), merchantA) {
		t.Fatalf("api_get_authorizer_list: %d %s", code, b)
	}
	call(http.MethodPost, "/acme/cgi-bin/component/api_get_authorizer_info", comp+`,"authorizer_appid":"`+merchantA+`"}`)
	// A refused code answers with a rid; rid/get of it echoes the call.
	_, _, b = call(http.MethodPost, "/acme/cgi-bin/component/api_query_auth", comp+`,"authorization_code":"forged"}`)
	var e struct {
		Msg string `json:"errmsg"`
	}
	json.Unmarshal(b, &e)
	if _, rid, ok := strings.Cut(e.Msg, "rid: "); ok {
		call(http.MethodPost, "/acme/cgi-bin/openapi/rid/get", `{"rid":"`+rid+`"}`)
	}
	// A merchant's route to the secret-taking component endpoints.
	call(http.MethodPost, "/acme@"+merchantA+"/cgi-bin/component/api_component_token", comp+`}`)

	// The stranger on the callback listener: garbage, an entity bomb, deep
	// nesting, a huge body, another platform's name, path tricks.
	bomb := `<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]><xml><Encrypt>&c;</Encrypt></xml>`
	for _, tc := range []struct {
		path, body string
		want       int
	}{
		{"/callback/acme?timestamp=1&nonce=1&msg_signature=00", "<xml><Encrypt>AAAA</Encrypt></xml>", 401},
		{"/callback/acme?timestamp=1&nonce=1&msg_signature=00", bomb, 400},
		{"/callback/acme?timestamp=1&nonce=1&msg_signature=00", strings.Repeat("<a>", 20000), 400},
		{"/callback/acme", strings.Repeat("x", 1<<20), 413},
		{"/callback/other", "<xml/>", 404},
		{"/callback/acme/../acme", "<xml/>", 404},
		{"/callback/%61cme", "<xml/>", 404},
		{"/callback/acme%2f", "<xml/>", 404},
	} {
		code, _, b := do(t, http.MethodPost, "http://"+cb+tc.path, tc.body)
		seen.Write(b)
		if code != tc.want {
			t.Errorf("callback %s (%d bytes): HTTP %d, want %d", tc.path, len(tc.body), code, tc.want)
		}
	}
	if code, _, _ := get(t, w.admin+"/readyz"); code != 200 {
		t.Errorf("readyz after the stranger: %d", code)
	}
	for _, p := range []string{"/admin/status", "/admin/platforms", "/admin/platforms/acme/authorizers", "/admin/apps", "/metrics"} {
		_, _, b := get(t, w.admin+p)
		seen.Write(b)
	}
	seen.WriteString(w.output())

	_, _, tokens := get(t, s.url+"/sim/tokens")
	var live map[string][]string
	json.Unmarshal(tokens, &live)
	all := seen.String()
	for id, ts := range live {
		for _, tok := range ts {
			if strings.Contains(all, tok) {
				t.Errorf("a live token of %s reached a caller, the admin API or the log", id)
			}
		}
	}
	for _, secret := range []string{"refreshtoken@@@", compSecret, compKey} {
		if strings.Contains(all, secret) {
			i := strings.Index(all, secret)
			t.Errorf("%.16s… reached a caller, the admin API or the log: …%s…", secret, all[max(0, i-120):min(len(all), i+60)])
		}
	}
}
