package config

import (
	"testing"
	"time"
)

func TestExpand(t *testing.T) {
	env := mapEnv(map[string]string{"A": "a", "EMPTY": "", "DOLLAR": "$x"})
	tests := []struct {
		in, want string
	}{
		{"plain", "plain"},
		{"${A}", "a"},
		{"x${A}y${A}", "xaya"},
		{"${UNSET}", ""},
		{"${UNSET:-fallback}", "fallback"},
		{"${EMPTY:-fallback}", "fallback"},
		{"${A:-fallback}", "a"},
		{"${UNSET:-}", ""},
		{"${UNSET:-a:-b}", "a:-b"},
		{"${UNSET:-$}", "$"},
		{"$$", "$"},
		{"$${A}", "${A}"},
		{"pa$$$$word", "pa$$word"},
		{"a$b", "a$b"},
		{"$A", "$A"},
		{"cost: 5$", "cost: 5$"},
		{"${DOLLAR}", "$x"}, // values are not expanded again
	}
	for _, tt := range tests {
		got, err := expand(tt.in, env)
		if err != nil || got != tt.want {
			t.Errorf("expand(%q) = %q, %v; want %q, nil", tt.in, got, err, tt.want)
		}
	}
	for _, in := range []string{"${A", "x${", "${}", "${1A}", "${A B}", "${A-x}", "${A:x}", "${A.B}"} {
		if got, err := expand(in, env); err == nil {
			t.Errorf("expand(%q) = %q, nil; want an error", in, got)
		}
	}
}

func TestParseExpandsValues(t *testing.T) {
	env := mapEnv(map[string]string{
		"PORT":     "8081",
		"RATE":     "600",
		"WAIT":     "1500ms",
		"BODY":     "1MiB",
		"STRICT":   "false",
		"SECRET":   "p@ss$word",
		"INJECT":   "x\nlisten: \":1\"\nkind: wecom",
		"FLOWY":    "{per_minute: 5}",
		"APPS_ENV": "[main]",
	})
	c := mustParse(t, `
listen: "${HOST:-0.0.0.0}:${PORT}"
max_body_bytes: ${BODY}
retry_body_bytes: ${RETRY:-512KiB}
admin:
  token: ${INJECT}
callers:
  keys:
    - {name: "n$$1", key: "${FLOWY}"}
apps:
  - name: main
    appid: wx1
    secret: ${SECRET}
    quotas:
      default: { per_minute: "${RATE}", per_day: "${PER_DAY:-0}" } # quoted: libyaml rejects :- in flow style
      max_wait: ${WAIT}
      respect_upstream: ${STRICT}
`, env)
	tests := []struct {
		name      string
		got, want any
	}{
		{"listen", c.Listen, "0.0.0.0:8081"},
		{"max_body_bytes", c.MaxBodyBytes, int64(1 << 20)},
		{"retry_body_bytes default", c.RetryBodyBytes, int64(512 << 10)},
		{"admin token is one string, not YAML", c.Admin.Token, "x\nlisten: \":1\"\nkind: wecom"},
		{"listen untouched by the injection", c.Admin.Listen, "127.0.0.1:9090"},
		{"flow text stays text", c.Callers.Keys[0].Key, "{per_minute: 5}"},
		{"$$ is a literal $", c.Callers.Keys[0].Name, "n$1"},
		{"secret with $", c.Apps[0].Secret, "p@ss$word"},
		{"quoted integer", c.Apps[0].Quotas.Default.PerMinute, 600},
		{"integer default", c.Apps[0].Quotas.Default.PerDay, 0},
		{"duration", c.Apps[0].Quotas.MaxWait, 1500 * time.Millisecond},
		{"bool", c.Apps[0].Quotas.RespectUpstream, false},
		{"kind untouched by the injection", c.Apps[0].Kind, KindOfficial},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s = %#v, want %#v", tt.name, tt.got, tt.want)
		}
	}
}

func TestParseNilGetenvIsEmptyEnvironment(t *testing.T) {
	t.Setenv("WXPROXY_TEST_ONLY_VAR", ":7000")
	c := mustParse(t, `listen: "${WXPROXY_TEST_ONLY_VAR:-:8000}"`, nil)
	if got, want := c.Listen, ":8000"; got != want {
		t.Errorf("Listen = %q, want %q", got, want)
	}
}
