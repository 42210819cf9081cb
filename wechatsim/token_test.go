package wechatsim_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/wxproxy/wxproxy/wechat"
	"github.com/wxproxy/wxproxy/wechatsim"
)

func TestClassicTokenAnswer(t *testing.T) {
	s := newSim(t, wechatsim.Options{})
	a := s.get("/cgi-bin/token?" + q("grant_type", "client_credential", "appid", appID, "secret", appSecret))
	var m map[string]any
	a.decode(t, &m)
	if _, has := m["errcode"]; has {
		t.Errorf("success answer has an errcode member: %s", a.body)
	}
	if got, want := len(m), 2; got != want {
		t.Errorf("success answer has %d members, want %d: %s", got, want, a.body)
	}
	if tok, _ := m["access_token"].(string); !tokenShape.MatchString(tok) {
		t.Errorf("access_token %q does not look like a WeChat token", tok)
	}
	if got, want := m["expires_in"], 7200.0; got != want {
		t.Errorf("expires_in = %v, want %v", got, want)
	}
	if s.classic(appID, appSecret) == s.classic(appID, appSecret) {
		t.Error("two classic fetches returned the same token")
	}
}

func TestClassicTokenErrors(t *testing.T) {
	s := newSim(t, wechatsim.Options{})
	tests := []struct {
		name  string
		query string
		code  int
	}{
		{"bad grant_type", q("grant_type", "password", "appid", appID, "secret", appSecret), wechat.CodeInvalidGrantType},
		{"no grant_type", q("appid", appID, "secret", appSecret), wechat.CodeInvalidGrantType},
		{"missing appid", q("grant_type", "client_credential", "secret", appSecret), wechat.CodeAppIDMissing},
		{"missing secret", q("grant_type", "client_credential", "appid", appID), wechat.CodeSecretMissing},
		{"unknown appid", q("grant_type", "client_credential", "appid", "wxnope", "secret", appSecret), wechat.CodeInvalidAppID},
		{"wrong secret", q("grant_type", "client_credential", "appid", appID, "secret", "nope"), wechat.CodeInvalidSecret},
		{"secret of another app", q("grant_type", "client_credential", "appid", appID, "secret", miniSec), wechat.CodeInvalidSecret},
		{"wecom corpid", q("grant_type", "client_credential", "appid", corpID, "secret", agentSec1), wechat.CodeInvalidAppID},
		{"mini program", q("grant_type", "client_credential", "appid", miniID, "secret", miniSec), 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := s.get("/cgi-bin/token?" + tt.query)
			wantCode(t, "GET /cgi-bin/token?"+tt.query, a.errcode(), tt.code)
			if tt.code != 0 && strings.Contains(string(a.body), "access_token\"") {
				t.Errorf("error answer carries a token: %s", a.body)
			}
		})
	}
}

func TestTokenChecks(t *testing.T) {
	s := newSim(t, wechatsim.Options{})
	tok := s.classic(appID, appSecret)
	unknown := "86_" + strings.Repeat("A", 128)
	tests := []struct {
		name  string
		query string
		code  int
	}{
		{"valid", q("access_token", tok), 0},
		{"missing", q("x", "1"), wechat.CodeTokenMissing},
		{"empty", q("access_token", ""), wechat.CodeTokenMissing},
		{"garbage", q("access_token", "hello"), wechat.CodeInvalidToken},
		{"one char short", q("access_token", tok[:len(tok)-1]), wechat.CodeInvalidToken},
		{"bad character", q("access_token", tok[:len(tok)-1]+"!"), wechat.CodeInvalidToken},
		{"wrong prefix", q("access_token", "85_"+tok[3:]), wechat.CodeInvalidToken},
		{"well-formed unknown", q("access_token", unknown), wechat.CodeInvalidCredential},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantCode(t, tt.name, s.get("/cgi-bin/user/info?"+tt.query).errcode(), tt.code)
		})
	}
}

