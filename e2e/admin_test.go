package e2e

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

const adminToken = "e2e-admin-token-0123456789"

func authed(tb testing.TB, method, url, tok string) (int, []byte) {
	tb.Helper()
	req, _ := http.NewRequest(method, url, nil)
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
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
	return resp.StatusCode, []byte(b.String())
}

func TestAdminAPI(t *testing.T) {
	s := startSim(t, "-app", appID+":"+secret)
	cfg := proxyConfig(s.url, "") + `    quotas:
      apis:
        /cgi-bin/limited: {per_day: 1}
`
	cfg = strings.Replace(cfg, "admin: {listen: 127.0.0.1:0}", "admin: {listen: 127.0.0.1:0, token: \"${ADMIN_TOKEN}\"}", 1)
	p := startProxy(t, t.TempDir(), cfg, "E2E_SECRET="+secret, "ADMIN_TOKEN="+adminToken)
	waitFor(t, 10*time.Second, "readyz", func() bool { code, _, _ := get(t, p.admin+"/readyz"); return code == 200 })
	get(t, p.url+"/cgi-bin/limited")
	get(t, p.url+"/cgi-bin/limited") // refused locally

	var apps []struct {
		Name, Kind, AppID string
		TokenMode         string `json:"token_mode"`
		Breaker           string
		Ready             bool
		Token             struct {
			Present     bool
			Fingerprint string
			TTL         int64 `json:"ttl_seconds"`
			Refreshes   int64
		}
	}
	_, _, b := get(t, p.admin+"/admin/apps")
	if err := json.Unmarshal(b, &apps); err != nil {
		t.Fatalf("/admin/apps: %v %s", err, b)
	}
	if len(apps) != 1 || apps[0].Name != "main" || apps[0].AppID != appID || apps[0].TokenMode != "stable" ||
		!apps[0].Ready || !apps[0].Token.Present || len(apps[0].Token.Fingerprint) != 8 || apps[0].Token.TTL <= 0 || apps[0].Breaker != "closed" {
		t.Errorf("/admin/apps = %s", b)
	}

	var breakers []struct {
		App, Replica, State string
		Since               time.Time
		Counts              map[string]int
	}
	_, _, b = get(t, p.admin+"/admin/breakers")
	if err := json.Unmarshal(b, &breakers); err != nil || len(breakers) != 1 || breakers[0].State != "closed" || breakers[0].Replica == "" || breakers[0].Counts["requests"] < 1 {
		t.Errorf("/admin/breakers = %s (%v)", b, err)
	}

	var quotas []struct {
		App  string
		APIs []struct {
			API     string `json:"api"`
			PerDay  int    `json:"per_day"`
			UsedDay int64  `json:"used_day"`
		}
	}
	_, _, b = get(t, p.admin+"/admin/quotas")
	if err := json.Unmarshal(b, &quotas); err != nil || len(quotas) != 1 || len(quotas[0].APIs) != 1 ||
		quotas[0].APIs[0].API != "/cgi-bin/limited" || quotas[0].APIs[0].UsedDay != 1 || quotas[0].APIs[0].PerDay != 1 {
		t.Errorf("/admin/quotas = %s (%v)", b, err)
	}

	_, _, b = get(t, p.admin+"/metrics")
	for _, name := range []string{"wxproxy_requests_total", "wxproxy_token_ttl_seconds", "wxproxy_breaker_state",
		"wxproxy_token_refreshes_total", "wxproxy_ratelimit_rejections_total", "wxproxy_request_duration_seconds"} {
		if !strings.Contains(string(b), name) {
			t.Errorf("/metrics lacks %s", name)
		}
	}

	// POSTs need the bearer token.
	for _, tok := range []string{"", "wrong"} {
		if code, _ := authed(t, "POST", p.admin+"/admin/apps/main/refresh", tok); code != 403 {
			t.Errorf("refresh with token %q: %d, want 403", tok, code)
		}
	}
	before := s.stats(t).TokenFetches[appID]["stable_forced"]
	code, body := authed(t, "POST", p.admin+"/admin/apps/main/refresh", adminToken)
	if code != 200 || !strings.Contains(string(body), `"refreshed":true`) {
		t.Errorf("refresh: %d %s", code, body)
	}
	if got := s.stats(t).TokenFetches[appID]["stable_forced"]; got != before+1 {
		t.Errorf("forced refreshes %d → %d, want +1", before, got)
	}
	// Within 30 s the stable budget refuses another.
	if code, body := authed(t, "POST", p.admin+"/admin/apps/main/refresh", adminToken); code != 429 {
		t.Errorf("second refresh: %d %s, want 429", code, body)
	}
	if code, _ := authed(t, "POST", p.admin+"/admin/apps/nope/refresh", adminToken); code != 404 {
		t.Errorf("refresh unknown app: %d, want 404", code)
	}

	// Nothing on the admin port shows a token or the secret.
	_, _, tb := get(t, s.url+"/sim/tokens")
	var live map[string][]string
	_ = json.Unmarshal(tb, &live)
	var all strings.Builder
	for _, path := range []string{"/admin/apps", "/admin/breakers", "/admin/quotas", "/metrics", "/readyz"} {
		_, _, b := get(t, p.admin+path)
		all.Write(b)
	}
	for _, v := range append(live[appID], secret, adminToken) {
		if strings.Contains(all.String()+p.output(), v) {
			t.Errorf("the admin port or the log shows a token or secret")
		}
	}
}

