package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"
)

// mapEnv returns a getenv backed by m.
func mapEnv(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// oneApp is the smallest valid apps section.
const oneApp = `
apps:
  - name: main
    appid: wx0123456789abcdef
    secret: s3cret
`

// parse parses src, appending oneApp unless src has its own top-level apps.
func parse(tb testing.TB, src string, getenv func(string) string) (*Config, error) {
	tb.Helper()
	if !regexp.MustCompile(`(?m)^apps:`).MatchString(src) {
		src += oneApp
	}
	return Parse([]byte(src), getenv, tb.TempDir())
}

// mustParse is parse that fails the test on error.
func mustParse(tb testing.TB, src string, getenv func(string) string) *Config {
	tb.Helper()
	c, err := parse(tb, src, getenv)
	if err != nil {
		tb.Fatalf("Parse:\n%v", err)
	}
	return c
}

// comparable returns a copy of c whose locations are replaced by their names,
// so that two parses of one file compare equal with reflect.DeepEqual.
func comparable(c *Config) *Config {
	cc := *c
	cc.Apps = append([]App(nil), c.Apps...)
	for i := range cc.Apps {
		if loc := cc.Apps[i].Quotas.Location; loc != nil {
			cc.Apps[i].Quotas.Location = time.FixedZone(loc.String(), 0)
		}
	}
	return &cc
}

func TestDefaults(t *testing.T) {
	got := mustParse(t, "", nil)
	shanghai, err := time.LoadLocation("Asia/Shanghai")
	if err != nil {
		t.Fatal(err)
	}
	want := &Config{
		Listen:            ":8080",
		ShutdownTimeout:   15 * time.Second,
		UpstreamTimeout:   10 * time.Second,
		MaxBodyBytes:      10 << 20,
		RetryBodyBytes:    2 << 20,
		MaxBufferedBytes:  256 << 20,
		ReadHeaderTimeout: 10 * time.Second,
		BodyReadTimeout:   30 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		Admin:             Admin{Listen: "127.0.0.1:9090"},
		Log:               Log{Format: LogFormatJSON, Level: LogLevelInfo},
		Store: Store{Kind: StoreMemory, Path: "./wxproxy-tokens.json",
			Redis: Redis{Mode: RedisStandalone, KeyPrefix: "wxproxy:", ReplicasHint: 1, LockLease: 3 * time.Second}},
		Callers: Callers{AllowCIDRs: []netip.Prefix{
			netip.MustParsePrefix("127.0.0.0/8"),
			netip.MustParsePrefix("::1/128"),
			netip.MustParsePrefix("10.0.0.0/8"),
			netip.MustParsePrefix("172.16.0.0/12"),
			netip.MustParsePrefix("192.168.0.0/16"),
		}},
		DefaultApp: "main",
		Apps: []App{{
			Name:          "main",
			Kind:          KindOfficial,
			AppID:         "wx0123456789abcdef",
			Secret:        "s3cret",
			TokenMode:     TokenModeStable,
			Upstream:      "https://api.weixin.qq.com",
			RefreshBefore: 10 * time.Minute,
			TokenWait:     5 * time.Second,
			Quotas: Quotas{
				ResetTimezone:    "Asia/Shanghai",
				Location:         shanghai,
				TokenFetchPerDay: 2000,
				APIs:             map[string]Limit{},
				OnLimit:          OnLimitReject,
				MaxWait:          2 * time.Second,
				RespectUpstream:  true,
			},
			Breaker: Breaker{
				ConsecutiveFailures: 5,
				FailureRatio:        0.5,
				MinRequests:         20,
				Interval:            10 * time.Second,
				OpenTimeout:         30 * time.Second,
				HalfOpenRequests:    1,
			},
		}},
		Callbacks: Callbacks{MaxBodyBytes: 64 * kib, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second},
	}
	if got, want := comparable(got), comparable(want); !reflect.DeepEqual(got, want) {
		t.Errorf("Parse(minimal) =\n%+v\nwant\n%+v", got, want)
	}
}

func TestDefaultsDependingOnOtherKeys(t *testing.T) {
	tests := []struct {
		name  string
		src   string
		check func(*Config) (got, want any)
	}{
		{"wecom upstream", `
apps:
  - {name: corp, kind: wecom, appid: ww1, secret: s}
`, func(c *Config) (any, any) { return c.Apps[0].Upstream, "https://qyapi.weixin.qq.com" }},
		{"wecom has no token mode", `
apps:
  - {name: corp, kind: wecom, appid: ww1, secret: s}
`, func(c *Config) (any, any) { return c.Apps[0].TokenMode, "" }},
		{"miniprogram token mode", `
apps:
  - {name: mini, kind: miniprogram, appid: wx1, secret: s}
`, func(c *Config) (any, any) { return c.Apps[0].TokenMode, TokenModeStable }},
		{"no default app among several", `
apps:
  - {name: a, appid: wx1, secret: s}
  - {name: b, appid: wx2, secret: s}
`, func(c *Config) (any, any) { return c.DefaultApp, "" }},
		{"explicit default app", `
default_app: b
apps:
  - {name: a, appid: wx1, secret: s}
  - {name: b, appid: wx2, secret: s}
`, func(c *Config) (any, any) { return c.DefaultApp, "b" }},
		{"explicitly no default app", `default_app: ""`,
			func(c *Config) (any, any) { return c.DefaultApp, "" }},
		{"null means absent", "listen: ~\nadmin:\nstore: {kind: null}",
			func(c *Config) (any, any) {
				return []string{c.Listen, c.Admin.Listen, c.Store.Kind}, []string{":8080", "127.0.0.1:9090", "memory"}
			}},
		{"retry_body_bytes follows a small max_body_bytes", "max_body_bytes: 1KiB",
			func(c *Config) (any, any) { return c.RetryBodyBytes, int64(1024) }},
		{"upstream loses its trailing slash", `
apps:
  - {name: a, appid: wx1, secret: s, upstream: "http://127.0.0.1:8081/wechat/"}
`, func(c *Config) (any, any) { return c.Apps[0].Upstream, "http://127.0.0.1:8081/wechat" }},
		{"bare IPs become host prefixes", `callers: {allow_cidrs: [10.1.2.3, "::1", 10.9.9.9/8]}`,
			func(c *Config) (any, any) {
				return c.Callers.AllowCIDRs, []netip.Prefix{
					netip.MustParsePrefix("10.1.2.3/32"),
					netip.MustParsePrefix("::1/128"),
					netip.MustParsePrefix("10.0.0.0/8"),
				}
			}},
		{"api limit replaces default as a whole", `
apps:
  - name: a
    appid: wx1
    secret: s
    quotas:
      default: {per_minute: 10, per_day: 100, burst: 5}
      apis: {/cgi-bin/x: {per_minute: 600}}
`, func(c *Config) (any, any) { return c.Apps[0].Quotas.APIs["/cgi-bin/x"], Limit{PerMinute: 600} }},
		{"caller key without apps may use all", `callers: {keys: [{name: a, key: k}]}`,
			func(c *Config) (any, any) { return c.Callers.Keys, []CallerKey{{Name: "a", Key: "k"}} }},
		{"yaml anchors and merge keys", `
apps:
  - name: a
    appid: wx1
    secret: s
    quotas: &q
      default: &lim {per_minute: 60}
  - name: b
    appid: wx2
    secret: s
    quotas:
      <<: *q
      default: {<<: *lim, per_day: 1000}
`, func(c *Config) (any, any) {
			return []Limit{c.Apps[0].Quotas.Default, c.Apps[1].Quotas.Default},
				[]Limit{{PerMinute: 60}, {PerMinute: 60, PerDay: 1000}}
		}},
		{"timezone", `
apps:
  - {name: a, appid: wx1, secret: s, quotas: {reset_timezone: America/Los_Angeles}}
`, func(c *Config) (any, any) { return c.Apps[0].Quotas.Location.String(), "America/Los_Angeles" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, want := tt.check(mustParse(t, tt.src, nil))
			if !reflect.DeepEqual(got, want) {
				t.Errorf("got %v, want %v", got, want)
			}
		})
	}
}

func TestApp(t *testing.T) {
	c := mustParse(t, `
apps:
  - {name: a, appid: wx1, secret: s}
  - {name: b, appid: wx2, secret: s}
`, nil)
	for i, name := range []string{"a", "b"} {
		if app, ok := c.App(name); !ok || app != &c.Apps[i] {
			t.Errorf("App(%q) = %p, %v; want %p, true", name, app, ok, &c.Apps[i])
		}
	}
	if app, ok := c.App("c"); ok || app != nil {
		t.Errorf("App(%q) = %v, %v; want nil, false", "c", app, ok)
	}
}

// exampleEnv returns a value for every variable the example configs use.
func exampleEnv() map[string]string {
	return map[string]string{
		"WXPROXY_ADMIN_TOKEN":   "admin-token-3f9a",
		"BILLING_KEY":           "billing-key-77c1",
		"WX_MAIN_SECRET":        "main-secret-0b2e",
		"HR_SYNC_KEY":           "hr-sync-key-91d0",
		"ALERTING_KEY":          "alerting-key-5e6f",
		"WECOM_CONTACTS_SECRET": "contacts-secret-aa11",
		"WECOM_NOTIFY_SECRET":   "notify-secret-bb22",
		"REDIS_URL":             "redis://:redis-pw-4c2d@redis:6379/0",
		"REDIS_PASSWORD":        "redis-pw-9e1f",
		"SENTINEL_PASSWORD":     "sentinel-pw-2b7c",
		"ACME_COMPONENT_SECRET": "acme-component-secret-5d3c",
		"ACME_MSG_TOKEN":        "acme-msg-token-71aa",
		"ACME_AES_KEY":          "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C",
		"SUITE_SECRET":          "suite-secret-0123456789",
		"SUITE_MSG_TOKEN":       "suitemsgtoken",
		"SUITE_AES_KEY":         "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR",
		"PROVIDER_SECRET":       "provider-secret-0123456789",
	}
}

func TestExampleConfigs(t *testing.T) {
	files, err := filepath.Glob("../configs/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 3 {
		t.Fatalf("found %d example configs, want at least 3", len(files))
	}
	env := exampleEnv()
	optional := map[string]bool{"WXPROXY_STATE_DIR": true, "REDIS_SEED": true} // the configs give these a default
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			getenv := func(k string) string {
				v, ok := env[k]
				if !ok && !optional[k] {
					t.Errorf("%s uses ${%s}; give it a value in exampleEnvVars", file, k)
				}
				return v
			}
			c, err := Load(file, getenv)
			if err != nil {
				t.Fatalf("Load(%s):\n%v", file, err)
			}
			if len(c.Apps) == 0 && len(c.Platforms) == 0 {
				t.Errorf("Load(%s): no apps or platforms", file)
			}
			out := checkRedacted(t, c)
			for _, v := range env {
				if strings.Contains(out, v) {
					t.Errorf("WriteRedacted(%s) prints secret %q:\n%s", file, v, out)
				}
			}
		})
	}
}

