package proxy

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/wxproxy/wxproxy/token"
)

type routeTokens struct{ t *token.Token }

func (f routeTokens) Current() *token.Token                                    { return f.t }
func (f routeTokens) Get(context.Context) (*token.Token, error)                { return f.t, nil }
func (f routeTokens) Invalidate(context.Context, string) (*token.Token, error) { return f.t, nil }

// routeMerchants holds merchant wxm1 of the platform it is given to.
type routeMerchants struct{ ts TokenSource }

func (m routeMerchants) Merchant(_ context.Context, appid string) (TokenSource, error) {
	if appid == "wxm1" {
		return m.ts, nil
	}
	return nil, errors.New("unknown merchant")
}
func (routeMerchants) QueryAuth(context.Context, string) (Authorization, error) {
	return Authorization{}, errors.New("no")
}

// FuzzPlatformRoute routes arbitrary request targets and X-WXProxy-App
// values with an app, two platforms and one merchant each: nothing
// panics; a request goes to a merchant only when its cleaned path starts
// with that merchant's exact prefix (any ASCII case) or the header names
// it exactly, the prefix is removed from what is forwarded, and nothing
// but the configured names is ever routed to.
func FuzzPlatformRoute(f *testing.F) {
	for _, s := range []struct{ target, header string }{
		{"/acme@wxm1/cgi-bin/user/get", ""},
		{"/ACME@WXM1/cgi-bin/user/get", ""},
		{"/acme%40wxm1/cgi-bin/user/get", ""},
		{"/acme@wxm1/../beta@wxm1/x", ""},
		{"//acme@wxm1//x", ""},
		{"/acme@/x", ""},
		{"/acme@wxm1@x/y", ""},
		{"/acme/cgi-bin/component/api_get_authorizer_list", ""},
		{"/cgi-bin/user/get", "acme@wxm1"},
		{"/cgi-bin/user/get", "ACME@wxm1"},
		{"/cgi-bin/user/get", "beta@wxm1"},
		{"/x?access_token=wxp.acme@wxm1.AAAAAAAAAAAAAAAAAAAAAAAAAAAA", ""},
		{"/x?component_access_token=wxp.acme.AAAAAAAAAAAAAAAAAAAAAAAAAAAA", ""},
		{"/main@wxm1/x", ""},
	} {
		f.Add(s.target, s.header)
	}
	up, _ := url.Parse("http://127.0.0.1:1")
	tok := routeTokens{&token.Token{Value: "T", ExpiresAt: time.Now().Add(time.Hour)}}
	p, err := New(Options{
		Apps: []*App{{Name: "main", Kind: KindOfficial, AppID: "wxmain", Secret: "s", Upstream: up, Tokens: tok}},
		Platforms: []Platform{
			{Name: "acme", ComponentAppID: "wxc1", Secret: "s1", Upstream: up, Component: tok, Merchants: routeMerchants{tok}},
			{Name: "beta", ComponentAppID: "wxc2", Secret: "s2", Upstream: up, Component: tok, Merchants: routeMerchants{tok}},
		},
	})
	if err != nil {
		f.Fatal(err)
	}
	names := map[string]bool{"main": true, "acme": true, "beta": true, "acme@wxm1": true, "beta@wxm1": true}
	f.Fuzz(func(t *testing.T, target, header string) {
		var ctx fasthttp.RequestCtx
		ctx.Request.Header.SetRequestURI(target)
		if header != "" {
			ctx.Request.Header.Set(headerApp, header)
		}
		tg, err := cleanTarget(&ctx.Request.Header)
		if err != nil {
			return
		}
		r := &request{path: tg.path, api: apiKey(tg.path), query: tg.query}
		before := r.api
		app, err := p.route(&ctx, r)
		if err != nil || app == nil {
			return
		}
		if !names[app.Name] {
			t.Fatalf("%q (header %q) routed to %q", target, header, app.Name)
		}
		if !strings.HasSuffix(tg.path, r.path) || !strings.HasSuffix(before, r.api) {
			t.Fatalf("%q: forwarded path %q is not the end of %q", target, r.path, tg.path)
		}
		if r.api != before { // routed by prefix
			if want := "/" + strings.ToLower(app.Name) + "/"; !strings.HasPrefix(before, want) || before[len(want)-1:] != r.api {
				t.Fatalf("%q: routed by prefix to %q but api %q → %q", target, app.Name, before, r.api)
			}
			return
		}
		if app.Kind == KindAuthorizer && string(ctx.Request.Header.Peek(headerApp)) != app.Name && !strings.Contains(tg.query, "wxp.") {
			t.Fatalf("%q (header %q): routed to merchant %q with neither a prefix, the header nor a placeholder", target, header, app.Name)
		}
	})
}
