package proxy_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/wxproxy/wxproxy/proxy"
	"github.com/wxproxy/wxproxy/token"
)

// oneMerchant is a platform's merchants: wx1 only.
type oneMerchant struct{ tok *token.Token }

func (m oneMerchant) Merchant(_ context.Context, appid string) (proxy.TokenSource, error) {
	if appid != "wx1000000000000001" {
		return nil, errors.New("unknown")
	}
	return staticTokens{m.tok}, nil
}

func (oneMerchant) QueryAuth(context.Context, string) (proxy.Authorization, error) {
	return proxy.Authorization{}, errors.New("not here")
}

// An answer that echoes a platform's credentials reaches the caller
// scrubbed: the merchant's and the component's tokens become their
// placeholders, a refresh token and the component secret become ***.
func TestPlatformCredentialsScrubbed(t *testing.T) {
	const (
		compTok  = "86_COMPONENTTOKEN_0123456789abcdef0123456789abcdef"
		merchTok = "86_AUTHORIZERTOKEN_0123456789abcdef0123456789abcdef"
		refresh  = "refreshtoken@@@0123456789abcdef0123456789abcdef"
		secret   = "component-secret-0123456789abcdef"
	)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"errcode":0,"got":"`+r.URL.Query().Get("access_token")+`","component":"`+compTok+`","refresh":"`+refresh+`","secret":"`+secret+`"}`)
	}))
	defer up.Close()
	u, _ := url.Parse(up.URL)
	now := time.Now()
	tok := func(v string) *token.Token {
		return &token.Token{Value: v, ObtainedAt: now, ExpiresAt: now.Add(time.Hour)}
	}
	p, err := proxy.New(proxy.Options{Platforms: []proxy.Platform{{
		Name: "acme", ComponentAppID: "wxc0ffee0000000001", Secret: secret, Upstream: u,
		Component: staticTokens{tok(compTok)}, Merchants: oneMerchant{tok(merchTok)},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	p.HoldPlatformToken("acme", "", compTok)
	p.HoldPlatformToken("acme", "wx1000000000000001", merchTok)
	p.HoldSecret(refresh)
	p.HoldSecret(secret)
	base := serve(t, p)
	resp, err := http.Get(base + "/acme@wx1000000000000001/cgi-bin/user/get")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	body := string(b)
	if resp.StatusCode != 200 {
		t.Fatalf("HTTP %d %s", resp.StatusCode, body)
	}
	for _, secretValue := range []string{compTok, merchTok, refresh, secret} {
		if strings.Contains(body, secretValue) {
			t.Errorf("answer holds a credential: %s", body)
		}
	}
	for _, want := range []string{`"got":"wxp.acme@wx1000000000000001.`, `"component":"wxp.acme.`, `"refresh":"***"`, `"secret":"***"`} {
		if !strings.Contains(body, want) {
			t.Errorf("answer %s lacks %s", body, want)
		}
	}
}
