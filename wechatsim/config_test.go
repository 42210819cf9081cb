package wechatsim_test

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/wxproxy/wxproxy/wechatsim"
)

func writeConfig(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "wechatsim.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestLoadConfig(t *testing.T) {
	path := writeConfig(t, `
apps:
  - {appid: wx1, secret: s1, kind: official}
  - appid: wx2
    secret: s2
    kind: miniprogram
  - {appid: ww1, secret: agent, kind: wecom}
quotas:
  /cgi-bin/message/custom/send: {per_minute: 600, per_day: 500000}
  /cgi-bin/token: {per_day: 200}
latency: 15ms
token_ttl: 60s
rid_records: 500
`)
	got, err := wechatsim.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	want := wechatsim.Options{
		Apps: []wechatsim.App{{AppID: "wx1", Secret: "s1", Kind: "official"}, {AppID: "wx2", Secret: "s2", Kind: "miniprogram"}, {AppID: "ww1", Secret: "agent", Kind: "wecom"}},
		Quotas: map[string]wechatsim.Quota{
			"/cgi-bin/message/custom/send": {PerMinute: 600, PerDay: 500000},
			"/cgi-bin/token":               {PerDay: 200},
		},
		Latency:    15 * time.Millisecond,
		TokenTTL:   time.Minute,
		RidRecords: 500,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("LoadConfig = %+v, want %+v", got, want)
	}
	if _, err := wechatsim.New(got); err != nil {
		t.Errorf("New(loaded config): %v", err)
	}
}

func TestLoadConfigErrors(t *testing.T) {
	tests := []struct {
		name, text, want string
	}{
		{"unknown root key", "apps: []\nlatencyy: 1s\n", "latencyy: unknown key"},
		{"unknown app key", "apps:\n  - {appid: a, secret: s}\n  - {appid: b, secrett: s}\n", "apps[1].secrett: unknown key"},
		{"unknown quota key", "quotas:\n  /x: {per_hour: 1}\n", "quotas./x.per_hour: unknown key"},
		{"quota not an integer", "quotas:\n  /x: {per_day: lots}\n", `quotas./x.per_day: line 2: "lots" is not a valid integer`},
		{"bad duration", "token_ttl: 7200\n", "token_ttl: want a duration"},
		{"rid records not an integer", "rid_records: many\n", `rid_records: line 1: "many" is not a valid integer`},
		{"duplicate key", "latency: 1s\nlatency: 2s\n", "latency: line 2: duplicate key"},
		{"apps not a list", "apps: {appid: a}\n", "apps: line 1: want a list"},
		{"app not a mapping", "apps: [wx1]\n", "apps[0]: line 1: want a mapping"},
		{"not a mapping", "- 1\n", "want a mapping"},
		{"bad yaml", "apps: [\n", "yaml:"},
		{"unknown suite key", "suites:\n  - {suite_id: a, secrett: s}\n", "suites[0].secrett: unknown key"},
		{"suites not a list", "suites: {suite_id: a}\n", "suites: line 1: want a list"},
		{"unknown provider key", "providers:\n  - {corpid: a, provider_secret: s}\n", "providers[0].provider_secret: unknown key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := wechatsim.LoadConfig(writeConfig(t, tt.text))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("LoadConfig error = %v, want it to contain %q", err, tt.want)
			}
		})
	}
	if _, err := wechatsim.LoadConfig(filepath.Join(t.TempDir(), "missing.yaml")); err == nil {
		t.Error("LoadConfig of a missing file succeeded")
	}
}

func TestNewValidation(t *testing.T) {
	app := wechatsim.App{AppID: "wx1", Secret: "s"}
	tests := []struct {
		name string
		opts wechatsim.Options
		want string
	}{
		{"no apps", wechatsim.Options{}, "apps: at least one app"},
		{"no appid", wechatsim.Options{Apps: []wechatsim.App{{Secret: "s"}}}, "apps[0].appid: required"},
		{"no secret", wechatsim.Options{Apps: []wechatsim.App{app, {AppID: "wx2"}}}, "apps[1].secret: required"},
		{"bad kind", wechatsim.Options{Apps: []wechatsim.App{{AppID: "a", Secret: "s", Kind: "bot"}}}, `apps[0].kind: "bot"`},
		{"slash in appid", wechatsim.Options{Apps: []wechatsim.App{{AppID: "a/b", Secret: "s"}}}, "apps[0].appid"},
		{"duplicate appid", wechatsim.Options{Apps: []wechatsim.App{app, app}}, "apps[1].appid: \"wx1\" is configured twice"},
		{"wecom and official share an id", wechatsim.Options{Apps: []wechatsim.App{{AppID: "ww", Secret: "a", Kind: "wecom"}, {AppID: "ww", Secret: "b"}}}, "configured twice"},
		{"wecom duplicate secret", wechatsim.Options{Apps: []wechatsim.App{{AppID: "ww", Secret: "a", Kind: "wecom"}, {AppID: "ww", Secret: "a", Kind: "wecom"}}}, "apps[1].secret"},
		{"quota path", wechatsim.Options{Apps: []wechatsim.App{app}, Quotas: map[string]wechatsim.Quota{"x": {PerDay: 1}}}, "quotas.x: path must start with /"},
		{"negative quota", wechatsim.Options{Apps: []wechatsim.App{app}, Quotas: map[string]wechatsim.Quota{"/x": {PerMinute: -1}}}, "quotas./x.per_minute: must be >= 0"},
		{"negative latency", wechatsim.Options{Apps: []wechatsim.App{app}, Latency: -1}, "latency: must be >= 0"},
		{"tiny ttl", wechatsim.Options{Apps: []wechatsim.App{app}, TokenTTL: time.Millisecond}, "token_ttl: must be at least 1s"},
		{"negative rid records", wechatsim.Options{Apps: []wechatsim.App{app}, RidRecords: -1}, "rid_records: must be >= 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := wechatsim.New(tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New error = %v, want it to contain %q", err, tt.want)
			}
		})
	}
	if _, err := wechatsim.New(wechatsim.Options{Apps: []wechatsim.App{{AppID: "ww", Secret: "a", Kind: "wecom"}, {AppID: "ww", Secret: "b", Kind: "wecom"}}}); err != nil {
		t.Errorf("two WeCom agents of one corp: %v", err)
	}
}

func TestLoadConfigSuites(t *testing.T) {
	path := writeConfig(t, `
suites:
  - {suite_id: wwsuite1, secret: s1, token: t1, encoding_aes_key: kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR, callback: "http://127.0.0.1:1/callback/suiteco"}
providers:
  - {corpid: wwprovider1, secret: p1}
`)
	got, err := wechatsim.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	want := wechatsim.Options{
		Suites:    []wechatsim.Suite{{SuiteID: "wwsuite1", Secret: "s1", Token: "t1", AESKey: "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR", Callback: "http://127.0.0.1:1/callback/suiteco"}},
		Providers: []wechatsim.Provider{{CorpID: "wwprovider1", Secret: "p1"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("LoadConfig = %+v, want %+v", got, want)
	}
	if _, err := wechatsim.New(got); err != nil {
		t.Errorf("New(loaded config): %v", err)
	}
}
