package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/url"
	"strings"
	"sync"

	"github.com/wxproxy/wxproxy/wechat"
)

// Platform is a third-party platform behind the proxy (SPEC §12): its
// component app on /{Name}/... and its merchants on /{Name}@{appid}/...
//
// A WeCom suite (Kind PlatformWeComSuite, SPEC §13) has the same shape:
// ComponentAppID is its suite id, Component its suite_access_token,
// Merchants its corps (/{Name}@{corpid}/...), and Provider, if set, the
// provider token for provider APIs.
type Platform struct {
	Name           string
	Kind           string // PlatformOpen ("") or PlatformWeComSuite
	ComponentAppID string
	Secret         string // keys the placeholders; never sent upstream by the proxy
	Upstream       *url.URL
	Component      TokenSource // the component token
	Merchants      Merchants
	// Quotas, if set, returns the limiter of one merchant (counted per
	// merchant); it is asked once per merchant.
	Quotas  func(appid string) Quotas
	Breaker *Breaker // nil = none; shared by the component and its merchants

	// WeCom suites only.
	Provider       TokenSource // the provider token; nil = none configured
	ProviderCorpID string
	// PermanentCode exchanges an auth code (get_permanent_code), keeps
	// the corp's credentials and returns what may be shown of them.
	PermanentCode func(ctx context.Context, code string) (SuiteInstallation, error)
}

// Merchants is what the proxy needs of a platform's merchants.
type Merchants interface {
	// Merchant returns the token holder of a merchant the platform holds
	// an authorization of; an error otherwise.
	Merchant(ctx context.Context, appid string) (TokenSource, error)
	// QueryAuth exchanges an authorization code (api_query_auth), keeps
	// the merchant's credentials and returns what may be shown of them.
	QueryAuth(ctx context.Context, code string) (Authorization, error)
}

// MerchantTickets is implemented by the TokenSource of a merchant that
// holds tickets: its jsapi and wx_card tickets are then answered locally
// (SPEC §12, as for apps in §11).
type MerchantTickets interface {
	Tickets() Tickets
}

// Authorization is what api_query_auth answers, minus the credentials.
type Authorization struct {
	AppID     string
	ExpiresIn int64
	FuncInfo  json.RawMessage
}

// platform is the proxy's state of one Platform.
type platform struct {
	cfg       Platform
	component *App
	provider  *App   // WeCom suites with a provider token; else nil
	phKey     []byte // merchants' placeholder keys derive from it

	mu        sync.RWMutex
	merchants map[string]*App // bounded by the merchants the platform holds
}

// initPlatforms registers the platforms; their names share the app
// namespace.
func (p *Proxy) initPlatforms(ps []Platform) error {
	p.platforms = make(map[string]*platform, len(ps))
	p.byComponent = make(map[string]*platform, len(ps))
	p.byProvider = make(map[string]*platform)
	for _, cfg := range ps {
		if cfg.Name == "" || cfg.Component == nil || cfg.Merchants == nil || cfg.Upstream == nil || strings.Contains(cfg.Name, "@") {
			return errors.New("proxy: a platform needs a name (without @), a component token, merchants and an upstream")
		}
		if p.apps[cfg.Name] != nil || p.platforms[cfg.Name] != nil {
			return errors.New("proxy: platform " + cfg.Name + " has the name of an app or another platform")
		}
		suite := cfg.Kind == PlatformWeComSuite
		if suite && cfg.PermanentCode == nil {
			return errors.New("proxy: suite " + cfg.Name + " needs PermanentCode")
		}
		kind := KindComponent
		if suite {
			kind = KindSuite
		}
		comp := &App{Name: cfg.Name, Kind: kind, AppID: cfg.ComponentAppID, Upstream: cfg.Upstream,
			Tokens: cfg.Component, Breaker: cfg.Breaker}
		comp.phKey = placeholderKey(cfg.Name, cfg.ComponentAppID, cfg.Secret)
		up, err := p.client.upstream(cfg.Upstream)
		if err != nil {
			return errors.New("proxy: platform " + cfg.Name + ": " + err.Error())
		}
		comp.up = up
		pl := &platform{cfg: cfg, component: comp, phKey: comp.phKey, merchants: map[string]*App{}}
		comp.plat = pl
		if suite && cfg.Provider != nil {
			pl.provider = &App{Name: cfg.Name, Kind: KindProvider, AppID: cfg.ProviderCorpID, Upstream: cfg.Upstream,
				Tokens: cfg.Provider, Breaker: cfg.Breaker, plat: pl, up: up, phKey: comp.phKey}
			p.byProvider[cfg.ProviderCorpID] = pl
		}
		p.platforms[cfg.Name] = pl
		p.byComponent[cfg.ComponentAppID] = pl
	}
	return nil
}

