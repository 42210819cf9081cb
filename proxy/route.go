package proxy

import (
	"net/http"
	"strings"
)

// route finds the app a request names and sets c.path to the path to
// forward. In order: a path prefix /{app}/ naming a configured app (removed
// before forwarding), the X-WXProxy-App header, a placeholder access_token
// issued by this proxy. It returns a nil app when the request names none;
// the caller then falls back to appid (token endpoints) or default_app.
func (p *Proxy) route(r *http.Request, c *call) (*App, error) {
	c.path, c.rawPath = r.URL.Path, r.URL.RawPath
	if name, rest, ok := cutApp(c.path); ok {
		if app := p.apps[name]; app != nil {
			c.path = rest
			if c.rawPath != "" {
				if _, rawRest, ok := cutApp(c.rawPath); ok {
					c.rawPath = rawRest
				}
			}
			return app, nil
		}
	}
	if name := r.Header.Get(headerApp); name != "" {
		app := p.apps[name]
		if app == nil {
			return nil, &Error{Kind: KindUnknownApp, Msg: "X-WXProxy-App names no configured app"}
		}
		return app, nil
	}
	if name, ok := placeholderApp(queryValue(r.URL.RawQuery, "access_token")); ok {
		app := p.apps[name]
		if app == nil {
			return nil, &Error{Kind: KindUnknownApp, Msg: "the access_token was issued for an app that is no longer configured; fetch a new one"}
		}
		return app, nil
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
)

func classifyPath(path string) pathKind {
	switch path {
	case "/cgi-bin/token":
		return pathToken
	case "/cgi-bin/stable_token":
		return pathStableToken
	case "/cgi-bin/gettoken":
		return pathGetToken
	case "/cgi-bin/clear_quota", "/cgi-bin/clear_quota/v2", "/cgi-bin/openapi/quota/clear":
		return pathBlocked
	case "/sns/jscode2session", "/sns/oauth2/access_token":
		return pathCredentials
	}
	if strings.HasPrefix(path, "/sns/") {
		return pathSNS
	}
	return pathAPI
}
