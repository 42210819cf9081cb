package wechatsim_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wxproxy/wxproxy/wechat"
	"github.com/wxproxy/wxproxy/wechatsim"
)

func TestControlClock(t *testing.T) {
	s := newSim(t, wechatsim.Options{})
	clock := func(a answer) time.Time {
		t.Helper()
		var v struct{ Now string }
		a.decode(t, &v)
		now, err := time.Parse(time.RFC3339, v.Now)
		if err != nil {
			t.Fatalf("now %q: %v", v.Now, err)
		}
		return now
	}
	if got := clock(s.get("/sim/clock")); !got.Equal(start) {
		t.Errorf("GET /sim/clock = %v, want %v", got, start)
	}
	if got, want := clock(s.do("POST", "/sim/clock", `{"advance":"2h"}`)), start.Add(2*time.Hour); !got.Equal(want) {
		t.Errorf("POST /sim/clock answered %v, want %v", got, want)
	}
	if got, want := clock(s.get("/sim/clock")), start.Add(2*time.Hour); !got.Equal(want) {
		t.Errorf("after advance GET /sim/clock = %v, want %v", got, want)
	}
	for _, body := range []string{`{"advance":"-1s"}`, `{"advance":"soon"}`, `{}`, `not json`, `{"advance":"1s","x":1}`} {
		a := s.do("POST", "/sim/clock", body)
		var e struct{ Error string }
		a.decode(t, &e)
		if a.status != http.StatusBadRequest || e.Error == "" {
			t.Errorf("POST /sim/clock %s: status %d body %s, want 400 with an error", body, a.status, a.body)
		}
	}
	if !s.Now().Equal(start.Add(2 * time.Hour)) {
		t.Errorf("a refused advance moved the clock to %v", s.Now())
	}
	if err := s.Advance(-time.Second); err != wechatsim.ErrNegativeAdvance {
		t.Errorf("Advance(-1s) = %v, want ErrNegativeAdvance", err)
	}
}

func TestControlInvalidate(t *testing.T) {
	s := newSim(t, wechatsim.Options{})
	classic := s.classic(appID, appSecret)
	stable, _ := s.stable(appID, appSecret, false)
	mini := s.classic(miniID, miniSec)
	w1, _ := s.weCom(corpID, agentSec1)
	w2, _ := s.weCom(corpID, agentSec2)

	a := s.do("POST", "/sim/apps/"+appID+"/invalidate", "")
	var v struct{ Invalidated int }
	a.decode(t, &v)
	if a.status != http.StatusOK || v.Invalidated != 2 {
		t.Errorf("invalidate: status %d body %s, want 200 and 2 tokens", a.status, a.body)
	}
	wantCode(t, "classic", s.api(classic), wechat.CodeInvalidCredential)
	wantCode(t, "stable", s.api(stable), wechat.CodeInvalidCredential)
	wantCode(t, "another app", s.api(mini), 0)
	if next, _ := s.stable(appID, appSecret, false); next == stable {
		t.Error("stable normal mode returns the invalidated token")
	}

	s.do("POST", "/sim/apps/"+corpID+"/invalidate", "")
	wantCode(t, "agent 1", s.api(w1), wechat.CodeInvalidCredential)
	wantCode(t, "agent 2", s.api(w2), wechat.CodeInvalidCredential)
	if next, _ := s.weCom(corpID, agentSec1); next == w1 {
		t.Error("gettoken returns the invalidated token")
	}

	a = s.do("POST", "/sim/apps/wxnope/invalidate", "")
	if a.status != http.StatusNotFound || !bytes.Contains(a.body, []byte(`"error"`)) {
		t.Errorf("unknown app: status %d body %s, want 404 JSON", a.status, a.body)
	}
	if a := s.get("/sim/apps/" + appID + "/invalidate"); a.status != http.StatusMethodNotAllowed {
		t.Errorf("GET invalidate: status %d, want 405", a.status)
	}
}

