package config

import (
	"strings"
	"testing"
	"time"
)

const acmeKey = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"

// onePlatform is a valid platform with its callback listener.
const onePlatform = `
platforms:
  - name: acme
    kind: open_platform
    component_appid: wxc0ffee0000000001
    secret: compsecret
    token: msgtoken
    encoding_aes_key: ` + acmeKey + `
callbacks:
  listen: ":8443"
`

func TestPlatformDefaults(t *testing.T) {
	c := mustParse(t, onePlatform, nil)
	if got, want := len(c.Platforms), 1; got != want {
		t.Fatalf("platforms = %d, want %d", got, want)
	}
	p := c.Platforms[0]
	for _, tc := range []struct {
		name      string
		got, want any
	}{
		{"kind", p.Kind, KindOpenPlatform},
		{"upstream", p.Upstream, defaultUpstream},
		{"refresh_before", p.RefreshBefore, 10 * time.Minute},
		{"authorizer_idle", p.AuthorizerIdle, 24 * time.Hour},
		{"callbacks.listen", c.Callbacks.Listen, ":8443"},
		{"callbacks.max_body_bytes", c.Callbacks.MaxBodyBytes, int64(64 * kib)},
		{"quotas.reset_timezone", p.Quotas.ResetTimezone, "Asia/Shanghai"},
		{"breaker.open_timeout", p.Breaker.OpenTimeout, 30 * time.Second},
	} {
		if tc.got != tc.want {
			t.Errorf("%s = %v, want %v", tc.name, tc.got, tc.want)
		}
	}
	if got, ok := c.Platform("acme"); !ok || got.ComponentAppID != "wxc0ffee0000000001" {
		t.Errorf("Platform(acme) = %v, %v", got, ok)
	}
	// A platform alone is a valid configuration.
	only := strings.Replace(onePlatform, "platforms:", "apps: []\nplatforms:", 1)
	if _, err := Parse([]byte(only), nil, t.TempDir()); err != nil {
		t.Errorf("platform without apps: %v", err)
	}
}

