package wechatsim_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/wxproxy/wxproxy/wechat"
	"github.com/wxproxy/wxproxy/wechatsim"
)

var (
	weChatMsg = regexp.MustCompile(`^[a-z].* rid: ([0-9a-f]+)-[0-9a-f]{8}-[0-9a-f]{8}$`)
	weComMsg  = regexp.MustCompile(`^[a-z].*, hint: \[(\d+)_\d+_[0-9a-f]{32}\], from ip: 127\.0\.0\.1, more info at https://open\.work\.weixin\.qq\.com/devtool/query\?e=(-?\d+)$`)
)

func TestErrmsgFormat(t *testing.T) {
	s := newSim(t, wechatsim.Options{})
	tok := s.classic(appID, appSecret)
	s.Invalidate(appID)

	a := s.get("/cgi-bin/user/info?" + q("access_token", tok))
	if got, want := a.errmsg(), "invalid credential, access_token is invalid or not latest rid: "; len(got) < len(want) || got[:len(want)] != want {
		t.Errorf("errmsg = %q, want prefix %q", got, want)
	}
	m := weChatMsg.FindStringSubmatch(a.errmsg())
	if m == nil {
		t.Fatalf("errmsg %q does not end with a rid", a.errmsg())
	}
	if got, want := m[1], strconv.FormatInt(start.Unix(), 16); got != want {
		t.Errorf("rid time = %s, want the simulator clock %s", got, want)
	}

	wtok, _ := s.weCom(corpID, agentSec1)
	s.advance(2 * time.Hour)
	a = s.get("/cgi-bin/user/get?" + q("access_token", wtok))
	wantCode(t, "expired wecom token", a.errcode(), wechat.CodeTokenExpired)
	m = weComMsg.FindStringSubmatch(a.errmsg())
	if m == nil {
		t.Fatalf("errmsg %q is not in WeCom's style", a.errmsg())
	}
	if got, want := m[1], strconv.FormatInt(start.Add(2*time.Hour).Unix(), 10); got != want {
		t.Errorf("hint time = %s, want %s", got, want)
	}
	if m[2] != "42001" {
		t.Errorf("more-info code = %s, want 42001", m[2])
	}
	a = s.get("/cgi-bin/gettoken?" + q("corpid", "wwnope", "corpsecret", "x"))
	if got, want := a.errmsg()[:len("invalid corpid, hint")], "invalid corpid, hint"; got != want {
		t.Errorf("unknown corpid errmsg = %q", a.errmsg())
	}
}

func TestContentTypeAndStatus(t *testing.T) {
	s := newSim(t, wechatsim.Options{})
	tok := s.classic(appID, appSecret)
	tests := []struct{ name, method, target, body string }{
		{"classic ok", "GET", "/cgi-bin/token?" + q("grant_type", "client_credential", "appid", appID, "secret", appSecret), ""},
		{"classic error", "GET", "/cgi-bin/token?appid=x", ""},
		{"stable ok", "POST", "/cgi-bin/stable_token", `{"grant_type":"client_credential","appid":"` + appID + `","secret":"` + appSecret + `"}`},
		{"stable error", "POST", "/cgi-bin/stable_token", "appid=x"},
		{"wecom ok", "GET", "/cgi-bin/gettoken?" + q("corpid", corpID, "corpsecret", agentSec1), ""},
		{"wecom error", "GET", "/cgi-bin/gettoken", ""},
		{"ticket", "GET", "/cgi-bin/ticket/getticket?" + q("access_token", tok, "type", "jsapi"), ""},
		{"quota/get", "POST", "/cgi-bin/openapi/quota/get?" + q("access_token", tok), `{"cgi_path":"/cgi-bin/token"}`},
		{"business ok", "POST", "/cgi-bin/message/custom/send?" + q("access_token", tok), "{}"},
		{"business error", "POST", "/cgi-bin/message/custom/send", "{}"},
		{"media error", "GET", "/cgi-bin/media/get?access_token=x", ""},
		{"jscode2session", "GET", "/sns/jscode2session?" + q("appid", miniID, "secret", miniSec, "js_code", "c"), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := s.do(tt.method, tt.target, tt.body)
			if a.status != http.StatusOK {
				t.Errorf("status %d, want 200", a.status)
			}
			if got, want := a.header.Get("Content-Type"), "application/json; encoding=utf-8"; got != want {
				t.Errorf("Content-Type %q, want %q", got, want)
			}
		})
	}
}

