package wechatsim_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wxproxy/wxproxy/wechat"
	"github.com/wxproxy/wxproxy/wechatsim"
)

var ridShape = regexp.MustCompile(`^[0-9a-f]+-[0-9a-f]{8}-[0-9a-f]{8}$`)

// ridInfo is the answer of /cgi-bin/openapi/rid/get.
type ridInfo struct {
	Errcode int    `json:"errcode"`
	Errmsg  string `json:"errmsg"`
	Request struct {
		InvokeTime   int64  `json:"invoke_time"`
		CostInMs     int64  `json:"cost_in_ms"`
		RequestURL   string `json:"request_url"`
		RequestBody  string `json:"request_body"`
		ResponseBody string `json:"response_body"`
		ClientIP     string `json:"client_ip"`
	} `json:"request"`
}

// ridGet asks rid/get about rid with tok.
func (s *sim) ridGet(tok, rid string) answer {
	s.tb.Helper()
	body, _ := json.Marshal(map[string]string{"rid": rid})
	return s.do(http.MethodPost, wechatsim.PathRidGet+"?"+q("access_token", tok), string(body))
}

// ridOf returns the rid an errmsg ends with, failing the test without one.
func ridOf(tb testing.TB, a answer) string {
	tb.Helper()
	_, rid, ok := strings.Cut(a.errmsg(), " rid: ")
	if !ok || !ridShape.MatchString(rid) {
		tb.Fatalf("no rid in the answer %s", a.body)
	}
	return rid
}

// echoRid returns the rid of a successful business call's echo.
func echoRid(tb testing.TB, a answer) string {
	tb.Helper()
	var e struct {
		Errcode int    `json:"errcode"`
		Rid     string `json:"rid"`
	}
	a.decode(tb, &e)
	if e.Errcode != 0 || !ridShape.MatchString(e.Rid) {
		tb.Fatalf("business answer without a rid: %s", a.body)
	}
	return e.Rid
}