func addFault(t *testing.T, s *sim, body string) {
	t.Helper()
	if a := s.do("POST", "/sim/faults", body); a.status != http.StatusOK {
		t.Fatalf("POST /sim/faults %s: %d %s", body, a.status, a.body)
	}
}

func TestFaults(t *testing.T) {
	t.Run("status", func(t *testing.T) {
		s := newSim(t, wechatsim.Options{})
		tok := s.classic(appID, appSecret)
		addFault(t, s, `{"path":"/cgi-bin/user/info","status":502}`)
		a := s.get("/cgi-bin/user/info?" + q("access_token", tok))
		if a.status != http.StatusBadGateway || a.errcode() != -1 || !weChatMsg.MatchString(a.errmsg()) {
			t.Errorf("status fault: %d %s, want 502 with errcode -1", a.status, a.body)
		}
		wantCode(t, "another path", s.get("/cgi-bin/other?"+q("access_token", tok)).errcode(), 0)
	})
	t.Run("errcode", func(t *testing.T) {
		s := newSim(t, wechatsim.Options{})
		addFault(t, s, `{"path":"/cgi-bin/token","errcode":-1}`)
		a := s.get("/cgi-bin/token?" + q("grant_type", "client_credential", "appid", appID, "secret", appSecret))
		if a.status != http.StatusOK || a.errcode() != -1 || !strings.HasPrefix(a.errmsg(), "system error rid: ") {
			t.Errorf("errcode fault: %d %s", a.status, a.body)
		}
		if got := s.Stats().Errcodes[-1]; got != 1 {
			t.Errorf("errcodes[-1] = %d, want 1", got)
		}
	})
	t.Run("latency", func(t *testing.T) {
		s := newSim(t, wechatsim.Options{})
		tok := s.classic(appID, appSecret)
		addFault(t, s, `{"path":"*","latency":"50ms"}`)
		began := time.Now()
		code := s.api(tok)
		if took := time.Since(began); took < 50*time.Millisecond {
			t.Errorf("call took %v, want at least 50ms", took)
		}
		wantCode(t, "latency alone answers normally", code, 0)
	})
	t.Run("drop", func(t *testing.T) {
		s := newSim(t, wechatsim.Options{})
		addFault(t, s, `{"path":"/cgi-bin/gettoken","drop":true}`)
		resp, err := http.Get(s.url + "/cgi-bin/gettoken?" + q("corpid", corpID, "corpsecret", agentSec1))
		if err == nil {
			resp.Body.Close()
			t.Fatalf("dropped call answered %d", resp.StatusCode)
		}
	})
	t.Run("count", func(t *testing.T) {
		s := newSim(t, wechatsim.Options{})
		tok := s.classic(appID, appSecret)
		addFault(t, s, `{"path":"*","errcode":45009,"count":2}`)
		wantCode(t, "call 1", s.api(tok), wechat.CodeDailyQuota)
		wantCode(t, "call 2", s.api(tok), wechat.CodeDailyQuota)
		wantCode(t, "call 3", s.api(tok), 0)
	})
	t.Run("probability 0 never fires", func(t *testing.T) {
		s := newSim(t, wechatsim.Options{})
		tok := s.classic(appID, appSecret)
		addFault(t, s, `{"path":"*","status":500,"probability":0}`)
		for i := range 100 {
			if code := s.api(tok); code != 0 {
				t.Fatalf("call %d: errcode %d", i, code)
			}
		}
	})
	t.Run("probability 0.5 fires sometimes", func(t *testing.T) {
		s := newSim(t, wechatsim.Options{})
		tok := s.classic(appID, appSecret)
		addFault(t, s, `{"path":"*","errcode":-1,"probability":0.5}`)
		hits := 0
		for range 200 {
			if s.api(tok) == -1 {
				hits++
			}
		}
		if hits == 0 || hits == 200 {
			t.Errorf("probability 0.5 fired %d times in 200", hits)
		}
	})
	t.Run("first match wins", func(t *testing.T) {
		s := newSim(t, wechatsim.Options{})
		tok := s.classic(appID, appSecret)
		addFault(t, s, `{"path":"/cgi-bin/user/info","errcode":45011,"count":1}`)
		addFault(t, s, `{"path":"*","errcode":45009}`)
		wantCode(t, "first", s.api(tok), wechat.CodeMinuteQuota)
		wantCode(t, "first used up", s.api(tok), wechat.CodeDailyQuota)
		a := s.do("DELETE", "/sim/faults", "")
		if a.status != http.StatusOK || !bytes.Contains(a.body, []byte(`"cleared":2`)) {
			t.Errorf("DELETE /sim/faults: %d %s", a.status, a.body)
		}
		wantCode(t, "after clearing", s.api(tok), 0)
		if a := s.get("/sim/stats"); a.status != http.StatusOK {
			t.Errorf("a fault on * reached the control API: %d", a.status)
		}
	})
	t.Run("answer and list", func(t *testing.T) {
		s := newSim(t, wechatsim.Options{})
		a := s.do("POST", "/sim/faults", `{"path":"*","status":503,"latency":"2s","count":3}`)
		var f map[string]any
		a.decode(t, &f)
		want := map[string]any{"path": "*", "status": 503.0, "errcode": 0.0, "latency": "2s", "drop": false, "count": 3.0, "probability": 1.0}
		if fmt.Sprint(f) != fmt.Sprint(want) {
			t.Errorf("POST /sim/faults answered %v, want %v", f, want)
		}
		if a := s.get("/sim/faults"); !bytes.Contains(a.body, []byte(`"left":3`)) {
			t.Errorf("GET /sim/faults = %s", a.body)
		}
	})
	t.Run("bad faults", func(t *testing.T) {
		s := newSim(t, wechatsim.Options{})
		for _, body := range []string{
			`{"path":"*"}`, `{"path":"x","status":500}`, `{"path":"/sim/stats","status":500}`,
			`{"path":"*","status":99}`, `{"path":"*","latency":"-1s"}`, `{"path":"*","latency":"x"}`,
			`{"path":"*","errcode":1,"count":-1}`, `{"path":"*","errcode":1,"probability":2}`,
			`{"path":"*","errcode":1,"nope":1}`, `[]`,
		} {
			a := s.do("POST", "/sim/faults", body)
			if a.status != http.StatusBadRequest || !bytes.Contains(a.body, []byte(`"error"`)) {
				t.Errorf("POST /sim/faults %s: %d %s, want 400 JSON", body, a.status, a.body)
			}
		}
		if err := s.AddFault(wechatsim.Fault{Path: "*"}); err == nil {
			t.Error("AddFault accepted a fault without effect")
		}
	})
	t.Run("Go API", func(t *testing.T) {
		s := newSim(t, wechatsim.Options{})
		tok := s.classic(appID, appSecret)
		if err := s.AddFault(wechatsim.Fault{Path: "*", Errcode: wechat.CodeSystemError}); err != nil {
			t.Fatal(err)
		}
		wantCode(t, "faulted", s.api(tok), -1)
		s.ClearFaults()
		wantCode(t, "cleared", s.api(tok), 0)
	})
}

