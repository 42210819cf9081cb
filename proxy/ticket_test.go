package proxy_test

import (
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/wxproxy/wxproxy/proxy"
)

// ticketAnswer is a ticket endpoint's answer as an SDK reads it.
type ticketAnswer struct {
	ErrCode   int    `json:"errcode"`
	ErrMsg    string `json:"errmsg"`
	Ticket    string `json:"ticket"`
	ExpiresIn int64  `json:"expires_in"`
}

func (a *answer) ticket(tb testing.TB) ticketAnswer {
	tb.Helper()
	var v ticketAnswer
	if err := json.Unmarshal(a.body, &v); err != nil {
		tb.Fatalf("ticket answer %q: %v", a.body, err)
	}
	return v
}

// simTicketCalls is how many ticket fetches reached the simulator.
func (e *env) simTicketCalls() int64 {
	var n int64
	for _, byType := range e.sim.Stats().TicketFetches {
		for _, c := range byType {
			n += c
		}
	}
	return n
}

// Unmodified SDKs ask for tickets with a placeholder token: wxproxy answers
// from the one held ticket, in WeChat's shape with its remaining lifetime,
// and WeChat sees one fetch per app and type however often SDKs ask.
func TestTicketAnswersLocally(t *testing.T) {
	e := newEnv(t, envOptions{})
	ph := e.get(t, "/cgi-bin/token?grant_type=client_credential&appid="+mainAppID+"&secret=x").AccessToken
	var first string
	for i := range 3 {
		a := e.get(t, "/cgi-bin/ticket/getticket?access_token="+url.QueryEscape(ph)+"&type=jsapi")
		v := a.ticket(t)
		if a.status != http.StatusOK || v.ErrCode != 0 || v.ErrMsg != "ok" || v.Ticket == "" {
			t.Fatalf("getticket: %d %s", a.status, a.body)
		}
		if v.ExpiresIn < 7100 || v.ExpiresIn > 7200 {
			t.Errorf("expires_in %d, want the remaining lifetime (about 7200)", v.ExpiresIn)
		}
		if i == 0 {
			first = v.Ticket
		} else if v.Ticket != first {
			t.Error("a second answer holds another ticket")
		}
		if got := a.header.Get("Cache-Control"); got != "no-store" {
			t.Errorf("Cache-Control %q, want no-store", got)
		}
	}
	if live := e.sim.Tickets()[mainAppID]["jsapi"]; !slices.Contains(live, first) {
		t.Error("the ticket answered is not one WeChat issued")
	}
	card := e.get(t, "/main/cgi-bin/ticket/getticket?type=wx_card").ticket(t)
	if card.Ticket == "" || card.Ticket == first {
		t.Errorf("wx_card: %+v, want its own ticket", card)
	}
	corp := e.get(t, "/corp-a/cgi-bin/get_jsapi_ticket").ticket(t)
	agent := e.get(t, "/corp-b/cgi-bin/ticket/get?type=agent_config").ticket(t)
	if corp.Ticket == "" || agent.Ticket == "" || corp.Ticket == agent.Ticket {
		t.Errorf("WeCom corp ticket %q, agent ticket %q: want two tickets", corp.Ticket, agent.Ticket)
	}
	st := e.sim.Stats().TicketFetches
	if st[mainAppID]["jsapi"] != 1 || st[mainAppID]["wx_card"] != 1 || st[corpID]["corp_jsapi"] != 1 || st[corpID]["agent_config"] != 1 {
		t.Errorf("ticket fetches at WeChat = %v, want one per app and type", st)
	}
}

