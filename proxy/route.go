package proxy

import (
	"strings"

	"github.com/valyala/fasthttp"
)

// route finds the app a request names and strips an app prefix from
// r.path and r.api. In order: a path prefix /{app}/ naming a configured app
// (compared without ASCII case; removed before forwarding), the
// X-WXProxy-App header, a genuine placeholder access_token issued by this
// proxy. It returns a nil app when the request names none; the caller then
// falls back to appid (token endpoints) or default_app.
func (p *Proxy) route(ctx *fasthttp.RequestCtx, r *request) (*App, error) {
	if name, rest, ok := cutApp(r.api); ok {
		app, err := p.lookupApp(name)
		if err != nil {
			return nil, err
		}
		if app != nil {
			r.api = rest
			r.path = r.path[len(name)+1:]
			return app, nil
		}
	}
	if name := ctx.Request.Header.Peek(headerApp); len(name) > 0 {
		app, err := p.lookupApp(string(name))
		if err != nil {
			return nil, err
		}
		if app == nil {
			return nil, &Error{Kind: KindUnknownApp, Msg: "X-WXProxy-App names no configured app"}
		}
		return app, nil
	}
	for _, param := range [...]string{"access_token", "component_access_token", "suite_access_token", "provider_access_token"} {
		if param != "access_token" && len(p.platforms) == 0 {
			break
		}
		if tok := queryValue(r.query, param); tok != "" {
			if app, ok := p.placeholderApp(tok); ok {
				if app == nil {
					return nil, &Error{Kind: KindUnknownApp, Msg: "the " + param + " is not a placeholder this wxproxy issued (or its app is no longer configured); fetch a new one"}
				}
				return app, nil
			}
		}
	}
	return nil, nil
}

// cutApp splits "/name/rest" into "name" and "/rest".
func cutApp(path string) (name, rest string, ok bool) {
	if len(path) < 2 || path[0] != '/' {
		return "", "", false
	}
	i := strings.IndexByte(path[1:], '/')
	if i < 0 {
		return "", "", false
	}
	return path[1 : i+1], path[i+1:], true
}

// pathKind is how the proxy treats a WeChat path.
type pathKind uint8

const (
	pathAPI         pathKind = iota // a business API: inject the token
	pathToken                       // GET /cgi-bin/token: answered locally
	pathStableToken                 // POST /cgi-bin/stable_token: answered locally
	pathGetToken                    // GET /cgi-bin/gettoken (WeCom): answered locally
	pathBlocked                     // quota clearing: refused
	pathCredentials                 // appid+secret set by the proxy, no token
	pathSNS                         // a user's OAuth token: untouched
	pathTicket                      // JS-SDK, card and agent tickets: answered locally
	pathJSSDKConfig                 // GET /wxproxy/jssdk/config: answered locally
	pathReserved                    // anything else under /wxproxy/: refused
	pathNoToken                     // takes a secret in its body and no token: forwarded untouched
)

// classifyPath classifies an API key (see apiKey: lower-case, no trailing
// "/"), so no spelling of a path escapes its class.
func classifyPath(api string) pathKind {
	switch api {
	case "/cgi-bin/token":
		return pathToken
	case "/cgi-bin/stable_token":
		return pathStableToken
	case "/cgi-bin/gettoken":
		return pathGetToken
	case "/cgi-bin/clear_quota", "/cgi-bin/clear_quota/v2", "/cgi-bin/openapi/quota/clear",
		"/cgi-bin/component/clear_quota/v2":
		return pathBlocked
	case "/sns/jscode2session", "/sns/oauth2/access_token":
		return pathCredentials
	case "/cgi-bin/ticket/getticket", "/cgi-bin/get_jsapi_ticket", "/cgi-bin/ticket/get":
		return pathTicket
	case "/wxproxy/jssdk/config":
		return pathJSSDKConfig
	case apiComponentToken, apiStartPush:
		// On a component's route api_component_token is answered
		// locally before this; on any other, no token goes to either.
		return pathNoToken
	}
	if strings.HasPrefix(api, "/sns/") {
		return pathSNS
	}
	if api == "/wxproxy" || strings.HasPrefix(api, "/wxproxy/") {
		return pathReserved
	}
	return pathAPI
}
