package admin_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wxproxy/wxproxy/admin"
	"github.com/wxproxy/wxproxy/fleet"
	"github.com/wxproxy/wxproxy/proxy"
	"github.com/wxproxy/wxproxy/ratelimit"
	"github.com/wxproxy/wxproxy/token"
)

const (
	adminToken = "admin-token-0123456789"
	liveToken  = "86_LIVE-TOKEN-VALUE-0123456789abcdef"
	theSecret  = "app-secret-0123456789abcdef"
)

// fakeTokens is a token holder with a canned status and refresh result.
type fakeTokens struct {
	status  token.Status
	refresh func() (*token.Token, error)
}

func (f *fakeTokens) Status() token.Status { return f.status }
func (f *fakeTokens) Refresh(context.Context) (*token.Token, error) {
	return f.refresh()
}

type fixture struct {
	url     string
	main    *fakeTokens
	broken  *fakeTokens
	reloads int
}

// scrub stands in for the proxy's scrubber.
func scrub(s string) string {
	return strings.NewReplacer(liveToken, "wxp.main.x", theSecret, "***").Replace(s)
}

func newFixture(t *testing.T, pprof bool, reload func() ([]string, error)) *fixture {
	t.Helper()
	now := time.Now()
	f := &fixture{
		main: &fakeTokens{status: token.Status{Token: &token.Token{Value: liveToken, ObtainedAt: now, ExpiresAt: now.Add(time.Hour)}, Refreshes: 2},
			refresh: func() (*token.Token, error) {
				return &token.Token{Value: liveToken, ExpiresAt: now.Add(2 * time.Hour)}, nil
			}},
		broken: &fakeTokens{status: token.Status{LastError: errors.New("token: fetch: secret=" + theSecret + " errcode 40125")},
			refresh: func() (*token.Token, error) { return nil, errors.New("upstream said " + liveToken) }},
	}
	brk := proxy.NewBreaker("main", proxy.BreakerSettings{ConsecutiveFailures: 5, OpenTimeout: time.Minute, HalfOpenRequests: 1}, nil)
	lim := ratelimit.New(ratelimit.Settings{APIs: map[string]ratelimit.Limit{"/cgi-bin/x": {PerMinute: 10}}}, ratelimit.Options{Name: "main"})
	_ = lim.Allow(context.Background(), "/cgi-bin/x")
	reg := prometheus.NewRegistry()
	reg.MustRegister(prometheus.NewCounter(prometheus.CounterOpts{Name: "wxproxy_test_total", Help: "x"}))
	h := admin.New(admin.Options{
		Apps: []admin.App{
			{Name: "main", Kind: "official", AppID: "wx1", TokenMode: "stable", Tokens: f.main, Breaker: brk, Quotas: lim},
			{Name: "broken", Kind: "official", AppID: "wx2", TokenMode: "classic", Tokens: f.broken},
		},
		Replica: "r1", Token: func() string { return adminToken }, PProf: pprof, Gatherer: reg,
		Quota: func(string) admin.QuotaSettings {
			return admin.QuotaSettings{ResetTimezone: "Asia/Shanghai", OnLimit: "reject"}
		},
		Reload: reload, Scrub: scrub,
	})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	f.url = srv.URL
	return f
}

