package proxy

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"strings"

	"github.com/wxproxy/wxproxy/wechat"
)

// placeholderPrefix starts every token this proxy hands to SDKs. A later
// request carrying one is routed to its app and gets the real token.
const placeholderPrefix = "wxp."

// placeholderTTL is the expires_in of placeholder answers. The placeholder
// never stops working; SDKs merely ask again after this.
const placeholderTTL = 7200

// answerToken answers an SDK's token request locally, so that no caller
// can ever fetch (and so invalidate) the shared token. The answer has
// WeChat's shape and carries a placeholder; the real token never leaves
// the proxy through the caller port.
func (p *Proxy) answerToken(w http.ResponseWriter, r *http.Request, c *call, app *App, kind pathKind, key *CallerKey) error {
	if app == nil {
		var err error
		if app, err = p.tokenApp(r, kind); err != nil {
			return err
		}
	}
	if !key.mayUse(app.Name) {
		return &Error{Kind: KindForbidden, Msg: "your caller key may not use app " + app.Name}
	}
	c.app, c.local = app, true
	b := make([]byte, 18)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	placeholder := placeholderPrefix + app.Name + "." + base64.RawURLEncoding.EncodeToString(b)
	w.Header().Set("Content-Type", jsonContentType)
	if kind == pathGetToken {
		writeJSON(w, wechat.TokenResponse{Response: wechat.Response{ErrCode: 0, ErrMsg: "ok"}, AccessToken: placeholder, ExpiresIn: placeholderTTL})
		c.hasCode = true
		return nil
	}
	writeJSON(w, struct {
		AccessToken string `json:"access_token"`
		ExpiresIn   int    `json:"expires_in"`
	}{placeholder, placeholderTTL})
	return nil
}

// tokenApp finds the app of a token request that names none by prefix or
// header: by appid (classic, stable) or corpid (WeCom; for several agents of
// one corp, by the corpsecret, compared in constant time).
func (p *Proxy) tokenApp(r *http.Request, kind pathKind) (*App, error) {
	var id, secret string
	switch kind {
	case pathStableToken:
		var body struct {
			AppID string `json:"appid"`
		}
		if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&body); err != nil {
			return nil, &Error{Kind: KindBadRequest, Msg: "stable_token needs a JSON body with appid", Err: err}
		}
		id = body.AppID
	case pathGetToken:
		id, secret = queryValue(r.URL.RawQuery, "corpid"), queryValue(r.URL.RawQuery, "corpsecret")
	default:
		id = queryValue(r.URL.RawQuery, "appid")
	}
	if id == "" {
		if p.def != nil {
			return p.def, nil
		}
		return nil, &Error{Kind: KindUnknownApp, Msg: "token request names no appid and no default_app is set"}
	}
	apps := p.byAppID[id]
	if len(apps) == 1 {
		return apps[0], nil
	}
	for _, a := range apps {
		if subtle.ConstantTimeCompare([]byte(a.Secret), []byte(secret)) == 1 {
			return a, nil
		}
	}
	if len(apps) > 1 {
		return nil, &Error{Kind: KindUnknownApp, Msg: "several apps share this corpid and the corpsecret matches none; use the path prefix /{app}/"}
	}
	return nil, &Error{Kind: KindUnknownApp, Msg: "invalid appid: no configured app has this appid"}
}

// placeholderApp returns the app name inside a placeholder token.
func placeholderApp(tok string) (string, bool) {
	rest, ok := strings.CutPrefix(tok, placeholderPrefix)
	if !ok {
		return "", false
	}
	name, _, ok := strings.Cut(rest, ".")
	if !ok || name == "" {
		return "", false
	}
	return name, true
}
