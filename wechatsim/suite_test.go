package wechatsim_test

import (
	"encoding/xml"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wxproxy/wxproxy/wechatsim"
	"github.com/wxproxy/wxproxy/wxcrypt"
)

const (
	suiteID      = "wwsuite0000000001"
	suiteSecret  = "suite-secret-0123456789abcdef"
	suiteID2     = "wwsuite0000000002"
	suiteToken   = "suitemsgtoken"
	suiteKey     = "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR"
	providerID   = "wwprovider0000001"
	providerSec  = "provider-secret-0123456789"
	installCorp  = "wwcustomer0000001"
	installCorp2 = "wwcustomer0000002"
)

// suitePushLog is a WeCom 指令回调 endpoint that verifies and decrypts
// every push (receive id: the suite id of the envelope's ToUserName).
type suitePushLog struct {
	mu     sync.Mutex
	pushes []map[string]string
	bad    []string
}

func (l *suitePushLog) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c, _ := wxcrypt.New(wxcrypt.Options{Token: suiteToken, AESKey: suiteKey})
	body, _ := io.ReadAll(r.Body)
	q := r.URL.Query()
	if r.Method == http.MethodGet {
		echo, err := c.VerifyURL(q.Get("msg_signature"), q.Get("timestamp"), q.Get("nonce"), q.Get("echostr"), suiteID, providerID)
		if err != nil {
			http.Error(w, "bad", http.StatusUnauthorized)
			return
		}
		w.Write(echo)
		return
	}
	env, err := wxcrypt.ParseEnvelope(body)
	var msg []byte
	if err == nil {
		msg, err = c.Open(q.Get("msg_signature"), q.Get("timestamp"), q.Get("nonce"), body, env.ToUserName)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case err != nil:
		l.bad = append(l.bad, err.Error())
	case q.Has("signature") || q.Has("encrypt_type"):
		l.bad = append(l.bad, "Open Platform parameters in a WeCom push: "+r.URL.RawQuery)
	case env.AppID != "":
		l.bad = append(l.bad, "AppId in a WeCom envelope")
	}
	if len(l.bad) > 0 {
		http.Error(w, "bad", http.StatusUnauthorized)
		return
	}
	var x struct {
		SuiteId, InfoType, SuiteTicket, AuthCode, AuthCorpId, TimeStamp string
	}
	_ = xml.Unmarshal(msg, &x)
	l.pushes = append(l.pushes, map[string]string{"to": env.ToUserName, "suite": x.SuiteId, "info": x.InfoType, "ticket": x.SuiteTicket,
		"code": x.AuthCode, "corp": x.AuthCorpId, "ts": x.TimeStamp})
	io.WriteString(w, "success")
}

func (l *suitePushLog) last(tb testing.TB) map[string]string {
	tb.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.bad) > 0 {
		tb.Fatalf("bad pushes: %v", l.bad)
	}
	if len(l.pushes) == 0 {
		tb.Fatal("no push received")
	}
	return l.pushes[len(l.pushes)-1]
}

// newSuiteSim starts a simulator with two suites and a provider, pushing to
// a suitePushLog; ttl 0 is the default.
func newSuiteSim(tb testing.TB, ttl time.Duration) (*sim, *suitePushLog) {
	tb.Helper()
	log := new(suitePushLog)
	cb := httptest.NewServer(log)
	tb.Cleanup(cb.Close)
	s := newSim(tb, wechatsim.Options{
		Suites: []wechatsim.Suite{
			{SuiteID: suiteID, Secret: suiteSecret, Token: suiteToken, AESKey: suiteKey},
			{SuiteID: suiteID2, Secret: suiteSecret + "2", Token: suiteToken, AESKey: suiteKey},
		},
		Providers: []wechatsim.Provider{{CorpID: providerID, Secret: providerSec}},
		Callback:  cb.URL + "/callback/suiteco",
		TokenTTL:  ttl,
	})
	return s, log
}

// pushTicket pushes a suite ticket and returns it.
func (s *sim) pushTicket(id string) string {
	s.tb.Helper()
	var pr wechatsim.PushResult
	a := s.do(http.MethodPost, "/sim/suites/"+id+"/push-ticket", "")
	a.decode(s.tb, &pr)
	if a.status != 200 || pr.Status != 200 || pr.Body != "success" || pr.Ticket == "" {
		s.tb.Fatalf("push-ticket = %d %s", a.status, a.body)
	}
	return pr.Ticket
}

