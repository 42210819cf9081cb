package proxy

import "testing"

func TestComponentParam(t *testing.T) {
	for _, tc := range []struct{ api, want string }{
		{"/cgi-bin/component/api_create_preauthcode", "component_access_token"},
		{"/sns/component/jscode2session", "component_access_token"},
		{"/sns/oauth2/component/access_token", "component_access_token"},
		{"/wxa/gettemplatelist", "access_token"},
		{"/wxa/component/fastregisterbetaweapp", "access_token"},
		{"/cgi-bin/openapi/quota/get", "access_token"},
	} {
		if got := componentParam(tc.api); got != tc.want {
			t.Errorf("componentParam(%s) = %s, want %s", tc.api, got, tc.want)
		}
	}
}

func TestInjectTokenAs(t *testing.T) {
	for _, tc := range []struct{ in, param, want string }{
		{"", "component_access_token", "component_access_token=T"},
		{"component_access_token=wxp.acme.x&a=1", "component_access_token", "component_access_token=T&a=1"},
		{"access_token=caller&b=2&component%5Faccess%5Ftoken=x", "component_access_token", "component_access_token=T&b=2"},
		{"component_access_token=x&access_token=y", "access_token", "access_token=T"},
	} {
		if got := injectTokenAs(tc.in, tc.param, "T"); got != tc.want {
			t.Errorf("injectTokenAs(%q, %s) = %q, want %q", tc.in, tc.param, got, tc.want)
		}
	}
}

func TestAppLabel(t *testing.T) {
	for in, want := range map[string]string{"main": "main", "acme@wx123": "acme", "acme": "acme"} {
		if got := appLabel(in); got != want {
			t.Errorf("appLabel(%s) = %s, want %s", in, got, want)
		}
	}
}
