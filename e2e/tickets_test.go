package e2e

import (
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wxproxy/wxproxy/internal/redistest"
)

// simTickets reads the tickets the simulator would accept now, per type,
// for appID.
func (s *sim) tickets(tb testing.TB) map[string][]string {
	tb.Helper()
	_, _, b := get(tb, s.url+"/sim/tickets")
	var all map[string]map[string][]string
	if err := json.Unmarshal(b, &all); err != nil {
		tb.Fatalf("sim tickets %s: %v", b, err)
	}
	return all[appID]
}

// ticketFetches reads ticket_fetches of appID from the simulator.
func (s *sim) ticketFetches(tb testing.TB) map[string]int64 {
	tb.Helper()
	_, _, b := get(tb, s.url+"/sim/stats")
	var st struct {
		TicketFetches map[string]map[string]int64 `json:"ticket_fetches"`
	}
	if err := json.Unmarshal(b, &st); err != nil {
		tb.Fatalf("sim stats %s: %v", b, err)
	}
	return st.TicketFetches[appID]
}

// getTicket asks a replica for a ticket as an SDK does.
func getTicket(tb testing.TB, p *wxp, typ string) string {
	tb.Helper()
	code, _, b := get(tb, p.url+"/cgi-bin/ticket/getticket?type="+typ)
	var a struct {
		ErrCode   int    `json:"errcode"`
		Ticket    string `json:"ticket"`
		ExpiresIn int64  `json:"expires_in"`
	}
	if err := json.Unmarshal(b, &a); err != nil || code != 200 || a.ErrCode != 0 || a.Ticket == "" || a.ExpiresIn < 1 {
		tb.Fatalf("getticket %s: %d %s", typ, code, b)
	}
	return a.Ticket
}

// A fleet of three replicas on Redis holds its configured tickets with one
// fetch per type between them; every replica answers the same ticket and
// shows it on the admin port by fingerprint only.
func TestTicketsFleet(t *testing.T) {
	rs := redistest.Start(t)
	s := startSim(t, "-app", appID+":"+secret)
	ps := startFleet(t, 3, fleetConfig(s.url, rs.URL, t.Name()+":", "    tickets: [jsapi, wx_card]\n"))
	if got := s.ticketFetches(t); got["jsapi"] != 1 || got["wx_card"] != 1 {
		t.Errorf("fleet startup ticket fetches = %v, want one per type", got)
	}
	live := s.tickets(t)
	for i, p := range ps {
		if tk := getTicket(t, p, "jsapi"); !slices.Equal(live["jsapi"], []string{tk}) {
			t.Errorf("replica %d answers another jsapi ticket than WeChat's", i)
		}
		if tk := getTicket(t, p, "wx_card"); !slices.Equal(live["wx_card"], []string{tk}) {
			t.Errorf("replica %d answers another wx_card ticket than WeChat's", i)
		}
		_, _, b := get(t, p.admin+"/admin/apps")
		if !strings.Contains(string(b), `"type":"jsapi","held":true,"present":true,"fingerprint":"`+fingerprint(live["jsapi"][0])+`"`) {
			t.Errorf("replica %d /admin/apps: %s", i, b)
		}
		if strings.Contains(string(b), live["jsapi"][0]) {
			t.Errorf("replica %d /admin/apps shows the ticket itself", i)
		}
		_, _, m := get(t, p.admin+"/metrics")
		if !strings.Contains(string(m), `wxproxy_ticket_ttl_seconds{app="main",type="jsapi"}`) {
			t.Errorf("replica %d: no wxproxy_ticket_ttl_seconds for jsapi", i)
		}
	}
	if got := s.ticketFetches(t); got["jsapi"] != 1 || got["wx_card"] != 1 {
		t.Errorf("after 6 SDK requests: ticket fetches = %v, want still one per type", got)
	}

	// Scrubbing does not touch tickets (pages need them) but does the
	// token: an answer echoing both (WeChat's echo of the query) carries
	// the ticket and not the token.
	creds := s.liveCredentials(t)
	tok := creds[len(creds)-1] // the token the fleet holds
	code, _, b := get(t, ps[0].url+"/cgi-bin/e2e/echo?note="+url.QueryEscape(live["jsapi"][0])+"&leak="+url.QueryEscape(tok))
	if code != 200 || !strings.Contains(string(b), live["jsapi"][0]) || !strings.Contains(string(b), `"leak":["wxp.main.`) {
		t.Errorf("an answer with the ticket and the token in it: %d %s, want the ticket intact and the token replaced by its placeholder", code, b)
	}
	for _, c := range creds {
		if strings.Contains(string(b), c) {
			t.Errorf("the echo answer shows a live credential: %s", b)
		}
	}

	// The whole fleet restarts: the tickets are read back from Redis, not
	// fetched.
	for _, p := range ps {
		if err := p.stop(t); err != nil {
			t.Fatalf("stop: %v", err)
		}
	}
	ps = startFleet(t, 3, fleetConfig(s.url, rs.URL, t.Name()+":", "    tickets: [jsapi, wx_card]\n"))
	for i, p := range ps {
		if tk := getTicket(t, p, "jsapi"); !slices.Equal(live["jsapi"], []string{tk}) {
			t.Errorf("restarted replica %d answers another jsapi ticket", i)
		}
	}
	if got := s.ticketFetches(t); got["jsapi"] != 1 || got["wx_card"] != 1 {
		t.Errorf("after the fleet restarted: ticket fetches = %v, want still one per type", got)
	}
}