func TestRidGet(t *testing.T) {
	s := newSim(t, wechatsim.Options{})
	tok := s.classic(appID, appSecret)
	mini := s.classic(miniID, miniSec)

	// A business call: the echo carries the rid, and rid/get echoes the call
	// exactly as received, the real access_token included.
	rawQuery := "b=%E4%B8%AD&access_token=" + tok + "&a=1&a=2"
	const body = `{"touser":"o1","msgtype":"text","text":{"content":"hi & bye"}}`
	call := s.do(http.MethodPost, "/cgi-bin/message/custom/send?"+rawQuery, body)
	businessRid := echoRid(t, call)

	// Failed token fetches, attributed to the appid they name.
	classicRid := ridOf(t, s.get(wechatsim.PathToken+"?"+q("grant_type", "client_credential", "appid", appID, "secret", "wrong-secret")))
	stableBody := `{"grant_type":"client_credential","appid":"` + appID + `","secret":"wrong-stable-secret"}`
	stableRid := ridOf(t, s.do(http.MethodPost, wechatsim.PathStableToken, stableBody))

	// A successful stable_token fetch shows no rid; Rids finds it.
	okStable, _ := s.stable(appID, appSecret, false)
	okStableRids := s.Rids(appID, wechatsim.PathStableToken, 1)
	if len(okStableRids) != 1 {
		t.Fatalf("Rids(stable_token) = %v, want one", okStableRids)
	}

	// A /sns/ call and an answer from a fault.
	snsAnswer := s.get("/sns/jscode2session?" + q("appid", miniID, "secret", miniSec, "js_code", "c1"))
	if snsAnswer.errcode() != 0 {
		t.Fatalf("jscode2session: %s", snsAnswer.body)
	}
	snsRid := s.Rids(miniID, "/sns/jscode2session", 1)[0]
	if err := s.AddFault(wechatsim.Fault{Path: "/cgi-bin/faulted", Errcode: wechat.CodeSystemError, Count: 1}); err != nil {
		t.Fatal(err)
	}
	faultRid := ridOf(t, s.get("/cgi-bin/faulted?"+q("access_token", tok)))

	t.Run("echoed call", func(t *testing.T) {
		var got ridInfo
		s.ridGet(tok, businessRid).decode(t, &got)
		for _, c := range []struct{ name, got, want string }{
			{"errcode", fmt.Sprint(got.Errcode), "0"},
			{"errmsg", got.Errmsg, "ok"},
			{"request_url", got.Request.RequestURL, rawQuery},
			{"request_body", got.Request.RequestBody, body},
			{"response_body", got.Request.ResponseBody, string(call.body)},
			{"client_ip", got.Request.ClientIP, "127.0.0.1"},
			{"invoke_time", fmt.Sprint(got.Request.InvokeTime), fmt.Sprint(start.Unix())},
			{"cost_in_ms", fmt.Sprint(got.Request.CostInMs), "0"},
		} {
			if c.got != c.want {
				t.Errorf("%s = %q, want %q", c.name, c.got, c.want)
			}
		}
	})

	tests := []struct {
		name     string
		method   string // default POST
		tok      string
		body     string // default {"rid": rid}
		rid      string
		wantCode int
		want     []string // substrings of the answer's request (request_url, request_body, response_body)
	}{
		{name: "classic fetch with a wrong secret", tok: tok, rid: classicRid,
			want: []string{"secret=wrong-secret", "appid=" + appID, "invalid appsecret rid: " + classicRid}},
		{name: "stable fetch with a wrong secret", tok: tok, rid: stableRid,
			want: []string{stableBody, "invalid appsecret rid: " + stableRid}},
		{name: "successful stable fetch: secret and token", tok: tok, rid: okStableRids[0],
			want: []string{`"secret":"` + appSecret + `"`, okStable}},
		{name: "faulted call", tok: tok, rid: faultRid, want: []string{"access_token=" + tok, "system error rid: " + faultRid}},
		{name: "unknown rid", tok: tok, rid: "67ce4f20-0badc0de-12345678", wantCode: 76001},
		{name: "empty rid", tok: tok, rid: "", body: `{}`, wantCode: 76002},
		{name: "malformed rid", tok: tok, rid: "not-a-rid", wantCode: 76002},
		{name: "rid with upper case", tok: tok, rid: strings.ToUpper(businessRid), wantCode: 76002},
		{name: "rid with a short part", tok: tok, rid: businessRid[:len(businessRid)-1], wantCode: 76002},
		{name: "body not JSON", tok: tok, body: "rid=x", wantCode: wechat.CodeDataFormat},
		{name: "another app's rid", tok: mini, rid: businessRid, wantCode: 76003},
		{name: "another app's token fetch", tok: mini, rid: stableRid, wantCode: 76003},
		{name: "rid of a /sns/ call", tok: mini, rid: snsRid, wantCode: 76022},
		{name: "GET", method: http.MethodGet, tok: tok, rid: businessRid, wantCode: wechat.CodeRequirePOST},
		{name: "no token", tok: "", rid: businessRid, wantCode: wechat.CodeTokenMissing},
		{name: "malformed token", tok: "86_short", rid: businessRid, wantCode: wechat.CodeInvalidToken},
		{name: "unknown token", tok: "86_" + strings.Repeat("A", 128), rid: businessRid, wantCode: wechat.CodeInvalidCredential},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := tt.body
			if body == "" {
				b, _ := json.Marshal(map[string]string{"rid": tt.rid})
				body = string(b)
			}
			method := tt.method
			if method == "" {
				method = http.MethodPost
			}
			a := s.do(method, wechatsim.PathRidGet+"?"+q("access_token", tt.tok), body)
			var got ridInfo
			a.decode(t, &got)
			if got.Errcode != tt.wantCode {
				t.Fatalf("errcode %d, want %d: %s", got.Errcode, tt.wantCode, a.body)
			}
			if got.Errcode != 0 {
				if !weChatMsg.MatchString(got.Errmsg) {
					t.Errorf("errmsg %q has no rid", got.Errmsg)
				}
				return
			}
			all := got.Request.RequestURL + "\n" + got.Request.RequestBody + "\n" + got.Request.ResponseBody
			for _, w := range tt.want {
				if !strings.Contains(all, w) {
					t.Errorf("the recorded call lacks %q:\n%s", w, all)
				}
			}
		})
	}

	t.Run("rid/get calls are recorded too", func(t *testing.T) {
		failed := s.ridGet(tok, "67ce4f20-0badc0de-12345678")
		var got ridInfo
		s.ridGet(tok, ridOf(t, failed)).decode(t, &got)
		if got.Errcode != 0 || got.Request.ResponseBody != string(failed.body) || got.Request.RequestBody != `{"rid":"67ce4f20-0badc0de-12345678"}` {
			t.Errorf("record of a rid/get call: %+v", got)
		}
	})
	t.Run("expired token", func(t *testing.T) {
		s.advance(2 * time.Hour)
		wantCode(t, "rid/get with an expired token", s.ridGet(tok, businessRid).errcode(), wechat.CodeTokenExpired)
		fresh := s.classic(appID, appSecret)
		wantCode(t, "rid/get with a fresh token of the same app", s.ridGet(fresh, businessRid).errcode(), 0)
	})
	t.Run("reset forgets", func(t *testing.T) {
		s.Reset()
		fresh := s.classic(appID, appSecret)
		wantCode(t, "rid/get after reset", s.ridGet(fresh, businessRid).errcode(), 76001)
	})
}

