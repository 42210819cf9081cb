package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"strings"

	"github.com/wxproxy/wxproxy/wechat"
)

// Platform kinds.
const (
	PlatformOpen       = ""            // a WeChat Open Platform third-party platform (§12)
	PlatformWeComSuite = "wecom_suite" // a WeCom service provider's suite (§13)
)

// App kinds of a WeCom suite's apps.
const (
	KindSuite    = "suite"    // /{p}/...: suite APIs, with the suite_access_token
	KindProvider = "provider" // /{p}/... provider APIs, with the provider_access_token
	KindCorp     = "corp"     // /{p}@{corpid}/...: as the corp, with its access_token
)

// SuiteInstallation is what get_permanent_code answered, minus the
// credentials: Answer is WeCom's answer without access_token and
// permanent_code; HasToken says it carried the corp's first token.
type SuiteInstallation struct {
	CorpID   string
	HasToken bool
	Answer   map[string]json.RawMessage
}

// The suite API paths answered or treated specially.
const (
	apiSuiteToken      = "/cgi-bin/service/get_suite_token"
	apiProviderToken   = "/cgi-bin/service/get_provider_token"
	apiCorpToken       = "/cgi-bin/service/get_corp_token"
	apiPermanentCode   = "/cgi-bin/service/get_permanent_code"
	apiPermanentCodeV2 = "/cgi-bin/service/v2/get_permanent_code"
)

// permanentCodePlaceholder stands for a corp's permanent code in answers:
// wxproxy holds the real one and ignores what callers send back.
const permanentCodePlaceholder = "wxp.permanent_code.held-by-wxproxy"

// isSuiteTokenAPI reports whether api is a suite credential endpoint that
// may name its suite in the body rather than by prefix.
func isSuiteTokenAPI(api string) bool {
	return api == apiSuiteToken || api == apiProviderToken
}

// providerAPIs are the provider APIs (服务商接口) that take the provider
// token as provider_access_token; every other API on /{suite}/... takes
// the suite token as suite_access_token.
var providerAPIs = map[string]bool{
	"/cgi-bin/service/get_login_info":          true,
	"/cgi-bin/service/get_register_code":       true,
	"/cgi-bin/service/get_register_info":       true,
	"/cgi-bin/service/contact/id_translate":    true,
	"/cgi-bin/service/contact/sort":            true,
	"/cgi-bin/service/batch/getresult":         true,
	"/cgi-bin/service/media/upload":            true,
	"/cgi-bin/service/corpid_to_opencorpid":    true,
	"/cgi-bin/service/get_customized_auth_url": true,
	"/cgi-bin/service/get_order":               true,
	"/cgi-bin/service/get_order_list":          true,
}

// isProviderAPI reports whether api takes the provider token: the listed
// /cgi-bin/service/ provider APIs and the account licence APIs
// (/cgi-bin/license/*).
func isProviderAPI(api string) bool {
	return providerAPIs[api] || strings.HasPrefix(api, "/cgi-bin/license/")
}

// suiteMode decides how a request on /{suite}/... is forwarded: provider
// APIs with the provider token as provider_access_token, every other API
// with the suite token as suite_access_token. A suite has no AppSecret
// endpoint.
func suiteMode(r *request, pl *platform) (*App, error) {
	switch r.mode {
	case modeCredentials:
		return nil, &Error{Kind: KindBlockedPath, Msg: "a suite has no AppSecret here; call the suite APIs under /{suite}/cgi-bin/service/..."}
	case modeInject:
	default:
		return pl.component, nil
	}
	if isProviderAPI(r.api) {
		if pl.provider == nil {
			return nil, &Error{Kind: KindTokenUnavailable, Msg: "this is a provider API: configure provider_corpid and provider_secret for suite " + pl.cfg.Name}
		}
		r.param = "provider_access_token"
		return pl.provider, nil
	}
	r.param = "suite_access_token"
	return pl.component, nil
}

