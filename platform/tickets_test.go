package platform_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/wxproxy/wxproxy/platform"
	"github.com/wxproxy/wxproxy/token"
	"github.com/wxproxy/wxproxy/wxcrypt"
)

// A merchant's jsapi ticket is fetched on first demand with its authorizer
// token, held (a second ask costs WeChat nothing), kept fresh while the
// merchant is used, and a ticket type merchants do not have is refused.
func TestMerchantTicketsHeld(t *testing.T) {
	e := newEnv(t, 3*time.Second) // tickets and tokens live 3 s
	p := e.platform(nil, nil)
	e.pushTicket()
	eventually(t, "ready", func() bool { return p.Ready() == nil })
	e.authorize(merchant)
	m, err := p.Merchant(context.Background(), merchant)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	t1, err := m.Tickets().Get(ctx, token.TicketJSAPI)
	if err != nil {
		t.Fatal(err)
	}
	t2, err := m.Tickets().Get(ctx, token.TicketJSAPI)
	if err != nil || t2.Value != t1.Value {
		t.Fatalf("second ask: %v (same ticket: %v)", err, t2 != nil && t2.Value == t1.Value)
	}
	if n := e.sim.Stats().TicketFetches[merchant]["jsapi"]; n != 1 {
		t.Errorf("jsapi fetches = %d, want 1", n)
	}
	if _, err := m.Tickets().Get(ctx, token.TicketAgentConfig); !errors.Is(err, token.ErrUnknownTicketType) {
		t.Errorf("agent_config of a merchant: %v, want ErrUnknownTicketType", err)
	}
	st := m.Tickets().Statuses()
	if len(st) != 1 || st[0].Type != token.TicketJSAPI || st[0].Token == nil || st[0].Token.Value != t1.Value {
		t.Errorf("statuses = %+v", st)
	}
	if in := m.Info(); len(in.Tickets) != 1 || in.Tickets[0].Type != "jsapi" || in.Tickets[0].Fingerprint != token.Fingerprint(t1.Value) {
		t.Errorf("admin info tickets = %+v", in.Tickets)
	}
	// Used: the scheduler replaces the ticket when it expires, without
	// a caller waiting for it.
	eventually(t, "the ticket refreshed in the background", func() bool {
		m.Current() // the merchant is in use
		c := m.Tickets().Statuses()[0].Token
		return c != nil && c.Value != t1.Value && c.Valid(time.Now())
	})
}

// A restart on the file store adopts the stored ticket: no ticket fetch.
func TestMerchantTicketSurvivesRestart(t *testing.T) {
	e := newEnv(t, 0)
	path := filepath.Join(t.TempDir(), "platforms.json")
	fs := platform.NewFileStore(path, 10*time.Millisecond)
	p1, stop := e.platformStoppable(fs)
	e.pushTicket()
	eventually(t, "ready", func() bool { return p1.Ready() == nil })
	e.authorize(merchant)
	m1, _ := p1.Merchant(context.Background(), merchant)
	t1, err := m1.Tickets().Get(context.Background(), token.TicketJSAPI)
	if err != nil {
		t.Fatal(err)
	}
	stop()
	if err := fs.Close(); err != nil {
		t.Fatal(err)
	}
	before := e.sim.Stats().TicketFetches[merchant]["jsapi"]

	fs2 := platform.NewFileStore(path, 10*time.Millisecond)
	p2 := e.platform(fs2, fs2)
	m2, err := p2.Merchant(context.Background(), merchant)
	if err != nil {
		t.Fatal(err)
	}
	t2, err := m2.Tickets().Get(context.Background(), token.TicketJSAPI)
	if err != nil || t2.Value != t1.Value {
		t.Fatalf("ticket after restart: %v (same: %v)", err, t2 != nil && t2.Value == t1.Value)
	}
	if after := e.sim.Stats().TicketFetches[merchant]["jsapi"]; after != before {
		t.Errorf("restart fetched the ticket: %d → %d", before, after)
	}
}

// platformStoppable starts a platform on fs and returns a stop that ends
// its Run and waits for it.
func (e *env) platformStoppable(fs *platform.FileStore) (*platform.Platform, func()) {
	e.tb.Helper()
	crypt, err := wxcrypt.New(wxcrypt.Options{Token: msgToken, AESKey: aesKey})
	if err != nil {
		e.tb.Fatal(err)
	}
	p, err := platform.New(platform.Options{Name: "acme", ComponentAppID: compID, Secret: compSecret, Crypter: crypt,
		Upstream: e.simU, Store: fs, Tokens: fs, Tick: 20 * time.Millisecond})
	if err != nil {
		e.tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); p.Run(ctx) }()
	e.mu.Lock()
	e.rcv["acme"] = p
	e.mu.Unlock()
	return p, func() { cancel(); <-done }
}