// Every ticket endpoint answers in WeChat's shape with what the held
// ticket has left as expires_in — not WeChat's 7200 — so an SDK that
// caches the ticket for expires_in never outlives it.
func TestTicketExpiresInIsWhatIsLeft(t *testing.T) {
	var offset atomic.Int64
	now := func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	e := newEnv(t, envOptions{now: now})
	endpoints := []string{
		"/main/cgi-bin/ticket/getticket?type=jsapi",
		"/main/cgi-bin/ticket/getticket?type=wx_card",
		"/corp-b/cgi-bin/get_jsapi_ticket",
		"/corp-b/cgi-bin/ticket/get?type=agent_config",
	}
	first := map[string]string{}
	for _, path := range endpoints {
		a := e.get(t, path)
		v := a.ticket(t)
		if a.status != http.StatusOK || v.ErrCode != 0 || v.ErrMsg != "ok" || v.Ticket == "" || v.ExpiresIn < 7190 || v.ExpiresIn > 7200 {
			t.Errorf("%s: %d %s, want errcode 0, errmsg ok, a ticket, expires_in about 7200", path, a.status, a.body)
		}
		var shape map[string]any
		if err := json.Unmarshal(a.body, &shape); err != nil || len(shape) != 4 {
			t.Errorf("%s: %s, want exactly errcode, errmsg, ticket and expires_in", path, a.body)
		}
		first[path] = v.Ticket
	}
	offset.Store(int64(time.Hour))
	for _, path := range endpoints {
		v := e.get(t, path).ticket(t)
		if v.Ticket != first[path] || v.ExpiresIn < 3590 || v.ExpiresIn > 3600 {
			t.Errorf("%s an hour later: same ticket %v, expires_in %d; want the same ticket with about 3600 left", path, v.Ticket == first[path], v.ExpiresIn)
		}
	}
	if n := e.simTicketCalls(); n != 4 {
		t.Errorf("%d ticket fetches at WeChat, want 4 (one per type)", n)
	}
}

// Unknown types and ticket requests of the wrong side are refused in
// WeChat's shape; nothing is fetched or held for them.
func TestTicketRefusals(t *testing.T) {
	e := newEnv(t, envOptions{})
	for _, tt := range []struct {
		method, path string
	}{
		{"GET", "/main/cgi-bin/ticket/getticket?type=nope"},
		{"GET", "/main/cgi-bin/ticket/getticket?type=agent_config"},
		{"GET", "/main/cgi-bin/get_jsapi_ticket"},
		{"GET", "/main/cgi-bin/ticket/get?type=agent_config"},
		{"GET", "/corp-a/cgi-bin/ticket/getticket?type=jsapi"},
		{"GET", "/corp-a/cgi-bin/ticket/get?type=jsapi"},
		{"GET", "/corp-a/cgi-bin/ticket/get"},
		{"POST", "/main/cgi-bin/ticket/getticket?type=jsapi"},
		{"GET", "/main/cgi-bin/ticket/getticket?type=" + strings.Repeat("x", 4000)},
	} {
		a := e.do(t, tt.method, tt.path, nil)
		if a.status != http.StatusBadRequest || a.ErrCode != 47001 || a.header.Get("X-WXProxy-Error") != "bad_request" {
			t.Errorf("%s %.60s: %d %s, want 400 47001 bad_request", tt.method, tt.path, a.status, a.body)
		}
	}
	if n := e.simTicketCalls(); n != 0 {
		t.Errorf("%d ticket fetches reached WeChat, want 0", n)
	}
	for name, ts := range e.tickets {
		if st := ts.Statuses(); len(st) != 0 {
			t.Errorf("app %s holds %d tickets after refused requests, want 0", name, len(st))
		}
	}
	if a := e.get(t, "/cgi-bin/ticket/getticket?type=jsapi", "X-WXProxy-App", "nope"); a.status != http.StatusNotFound {
		t.Errorf("unknown app: %d, want 404", a.status)
	}
}

