package admin_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wxproxy/wxproxy/admin"
	"github.com/wxproxy/wxproxy/token"
)

// ticketFixture is an admin port over an app whose jsapi ticket is held
// from the start and whose wx_card ticket fetch fails.
type ticketFixture struct {
	url     string
	tickets *token.Tickets
	fetches atomic.Int64
}

func newTicketFixture(t *testing.T) *ticketFixture {
	t.Helper()
	f := &ticketFixture{}
	kind := token.TicketKind()
	var err error
	f.tickets, err = token.NewTickets(token.TicketTypes(false), []token.TicketType{token.TicketJSAPI, token.TicketWxCard}, func(typ token.TicketType) (*token.Cache, error) {
		return token.New(token.Options{App: "main", Kind: &kind, Fetcher: token.SourceFunc(func(context.Context, bool) (token.Token, error) {
			if typ == token.TicketWxCard {
				return token.Token{}, errors.New("token: wx_card ticket: fetched with access_token=" + liveToken)
			}
			n := f.fetches.Add(1)
			now := time.Now()
			return token.Token{Value: fmt.Sprintf("ticket-%d", n), ObtainedAt: now, ExpiresAt: now.Add(2 * time.Hour)}, nil
		})})
	})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tokens := &fakeTokens{status: token.Status{Token: &token.Token{Value: liveToken, ObtainedAt: now, ExpiresAt: now.Add(time.Hour)}},
		refresh: func() (*token.Token, error) {
			return &token.Token{Value: liveToken, ExpiresAt: now.Add(time.Hour)}, nil
		}}
	h := admin.New(admin.Options{
		Apps:  []admin.App{{Name: "main", Kind: "official", AppID: "wx1", TokenMode: "stable", Tokens: tokens, Tickets: f.tickets}},
		Token: func() string { return adminToken }, Scrub: scrub,
	})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	f.url = srv.URL
	return f
}

func adminCall(t *testing.T, method, url string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestTicketsOnAdmin(t *testing.T) {
	f := newTicketFixture(t)
	// Before any fetch: not ready, with a reason per configured ticket.
	status, body := adminCall(t, http.MethodGet, f.url+"/readyz")
	if status != http.StatusServiceUnavailable || !strings.Contains(body, "app main: no valid jsapi ticket") || !strings.Contains(body, "app main: no valid wx_card ticket") {
		t.Errorf("readyz before the tickets: %d %s", status, body)
	}
	if _, err := f.tickets.Get(context.Background(), token.TicketJSAPI); err != nil {
		t.Fatal(err)
	}
	_, _ = f.tickets.Get(context.Background(), token.TicketWxCard)
	status, body = adminCall(t, http.MethodGet, f.url+"/readyz")
	if status != http.StatusServiceUnavailable || strings.Contains(body, "jsapi") || !strings.Contains(body, "wx_card ticket (last fetch:") {
		t.Errorf("readyz with jsapi held, wx_card failing: %d %s", status, body)
	}
	if strings.Contains(body, liveToken) {
		t.Errorf("readyz shows the access token: %s", body)
	}

	status, body = adminCall(t, http.MethodGet, f.url+"/admin/apps")
	var apps []struct {
		Ready   bool `json:"ready"`
		Tickets []struct {
			Type        string `json:"type"`
			Held        bool   `json:"held"`
			Present     bool   `json:"present"`
			Fingerprint string `json:"fingerprint"`
			TTLSeconds  int64  `json:"ttl_seconds"`
			LastError   string `json:"last_error"`
		} `json:"tickets"`
	}
	if err := json.Unmarshal([]byte(body), &apps); err != nil || status != http.StatusOK || len(apps) != 1 {
		t.Fatalf("/admin/apps: %d %s", status, body)
	}
	tk := apps[0].Tickets
	if len(tk) != 2 || tk[0].Type != "jsapi" || !tk[0].Held || !tk[0].Present || tk[0].Fingerprint != token.Fingerprint("ticket-1") ||
		tk[0].TTLSeconds < 7190 || tk[1].Type != "wx_card" || tk[1].Present || tk[1].LastError == "" {
		t.Errorf("tickets on /admin/apps: %s", body)
	}
	if apps[0].Ready {
		t.Error("app ready while a configured ticket is missing")
	}
	if strings.Contains(body, liveToken) || strings.Contains(body, "ticket-1") {
		t.Errorf("/admin/apps shows a token or a ticket: %s", body)
	}

	status, body = adminCall(t, http.MethodPost, f.url+"/admin/apps/main/refresh?what=ticket:jsapi")
	if status != http.StatusOK || !strings.Contains(body, `"what":"ticket:jsapi"`) || !strings.Contains(body, token.Fingerprint("ticket-2")) {
		t.Errorf("refresh ticket:jsapi: %d %s", status, body)
	}
	if f.fetches.Load() != 2 {
		t.Errorf("jsapi fetches = %d, want 2", f.fetches.Load())
	}
	status, body = adminCall(t, http.MethodPost, f.url+"/admin/apps/main/refresh?what=ticket:wx_card")
	if status != http.StatusBadGateway || strings.Contains(body, liveToken) {
		t.Errorf("failing refresh: %d %s, want 502 without the token", status, body)
	}
	for _, what := range []string{"ticket:agent_config", "ticket:nope", "ticket:", "tickets", "ticket:jsapi%00"} {
		if status, body := adminCall(t, http.MethodPost, f.url+"/admin/apps/main/refresh?what="+what); status != http.StatusBadRequest {
			t.Errorf("what=%s: %d %s, want 400", what, status, body)
		}
	}
	if st := f.tickets.Statuses(); len(st) != 2 {
		t.Errorf("%d tickets held after refused refreshes, want 2", len(st))
	}
	if status, body := adminCall(t, http.MethodPost, f.url+"/admin/apps/main/refresh?what=token"); status != http.StatusOK || !strings.Contains(body, `"what":"token"`) {
		t.Errorf("what=token: %d %s", status, body)
	}
}