type suiteTokenAnswer struct {
	ErrCode   int    `json:"errcode"`
	ErrMsg    string `json:"errmsg"`
	Token     string `json:"suite_access_token"`
	ExpiresIn int64  `json:"expires_in"`
}

// suiteTok fetches a suite token with ticket and fails unless it succeeds.
func (s *sim) suiteTok(id, secret, ticket string) suiteTokenAnswer {
	s.tb.Helper()
	var t suiteTokenAnswer
	a := s.do(http.MethodPost, wechatsim.PathSuiteToken, `{"suite_id":"`+id+`","suite_secret":"`+secret+`","suite_ticket":"`+ticket+`"}`)
	a.decode(s.tb, &t)
	if t.Token == "" || t.ErrCode != 0 || t.ErrMsg != "ok" || !tokenShape.MatchString(t.Token) {
		s.tb.Fatalf("suite token: %s", a.body)
	}
	return t
}

// install installs the suite in corpid and returns the pushed auth code.
func (s *sim) install(id, corpid string) string {
	s.tb.Helper()
	var pr wechatsim.PushResult
	a := s.do(http.MethodPost, "/sim/suites/"+id+"/install", `{"corpid":"`+corpid+`"}`)
	a.decode(s.tb, &pr)
	if a.status != 200 || pr.Status != 200 || len(pr.AuthCode) < 64 {
		s.tb.Fatalf("install = %d %s", a.status, a.body)
	}
	return pr.AuthCode
}

type permanentAnswer struct {
	ErrCode     int    `json:"errcode"`
	Permanent   string `json:"permanent_code"`
	AccessToken string `json:"access_token"`
	ExpiresIn   int64  `json:"expires_in"`
	Corp        struct {
		CorpID string `json:"corpid"`
	} `json:"auth_corp_info"`
}

// corpTok calls get_corp_token and returns the token and errcode.
func (s *sim) corpTok(suiteTok, corpid, permanent string) (string, int64, int) {
	s.tb.Helper()
	var t struct {
		Token     string `json:"access_token"`
		ExpiresIn int64  `json:"expires_in"`
	}
	a := s.do(http.MethodPost, wechatsim.PathCorpToken+"?suite_access_token="+suiteTok, `{"auth_corpid":"`+corpid+`","permanent_code":"`+permanent+`"}`)
	a.decode(s.tb, &t)
	return t.Token, t.ExpiresIn, a.errcode()
}