// A ticket fetched with a token WeChat killed: the token is replaced
// (compare-and-refresh) and the ticket fetched again; the caller never sees
// the token error.
func TestTicketAfterTokenDied(t *testing.T) {
	e := newEnv(t, envOptions{})
	before := e.fetches(mainAppID)
	e.simPost(t, "/sim/apps/"+mainAppID+"/invalidate", "")
	a := e.get(t, "/main/cgi-bin/ticket/getticket?type=jsapi")
	if v := a.ticket(t); a.status != http.StatusOK || v.ErrCode != 0 || v.Ticket == "" {
		t.Fatalf("getticket after the token died: %d %s", a.status, a.body)
	}
	if got := e.fetches(mainAppID) - before; got != 1 {
		t.Errorf("token fetches = %d, want 1", got)
	}
	if got := e.sim.Stats().TicketFetches[mainAppID]["jsapi"]; got != 2 {
		t.Errorf("ticket fetches = %d, want 2 (the one refused with 40001, then one with the new token)", got)
	}
}

// sign recomputes a JS-SDK signature from WECHAT.md's definition.
func sign(ticket, nonce string, ts int64, page string) string {
	sum := sha1.Sum(fmt.Appendf(nil, "jsapi_ticket=%s&noncestr=%s&timestamp=%d&url=%s", ticket, nonce, ts, page))
	return hex.EncodeToString(sum[:])
}

type jssdkConfig struct {
	AppID       string `json:"appId"`
	CorpID      string `json:"corpId"`
	Timestamp   int64  `json:"timestamp"`
	NonceStr    string `json:"nonceStr"`
	Signature   string `json:"signature"`
	AgentConfig *struct {
		CorpID    string `json:"corpId"`
		AgentID   int64  `json:"agentId"`
		Timestamp int64  `json:"timestamp"`
		NonceStr  string `json:"nonceStr"`
		Signature string `json:"signature"`
	} `json:"agentConfig"`
}

func (e *env) jssdk(tb testing.TB, query string, hdr ...string) (*answer, jssdkConfig) {
	tb.Helper()
	a := e.get(tb, "/wxproxy/jssdk/config?"+query, hdr...)
	var c jssdkConfig
	if a.status == http.StatusOK {
		if err := json.Unmarshal(a.body, &c); err != nil {
			tb.Fatalf("config %q: %v", a.body, err)
		}
	}
	return a, c
}

func TestJSSDKConfig(t *testing.T) {
	e := newEnv(t, envOptions{})
	const page = "https://shop.example.com/item?id=7&from=share"
	a, c := e.jssdk(t, "url="+url.QueryEscape(page+"#/cart?x=1"))
	if a.status != http.StatusOK {
		t.Fatalf("config: %d %s", a.status, a.body)
	}
	if c.AppID != mainAppID || c.CorpID != "" || c.AgentConfig != nil || len(c.NonceStr) != 16 {
		t.Errorf("config %s: want appId %s, a 16-character nonceStr, nothing of WeCom", a.body, mainAppID)
	}
	if d := time.Since(time.Unix(c.Timestamp, 0)); d < -time.Second || d > time.Minute {
		t.Errorf("timestamp %d is not now", c.Timestamp)
	}
	live := e.sim.Tickets()[mainAppID]["jsapi"]
	if len(live) != 1 || c.Signature != sign(live[0], c.NonceStr, c.Timestamp, page) {
		t.Errorf("signature %s does not verify with WeChat's jsapi ticket over the page without its fragment", c.Signature)
	}
	if _, again := e.jssdk(t, "url="+url.QueryEscape(page)); again.NonceStr == c.NonceStr {
		t.Error("two configs share a nonceStr")
	}
	// The app by app=, by prefix, and by header.
	for _, tt := range []struct {
		path string
		hdr  []string
	}{
		{"/wxproxy/jssdk/config?app=mini&url=" + url.QueryEscape(page), nil},
		{"/mini/wxproxy/jssdk/config?url=" + url.QueryEscape(page), nil},
		{"/wxproxy/jssdk/config?url=" + url.QueryEscape(page), []string{"X-WXProxy-App", "mini"}},
	} {
		a := e.get(t, tt.path, tt.hdr...)
		var c jssdkConfig
		_ = json.Unmarshal(a.body, &c)
		if a.status != http.StatusOK || c.AppID != miniAppID {
			t.Errorf("%s: %d %s, want the mini program's config", tt.path, a.status, a.body)
		}
	}
	if got := e.sim.Stats().TicketFetches[miniAppID]["jsapi"]; got != 1 {
		t.Errorf("mini program ticket fetches = %d, want 1", got)
	}
}