func TestClassicExpiry(t *testing.T) {
	s := newSim(t, wechatsim.Options{})
	tok := s.classic(appID, appSecret)
	s.advance(7199 * time.Second)
	wantCode(t, "at 7199s", s.api(tok), 0)
	s.advance(time.Second)
	wantCode(t, "at 7200s", s.api(tok), wechat.CodeTokenExpired)
}

func TestClassicOverlap(t *testing.T) {
	t.Run("previous lives 5 minutes", func(t *testing.T) {
		s := newSim(t, wechatsim.Options{})
		t1 := s.classic(appID, appSecret)
		s.advance(time.Minute)
		t2 := s.classic(appID, appSecret)
		s.advance(4*time.Minute + 59*time.Second)
		wantCode(t, "old at 4m59s", s.api(t1), 0)
		s.advance(time.Second)
		wantCode(t, "old at 5m", s.api(t1), wechat.CodeInvalidCredential)
		wantCode(t, "new at 5m", s.api(t2), 0)
	})
	t.Run("older ones die at once", func(t *testing.T) {
		s := newSim(t, wechatsim.Options{})
		t1 := s.classic(appID, appSecret)
		t2 := s.classic(appID, appSecret)
		wantCode(t, "t1 after one fetch", s.api(t1), 0)
		t3 := s.classic(appID, appSecret)
		wantCode(t, "t1 after two fetches", s.api(t1), wechat.CodeInvalidCredential)
		wantCode(t, "t2", s.api(t2), 0)
		wantCode(t, "t3", s.api(t3), 0)
	})
	t.Run("overlap ends at the old expiry", func(t *testing.T) {
		s := newSim(t, wechatsim.Options{})
		t1 := s.classic(appID, appSecret)
		s.advance(7198 * time.Second)
		s.classic(appID, appSecret)
		s.advance(time.Second)
		wantCode(t, "old 1s before expiry", s.api(t1), 0)
		s.advance(time.Second)
		wantCode(t, "old at expiry", s.api(t1), wechat.CodeInvalidCredential)
	})
	t.Run("short ttl", func(t *testing.T) {
		s := newSim(t, wechatsim.Options{TokenTTL: 10 * time.Second})
		t1 := s.classic(appID, appSecret)
		s.advance(3 * time.Second)
		s.classic(appID, appSecret)
		s.advance(6 * time.Second)
		wantCode(t, "old at 9s", s.api(t1), 0)
		s.advance(time.Second)
		wantCode(t, "old at 10s", s.api(t1), wechat.CodeInvalidCredential)
	})
}

func TestClassicDailyQuota(t *testing.T) {
	s := newSim(t, wechatsim.Options{})
	for i := range 2000 {
		a := s.get("/cgi-bin/token?" + q("grant_type", "client_credential", "appid", appID, "secret", appSecret))
		if code := a.errcode(); code != 0 {
			t.Fatalf("fetch %d: errcode %d", i+1, code)
		}
	}
	fetch := func() int {
		return s.get("/cgi-bin/token?" + q("grant_type", "client_credential", "appid", appID, "secret", appSecret)).errcode()
	}
	wantCode(t, "fetch 2001", fetch(), wechat.CodeDailyQuota)
	s.classic(miniID, miniSec) // the quota is per appid
	midnight := time.Date(2025, 3, 11, 0, 0, 0, 0, start.Location())
	s.advanceTo(midnight.Add(-time.Second))
	wantCode(t, "23:59:59 Shanghai", fetch(), wechat.CodeDailyQuota)
	s.advance(time.Second)
	wantCode(t, "00:00 Shanghai", fetch(), 0)
	if got, want := s.Stats().TokenFetches[appID].Classic, int64(2003); got != want {
		t.Errorf("classic fetches = %d, want %d (every call counts)", got, want)
	}
}