// TestExampleConfigContents checks that the examples say what their comments
// promise.
func TestExampleConfigContents(t *testing.T) {
	getenv := mapEnv(exampleEnv())
	full, err := Load("../configs/wxproxy.yaml", getenv)
	if err != nil {
		t.Fatal(err)
	}
	wecom, err := Load("../configs/wecom.yaml", getenv)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		got, want any
	}{
		{"SPEC's per-API quota", full.Apps[0].Quotas.APIs["/cgi-bin/message/custom/send"],
			Limit{PerMinute: 600, PerDay: 500000, Burst: 60}},
		{"SPEC's caller key", full.Callers.Keys, []CallerKey{{Name: "billing", Key: "billing-key-77c1", Apps: []string{"main"}, APIs: []string{"/cgi-bin/message/**"}, PerMinute: 600}}},
		{"SPEC's failover", full.Apps[0].Failover, []string{"https://api2.weixin.qq.com"}},
		{"SPEC's replicas_hint", full.Store.Redis.ReplicasHint, 3},
		{"admin token from the environment", full.Admin.Token, "admin-token-3f9a"},
		{"wecom apps share a corpid", wecom.Apps[0].AppID == wecom.Apps[1].AppID, true},
		{"wecom apps have their own secrets", wecom.Apps[0].Secret != wecom.Apps[1].Secret, true},
		{"wecom upstream", wecom.Apps[1].Upstream, "https://qyapi.weixin.qq.com"},
		{"wecom: no default app", wecom.DefaultApp, ""},
		{"wecom state dir default", wecom.Store.Path, "./wxproxy-tokens.json"},
		{"SPEC's tickets", full.Apps[0].Tickets, []string{TicketJSAPI, TicketWxCard}},
		{"wecom tickets", wecom.Apps[1].Tickets, []string{TicketCorpJSAPI, TicketAgentConfig}},
		{"wecom agent_id", wecom.Apps[1].AgentID, int64(1000002)},
		{"no tickets by default", wecom.Apps[0].Tickets, []string(nil)},
	}
	for _, tt := range tests {
		if !reflect.DeepEqual(tt.got, tt.want) {
			t.Errorf("%s: got %v, want %v", tt.name, tt.got, tt.want)
		}
	}
}

