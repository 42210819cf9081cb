package config

import (
	"fmt"
	"net/url"
	"reflect"
	"strings"
	"testing"
)

// secretsInOutputOrder lists c's non-empty secrets in the order
// WriteRedacted prints them, and the password of the Redis URL.
func secretsInOutputOrder(c *Config) (secrets []string, urlPassword string) {
	add := func(s string) {
		if s != "" {
			secrets = append(secrets, s)
		}
	}
	add(c.Admin.Token)
	add(c.Store.Redis.Password)
	add(c.Store.Redis.SentinelPassword)
	for _, k := range c.Callers.Keys {
		add(k.Key)
	}
	for _, a := range c.Apps {
		add(a.Secret)
	}
	for _, p := range c.Platforms {
		add(p.Secret)
		add(p.Token)
		add(p.EncodingAESKey)
		add(p.PreviousEncodingAESKey)
		add(p.ProviderSecret)
	}
	if u, err := url.Parse(c.Store.Redis.URL); err == nil {
		urlPassword, _ = u.User.Password()
	}
	return secrets, urlPassword
}

// checkRedacted writes c redacted, checks that no secret shows, then puts
// the secrets back (as ${R<n>} references) and checks that the output parses
// to c again.
func checkRedacted(t testing.TB, c *Config) string {
	t.Helper()
	var b strings.Builder
	if err := c.WriteRedacted(&b); err != nil {
		t.Fatalf("WriteRedacted: %v", err)
	}
	out := b.String()
	secrets, urlPassword := secretsInOutputOrder(c)
	for _, s := range append(secrets, urlPassword) {
		if s != "" && strings.Contains(out, s) {
			t.Errorf("WriteRedacted prints secret %q:\n%s", s, out)
		}
	}
	if got, want := strings.Count(out, Redacted), len(secrets); got != want {
		t.Errorf("WriteRedacted printed %s %d times, want %d:\n%s", Redacted, got, want, out)
	}

	env := map[string]string{"RURL": url.PathEscape(urlPassword)}
	restored := strings.ReplaceAll(out, url.PathEscape(Redacted), "${RURL}")
	for i, s := range secrets {
		ref := fmt.Sprintf("R%d", i)
		env[ref] = s
		restored = strings.Replace(restored, Redacted, "${"+ref+"}", 1)
	}
	again, err := Parse([]byte(restored), mapEnv(env), "")
	if err != nil {
		t.Fatalf("Parse(WriteRedacted output):\n%v\noutput:\n%s", err, out)
	}
	if got, want := comparable(again), comparable(c); !reflect.DeepEqual(got, want) {
		t.Errorf("round trip changed the config:\n got %+v\nwant %+v\noutput:\n%s", got, want, out)
	}
	return out
}

func TestWriteRedacted(t *testing.T) {
	env := map[string]string{
		"ADMIN":       "adm-TOKEN-aaaa",
		"KEY1":        "key-ONE-bbbb",
		"KEY2":        "key-TWO-cccc",
		"MAIN_SECRET": "sec-MAIN-dddd",
		"CORP_SECRET": "sec-CORP-eeee",
		"REDIS_PASS":  "redis-PASS-ffff",
		"URL_PASS":    "url-PASS-gggg",
	}
	tests := []struct {
		name string
		src  string
		want []string // lines the output must contain
	}{
		{"every secret", `
listen: "0.0.0.0:8443"
shutdown_timeout: 1m30s
upstream_timeout: 2500ms
max_body_bytes: 1000
retry_body_bytes: 1KB
admin: {listen: "127.0.0.1:9191", token: "${ADMIN}"}
log: {format: text, level: debug}
store:
  kind: redis
  redis:
    url: "rediss://wx:${URL_PASS}@redis.internal:6380/2"
    username: other
    password: ${REDIS_PASS}
    key_prefix: "w$$x:"
    replicas_hint: 4
callers:
  allow_cidrs: [10.0.0.0/8, 192.0.2.7, "2001:db8::/32"]
  keys:
    - {name: billing, key: "${KEY1}", apps: [main], per_minute: 600}
    - {name: ops, key: "${KEY2}"}
default_app: main
apps:
  - name: main
    kind: miniprogram
    appid: wx0123456789abcdef
    secret: ${MAIN_SECRET}
    token_mode: classic
    upstream: https://api2.weixin.qq.com/
    refresh_before: 15m
    quotas:
      reset_timezone: UTC
      token_fetch_per_day: 0
      default: {per_minute: 100, per_day: 0, burst: 10}
      apis:
        /cgi-bin/message/custom/send: {per_minute: 600, per_day: 500000, burst: 60}
        /wxa/getwxacodeunlimit: {per_day: 1000}
      on_limit: wait
      max_wait: 0s
      respect_upstream: false
    breaker: {consecutive_failures: 3, failure_ratio: 0.25, min_requests: 50, interval: 0s, open_timeout: 1m, half_open_requests: 2}
  - {name: corp, kind: wecom, appid: ww1, secret: "${CORP_SECRET}"}
`, []string{
			"  token: " + Redacted,
			"    url: rediss://wx:%3Credacted%3E@redis.internal:6380/2",
			"    password: " + Redacted,
			"    key_prefix: 'w$$x:'",
			"      key: " + Redacted,
			"    secret: " + Redacted,
			"shutdown_timeout: 1m30s",
			"retry_body_bytes: 1000",
			"      default: {per_minute: 100, per_day: 0, burst: 10}",
			"        /wxa/getwxacodeunlimit: {per_minute: 0, per_day: 1000, burst: 0}",
			"  allow_cidrs: [10.0.0.0/8, 192.0.2.7/32, '2001:db8::/32']",
			"    upstream: https://api2.weixin.qq.com",
		}},
		{"unset secrets stay empty", `
admin: {token: "${UNSET}"}
store: {kind: redis, redis: {addrs: ["r1:6379", "r2:6379"], master_name: mymaster, db: 3}}
`, []string{
			`  token: ""`,
			`    password: ""`,
			`    addrs: ['r1:6379', 'r2:6379']`,
			`    db: 3`,
		}},
		{"url without password", `store: {redis: {url: "redis://127.0.0.1:6379/0"}}`, []string{
			`    url: redis://127.0.0.1:6379/0`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := mustParse(t, tt.src, mapEnv(env))
			out := checkRedacted(t, c)
			for _, line := range tt.want {
				if !strings.Contains(out, line+"\n") {
					t.Errorf("output lacks line %q:\n%s", line, out)
				}
			}
			for name, v := range env {
				if strings.Contains(out, v) {
					t.Errorf("output contains ${%s}'s value %q", name, v)
				}
			}
		})
	}
}

func TestRedactURL(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""},
		{"redis://h:6379/0", "redis://h:6379/0"},
		{"redis://user@h:6379", "redis://user@h:6379"},
		{"redis://:pw@h:6379", "redis://:%3Credacted%3E@h:6379"},
		{"rediss://u:p%40ss@h", "rediss://u:%3Credacted%3E@h"},
		{"redis://:p%zz@h", Redacted}, // does not parse: hide it all
	}
	for _, tt := range tests {
		if got := redactURL(tt.in); got != tt.want {
			t.Errorf("redactURL(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
