package wechatsim_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/wxproxy/wxproxy/wechat"
	"github.com/wxproxy/wxproxy/wechatsim"
)

// Test apps: one of each kind, and a WeCom corp with two agents.
const (
	appID     = "wx0123456789abcdef"
	appSecret = "official-secret"
	miniID    = "wxfedcba9876543210"
	miniSec   = "mini-secret"
	corpID    = "ww0123456789abcdef"
	agentSec1 = "agent-secret-1"
	agentSec2 = "agent-secret-2"
)

// start is 10:00 on a Monday in Shanghai: far from a day boundary.
var start = time.Date(2025, 3, 10, 10, 0, 0, 0, time.FixedZone("CST", 8*3600))

var tokenShape = regexp.MustCompile(`^86_[A-Za-z0-9_-]{128}$`)

// sim is a simulator behind a real HTTP server, with a fixed base clock.
type sim struct {
	*wechatsim.Server
	tb  testing.TB
	url string
}

func testApps() []wechatsim.App {
	return []wechatsim.App{
		{AppID: appID, Secret: appSecret},
		{AppID: miniID, Secret: miniSec, Kind: wechatsim.KindMiniProgram},
		{AppID: corpID, Secret: agentSec1, Kind: wechatsim.KindWeCom},
		{AppID: corpID, Secret: agentSec2, Kind: wechatsim.KindWeCom},
	}
}

// newSim starts a simulator; nil Apps and Now get the test defaults.
func newSim(tb testing.TB, opts wechatsim.Options) *sim {
	tb.Helper()
	if opts.Apps == nil {
		opts.Apps = testApps()
	}
	if opts.Now == nil {
		opts.Now = func() time.Time { return start }
	}
	s, err := wechatsim.New(opts)
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	srv := httptest.NewServer(s)
	tb.Cleanup(srv.Close)
	return &sim{Server: s, tb: tb, url: srv.URL}
}

// answer is one HTTP answer.
type answer struct {
	status int
	header http.Header
	body   []byte
}

// errcode returns the answer's top-level errcode, 0 when it has none.
func (a answer) errcode() int {
	code, _ := wechat.ScanErrcode(a.body)
	return code
}

func (a answer) errmsg() string {
	var r wechat.Response
	_ = json.Unmarshal(a.body, &r)
	return r.ErrMsg
}

func (a answer) decode(tb testing.TB, v any) {
	tb.Helper()
	if err := json.Unmarshal(a.body, v); err != nil {
		tb.Fatalf("decode %s: %v", a.body, err)
	}
}

// do sends one request; target is a path with an optional query.
func (s *sim) do(method, target, body string, hdr ...string) answer {
	s.tb.Helper()
	req, err := http.NewRequest(method, s.url+target, strings.NewReader(body))
	if err != nil {
		s.tb.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.tb.Fatalf("%s %s: %v", method, target, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		s.tb.Fatalf("%s %s: read: %v", method, target, err)
	}
	return answer{status: resp.StatusCode, header: resp.Header, body: b}
}

func (s *sim) get(target string) answer { s.tb.Helper(); return s.do(http.MethodGet, target, "") }

func q(kv ...string) string {
	v := url.Values{}
	for i := 0; i+1 < len(kv); i += 2 {
		v.Add(kv[i], kv[i+1])
	}
	return v.Encode()
}

// classic fetches a classic token and fails the test unless it succeeds.
func (s *sim) classic(appid, secret string) string {
	s.tb.Helper()
	a := s.get("/cgi-bin/token?" + q("grant_type", "client_credential", "appid", appid, "secret", secret))
	var t wechat.TokenResponse
	a.decode(s.tb, &t)
	if t.AccessToken == "" {
		s.tb.Fatalf("classic token: %s", a.body)
	}
	return t.AccessToken
}

// stable calls stable_token and fails the test unless it succeeds.
func (s *sim) stable(appid, secret string, force bool) (string, int64) {
	s.tb.Helper()
	body, _ := json.Marshal(map[string]any{"grant_type": "client_credential", "appid": appid, "secret": secret, "force_refresh": force})
	a := s.do(http.MethodPost, "/cgi-bin/stable_token", string(body))
	var t wechat.TokenResponse
	a.decode(s.tb, &t)
	if t.AccessToken == "" {
		s.tb.Fatalf("stable token: %s", a.body)
	}
	return t.AccessToken, t.ExpiresIn
}

// weCom fetches a WeCom token and fails the test unless it succeeds.
func (s *sim) weCom(corpid, secret string) (string, int64) {
	s.tb.Helper()
	a := s.get("/cgi-bin/gettoken?" + q("corpid", corpid, "corpsecret", secret))
	var t wechat.TokenResponse
	a.decode(s.tb, &t)
	if t.AccessToken == "" || t.ErrCode != 0 || t.ErrMsg != "ok" {
		s.tb.Fatalf("wecom token: %s", a.body)
	}
	return t.AccessToken, t.ExpiresIn
}

// api calls a business API with tok and returns the errcode.
func (s *sim) api(tok string) int {
	s.tb.Helper()
	return s.get("/cgi-bin/user/info?" + q("access_token", tok)).errcode()
}

// advance moves the simulator clock.
func (s *sim) advance(d time.Duration) {
	s.tb.Helper()
	if err := s.Advance(d); err != nil {
		s.tb.Fatal(err)
	}
}

// advanceTo moves the simulator clock to t.
func (s *sim) advanceTo(t time.Time) {
	s.tb.Helper()
	s.advance(t.Sub(s.Now()))
}

// wantCode fails the test unless got == want.
func wantCode(tb testing.TB, what string, got, want int) {
	tb.Helper()
	if got != want {
		tb.Errorf("%s: errcode %d, want %d", what, got, want)
	}
}