func TestStableNormalMode(t *testing.T) {
	s := newSim(t, wechatsim.Options{})
	t1, exp := s.stable(appID, appSecret, false)
	if !tokenShape.MatchString(t1) || exp != 7200 {
		t.Fatalf("first stable token %q expires_in %d", t1, exp)
	}
	s.advance(100 * time.Second)
	if tok, exp := s.stable(appID, appSecret, false); tok != t1 || exp != 7100 {
		t.Errorf("after 100s: token changed=%v expires_in=%d, want same token and 7100", tok != t1, exp)
	}
	s.advance(7100*time.Second - 301*time.Second) // 301 s left
	if tok, exp := s.stable(appID, appSecret, false); tok != t1 || exp != 301 {
		t.Errorf("301s left: token changed=%v expires_in=%d, want the same token", tok != t1, exp)
	}
	s.advance(time.Second) // 300 s left: rotate
	t2, exp := s.stable(appID, appSecret, false)
	if t2 == t1 || exp != 7200 {
		t.Fatalf("300s left: token changed=%v expires_in=%d, want a new token with 7200", t2 != t1, exp)
	}
	if tok, _ := s.stable(appID, appSecret, false); tok != t2 {
		t.Error("after the rotation normal mode does not return the new token")
	}
	s.advance(299 * time.Second)
	wantCode(t, "old token 1s before its expiry", s.api(t1), 0)
	s.advance(time.Second)
	wantCode(t, "old token at its expiry", s.api(t1), wechat.CodeTokenExpired)
	wantCode(t, "new token", s.api(t2), 0)
}

func TestStableRotationShortTTL(t *testing.T) {
	s := newSim(t, wechatsim.Options{TokenTTL: 60 * time.Second}) // rotates at min(5m, 30s) left
	t1, _ := s.stable(appID, appSecret, false)
	s.advance(29 * time.Second)
	if tok, exp := s.stable(appID, appSecret, false); tok != t1 || exp != 31 {
		t.Errorf("31s left: changed=%v expires_in=%d, want same token, 31", tok != t1, exp)
	}
	s.advance(time.Second)
	if tok, exp := s.stable(appID, appSecret, false); tok == t1 || exp != 60 {
		t.Errorf("30s left: changed=%v expires_in=%d, want a new token, 60", tok != t1, exp)
	}
}

func TestStableForceRefresh(t *testing.T) {
	t.Run("overlap", func(t *testing.T) {
		s := newSim(t, wechatsim.Options{})
		t0, _ := s.stable(appID, appSecret, false)
		t1, exp := s.stable(appID, appSecret, true)
		if t1 == t0 || exp != 7200 {
			t.Fatalf("forced refresh: changed=%v expires_in=%d", t1 != t0, exp)
		}
		if tok, _ := s.stable(appID, appSecret, false); tok != t1 {
			t.Error("normal mode does not return the forced token")
		}
		s.advance(4*time.Minute + 59*time.Second)
		wantCode(t, "previous at 4m59s", s.api(t0), 0)
		s.advance(time.Second)
		wantCode(t, "previous at 5m", s.api(t0), wechat.CodeInvalidCredential)
		wantCode(t, "forced token", s.api(t1), 0)
	})
	t.Run("two forced refreshes kill a leaked token", func(t *testing.T) {
		s := newSim(t, wechatsim.Options{})
		leaked, _ := s.stable(appID, appSecret, false)
		t1, _ := s.stable(appID, appSecret, true)
		s.advance(30 * time.Second)
		t2, _ := s.stable(appID, appSecret, true)
		if t2 == t1 {
			t.Fatal("second forced refresh 30s later did not refresh")
		}
		wantCode(t, "leaked", s.api(leaked), wechat.CodeInvalidCredential)
		wantCode(t, "t1 within its overlap", s.api(t1), 0)
	})
	t.Run("spacing", func(t *testing.T) {
		s := newSim(t, wechatsim.Options{})
		t1, _ := s.stable(appID, appSecret, true)
		s.advance(29 * time.Second)
		a := s.do(http.MethodPost, "/cgi-bin/stable_token", `{"grant_type":"client_credential","appid":"`+appID+`","secret":"`+appSecret+`","force_refresh":true}`)
		var got wechat.TokenResponse
		a.decode(t, &got)
		if got.AccessToken != t1 || a.errcode() != 0 {
			t.Errorf("forced refresh 29s later: %s, want the current token without an error", a.body)
		}
		if got.ExpiresIn != 7200-29 {
			t.Errorf("refused forced refresh expires_in = %d, want %d", got.ExpiresIn, 7200-29)
		}
		s.advance(time.Second)
		if tok, _ := s.stable(appID, appSecret, true); tok == t1 {
			t.Error("forced refresh 30s later did not refresh")
		}
	})
	t.Run("20 per day", func(t *testing.T) {
		s := newSim(t, wechatsim.Options{})
		var last string
		for i := range 20 {
			tok, _ := s.stable(appID, appSecret, true)
			if tok == last {
				t.Fatalf("forced refresh %d did not refresh", i+1)
			}
			last = tok
			s.advance(30 * time.Second)
		}
		if tok, _ := s.stable(appID, appSecret, true); tok != last {
			t.Error("forced refresh 21 refreshed")
		}
		s.advanceTo(time.Date(2025, 3, 11, 0, 0, 0, 0, start.Location()))
		// The current token expired meanwhile; a forced refresh mints anyway.
		tok, _ := s.stable(appID, appSecret, true)
		if tok == last {
			t.Error("forced refresh on the next Shanghai day did not refresh")
		}
		next, _ := s.stable(appID, appSecret, false)
		s.advance(30 * time.Second)
		if again, _ := s.stable(appID, appSecret, true); again == next {
			t.Error("the new day's budget allows only one forced refresh")
		}
		f := s.Stats().TokenFetches[appID]
		if f.StableForced != 23 || f.Stable != 1 {
			t.Errorf("token_fetches = %+v, want stable 1, stable_forced 23", f)
		}
	})
}