// A restart on the file store costs no ticket fetch (nor token fetch).
func TestTicketsSurviveRestart(t *testing.T) {
	s := startSim(t, "-app", appID+":"+secret)
	dir := t.TempDir()
	cfg := fmt.Sprintf(`
listen: 127.0.0.1:0
admin: {listen: 127.0.0.1:0}
store: {kind: file, path: %q}
apps:
  - name: main
    appid: %s
    secret: %s
    upstream: %s
    tickets: [jsapi]
`, filepath.Join(dir, "tokens.json"), appID, secret, s.url)
	p := startProxy(t, dir, cfg)
	waitFor(t, 15*time.Second, "ready", func() bool { code, _, _ := get(t, p.admin+"/readyz"); return code == 200 })
	first := getTicket(t, p, "jsapi")
	if err := p.stop(t); err != nil {
		t.Fatalf("stop: %v", err)
	}
	tokens, tickets := s.fetches(t, appID), s.ticketFetches(t)["jsapi"]

	p = startProxy(t, dir, cfg)
	waitFor(t, 15*time.Second, "ready", func() bool { code, _, _ := get(t, p.admin+"/readyz"); return code == 200 })
	if again := getTicket(t, p, "jsapi"); again != first {
		t.Error("the restarted proxy answers another ticket")
	}
	if got := s.ticketFetches(t)["jsapi"] - tickets; got != 0 {
		t.Errorf("the restart fetched the ticket %d times, want 0", got)
	}
	if got := s.fetches(t, appID) - tokens; got != 0 {
		t.Errorf("the restart fetched the token %d times, want 0", got)
	}
}