func TestSuiteChain(t *testing.T) {
	s, pushes := newSuiteSim(t, 0)

	body := func(secret, ticket string) string {
		return `{"suite_id":"` + suiteID + `","suite_secret":"` + secret + `","suite_ticket":"` + ticket + `"}`
	}
	wantCode(t, "suite token before any ticket", s.do(http.MethodPost, wechatsim.PathSuiteToken, body(suiteSecret, "")).errcode(), 40085)
	tk := s.pushTicket(suiteID)
	p := pushes.last(t)
	if p["info"] != "suite_ticket" || p["ticket"] != tk || p["suite"] != suiteID || p["to"] != suiteID || p["ts"] != "1741572000" {
		t.Fatalf("push = %v, want suite_ticket %s of %s at the simulator clock", p, tk, suiteID)
	}
	wantCode(t, "wrong secret", s.do(http.MethodPost, wechatsim.PathSuiteToken, body("nope", tk)).errcode(), 40080)
	wantCode(t, "unknown suite", s.do(http.MethodPost, wechatsim.PathSuiteToken, `{"suite_id":"wwnope","suite_secret":"x","suite_ticket":"`+tk+`"}`).errcode(), 40083)
	wantCode(t, "another suite's ticket", s.do(http.MethodPost, wechatsim.PathSuiteToken,
		`{"suite_id":"`+suiteID2+`","suite_secret":"`+suiteSecret+`2","suite_ticket":"`+tk+`"}`).errcode(), 40085)
	wantCode(t, "not JSON", s.do(http.MethodPost, wechatsim.PathSuiteToken, "suite_id=x").errcode(), 47001)
	st := s.suiteTok(suiteID, suiteSecret, tk)
	if st.ExpiresIn != 7200 {
		t.Errorf("expires_in = %d, want 7200", st.ExpiresIn)
	}
	s.advance(time.Minute)
	if again := s.suiteTok(suiteID, suiteSecret, tk); again.Token != st.Token || again.ExpiresIn != 7140 {
		t.Errorf("refetch within validity = %+v, want the same token with 7140 s left", again)
	}

	// Suite APIs want the suite token under suite_access_token.
	pre := s.get(wechatsim.PathPreAuthCode + "?suite_access_token=" + st.Token)
	wantCode(t, "pre_auth_code", pre.errcode(), 0)
	if !strings.Contains(string(pre.body), `"pre_auth_code":"`) || !strings.Contains(string(pre.body), `"expires_in":1200`) {
		t.Errorf("pre_auth_code answer %s", pre.body)
	}
	wantCode(t, "suite API without a token", s.get(wechatsim.PathPreAuthCode).errcode(), 41001)
	wantCode(t, "suite API with access_token", s.get(wechatsim.PathPreAuthCode+"?access_token="+st.Token).errcode(), 41001)
	wantCode(t, "suite API with a malformed token", s.get(wechatsim.PathPreAuthCode+"?suite_access_token=abc").errcode(), 40082)
	wantCode(t, "suite token on a business API", s.api(st.Token), 40001)
	if msg := s.get(wechatsim.PathPreAuthCode + "?suite_access_token=abc").errmsg(); !strings.HasPrefix(msg, "invalid suite_token, hint: [") {
		t.Errorf("errmsg %q, want WeCom's style", msg)
	}

	// A corp installs: create_auth with an auth code, exchanged once (v2:
	// no token in the answer).
	code := s.install(suiteID, installCorp)
	if p := pushes.last(t); p["info"] != "create_auth" || p["code"] != code || p["suite"] != suiteID {
		t.Fatalf("install push = %v (code %s)", p, code)
	}
	var pa permanentAnswer
	exchange := `{"auth_code":"` + code + `"}`
	raw := s.do(http.MethodPost, wechatsim.PathPermanentCodeV2+"?suite_access_token="+st.Token, exchange)
	raw.decode(t, &pa)
	if pa.ErrCode != 0 || pa.Permanent == "" || pa.Corp.CorpID != installCorp || strings.Contains(string(raw.body), "access_token") {
		t.Fatalf("v2/get_permanent_code = %s", raw.body)
	}
	wantCode(t, "auth code reused", s.do(http.MethodPost, wechatsim.PathPermanentCode+"?suite_access_token="+st.Token, exchange).errcode(), 40078)

	// The permanent code buys the corp token, the same one while valid.
	ct, exp, errcode := s.corpTok(st.Token, installCorp, pa.Permanent)
	if errcode != 0 || !tokenShape.MatchString(ct) || exp != 7200 {
		t.Fatalf("get_corp_token = %q %d errcode %d", ct, exp, errcode)
	}
	if again, _, _ := s.corpTok(st.Token, installCorp, pa.Permanent); again != ct {
		t.Errorf("corp token refetch = %q, want the same %q", again, ct)
	}
	if _, _, c := s.corpTok(st.Token, installCorp, "permanentcode@@@wrong"); c != 40084 {
		t.Errorf("wrong permanent code: errcode %d, want 40084", c)
	}
	if _, _, c := s.corpTok(st.Token, installCorp2, pa.Permanent); c != 40084 {
		t.Errorf("corp that never installed: errcode %d, want 40084", c)
	}
	info := s.do(http.MethodPost, wechatsim.PathAuthInfoV2+"?suite_access_token="+st.Token, `{"auth_corpid":"`+installCorp+`","permanent_code":"`+pa.Permanent+`"}`)
	if info.errcode() != 0 || !strings.Contains(string(info.body), `"corpid":"`+installCorp+`"`) {
		t.Errorf("v2/get_auth_info = %s", info.body)
	}
	wantCode(t, "get_auth_info with a wrong permanent code", s.do(http.MethodPost, wechatsim.PathAuthInfo+"?suite_access_token="+st.Token,
		`{"auth_corpid":"`+installCorp+`","permanent_code":"x"}`).errcode(), 40084)
	wantCode(t, "corp token as suite_access_token", s.get(wechatsim.PathPreAuthCode+"?suite_access_token="+ct).errcode(), 40082)

	// Business APIs accept the corp token, as the corp of the suite.
	var echo struct {
		Echo struct {
			AppID string `json:"appid"`
			Suite string `json:"suite_id"`
			Path  string `json:"path"`
		} `json:"echo"`
	}
	s.get("/cgi-bin/user/get?userid=zhangsan&access_token="+ct).decode(t, &echo)
	if echo.Echo.AppID != installCorp || echo.Echo.Suite != suiteID || echo.Echo.Path != "/cgi-bin/user/get" {
		t.Fatalf("echo = %+v", echo)
	}
	// Unmodelled suite APIs are echoed for the suite.
	s.do(http.MethodPost, "/cgi-bin/service/get_admin_list?suite_access_token="+st.Token, `{}`).decode(t, &echo)
	if echo.Echo.AppID != suiteID {
		t.Errorf("suite API echo = %+v, want the suite", echo)
	}

	if got := s.Tokens()[installCorp]; !slices.Contains(got, ct) {
		t.Errorf("/sim/tokens of the corp = %v, want %s", got, ct)
	}
	stats := s.Stats()
	if f := stats.TokenFetches[suiteID]; f.Suite != 4 {
		t.Errorf("suite fetches = %+v, want 4 (every call naming the suite)", f)
	}
	if f := stats.TokenFetches[installCorp]; f.Corp != 3 {
		t.Errorf("corp fetches = %+v, want 3", f)
	}
	a := s.get("/sim/stats")
	if !strings.Contains(string(a.body), `"`+suiteID+`":{"classic":0,"stable":0,"stable_forced":0,"wecom":0,"suite":4}`) {
		t.Errorf("/sim/stats = %s", a.body)
	}
}