// App kinds of platform apps.
const (
	KindComponent  = "component"  // a platform's component app: /{p}/...
	KindAuthorizer = "authorizer" // a merchant: /{p}@{appid}/...
)

// platformApp returns the app a platform name stands for: "p" is the
// component, "p@appid" a merchant. ok is false when name names no
// platform at all.
func (p *Proxy) platformApp(ctx context.Context, name string) (app *App, ok bool, err error) {
	pname, appid, merchant := strings.Cut(name, "@")
	pl := p.platforms[pname]
	if pl == nil {
		return nil, false, nil
	}
	if !merchant {
		return pl.component, true, nil
	}
	ts, merr := pl.cfg.Merchants.Merchant(ctx, appid)
	if merr != nil {
		pl.mu.Lock()
		delete(pl.merchants, appid) // dropped (unauthorized push): forget its app too
		pl.mu.Unlock()
		msg := "platform " + pname + " holds no authorization of this merchant (it must authorize the platform, or be imported on the admin API)"
		if pl.cfg.Kind == PlatformWeComSuite {
			msg = "suite " + pname + " holds no permanent code of this corp (it must install the suite, or be imported on the admin API)"
		}
		return nil, true, &Error{Kind: KindUnknownApp, Msg: msg}
	}
	pl.mu.RLock()
	a := pl.merchants[appid]
	pl.mu.RUnlock()
	if a != nil && a.Tokens == ts {
		return a, true, nil
	}
	kind := KindAuthorizer
	if pl.cfg.Kind == PlatformWeComSuite {
		kind = KindCorp
	}
	a = &App{Name: pname + "@" + appid, Kind: kind, AppID: appid, Upstream: pl.cfg.Upstream,
		Tokens: ts, Breaker: pl.cfg.Breaker, plat: pl, up: pl.component.up}
	if th, ok := ts.(MerchantTickets); ok {
		a.Tickets = th.Tickets()
	}
	a.phKey = placeholderKey(a.Name, appid, string(pl.phKey))
	if pl.cfg.Quotas != nil {
		a.Quotas = pl.cfg.Quotas(appid)
	}
	pl.mu.Lock()
	if cur := pl.merchants[appid]; cur != nil && cur.Tokens == ts {
		a = cur // another request made it first
	} else {
		pl.merchants[appid] = a
	}
	pl.mu.Unlock()
	return a, true, nil
}

// lookupApp returns the app or platform app named name, for routing by
// prefix, header and placeholder; nil when none (err says why for a
// platform name that resolves to nothing).
func (p *Proxy) lookupApp(name string) (*App, error) {
	if a := p.apps[name]; a != nil {
		return a, nil
	}
	if len(p.platforms) == 0 {
		return nil, nil
	}
	a, _, err := p.platformApp(context.Background(), name)
	return a, err
}

// componentParam is the query parameter under which a component API
// takes the component token (SPEC §12).
func componentParam(api string) string {
	switch {
	case strings.HasPrefix(api, "/cgi-bin/component/"), strings.HasPrefix(api, "/sns/component/"),
		strings.HasPrefix(api, "/sns/oauth2/component/"):
		return "component_access_token"
	}
	return "access_token"
}