func TestRidWeCom(t *testing.T) {
	s := newSim(t, wechatsim.Options{})
	tok, _ := s.weCom(corpID, agentSec1)
	other, _ := s.weCom(corpID, agentSec2)
	rid := echoRid(t, s.get("/cgi-bin/user/get?"+q("access_token", tok, "userid", "u1")))
	var got ridInfo
	s.ridGet(other, rid).decode(t, &got)
	if got.Errcode != 0 || got.Request.RequestURL != q("access_token", tok, "userid", "u1") {
		t.Errorf("rid/get by another agent of the corp: %+v", got)
	}
	fetches := s.Rids(corpID, wechatsim.PathGetToken, 0)
	if len(fetches) != 2 {
		t.Fatalf("Rids(corp, gettoken) = %v, want the two fetches", fetches)
	}
	s.ridGet(tok, fetches[1]).decode(t, &got)
	if !strings.Contains(got.Request.RequestURL, "corpsecret="+agentSec1) || !strings.Contains(got.Request.ResponseBody, tok) {
		t.Errorf("WeCom token fetch record: %+v", got.Request)
	}
}

func TestRidBound(t *testing.T) {
	s := newSim(t, wechatsim.Options{RidRecords: 3})
	tok := s.classic(appID, appSecret)
	var rids []string
	for i := range 5 {
		rids = append(rids, echoRid(t, s.get(fmt.Sprintf("/cgi-bin/user/info?openid=o%d&%s", i, q("access_token", tok)))))
	}
	if got, want := s.Rids("", "", 0), []string{rids[4], rids[3], rids[2]}; !slices.Equal(got, want) {
		t.Fatalf("Rids = %v, want the newest three %v", got, want)
	}
	wantCode(t, "evicted rid", s.ridGet(tok, rids[0]).errcode(), 76001)
	wantCode(t, "kept rid", s.ridGet(tok, rids[4]).errcode(), 0)
	if got := len(s.Rids("", "", 0)); got != 3 {
		t.Errorf("%d records kept, want 3", got)
	}
}

func TestControlRids(t *testing.T) {
	s := newSim(t, wechatsim.Options{})
	tok := s.classic(appID, appSecret)
	mini := s.classic(miniID, miniSec)
	a1 := echoRid(t, s.get("/cgi-bin/a?"+q("access_token", tok)))
	b1 := echoRid(t, s.get("/cgi-bin/b?"+q("access_token", mini)))
	a2 := echoRid(t, s.get("/cgi-bin/a?"+q("access_token", mini)))
	tests := []struct {
		query string
		want  []string
	}{
		{"path=/cgi-bin/a", []string{a2, a1}},
		{"appid=" + miniID, []string{a2, b1, s.Rids(miniID, wechatsim.PathToken, 1)[0]}},
		{"appid=" + miniID + "&path=/cgi-bin/a", []string{a2}},
		{"limit=2", []string{a2, b1}},
		{"path=/cgi-bin/none", []string{}},
	}
	for _, tt := range tests {
		var got struct{ Rids []string }
		a := s.get("/sim/rids?" + tt.query)
		a.decode(t, &got)
		if a.status != http.StatusOK || !slices.Equal(got.Rids, tt.want) || got.Rids == nil {
			t.Errorf("GET /sim/rids?%s = %d %s, want %v", tt.query, a.status, a.body, tt.want)
		}
	}
	if a := s.get("/sim/rids?limit=0"); a.status != http.StatusBadRequest {
		t.Errorf("limit=0: %d %s, want 400", a.status, a.body)
	}
	if a := s.do(http.MethodPost, "/sim/rids", ""); a.status != http.StatusMethodNotAllowed {
		t.Errorf("POST /sim/rids: %d, want 405", a.status)
	}
}

// noFollow is a client that hands back redirects instead of following them.
var noFollow = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