// serveSuiteLocal answers the suite endpoints an SDK uses to obtain
// credentials, locally and with placeholders: get_suite_token,
// get_provider_token, get_corp_token; get_permanent_code (and v2) is
// exchanged by the suite, which keeps the permanent code. It reports
// whether it answered. app is the suite or nil (then found by the body's
// suite_id or corpid).
func (p *Proxy) serveSuiteLocal(r *request, app *App, key *CallerKey) (bool, error) {
	switch r.api {
	case apiSuiteToken, apiProviderToken, apiCorpToken, apiPermanentCode, apiPermanentCodeV2:
	default:
		return false, nil
	}
	var body struct {
		SuiteID  string `json:"suite_id"`
		CorpID   string `json:"corpid"`
		AuthCorp string `json:"auth_corpid"`
		AuthCode string `json:"auth_code"`
	}
	var in io.Reader = &r.body.cb
	if !r.body.cb.armed {
		in = eofReader{}
	}
	if err := json.NewDecoder(io.LimitReader(in, 64<<10)).Decode(&body); err != nil {
		if cf := r.callerFault(); cf != nil {
			return true, cf
		}
		return true, &Error{Kind: KindBadRequest, Msg: "suite endpoints need a JSON body", Err: err}
	}
	var pl *platform
	switch {
	case app != nil:
		pl = app.plat
	case r.api == apiSuiteToken:
		pl = p.byComponent[body.SuiteID]
	default:
		pl = p.byProvider[body.CorpID]
	}
	if pl == nil || pl.cfg.Kind != PlatformWeComSuite {
		return true, &Error{Kind: KindUnknownApp, Msg: "no suite has this suite_id (or provider corpid); use the path prefix /{suite}/"}
	}
	if !key.mayUse(pl.cfg.Name) {
		return true, &Error{Kind: KindForbidden, Msg: "your caller key may not use platform " + pl.cfg.Name}
	}
	r.app, r.local, r.hasCode = pl.component, true, true
	ok := map[string]any{"errcode": 0, "errmsg": "ok"}
	ctx := context.Background()
	switch r.api {
	case apiSuiteToken:
		ok["suite_access_token"], ok["expires_in"] = pl.component.Placeholder(), placeholderTTL
	case apiProviderToken:
		if pl.provider == nil {
			return true, &Error{Kind: KindTokenUnavailable, Msg: "suite " + pl.cfg.Name + " has no provider token: configure provider_corpid and provider_secret"}
		}
		r.app = pl.provider
		ok["provider_access_token"], ok["expires_in"] = pl.provider.Placeholder(), placeholderTTL
	case apiCorpToken:
		corp, _, err := p.platformApp(ctx, pl.cfg.Name+"@"+body.AuthCorp)
		if err != nil || corp == nil {
			return true, &Error{Kind: KindUnknownApp, Msg: "suite " + pl.cfg.Name + " holds no permanent code of this corp (the caller's permanent_code is ignored: corps are installed by WeCom's create_auth push or imported on the admin API)"}
		}
		ok["access_token"], ok["expires_in"] = corp.Placeholder(), placeholderTTL
	case apiPermanentCode, apiPermanentCodeV2:
		if body.AuthCode == "" || len(body.AuthCode) > 1024 {
			return true, &Error{Kind: KindBadRequest, Msg: "get_permanent_code needs auth_code"}
		}
		// Answered here, but each call is an exchange with WeCom: the
		// caller's limit applies as to a forwarded call.
		if err := p.checkLimits(ctx, r, key); err != nil {
			return true, err
		}
		inst, err := pl.cfg.PermanentCode(ctx, body.AuthCode)
		var api *wechat.APIError
		if errors.As(err, &api) && api.Code != wechat.CodeRefreshTokenInvalid && api.Code != wechat.CodeComponentTicketInvalid {
			// WeCom refused the code: its answer, as an SDK expects it.
			p.answerLocal(r, wechat.Response{ErrCode: api.Code, ErrMsg: api.Msg})
			r.errcode = api.Code
			return true, nil
		}
		if err != nil {
			return true, p.platformError(pl.component, err)
		}
		for k, v := range inst.Answer {
			if k != "access_token" && k != "permanent_code" && k != "expires_in" {
				ok[k] = v
			}
		}
		ok["errcode"], ok["errmsg"] = 0, "ok"
		ok["permanent_code"] = permanentCodePlaceholder
		if r.api == apiPermanentCode || inst.HasToken {
			if corp, _, err := p.platformApp(ctx, pl.cfg.Name+"@"+inst.CorpID); err == nil && corp != nil {
				ok["access_token"], ok["expires_in"] = corp.Placeholder(), placeholderTTL
			}
		}
	}
	p.answerLocal(r, ok)
	return true, nil
}