func TestStableTokenErrors(t *testing.T) {
	s := newSim(t, wechatsim.Options{})
	body := func(grant, appid, secret string) string {
		b, _ := json.Marshal(map[string]string{"grant_type": grant, "appid": appid, "secret": secret})
		return string(b)
	}
	tests := []struct {
		name   string
		method string
		body   string
		code   int
	}{
		{"form encoded", http.MethodPost, q("grant_type", "client_credential", "appid", appID, "secret", appSecret), wechat.CodeAppIDMissing},
		{"empty body", http.MethodPost, "", wechat.CodeAppIDMissing},
		{"GET", http.MethodGet, "", wechat.CodeRequirePOST},
		{"bad grant_type", http.MethodPost, body("x", appID, appSecret), wechat.CodeInvalidGrantType},
		{"missing appid", http.MethodPost, body("client_credential", "", appSecret), wechat.CodeAppIDMissing},
		{"missing secret", http.MethodPost, body("client_credential", appID, ""), wechat.CodeSecretMissing},
		{"unknown appid", http.MethodPost, body("client_credential", "wxnope", appSecret), wechat.CodeInvalidAppID},
		{"wecom corpid", http.MethodPost, body("client_credential", corpID, agentSec1), wechat.CodeInvalidAppID},
		{"wrong secret", http.MethodPost, body("client_credential", appID, "nope"), wechat.CodeInvalidSecret},
		{"ok", http.MethodPost, body("client_credential", appID, appSecret), 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantCode(t, tt.name, s.do(tt.method, "/cgi-bin/stable_token", tt.body).errcode(), tt.code)
		})
	}
}

func TestStableTokenLimits(t *testing.T) {
	s := newSim(t, wechatsim.Options{Quotas: map[string]wechatsim.Quota{wechatsim.PathStableToken: {PerMinute: 3, PerDay: 5}}})
	call := func() int {
		return s.do(http.MethodPost, "/cgi-bin/stable_token", `{"grant_type":"client_credential","appid":"`+appID+`","secret":"`+appSecret+`"}`).errcode()
	}
	for range 3 {
		wantCode(t, "call in minute 1", call(), 0)
	}
	wantCode(t, "4th call in a minute", call(), wechat.CodeMinuteQuota)
	s.advance(time.Minute)
	wantCode(t, "next minute", call(), 0)
	wantCode(t, "5th call of the day", call(), 0)
	s.advance(time.Minute)
	wantCode(t, "6th call of the day", call(), wechat.CodeDailyQuota)
}

