package wechatsim

import (
	"crypto/subtle"
	"encoding/json"
	"io"
	"net/http"
	"time"

	"github.com/wxproxy/wxproxy/wechat"
)

// Stable token limits on forced refreshes, as documented by WeChat.
const (
	forcedPerDay  = 20
	forcedSpacing = int64(30 * time.Second)
)

// maxControlBody bounds the small JSON bodies the simulator parses itself.
const maxControlBody = 64 << 10

// tokenAnswer is the success answer of /cgi-bin/token and stable_token: it
// has no errcode member at all.
type tokenAnswer struct {
	AccessToken string `json:"access_token"`
	ExpiresIn   int64  `json:"expires_in"`
}

// wechatApp returns the official or mini program app with appid, or nil.
func (st *state) wechatApp(appid string) *appState {
	if a := st.apps[appid]; a != nil && a.cfg.kind != KindWeCom {
		return a
	}
	return nil
}

// weComApp returns the WeCom corp with corpid, or nil.
func (st *state) weComApp(corpid string) *appState {
	if a := st.apps[corpid]; a != nil && a.cfg.kind == KindWeCom {
		return a
	}
	return nil
}

// hasSecret compares in constant time, as a real credential check should.
func (c *appConfig) hasSecret(secret string) bool {
	ok := 0
	for _, s := range c.secrets {
		ok |= subtle.ConstantTimeCompare([]byte(s), []byte(secret))
	}
	return ok == 1
}

// checkCredentials answers the errcode of an appid+secret pair for a WeChat
// endpoint: 41002, 41004, 40013, 40125 or 0.
func checkCredentials(a *appState, appid, secret string) int {
	switch {
	case appid == "":
		return wechat.CodeAppIDMissing
	case secret == "":
		return wechat.CodeSecretMissing
	case a == nil:
		return wechat.CodeInvalidAppID
	case !a.cfg.hasSecret(secret):
		return wechat.CodeInvalidSecret
	}
	return 0
}

// classicToken answers GET /cgi-bin/token: every success mints a new token and
// supersedes the previous one (5-minute overlap).
func (s *Server) classicToken(st *state, w *call, r *http.Request) {
	q := r.URL.Query()
	appid := q.Get("appid")
	a := st.wechatApp(appid)
	w.app = a
	if a != nil {
		a.fetchClassic.Add(1)
	}
	code := checkCredentials(a, appid, q.Get("secret"))
	if q.Get("grant_type") != "client_credential" {
		code = wechat.CodeInvalidGrantType
	}
	now := st.now().UnixNano()
	if code == 0 {
		code = s.takeQuota(a, PathToken, now)
	}
	if code != 0 {
		st.fail(w, styleWeChat, code)
		return
	}
	a.mu.Lock()
	supersede(a, kindClassic, a.classic, now)
	a.classic = st.mint(a, kindClassic, now, s.ttl, "")
	tok := a.classic.token
	a.mu.Unlock()
	writeJSON(w, http.StatusOK, tokenAnswer{AccessToken: tok, ExpiresIn: int64(s.ttl / time.Second)})
}

// stableRequest is the JSON body of POST /cgi-bin/stable_token.
type stableRequest struct {
	GrantType    string `json:"grant_type"`
	AppID        string `json:"appid"`
	Secret       string `json:"secret"`
	ForceRefresh bool   `json:"force_refresh"`
}

// stableToken answers POST /cgi-bin/stable_token. Normal mode returns the
// current token until it has min(5 minutes, ttl/2) or less left, then rotates
// without killing the old one. A forced refresh supersedes the current token
// like a classic fetch, budgeted per day and spaced; over budget it falls back
// to normal mode without an error.
func (s *Server) stableToken(st *state, w *call, r *http.Request) {
	if r.Method != http.MethodPost {
		st.fail(w, styleWeChat, wechat.CodeRequirePOST)
		return
	}
	var req stableRequest
	body, err := io.ReadAll(io.LimitReader(w.body(), maxControlBody))
	if err == nil {
		err = json.Unmarshal(body, &req)
	}
	if err != nil {
		// Form-encoded or otherwise non-JSON bodies read as "no appid".
		st.fail(w, styleWeChat, wechat.CodeAppIDMissing)
		return
	}
	a := st.wechatApp(req.AppID)
	w.app = a
	switch {
	case a == nil:
	case req.ForceRefresh:
		a.fetchForced.Add(1)
	default:
		a.fetchStable.Add(1)
	}
	code := checkCredentials(a, req.AppID, req.Secret)
	if req.GrantType != "client_credential" {
		code = wechat.CodeInvalidGrantType
	}
	now := st.now().UnixNano()
	if code == 0 {
		code = s.takeQuota(a, PathStableToken, now)
	}
	if code != 0 {
		st.fail(w, styleWeChat, code)
		return
	}
	rotateBelow := min(overlap, int64(s.ttl/2))
	a.mu.Lock()
	if req.ForceRefresh && a.mayForce(now) {
		supersede(a, kindStable, a.stable, now)
		a.stable = st.mint(a, kindStable, now, s.ttl, "")
		a.lastForced = now
		a.forcedN++
	} else if cur := a.stable; cur == nil || cur.status(now) != 0 || cur.expires-now <= rotateBelow {
		a.stable = st.mint(a, kindStable, now, s.ttl, "")
	}
	tok, expiresIn := a.stable.token, a.stable.remaining(now)
	a.mu.Unlock()
	writeJSON(w, http.StatusOK, tokenAnswer{AccessToken: tok, ExpiresIn: expiresIn})
}

// mayForce reports whether a forced stable refresh at now is within the
// daily budget and spacing. The caller holds a.mu.
func (a *appState) mayForce(now int64) bool {
	if day := shanghaiDay(now); a.forcedDay != day {
		a.forcedDay, a.forcedN = day, 0
	}
	return a.forcedN < forcedPerDay && (a.lastForced == 0 || now-a.lastForced >= forcedSpacing)
}

// weComToken answers WeCom's GET /cgi-bin/gettoken: one token per corpid and
// corpsecret, the same one while it is valid.
func (s *Server) weComToken(st *state, w *call, r *http.Request) {
	q := r.URL.Query()
	corpid, secret := q.Get("corpid"), q.Get("corpsecret")
	a := st.weComApp(corpid)
	w.app = a
	if a != nil {
		a.fetchWeCom.Add(1)
	}
	var code int
	switch {
	case corpid == "":
		code = wechat.CodeAppIDMissing
	case secret == "":
		code = wechat.CodeSecretMissing
	case a == nil:
		code = wechat.CodeInvalidAppID
	case !a.cfg.hasSecret(secret):
		code = wechat.CodeInvalidCredential
	}
	now := st.now().UnixNano()
	if code == 0 {
		code = s.takeQuota(a, PathGetToken, now)
	}
	if code != 0 {
		st.fail(w, styleWeCom, code)
		return
	}
	a.mu.Lock()
	cur := a.weCom[secret]
	if cur == nil || cur.status(now) != 0 || cur.remaining(now) < 1 {
		cur = st.mintOwned(a, kindWeCom, now, s.ttl, "", secret)
		a.weCom[secret] = cur
	}
	tok, expiresIn := cur.token, cur.remaining(now)
	a.mu.Unlock()
	writeJSON(w, http.StatusOK, wechat.TokenResponse{
		Response:    wechat.Response{ErrCode: 0, ErrMsg: "ok"},
		AccessToken: tok,
		ExpiresIn:   expiresIn,
	})
}
