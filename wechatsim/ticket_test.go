package wechatsim_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wxproxy/wxproxy/wechat"
	"github.com/wxproxy/wxproxy/wechatsim"
)

// fetchTicket calls a ticket endpoint (path and query) and returns the
// ticket, expires_in and errcode.
func (s *sim) fetchTicket(target string) (string, int64, int) {
	s.tb.Helper()
	a := s.get(target)
	var v struct {
		Ticket    string `json:"ticket"`
		ExpiresIn int64  `json:"expires_in"`
		Errmsg    string `json:"errmsg"`
	}
	a.decode(s.tb, &v)
	if a.errcode() == 0 && v.Errmsg != "ok" {
		s.tb.Errorf("ticket answer errmsg %q, want ok", v.Errmsg)
	}
	return v.Ticket, v.ExpiresIn, a.errcode()
}

func TestTicket(t *testing.T) {
	s := newSim(t, wechatsim.Options{TicketGrace: time.Minute})
	tok := s.classic(appID, appSecret)
	ticket := func(typ string) (string, int64, int) {
		return s.fetchTicket("/cgi-bin/ticket/getticket?" + q("access_token", tok, "type", typ))
	}
	t1, exp, code := ticket("jsapi")
	if code != 0 || len(t1) < 80 || exp != 7200 {
		t.Fatalf("jsapi ticket %q expires_in %d errcode %d", t1, exp, code)
	}
	s.advance(200 * time.Second)
	// WeChat answers the same ticket within its validity, and expires_in
	// is the full lifetime again, not what is left (WECHAT.md, Tickets).
	if t2, exp, _ := ticket("jsapi"); t2 != t1 || exp != 7200 {
		t.Errorf("second fetch: changed=%v expires_in=%d, want same, 7200", t2 != t1, exp)
	}
	if c, _, _ := ticket("wx_card"); c == t1 || c == "" {
		t.Error("wx_card ticket equals the jsapi ticket")
	}
	for _, typ := range []string{"nope", "agent_config"} {
		if _, _, code := ticket(typ); code != wechat.CodeInvalidArgs {
			t.Errorf("type %q: errcode %d, want %d", typ, code, wechat.CodeInvalidArgs)
		}
	}
	s.advance(7000 * time.Second)
	tok = s.classic(appID, appSecret)
	t3, exp, _ := ticket("jsapi")
	if t3 == t1 || exp != 7200 {
		t.Errorf("after expiry: changed=%v expires_in=%d, want a new ticket, 7200", t3 != t1, exp)
	}
	if got, want := s.Tickets()[appID]["jsapi"], []string{t1, t3}; !slices.Equal(got, want) {
		t.Errorf("live jsapi tickets within the grace period = %d values, want old and new", len(got))
	}
	s.advance(time.Minute)
	if got := s.Tickets()[appID]["jsapi"]; !slices.Equal(got, []string{t3}) {
		t.Errorf("live jsapi tickets after the grace period = %d values, want the new one only", len(got))
	}
	tok = "86_" + strings.Repeat("A", 128) // well-formed, unknown
	if _, _, code := ticket("jsapi"); code != wechat.CodeInvalidCredential {
		t.Errorf("unknown token: errcode %d, want 40001", code)
	}
	st := s.Stats().TicketFetches[appID]
	if st["jsapi"] != 3 || st["wx_card"] != 1 {
		t.Errorf("ticket_fetches[%s] = %v, want jsapi 3 (the unknown token names no app), wx_card 1", appID, st)
	}
	if _, ok := s.Stats().TicketFetches[corpID]["corp_jsapi"]; !ok {
		t.Errorf("ticket_fetches lacks corp_jsapi for the WeCom corp: %v", s.Stats().TicketFetches)
	}
}

func TestTicketDeadToken(t *testing.T) {
	s := newSim(t, wechatsim.Options{TokenTTL: time.Hour})
	tok := s.classic(appID, appSecret)
	target := "/cgi-bin/ticket/getticket?" + q("access_token", tok, "type", "jsapi")
	s.advance(time.Hour)
	if _, _, code := s.fetchTicket(target); code != wechat.CodeTokenExpired {
		t.Errorf("expired token: errcode %d, want 42001", code)
	}
	tok = s.classic(appID, appSecret)
	if _, err := s.Invalidate(appID); err != nil {
		t.Fatal(err)
	}
	if _, _, code := s.fetchTicket("/cgi-bin/ticket/getticket?" + q("access_token", tok, "type", "jsapi")); code != wechat.CodeInvalidCredential {
		t.Errorf("invalidated token: errcode %d, want 40001", code)
	}
	if got := s.Stats().TicketFetches[appID]["jsapi"]; got != 2 {
		t.Errorf("ticket_fetches jsapi = %d, want 2 (failed calls count)", got)
	}
	// The ticket's lifetime follows token_ttl.
	tok = s.classic(appID, appSecret)
	if _, exp, _ := s.fetchTicket("/cgi-bin/ticket/getticket?" + q("access_token", tok)); exp != 3600 {
		t.Errorf("expires_in %d with token_ttl 1h, want 3600", exp)
	}
}

