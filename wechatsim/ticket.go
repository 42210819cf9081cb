package wechatsim

import (
	"net/http"
	"strings"
	"time"

	"github.com/wxproxy/wxproxy/wechat"
)

// Paths of the ticket endpoints.
const (
	PathGetTicket        = "/cgi-bin/ticket/getticket" // WeChat: type=jsapi|wx_card
	PathWeComJSAPITicket = "/cgi-bin/get_jsapi_ticket" // WeCom: the corp's jsapi ticket
	PathWeComTicket      = "/cgi-bin/ticket/get"       // WeCom: type=agent_config, the agent's ticket
)

// DefaultTicketGrace is how long a superseded ticket keeps working when
// Options.TicketGrace is zero. WeChat does not document it ([assumed]).
const DefaultTicketGrace = 5 * time.Minute

// WeCom's documented limits on ticket fetches, per clock hour.
const (
	weComCorpTicketsPerHour  = 400 // get_jsapi_ticket, per corp
	weComAgentTicketsPerHour = 100 // get_jsapi_ticket and ticket/get, per agent (app secret)
)

// Ticket types, in the order of the fetch counters.
const (
	ticketJSAPI = iota
	ticketWxCard
	ticketCorpJSAPI
	ticketAgentConfig
	numTicketTypes
)

// ticketNames are the types as WeChat names them (agent_config) or as
// wxproxy does (corp_jsapi: WeCom's get_jsapi_ticket has no type).
var ticketNames = [numTicketTypes]string{"jsapi", "wx_card", "corp_jsapi", "agent_config"}

// ticket is a JS-SDK, card or agent ticket: the same one is handed out
// until it expires; the one it replaced keeps working for the grace period.
type ticket struct {
	value    string
	expires  int64 // unix nanoseconds
	prev     string
	prevDies int64
}

// live returns the values of t that would be accepted at now.
func (t *ticket) live(now int64) []string {
	var out []string
	if t.prev != "" && now < t.prevDies {
		out = append(out, t.prev)
	}
	if now < t.expires {
		out = append(out, t.value)
	}
	return out
}

type ticketAnswer struct {
	wechat.Response
	Ticket    string `json:"ticket"`
	ExpiresIn int64  `json:"expires_in"`
}

// ticketType returns the type a call of path asks for, or -1 when the
// path and type do not name a ticket the app's kind has.
func ticketType(path, typ string, wecom bool) int {
	switch {
	case path == PathGetTicket && !wecom && (typ == "jsapi" || typ == ""):
		return ticketJSAPI
	case path == PathGetTicket && !wecom && typ == "wx_card":
		return ticketWxCard
	case path == PathWeComJSAPITicket && wecom:
		return ticketCorpJSAPI
	case path == PathWeComTicket && wecom && typ == "agent_config":
		return ticketAgentConfig
	}
	return -1
}

// ticket answers the ticket endpoints with WeChat's semantics: the token is
// checked like any API's (a dead one answers 40001 or 42001); one ticket per
// app and type — per agent for agent_config — the same while it is valid,
// with expires_in the full lifetime every time (as seen on WeChat, not what
// is left); a new one once it expired, the previous one still accepted for
// the grace period. WeCom's hourly limits apply, and the per-path quotas of
// Options. Every call whose token names a known app counts in Stats.
func (s *Server) ticket(st *state, w *call, r *http.Request) {
	q := r.URL.Query()
	now := st.now().UnixNano()
	tok, code := st.lookup(q.Get("access_token"), now)
	if code == 0 && (tok.kind == kindUser || tok.kind == kindSuite || tok.kind == kindProvider) {
		code = wechat.CodeInvalidCredential
	}
	var a *appState
	typ := -1
	if tok != nil {
		a = tok.app
		w.app = a
		if typ = ticketType(r.URL.Path, q.Get("type"), a.cfg.kind == KindWeCom); typ >= 0 {
			a.fetchTickets[typ].Add(1)
		}
	}
	if code == 0 && typ < 0 {
		code = wechat.CodeInvalidArgs
	}
	if code == 0 {
		code = s.takeQuota(a, r.URL.Path, now)
	}
	key := ticketNames[max(typ, 0)]
	if code == 0 && a.cfg.kind == KindWeCom {
		code = a.takeHourly(r.URL.Path, tok.secret, typ == ticketCorpJSAPI, now)
		if typ == ticketAgentConfig {
			key += ":" + tok.secret // the agent's own ticket
		}
	}
	if code != 0 {
		st.fail(w, styleOf(a), code)
		return
	}
	a.mu.Lock()
	t := a.tickets[key]
	switch {
	case t == nil:
		t = &ticket{value: randomString(64), expires: now + int64(s.ttl)}
		a.tickets[key] = t
	case now >= t.expires:
		t.prev, t.prevDies = t.value, now+int64(s.grace)
		t.value, t.expires = randomString(64), now+int64(s.ttl)
	}
	value := t.value
	a.mu.Unlock()
	ans := ticketAnswer{Response: wechat.Response{ErrMsg: "ok"}, Ticket: value, ExpiresIn: int64(s.ttl / time.Second)}
	writeJSON(w, http.StatusOK, ans)
}

// hourWindow counts calls in one clock hour.
type hourWindow struct {
	hour int64
	n    int
}

// full reports whether limit calls were counted in the hour holding now.
func (h *hourWindow) full(limit int, now int64) bool {
	if hour := floorDiv(now, int64(time.Hour)); h.hour != hour {
		h.hour, h.n = hour, 0
	}
	return h.n >= limit
}

// takeHourly applies WeCom's hourly ticket limits to a call of path by the
// agent of secret (400 an hour per corp for the corp ticket, 100 an hour
// per agent for either ticket); it answers 0 or 45009, and counts nothing
// when a limit refuses the call.
func (a *appState) takeHourly(path, secret string, corp bool, now int64) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	window := func(key string) *hourWindow {
		h := a.hourly[key]
		if h == nil {
			h = new(hourWindow) // keys are bounded: configured secrets × ticket paths
			a.hourly[key] = h
		}
		return h
	}
	agent, corpW := window("agent:"+secret+path), window("corp:"+path)
	if agent.full(weComAgentTicketsPerHour, now) || (corp && corpW.full(weComCorpTicketsPerHour, now)) {
		return wechat.CodeDailyQuota
	}
	agent.n++
	if corp {
		corpW.n++
	}
	return 0
}

// liveTickets implements Server.Tickets.
func (st *state) liveTickets() map[string]map[string][]string {
	now := st.now().UnixNano()
	out := make(map[string]map[string][]string)
	for id, a := range st.apps {
		a.mu.Lock()
		for key, t := range a.tickets {
			typ, _, _ := strings.Cut(key, ":")
			if v := t.live(now); len(v) > 0 {
				if out[id] == nil {
					out[id] = make(map[string][]string)
				}
				out[id][typ] = append(out[id][typ], v...)
			}
		}
		a.mu.Unlock()
	}
	return out
}

// Tickets returns, per appid (corpid for WeCom) and ticket type (jsapi,
// wx_card, corp_jsapi, agent_config), every ticket WeChat would accept in a
// signature now: a superseded one within its grace period, then the
// current one. Apps without one are absent.
func (s *Server) Tickets() map[string]map[string][]string { return s.st.Load().liveTickets() }
