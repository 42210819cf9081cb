package proxy

import (
	"crypto/subtle"
	"encoding/json"
	"io"

	"github.com/valyala/fasthttp"

	"github.com/wxproxy/wxproxy/wechat"
)

// placeholderTTL is the expires_in of placeholder answers. The placeholder
// never stops working; SDKs merely ask again after this.
const placeholderTTL = 7200

// answerToken answers an SDK's token request locally, so that no caller
// can ever fetch (and so invalidate) the shared token. The answer has
// WeChat's shape and carries a placeholder; the real token never leaves
// the proxy through the caller port.
func (p *Proxy) answerToken(r *request, app *App, kind pathKind, key *CallerKey) error {
	if app == nil {
		var err error
		if app, err = p.tokenApp(r, kind); err != nil {
			return err
		}
	}
	if !key.mayUse(app.Name) {
		return &Error{Kind: KindForbidden, Msg: "your caller key may not use app " + app.Name}
	}
	r.app, r.local = app, true
	placeholder := app.Placeholder()
	r.ctx.Response.Header.SetContentType(jsonContentType)
	if kind == pathGetToken {
		writeJSON(r.ctx.Response.BodyWriter(), wechat.TokenResponse{Response: wechat.Response{ErrCode: 0, ErrMsg: "ok"}, AccessToken: placeholder, ExpiresIn: placeholderTTL})
		r.hasCode = true
		return nil
	}
	writeJSON(r.ctx.Response.BodyWriter(), struct {
		AccessToken string `json:"access_token"`
		ExpiresIn   int    `json:"expires_in"`
	}{placeholder, placeholderTTL})
	return nil
}

// tokenApp finds the app of a token request that names none by prefix or
// header: by appid (classic, stable) or corpid (WeCom; for several agents of
// one corp, by the corpsecret, compared in constant time).
func (p *Proxy) tokenApp(r *request, kind pathKind) (*App, error) {
	var id, secret string
	switch kind {
	case pathStableToken:
		var body struct {
			AppID string `json:"appid"`
		}
		var in io.Reader = &r.body.cb
		if !r.body.cb.armed {
			in = eofReader{}
		}
		if err := json.NewDecoder(io.LimitReader(in, 64<<10)).Decode(&body); err != nil {
			if cf := r.callerFault(); cf != nil {
				return nil, cf // too slow, too large or cut off
			}
			return nil, &Error{Kind: KindBadRequest, Msg: "stable_token needs a JSON body with appid", Err: err}
		}
		id = body.AppID
	case pathGetToken:
		id, secret = queryValue(r.query, "corpid"), queryValue(r.query, "corpsecret")
	default:
		id = queryValue(r.query, "appid")
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
	if len(apps) > 1 {
		return p.matchSecret(r.ctx, apps, secret)
	}
	return nil, &Error{Kind: KindUnknownApp, Msg: "invalid appid: no configured app has this appid"}
}

// maxSecretMisses is how many wrong corpsecrets a caller address may send
// a minute before the token endpoint answers it 429 without comparing.
const maxSecretMisses = 10

// matchSecret picks, among WeCom apps sharing a corpid, the one whose
// corpsecret the caller sent, compared in constant time. Wrong guesses are
// throttled per caller address, so the endpoint is no oracle for guessing
// secrets: a blocked address is refused before any comparison.
func (p *Proxy) matchSecret(ctx *fasthttp.RequestCtx, apps []*App, secret string) (*App, error) {
	ip := remoteIP(ctx)
	if blocked, retry := p.misses.blocked(ip); blocked {
		return nil, &Error{Kind: KindRateLimited, Msg: "too many wrong corpsecrets from your address; retry after Retry-After seconds", RetryAfter: retry}
	}
	var found *App
	for _, a := range apps {
		if subtle.ConstantTimeCompare([]byte(a.Secret), []byte(secret)) == 1 {
			found = a
		}
	}
	if found == nil {
		p.misses.miss(ip)
		return nil, &Error{Kind: KindUnknownApp, Msg: "several apps share this corpid and the corpsecret matches none; use the path prefix /{app}/"}
	}
	return found, nil
}

type eofReader struct{}

func (eofReader) Read([]byte) (int, error) { return 0, io.EOF }