func TestClassicStableIsolation(t *testing.T) {
	s := newSim(t, wechatsim.Options{})
	c1 := s.classic(appID, appSecret)
	st1, _ := s.stable(appID, appSecret, false)
	c2 := s.classic(appID, appSecret)
	c3 := s.classic(appID, appSecret) // kills c1 at once
	wantCode(t, "c1", s.api(c1), wechat.CodeInvalidCredential)
	wantCode(t, "stable after two classic fetches", s.api(st1), 0)
	st2, _ := s.stable(appID, appSecret, true)
	s.advance(30 * time.Second)
	s.stable(appID, appSecret, true) // kills st1 at once
	wantCode(t, "st1", s.api(st1), wechat.CodeInvalidCredential)
	wantCode(t, "c2 after two forced refreshes", s.api(c2), 0)
	wantCode(t, "c3", s.api(c3), 0)
	wantCode(t, "st2", s.api(st2), 0)
	if st, _ := s.stable(appID, appSecret, false); st == c3 {
		t.Error("stable and classic share a token")
	}
}

func TestWeComToken(t *testing.T) {
	s := newSim(t, wechatsim.Options{})
	t1, exp := s.weCom(corpID, agentSec1)
	if !tokenShape.MatchString(t1) || exp != 7200 {
		t.Fatalf("wecom token %q expires_in %d", t1, exp)
	}
	s.advance(1000 * time.Second)
	if tok, exp := s.weCom(corpID, agentSec1); tok != t1 || exp != 6200 {
		t.Errorf("re-fetch: changed=%v expires_in=%d, want the same token with 6200", tok != t1, exp)
	}
	a1, _ := s.weCom(corpID, agentSec2)
	if a1 == t1 {
		t.Error("two agents of one corp share a token")
	}
	a := s.get("/cgi-bin/user/get?" + q("access_token", t1, "userid", "zhangsan"))
	var e struct{ Echo struct{ AppID string } }
	a.decode(t, &e)
	if a.errcode() != 0 || e.Echo.AppID != corpID {
		t.Errorf("business call with a WeCom token: %s", a.body)
	}
	s.advance(6200 * time.Second)
	wantCode(t, "expired wecom token", s.api(t1), wechat.CodeTokenExpired)
	t2, exp := s.weCom(corpID, agentSec1)
	if t2 == t1 || exp != 7200 {
		t.Errorf("after expiry: changed=%v expires_in=%d, want a new token with 7200", t2 != t1, exp)
	}
	if got, want := s.Stats().TokenFetches[corpID].WeCom, int64(4); got != want {
		t.Errorf("wecom fetches = %d, want %d", got, want)
	}

	tests := []struct {
		name  string
		query string
		code  int
	}{
		{"missing corpid", q("corpsecret", agentSec1), wechat.CodeAppIDMissing},
		{"missing corpsecret", q("corpid", corpID), wechat.CodeSecretMissing},
		{"unknown corpid", q("corpid", "wwnope", "corpsecret", agentSec1), wechat.CodeInvalidAppID},
		{"official appid", q("corpid", appID, "corpsecret", appSecret), wechat.CodeInvalidAppID},
		{"wrong secret", q("corpid", corpID, "corpsecret", "nope"), wechat.CodeInvalidCredential},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := s.get("/cgi-bin/gettoken?" + tt.query)
			wantCode(t, tt.name, a.errcode(), tt.code)
			if !weComMsg.MatchString(a.errmsg()) {
				t.Errorf("errmsg %q is not in WeCom's style", a.errmsg())
			}
		})
	}
}