// Component API paths answered or treated specially.
const (
	apiComponentToken  = "/cgi-bin/component/api_component_token"
	apiAuthorizerToken = "/cgi-bin/component/api_authorizer_token"
	apiQueryAuth       = "/cgi-bin/component/api_query_auth"
	apiStartPush       = "/cgi-bin/component/api_start_push_ticket"
)

// servePlatformLocal answers the component endpoints an SDK uses to
// obtain credentials, locally and with placeholders; it reports whether it
// answered. app is the component app or nil (then found by the
// component_appid of the body, for api_component_token).
func (p *Proxy) servePlatformLocal(r *request, app *App, key *CallerKey) (bool, error) {
	if app != nil && app.Kind == KindSuite || app == nil && isSuiteTokenAPI(r.api) {
		return p.serveSuiteLocal(r, app, key)
	}
	switch r.api {
	case apiComponentToken, apiAuthorizerToken, apiQueryAuth:
	default:
		return false, nil
	}
	var body struct {
		ComponentAppID  string `json:"component_appid"`
		AuthorizerAppID string `json:"authorizer_appid"`
		Code            string `json:"authorization_code"`
	}
	var in io.Reader = &r.body.cb
	if !r.body.cb.armed {
		in = eofReader{}
	}
	if err := json.NewDecoder(io.LimitReader(in, 64<<10)).Decode(&body); err != nil {
		if cf := r.callerFault(); cf != nil {
			return true, cf
		}
		return true, &Error{Kind: KindBadRequest, Msg: "component endpoints need a JSON body", Err: err}
	}
	if app == nil {
		pl := p.byComponent[body.ComponentAppID]
		if pl == nil {
			return true, &Error{Kind: KindUnknownApp, Msg: "no platform has this component_appid"}
		}
		app = pl.component
	}
	pl := app.plat
	if !key.mayUse(pl.cfg.Name) {
		return true, &Error{Kind: KindForbidden, Msg: "your caller key may not use platform " + pl.cfg.Name}
	}
	r.app, r.local = app, true
	ctx := context.Background()
	switch r.api {
	case apiComponentToken:
		p.answerLocal(r, map[string]any{"component_access_token": app.Placeholder(), "expires_in": placeholderTTL})
	case apiAuthorizerToken:
		m, _, err := p.platformApp(ctx, pl.cfg.Name+"@"+body.AuthorizerAppID)
		if err != nil || m == nil {
			return true, &Error{Kind: KindUnknownApp, Msg: "platform " + pl.cfg.Name + " holds no authorization of this merchant (the caller's refresh token is ignored: import merchants on the admin API)"}
		}
		p.answerLocal(r, map[string]any{"authorizer_access_token": m.Placeholder(), "expires_in": placeholderTTL,
			"authorizer_refresh_token": refreshPlaceholder})
	case apiQueryAuth:
		if body.Code == "" || len(body.Code) > 1024 {
			return true, &Error{Kind: KindBadRequest, Msg: "api_query_auth needs authorization_code"}
		}
		// Answered here, but each call is an exchange with WeChat: the
		// caller's limit applies as to a forwarded call.
		if err := p.checkLimits(ctx, r, key); err != nil {
			return true, err
		}
		auth, err := pl.cfg.Merchants.QueryAuth(ctx, body.Code)
		var api *wechat.APIError
		if errors.As(err, &api) && api.Code != wechat.CodeRefreshTokenInvalid && api.Code != wechat.CodeComponentTicketInvalid && api.Code != wechat.CodeComponentTicketExpired {
			// WeChat refused the code: its answer, as an SDK expects it.
			p.answerLocal(r, wechat.Response{ErrCode: api.Code, ErrMsg: api.Msg})
			r.errcode, r.hasCode = api.Code, true
			return true, nil
		}
		if err != nil {
			return true, p.platformError(app, err)
		}
		m, _, err := p.platformApp(ctx, pl.cfg.Name+"@"+auth.AppID)
		info := map[string]any{"authorizer_appid": auth.AppID, "func_info": auth.FuncInfo}
		if err == nil && m != nil && auth.ExpiresIn > 0 {
			info["authorizer_access_token"] = m.Placeholder()
			info["expires_in"] = placeholderTTL
			info["authorizer_refresh_token"] = refreshPlaceholder
		}
		if auth.FuncInfo == nil {
			delete(info, "func_info")
		}
		p.answerLocal(r, map[string]any{"authorization_info": info})
	}
	return true, nil
}