type quotaAnswer struct {
	Quota struct {
		DailyLimit int `json:"daily_limit"`
		Used       int `json:"used"`
		Remain     int `json:"remain"`
	} `json:"quota"`
	RateLimit struct {
		CallCount     int `json:"call_count"`
		RefreshSecond int `json:"refresh_second"`
	} `json:"rate_limit"`
}

func TestQuotaGet(t *testing.T) {
	const path = "/cgi-bin/message/custom/send"
	s := newSim(t, wechatsim.Options{Quotas: map[string]wechatsim.Quota{path: {PerMinute: 5, PerDay: 10}}})
	tok := s.classic(appID, appSecret)
	for range 3 {
		wantCode(t, "business call", s.do("POST", path+"?"+q("access_token", tok), "{}").errcode(), 0)
	}
	get := func(cgiPath string) (quotaAnswer, int) {
		a := s.do("POST", "/cgi-bin/openapi/quota/get?"+q("access_token", tok), `{"cgi_path":"`+cgiPath+`"}`)
		var v quotaAnswer
		a.decode(t, &v)
		return v, a.errcode()
	}
	tests := []struct {
		path                        string
		limit, used, remain, perMin int
		refresh                     int
	}{
		{path, 10, 3, 7, 5, 60},
		{wechatsim.PathToken, 2000, 1, 1999, 0, 0},
		{wechatsim.PathStableToken, 500000, 0, 500000, 10000, 60},
	}
	for _, tt := range tests {
		v, code := get(tt.path)
		wantCode(t, tt.path, code, 0)
		if v.Quota.DailyLimit != tt.limit || v.Quota.Used != tt.used || v.Quota.Remain != tt.remain ||
			v.RateLimit.CallCount != tt.perMin || v.RateLimit.RefreshSecond != tt.refresh {
			t.Errorf("quota/get %s = %+v, want limit %d used %d remain %d rate %d/%ds", tt.path, v, tt.limit, tt.used, tt.remain, tt.perMin, tt.refresh)
		}
	}
	if _, code := get("/cgi-bin/unknown"); code != wechat.CodeCgiPathNotFound {
		t.Errorf("unknown cgi_path: errcode %d, want %d", code, wechat.CodeCgiPathNotFound)
	}
	a := s.do("POST", "/cgi-bin/openapi/quota/get?"+q("access_token", tok), `not json`)
	wantCode(t, "bad body", a.errcode(), wechat.CodeDataFormat)
}

func TestClearQuota(t *testing.T) {
	const path = "/cgi-bin/message/custom/send"
	s := newSim(t, wechatsim.Options{Quotas: map[string]wechatsim.Quota{path: {PerDay: 1}}})
	tok := s.classic(appID, appSecret)
	clearQuota := func(appid string) int {
		return s.do("POST", "/cgi-bin/clear_quota?"+q("access_token", tok), `{"appid":"`+appid+`"}`).errcode()
	}
	call := func() int { return s.do("POST", path+"?"+q("access_token", tok), "").errcode() }
	wantCode(t, "first call", call(), 0)
	wantCode(t, "second call", call(), wechat.CodeDailyQuota)
	wantCode(t, "clear_quota", clearQuota(appID), 0)
	wantCode(t, "after clear_quota", call(), 0)
	wantCode(t, "clear_quota for another app", clearQuota(miniID), wechat.CodeInvalidAppID)
	wantCode(t, "clear_quota without appid", clearQuota(""), wechat.CodeAppIDMissing)
	for i := 2; i <= 10; i++ {
		wantCode(t, fmt.Sprintf("clear_quota %d", i), clearQuota(appID), 0)
	}
	wantCode(t, "clear_quota 11", clearQuota(appID), wechat.CodeClearQuotaLimit)
	s.advanceTo(time.Date(2025, 4, 1, 0, 0, 0, 0, start.Location()))
	tok = s.classic(appID, appSecret)
	wantCode(t, "clear_quota next month", clearQuota(appID), 0)
}