func TestLatencyOption(t *testing.T) {
	s := newSim(t, wechatsim.Options{Latency: 40 * time.Millisecond})
	began := time.Now()
	s.classic(appID, appSecret)
	if took := time.Since(began); took < 40*time.Millisecond {
		t.Errorf("token fetch took %v, want at least 40ms", took)
	}
}

func TestControlStats(t *testing.T) {
	s := newSim(t, wechatsim.Options{})
	a := s.get("/sim/stats")
	if !bytes.Contains(a.body, []byte(`"duplicate_request_ids":[]`)) {
		t.Errorf("fresh stats = %s, want an empty duplicate_request_ids array", a.body)
	}
	tok := s.classic(appID, appSecret)
	s.get("/cgi-bin/token?" + q("grant_type", "client_credential", "appid", appID, "secret", "wrong"))
	s.get("/cgi-bin/token?" + q("grant_type", "client_credential", "appid", "wxnope", "secret", "x"))
	s.stable(appID, appSecret, false)
	s.stable(appID, appSecret, true)
	s.weCom(corpID, agentSec1)
	for _, id := range []string{"r1", "r2", "r1", "r3", "r1", "r3"} {
		s.do("POST", "/cgi-bin/message/custom/send?"+q("access_token", tok), "", "X-Request-Id", id)
	}
	s.do("POST", "/cgi-bin/message/custom/send", "", "X-Request-Id", "r2") // fails: not a duplicate
	s.do("POST", "/cgi-bin/message/custom/send?"+q("access_token", tok), "")

	a = s.get("/sim/stats")
	var got struct {
		TokenFetches        map[string]map[string]int64 `json:"token_fetches"`
		APICalls            map[string]int64            `json:"api_calls"`
		Errcodes            map[string]int64            `json:"errcodes"`
		DuplicateRequestIDs []string                    `json:"duplicate_request_ids"`
	}
	a.decode(t, &got)
	checks := []struct {
		name      string
		got, want any
	}{
		{"token_fetches[app]", got.TokenFetches[appID], map[string]int64{"classic": 2, "stable": 1, "stable_forced": 1, "wecom": 0}},
		{"token_fetches[corp]", got.TokenFetches[corpID], map[string]int64{"classic": 0, "stable": 0, "stable_forced": 0, "wecom": 1}},
		{"token_fetches[unknown]", got.TokenFetches["wxnope"], map[string]int64(nil)},
		{"api_calls[token]", got.APICalls["/cgi-bin/token"], int64(3)},
		{"api_calls[stable]", got.APICalls["/cgi-bin/stable_token"], int64(2)},
		{"api_calls[send]", got.APICalls["/cgi-bin/message/custom/send"], int64(8)},
		{"errcodes", got.Errcodes, map[string]int64{"40125": 1, "40013": 1, "41001": 1}},
		{"duplicate_request_ids", got.DuplicateRequestIDs, []string{"r1", "r3"}},
	}
	for _, c := range checks {
		if fmt.Sprint(c.got) != fmt.Sprint(c.want) {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
}

func TestControlTokens(t *testing.T) {
	s := newSim(t, wechatsim.Options{})
	tokens := func() map[string][]string {
		var v map[string][]string
		s.get("/sim/tokens").decode(t, &v)
		return v
	}
	if got := tokens(); len(got) != 0 {
		t.Errorf("fresh /sim/tokens = %v", got)
	}
	c1 := s.classic(appID, appSecret)
	c2 := s.classic(appID, appSecret)
	st, _ := s.stable(appID, appSecret, false)
	w, _ := s.weCom(corpID, agentSec1)
	got := tokens()
	if fmt.Sprint(got[appID]) != fmt.Sprint([]string{c1, c2, st}) || fmt.Sprint(got[corpID]) != fmt.Sprint([]string{w}) {
		t.Errorf("/sim/tokens = %v", got)
	}
	s.advance(5 * time.Minute)
	if got := tokens(); fmt.Sprint(got[appID]) != fmt.Sprint([]string{c2, st}) {
		t.Errorf("after the overlap /sim/tokens[app] = %v, want [c2 stable]", got[appID])
	}
	s.advance(2 * time.Hour)
	if got := tokens(); len(got) != 0 {
		t.Errorf("after expiry /sim/tokens = %v, want none", got)
	}
}

func TestControlReset(t *testing.T) {
	s := newSim(t, wechatsim.Options{})
	tok := s.classic(appID, appSecret)
	s.advance(time.Hour)
	addFault(t, s, `{"path":"/cgi-bin/x","errcode":-1}`)
	a := s.do("POST", "/sim/reset", "")
	if a.status != http.StatusOK {
		t.Fatalf("POST /sim/reset: %d %s", a.status, a.body)
	}
	if !s.Now().Equal(start) {
		t.Errorf("clock after reset = %v, want %v", s.Now(), start)
	}
	st := s.Stats()
	if len(st.APICalls) != 0 || len(st.Errcodes) != 0 || st.TokenFetches[appID].Classic != 0 {
		t.Errorf("stats after reset = %+v", st)
	}
	if len(s.Tokens()) != 0 {
		t.Errorf("tokens after reset = %v", s.Tokens())
	}
	wantCode(t, "old token after reset", s.api(tok), wechat.CodeInvalidCredential)
	tok = s.classic(appID, appSecret)
	wantCode(t, "faulted path after reset", s.get("/cgi-bin/x?"+q("access_token", tok)).errcode(), 0)
}

func TestControlRouting(t *testing.T) {
	s := newSim(t, wechatsim.Options{})
	tests := []struct {
		method, target string
		status         int
	}{
		{"GET", "/sim/nope", http.StatusNotFound},
		{"GET", "/sim/", http.StatusNotFound},
		{"GET", "/sim/apps/" + appID, http.StatusNotFound},
		{"DELETE", "/sim/stats", http.StatusMethodNotAllowed},
		{"POST", "/sim/tokens", http.StatusMethodNotAllowed},
		{"GET", "/sim/reset", http.StatusMethodNotAllowed},
		{"PUT", "/sim/clock", http.StatusMethodNotAllowed},
		{"PATCH", "/sim/faults", http.StatusMethodNotAllowed},
	}
	for _, tt := range tests {
		a := s.do(tt.method, tt.target, "")
		var e struct{ Error string }
		if json.Unmarshal(a.body, &e) != nil || e.Error == "" || a.status != tt.status {
			t.Errorf("%s %s: %d %s, want %d with a JSON error", tt.method, tt.target, a.status, a.body, tt.status)
		}
	}
	if got := s.Stats().APICalls; len(got) != 0 {
		t.Errorf("control calls counted as API calls: %v", got)
	}
}

// TestConcurrentUse runs token fetches, API calls and control reads in
// parallel; run with -race.
func TestConcurrentUse(t *testing.T) {
	s := newSim(t, wechatsim.Options{Quotas: map[string]wechatsim.Quota{"/cgi-bin/limited": {PerMinute: 100}}})
	const workers, rounds = 16, 40
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		stables = map[string]bool{}
		limited int
	)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range rounds {
				st, _ := s.stable(appID, appSecret, false)
				c := s.classic(miniID, miniSec)
				wc, _ := s.weCom(corpID, agentSec2)
				for _, tok := range []string{st, wc} {
					a := s.do("POST", "/cgi-bin/x?"+q("access_token", tok), "{}", "X-Request-Id", fmt.Sprintf("w%d-%d-%s", w, i, tok[:8]))
					if code := a.errcode(); code != 0 {
						t.Errorf("API call: errcode %d", code)
					} else if code := s.ridGet(tok, echoRid(t, a)).errcode(); code != 0 {
						t.Errorf("rid/get of the call: errcode %d", code)
					}
				}
				// A classic token may be superseded twice before we use it.
				if code := s.api(c); code != 0 && code != wechat.CodeInvalidCredential {
					t.Errorf("classic token: errcode %d", code)
				}
				if s.do("POST", "/cgi-bin/limited?"+q("access_token", st), "").errcode() == 0 {
					mu.Lock()
					limited++
					mu.Unlock()
				}
				if i%10 == 0 {
					s.Stats()
					s.Tokens()
					s.get("/sim/stats")
					s.Rids(appID, "", 10)
				}
				mu.Lock()
				stables[st] = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(stables) != 1 {
		t.Errorf("normal-mode stable_token returned %d different tokens, want 1", len(stables))
	}
	if limited != 100 {
		t.Errorf("%d calls passed a 100/minute quota in one minute, want exactly 100", limited)
	}
	st := s.Stats()
	if got, want := st.TokenFetches[miniID].Classic, int64(workers*rounds); got != want {
		t.Errorf("classic fetches = %d, want %d", got, want)
	}
	if len(st.DuplicateRequestIDs) != 0 {
		t.Errorf("unique request ids reported as duplicates: %v", st.DuplicateRequestIDs)
	}
}