func TestSuiteTokenLifetimes(t *testing.T) {
	s, _ := newSuiteSim(t, 60*time.Second)
	tk := s.pushTicket(suiteID)
	st := s.suiteTok(suiteID, suiteSecret, tk)
	if st.ExpiresIn != 60 {
		t.Fatalf("expires_in = %d, want -token-ttl's 60", st.ExpiresIn)
	}
	var pa permanentAnswer
	s.do(http.MethodPost, wechatsim.PathPermanentCode+"?suite_access_token="+st.Token, `{"auth_code":"`+s.install(suiteID, installCorp)+`"}`).decode(t, &pa)
	if pa.AccessToken == "" || pa.ExpiresIn != 60 || pa.Permanent == "" {
		t.Fatalf("v1 get_permanent_code = %+v, want the corp token too", pa)
	}
	wantCode(t, "fresh corp token", s.api(pa.AccessToken), 0)

	s.advance(61 * time.Second)
	wantCode(t, "expired suite token", s.get(wechatsim.PathPreAuthCode+"?suite_access_token="+st.Token).errcode(), 42009)
	wantCode(t, "expired corp token", s.api(pa.AccessToken), 42001)
	// The ticket is good for 30 minutes: a new suite token, a new corp token.
	st2 := s.suiteTok(suiteID, suiteSecret, tk)
	if st2.Token == st.Token {
		t.Fatal("the expired suite token was handed out again")
	}
	ct, _, code := s.corpTok(st2.Token, installCorp, pa.Permanent)
	if code != 0 || ct == pa.AccessToken {
		t.Fatalf("corp token after expiry = %q errcode %d", ct, code)
	}
	wantCode(t, "new corp token", s.api(ct), 0)

	s.advance(30 * time.Minute)
	wantCode(t, "ticket older than 30 minutes", s.do(http.MethodPost, wechatsim.PathSuiteToken,
		`{"suite_id":"`+suiteID+`","suite_secret":"`+suiteSecret+`","suite_ticket":"`+tk+`"}`).errcode(), 40085)

	// An auth code lives 10 minutes.
	code2 := s.install(suiteID, installCorp2)
	s.advance(10 * time.Minute)
	st3 := s.suiteTok(suiteID, suiteSecret, s.pushTicket(suiteID))
	wantCode(t, "auth code after 10 minutes", s.do(http.MethodPost, wechatsim.PathPermanentCodeV2+"?suite_access_token="+st3.Token,
		`{"auth_code":"`+code2+`"}`).errcode(), 40078)
}

