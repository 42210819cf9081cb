package config

import (
	"reflect"
	"strings"
	"testing"
)

func TestReloadDiff(t *testing.T) {
	const base = `
listen: ":8080"
store: {kind: memory}
callers: {keys: [{name: a, key: k1}]}
apps:
  - {name: main, appid: wx1, secret: s1, quotas: {default: {per_minute: 10}}}
  - {name: corp, kind: wecom, appid: ww1, secret: s2}
`
	tests := []struct {
		name string
		edit func(string) string
		want []string
	}{
		{"nothing", func(s string) string { return s }, nil},
		{"quotas", func(s string) string { return strings.Replace(s, "per_minute: 10", "per_minute: 20", 1) }, nil},
		{"breaker", func(s string) string {
			return strings.Replace(s, "secret: s2}", "secret: s2, breaker: {open_timeout: 1m}}", 1)
		}, nil},
		{"callers", func(s string) string {
			return strings.Replace(s, "callers: {keys: [{name: a, key: k1}]}", "callers: {allow_cidrs: [0.0.0.0/0]}", 1)
		}, nil},
		{"apps reordered", func(s string) string {
			main := "  - {name: main, appid: wx1, secret: s1, quotas: {default: {per_minute: 10}}}\n"
			return strings.Replace(s, main, "", 1) + main
		}, nil},
		{"listen", func(s string) string { return strings.Replace(s, `":8080"`, `":8081"`, 1) }, []string{"listen"}},
		{"store", func(s string) string { return strings.Replace(s, "kind: memory", "kind: file", 1) }, []string{"store.kind"}},
		{"secret", func(s string) string { return strings.Replace(s, "secret: s2", "secret: s3", 1) }, []string{"apps[1].secret"}},
		{"secret of a moved app", func(s string) string {
			corp := "  - {name: corp, kind: wecom, appid: ww1, secret: s2}\n"
			return strings.Replace(strings.Replace(s, corp, "", 1), "apps:\n", "apps:\n"+strings.Replace(corp, "s2", "s3", 1), 1)
		}, []string{"apps[0].secret"}},
		{"several", func(s string) string {
			s = strings.Replace(s, "appid: wx1, secret: s1", "appid: wx2, secret: s1, token_mode: classic, refresh_before: 5m", 1)
			return "log: {level: debug}\nadmin: {token: t}\n" + s
		}, []string{"admin.token", "log.level", "apps[0].appid", "apps[0].token_mode", "apps[0].refresh_before"}},
		{"app added", func(s string) string {
			return s + "  - {name: mini, kind: miniprogram, appid: wx9, secret: s9}\n"
		}, []string{"apps"}},
		{"app renamed", func(s string) string { return strings.Replace(s, "name: corp", "name: corp2", 1) }, []string{"apps"}},
	}
	cur := mustParse(t, base, nil)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			next := mustParse(t, tt.edit(base), nil)
			if got := cur.ReloadDiff(next); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ReloadDiff = %q, want %q", got, tt.want)
			}
		})
	}
}