// A Sentinel deployment with passwords in files and TLS with its own CA.
func TestRedisSentinelTLS(t *testing.T) {
	dir := t.TempDir()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{"redis-pw": []byte("srv-pw\n"), "sentinel-pw": []byte("sen-pw\n"),
		"ca.pem": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), "junk.pem": []byte("not a certificate")}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), content, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	base := `store: {kind: redis, redis: {mode: sentinel, addrs: ["s1:26379", "s2:26379"], master_name: m,
  password_file: redis-pw, sentinel_username: sen, sentinel_password_file: sentinel-pw, tls: {ca_file: %s, server_name: redis.internal}}}
apps: [{name: a, appid: wx1, secret: s}]`
	c, err := Parse([]byte(fmt.Sprintf(base, "ca.pem")), nil, dir)
	if err != nil {
		t.Fatal(err)
	}
	r := c.Store.Redis
	if r.Mode != RedisSentinel || r.Password != "srv-pw" || r.SentinelPassword != "sen-pw" || r.SentinelUsername != "sen" ||
		!r.TLS || r.TLSServerName != "redis.internal" || r.TLSCAFile != filepath.Join(dir, "ca.pem") {
		t.Errorf("Redis = %+v", r)
	}
	_, err = Parse([]byte(fmt.Sprintf(base, "junk.pem")), nil, dir)
	if err == nil || !strings.Contains(err.Error(), `store.redis.tls.ca_file: file "`+filepath.Join(dir, "junk.pem")+`" holds no PEM certificate`) {
		t.Errorf("a CA file without a certificate: %v", err)
	}
}