func TestWeComTickets(t *testing.T) {
	s := newSim(t, wechatsim.Options{})
	tok1, _ := s.weCom(corpID, agentSec1)
	tok2, _ := s.weCom(corpID, agentSec2)
	corp1, _, code := s.fetchTicket("/cgi-bin/get_jsapi_ticket?" + q("access_token", tok1))
	if code != 0 || corp1 == "" {
		t.Fatalf("get_jsapi_ticket: errcode %d", code)
	}
	if corp2, _, _ := s.fetchTicket("/cgi-bin/get_jsapi_ticket?" + q("access_token", tok2)); corp2 != corp1 {
		t.Error("the corp ticket differs between the corp's agents")
	}
	agent1, _, _ := s.fetchTicket("/cgi-bin/ticket/get?" + q("access_token", tok1, "type", "agent_config"))
	agent2, _, _ := s.fetchTicket("/cgi-bin/ticket/get?" + q("access_token", tok2, "type", "agent_config"))
	if agent1 == "" || agent1 == agent2 || agent1 == corp1 {
		t.Error("agent tickets must be per agent and differ from the corp ticket")
	}
	if _, _, code := s.fetchTicket("/cgi-bin/ticket/get?" + q("access_token", tok1, "type", "jsapi")); code != wechat.CodeInvalidArgs {
		t.Errorf("ticket/get type=jsapi: errcode %d, want 40097", code)
	}
	official := s.classic(appID, appSecret)
	if _, _, code := s.fetchTicket("/cgi-bin/get_jsapi_ticket?" + q("access_token", official)); code != wechat.CodeInvalidArgs {
		t.Errorf("get_jsapi_ticket with an official account's token: errcode %d, want 40097", code)
	}
	// 100 an hour per agent: the 101st call of agent 1 is refused, agent 2
	// is not affected; the next hour starts afresh.
	s.advanceTo(time.Date(2025, 3, 10, 11, 0, 0, 0, start.Location()))
	tok1, _ = s.weCom(corpID, agentSec1)
	tok2, _ = s.weCom(corpID, agentSec2)
	for i := range 100 {
		if _, _, code := s.fetchTicket("/cgi-bin/ticket/get?" + q("access_token", tok1, "type", "agent_config")); code != 0 {
			t.Fatalf("call %d: errcode %d", i+1, code)
		}
	}
	if _, _, code := s.fetchTicket("/cgi-bin/ticket/get?" + q("access_token", tok1, "type", "agent_config")); code != wechat.CodeDailyQuota {
		t.Errorf("101st agent ticket call in an hour: errcode %d, want 45009", code)
	}
	if _, _, code := s.fetchTicket("/cgi-bin/ticket/get?" + q("access_token", tok2, "type", "agent_config")); code != 0 {
		t.Errorf("the other agent: errcode %d, want 0", code)
	}
	s.advance(time.Hour)
	tok1, _ = s.weCom(corpID, agentSec1)
	if _, _, code := s.fetchTicket("/cgi-bin/ticket/get?" + q("access_token", tok1, "type", "agent_config")); code != 0 {
		t.Errorf("next hour: errcode %d, want 0", code)
	}
	st := s.Stats().TicketFetches[corpID]
	if st["corp_jsapi"] != 2 || st["agent_config"] != 2+101+1+1 {
		t.Errorf("ticket_fetches[%s] = %v", corpID, st)
	}
}

func TestTicketQuota(t *testing.T) {
	s := newSim(t, wechatsim.Options{Quotas: map[string]wechatsim.Quota{"/cgi-bin/ticket/getticket": {PerDay: 2}}})
	tok := s.classic(appID, appSecret)
	for i, want := range []int{0, 0, wechat.CodeDailyQuota} {
		if _, _, code := s.fetchTicket("/cgi-bin/ticket/getticket?" + q("access_token", tok, "type", "jsapi")); code != want {
			t.Errorf("call %d: errcode %d, want %d", i+1, code, want)
		}
	}
}

// WeCom's corp limit: 400 get_jsapi_ticket calls an hour per corp, across
// its agents. Five agents calling 80 times each spend it while none reaches
// its own 100; the 401st call is refused (ticket_fetches counts it, as every
// call), the agent tickets are not affected, and the next hour starts afresh.
func TestWeComCorpTicketLimit(t *testing.T) {
	apps := []wechatsim.App{}
	for i := range 5 {
		apps = append(apps, wechatsim.App{AppID: corpID, Secret: fmt.Sprintf("agent-secret-%d", i), Kind: wechatsim.KindWeCom})
	}
	s := newSim(t, wechatsim.Options{Apps: apps})
	s.advanceTo(time.Date(2025, 3, 10, 11, 0, 0, 0, start.Location()))
	toks := make([]string, len(apps))
	for i, a := range apps {
		toks[i], _ = s.weCom(corpID, a.Secret)
	}
	for i := range 400 {
		if _, _, code := s.fetchTicket("/cgi-bin/get_jsapi_ticket?" + q("access_token", toks[i%5])); code != 0 {
			t.Fatalf("corp ticket call %d: errcode %d", i+1, code)
		}
	}
	if _, _, code := s.fetchTicket("/cgi-bin/get_jsapi_ticket?" + q("access_token", toks[0])); code != wechat.CodeDailyQuota {
		t.Errorf("401st corp ticket call in an hour (the agent's 81st): errcode %d, want 45009", code)
	}
	if _, _, code := s.fetchTicket("/cgi-bin/ticket/get?" + q("access_token", toks[0], "type", "agent_config")); code != 0 {
		t.Errorf("agent ticket while the corp limit is spent: errcode %d, want 0", code)
	}
	s.advance(time.Hour)
	tok, _ := s.weCom(corpID, apps[0].Secret)
	if _, _, code := s.fetchTicket("/cgi-bin/get_jsapi_ticket?" + q("access_token", tok)); code != 0 {
		t.Errorf("next hour: errcode %d, want 0", code)
	}
	if got := s.Stats().TicketFetches[corpID]["corp_jsapi"]; got != 402 {
		t.Errorf("ticket_fetches corp_jsapi = %d, want 402 (400, the refused one, the next hour's)", got)
	}
}