func TestPlatformErrors(t *testing.T) {
	tests := []struct {
		name, src, want string
	}{
		{"kind missing", strings.Replace(onePlatform, "    kind: open_platform\n", "", 1), `platforms[0].kind: required (open_platform or wecom_suite)`},
		{"kind unknown", strings.Replace(onePlatform, "kind: open_platform", "kind: wecom_suit", 1), `platforms[0].kind: must be one of open_platform, wecom_suite (got "wecom_suit")`},
		{"name of an app", strings.Replace(onePlatform, "name: acme", "name: main", 1), `platforms[0].name: already the name of apps[0]; apps and platforms share one namespace`},
		{"name reserved", strings.Replace(onePlatform, "name: acme", "name: callback", 1), `platforms[0].name: "callback" is reserved`},
		{"name with @", strings.Replace(onePlatform, "name: acme", "name: a@b", 1), `platforms[0].name: must match`},
		{"component_appid missing", strings.Replace(onePlatform, "    component_appid: wxc0ffee0000000001\n", "", 1), `platforms[0].component_appid: required`},
		{"secret missing", strings.Replace(onePlatform, "    secret: compsecret\n", "", 1), `platforms[0].secret: required (or secret_file)`},
		{"token missing", strings.Replace(onePlatform, "    token: msgtoken\n", "", 1), `platforms[0].token: required (or token_file)`},
		{"aes key short", strings.Replace(onePlatform, acmeKey, "abc", 1), `platforms[0].encoding_aes_key: must be the 43-character EncodingAESKey`},
		{"previous key bad", strings.Replace(onePlatform, "    token: msgtoken\n", "    token: msgtoken\n    previous_encoding_aes_key: x!\n", 1), `platforms[0].previous_encoding_aes_key: must be a 43-character EncodingAESKey`},
		{"unknown key", strings.Replace(onePlatform, "    token: msgtoken\n", "    token: msgtoken\n    tokn: x\n", 1), `platforms[0].tokn: unknown key`},
		{"authorizer_idle zero", strings.Replace(onePlatform, "    token: msgtoken\n", "    token: msgtoken\n    authorizer_idle: 0s\n", 1), `platforms[0].authorizer_idle: must be > 0`},
		{"upstream bad", strings.Replace(onePlatform, "    token: msgtoken\n", "    token: msgtoken\n    upstream: ftp://x\n", 1), `platforms[0].upstream: must be an absolute http:// or https:// URL`},
		{"quota bad", strings.Replace(onePlatform, "    token: msgtoken\n", "    token: msgtoken\n    quotas: {default: {per_minute: -1}}\n", 1), `platforms[0].quotas.default.per_minute: must be >= 0`},
		{"callbacks missing", strings.Replace(onePlatform, "callbacks:\n  listen: \":8443\"\n", "", 1), `callbacks.listen: required with platforms`},
		{"callbacks on the caller port", strings.Replace(onePlatform, `":8443"`, `":8080"`, 1), `callbacks.listen: must differ from listen (":8080")`},
		{"callbacks body too big", onePlatform + "  max_body_bytes: 2MiB\n", `callbacks.max_body_bytes: must be > 0 and <= 1MiB`},
		{"duplicate", onePlatform[:strings.Index(onePlatform, "callbacks:")] + strings.TrimPrefix(onePlatform[:strings.Index(onePlatform, "callbacks:")], "\nplatforms:\n") + "callbacks:\n  listen: \":8443\"\n",
			`platforms[1].name: duplicate of platforms[0]`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parse(t, tc.src, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v\nwant it to contain %q", err, tc.want)
			}
			if err != nil && (strings.Contains(err.Error(), "compsecret") || strings.Contains(err.Error(), acmeKey)) {
				t.Errorf("error shows a secret: %v", err)
			}
		})
	}
}

func TestPlatformRedacted(t *testing.T) {
	src := strings.Replace(onePlatform, "    token: msgtoken\n", "    token: msgtoken\n    previous_encoding_aes_key: kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR\n", 1)
	out := checkRedacted(t, mustParse(t, src, nil))
	if !strings.Contains(out, "component_appid: wxc0ffee0000000001") || !strings.Contains(out, "listen: :8443") {
		t.Errorf("redacted output lacks the platform:\n%s", out)
	}
}

// Caller keys may be limited to a platform (its component and every
// merchant) or to one merchant of it, {platform}@{authorizer_appid}.
func TestCallerKeyAppsNamePlatforms(t *testing.T) {
	keys := func(apps string) string {
		return onePlatform + "callers: {keys: [{name: a, key: k, apps: " + apps + "}]}\n"
	}
	c := mustParse(t, keys("[main, acme, acme@wxmerchant00000001]"), nil)
	if got := c.Callers.Keys[0].Apps; strings.Join(got, ",") != "main,acme,acme@wxmerchant00000001" {
		t.Errorf("apps = %v", got)
	}
	for _, tc := range []struct{ apps, want string }{
		{"[nope]", `callers.keys[0].apps[0]: no app or platform named "nope"`},
		{"[other@wxmerchant00000001]", `callers.keys[0].apps[0]: no platform named "other"`},
		{`["acme@"]`, `callers.keys[0].apps[0]: "acme@": want {platform}@{authorizer_appid}`},
		{`["acme@wx 1"]`, `callers.keys[0].apps[0]: "acme@wx 1": want {platform}@{authorizer_appid}`},
		{`["acme@a@b"]`, `callers.keys[0].apps[0]: "acme@a@b": want {platform}@{authorizer_appid}`},
	} {
		_, err := parse(t, keys(tc.apps), nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("apps %s: %v, want %s", tc.apps, err, tc.want)
		}
	}
}
