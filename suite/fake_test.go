package suite_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// fakeWeCom is a small stand-in for qyapi.weixin.qq.com's suite APIs
// (WECHAT.md "WeCom third-party"), for unit tests; the e2e tests use
// wechatsim.
type fakeWeCom struct {
	t                    *testing.T
	suiteID, secret      string
	providerID, provider string

	mu         sync.Mutex
	tickets    map[string]bool
	suiteTok   string
	providerTk string
	n          int
	corps      map[string]string // corpid → permanent code
	corpTok    map[string]string // corpid → live token
	codes      map[string]string // auth code → corpid (single use)
	fetches    map[string]int    // "suite", "provider", "corp", "permanent"
	lastPath   string
	corpFaults []int // errcodes the next get_corp_token calls answer
}

func newFake(t *testing.T) (*fakeWeCom, *httptest.Server) {
	f := &fakeWeCom{t: t, suiteID: suiteID, secret: "suitesecret", providerID: providerCorp, provider: "providersecret",
		tickets: map[string]bool{}, corps: map[string]string{}, corpTok: map[string]string{}, codes: map[string]string{}, fetches: map[string]int{}}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return f, srv
}

func (f *fakeWeCom) count(k string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.fetches[k]
}

func (f *fakeWeCom) next(prefix string) string {
	f.n++
	return fmt.Sprintf("%s-%04d-%s", prefix, f.n, strings.Repeat("x", 24))
}

// install makes an auth code for corpid, as WeCom does when a corp
// installs the suite.
func (f *fakeWeCom) install(corpid string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n++
	code := fmt.Sprintf("authcode-%s-%d-%s", corpid, f.n, strings.Repeat("a", 64))
	f.codes[code] = corpid
	return code
}

func (f *fakeWeCom) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var body map[string]string
	_ = json.NewDecoder(r.Body).Decode(&body)
	q := r.URL.Query()
	f.lastPath = r.URL.Path
	answer := func(v any) { _ = json.NewEncoder(w).Encode(v) }
	fail := func(code int) { answer(map[string]any{"errcode": code, "errmsg": fmt.Sprintf("fake error %d", code)}) }
	suiteOK := func() bool {
		if tok := q.Get("suite_access_token"); tok == "" || tok != f.suiteTok {
			fail(42009)
			return false
		}
		return true
	}
	switch r.URL.Path {
	case "/cgi-bin/service/get_suite_token":
		if body["suite_id"] != f.suiteID || body["suite_secret"] != f.secret {
			fail(40080)
			return
		}
		if !f.tickets[body["suite_ticket"]] {
			fail(40085)
			return
		}
		f.fetches["suite"]++
		if f.suiteTok == "" {
			f.suiteTok = f.next("suitetok")
		}
		answer(map[string]any{"errcode": 0, "errmsg": "ok", "suite_access_token": f.suiteTok, "expires_in": 7200})
	case "/cgi-bin/service/get_provider_token":
		if body["corpid"] != f.providerID || body["provider_secret"] != f.provider {
			fail(40089)
			return
		}
		f.fetches["provider"]++
		if f.providerTk == "" {
			f.providerTk = f.next("providertok")
		}
		answer(map[string]any{"provider_access_token": f.providerTk, "expires_in": 7200})
	case "/cgi-bin/service/get_corp_token":
		if !suiteOK() {
			return
		}
		f.fetches["corp"]++
		if len(f.corpFaults) > 0 {
			code := f.corpFaults[0]
			f.corpFaults = f.corpFaults[1:]
			fail(code)
			return
		}
		corpid := body["auth_corpid"]
		if pc, ok := f.corps[corpid]; !ok || pc != body["permanent_code"] {
			fail(40084)
			return
		}
		if f.corpTok[corpid] == "" {
			f.corpTok[corpid] = f.next("corptok-" + corpid)
		}
		answer(map[string]any{"errcode": 0, "errmsg": "ok", "access_token": f.corpTok[corpid], "expires_in": 7200})
	case "/cgi-bin/service/get_permanent_code", "/cgi-bin/service/v2/get_permanent_code":
		if !suiteOK() {
			return
		}
		f.fetches["permanent"]++
		corpid, ok := f.codes[body["auth_code"]]
		if !ok {
			fail(40078)
			return
		}
		delete(f.codes, body["auth_code"])
		pc := f.next("permcode-" + corpid)
		f.corps[corpid] = pc
		ans := map[string]any{"errcode": 0, "errmsg": "ok", "permanent_code": pc,
			"auth_corp_info": map[string]any{"corpid": corpid, "corp_name": "Corp " + corpid},
			"auth_info":      map[string]any{"agent": []any{map[string]any{"agentid": 1000012, "name": "app"}}}}
		if !strings.Contains(r.URL.Path, "/v2/") {
			f.corpTok[corpid] = f.next("corptok-" + corpid)
			ans["access_token"], ans["expires_in"] = f.corpTok[corpid], 7200
		}
		answer(ans)
	default:
		fail(40000)
	}
}

// kill makes the corp's token dead, as WeCom sometimes does.
func (f *fakeWeCom) kill(corpid string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.corpTok[corpid] = ""
}

// expireSuite makes the suite token dead (42009 from then on).
func (f *fakeWeCom) expireSuite() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.suiteTok = ""
}