func call(t *testing.T, method, url, bearer string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestReadOnlyEndpoints(t *testing.T) {
	f := newFixture(t, false, nil)
	tests := []struct {
		path   string
		status int
		want   []string
	}{
		{"/healthz", 200, []string{"ok"}},
		{"/readyz", 503, []string{`"ready":false`, `app broken: no valid access_token (last fetch: token: fetch: secret=*** errcode 40125)`}},
		{"/admin/apps", 200, []string{`"name":"main"`, `"fingerprint":"` + token.Fingerprint(liveToken) + `"`, `"breaker":"closed"`, `"ready":true`, `"name":"broken"`, `"ready":false`, `"last_error":"token: fetch: secret=***`}},
		{"/admin/breakers", 200, []string{`"app":"main","replica":"r1","state":"closed"`}},
		{"/admin/quotas", 200, []string{`"app":"main","reset_timezone":"Asia/Shanghai","on_limit":"reject"`, `"api":"/cgi-bin/x"`, `"used_minute":1`}},
		{"/metrics", 200, []string{"wxproxy_test_total 0"}},
		{"/debug/pprof/", 404, nil},
	}
	for _, tt := range tests {
		code, body := call(t, http.MethodGet, f.url+tt.path, "")
		if code != tt.status {
			t.Errorf("GET %s: %d %s, want %d", tt.path, code, body, tt.status)
		}
		for _, w := range tt.want {
			if !strings.Contains(body, w) {
				t.Errorf("GET %s: %s\nlacks %s", tt.path, body, w)
			}
		}
		if strings.Contains(body, liveToken) || strings.Contains(body, theSecret) {
			t.Errorf("GET %s shows a credential: %s", tt.path, body)
		}
		if strings.HasPrefix(body, "{") || strings.HasPrefix(body, "[") {
			var v any
			if err := json.Unmarshal([]byte(body), &v); err != nil || strings.HasSuffix(body, "\n") || strings.Contains(body, "\n  ") {
				t.Errorf("GET %s: not compact JSON: %q", tt.path, body)
			}
		}
	}
}

func TestActionsNeedTheToken(t *testing.T) {
	reloadErr := error(nil)
	f := newFixture(t, true, func() ([]string, error) { return []string{"listen"}, reloadErr })
	for _, path := range []string{"/admin/apps/main/refresh", "/admin/reload"} {
		for _, bearer := range []string{"", "wrong"} {
			if code, _ := call(t, http.MethodPost, f.url+path, bearer); code != 403 {
				t.Errorf("POST %s with %q: %d, want 403", path, bearer, code)
			}
		}
	}
	for _, bearer := range []string{"", "wrong"} {
		if code, _ := call(t, http.MethodGet, f.url+"/debug/pprof/", bearer); code != 403 {
			t.Errorf("pprof with %q: %d, want 403", bearer, code)
		}
	}
	if code, _ := call(t, http.MethodGet, f.url+"/debug/pprof/", adminToken); code != 200 {
		t.Errorf("pprof with the token: %d, want 200", code)
	}
	tests := []struct {
		path   string
		status int
		want   string
	}{
		{"/admin/apps/main/refresh", 200, `"fingerprint":"` + token.Fingerprint(liveToken) + `"`},
		{"/admin/apps/broken/refresh", 502, `"error":"upstream said wxp.main.x"`},
		{"/admin/apps/nope/refresh", 404, `no app named nope`},
		{"/admin/reload", 200, `{"needs_restart":["listen"],"reloaded":true}`},
	}
	for _, tt := range tests {
		code, body := call(t, http.MethodPost, f.url+tt.path, adminToken)
		if code != tt.status || !strings.Contains(body, tt.want) {
			t.Errorf("POST %s: %d %s; want %d with %s", tt.path, code, body, tt.status, tt.want)
		}
	}
	reloadErr = errors.New("apps[0].secret: must not be empty\nlisten: bad")
	if code, body := call(t, http.MethodPost, f.url+"/admin/reload", adminToken); code != 400 || !strings.Contains(body, `"errors":["apps[0].secret: must not be empty","listen: bad"]`) {
		t.Errorf("refused reload: %d %s", code, body)
	}
	f.main.refresh = func() (*token.Token, error) { return nil, token.ErrForceBudget }
	if code, _ := call(t, http.MethodPost, f.url+"/admin/apps/main/refresh", adminToken); code != 429 {
		t.Errorf("refresh over budget: %d, want 429", code)
	}
}

func TestNoTokenConfiguredRefusesActions(t *testing.T) {
	h := admin.New(admin.Options{Apps: []admin.App{{Name: "main", Tokens: &fakeTokens{}}}})
	srv := httptest.NewServer(h)
	defer srv.Close()
	if code, body := call(t, http.MethodPost, srv.URL+"/admin/reload", "anything"); code != 403 || !strings.Contains(body, "set admin.token") {
		t.Errorf("POST without a configured token: %d %s", code, body)
	}
}

// GET /admin/replicas lists the fleet's replicas; without a fleet, or when
// its view fails, this replica alone.
func TestReplicas(t *testing.T) {
	started := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	self := fleet.Replica{Replica: "host/1", Started: started, Apps: []string{"main"}}
	var fail bool
	list := func(context.Context) ([]fleet.Replica, error) {
		if fail {
			return nil, errors.New("redis: connection refused")
		}
		return []fleet.Replica{self, {Replica: "host/2", Started: started, Apps: []string{"main"}}}, nil
	}
	get := func(o admin.Options) []fleet.Replica {
		t.Helper()
		srv := httptest.NewServer(admin.New(o))
		defer srv.Close()
		resp, err := http.Get(srv.URL + "/admin/replicas")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out []fleet.Replica
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != 200 {
			t.Fatalf("%d %v", resp.StatusCode, err)
		}
		return out
	}
	if got := get(admin.Options{Replica: "host/1", Self: self}); len(got) != 1 || got[0].Replica != "host/1" || got[0].Seen.IsZero() {
		t.Errorf("without a fleet: %+v, want this replica", got)
	}
	if got := get(admin.Options{Replica: "host/1", Self: self, Replicas: list}); len(got) != 2 || got[1].Replica != "host/2" {
		t.Errorf("with a fleet: %+v, want both replicas", got)
	}
	fail = true
	if got := get(admin.Options{Replica: "host/1", Self: self, Replicas: list}); len(got) != 1 || got[0].Replica != "host/1" {
		t.Errorf("fleet view down: %+v, want this replica", got)
	}
}
