package proxy

import (
	"net/url"
	"strings"
	"testing"

	"github.com/wxproxy/wxproxy/token"
)

func TestInjectToken(t *testing.T) {
	tests := []struct{ name, in, tok, want string }{
		{"empty", "", "T", "access_token=T"},
		{"keeps order", "b=2&a=1", "T", "access_token=T&b=2&a=1"},
		{"strips callers", "access_token=OLD&a=1&access_token=OLD2", "T", "access_token=T&a=1"},
		{"strips escaped name", "access%5Ftoken=OLD&a=1", "T", "access_token=T&a=1"},
		{"keeps encoding", "q=a%20b&x=%E4%B8%AD", "T", "access_token=T&q=a%20b&x=%E4%B8%AD"},
		{"escapes token", "a=1", "t+/=", "access_token=t%2B%2F%3D&a=1"},
		{"empty parts", "&&a=1&", "T", "access_token=T&a=1"},
		{"similar name kept", "access_token2=x", "T", "access_token=T&access_token2=x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := injectToken(tt.in, tt.tok); got != tt.want {
				t.Errorf("injectToken(%q, %q) = %q, want %q", tt.in, tt.tok, got, tt.want)
			}
		})
	}
}

func TestSetCredentials(t *testing.T) {
	got := setCredentials("appid=fake&js_code=C&secret=leak&grant_type=authorization_code", "wx1", "s&1")
	if want := "appid=wx1&secret=s%261&js_code=C&grant_type=authorization_code"; got != want {
		t.Errorf("setCredentials = %q, want %q", got, want)
	}
}

func TestQueryValue(t *testing.T) {
	q := "a=1&access_token=wxp.main.abc&b=%20x"
	if got, want := queryValue(q, "access_token"), "wxp.main.abc"; got != want {
		t.Errorf("queryValue = %q, want %q", got, want)
	}
	if got, want := queryValue(q, "b"), " x"; got != want {
		t.Errorf("queryValue(b) = %q, want %q", got, want)
	}
	if got := queryValue(q, "zzz"); got != "" {
		t.Errorf("queryValue(missing) = %q", got)
	}
}

func TestClassifyPath(t *testing.T) {
	tests := []struct {
		path string
		want pathKind
	}{
		{"/cgi-bin/token", pathToken},
		{"/cgi-bin/stable_token", pathStableToken},
		{"/cgi-bin/gettoken", pathGetToken},
		{"/cgi-bin/clear_quota", pathBlocked},
		{"/cgi-bin/clear_quota/v2", pathBlocked},
		{"/cgi-bin/openapi/quota/clear", pathBlocked},
		{"/sns/jscode2session", pathCredentials},
		{"/sns/oauth2/access_token", pathCredentials},
		{"/sns/userinfo", pathSNS},
		{"/sns/auth", pathSNS},
		{"/cgi-bin/message/custom/send", pathAPI},
		{"/cgi-bin/token/extra", pathAPI},
	}
	for _, tt := range tests {
		if got := classifyPath(tt.path); got != tt.want {
			t.Errorf("classifyPath(%q) = %d, want %d", tt.path, got, tt.want)
		}
	}
}

func TestPlaceholderApp(t *testing.T) {
	up := &url.URL{Scheme: "http", Host: "127.0.0.1:1"}
	tokens, err := token.New(token.Options{Mode: token.Classic, Fetcher: &token.HTTPFetcher{}})
	if err != nil {
		t.Fatal(err)
	}
	main := &App{Name: "main", AppID: "wx1", Secret: "secret-1", Upstream: up, Tokens: tokens}
	other := &App{Name: "other", AppID: "wx2", Secret: "secret-2", Upstream: up, Tokens: tokens}
	p, err := New(Options{Apps: []*App{main, other}})
	if err != nil {
		t.Fatal(err)
	}
	good := main.Placeholder()
	forged := "wxp.other." + strings.TrimPrefix(good, "wxp.main.") // main's nonce and MAC under another name
	flipped := good[:len(good)-1] + string(good[len(good)-1]^1)
	tests := []struct {
		tok   string
		app   *App
		looks bool
	}{
		{good, main, true},
		{good, main, true}, // again, from the cache of the last one verified
		{other.Placeholder(), other, true},
		{forged, nil, true},
		{flipped, nil, true},
		{"wxp.main.abc", nil, true},
		{"wxp.main.", nil, true},
		{"wxp.gone." + strings.TrimPrefix(good, "wxp.main."), nil, true},
		{"wxp..abc", nil, true},
		{"86_realtoken", nil, false},
		{"", nil, false},
	}
	for _, tt := range tests {
		if app, looks := p.placeholderApp(tt.tok); app != tt.app || looks != tt.looks {
			t.Errorf("placeholderApp(%q) = %v, %v; want %v, %v", tt.tok, app, looks, tt.app, tt.looks)
		}
	}
}

func TestCutApp(t *testing.T) {
	tests := []struct{ in, name, rest string }{
		{"/main/cgi-bin/x", "main", "/cgi-bin/x"},
		{"/main/", "main", "/"},
		{"/main", "", ""},
		{"/", "", ""},
	}
	for _, tt := range tests {
		name, rest, _ := cutApp(tt.in)
		if name != tt.name || rest != tt.rest {
			t.Errorf("cutApp(%q) = %q, %q; want %q, %q", tt.in, name, rest, tt.name, tt.rest)
		}
	}
}

func BenchmarkInjectToken(b *testing.B) {
	tok := "86_S2eQx9YkQk8WcJ2Vw7_n3fQzV3mX0T4cQ8pL1yR5tU6iO7pA8sD9fG0hJ1kL2zX3cV4bN5mQ6wE7rT8yU9iO0pA1sD2fG3hJ4kL5zX6cV7bN8mQ9wE0rT1yU2iO3pA4sD5fG6hJ7kL8"
	b.ReportAllocs()
	for b.Loop() {
		injectToken("access_token=wxp.main.abcdef&type=jsapi&offset=0", tok)
	}
}
