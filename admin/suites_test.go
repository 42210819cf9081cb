package admin_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/wxproxy/wxproxy/admin"
	"github.com/wxproxy/wxproxy/platform"
	"github.com/wxproxy/wxproxy/suite"
	"github.com/wxproxy/wxproxy/token"
)

const (
	suiteTok     = "suite-token-LIVE-0123456789abcdef"
	permanentOne = "permanent-code-LIVE-0123456789"
)

type fakeSuite struct {
	tok      *token.Cache
	ready    error
	imported [][2]string
}

func (f *fakeSuite) Name() string            { return "suiteco" }
func (f *fakeSuite) SuiteID() string         { return "wwsuite1" }
func (f *fakeSuite) ProviderCorpID() string  { return "wwprovider" }
func (f *fakeSuite) Component() *token.Cache { return f.tok }
func (f *fakeSuite) Provider() *token.Cache  { return nil }
func (f *fakeSuite) Ticket() *platform.Ticket {
	return &platform.Ticket{Value: "ticket", ExpiresAt: time.Now().Add(10 * time.Minute)}
}
func (f *fakeSuite) Ready() error          { return f.ready }
func (f *fakeSuite) Stats() platform.Stats { return platform.Stats{OK: 1, Unauthorized: 1} }
func (f *fakeSuite) Corps(state string, offset, limit int) ([]suite.CorpInfo, int) {
	all := []suite.CorpInfo{{CorpID: "wwa", State: "ok", PermanentCodeFP: token.Fingerprint(permanentOne)}, {CorpID: "wwb", State: "unauthorized"}}
	var out []suite.CorpInfo
	for _, c := range all {
		if state == "" || c.State == state {
			out = append(out, c)
		}
	}
	n := len(out)
	if offset >= n {
		return []suite.CorpInfo{}, n
	}
	return out[offset:min(n, offset+limit)], n
}
func (f *fakeSuite) Import(_ context.Context, corpid, code string) (suite.CorpInfo, error) {
	f.imported = append(f.imported, [2]string{corpid, code})
	if code == "bad" {
		return suite.CorpInfo{CorpID: corpid, State: "unauthorized"}, errors.New("suite: corp " + corpid + ": permanent_code " + permanentOne + " refused")
	}
	return suite.CorpInfo{CorpID: corpid, State: "ok"}, nil
}

func TestSuiteAdmin(t *testing.T) {
	c, err := token.New(token.Options{App: "suiteco", Mode: token.Classic, Fetcher: token.SourceFunc(func(context.Context, bool) (token.Token, error) {
		return token.Token{Value: suiteTok, ObtainedAt: time.Now(), ExpiresAt: time.Now().Add(time.Hour)}, nil
	})})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Get(context.Background()); err != nil {
		t.Fatal(err)
	}
	fs := &fakeSuite{tok: c, ready: errors.New("platform suiteco: no provider_access_token")}
	srv := httptest.NewServer(admin.New(admin.Options{Apps: []admin.App{{Name: "main", Tokens: &fakeTokens{}}}, Suites: []admin.Suite{fs},
		Token: func() string { return adminToken },
		Scrub: func(s string) string { return strings.ReplaceAll(s, permanentOne, "***") }}))
	t.Cleanup(srv.Close)
	req := func(method, path, body string) (int, string) {
		r, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		r.Header.Set("Authorization", "Bearer "+adminToken)
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, tc := range []struct {
		method, path, body string
		code               int
		want               []string
	}{
		{"GET", "/admin/platforms", "", 200, []string{`"kind":"wecom_suite"`, `"suite_id":"wwsuite1"`, `"provider_corpid":"wwprovider"`, `"unauthorized":1`, `"ready":false`, `"fingerprint":"` + token.Fingerprint(suiteTok) + `"`}},
		{"GET", "/admin/platforms/suiteco/authorizers", "", 200, []string{`"total":2`, `"corpid":"wwa"`, `"permanent_code_fingerprint":"` + token.Fingerprint(permanentOne) + `"`}},
		{"GET", "/admin/platforms/suiteco/authorizers?state=unauthorized", "", 200, []string{`"total":1`, `"corpid":"wwb"`}},
		{"GET", "/admin/platforms/suiteco/authorizers?limit=0", "", 400, nil},
		{"GET", "/admin/platforms/suiteco/authorizers?state=x", "", 400, nil},
		{"POST", "/admin/platforms/suiteco/authorizers", `{"corpid":"wwc","permanent_code":"pc"}`, 200, []string{`"imported":true`, `"corpid":"wwc"`}},
		{"POST", "/admin/platforms/suiteco/authorizers", `{"corpid":"wwd","permanent_code":"bad"}`, 502, []string{`"imported":true`, `***`}},
		{"POST", "/admin/platforms/suiteco/authorizers", `{"authorizer_appid":"wx","refresh_token":"r"}`, 400, []string{`corpid`}},
		{"POST", "/admin/platforms/suiteco/authorizers", `{"corpid":"wwe"}`, 400, nil},
		{"POST", "/admin/platforms/suiteco/recover", "", 400, []string{"WeCom suite"}},
		{"POST", "/admin/platforms/suiteco/start-push", "", 400, []string{"WeCom suite"}},
		{"POST", "/admin/platforms/suiteco/refresh", "", 200, []string{`"refreshed":true`}},
		{"GET", "/readyz", "", 503, []string{"no provider_access_token"}},
		{"GET", "/admin/status", "", 200, []string{`"kind":"wecom_suite"`, `"appid":"wwsuite1"`}},
	} {
		code, body := req(tc.method, tc.path, tc.body)
		if code != tc.code {
			t.Errorf("%s %s: %d %s, want %d", tc.method, tc.path, code, body, tc.code)
		}
		for _, w := range tc.want {
			if !strings.Contains(body, w) {
				t.Errorf("%s %s: %s lacks %s", tc.method, tc.path, body, w)
			}
		}
		for _, secret := range []string{suiteTok, permanentOne} {
			if strings.Contains(body, secret) {
				t.Errorf("%s %s shows a credential: %s", tc.method, tc.path, body)
			}
		}
	}
	if len(fs.imported) != 2 {
		t.Errorf("imports = %v", fs.imported)
	}
	// Without the bearer token, imports are refused.
	r, _ := http.NewRequest("POST", srv.URL+"/admin/platforms/suiteco/authorizers", strings.NewReader(`{"corpid":"wwf","permanent_code":"pc"}`))
	if resp, err := http.DefaultClient.Do(r); err != nil || resp.StatusCode == 200 {
		t.Errorf("import without the token: %v %v", resp.StatusCode, err)
	}
}