// refreshPlaceholder stands for a merchant's refresh token in answers:
// wxproxy holds the real one and ignores what callers send back.
const refreshPlaceholder = "wxp.refresh_token.held-by-wxproxy"

// answerLocal writes a local JSON answer. It may carry WeChat's text (an
// errmsg, func_info), so it passes the scrubber and the refresh-token mask
// like a forwarded answer.
func (p *Proxy) answerLocal(r *request, v any) {
	r.ctx.Response.Header.SetContentType(jsonContentType)
	var b bytes.Buffer
	writeJSON(&b, v)
	out, n := p.held.set.Scrub(b.Bytes())
	out, m := maskRefreshTokens(out)
	out, k := maskPermanentCodes(out)
	r.scrubbed = r.scrubbed || n > 0 || m > 0 || k > 0
	_, _ = r.ctx.Response.BodyWriter().Write(out)
}

// platformError maps what a platform's token holders return to the
// caller's error: a merchant that must authorize again (61023), a
// platform without a ticket (61005/61006), or no token.
func (p *Proxy) platformError(app *App, err error) error {
	var api *wechat.APIError
	if errors.As(err, &api) {
		switch api.Code {
		case wechat.CodeRefreshTokenInvalid:
			if app.Kind == KindCorp {
				return &Error{Kind: KindAuthorizerUnauthorized, Msg: "corp " + app.AppID + " must install the suite again (its permanent code is no longer valid)", Err: err}
			}
			return &Error{Kind: KindAuthorizerUnauthorized, Msg: "merchant " + app.AppID + " must authorize the platform again", Err: err}
		case wechat.CodeComponentTicketInvalid, wechat.CodeComponentTicketExpired:
			msg := "the platform has no valid component_verify_ticket yet; check its callback URL or POST /admin/platforms/{p}/start-push"
			if app.plat != nil && app.plat.cfg.Kind == PlatformWeComSuite {
				msg = "the suite has no valid suite_ticket yet; check its callback URL in the WeCom provider console (a ticket can be pushed by hand there)"
			}
			return &Error{Kind: KindTicketMissing, Msg: msg, Err: err}
		}
	}
	var pe *Error
	if errors.As(err, &pe) {
		return pe
	}
	return &Error{Kind: KindTokenUnavailable, Msg: "no token for " + app.Name + " (fetching it fails; see the wxproxy log)", Err: err}
}

// HoldPlatformToken registers a platform's token for scrubbing: appid ""
// is the component token, else a merchant's. It is replaced in answers by
// a placeholder of its own holder. Only each holder's last two tokens are
// kept (the current one and the one in its 5-minute overlap).
func (p *Proxy) HoldPlatformToken(platformName, appid, value string) {
	pl := p.platforms[platformName]
	if pl == nil || value == "" {
		return
	}
	name, key, keep := pl.cfg.Name, pl.phKey, keepTokens
	if appid != "" {
		name = platformName + "@" + appid
		key, keep = placeholderKey(name, appid, string(pl.phKey)), 2
	}
	p.holdToken(name, value, mintPlaceholder(name, key), keep)
}

// HoldSecret registers a secret (a refresh token, a platform secret) for
// scrubbing: it is replaced by "***" wherever it appears.
func (p *Proxy) HoldSecret(value string) {
	if value != "" {
		p.held.set.Add(value, secretMask)
	}
}
