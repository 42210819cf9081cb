package config

import (
	"strings"
	"testing"
)

// oneSuite is a valid WeCom suite with its callback listener.
const oneSuite = `
platforms:
  - name: suiteco
    kind: wecom_suite
    suite_id: wwsuite0000000001
    secret: suitesecret
    token: suitemsgtoken
    encoding_aes_key: ` + acmeKey + `
    provider_corpid: wwprovider0000001
    provider_secret: providersecret
callbacks:
  listen: ":8443"
`

func TestSuiteDefaults(t *testing.T) {
	c := mustParse(t, oneSuite, nil)
	p := c.Platforms[0]
	for _, tc := range []struct {
		name      string
		got, want any
	}{
		{"kind", p.Kind, KindWeComSuite},
		{"suite_id", p.SuiteID, "wwsuite0000000001"},
		{"component_appid", p.ComponentAppID, ""},
		{"provider_corpid", p.ProviderCorpID, "wwprovider0000001"},
		{"provider_secret", p.ProviderSecret, "providersecret"},
		{"permanent_code_api", p.PermanentCodeAPI, PermanentCodeV1},
		{"upstream", p.Upstream, defaultWeComUpstream},
		{"secret", p.Secret, "suitesecret"},
	} {
		if tc.got != tc.want {
			t.Errorf("%s = %v, want %v", tc.name, tc.got, tc.want)
		}
	}
	v2 := mustParse(t, strings.Replace(oneSuite, "    provider_corpid:", "    permanent_code_api: v2\n    provider_corpid:", 1), nil)
	if got := v2.Platforms[0].PermanentCodeAPI; got != PermanentCodeV2 {
		t.Errorf("permanent_code_api = %q, want v2", got)
	}
	// The provider is optional; provider_corpid alone names the receive
	// id of URL checks.
	noProvider := strings.Replace(oneSuite, "    provider_secret: providersecret\n", "", 1)
	if c := mustParse(t, noProvider, nil); c.Platforms[0].ProviderSecret != "" || c.Platforms[0].ProviderCorpID == "" {
		t.Errorf("provider_corpid alone: %+v", c.Platforms[0])
	}
	// An Open Platform and a suite side by side.
	both := strings.Replace(onePlatform, "callbacks:", strings.TrimPrefix(oneSuite[:strings.Index(oneSuite, "callbacks:")], "\nplatforms:\n")+"callbacks:", 1)
	if c := mustParse(t, both, nil); len(c.Platforms) != 2 || c.Platforms[1].Kind != KindWeComSuite || c.Platforms[0].Upstream != defaultUpstream {
		t.Errorf("open platform and suite: %+v", c.Platforms)
	}
}

func TestSuiteErrors(t *testing.T) {
	secretLine := "    secret: suitesecret\n"
	tests := []struct {
		name, src, want string
	}{
		{"suite_id missing", strings.Replace(oneSuite, "    suite_id: wwsuite0000000001\n", "", 1), `platforms[0].suite_id: required`},
		{"suite_id empty", strings.Replace(oneSuite, "suite_id: wwsuite0000000001", `suite_id: ""`, 1), `platforms[0].suite_id: must not be empty`},
		{"suite_id with @", strings.Replace(oneSuite, "suite_id: wwsuite0000000001", "suite_id: ww@x", 1), `platforms[0].suite_id: must not contain whitespace, @ or /`},
		{"component_appid on a suite", strings.Replace(oneSuite, secretLine, secretLine+"    component_appid: wxc\n", 1), `platforms[0].component_appid: only for kind open_platform`},
		{"suite_id on an open platform", strings.Replace(onePlatform, "    secret: compsecret\n", "    secret: compsecret\n    suite_id: ww1\n", 1), `platforms[0].suite_id: only for kind wecom_suite`},
		{"provider_secret on an open platform", strings.Replace(onePlatform, "    secret: compsecret\n", "    secret: compsecret\n    provider_secret: x\n", 1), `platforms[0].provider_secret: only for kind wecom_suite`},
		{"provider_secret without corpid", strings.Replace(oneSuite, "    provider_corpid: wwprovider0000001\n", "", 1), `platforms[0].provider_secret: needs provider_corpid`},
		{"provider_corpid bad", strings.Replace(oneSuite, "provider_corpid: wwprovider0000001", "provider_corpid: a b", 1), `platforms[0].provider_corpid: must not be empty or contain whitespace`},
		{"provider_secret empty", strings.Replace(oneSuite, "provider_secret: providersecret", `provider_secret: "${NOPE}"`, 1), `platforms[0].provider_secret: must not be empty (${NOPE} expanded`},
		{"permanent_code_api bad", strings.Replace(oneSuite, secretLine, secretLine+"    permanent_code_api: v3\n", 1), `platforms[0].permanent_code_api: must be one of v1, v2 (got "v3")`},
		{"secret missing", strings.Replace(oneSuite, secretLine, "", 1), `platforms[0].secret: required (or secret_file)`},
		{"token missing", strings.Replace(oneSuite, "    token: suitemsgtoken\n", "", 1), `platforms[0].token: required (or token_file)`},
		{"aes key bad", strings.Replace(oneSuite, acmeKey, "abc", 1), `platforms[0].encoding_aes_key: must be the 43-character EncodingAESKey`},
		{"kind unknown", strings.Replace(oneSuite, "kind: wecom_suite", "kind: wecom", 1), `platforms[0].kind: must be one of open_platform, wecom_suite (got "wecom")`},
		{"duplicate suite_id", strings.Replace(oneSuite, "callbacks:", strings.Replace(strings.TrimPrefix(oneSuite[:strings.Index(oneSuite, "callbacks:")], "\nplatforms:\n"), "name: suiteco", "name: other", 1)+"callbacks:", 1),
			`platforms[1].suite_id: already used by platforms[0]`},
		{"callbacks missing", strings.Replace(oneSuite, "callbacks:\n  listen: \":8443\"\n", "", 1), `callbacks.listen: required with platforms`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parse(t, tc.src, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v\nwant it to contain %q", err, tc.want)
			}
			for _, s := range []string{"suitesecret", "providersecret", "suitemsgtoken", acmeKey} {
				if err != nil && strings.Contains(err.Error(), s) {
					t.Errorf("error shows a secret: %v", err)
				}
			}
		})
	}
}

func TestSuiteRedacted(t *testing.T) {
	out := checkRedacted(t, mustParse(t, strings.Replace(oneSuite, "    provider_corpid:", "    permanent_code_api: v2\n    provider_corpid:", 1), nil))
	for _, want := range []string{"suite_id: wwsuite0000000001", "provider_corpid: wwprovider0000001", "kind: wecom_suite", "permanent_code_api: v2"} {
		if !strings.Contains(out, want) {
			t.Errorf("redacted output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "component_appid") {
		t.Errorf("redacted output of a suite names component_appid:\n%s", out)
	}
	// Without a provider secret, none is printed.
	out = checkRedacted(t, mustParse(t, strings.Replace(oneSuite, "    provider_secret: providersecret\n", "", 1), nil))
	if strings.Contains(out, "provider_secret") {
		t.Errorf("redacted output shows an unset provider_secret:\n%s", out)
	}
}