func TestSuiteLifecycle(t *testing.T) {
	s, pushes := newSuiteSim(t, 0)
	st := s.suiteTok(suiteID, suiteSecret, s.pushTicket(suiteID))
	exchange := func(code string) string {
		t.Helper()
		var pa permanentAnswer
		s.do(http.MethodPost, wechatsim.PathPermanentCodeV2+"?suite_access_token="+st.Token, `{"auth_code":"`+code+`"}`).decode(t, &pa)
		if pa.Permanent == "" {
			t.Fatalf("no permanent code for %s", code)
		}
		return pa.Permanent
	}
	perm := exchange(s.install(suiteID, installCorp))

	if a := s.do(http.MethodPost, "/sim/suites/"+suiteID+"/install", `{"corpid":"`+installCorp+`"}`); a.status != http.StatusConflict {
		t.Errorf("second install = %d %s, want 409", a.status, a.body)
	}
	for _, c := range []struct{ path, body string }{
		{"/sim/suites/wwnope/install", `{"corpid":"` + installCorp + `"}`},
		{"/sim/suites/" + suiteID + "/uninstall", `{"corpid":"` + installCorp2 + `"}`},
		{"/sim/suites/wwnope/push-ticket", ``},
	} {
		if a := s.do(http.MethodPost, c.path, c.body); a.status != http.StatusNotFound {
			t.Errorf("%s %s = %d %s, want 404", c.path, c.body, a.status, a.body)
		}
	}
	for _, body := range []string{`{"corpid":""}`, `{"corpid":"a/b"}`, `{"corp":"x"}`, `{"corpid":"` + suiteID2 + `"}`} {
		if a := s.do(http.MethodPost, "/sim/suites/"+suiteID+"/install", body); a.status != http.StatusBadRequest {
			t.Errorf("install %s = %d %s, want 400", body, a.status, a.body)
		}
	}
	if a := s.get("/sim/suites/" + suiteID + "/install"); a.status != http.StatusMethodNotAllowed {
		t.Errorf("GET install = %d, want 405", a.status)
	}

	// change_auth changes nothing.
	if a := s.do(http.MethodPost, "/sim/suites/"+suiteID+"/change-auth", `{"corpid":"`+installCorp+`"}`); a.status != 200 {
		t.Fatalf("change-auth = %d %s", a.status, a.body)
	}
	if p := pushes.last(t); p["info"] != "change_auth" || p["corp"] != installCorp {
		t.Errorf("change-auth push = %v", p)
	}
	ct, _, code := s.corpTok(st.Token, installCorp, perm)
	wantCode(t, "corp token after change_auth", code, 0)

	// reset_permanent_code: the old code dies at once, the pushed auth
	// code gives the new one; the corp's token lives on.
	var pr wechatsim.PushResult
	s.do(http.MethodPost, "/sim/suites/"+suiteID+"/reset-permanent-code", `{"corpid":"`+installCorp+`"}`).decode(t, &pr)
	if p := pushes.last(t); p["info"] != "reset_permanent_code" || p["code"] != pr.AuthCode || pr.AuthCode == "" {
		t.Fatalf("reset push = %v, result %+v", p, pr)
	}
	if _, _, c := s.corpTok(st.Token, installCorp, perm); c != 40084 {
		t.Errorf("old permanent code after reset: errcode %d, want 40084", c)
	}
	wantCode(t, "corp token after reset", s.api(ct), 0)
	perm2 := exchange(pr.AuthCode)
	if perm2 == perm {
		t.Fatal("reset kept the permanent code")
	}
	if _, _, c := s.corpTok(st.Token, installCorp, perm2); c != 0 {
		t.Errorf("new permanent code: errcode %d", c)
	}

	// cancel_auth: the permanent code and the corp's tokens die.
	if a := s.do(http.MethodPost, "/sim/suites/"+suiteID+"/uninstall", `{"corpid":"`+installCorp+`"}`); a.status != 200 {
		t.Fatalf("uninstall = %d %s", a.status, a.body)
	}
	if p := pushes.last(t); p["info"] != "cancel_auth" || p["corp"] != installCorp || p["suite"] != suiteID {
		t.Errorf("uninstall push = %v", p)
	}
	wantCode(t, "corp token after uninstall", s.api(ct), 40001)
	if _, _, c := s.corpTok(st.Token, installCorp, perm2); c != 40084 {
		t.Errorf("permanent code after uninstall: errcode %d, want 40084", c)
	}
	if len(s.Tokens()[installCorp]) != 0 {
		t.Errorf("live corp tokens after uninstall: %v", s.Tokens()[installCorp])
	}
	// Installing again gives a new permanent code.
	if perm3 := exchange(s.install(suiteID, installCorp)); perm3 == perm2 || perm3 == "" {
		t.Errorf("reinstall permanent code %q", perm3)
	}
}

