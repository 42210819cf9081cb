package wechatsim_test

import (
	"encoding/xml"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/wxproxy/wxproxy/wechatsim"
	"github.com/wxproxy/wxproxy/wxcrypt"
)

const (
	compID     = "wxc0ffee0000000001"
	compSecret = "component-secret-0123456789abcdef"
	compToken  = "msgtoken"
	compKey    = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"
	merchantID = "wxmerchant00000001"
)

// pushLog is a callback endpoint that verifies and decrypts every push.
type pushLog struct {
	mu     sync.Mutex
	pushes []map[string]string
	bad    int
}

func (l *pushLog) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c, _ := wxcrypt.New(wxcrypt.Options{Token: compToken, AESKey: compKey})
	body, _ := io.ReadAll(r.Body)
	q := r.URL.Query()
	msg, err := c.Open(q.Get("msg_signature"), q.Get("timestamp"), q.Get("nonce"), body, compID)
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil || q.Get("encrypt_type") != "aes" || q.Get("signature") != wxcrypt.Signature(compToken, q.Get("timestamp"), q.Get("nonce")) {
		l.bad++
		http.Error(w, "bad", http.StatusUnauthorized)
		return
	}
	var x struct {
		InfoType, ComponentVerifyTicket, AuthorizerAppid, AuthorizationCode, AppId string
	}
	_ = xml.Unmarshal(msg, &x)
	l.pushes = append(l.pushes, map[string]string{"info": x.InfoType, "ticket": x.ComponentVerifyTicket, "merchant": x.AuthorizerAppid, "code": x.AuthorizationCode, "appid": x.AppId})
	io.WriteString(w, "success")
}

func (l *pushLog) last(tb testing.TB) map[string]string {
	tb.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.pushes) == 0 {
		tb.Fatal("no push received")
	}
	return l.pushes[len(l.pushes)-1]
}

func newPlatformSim(tb testing.TB) (*sim, *pushLog) {
	tb.Helper()
	log := new(pushLog)
	cb := httptest.NewServer(log)
	tb.Cleanup(cb.Close)
	s := newSim(tb, wechatsim.Options{Components: []wechatsim.Component{{AppID: compID, Secret: compSecret, Token: compToken, AESKey: compKey}}, Callback: cb.URL + "/callback/acme"})
	return s, log
}