func TestJSSDKConfigWeComAgent(t *testing.T) {
	e := newEnv(t, envOptions{})
	const page = "http://intranet.example.com:8080/approve?id=%E4%B8%AD"
	a, c := e.jssdk(t, "app=corp-b&agent=1&url="+url.QueryEscape(page))
	if a.status != http.StatusOK {
		t.Fatalf("config: %d %s", a.status, a.body)
	}
	if c.CorpID != corpID || c.AppID != "" || c.AgentConfig == nil {
		t.Fatalf("config %s: want corpId and agentConfig", a.body)
	}
	corp := e.sim.Tickets()[corpID]["corp_jsapi"]
	if len(corp) != 1 || c.Signature != sign(corp[0], c.NonceStr, c.Timestamp, page) {
		t.Error("wx.config signature does not verify with the corp ticket")
	}
	ac := c.AgentConfig
	if ac.CorpID != corpID || ac.AgentID != agentBID || ac.Timestamp != c.Timestamp {
		t.Errorf("agentConfig %+v, want corpId, agentId %d", *ac, agentBID)
	}
	agentTickets := e.sim.Tickets()[corpID]["agent_config"]
	if len(agentTickets) != 1 || ac.Signature != sign(agentTickets[0], ac.NonceStr, ac.Timestamp, page) {
		t.Error("agentConfig signature does not verify with the agent's ticket")
	}
	if a, _ := e.jssdk(t, "app=corp-a&agent=1&url="+url.QueryEscape(page)); a.status != http.StatusBadRequest {
		t.Errorf("agent=1 without agent_id: %d, want 400", a.status)
	}
	if a, _ := e.jssdk(t, "app=main&agent=1&url="+url.QueryEscape(page)); a.status != http.StatusBadRequest {
		t.Errorf("agent=1 on an official account: %d, want 400", a.status)
	}
	if a, c := e.jssdk(t, "app=corp-a&url="+url.QueryEscape(page)); a.status != http.StatusOK || c.AgentConfig != nil {
		t.Errorf("WeCom without agent: %d %s", a.status, a.body)
	}
}

func TestJSSDKConfigRefusals(t *testing.T) {
	e := newEnv(t, envOptions{})
	long := "https://example.com/" + strings.Repeat("a", 2048-len("https://example.com/"))
	if a, _ := e.jssdk(t, "url="+url.QueryEscape(long)); a.status != http.StatusOK {
		t.Errorf("a 2048-byte url: %d %s, want 200", a.status, a.body)
	}
	for _, bad := range []string{
		"url=",
		"",
		"url=" + url.QueryEscape(long+"b"),
		"url=%zz",
		"url=" + url.QueryEscape("/item?id=7"),
		"url=" + url.QueryEscape("example.com/item"),
		"url=" + url.QueryEscape("ftp://example.com/x"),
		"url=" + url.QueryEscape("javascript:alert(1)"),
		"url=" + url.QueryEscape("http:/example.com"),
		"url=" + url.QueryEscape("http://"),
		"url=" + url.QueryEscape("HTTP://example.com/"),
		"url=" + url.QueryEscape("http://user:pw@example.com/"),
		"url=" + url.QueryEscape("http://example.com/a b"),
		"url=" + url.QueryEscape("http://example.com/\x00"),
		"url=" + url.QueryEscape("http://example.com/\n"),
		"url=" + url.QueryEscape("https://example.com/") + "&agent=2",
	} {
		a, _ := e.jssdk(t, bad)
		if a.status != http.StatusBadRequest || a.ErrCode != 47001 || a.header.Get("X-WXProxy-Error") != "bad_request" {
			t.Errorf("%.60q: %d %s, want 400 47001", bad, a.status, a.body)
		}
	}
	if a := e.do(t, http.MethodPost, "/wxproxy/jssdk/config?url="+url.QueryEscape("https://example.com/"), nil); a.status != http.StatusBadRequest {
		t.Errorf("POST: %d, want 400", a.status)
	}
	if a, _ := e.jssdk(t, "app=nope&url="+url.QueryEscape("https://example.com/")); a.status != http.StatusNotFound || a.ErrCode != 40013 {
		t.Errorf("app=nope: %d %s, want 404 40013", a.status, a.body)
	}
	if a := e.get(t, "/main/wxproxy/jssdk/config?app=mini&url="+url.QueryEscape("https://example.com/")); a.status != http.StatusBadRequest {
		t.Errorf("app= against the prefix: %d, want 400", a.status)
	}
	// The rest of /wxproxy/ is reserved: refused, never forwarded.
	for _, path := range []string{"/wxproxy", "/wxproxy/", "/wxproxy/jssdk", "/wxproxy/other?x=1", "/main/wxproxy/x", "/WXPROXY/JSSDK/CONFIG2"} {
		if a := e.get(t, path); a.status != http.StatusBadRequest {
			t.Errorf("%s: %d %s, want 400", path, a.status, a.body)
		}
	}
	for path := range e.sim.Stats().APICalls {
		if strings.Contains(strings.ToLower(path), "wxproxy") {
			t.Errorf("%s reached WeChat", path)
		}
	}
	if n := e.simTicketCalls(); n != 1 {
		t.Errorf("%d ticket fetches, want 1 (the one good request)", n)
	}
}