func TestProviderToken(t *testing.T) {
	s, _ := newSuiteSim(t, 0)
	get := func(body string) answer { return s.do(http.MethodPost, wechatsim.PathProviderToken, body) }
	wantCode(t, "unknown corpid", get(`{"corpid":"wwnope","provider_secret":"x"}`).errcode(), 40013)
	wantCode(t, "wrong secret", get(`{"corpid":"`+providerID+`","provider_secret":"x"}`).errcode(), 40001)
	wantCode(t, "no secret", get(`{"corpid":"`+providerID+`"}`).errcode(), 41004)
	wantCode(t, "a suite id", get(`{"corpid":"`+suiteID+`","provider_secret":"`+suiteSecret+`"}`).errcode(), 40013)
	a := get(`{"corpid":"` + providerID + `","provider_secret":"` + providerSec + `"}`)
	var pt struct {
		Token     string `json:"provider_access_token"`
		ExpiresIn int64  `json:"expires_in"`
	}
	a.decode(t, &pt)
	if !tokenShape.MatchString(pt.Token) || pt.ExpiresIn != 7200 || strings.Contains(string(a.body), "errcode") {
		t.Fatalf("provider token answer %s, want a token and no errcode", a.body)
	}
	var again struct {
		Token string `json:"provider_access_token"`
	}
	get(`{"corpid":"`+providerID+`","provider_secret":"`+providerSec+`"}`).decode(t, &again)
	if again.Token != pt.Token {
		t.Errorf("provider token refetch = %q, want the same", again.Token)
	}

	var echo struct {
		Echo struct {
			AppID string `json:"appid"`
		} `json:"echo"`
	}
	s.do(http.MethodPost, "/cgi-bin/service/get_register_code?provider_access_token="+pt.Token, `{}`).decode(t, &echo)
	if echo.Echo.AppID != providerID {
		t.Errorf("provider API echo = %+v", echo)
	}
	s.do(http.MethodPost, "/cgi-bin/service/get_login_info?access_token="+pt.Token, `{"auth_code":"x"}`).decode(t, &echo)
	if echo.Echo.AppID != providerID {
		t.Errorf("get_login_info echo = %+v", echo)
	}
	wantCode(t, "provider token on a business API", s.api(pt.Token), 40001)
	st := s.suiteTok(suiteID, suiteSecret, s.pushTicket(suiteID))
	wantCode(t, "suite token as provider_access_token", s.do(http.MethodPost, "/cgi-bin/service/get_register_code?provider_access_token="+st.Token, `{}`).errcode(), 40082)
	wantCode(t, "provider token as suite_access_token", s.get(wechatsim.PathPreAuthCode+"?suite_access_token="+pt.Token).errcode(), 40082)

	if a := s.do(http.MethodPost, "/sim/apps/"+providerID+"/invalidate", ""); a.status != 200 {
		t.Fatalf("invalidate provider = %d %s", a.status, a.body)
	}
	wantCode(t, "invalidated provider token", s.do(http.MethodPost, "/cgi-bin/service/get_register_code?provider_access_token="+pt.Token, `{}`).errcode(), 42001)
	if f := s.Stats().TokenFetches[providerID]; f.Provider != 4 {
		t.Errorf("provider fetches = %+v, want 4", f)
	}
}

func TestSuiteInvalidate(t *testing.T) {
	s, _ := newSuiteSim(t, 0)
	st := s.suiteTok(suiteID, suiteSecret, s.pushTicket(suiteID))
	st2 := s.suiteTok(suiteID2, suiteSecret+"2", s.pushTicket(suiteID2))
	// One corp installs both suites: two corp tokens, both its own.
	var toks []string
	for _, su := range []struct{ id, tok string }{{suiteID, st.Token}, {suiteID2, st2.Token}} {
		var pa permanentAnswer
		s.do(http.MethodPost, wechatsim.PathPermanentCodeV2+"?suite_access_token="+su.tok, `{"auth_code":"`+s.install(su.id, installCorp)+`"}`).decode(t, &pa)
		ct, _, code := s.corpTok(su.tok, installCorp, pa.Permanent)
		wantCode(t, "corp token of "+su.id, code, 0)
		toks = append(toks, ct)
	}
	if toks[0] == toks[1] {
		t.Fatal("two suites got the same corp token")
	}
	if live := s.Tokens()[installCorp]; len(live) != 2 {
		t.Errorf("live tokens of the corp = %v, want both", live)
	}
	if f := s.Stats().TokenFetches[installCorp]; f.Corp != 2 {
		t.Errorf("corp fetches = %+v, want 2 (summed over suites)", f)
	}

	var inv struct {
		Invalidated int `json:"invalidated"`
	}
	s.do(http.MethodPost, "/sim/apps/"+installCorp+"/invalidate", "").decode(t, &inv)
	if inv.Invalidated != 2 {
		t.Errorf("invalidated %d corp tokens, want 2", inv.Invalidated)
	}
	for _, ct := range toks {
		wantCode(t, "invalidated corp token", s.api(ct), 40001)
	}
	s.do(http.MethodPost, "/sim/apps/"+suiteID+"/invalidate", "")
	wantCode(t, "invalidated suite token", s.get(wechatsim.PathPreAuthCode+"?suite_access_token="+st.Token).errcode(), 42009)
	wantCode(t, "the other suite's token", s.get(wechatsim.PathPreAuthCode+"?suite_access_token="+st2.Token).errcode(), 0)
	if again := s.suiteTok(suiteID, suiteSecret, s.pushTicket(suiteID)); again.Token == st.Token {
		t.Error("the invalidated suite token was handed out again")
	}
}

