package proxy_test

import (
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/wxproxy/wxproxy/proxy"
	"github.com/wxproxy/wxproxy/wechat"
)

// TestCallerAPIAllowlist: callers.keys[].apis is decided on the cleaned
// path (SPEC §4, §14): no spelling of a path outside a key's globs (dot
// segments, escaped dots, doubled slashes, case, an app prefix) gets
// through, a dirty spelling of an allowed API is forwarded in its clean
// form, and token endpoints and /wxproxy/jssdk/* are APIs like any other.
func TestCallerAPIAllowlist(t *testing.T) {
	var mu sync.Mutex
	var reached []string
	e := newEnv(t, envOptions{
		simWrap: func(next http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				reached = append(reached, r.URL.Path)
				mu.Unlock()
				next.ServeHTTP(w, r)
			})
		},
		access: proxy.Access{Keys: []proxy.CallerKey{
			{Name: "billing", Key: "billing-key-0123456789", APIs: []string{"/cgi-bin/message/**", "/cgi-bin/token", "/wxproxy/jssdk/*"}},
			{Name: "sender", Key: "sender-key-0123456789", APIs: []string{"/cgi-bin/message/custom/*"}},
		}},
	})
	tests := []struct {
		key, path string
		forwarded string // the path WeChat sees; "" = refused with 403 forbidden
	}{
		{"billing", "/cgi-bin/message/custom/send", "/cgi-bin/message/custom/send"},
		{"billing", "/cgi-bin/message", "/cgi-bin/message"},
		{"billing", "//cgi-bin//message/./custom/send", "/cgi-bin/message/custom/send"},
		{"billing", "/cgi-bin/user/../message/custom/send", "/cgi-bin/message/custom/send"},
		{"billing", "/cgi-bin/user/%2e%2e/message/custom/send", "/cgi-bin/message/custom/send"},
		{"billing", "/main/cgi-bin/message/custom/send", "/cgi-bin/message/custom/send"},
		{"billing", "/cgi-bin/message/custom/send/", "/cgi-bin/message/custom/send/"},
		{"billing", "/cgi-bin/user/get", ""},
		{"billing", "/cgi-bin/message/../user/get", ""},
		{"billing", "/cgi-bin/message/%2e%2e/user/get", ""},
		{"billing", "/cgi-bin/message/%2E%2E/user/get", ""},
		{"billing", "/cgi-bin/message//..//../cgi-bin/user/get", ""},
		{"billing", "/cgi-bin/message/./../user/get", ""},
		{"billing", "/cgi-bin/messages/x", ""},
		{"billing", "/main/cgi-bin/user/get", ""},
		{"billing", "/main/cgi-bin/message/../user/get", ""},
		{"sender", "/cgi-bin/message/custom/send", "/cgi-bin/message/custom/send"},
		{"sender", "/cgi-bin/message/custom/typing/../send", "/cgi-bin/message/custom/send"},
		{"sender", "/cgi-bin/message/template/send", ""},
		{"sender", "/cgi-bin/message/custom/../template/send", ""},
		{"sender", "/cgi-bin/message/custom/send/../../template/send", ""},
	}
	for _, tt := range tests {
		mu.Lock()
		reached = nil
		mu.Unlock()
		a := e.do(t, http.MethodPost, tt.path, []byte("{}"), "X-WXProxy-Key", tt.key+"-key-0123456789")
		mu.Lock()
		got := strings.Join(reached, ",")
		mu.Unlock()
		if tt.forwarded == "" {
			checkError(t, a, 403, wechat.CodeUnauthorized, "forbidden")
			if got != "" {
				t.Errorf("%s %s: refused, yet WeChat saw %s", tt.key, tt.path, got)
			}
			continue
		}
		if a.status != 200 || a.ErrCode != 0 || a.Echo.Path != tt.forwarded || got != tt.forwarded {
			t.Errorf("%s %s: HTTP %d errcode %d, WeChat saw %q (echo %q); want 200 and %s",
				tt.key, tt.path, a.status, a.ErrCode, got, a.Echo.Path, tt.forwarded)
		}
	}

	// Token endpoints and the JS-SDK signature endpoint are APIs too.
	token := "/cgi-bin/token?grant_type=client_credential&appid=" + mainAppID + "&secret=x"
	if a := e.get(t, token, "X-WXProxy-Key", "billing-key-0123456789"); a.status != 200 || a.AccessToken == "" {
		t.Errorf("billing, token endpoint on its list: HTTP %d %s", a.status, a.body)
	}
	for _, path := range []string{token, "/cgi-bin/stable_token", "/wxproxy/jssdk/signature?url=https%3A%2F%2Fexample.invalid%2F"} {
		checkError(t, e.get(t, path, "X-WXProxy-Key", "sender-key-0123456789"), 403, wechat.CodeUnauthorized, "forbidden")
	}
	if a := e.get(t, "/wxproxy/jssdk/signature?url=https%3A%2F%2Fexample.invalid%2F", "X-WXProxy-Key", "billing-key-0123456789"); a.header.Get("X-WXProxy-Error") == "forbidden" {
		t.Errorf("billing, jssdk on its list: refused as forbidden: %s", a.body)
	}
}