func TestJSCode2Session(t *testing.T) {
	s := newSim(t, wechatsim.Options{})
	type session struct {
		OpenID     string `json:"openid"`
		SessionKey string `json:"session_key"`
		UnionID    string `json:"unionid"`
	}
	login := func(appid, secret, code string) (session, int) {
		a := s.get("/sns/jscode2session?" + q("appid", appid, "secret", secret, "js_code", code, "grant_type", "authorization_code"))
		var v session
		a.decode(t, &v)
		return v, a.errcode()
	}
	s1, code := login(miniID, miniSec, "code-1")
	wantCode(t, "login", code, 0)
	if s1.OpenID == "" || s1.SessionKey == "" || s1.UnionID == "" {
		t.Fatalf("session = %+v, want openid, session_key and unionid", s1)
	}
	if again, _ := login(miniID, miniSec, "code-1"); again != s1 {
		t.Errorf("same code gave %+v then %+v", s1, again)
	}
	if other, _ := login(miniID, miniSec, "code-2"); other.OpenID == s1.OpenID {
		t.Error("two codes gave the same openid")
	}
	tests := []struct {
		name, appid, secret, code string
		want                      int
	}{
		{"missing appid", "", miniSec, "c", wechat.CodeAppIDMissing},
		{"missing secret", miniID, "", "c", wechat.CodeSecretMissing},
		{"unknown appid", "wxnope", miniSec, "c", wechat.CodeInvalidAppID},
		{"wrong secret", miniID, "nope", "c", wechat.CodeInvalidSecret},
		{"missing code", miniID, miniSec, "", wechat.CodeCodeMissing},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, code := login(tt.appid, tt.secret, tt.code)
			wantCode(t, tt.name, code, tt.want)
		})
	}
	a := s.get("/sns/jscode2session?" + q("appid", miniID, "secret", miniSec, "js_code", "c", "grant_type", "client_credential"))
	wantCode(t, "bad grant_type", a.errcode(), wechat.CodeInvalidGrantType)
}

func TestOAuth(t *testing.T) {
	s := newSim(t, wechatsim.Options{})
	a := s.get("/sns/oauth2/access_token?" + q("appid", appID, "secret", appSecret, "code", "auth-code", "grant_type", "authorization_code"))
	var o struct {
		AccessToken  string `json:"access_token"`
		ExpiresIn    int64  `json:"expires_in"`
		RefreshToken string `json:"refresh_token"`
		OpenID       string `json:"openid"`
		Scope        string `json:"scope"`
	}
	a.decode(t, &o)
	if !tokenShape.MatchString(o.AccessToken) || o.ExpiresIn != 7200 || o.RefreshToken == "" || o.OpenID == "" || o.Scope != "snsapi_userinfo" {
		t.Fatalf("oauth2 answer %s", a.body)
	}
	wantCode(t, "oauth2 wrong secret",
		s.get("/sns/oauth2/access_token?"+q("appid", appID, "secret", "x", "code", "c", "grant_type", "authorization_code")).errcode(),
		wechat.CodeInvalidSecret)

	a = s.get("/sns/userinfo?" + q("access_token", o.AccessToken, "openid", o.OpenID))
	var u struct{ OpenID, Nickname string }
	a.decode(t, &u)
	if a.errcode() != 0 || u.OpenID != o.OpenID || u.Nickname != "sim-user" {
		t.Errorf("userinfo = %s", a.body)
	}
	appTok := s.classic(appID, appSecret)
	tests := []struct {
		name, target string
		want         int
	}{
		{"auth", "/sns/auth?" + q("access_token", o.AccessToken, "openid", o.OpenID), 0},
		{"userinfo without openid", "/sns/userinfo?" + q("access_token", o.AccessToken), 0},
		{"userinfo with an app token", "/sns/userinfo?" + q("access_token", appTok, "openid", o.OpenID), wechat.CodeInvalidCredential},
		{"auth with an app token", "/sns/auth?" + q("access_token", appTok), wechat.CodeInvalidCredential},
		{"userinfo wrong openid", "/sns/userinfo?" + q("access_token", o.AccessToken, "openid", "oNope"), wechat.CodeInvalidOpenID},
		{"userinfo no token", "/sns/userinfo", wechat.CodeTokenMissing},
		{"user token on a business API", "/cgi-bin/user/info?" + q("access_token", o.AccessToken), wechat.CodeInvalidCredential},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { wantCode(t, tt.name, s.get(tt.target).errcode(), tt.want) })
	}
	if got := s.Tokens()[appID]; len(got) != 1 || got[0] != appTok {
		t.Errorf("Tokens()[appid] = %d tokens, want only the app token", len(got))
	}
	s.advance(7200 * time.Second)
	wantCode(t, "expired user token", s.get("/sns/auth?"+q("access_token", o.AccessToken)).errcode(), wechat.CodeTokenExpired)
}