func TestSuiteTicketBound(t *testing.T) {
	s, _ := newSuiteSim(t, 0)
	var tickets []string
	for range 17 {
		tickets = append(tickets, s.pushTicket(suiteID))
	}
	body := func(tk string) string {
		return `{"suite_id":"` + suiteID + `","suite_secret":"` + suiteSecret + `","suite_ticket":"` + tk + `"}`
	}
	wantCode(t, "the oldest of 17 live tickets", s.do(http.MethodPost, wechatsim.PathSuiteToken, body(tickets[0])).errcode(), 40085)
	wantCode(t, "the 16th newest ticket", s.do(http.MethodPost, wechatsim.PathSuiteToken, body(tickets[1])).errcode(), 0)
}

func TestSuitePushWithoutCallback(t *testing.T) {
	s := newSim(t, wechatsim.Options{Suites: []wechatsim.Suite{{SuiteID: suiteID, Secret: suiteSecret, Token: suiteToken, AESKey: suiteKey}}})
	a := s.do(http.MethodPost, "/sim/suites/"+suiteID+"/push-ticket", "")
	if a.status != http.StatusBadGateway || !strings.Contains(string(a.body), `"ticket":"suiteticket@@@`) {
		t.Fatalf("push without a callback = %d %s, want 502 with the ticket", a.status, a.body)
	}
	var r struct{ Ticket string }
	a.decode(t, &r)
	// The ticket counts although its push failed, as for components.
	s.suiteTok(suiteID, suiteSecret, r.Ticket)
}

func TestSuiteConfigErrors(t *testing.T) {
	for _, c := range []struct {
		name string
		opts wechatsim.Options
		want string
	}{
		{"no suite id", wechatsim.Options{Suites: []wechatsim.Suite{{Secret: "s", Token: "t", AESKey: suiteKey}}}, "suites[0].suite_id: required"},
		{"no secret", wechatsim.Options{Suites: []wechatsim.Suite{{SuiteID: suiteID, Token: "t", AESKey: suiteKey}}}, "suites[0].secret: required"},
		{"bad key", wechatsim.Options{Suites: []wechatsim.Suite{{SuiteID: suiteID, Secret: "s", Token: "t", AESKey: "short"}}}, "suites[0]:"},
		{"suite twice", wechatsim.Options{Suites: []wechatsim.Suite{{SuiteID: suiteID, Secret: "s", Token: "t", AESKey: suiteKey}, {SuiteID: suiteID, Secret: "s", Token: "t", AESKey: suiteKey}}}, "suites[1].suite_id: \"" + suiteID + "\" is configured twice"},
		{"provider no secret", wechatsim.Options{Providers: []wechatsim.Provider{{CorpID: providerID}}}, "providers[0].secret: required"},
		{"provider is an app", wechatsim.Options{Apps: []wechatsim.App{{AppID: providerID, Secret: "s", Kind: wechatsim.KindWeCom}}, Providers: []wechatsim.Provider{{CorpID: providerID, Secret: "s"}}}, "providers[0].corpid: \"" + providerID + "\" is configured twice"},
	} {
		_, err := wechatsim.New(c.opts)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: New = %v, want an error containing %q", c.name, err, c.want)
		}
	}
	if _, err := wechatsim.New(wechatsim.Options{Providers: []wechatsim.Provider{{CorpID: providerID, Secret: "s"}}}); err != nil {
		t.Errorf("a provider alone: %v", err)
	}
}