// Callers' keys apply to the JS-SDK endpoint and to tickets as to any API.
func TestJSSDKConfigAccess(t *testing.T) {
	e := newEnv(t, envOptions{access: proxy.Access{Keys: []proxy.CallerKey{{Name: "pages", Key: "pages-key", Apps: []string{"mini"}}}}})
	q := "url=" + url.QueryEscape("https://example.com/")
	if a, _ := e.jssdk(t, q); a.status != http.StatusForbidden {
		t.Errorf("no key: %d, want 403", a.status)
	}
	if a, _ := e.jssdk(t, "app=main&"+q, "X-WXProxy-Key", "pages-key"); a.status != http.StatusForbidden {
		t.Errorf("key for another app: %d, want 403", a.status)
	}
	if a, _ := e.jssdk(t, "app=mini&"+q, "X-WXProxy-Key", "pages-key"); a.status != http.StatusOK {
		t.Errorf("key for the app: %d %s, want 200", a.status, a.body)
	}
	if a := e.get(t, "/main/cgi-bin/ticket/getticket?type=jsapi", "X-WXProxy-Key", "pages-key"); a.status != http.StatusForbidden {
		t.Errorf("ticket of another app: %d, want 403", a.status)
	}
	if got := e.sim.Stats().TicketFetches[mainAppID]["jsapi"]; got != 0 {
		t.Errorf("main's ticket fetched %d times for refused callers, want 0", got)
	}
}

func TestTicketMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	e := newEnv(t, envOptions{registry: reg})
	e.get(t, "/main/cgi-bin/ticket/getticket?type=jsapi")
	if got := testutil.ToFloat64(mustCounter(t, reg, "wxproxy_ticket_refreshes_total", map[string]string{"app": "main", "type": "jsapi", "reason": "startup", "result": "ok"})); got != 1 {
		t.Errorf("wxproxy_ticket_refreshes_total = %v, want 1", got)
	}
	if got := gaugeValue(t, reg, "wxproxy_ticket_ttl_seconds", map[string]string{"app": "main", "type": "jsapi"}); got < 7100 || got > 7200 {
		t.Errorf("wxproxy_ticket_ttl_seconds = %v, want about 7200", got)
	}
}

// gaugeValue finds one gauge of a registry by name and labels.
func gaugeValue(tb testing.TB, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	tb.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if v, ok := labels[lp.GetName()]; ok && v != lp.GetValue() {
					continue next
				}
			}
			return m.GetGauge().GetValue()
		}
	}
	tb.Fatalf("no %s%v", name, labels)
	return 0
}
