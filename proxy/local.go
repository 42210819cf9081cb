package proxy

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/wxproxy/wxproxy/token"
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
	if !key.mayUseApp(app) {
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

// ticketAnswer is WeChat's answer shape of the ticket endpoints.
type ticketAnswer struct {
	ErrCode   int    `json:"errcode"`
	ErrMsg    string `json:"errmsg"`
	Ticket    string `json:"ticket"`
	ExpiresIn int64  `json:"expires_in"`
}

// answerTicket answers an SDK's ticket request locally from the app's held
// ticket (fetched on first demand and held from then on), so that every
// caller signs with the one shared ticket and none fetches its own:
// getticket?type=jsapi|wx_card for WeChat apps, get_jsapi_ticket and
// ticket/get?type=agent_config for WeCom. The answer has WeChat's shape,
// with the ticket's remaining lifetime as expires_in. Tickets are not
// secrets (pages need them); the token that fetched them never leaves.
func (p *Proxy) answerTicket(r *request, app *App, key *CallerKey) error {
	app, err := p.localApp(r, app, key)
	if err != nil {
		return err
	}
	if !r.ctx.IsGet() {
		return &Error{Kind: KindBadRequest, Msg: "ticket endpoints take GET"}
	}
	typ, err := requestedTicket(r.api, queryValue(r.query, "type"), app.Kind == KindWeCom)
	if err != nil {
		return err
	}
	t, err := p.ticket(app, typ)
	if err != nil {
		return err
	}
	r.hasCode = true
	writeLocal(r, ticketAnswer{ErrMsg: "ok", Ticket: t.Value, ExpiresIn: max(int64(t.ExpiresAt.Sub(p.now())/time.Second), 1)})
	return nil
}

// localApp settles the app of a local answer other than a token's: the
// routed one, else default_app; the caller's key must allow it.
func (p *Proxy) localApp(r *request, app *App, key *CallerKey) (*App, error) {
	if app == nil {
		if app = p.def; app == nil {
			return nil, errNoApp
		}
	}
	if !key.mayUseApp(app) {
		return nil, &Error{Kind: KindForbidden, Msg: "your caller key may not use app " + app.Name}
	}
	r.app, r.local = app, true
	return app, nil
}

// requestedTicket maps a ticket endpoint (its API key) and type parameter
// to the ticket type, for an app of the WeCom side or not.
func requestedTicket(api, typ string, wecom bool) (token.TicketType, error) {
	switch {
	case api == "/cgi-bin/ticket/getticket" && !wecom && (typ == "jsapi" || typ == ""):
		return token.TicketJSAPI, nil
	case api == "/cgi-bin/ticket/getticket" && !wecom && typ == "wx_card":
		return token.TicketWxCard, nil
	case api == "/cgi-bin/get_jsapi_ticket" && wecom:
		return token.TicketCorpJSAPI, nil
	case api == "/cgi-bin/ticket/get" && wecom && typ == "agent_config":
		return token.TicketAgentConfig, nil
	case wecom:
		return "", &Error{Kind: KindBadRequest, Msg: "unknown ticket request for a WeCom app: use GET /cgi-bin/get_jsapi_ticket or /cgi-bin/ticket/get?type=agent_config"}
	}
	return "", &Error{Kind: KindBadRequest, Msg: "unknown ticket request: use GET /cgi-bin/ticket/getticket?type=jsapi or type=wx_card"}
}

// ticket returns a valid ticket of typ for app.
func (p *Proxy) ticket(app *App, typ token.TicketType) (*token.Token, error) {
	if app.Tickets == nil {
		return nil, &Error{Kind: KindBadRequest, Msg: "app " + app.Name + " holds no tickets"}
	}
	t, err := app.Tickets.Get(context.Background(), typ)
	switch {
	case errors.Is(err, token.ErrUnknownTicketType):
		return nil, &Error{Kind: KindBadRequest, Msg: "app " + app.Name + " has no " + string(typ) + " ticket", Err: err}
	case err != nil && app.plat != nil:
		return nil, p.platformError(app, err) // 61023, no component ticket, or none
	case err != nil:
		return nil, &Error{Kind: KindTokenUnavailable, Msg: "no " + string(typ) + " ticket for app " + app.Name + " (fetching it fails; see the wxproxy log)", Err: err}
	}
	return t, nil
}

// writeLocal sends v as a local JSON answer that no cache may keep.
func writeLocal(r *request, v any) {
	r.ctx.Response.Header.SetContentType(jsonContentType)
	r.ctx.Response.Header.Set("Cache-Control", "no-store")
	writeJSON(r.ctx.Response.BodyWriter(), v)
}

// maxPageURL bounds the url of a JS-SDK config request.
const maxPageURL = 2048

// jssdkConfig is the answer of GET /wxproxy/jssdk/config: what wx.config
// takes (WeChat: appId; WeCom: corpId), and with agent=1 what
// wx.agentConfig takes.
type jssdkConfig struct {
	AppID       string       `json:"appId,omitempty"`
	CorpID      string       `json:"corpId,omitempty"`
	Timestamp   int64        `json:"timestamp"`
	NonceStr    string       `json:"nonceStr"`
	Signature   string       `json:"signature"`
	AgentConfig *agentConfig `json:"agentConfig,omitempty"`
}

type agentConfig struct {
	CorpID    string `json:"corpId"`
	AgentID   int64  `json:"agentId"`
	Timestamp int64  `json:"timestamp"`
	NonceStr  string `json:"nonceStr"`
	Signature string `json:"signature"`
}

// answerJSSDKConfig answers GET /wxproxy/jssdk/config?url=URL[&app=NAME][&agent=1]
// with a signed JS-SDK config for the page at URL, made with the app's held
// ticket (WECHAT.md: sha1 of jsapi_ticket, noncestr, timestamp and the URL
// without its fragment). The app is app=, else the routed one, else
// default_app; callers' keys apply to it as to any API.
func (p *Proxy) answerJSSDKConfig(r *request, app *App, key *CallerKey) error {
	if !r.ctx.IsGet() {
		return &Error{Kind: KindBadRequest, Msg: "/wxproxy/jssdk/config takes GET"}
	}
	if name, ok := rawQueryValue(r.query, "app"); ok {
		named, err := p.lookupApp(name) // an app, or a platform's merchant {p}@{appid}
		switch {
		case err != nil:
			return err
		case named == nil:
			return &Error{Kind: KindUnknownApp, Msg: "app= names no configured app"}
		case app != nil && app != named:
			return &Error{Kind: KindBadRequest, Msg: "app= names another app than the request's prefix or X-WXProxy-App"}
		}
		app = named
	}
	app, err := p.localApp(r, app, key)
	if err != nil {
		return err
	}
	raw, _ := rawQueryValue(r.query, "url")
	page, err := checkPageURL(raw)
	if err != nil {
		return &Error{Kind: KindBadRequest, Msg: "url: " + err.Error()}
	}
	agent, _ := rawQueryValue(r.query, "agent")
	wecom := app.Kind == KindWeCom
	switch {
	case agent != "" && agent != "0" && agent != "1":
		return &Error{Kind: KindBadRequest, Msg: "agent must be 1 or 0"}
	case agent == "1" && !wecom:
		return &Error{Kind: KindBadRequest, Msg: "agent=1 is for WeCom apps (wx.agentConfig)"}
	case agent == "1" && app.AgentID == 0:
		return &Error{Kind: KindBadRequest, Msg: "app " + app.Name + " has no agent_id configured (needed for wx.agentConfig)"}
	}
	typ := token.TicketJSAPI
	if wecom {
		typ = token.TicketCorpJSAPI
	}
	t, err := p.ticket(app, typ)
	if err != nil {
		return err
	}
	now := p.now().Unix()
	cfg := jssdkConfig{Timestamp: now, NonceStr: nonceStr()}
	cfg.Signature = wechat.JSSDKSignature(t.Value, cfg.NonceStr, now, page)
	if wecom {
		cfg.CorpID = app.AppID
	} else {
		cfg.AppID = app.AppID
	}
	if agent == "1" {
		at, err := p.ticket(app, token.TicketAgentConfig)
		if err != nil {
			return err
		}
		ac := &agentConfig{CorpID: app.AppID, AgentID: app.AgentID, Timestamp: now, NonceStr: nonceStr()}
		ac.Signature = wechat.JSSDKSignature(at.Value, ac.NonceStr, now, page)
		cfg.AgentConfig = ac
	}
	writeLocal(r, cfg)
	return nil
}

// checkPageURL returns the URL a JS-SDK page is signed for: raw without
// its fragment, once raw is an absolute http(s) URL of at most maxPageURL
// bytes with a host, no credentials and no control characters or spaces.
func checkPageURL(raw string) (string, error) {
	switch {
	case raw == "":
		return "", errors.New("required: the page's URL (location.href), percent-encoded")
	case len(raw) > maxPageURL:
		return "", errors.New("longer than " + strconv.Itoa(maxPageURL) + " bytes")
	case strings.ContainsFunc(raw, func(c rune) bool { return c <= ' ' || c == 0x7f }):
		return "", errors.New("must not contain spaces or control characters")
	}
	page, _, _ := strings.Cut(raw, "#")
	u, err := url.Parse(page)
	switch {
	case err != nil:
		return "", errors.New("not a valid URL")
	case u.Scheme != "http" && u.Scheme != "https", !strings.HasPrefix(page, u.Scheme+"://"):
		return "", errors.New("must be an absolute http:// or https:// URL")
	case u.Host == "" || u.Opaque != "":
		return "", errors.New("must name a host")
	case u.User != nil:
		return "", errors.New("must not contain credentials")
	}
	return page, nil
}

// rawQueryValue returns the unescaped first value of key in rawQuery and
// whether the key is present; a value that does not unescape is "".
func rawQueryValue(rawQuery, key string) (string, bool) {
	for rawQuery != "" {
		var part string
		part, rawQuery, _ = strings.Cut(rawQuery, "&")
		name, value, _ := strings.Cut(part, "=")
		if name != key {
			continue
		}
		v, err := url.QueryUnescape(value)
		if err != nil {
			return "", true
		}
		return v, true
	}
	return "", false
}

// nonceAlphabet is what a nonceStr is made of.
const nonceAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

// nonceStr returns 16 random characters of nonceAlphabet.
func nonceStr() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	for i := range b {
		b[i] = nonceAlphabet[int(b[i])%len(nonceAlphabet)]
	}
	return string(b[:])
}