func TestRedirectFault(t *testing.T) {
	const elsewhere = "https://evil.example/steal?x=1"
	tests := []struct {
		name, fault, method, target, body string
		wantStatus                        int
		wantLocation                      string
	}{
		{"classic token", `{"path":"/cgi-bin/token","redirect":"` + elsewhere + `"}`, http.MethodGet,
			"/cgi-bin/token?" + q("grant_type", "client_credential", "appid", appID, "secret", appSecret), "", http.StatusFound, elsewhere},
		{"stable token, 307", `{"path":"/cgi-bin/stable_token","redirect":"` + elsewhere + `","status":307}`, http.MethodPost,
			"/cgi-bin/stable_token", `{"grant_type":"client_credential","appid":"` + appID + `","secret":"` + appSecret + `"}`, http.StatusTemporaryRedirect, elsewhere},
		{"wecom token, path", `{"path":"/cgi-bin/gettoken","redirect":"/cgi-bin/elsewhere","status":301}`, http.MethodGet,
			"/cgi-bin/gettoken?" + q("corpid", corpID, "corpsecret", agentSec1), "", http.StatusMovedPermanently, "/cgi-bin/elsewhere"},
		{"any business API", `{"path":"*","redirect":"http://127.0.0.1:1/x"}`, http.MethodPost,
			"/cgi-bin/message/custom/send?access_token=x", "{}", http.StatusFound, "http://127.0.0.1:1/x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSim(t, wechatsim.Options{})
			addFault(t, s, tt.fault)
			req, err := http.NewRequest(tt.method, s.url+tt.target, strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			resp, err := noFollow.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || len(b) == 0 {
				t.Errorf("redirect body %q, %v; want a short one", b, err)
			}
			if got := resp.StatusCode; got != tt.wantStatus {
				t.Errorf("status %d, want %d", got, tt.wantStatus)
			}
			if got := resp.Header.Get("Location"); got != tt.wantLocation {
				t.Errorf("Location = %q, want %q", got, tt.wantLocation)
			}
			if got := s.Rids("", "", 0); len(got) != 0 {
				t.Errorf("a redirect was recorded: %v", got)
			}
			if got := s.Stats().TokenFetches[appID].Classic; got != 0 {
				t.Errorf("the redirected fetch reached the token endpoint: %d classic fetches", got)
			}
		})
	}

	t.Run("a client that follows it gets the target's answer", func(t *testing.T) {
		s := newSim(t, wechatsim.Options{})
		tok := s.classic(appID, appSecret)
		addFault(t, s, `{"path":"/cgi-bin/moved","redirect":"/cgi-bin/user/info?`+q("access_token", tok)+`","count":1}`)
		a := s.get("/cgi-bin/moved")
		if a.status != http.StatusOK || a.errcode() != 0 || !strings.Contains(string(a.body), `"path":"/cgi-bin/user/info"`) {
			t.Errorf("followed redirect: %d %s", a.status, a.body)
		}
	})
	t.Run("listed", func(t *testing.T) {
		s := newSim(t, wechatsim.Options{})
		addFault(t, s, `{"path":"*","redirect":"`+elsewhere+`"}`)
		if a := s.get("/sim/faults"); !strings.Contains(string(a.body), `"redirect":"https://evil.example/steal?x=1"`) {
			t.Errorf("GET /sim/faults = %s", a.body)
		}
	})
	t.Run("bad redirects", func(t *testing.T) {
		s := newSim(t, wechatsim.Options{})
		for _, body := range []string{
			`{"path":"*","redirect":"ftp://example.com/"}`,
			`{"path":"*","redirect":"relative/path"}`,
			`{"path":"*","redirect":"//example.com/x"}`,
			`{"path":"*","redirect":"https:///nohost"}`,
			`{"path":"*","redirect":"https://example.com/\r\nX-Evil: 1"}`,
			`{"path":"*","redirect":"https://example.com/","status":500}`,
			`{"path":"*","redirect":"https://example.com/","status":200}`,
		} {
			if a := s.do("POST", "/sim/faults", body); a.status != http.StatusBadRequest {
				t.Errorf("POST /sim/faults %s: %d %s, want 400", body, a.status, a.body)
			}
		}
	})
	t.Run("Go API", func(t *testing.T) {
		s := newSim(t, wechatsim.Options{})
		if err := s.AddFault(wechatsim.Fault{Path: wechatsim.PathToken, Redirect: elsewhere}); err != nil {
			t.Fatal(err)
		}
		resp, err := noFollow.Get(s.url + wechatsim.PathToken)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != elsewhere {
			t.Errorf("AddFault redirect: %d %q", resp.StatusCode, resp.Header.Get("Location"))
		}
		if err := s.AddFault(wechatsim.Fault{Path: "*", Redirect: "mailto:x@example.com"}); err == nil {
			t.Error("AddFault accepted a mailto: redirect")
		}
	})
}
