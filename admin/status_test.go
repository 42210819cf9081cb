package admin_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/wxproxy/wxproxy/admin"
	"github.com/wxproxy/wxproxy/failover"
	"github.com/wxproxy/wxproxy/platform"
	"github.com/wxproxy/wxproxy/proxy"
	"github.com/wxproxy/wxproxy/ratelimit"
	"github.com/wxproxy/wxproxy/token"
)

// fakeFleet is a fleet registry with canned entries of other replicas.
type fakeFleet struct {
	others    []proxy.BreakerInfo
	err       error
	published []proxy.BreakerInfo
}

func (f *fakeFleet) Publish(_ context.Context, local []proxy.BreakerInfo) { f.published = local }
func (f *fakeFleet) Breakers(context.Context) ([]proxy.BreakerInfo, error) {
	if f.err != nil {
		return nil, f.err
	}
	return append(append([]proxy.BreakerInfo{}, f.others...), f.published...), nil
}

type fakeQuotas struct {
	usage []ratelimit.Usage
	err   error
}

func (q fakeQuotas) Usage(context.Context) ([]ratelimit.Usage, error) { return q.usage, q.err }

type ticketsFunc func() []token.TicketStatus

func (f ticketsFunc) Statuses() []token.TicketStatus { return f() }
func (f ticketsFunc) Refresh(context.Context, token.TicketType) (*token.Token, error) {
	return nil, errors.New("not in this test")
}

// fakePlatform is a platform as the status document reads it; the methods
// it does not need are left to the embedded nil interface.
type fakePlatform struct {
	admin.Platform
	component *token.Cache
	reason    error
	stats     platform.Stats
}

func (p fakePlatform) Name() string            { return "acme" }
func (p fakePlatform) ComponentAppID() string  { return "wxc0ffee" }
func (p fakePlatform) Component() *token.Cache { return p.component }
func (p fakePlatform) Ready() error            { return p.reason }
func (p fakePlatform) Stats() platform.Stats   { return p.stats }

const liveTicket = "LIVE-JSAPI-TICKET-0123456789abcdef"

func statusScrub(s string) string {
	return strings.NewReplacer(liveToken, "wxp.main.x", theSecret, "***", liveTicket, "***").Replace(s)
}

// statusFixture is an admin handler over two apps, a fleet with another
// replica whose breaker for "main" is open, every provider set, and a
// recorded error carrying credentials.
func statusFixture(t *testing.T, fleet *fakeFleet, quotaErr error) http.Handler {
	t.Helper()
	now := time.Now()
	tok := &token.Token{Value: liveToken, ObtainedAt: now.Add(-10 * time.Minute), ExpiresAt: now.Add(110 * time.Minute)}
	errs := admin.NewErrorLog(10, statusScrub)
	errs.Record(admin.ErrorEvent{Time: now, Kind: "circuit_open", App: "main", API: "/cgi-bin/x", Status: 503,
		Message: "upstream said access_token=" + liveToken + " secret=" + theSecret})
	brk := proxy.NewBreaker("main", proxy.BreakerSettings{ConsecutiveFailures: 5, OpenTimeout: time.Minute}, nil)
	up := now.Add(-time.Minute)
	h := admin.New(admin.Options{
		Apps: []admin.App{
			{Name: "main", Kind: "official", AppID: "wx1", TokenMode: "stable", Breaker: brk,
				Tokens: &fakeTokens{status: token.Status{Token: tok, Refreshes: 3}},
				Quotas: fakeQuotas{usage: []ratelimit.Usage{{API: "/cgi-bin/x", PerMinute: 10, UsedMinute: 4, PerDay: 100, UsedDay: 40}}},
				Tickets: ticketsFunc(func() []token.TicketStatus {
					return []token.TicketStatus{{Type: "jsapi", Held: true, Status: token.Status{Token: &token.Token{Value: liveTicket, ObtainedAt: now, ExpiresAt: now.Add(time.Hour)}}}}
				}),
				Upstreams: func() []failover.State {
					return []failover.State{{URL: "https://api.weixin.qq.com", State: "down", Since: up}, {URL: "https://api2.weixin.qq.com", State: "up"}}
				}},
			{Name: "other", Kind: "wecom", AppID: "ww2", TokenMode: "wecom",
				Tokens: &fakeTokens{status: token.Status{LastError: errors.New("fetch failed: corpsecret=" + theSecret)}},
				Quotas: fakeQuotas{err: quotaErr}},
		},
		Replica: "r1", Fleet: fleet, Scrub: statusScrub, Errors: errs,
		Platforms: []admin.Platform{fakePlatform{component: componentWith(t, tok),
			reason: errors.New("no valid component_verify_ticket (" + liveToken + ")"),
			stats:  platform.Stats{OK: 9998, Refreshing: 1, Unauthorized: 1}}},
	})
	return h
}