// The real wechat-jssdk npm client, pointed at wxproxy: token → ticket →
// signature. Its signature verifies with WeChat's ticket, and WeChat sees
// no ticket fetch beyond wxproxy's own.
func TestJSSDKNodeClient(t *testing.T) {
	nodeDir, _ := filepath.Abs("sdk/node")
	if _, err := os.Stat(filepath.Join(nodeDir, "node_modules", "wechat-jssdk")); err != nil {
		if os.Getenv("WXPROXY_REQUIRE_NODE") == "1" {
			t.Fatalf("wechat-jssdk is not installed in %s (run npm ci there) and WXPROXY_REQUIRE_NODE=1", nodeDir)
		}
		t.Skip("wechat-jssdk not installed: run npm ci in e2e/sdk/node")
	}
	node, err := exec.LookPath("node")
	if err != nil {
		if os.Getenv("WXPROXY_REQUIRE_NODE") == "1" {
			t.Fatal("node not found and WXPROXY_REQUIRE_NODE=1")
		}
		t.Skip("node not found")
	}
	s := startSim(t, "-app", appID+":"+secret)
	dir := t.TempDir()
	p := startProxy(t, dir, fmt.Sprintf(`
listen: 127.0.0.1:0
admin: {listen: 127.0.0.1:0}
apps:
  - name: main
    appid: %s
    secret: %s
    upstream: %s
    tickets: [jsapi]
`, appID, secret, s.url))
	waitFor(t, 15*time.Second, "ready", func() bool { code, _, _ := get(t, p.admin+"/readyz"); return code == 200 })
	own := s.ticketFetches(t)["jsapi"]

	const page = "https://shop.example.com/item?id=7&from=timeline"
	cmd := exec.Command(node, filepath.Join(nodeDir, "jssdk.js"))
	cmd.Dir = nodeDir
	cmd.Env = append(os.Environ(), "WXPROXY_URL="+p.url, "WX_APPID="+appID, "PAGE_URL="+page+"#/detail",
		"STORE_FILE="+filepath.Join(dir, "wechat-info.json"))
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("wechat-jssdk: %v\n%s\n%s", err, out, stderr)
	}
	var sig struct {
		AppID     string `json:"appId"`
		Timestamp string `json:"timestamp"`
		NonceStr  string `json:"nonceStr"`
		Signature string `json:"signature"`
		URL       string `json:"url"`
	}
	if err := json.Unmarshal(out, &sig); err != nil {
		t.Fatalf("wechat-jssdk printed %q: %v", out, err)
	}
	ts, _ := strconv.ParseInt(sig.Timestamp, 10, 64)
	live := s.tickets(t)["jsapi"]
	if sig.AppID != appID || sig.URL != page || len(live) != 1 || sig.Signature != jssdkSign(live[0], sig.NonceStr, ts, page) {
		t.Errorf("wechat-jssdk's signature %+v does not verify with WeChat's jsapi ticket", sig)
	}
	if got := s.ticketFetches(t)["jsapi"]; got != own || own != 1 {
		t.Errorf("ticket fetches at WeChat: %d before the SDK, %d after; want 1 and 1 (the SDK's request was answered by wxproxy)", own, got)
	}
	if n := s.stats(t).APICalls["/cgi-bin/token"]; n != 0 {
		t.Errorf("the SDK's token request reached WeChat %d times", n)
	}

	// Neither the SDK nor the log saw the token that fetched the ticket.
	_, _, tb := get(t, s.url+"/sim/tokens")
	var tokens map[string][]string
	if err := json.Unmarshal(tb, &tokens); err != nil || len(tokens[appID]) == 0 {
		t.Fatalf("sim tokens %s: %v", tb, err)
	}
	for _, v := range append(tokens[appID], secret) {
		if strings.Contains(p.output(), v) || strings.Contains(string(out), v) {
			t.Error("a live token or the secret reached the SDK or the log")
		}
	}

	// wxproxy's own endpoint signs the same page with the same ticket.
	code, _, b := get(t, p.url+"/wxproxy/jssdk/config?url="+url.QueryEscape(page+"#/detail"))
	var cfg struct {
		AppID     string `json:"appId"`
		Timestamp int64  `json:"timestamp"`
		NonceStr  string `json:"nonceStr"`
		Signature string `json:"signature"`
	}
	if err := json.Unmarshal(b, &cfg); err != nil || code != 200 || cfg.Signature != jssdkSign(live[0], cfg.NonceStr, cfg.Timestamp, page) {
		t.Errorf("/wxproxy/jssdk/config: %d %s does not verify", code, b)
	}
}

// jssdkSign recomputes a JS-SDK signature as WECHAT.md defines it.
func jssdkSign(ticket, nonce string, ts int64, page string) string {
	sum := sha1.Sum(fmt.Appendf(nil, "jsapi_ticket=%s&noncestr=%s&timestamp=%d&url=%s", ticket, nonce, ts, page))
	return hex.EncodeToString(sum[:])
}

// fingerprint is the admin port's fingerprint: the first 8 hex digits of
// sha256.
func fingerprint(v string) string {
	sum := sha256.Sum256([]byte(v))
	return hex.EncodeToString(sum[:4])
}