func TestMediaGet(t *testing.T) {
	s := newSim(t, wechatsim.Options{})
	tok := s.classic(appID, appSecret)
	media := func(id string) answer { return s.get("/cgi-bin/media/get?" + q("access_token", tok, "media_id", id)) }

	a := media("abc")
	if got, want := a.header.Get("Content-Type"), "image/jpeg"; got != want {
		t.Errorf("Content-Type %q, want %q", got, want)
	}
	if got, want := a.header.Get("Content-Disposition"), `attachment; filename="abc.jpg"`; got != want {
		t.Errorf("Content-Disposition %q, want %q", got, want)
	}
	if got, want := len(a.body), 4096; got != want {
		t.Errorf("default size %d, want %d", got, want)
	}
	if !bytes.HasPrefix(a.body, []byte{0xff, 0xd8, 0xff}) {
		t.Errorf("body does not start like a JPEG: % x", a.body[:4])
	}
	if !bytes.Equal(media("abc").body, a.body) {
		t.Error("same media_id gave different bytes")
	}
	if bytes.Equal(media("abd").body, a.body) {
		t.Error("different media_ids gave the same bytes")
	}
	for _, n := range []int{0, 1, 5, 100000} {
		if got := len(media(fmt.Sprintf("size-%d", n)).body); got != n {
			t.Errorf("size-%d gave %d bytes", n, got)
		}
	}
	resp, err := http.Get(s.url + "/cgi-bin/media/get?" + q("access_token", tok, "media_id", "size-33554432"))
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil || n != 32<<20 || resp.ContentLength != 32<<20 {
		t.Errorf("size-32MiB streamed %d bytes (Content-Length %d), err %v", n, resp.ContentLength, err)
	}
	for _, id := range []string{"", "size-x", "size--1", "size-268435457"} {
		a := media(id)
		wantCode(t, "media_id "+id, a.errcode(), wechat.CodeInvalidMediaID)
		if ct := a.header.Get("Content-Type"); ct != "application/json; encoding=utf-8" {
			t.Errorf("media_id %q: Content-Type %q", id, ct)
		}
	}
	s.Invalidate(appID)
	wantCode(t, "invalidated token", media("abc").errcode(), wechat.CodeInvalidCredential)
}