func TestAdminPostsRefusedWithoutToken(t *testing.T) {
	s := startSim(t, "-app", appID+":"+secret)
	p := startProxy(t, t.TempDir(), proxyConfig(s.url, ""), "E2E_SECRET="+secret)
	for _, path := range []string{"/admin/apps/main/refresh", "/admin/reload"} {
		if code, _ := authed(t, "POST", p.admin+path, "anything"); code != 403 {
			t.Errorf("POST %s with no admin.token configured: %d, want 403", path, code)
		}
	}
}

// TestReload: new quotas take effect on SIGHUP and on POST /admin/reload
// while traffic flows; no request is dropped; an invalid file is refused
// and the running configuration stays.
func TestReload(t *testing.T) {
	s := startSim(t, "-app", appID+":"+secret)
	dir := t.TempDir()
	base := strings.Replace(proxyConfig(s.url, ""), "admin: {listen: 127.0.0.1:0}", "admin: {listen: 127.0.0.1:0, token: "+adminToken+"}", 1)
	withLimit := func(perDay string) string {
		return base + "    quotas:\n      apis:\n        /cgi-bin/q: {per_day: " + perDay + "}\n"
	}
	p := startProxy(t, dir, withLimit("1000"), "E2E_SECRET="+secret)
	waitFor(t, 10*time.Second, "readyz", func() bool { code, _, _ := get(t, p.admin+"/readyz"); return code == 200 })

	// Traffic during the reloads: every request gets an answer (200 or a
	// local 429), never a transport error or a 5xx.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var sent, dropped atomic.Int64
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := http.Get(p.url + "/cgi-bin/other")
				sent.Add(1)
				if err != nil {
					dropped.Add(1)
					continue
				}
				resp.Body.Close()
				if resp.StatusCode != 200 {
					dropped.Add(1)
				}
			}
		})
	}
	cfgPath := filepath.Join(dir, "wxproxy.yaml")
	write := func(cfg string) {
		if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	qcode := func() int { code, _, _ := get(t, p.url+"/cgi-bin/q"); return code }
	if qcode() != 200 {
		t.Fatal("/cgi-bin/q refused before any reload")
	}

	// SIGHUP with a limit of 1 (already used): the next call is refused.
	write(withLimit("1"))
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "SIGHUP reload", func() bool { return qcode() == 429 })

	// An invalid file is refused; the limit of 1 stays.
	write(withLimit("-5"))
	code, body := authed(t, "POST", p.admin+"/admin/reload", adminToken)
	if code != 400 || !strings.Contains(string(body), "per_day") {
		t.Errorf("invalid reload: %d %s, want 400 naming the key", code, body)
	}
	if qcode() != 429 {
		t.Error("an invalid reload changed the running quotas")
	}

	// POST /admin/reload lifts the limit; a listen change is reported, not applied.
	write(strings.Replace(withLimit("1000"), "listen: 127.0.0.1:0\n", "listen: 127.0.0.1:1\n", 1))
	code, body = authed(t, "POST", p.admin+"/admin/reload", adminToken)
	if code != 200 || !strings.Contains(string(body), `"listen"`) {
		t.Errorf("reload: %d %s, want 200 listing listen under needs_restart", code, body)
	}
	if qcode() != 200 {
		t.Error("raised limit not applied by POST /admin/reload")
	}
	close(stop)
	wg.Wait()
	if sent.Load() < 10 || dropped.Load() != 0 {
		t.Errorf("during reloads %d of %d requests failed", dropped.Load(), sent.Load())
	}
}

// TestReadyzReasons: with a wrong secret the app never gets a token:
// /readyz is 503 and says why (errcode 40125), callers get 503
// token_unavailable, and wxproxy does not hammer the token endpoint.
func TestReadyzReasons(t *testing.T) {
	s := startSim(t, "-app", appID+":"+secret)
	p := startProxy(t, t.TempDir(), proxyConfig(s.url, ""), "E2E_SECRET=wrong-secret-value")
	var body []byte
	waitFor(t, 10*time.Second, "a failed fetch", func() bool {
		var code int
		code, _, body = get(t, p.admin+"/readyz")
		return code == 503 && strings.Contains(string(body), "40125")
	})
	var r struct {
		Ready   bool     `json:"ready"`
		Reasons []string `json:"reasons"`
	}
	if err := json.Unmarshal(body, &r); err != nil || r.Ready || len(r.Reasons) != 1 || !strings.Contains(r.Reasons[0], "main") {
		t.Errorf("/readyz = %s", body)
	}
	code, h, b := get(t, p.url+"/cgi-bin/x")
	if code != 503 || h.Get("X-WXProxy-Error") != "token_unavailable" {
		t.Errorf("caller: %d %s %s", code, h.Get("X-WXProxy-Error"), b)
	}
	for range 10 {
		get(t, p.url+"/cgi-bin/x")
	}
	if n := s.stats(t).APICalls["/cgi-bin/stable_token"]; n != 1 {
		t.Errorf("token endpoint called %d times with a wrong secret, want 1 (back off at the maximum)", n)
	}
	if !strings.Contains(p.output(), `"errcode":40125`) || strings.Contains(p.output(), "wrong-secret-value") {
		t.Error("log should name errcode 40125 and never the secret")
	}
}
