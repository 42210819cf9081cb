package server_test

import (
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/wxproxy/wxproxy/wechatsim"
)

const (
	corpID  = "ww5555555555555555"
	agentA  = "server-test-agent-a-0123456789"
	agentB  = "server-test-agent-b-0123456789"
	agentID = 1000002
)

func httpGet(tb testing.TB, u string) (int, []byte) {
	tb.Helper()
	resp, err := http.Get(u)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func jssdkSign(ticket, nonce string, ts int64, page string) string {
	sum := sha1.Sum(fmt.Appendf(nil, "jsapi_ticket=%s&noncestr=%s&timestamp=%d&url=%s", ticket, nonce, ts, page))
	return hex.EncodeToString(sum[:])
}

// A WeCom app configured with tickets [corp_jsapi, agent_config] and its
// agent_id: the server holds both from the start (no caller asked), is
// ready only then, signs wx.config and wx.agentConfig with them, and shows
// them on the admin port and in metrics. Another agent of the same corp
// gets its own agent ticket on first demand, under its own store key.
func TestWeComTicketsServed(t *testing.T) {
	sim, err := wechatsim.New(wechatsim.Options{Apps: []wechatsim.App{
		{AppID: corpID, Secret: agentA, Kind: wechatsim.KindWeCom},
		{AppID: corpID, Secret: agentB, Kind: wechatsim.KindWeCom},
	}})
	if err != nil {
		t.Fatal(err)
	}
	simSrv := httptest.NewServer(sim)
	defer simSrv.Close()
	srv := startServer(t, fmt.Sprintf(`
listen: 127.0.0.1:0
admin: {listen: 127.0.0.1:0}
apps:
  - {name: corp-a, kind: wecom, appid: %[1]s, secret: %[2]s, upstream: %[4]s}
  - {name: corp-b, kind: wecom, appid: %[1]s, secret: %[3]s, upstream: %[4]s, agent_id: %[5]d, tickets: [corp_jsapi, agent_config]}
`, corpID, agentA, agentB, simSrv.URL, agentID))
	waitUntil(t, "ready", func() bool { code, _ := httpGet(t, srv.admin+"/readyz"); return code == http.StatusOK })
	if got := sim.Stats().TicketFetches[corpID]; got["corp_jsapi"] != 1 || got["agent_config"] != 1 {
		t.Errorf("ticket fetches at start = %v, want corp_jsapi 1 and agent_config 1", got)
	}

	const page = "https://intranet.example.com/approve?id=7"
	code, b := httpGet(t, srv.caller+"/corp-b/wxproxy/jssdk/config?agent=1&url="+url.QueryEscape(page+"#/step/2"))
	var cfg struct {
		CorpID      string `json:"corpId"`
		Timestamp   int64  `json:"timestamp"`
		NonceStr    string `json:"nonceStr"`
		Signature   string `json:"signature"`
		AgentConfig struct {
			CorpID    string `json:"corpId"`
			AgentID   int64  `json:"agentId"`
			Timestamp int64  `json:"timestamp"`
			NonceStr  string `json:"nonceStr"`
			Signature string `json:"signature"`
		} `json:"agentConfig"`
	}
	if err := json.Unmarshal(b, &cfg); err != nil || code != http.StatusOK {
		t.Fatalf("jssdk config: %d %s", code, b)
	}
	live := sim.Tickets()[corpID]
	if cfg.CorpID != corpID || len(live["corp_jsapi"]) != 1 || cfg.Signature != jssdkSign(live["corp_jsapi"][0], cfg.NonceStr, cfg.Timestamp, page) {
		t.Errorf("wx.config %s does not verify with the corp ticket", b)
	}
	ac := cfg.AgentConfig
	verifies := func(tk string) bool { return ac.Signature == jssdkSign(tk, ac.NonceStr, ac.Timestamp, page) }
	if ac.CorpID != corpID || ac.AgentID != agentID || !slices.ContainsFunc(live["agent_config"], verifies) {
		t.Errorf("wx.agentConfig %s does not verify with an agent ticket", b)
	}

	ticket := func(path string) string {
		code, b := httpGet(t, srv.caller+path)
		var a struct {
			ErrCode int    `json:"errcode"`
			Ticket  string `json:"ticket"`
		}
		if err := json.Unmarshal(b, &a); err != nil || code != http.StatusOK || a.ErrCode != 0 || a.Ticket == "" {
			t.Fatalf("%s: %d %s", path, code, b)
		}
		return a.Ticket
	}
	agentBTicket := ticket("/corp-b/cgi-bin/ticket/get?type=agent_config")
	if !verifies(agentBTicket) {
		t.Error("the agent ticket answered is not the one agentConfig was signed with")
	}
	if got := ticket("/corp-b/cgi-bin/get_jsapi_ticket"); got != live["corp_jsapi"][0] {
		t.Error("get_jsapi_ticket answers another ticket than the one held")
	}
	if got := sim.Stats().TicketFetches[corpID]; got["corp_jsapi"] != 1 || got["agent_config"] != 1 {
		t.Errorf("ticket fetches after the pages and SDKs asked = %v, want still 1 and 1", got)
	}
	if agentATicket := ticket("/corp-a/cgi-bin/ticket/get?type=agent_config"); agentATicket == agentBTicket {
		t.Error("two agents of one corp answer the same agent ticket")
	}
	if got := sim.Stats().TicketFetches[corpID]["agent_config"]; got != 2 {
		t.Errorf("agent_config fetches = %d, want 2 (corp-a's on its first demand)", got)
	}

	_, apps := httpGet(t, srv.admin+"/admin/apps")
	for _, want := range []string{`"type":"corp_jsapi","held":true,"present":true`, `"type":"agent_config","held":true,"present":true`, `"type":"agent_config","held":false,"present":true`} {
		if !strings.Contains(string(apps), want) {
			t.Errorf("/admin/apps lacks %s: %s", want, apps)
		}
	}
	if strings.Contains(string(apps), agentBTicket) {
		t.Error("/admin/apps shows a ticket itself")
	}
	_, metrics := httpGet(t, srv.admin+"/metrics")
	for _, want := range []string{`wxproxy_ticket_ttl_seconds{app="corp-b",type="agent_config"}`, `wxproxy_ticket_refreshes_total{app="corp-b",reason="startup",result="ok",type="corp_jsapi"} 1`} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}