// componentWith is a component token holder holding tok.
func componentWith(t *testing.T, tok *token.Token) *token.Cache {
	t.Helper()
	c, err := token.New(token.Options{App: "acme", Mode: token.Classic, Store: &token.MemoryStore{}, Key: "component:acme",
		Fetcher: token.SourceFunc(func(context.Context, bool) (token.Token, error) { return token.Token{}, errors.New("no fetch here") })})
	if err != nil {
		t.Fatal(err)
	}
	if !c.Install(context.Background(), *tok) {
		t.Fatal("install refused")
	}
	return c
}

func getStatus(t *testing.T, h http.Handler) (admin.Status, string) {
	t.Helper()
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/admin/status", nil))
	body := w.Body.String()
	if w.Code != 200 || w.Header().Get("Content-Type") != "application/json" || w.Header().Get("Cache-Control") != "no-store" {
		t.Fatalf("GET /admin/status: %d %v %s", w.Code, w.Header(), body)
	}
	for _, c := range []string{liveToken, theSecret, liveTicket} {
		if strings.Contains(body, c) {
			t.Errorf("/admin/status shows a credential (%.8s…): %s", c, body)
		}
	}
	var st admin.Status
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatalf("decode: %v %s", err, body)
	}
	return st, body
}

func TestStatusDocument(t *testing.T) {
	openSince := time.Now().Add(-3 * time.Minute).UTC().Truncate(time.Second)
	fleet := &fakeFleet{others: []proxy.BreakerInfo{
		{App: "main", Replica: "r2", State: "open", Since: openSince},
		{App: "main", Replica: "r1", State: "open", Since: openSince}, // a stale entry of ours: the live one wins
	}}
	st, body := getStatus(t, statusFixture(t, fleet, nil))

	if st.Replica != "r1" || !st.Fleet || len(st.Replicas) != 2 || st.Replicas[0].Name != "r1" || !st.Replicas[0].Self ||
		st.Replicas[0].Breakers["closed"] != 1 || st.Replicas[1].Name != "r2" || st.Replicas[1].Breakers["open"] != 1 {
		t.Errorf("replicas: %+v", st.Replicas)
	}
	if len(st.Apps) != 2 {
		t.Fatalf("apps: %s", body)
	}
	m := st.Apps[0]
	if m.Name != "main" || !m.Ready || m.Token.Fingerprint != token.Fingerprint(liveToken) || m.Token.TTLSeconds < 6500 || m.Token.Refreshes != 3 {
		t.Errorf("main: %+v", m)
	}
	// The fleet's worst state and since when; every replica's entry.
	if m.Breaker.State != "open" || m.Breaker.Since == nil || !m.Breaker.Since.Equal(openSince) || len(m.Breaker.Replicas) != 2 ||
		m.Breaker.Replicas[0].Replica != "r1" || m.Breaker.Replicas[0].State != "closed" {
		t.Errorf("main breaker: %+v", m.Breaker)
	}
	if len(m.Tickets) != 1 || m.Tickets[0].Type != "jsapi" || m.Tickets[0].Fingerprint != token.Fingerprint(liveTicket) || m.Tickets[0].TTLSeconds < 3500 {
		t.Errorf("tickets: %+v", m.Tickets)
	}
	if len(m.Upstreams) != 2 || m.Upstreams[0].State != "down" || m.Upstreams[0].Since == nil || m.Upstreams[1].State != "up" || !m.Upstreams[1].Active {
		t.Errorf("upstreams: %+v", m.Upstreams)
	}
	o := st.Apps[1]
	if o.Ready || o.Token.Present || !strings.Contains(o.Token.LastError, "corpsecret=***") || o.Breaker.State != "closed" ||
		o.Tickets == nil || o.Upstreams == nil || len(o.Breaker.Replicas) != 0 {
		t.Errorf("other: %+v", o)
	}
	if len(st.Quotas) != 2 || st.Quotas[0].App != "main" || len(st.Quotas[0].APIs) != 1 || st.Quotas[0].APIs[0].UsedMinute != 4 {
		t.Errorf("quotas: %+v", st.Quotas)
	}
	if len(st.Platforms) != 1 || st.Platforms[0].Ready || st.Platforms[0].Authorizers["ok"] != 9998 ||
		st.Platforms[0].Reasons[0] != "no valid component_verify_ticket (wxp.main.x)" {
		t.Errorf("platforms: %+v", st.Platforms)
	}
	if len(st.Errors) != 1 || st.ErrorsTotal != 1 || st.Errors[0].Kind != "circuit_open" || st.Errors[0].Replica != "r1" ||
		st.Errors[0].Message != "upstream said access_token=wxp.main.x secret=***" {
		t.Errorf("errors: %+v", st.Errors)
	}
	if len(st.Warnings) != 0 {
		t.Errorf("warnings: %v", st.Warnings)
	}
	// Empty sections are empty lists, never null, so the console needs no
	// special case.
	_, body = getStatus(t, admin.New(admin.Options{Apps: []admin.App{{Name: "a", Tokens: &fakeTokens{}}}}))
	for _, want := range []string{`"replicas":[{`, `"tickets":[]`, `"upstreams":[]`, `"platforms":[]`, `"errors":[]`, `"warnings":[]`, `"replicas":[]`} {
		if !strings.Contains(body, want) {
			t.Errorf("minimal status lacks %s: %s", want, body)
		}
	}
}