func TestSuiteVerifyURL(t *testing.T) {
	s, _ := newSuiteSim(t, 0)
	for _, c := range []struct {
		body     string
		status   int
		verified bool
	}{
		{"", 200, true},
		{`{"receive_id":"` + providerID + `"}`, 200, true},
		{`{"receive_id":"wwsomeoneelse"}`, 401, false},
	} {
		var pr wechatsim.PushResult
		a := s.do(http.MethodPost, "/sim/suites/"+suiteID+"/verify-url", c.body)
		a.decode(t, &pr)
		if a.status != 200 || pr.Status != c.status || pr.Verified != c.verified || pr.Echo == "" {
			t.Errorf("verify-url %s = %d %s, want callback status %d, verified %v", c.body, a.status, a.body, c.status, c.verified)
		}
		if c.verified && pr.Body != pr.Echo {
			t.Errorf("verify-url %s: body %q, echo %q", c.body, pr.Body, pr.Echo)
		}
	}
	if a := s.do(http.MethodPost, "/sim/suites/"+suiteID+"/verify-url", `{"receiveid":"x"}`); a.status != http.StatusBadRequest {
		t.Errorf("verify-url with an unknown field = %d, want 400", a.status)
	}
}

// TestSuiteConcurrent runs suite, corp and control calls at once (for the
// race detector): a corp's token stays the same and accepted while other
// corps install and uninstall, tickets are pushed and stats are read.
func TestSuiteConcurrent(t *testing.T) {
	s, _ := newSuiteSim(t, 0)
	st := s.suiteTok(suiteID, suiteSecret, s.pushTicket(suiteID))
	var pa permanentAnswer
	s.do(http.MethodPost, wechatsim.PathPermanentCodeV2+"?suite_access_token="+st.Token, `{"auth_code":"`+s.install(suiteID, installCorp)+`"}`).decode(t, &pa)
	ct, _, code := s.corpTok(st.Token, installCorp, pa.Permanent)
	wantCode(t, "corp token", code, 0)

	const workers, rounds = 4, 25
	var wg sync.WaitGroup
	errs := make(chan string, workers*rounds*2+rounds)
	for range workers {
		wg.Go(func() {
			for range rounds {
				if got, _, c := s.corpTok(st.Token, installCorp, pa.Permanent); c != 0 || got != ct {
					errs <- "get_corp_token changed or failed"
				}
				if c := s.api(ct); c != 0 {
					errs <- "corp token refused"
				}
			}
		})
	}
	wg.Go(func() {
		for i := range rounds {
			// No Fatal off the test goroutine: failures go to errs.
			corp := "wwchurn" + string(rune('a'+i%26))
			for _, c := range []struct{ path, body string }{
				{"/sim/suites/" + suiteID + "/install", `{"corpid":"` + corp + `"}`},
				{"/sim/suites/" + suiteID + "/push-ticket", ""},
				{"/sim/suites/" + suiteID + "/uninstall", `{"corpid":"` + corp + `"}`},
			} {
				if a := s.do(http.MethodPost, c.path, c.body); a.status != 200 {
					errs <- c.path + ": " + string(a.body)
				}
			}
			s.get("/sim/stats")
			s.get("/sim/tokens")
		}
	})
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	if f := s.Stats().TokenFetches[installCorp]; f.Corp != 1+workers*rounds {
		t.Errorf("corp fetches = %d, want %d", f.Corp, 1+workers*rounds)
	}
}

// TestSuitePushReceiveID: a push may be encrypted for and addressed to
// another receive id, as WeCom was seen sending create_auth with the
// provider's corpid.
func TestSuitePushReceiveID(t *testing.T) {
	s, pushes := newSuiteSim(t, 0)
	a := s.do(http.MethodPost, "/sim/suites/"+suiteID+"/install", `{"corpid":"`+installCorp+`","receive_id":"`+providerID+`"}`)
	if a.status != 200 {
		t.Fatalf("install = %d %s", a.status, a.body)
	}
	if p := pushes.last(t); p["to"] != providerID || p["info"] != "create_auth" {
		t.Errorf("push = %v, want create_auth to %s (the log decrypts with ToUserName as the receive id)", p, providerID)
	}
	s.do(http.MethodPost, "/sim/suites/"+suiteID+"/push-ticket", `{"receive_id":"`+providerID+`"}`)
	if p := pushes.last(t); p["to"] != providerID || p["info"] != "suite_ticket" {
		t.Errorf("push = %v, want suite_ticket to %s", p, providerID)
	}
	s.do(http.MethodPost, "/sim/suites/"+suiteID+"/change-auth", `{"corpid":"`+installCorp+`"}`)
	if p := pushes.last(t); p["to"] != suiteID {
		t.Errorf("push = %v, want the suite id by default", p)
	}
}
