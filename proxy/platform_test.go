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

// A caller key's apps name a platform (its component and every merchant)
// or one merchant, {platform}@{appid}.
func TestKeyAppsOfPlatforms(t *testing.T) {
	pl := &platform{cfg: Platform{Name: "acme"}}
	comp := &App{Name: "acme", Kind: KindComponent, plat: pl}
	m1 := &App{Name: "acme@wx1", Kind: KindAuthorizer, AppID: "wx1", plat: pl}
	m2 := &App{Name: "acme@wx2", Kind: KindAuthorizer, AppID: "wx2", plat: pl}
	main := &App{Name: "main"}
	for _, tc := range []struct {
		apps []string
		want map[*App]bool
	}{
		{nil, map[*App]bool{comp: true, m1: true, m2: true, main: true}},
		{[]string{"acme"}, map[*App]bool{comp: true, m1: true, m2: true, main: false}},
		{[]string{"acme@wx1"}, map[*App]bool{comp: false, m1: true, m2: false, main: false}},
		{[]string{"main"}, map[*App]bool{comp: false, m1: false, m2: false, main: true}},
	} {
		k := &CallerKey{Name: "k", Apps: tc.apps}
		for app, want := range tc.want {
			if got := k.mayUseApp(app); got != want {
				t.Errorf("key apps %v may use %s = %v, want %v", tc.apps, app.Name, got, want)
			}
		}
	}
	var none *CallerKey // no keys configured
	if !none.mayUseApp(m1) {
		t.Error("without keys every app is allowed")
	}
}

// How a platform app's request is forwarded: component APIs get the
// component token under the parameter their path uses, none goes into
// api_start_push_ticket, and neither the component nor a merchant has an
// AppSecret for the appid+secret endpoints.
func TestPlatformMode(t *testing.T) {
	pl := &platform{cfg: Platform{Name: "acme"}}
	comp := &App{Name: "acme", Kind: KindComponent, plat: pl}
	merchant := &App{Name: "acme@wx1", Kind: KindAuthorizer, AppID: "wx1", plat: pl}
	for _, tc := range []struct {
		app       *App
		api       string
		in        mode
		wantMode  mode
		wantParam string
		wantErr   bool
	}{
		{comp, apiStartPush, modeInject, modePassthrough, "", false},
		{comp, "/cgi-bin/component/api_create_preauthcode", modeInject, modeInject, "component_access_token", false},
		{comp, "/sns/component/jscode2session", modeCredentials, modeInject, "component_access_token", false},
		{comp, "/sns/oauth2/component/access_token", modePassthrough, modeInject, "component_access_token", false},
		{comp, "/wxa/gettemplatelist", modeInject, modeInject, "access_token", false},
		{comp, "/sns/jscode2session", modeCredentials, 0, "", true},
		{merchant, "/cgi-bin/user/get", modeInject, modeInject, "", false},
		{merchant, "/sns/jscode2session", modeCredentials, 0, "", true},
	} {
		r := &request{api: tc.api, mode: tc.in}
		_, err := platformMode(r, tc.app)
		if (err != nil) != tc.wantErr {
			t.Errorf("%s %s: err %v, want error %v", tc.app.Name, tc.api, err, tc.wantErr)
			continue
		}
		if err == nil && (r.mode != tc.wantMode || r.param != tc.wantParam) {
			t.Errorf("%s %s: mode %v param %q, want %v %q", tc.app.Name, tc.api, r.mode, r.param, tc.wantMode, tc.wantParam)
		}
	}
}