// A fleet or quota store that cannot be read leaves the rest of the
// document and says what is missing.
func TestStatusPartial(t *testing.T) {
	st, _ := getStatus(t, statusFixture(t, &fakeFleet{err: errors.New("redis down")}, errors.New("quota store: "+liveToken)))
	if len(st.Warnings) != 2 || !strings.Contains(st.Warnings[0], "fleet view unavailable") || !strings.Contains(st.Warnings[1], "wxp.main.x") {
		t.Errorf("warnings: %q", st.Warnings)
	}
	if len(st.Replicas) != 1 || st.Apps[0].Breaker.State != "closed" || len(st.Apps[0].Breaker.Replicas) != 1 {
		t.Errorf("local view: %+v %+v", st.Replicas, st.Apps[0].Breaker)
	}
	if len(st.Quotas) != 2 || len(st.Quotas[0].APIs) != 1 || st.Quotas[1].Error == "" {
		t.Errorf("quotas: %+v", st.Quotas)
	}
}

// The console is the embedded page and its two assets, each under the
// strict policy, with nothing inline and nothing from elsewhere.
func TestConsoleServedStrictly(t *testing.T) {
	h := admin.New(admin.Options{Apps: []admin.App{{Name: "a", Tokens: &fakeTokens{}}}})
	types := map[string]string{"/": "text/html", "/console.js": "text/javascript", "/console.css": "text/css"}
	for path, ctype := range types {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, path, nil))
		hd, body := w.Header(), w.Body.String()
		if w.Code != 200 || !strings.HasPrefix(hd.Get("Content-Type"), ctype) {
			t.Errorf("GET %s: %d %s", path, w.Code, hd.Get("Content-Type"))
		}
		csp := hd.Get("Content-Security-Policy")
		for _, d := range []string{"default-src 'none'", "script-src 'self'", "style-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"} {
			if !strings.Contains(csp, d) {
				t.Errorf("GET %s: CSP %q lacks %s", path, csp, d)
			}
		}
		if strings.Contains(csp, "unsafe") || hd.Get("X-Content-Type-Options") != "nosniff" || hd.Get("X-Frame-Options") != "DENY" {
			t.Errorf("GET %s: headers %v", path, hd)
		}
		// Nothing is loaded from another origin.
		if u := regexp.MustCompile(`(?i)(https?:)?//[a-z0-9.-]+\.[a-z]`).FindString(body); u != "" {
			t.Errorf("GET %s refers to another origin: %s", path, u)
		}
		if path == "/" {
			for _, bad := range []*regexp.Regexp{regexp.MustCompile(`<script(?:\s[^>]*)?>\s*[^<\s]`), regexp.MustCompile(`(?i)\sstyle=`),
				regexp.MustCompile(`(?i)\son[a-z]+=`), regexp.MustCompile(`<style`)} {
				if m := bad.FindString(body); m != "" {
					t.Errorf("the page has inline code or style: %q", m)
				}
			}
		}
		if path == "/console.js" && regexp.MustCompile(`innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(|new Function`).MatchString(body) {
			t.Error("the console script uses an HTML sink or eval")
		}
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(http.MethodHead, "/", nil))
	if w.Code != 200 {
		t.Errorf("HEAD /: %d", w.Code)
	}
	for _, path := range []string{"/console.html", "/index.html", "/console/console.js", "/../console.js"} {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, path, nil))
		if w.Code != 404 {
			t.Errorf("GET %s: %d, want 404", path, w.Code)
		}
	}
}
