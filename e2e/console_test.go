package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/wxproxy/wxproxy/internal/redistest"
)

// findChromium returns a Chromium (or Chrome) binary: $WXPROXY_CHROMIUM,
// else the first of the usual names on PATH.
func findChromium() string {
	if p := os.Getenv("WXPROXY_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// needBrowser skips the test when no Chromium is installed, unless
// WXPROXY_REQUIRE_BROWSER=1 (CI), which makes that a failure.
func needBrowser(tb testing.TB) string {
	tb.Helper()
	p := findChromium()
	if p == "" {
		msg := "no Chromium found (install Debian's chromium package, or set WXPROXY_CHROMIUM to a Chrome binary)"
		if os.Getenv("WXPROXY_REQUIRE_BROWSER") == "1" {
			tb.Fatal(msg + "; WXPROXY_REQUIRE_BROWSER=1 makes this a failure")
		}
		tb.Skip(msg)
	}
	return p
}

const (
	betaAppID  = "wx0b0b0b0b0b0b0b0b"
	betaSecret = "e2e-beta-secret-0123456789abcd"
	// xssPath is an API name and a request path that is markup: the console
	// must show it as text, never parse it.
	xssPath = `/cgi-bin/<img/src="x"/onerror="window.__xss=1">`
)

func consoleConfig(simURL string) string {
	return fmt.Sprintf(`
listen: 127.0.0.1:0
admin: {listen: 127.0.0.1:0, token: "${ADMIN_TOKEN}"}
log: {format: json, level: info}
apps:
  - name: alpha
    appid: %s
    secret: ${E2E_SECRET}
    upstream: %s
    quotas:
      apis:
        /cgi-bin/message/custom/send: {per_minute: 3, burst: 3}
        '%s': {per_minute: 1, burst: 1}
        /cgi-bin/lim: {}
  - name: beta
    appid: %s
    secret: ${BETA_SECRET}
    token_mode: classic
    upstream: %s
    breaker: {consecutive_failures: 2, open_timeout: 10m}
`, appID, simURL, xssPath, betaAppID, simURL)
}

// consoleState is what the test reads out of the rendered page.
type consoleState struct {
	Apps        []string `json:"apps"`
	BetaBreaker string   `json:"betaBreaker"`
	BetaClass   string   `json:"betaClass"`
	BetaColor   string   `json:"betaColor"`
	AlphaBadge  string   `json:"alphaColor"`
	QuotaText   string   `json:"quotaText"`
	QuotaValue  float64  `json:"quotaValue"`
	QuotaMax    float64  `json:"quotaMax"`
	Remembered  string   `json:"remembered"`
	TTLValue    float64  `json:"ttlValue"`
	TTLMax      float64  `json:"ttlMax"`
	ErrorKinds  []string `json:"errorKinds"`
	ErrorText   string   `json:"errorText"`
	QuotaAPIs   string   `json:"quotaAPIs"`
	Images      int      `json:"images"`
	XSS         bool     `json:"xss"`
	Marker      int      `json:"marker"`
}

const readConsole = `(() => {
  const q = (s) => document.querySelector(s);
  const badge = q('[data-app="beta"] .breaker .badge');
  const alpha = q('[data-app="alpha"] .breaker .badge');
  const row = q('[data-quota-app="alpha"] tr[data-api="/cgi-bin/message/custom/send"]');
  const m = row && row.querySelector('td meter');
  const ttl = q('[data-app="alpha"] .tok meter');
  return {
    apps: [...document.querySelectorAll('[data-app]')].filter((e) => e.tagName === 'ARTICLE').map((e) => e.dataset.app),
    betaBreaker: badge ? badge.textContent : '',
    betaClass: badge ? badge.className : '',
    betaColor: badge ? getComputedStyle(badge).color : '',
    alphaColor: alpha ? getComputedStyle(alpha).color : '',
    quotaText: row ? row.querySelector('td').textContent : '',
    quotaValue: m ? m.value : -1, quotaMax: m ? m.max : -1,
    remembered: ((q('[data-quota-app="alpha"] tr[data-api="/cgi-bin/lim"]') || {}).textContent) || '',
    ttlValue: ttl ? ttl.value : -1, ttlMax: ttl ? ttl.max : -1,
    errorKinds: [...document.querySelectorAll('#errors .error-row')].map((r) => r.querySelector('.kind').textContent + ' ' + r.querySelector('.err-app').textContent),
    errorText: (q('#errors') || {}).textContent || '',
    quotaAPIs: (q('#quotas') || {}).textContent || '',
    images: document.querySelectorAll('img').length,
    xss: window.__xss === 1,
    marker: window.__marker || 0,
  };
})()`

// TestConsoleInBrowser drives the status console in headless Chromium
// against a real wxproxy with two apps on the simulator: it shows both apps,
// a quota's numbers, a recent error, and a breaker that opens while the page
// is open (without a reload); its buttons do nothing without the admin
// token and work with it, by keyboard too; no live token reaches the DOM;
// markup in API names and errors stays text; no console errors; readable
// at 390 px. Screenshots go to the test's temp dir (and to
// $WXPROXY_CONSOLE_SHOTS when set).
func TestConsoleInBrowser(t *testing.T) {
	chromium := needBrowser(t)
	simCfg := filepath.Join(t.TempDir(), "sim.yaml")
	if err := writeFile(simCfg, fmt.Sprintf("apps:\n  - {appid: %s, secret: %s, kind: official}\n  - {appid: %s, secret: %s, kind: official}\n"+
		"quotas:\n  /cgi-bin/lim: {per_day: 1}\n", appID, secret, betaAppID, betaSecret)); err != nil {
		t.Fatal(err)
	}
	s := startSim(t, "-config", simCfg)
	p := startProxy(t, t.TempDir(), consoleConfig(s.url),
		"E2E_SECRET="+secret, "BETA_SECRET="+betaSecret, "ADMIN_TOKEN="+adminToken)
	waitFor(t, 15*time.Second, "readyz", func() bool { code, _, _ := get(t, p.admin+"/readyz"); return code == 200 })

	// Traffic before the page opens: alpha uses its quota and is refused
	// once; a request whose path is markup is refused by its own quota.
	for i := range 4 {
		code, _, b := do(t, http.MethodPost, p.url+"/alpha/cgi-bin/message/custom/send", `{"touser":"x"}`)
		if want := map[bool]int{true: 200, false: 429}[i < 3]; code != want {
			t.Fatalf("alpha call %d: %d %s, want %d", i, code, b, want)
		}
	}
	for i := range 2 {
		req, _ := http.NewRequest(http.MethodGet, p.url+"/alpha"+xssPath, nil)
		req.URL.RawPath = "" // let Go escape the markup
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if i == 1 && resp.StatusCode != 429 {
			t.Fatalf("second call to the markup path: %d, want 429", resp.StatusCode)
		}
	}

	// WeChat's own daily quota runs out: wxproxy remembers its 45009.
	for i := range 2 {
		if _, _, b := get(t, p.url+"/alpha/cgi-bin/lim"); i == 1 && decode(t, b).ErrCode != 45009 {
			t.Fatalf("WeChat's second answer should be 45009: %s", b)
		}
	}

	shots := t.TempDir()
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	allocOpts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromium), chromedp.NoSandbox,
		chromedp.DisableGPU, chromedp.WindowSize(1280, 900), chromedp.Flag("disable-dev-shm-usage", true))
	actx, acancel := chromedp.NewExecAllocator(ctx, allocOpts...)
	defer acancel()
	bctx, bcancel := chromedp.NewContext(actx)
	defer bcancel()

	// Every console message, uncaught exception and browser log entry of
	// level warning or error is a failure (a CSP violation is one).
	var consoleMu sync.Mutex
	var consoleErrs []string
	if err := chromedp.Do(bctx); err != nil { // start the browser
		t.Fatalf("starting %s: %v", chromium, err)
	}
	messages := chromedp.Console(bctx)
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleError || m.Type == chromedp.ConsoleWarning || m.IsException() {
				consoleMu.Lock()
				consoleErrs = append(consoleErrs, fmt.Sprintf("%s (%s:%d)", m, m.URL, m.Line+1))
				consoleMu.Unlock()
			}
		}
	}()

	read := func() consoleState {
		t.Helper()
		st, err := chromedp.Run(bctx, chromedp.Evaluate[consoleState](readConsole))
		if err != nil {
			t.Fatalf("reading the page: %v", err)
		}
		return st
	}
	// waitPage polls the page (without reloading it) until cond holds.
	waitPage := func(what string, cond func(consoleState) bool) consoleState {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			st := read()
			if cond(st) {
				return st
			}
			if time.Now().After(deadline) {
				t.Fatalf("page never showed %s; last read: %+v", what, st)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	start := time.Now()
	if err := chromedp.Do(bctx, chromedp.Navigate(p.admin+"/")); err != nil {
		t.Fatal(err)
	}
	st := waitPage("both apps", func(st consoleState) bool { return len(st.Apps) == 2 })
	if st.Apps[0] != "alpha" || st.Apps[1] != "beta" || st.BetaBreaker != "closed" {
		t.Errorf("first render: apps %v, beta breaker %q", st.Apps, st.BetaBreaker)
	}
	closedColor := st.BetaColor

	// The quota's numbers are the status document's.
	var status struct {
		Quotas []struct {
			App  string
			APIs []struct {
				API        string `json:"api"`
				UsedMinute int64  `json:"used_minute"`
				PerMinute  int64  `json:"per_minute"`
			} `json:"apis"`
		}
	}
	if _, _, b := get(t, p.admin+"/admin/status"); json.Unmarshal(b, &status) != nil {
		t.Fatalf("/admin/status: %s", b)
	}
	var used, limit int64 = -1, -1
	for _, q := range status.Quotas {
		for _, u := range q.APIs {
			if q.App == "alpha" && u.API == "/cgi-bin/message/custom/send" {
				used, limit = u.UsedMinute, u.PerMinute
			}
		}
	}
	if used < 3 || limit != 3 {
		t.Fatalf("status quota of alpha: used %d limit %d, want >= 3 of 3", used, limit)
	}
	if want := fmt.Sprintf("%d / %d", used, limit); !strings.Contains(st.QuotaText, want) || st.QuotaValue != float64(min(used, limit)) || st.QuotaMax != float64(limit) {
		t.Errorf("quota cell %q meter %v/%v, want %q", st.QuotaText, st.QuotaValue, st.QuotaMax, want)
	}
	if !strings.Contains(st.Remembered, "45009 remembered") {
		t.Errorf("WeChat column of /cgi-bin/lim: %q, want the remembered 45009", st.Remembered)
	}
	if st.TTLMax < 3600 || st.TTLValue <= 0 || st.TTLValue > st.TTLMax {
		t.Errorf("alpha TTL meter %v/%v", st.TTLValue, st.TTLMax)
	}
	if !slices.Contains(st.ErrorKinds, "rate_limited alpha") {
		t.Errorf("recent errors %v lack alpha's rate_limited", st.ErrorKinds)
	}
	// Markup from a config key and from a request path is shown as text.
	if st.Images != 0 || st.XSS || !strings.Contains(st.ErrorText, xssPath) || !strings.Contains(st.QuotaAPIs, xssPath) {
		t.Errorf("markup was not kept as text: %d <img>, xss ran %v, in errors %v, in quotas %v",
			st.Images, st.XSS, strings.Contains(st.ErrorText, xssPath), strings.Contains(st.QuotaAPIs, xssPath))
	}

	// The page updates itself: beta's breaker opens while it is open, and
	// the refused call shows up — without a reload (the marker survives).
	if _, err := chromedp.Run(bctx, chromedp.Evaluate[int](`window.__marker = 42`)); err != nil {
		t.Fatal(err)
	}
	s.post(t, "/sim/faults", `{"path":"/cgi-bin/beta/only","status":502}`)
	for range 2 {
		get(t, p.url+"/beta/cgi-bin/beta/only")
	}
	if code, _, b := get(t, p.url+"/beta/cgi-bin/beta/only"); code != 503 {
		t.Fatalf("beta with its breaker open: %d %s, want 503", code, b)
	}
	st = waitPage("beta's breaker open and the circuit_open error", func(st consoleState) bool {
		return st.BetaBreaker == "open" && slices.Contains(st.ErrorKinds, "circuit_open beta")
	})
	if st.Marker != 42 {
		t.Error("the page was reloaded; it should update in place")
	}
	if !strings.Contains(st.BetaClass, "state-open") || st.BetaColor == closedColor {
		t.Errorf("open breaker: class %q colour %s, closed colour %s: want its own colour", st.BetaClass, st.BetaColor, closedColor)
	}

	// Keyboard and labels: every input has a label, every button is a real
	// button with text, no positive tabindex, and Tab moves from the token
	// field to its button.
	a11y, err := chromedp.Run(bctx, chromedp.Evaluate[string](`(() => {
	  const bad = [];
	  for (const i of document.querySelectorAll('input')) if (!i.labels || !i.labels.length) bad.push('unlabelled input ' + i.id);
	  for (const b of document.querySelectorAll('button')) if (!b.textContent.trim()) bad.push('button without text');
	  for (const e of document.querySelectorAll('[tabindex]')) if (e.tabIndex > 0) bad.push('positive tabindex');
	  for (const e of document.querySelectorAll('[onclick], a:not([href])')) bad.push('fake control ' + e.tagName);
	  return bad.join('; ');
	})()`))
	if err != nil || a11y != "" {
		t.Errorf("keyboard/labels: %q %v", a11y, err)
	}
	if err := chromedp.Do(bctx, chromedp.Focus("#admin-token"), chromedp.KeyEvent("\t")); err != nil {
		t.Fatal(err)
	}
	if f, _ := chromedp.Run(bctx, chromedp.Evaluate[string](`document.activeElement.textContent`)); f != "Use token" {
		t.Errorf("Tab from the token field focused %q, want the Use token button", f)
	}

	// Keyboard focus survives the page's own updates.
	if err := chromedp.Do(bctx, chromedp.Focus(`[data-action="refresh"][data-app="beta"]`)); err != nil {
		t.Fatal(err)
	}
	before, _ := chromedp.Run(bctx, chromedp.Text("#summary"))
	if _, err := chromedp.Run(bctx, chromedp.Poll[bool](`document.getElementById('summary').textContent !== `+jsString(before),
		chromedp.WithPollingTimeout(10*time.Second))); err != nil {
		t.Fatalf("no update within 10 s: %v", err)
	}
	if f, _ := chromedp.Run(bctx, chromedp.Evaluate[string](`document.activeElement.dataset.key || document.activeElement.tagName`)); f != "refresh:beta" {
		t.Errorf("after an update the focus is on %q, want beta's refresh button", f)
	}

	// Without the admin token the buttons send nothing.
	fetches := s.stats(t).TokenFetches[appID]["stable_forced"]
	if err := chromedp.Do(bctx, chromedp.Click("#reload-config"), chromedp.Click(`[data-action="refresh"][data-app="alpha"]`)); err != nil {
		t.Fatal(err)
	}
	msg, _ := chromedp.Run(bctx, chromedp.Text("#action-result"))
	if !strings.Contains(msg, "nothing was sent") {
		t.Errorf("action result without a token: %q", msg)
	}
	if strings.Contains(p.output(), "configuration reloaded") || s.stats(t).TokenFetches[appID]["stable_forced"] != fetches {
		t.Error("a button acted without the admin token")
	}

	// With the token typed in (kept in sessionStorage, not in the field),
	// Enter on the refresh button refreshes, and reload reloads.
	if err := chromedp.Do(bctx, chromedp.SendKeys("#admin-token", adminToken), chromedp.Click(`#token-form button[type="submit"]`)); err != nil {
		t.Fatal(err)
	}
	kept, _ := chromedp.Run(bctx, chromedp.Evaluate[[]string](`[sessionStorage.getItem('wxproxy.adminToken'), String(localStorage.length), document.getElementById('admin-token').value]`))
	if len(kept) != 3 || kept[0] != adminToken || kept[1] != "0" || kept[2] != "" {
		t.Errorf("after entering the token: sessionStorage, localStorage length, field = %q", kept)
	}
	if err := chromedp.Do(bctx, chromedp.Focus(`[data-action="refresh"][data-app="alpha"]`), chromedp.KeyEvent("\r")); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Run(bctx, chromedp.Poll[bool](`document.getElementById('action-result').textContent.includes('refreshed')`,
		chromedp.WithPollingTimeout(20*time.Second))); err != nil {
		msg, _ := chromedp.Run(bctx, chromedp.Text("#action-result"))
		t.Fatalf("refresh by keyboard: %v; result %q", err, msg)
	}
	if got := s.stats(t).TokenFetches[appID]["stable_forced"]; got != fetches+1 {
		t.Errorf("forced fetches after the refresh button: %d, want %d", got, fetches+1)
	}
	if err := chromedp.Do(bctx, chromedp.Click("#reload-config")); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Run(bctx, chromedp.Poll[bool](`document.getElementById('action-result').textContent.includes('Configuration reloaded')`,
		chromedp.WithPollingTimeout(20*time.Second))); err != nil {
		msg, _ := chromedp.Run(bctx, chromedp.Text("#action-result"))
		t.Fatalf("reload button: %v; result %q", err, msg)
	}
	waitFor(t, 5*time.Second, "the reload in the log", func() bool { return strings.Contains(p.output(), "configuration reloaded") })

	// No live credential anywhere in the page: markup, field values,
	// storage (the admin token is the operator's own, not WeChat's).
	if _, err := chromedp.Run(bctx, chromedp.Poll[bool](`document.getElementById('summary').textContent.includes('updated')`,
		chromedp.WithPollingTimeout(10*time.Second))); err != nil {
		t.Fatal(err)
	}
	dom, err := chromedp.Run(bctx, chromedp.Evaluate[string](`document.documentElement.outerHTML + '\n' +
	  [...document.querySelectorAll('input')].map((i) => i.value).join('\n') + '\n' +
	  JSON.stringify(Object.entries(sessionStorage)) + JSON.stringify(Object.entries(localStorage)) + document.cookie`))
	if err != nil {
		t.Fatal(err)
	}
	creds := append(s.liveCredentials(t), betaSecret)
	if len(creds) < 3 {
		t.Fatalf("the simulator lists %d credentials, want both apps' tokens and secrets", len(creds))
	}
	for _, c := range creds {
		if strings.Contains(dom, c) {
			t.Errorf("a live credential (%.6s…) is in the page", c)
		}
	}

	// Screenshots: desktop, then a 390 px phone, where nothing is wider
	// than the screen.
	desktop, err := chromedp.Run(bctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(bctx, chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2), chromedp.EmulateMobile)); err != nil {
		t.Fatal(err)
	}
	width, err := chromedp.Run(bctx, chromedp.Poll[int](`document.documentElement.clientWidth === 390 && document.documentElement.scrollWidth`,
		chromedp.WithPollingTimeout(10*time.Second)))
	if err != nil || width > 390 {
		t.Errorf("at 390 px the page is %d px wide (%v): it must not scroll sideways", width, err)
	}
	phone, err := chromedp.Run(bctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	for name, png := range map[string][]byte{"console-desktop.png": desktop, "console-phone.png": phone} {
		for _, dir := range []string{shots, os.Getenv("WXPROXY_CONSOLE_SHOTS")} {
			if dir == "" {
				continue
			}
			path := filepath.Join(dir, name)
			if err := os.WriteFile(path, png, 0o644); err != nil {
				t.Fatal(err)
			}
			t.Logf("screenshot: %s", path)
		}
	}

	consoleMu.Lock()
	defer consoleMu.Unlock()
	for _, e := range consoleErrs {
		t.Errorf("browser console: %s", e)
	}
	t.Logf("browser part took %v", time.Since(start).Round(time.Millisecond))
}

// TestFleetStatus: in Redis mode, /admin/status on any replica shows every
// replica, a breaker opened on another replica as open (with that
// replica's entry), and quota use counted across the fleet.
func TestFleetStatus(t *testing.T) {
	rs := redistest.Start(t)
	s := startSim(t, "-app", appID+":"+secret)
	ps := startFleet(t, 2, fleetConfig(s.url, rs.URL, t.Name()+":", `    breaker: {consecutive_failures: 2, open_timeout: 10m}
    quotas: {apis: {/cgi-bin/counted: {per_minute: 100}}}
`))
	for i := range 5 {
		if code, _, b := get(t, ps[i%2].url+"/cgi-bin/counted"); code != 200 {
			t.Fatalf("counted call: %d %s", code, b)
		}
	}
	s.post(t, "/sim/faults", `{"path":"/cgi-bin/broken","status":502}`)
	for range 2 {
		get(t, ps[0].url+"/cgi-bin/broken")
	}
	type status struct {
		Replica  string
		Fleet    bool
		Replicas []struct{ Name string }
		Apps     []struct {
			Name    string
			Breaker struct {
				State    string
				Replicas []struct{ Replica, State string }
			}
		}
		Quotas []struct {
			App  string
			APIs []struct {
				API        string `json:"api"`
				UsedMinute int64  `json:"used_minute"`
			} `json:"apis"`
		}
		Warnings []string
	}
	var st status
	waitFor(t, 15*time.Second, "replica 1 to show replica 0's open breaker", func() bool {
		_, _, b := get(t, ps[1].admin+"/admin/status")
		st = status{}
		if err := json.Unmarshal(b, &st); err != nil {
			t.Fatalf("/admin/status: %v %s", err, b)
		}
		return len(st.Replicas) == 2 && len(st.Apps) == 1 && st.Apps[0].Breaker.State == "open"
	})
	if !st.Fleet || len(st.Apps[0].Breaker.Replicas) != 2 || len(st.Warnings) != 0 {
		t.Errorf("fleet status: %+v", st)
	}
	states := map[string]int{}
	for _, r := range st.Apps[0].Breaker.Replicas {
		states[r.State]++
	}
	if states["open"] != 1 || states["closed"] != 1 {
		t.Errorf("per-replica breakers: %+v", st.Apps[0].Breaker.Replicas)
	}
	var used int64 = -1
	for _, u := range st.Quotas[0].APIs {
		if u.API == "/cgi-bin/counted" {
			used = u.UsedMinute
		}
	}
	if used < 5 {
		t.Errorf("fleet quota use on replica 1: %d, want >= 5 (calls on both replicas)", used)
	}
}

// jsString quotes s as a JavaScript string literal.
func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
