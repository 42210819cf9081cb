package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	appID  = "wx0a0a0a0a0a0a0a0a"
	secret = "e2e-secret-0123456789abcdef"
)

func proxyConfig(simURL, extra string) string {
	return fmt.Sprintf(`
listen: 127.0.0.1:0
shutdown_timeout: 10s
admin: {listen: 127.0.0.1:0}
log: {format: json, level: info}
%s
apps:
  - name: main
    appid: %s
    secret: ${E2E_SECRET}
    upstream: %s
`, extra, appID, simURL)
}

type echo struct {
	ErrCode int    `json:"errcode"`
	ErrMsg  string `json:"errmsg"`
	Echo    struct {
		AppID     string `json:"appid"`
		RequestID string `json:"request_id"`
	} `json:"echo"`
	AccessToken string `json:"access_token"`
}

func decode(tb testing.TB, b []byte) echo {
	tb.Helper()
	var e echo
	if err := json.Unmarshal(b, &e); err != nil {
		tb.Fatalf("decode %q: %v", b, err)
	}
	return e
}

// TestSDKFlowAndRetry: an unmodified SDK flow through the real binaries:
// token from wxproxy (a placeholder, no fetch upstream), API call with it,
// WeChat kills the token, concurrent callers see no error and cause one fetch.
func TestSDKFlowAndRetry(t *testing.T) {
	s := startSim(t, "-app", appID+":"+secret)
	p := startProxy(t, t.TempDir(), proxyConfig(s.url, ""), "E2E_SECRET="+secret)
	waitFor(t, 10*time.Second, "readyz", func() bool { code, _, _ := get(t, p.admin+"/readyz"); return code == 200 })
	start := s.fetches(t, appID)

	_, _, b := get(t, p.url+"/cgi-bin/token?grant_type=client_credential&appid="+appID+"&secret=whatever")
	tok := decode(t, b).AccessToken
	if !strings.HasPrefix(tok, "wxp.main.") {
		t.Fatalf("SDK token answer %s", b)
	}
	_, _, b = get(t, p.url+"/cgi-bin/user/info?openid=o1&access_token="+tok)
	if e := decode(t, b); e.ErrCode != 0 || e.Echo.AppID != appID {
		t.Fatalf("API call with the placeholder: %s", b)
	}
	if got := s.fetches(t, appID); got != start {
		t.Errorf("SDK token request reached WeChat: fetches %d → %d", start, got)
	}

	s.post(t, "/sim/apps/"+appID+"/invalidate", "")
	var wg sync.WaitGroup
	var mu sync.Mutex
	var bad []string
	for i := range 100 {
		wg.Go(func() {
			code, h, b := do(t, "POST", p.url+"/cgi-bin/message/custom/send", fmt.Sprintf(`{"n":%d}`, i))
			if e := decode(t, b); code != 200 || e.ErrCode != 0 {
				mu.Lock()
				bad = append(bad, fmt.Sprintf("%d %s %v", code, b, h))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(bad) > 0 {
		t.Errorf("%d callers saw errors, first: %s", len(bad), bad[0])
	}
	if got := s.fetches(t, appID) - start; got != 1 {
		t.Errorf("token fetches after invalidation = %d, want 1", got)
	}
	if d := s.stats(t).Duplicates; len(d) != 0 {
		t.Errorf("requests sent twice: %v", d)
	}
	// The process logs hold no secret and no live token.
	_, _, tb := get(t, s.url+"/sim/tokens")
	var live map[string][]string
	_ = json.Unmarshal(tb, &live)
	out := p.output()
	for _, v := range append(live[appID], secret) {
		if strings.Contains(out, v) {
			t.Errorf("wxproxy output contains a token or the secret")
		}
	}
}

// TestGracefulShutdown: SIGTERM while a request is in flight; the request
// completes, the process exits 0.
func TestGracefulShutdown(t *testing.T) {
	s := startSim(t, "-app", appID+":"+secret)
	p := startProxy(t, t.TempDir(), proxyConfig(s.url, ""), "E2E_SECRET="+secret)
	waitFor(t, 10*time.Second, "readyz", func() bool { code, _, _ := get(t, p.admin+"/readyz"); return code == 200 })
	s.post(t, "/sim/faults", `{"path":"/cgi-bin/slow","latency":"1s"}`)

	type result struct {
		code int
		body []byte
		err  error
	}
	res := make(chan result, 1)
	go func() {
		resp, err := http.Get(p.url + "/cgi-bin/slow")
		if err != nil {
			res <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		res <- result{code: resp.StatusCode, body: b, err: err}
	}()
	// Wait until the request is inside the simulator, then stop the proxy.
	waitFor(t, 10*time.Second, "request in flight", func() bool { return s.stats(t).APICalls["/cgi-bin/slow"] == 1 })
	if err := p.stop(t); err != nil {
		t.Errorf("wxproxy exit after SIGTERM: %v, want status 0", err)
	}
	r := <-res
	if r.err != nil || r.code != 200 || decode(t, r.body).ErrCode != 0 {
		t.Errorf("in-flight request: %d %s %v; want it completed", r.code, r.body, r.err)
	}
	if !strings.Contains(p.output(), `"msg":"stopped"`) {
		t.Error("no clean stop in the log")
	}
}

// TestFileStoreRestartNoFetch: with the file store, a restart reuses the
// token: no new fetch.
func TestFileStoreRestartNoFetch(t *testing.T) {
	s := startSim(t, "-app", appID+":"+secret)
	dir := t.TempDir()
	store := filepath.Join(dir, "tokens.json")
	cfg := proxyConfig(s.url, "store: {kind: file, path: "+store+"}")
	p := startProxy(t, dir, cfg, "E2E_SECRET="+secret)
	waitFor(t, 10*time.Second, "readyz", func() bool { code, _, _ := get(t, p.admin+"/readyz"); return code == 200 })
	if err := p.stop(t); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(store)
	if err != nil {
		t.Fatal(err)
	}
	if mode := fi.Mode().Perm(); mode != 0o600 {
		t.Errorf("store file mode = %o, want 600", mode)
	}
	before := s.fetches(t, appID)
	p = startProxy(t, dir, cfg, "E2E_SECRET="+secret)
	waitFor(t, 10*time.Second, "readyz", func() bool { code, _, _ := get(t, p.admin+"/readyz"); return code == 200 })
	if _, _, b := get(t, p.url+"/cgi-bin/x"); decode(t, b).ErrCode != 0 {
		t.Errorf("call after restart: %s", b)
	}
	if got := s.fetches(t, appID); got != before {
		t.Errorf("restart fetched a token: %d → %d", before, got)
	}
}

// TestCheck: check prints the effective config with secrets redacted, and
// names the key of a bad value.
func TestCheck(t *testing.T) {
	build(t)
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	os.WriteFile(good, []byte(proxyConfig("https://api.weixin.qq.com", "")), 0o600)
	cmd := exec.Command(bins.wxproxy, "check", "-config", good)
	cmd.Env = append(os.Environ(), "E2E_SECRET="+secret)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("check good config: %v\n%s", err, out)
	}
	if strings.Contains(string(out), secret) || !strings.Contains(string(out), "<redacted>") {
		t.Errorf("check output does not redact the secret:\n%s", out)
	}
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte(strings.Replace(proxyConfig("https://x", ""), "shutdown_timeout: 10s", "shutdown_timeout: soon", 1)), 0o600)
	cmd = exec.Command(bins.wxproxy, "check", "-config", bad)
	out, err = cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Errorf("check bad config: err %v, want exit 1", err)
	}
	if !strings.Contains(string(out), "shutdown_timeout") {
		t.Errorf("check error does not name the key:\n%s", out)
	}
	out, err = exec.Command(bins.wxproxy, "version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "wxproxy ") {
		t.Errorf("version: %v %s", err, out)
	}
}

// TestProactiveRefresh: with 2 s tokens, wxproxy refreshes ahead of expiry
// in both token modes; a steady stream of callers never sees a token error
// and never needs a retry.
func TestProactiveRefresh(t *testing.T) {
	for _, mode := range []string{"classic", "stable"} {
		t.Run(mode, func(t *testing.T) {
			s := startSim(t, "-app", appID+":"+secret, "-token-ttl", "2s")
			cfg := strings.Replace(proxyConfig(s.url, ""), "    upstream:", "    token_mode: "+mode+"\n    upstream:", 1)
			p := startProxy(t, t.TempDir(), cfg, "E2E_SECRET="+secret)
			waitFor(t, 10*time.Second, "readyz", func() bool { code, _, _ := get(t, p.admin+"/readyz"); return code == 200 })
			distinct := map[string]bool{}
			deadline := time.Now().Add(30 * time.Second)
			for len(distinct) < 4 && time.Now().Before(deadline) {
				code, h, b := get(t, p.url+"/cgi-bin/x")
				if e := decode(t, b); code != 200 || e.ErrCode != 0 || h.Get("X-WXProxy-Retried") != "" {
					t.Fatalf("caller saw %d retried=%q %s", code, h.Get("X-WXProxy-Retried"), b)
				}
				_, _, tb := get(t, s.url+"/sim/tokens")
				var live map[string][]string
				_ = json.Unmarshal(tb, &live)
				for _, v := range live[appID] {
					distinct[v] = true
				}
				time.Sleep(20 * time.Millisecond)
			}
			if len(distinct) < 4 {
				t.Fatalf("saw %d distinct tokens in 30 s, want >= 4 (3 proactive refreshes)", len(distinct))
			}
			if n := s.stats(t).Errcodes["42001"] + s.stats(t).Errcodes["40001"]; n != 0 {
				t.Errorf("WeChat answered %d token errors during proactive refreshes, want 0", n)
			}
		})
	}
}