func TestOpenPlatformChain(t *testing.T) {
	s, pushes := newPlatformSim(t)

	// No ticket yet: 61006.
	a := s.do(http.MethodPost, "/cgi-bin/component/api_component_token", `{"component_appid":"`+compID+`","component_appsecret":"`+compSecret+`","component_verify_ticket":"nope"}`)
	wantCode(t, "component token without a ticket", a.errcode(), 61006)

	a = s.do(http.MethodPost, "/sim/platforms/"+compID+"/push-ticket", "")
	var pr wechatsim.PushResult
	a.decode(t, &pr)
	if pr.Status != 200 || pr.Body != "success" {
		t.Fatalf("push-ticket = %+v", pr)
	}
	p := pushes.last(t)
	if p["info"] != "component_verify_ticket" || p["ticket"] != pr.Ticket || p["appid"] != compID {
		t.Fatalf("push = %v, want the ticket %s", p, pr.Ticket)
	}
	wrongSecret := s.do(http.MethodPost, "/cgi-bin/component/api_component_token", `{"component_appid":"`+compID+`","component_appsecret":"x","component_verify_ticket":"`+pr.Ticket+`"}`)
	wantCode(t, "wrong secret", wrongSecret.errcode(), 40125)
	var ct struct {
		Token     string `json:"component_access_token"`
		ExpiresIn int64  `json:"expires_in"`
	}
	s.do(http.MethodPost, "/cgi-bin/component/api_component_token", `{"component_appid":"`+compID+`","component_appsecret":"`+compSecret+`","component_verify_ticket":"`+pr.Ticket+`"}`).decode(t, &ct)
	if ct.Token == "" || ct.ExpiresIn != 7200 {
		t.Fatalf("component token answer = %+v", ct)
	}
	// The component token goes under component_access_token.
	wantCode(t, "component API with access_token", s.do(http.MethodPost, "/cgi-bin/component/api_create_preauthcode?access_token="+ct.Token, `{"component_appid":"`+compID+`"}`).errcode(), 41001)
	wantCode(t, "preauthcode", s.do(http.MethodPost, "/cgi-bin/component/api_create_preauthcode?component_access_token="+ct.Token, `{"component_appid":"`+compID+`"}`).errcode(), 0)

	// A merchant authorizes: a push with a code, exchanged once.
	var auth wechatsim.PushResult
	s.do(http.MethodPost, "/sim/platforms/"+compID+"/authorize", `{"authorizer_appid":"`+merchantID+`"}`).decode(t, &auth)
	if p := pushes.last(t); p["info"] != "authorized" || p["merchant"] != merchantID || p["code"] != auth.AuthorizationCode {
		t.Fatalf("authorize push = %v (code %s)", p, auth.AuthorizationCode)
	}
	var qa struct {
		Info struct {
			AppID   string `json:"authorizer_appid"`
			Token   string `json:"authorizer_access_token"`
			Refresh string `json:"authorizer_refresh_token"`
		} `json:"authorization_info"`
	}
	body := `{"component_appid":"` + compID + `","authorization_code":"` + auth.AuthorizationCode + `"}`
	s.do(http.MethodPost, "/cgi-bin/component/api_query_auth?component_access_token="+ct.Token, body).decode(t, &qa)
	if qa.Info.AppID != merchantID || qa.Info.Token == "" || qa.Info.Refresh == "" {
		t.Fatalf("query_auth = %+v", qa)
	}
	wantCode(t, "code reused", s.do(http.MethodPost, "/cgi-bin/component/api_query_auth?component_access_token="+ct.Token, body).errcode(), 61009)

	// The merchant token works on business APIs, as the merchant.
	var echo struct {
		Echo struct {
			AppID     string `json:"appid"`
			Component string `json:"component_appid"`
		} `json:"echo"`
	}
	s.get("/cgi-bin/user/get?access_token="+qa.Info.Token).decode(t, &echo)
	if echo.Echo.AppID != merchantID || echo.Echo.Component != compID {
		t.Fatalf("echo = %+v", echo)
	}
	// api_authorizer_token: new token, refresh token unchanged, old one overlaps.
	var at struct {
		Token   string `json:"authorizer_access_token"`
		Refresh string `json:"authorizer_refresh_token"`
	}
	s.do(http.MethodPost, "/cgi-bin/component/api_authorizer_token?component_access_token="+ct.Token,
		`{"component_appid":"`+compID+`","authorizer_appid":"`+merchantID+`","authorizer_refresh_token":"`+qa.Info.Refresh+`"}`).decode(t, &at)
	if at.Token == "" || at.Token == qa.Info.Token || at.Refresh != qa.Info.Refresh {
		t.Fatalf("authorizer_token = %+v", at)
	}
	wantCode(t, "old merchant token in its overlap", s.api(qa.Info.Token), 0)
	wantCode(t, "wrong refresh token", s.do(http.MethodPost, "/cgi-bin/component/api_authorizer_token?component_access_token="+ct.Token,
		`{"component_appid":"`+compID+`","authorizer_appid":"`+merchantID+`","authorizer_refresh_token":"x"}`).errcode(), 61023)
	var list struct {
		Total int `json:"total_count"`
		List  []struct {
			AppID   string `json:"authorizer_appid"`
			Refresh string `json:"refresh_token"`
		} `json:"list"`
	}
	s.do(http.MethodPost, "/cgi-bin/component/api_get_authorizer_list?component_access_token="+ct.Token, `{"component_appid":"`+compID+`","offset":0,"count":500}`).decode(t, &list)
	if list.Total != 1 || list.List[0].Refresh != qa.Info.Refresh {
		t.Fatalf("authorizer list = %+v", list)
	}

	// Invalidation works for merchants and components.
	s.do(http.MethodPost, "/sim/apps/"+merchantID+"/invalidate", "")
	wantCode(t, "merchant token after invalidate", s.api(at.Token), 40001)
	s.do(http.MethodPost, "/sim/apps/"+compID+"/invalidate", "")
	wantCode(t, "component token after invalidate", s.do(http.MethodPost, "/cgi-bin/component/api_create_preauthcode?component_access_token="+ct.Token, `{"component_appid":"`+compID+`"}`).errcode(), 40001)

	// Unauthorize: push, and the refresh token is dead.
	s.do(http.MethodPost, "/sim/platforms/"+compID+"/unauthorize", `{"authorizer_appid":"`+merchantID+`"}`)
	if p := pushes.last(t); p["info"] != "unauthorized" || p["merchant"] != merchantID {
		t.Fatalf("unauthorize push = %v", p)
	}
	stats := s.Stats()
	if got := stats.TokenFetches[compID].Component; got != 3 {
		t.Errorf("component fetches = %d, want 3", got)
	}
	if got := stats.TokenFetches[merchantID].Authorizer; got != 3 {
		t.Errorf("authorizer fetches = %d, want 3", got)
	}
	if pushes.bad != 0 {
		t.Errorf("%d pushes failed verification", pushes.bad)
	}
}