func TestBusinessEcho(t *testing.T) {
	s := newSim(t, wechatsim.Options{})
	tok := s.classic(miniID, miniSec)
	body := `{"touser":"o1","msgtype":"text","text":{"content":"hi"}}`
	a := s.do("POST", "/cgi-bin/message/custom/send?b=2&"+q("access_token", tok)+"&a=1&a=3", body, "X-Request-Id", "req-1")
	var e struct {
		Errcode int    `json:"errcode"`
		Errmsg  string `json:"errmsg"`
		Echo    struct {
			AppID      string              `json:"appid"`
			Method     string              `json:"method"`
			Path       string              `json:"path"`
			Query      map[string][]string `json:"query"`
			BodySHA256 string              `json:"body_sha256"`
			BodyLen    int64               `json:"body_len"`
			RequestID  string              `json:"request_id"`
		} `json:"echo"`
	}
	a.decode(t, &e)
	sum := sha256.Sum256([]byte(body))
	if e.Errcode != 0 || e.Errmsg != "ok" {
		t.Errorf("errcode %d errmsg %q", e.Errcode, e.Errmsg)
	}
	if got := fmt.Sprint(e.Echo.Query); got != "map[a:[1 3] b:[2]]" {
		t.Errorf("query = %s, want a:[1 3] b:[2] without access_token", got)
	}
	for _, c := range []struct{ name, got, want string }{
		{"appid", e.Echo.AppID, miniID},
		{"method", e.Echo.Method, "POST"},
		{"path", e.Echo.Path, "/cgi-bin/message/custom/send"},
		{"body_sha256", e.Echo.BodySHA256, hex.EncodeToString(sum[:])},
		{"body_len", strconv.FormatInt(e.Echo.BodyLen, 10), strconv.Itoa(len(body))},
		{"request_id", e.Echo.RequestID, "req-1"},
	} {
		if c.got != c.want {
			t.Errorf("echo.%s = %q, want %q", c.name, c.got, c.want)
		}
	}
	odd := []string{`q"uote`, `back\slash`, "ctl\x01\n", "中文", "&<>"}
	a = s.get("/cgi-bin/x?" + q("access_token", tok, "v", odd[0], "v", odd[1], "v", odd[2], "v", odd[3], "v", odd[4], "键", "值"))
	e.Echo.Query = nil
	a.decode(t, &e)
	if got, want := fmt.Sprint(e.Echo.Query), fmt.Sprint(map[string][]string{"v": odd, "键": {"值"}}); got != want {
		t.Errorf("query with odd characters = %s, want %s", got, want)
	}
	a = s.do("DELETE", "/any/path?"+q("access_token", tok), "")
	if !bytes.Contains(a.body, []byte(`"method":"DELETE"`)) || !bytes.Contains(a.body, []byte(`"query":{}`)) ||
		!bytes.Contains(a.body, []byte(`"request_id":""`)) || !bytes.Contains(a.body, []byte(`"body_len":0`)) {
		t.Errorf("DELETE echo = %s", a.body)
	}
}

func TestAPIQuotas(t *testing.T) {
	const limited, daily = "/cgi-bin/message/custom/send", "/wxa/msg_sec_check"
	s := newSim(t, wechatsim.Options{Quotas: map[string]wechatsim.Quota{limited: {PerMinute: 2}, daily: {PerDay: 3}}})
	tok := s.classic(appID, appSecret)
	other := s.classic(miniID, miniSec)
	call := func(path, tok string) int { return s.do("POST", path+"?"+q("access_token", tok), "").errcode() }

	wantCode(t, "call 1", call(limited, tok), 0)
	wantCode(t, "invalid token does not count", call(limited, "x"), wechat.CodeInvalidToken)
	wantCode(t, "call 2", call(limited, tok), 0)
	wantCode(t, "call 3 in the minute", call(limited, tok), wechat.CodeMinuteQuota)
	wantCode(t, "another app", call(limited, other), 0)
	wantCode(t, "an unlimited path", call("/cgi-bin/other", tok), 0)
	s.advance(59 * time.Second)
	wantCode(t, "59s later, same minute", call(limited, tok), wechat.CodeMinuteQuota)
	s.advance(time.Second)
	wantCode(t, "next minute", call(limited, tok), 0)

	for i := range 3 {
		wantCode(t, fmt.Sprint("daily call ", i+1), call(daily, tok), 0)
	}
	wantCode(t, "daily call 4", call(daily, tok), wechat.CodeDailyQuota)
	s.advanceTo(time.Date(2025, 3, 10, 23, 59, 59, 0, start.Location()))
	tok = s.classic(appID, appSecret)
	wantCode(t, "23:59:59 Shanghai", call(daily, tok), wechat.CodeDailyQuota)
	s.advance(time.Second)
	wantCode(t, "00:00 Shanghai", call(daily, tok), 0)
}
