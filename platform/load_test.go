package platform

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wxproxy/wxproxy/token"
	"github.com/wxproxy/wxproxy/wxcrypt"
)

// TestRefreshLoadTenThousand measures the steady refresh load of 10,000
// merchants all in use: tokens of 2 h with expiries spread evenly, the
// clock moved through 2 h in 30 s steps, one scheduler refreshing what is
// due. Run with -v for the fetches per minute.
func TestRefreshLoadTenThousand(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	n := 10_000
	if raceEnabled {
		n = 1_000 // the same measurement, smaller: the race detector is slow
	}
	var mu sync.Mutex
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	var fetches atomic.Int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		k := fetches.Add(1)
		fmt.Fprintf(w, `{"authorizer_access_token":"86_fetched%d","expires_in":7200,"authorizer_refresh_token":"rt"}`, k)
	}))
	defer up.Close()
	store, tokens := new(MemoryStore), new(token.MemoryStore)
	ctx := context.Background()
	start := clock()
	_ = tokens.Save(ctx, ComponentKey("acme", "wxc"), token.Token{Value: "comp", ObtainedAt: start, ExpiresAt: start.Add(100 * time.Hour)})
	for i := range n {
		appid := fmt.Sprintf("wx%016x", i)
		_ = store.PutRecord(ctx, "acme", Record{AppID: appid, RefreshToken: "rt", State: StateOK})
		exp := start.Add(time.Duration(i) * 2 * time.Hour / time.Duration(n))
		_ = tokens.Save(ctx, MerchantKey("acme", appid), token.Token{Value: "86_initial" + appid, ObtainedAt: exp.Add(-2 * time.Hour), ExpiresAt: exp.Add(time.Minute)})
	}
	crypt, _ := wxcrypt.New(wxcrypt.Options{Token: "tok", AESKey: "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"})
	p, _ := New(Options{Name: "acme", ComponentAppID: "wxc", Secret: "s", Crypter: crypt, Upstream: up.URL,
		Store: store, Tokens: tokens, Now: clock, Tick: time.Millisecond, Concurrency: 16})
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); p.Run(rctx) }()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(30 * time.Second)
	for len(p.Stats2()) < n {
		if time.Now().After(deadline) {
			t.Fatal("records not loaded")
		}
		time.Sleep(time.Millisecond)
	}
	for _, m := range p.Stats2() {
		if _, err := m.Get(ctx); err != nil { // in use, loaded from the store
			t.Fatal(err)
		}
	}
	// Those already within their refresh lead are refreshed at once; the
	// steady load is counted from then on.
	for len(p.due()) > 0 || busy(p) {
		time.Sleep(time.Millisecond)
	}
	fetches.Store(0)
	const hours = 2
	for range hours * 120 {
		mu.Lock()
		now = now.Add(30 * time.Second)
		mu.Unlock()
		for _, m := range p.Stats2() {
			m.touch() // every merchant is called
		}
		for len(p.due()) > 0 || busy(p) {
			if time.Now().After(deadline.Add(5 * time.Minute)) {
				t.Fatal("refreshes do not finish")
			}
			time.Sleep(time.Millisecond)
		}
	}
	perMin := float64(fetches.Load()) / (hours * 60)
	t.Logf("%d merchants in use, 2 h tokens, refresh_before 10m: %d fetches in %d h = %.0f per minute", n, fetches.Load(), hours, perMin)
	perMin = perMin * 10_000 / float64(n)
	if perMin < 60 || perMin > 120 {
		t.Errorf("refresh load %.0f/min, want about 90", perMin)
	}
	for _, m := range p.Stats2() {
		if !m.Current().Valid(clock()) {
			t.Fatalf("merchant %s has no valid token", m.appid)
		}
	}
}

// Stats2 lists the merchants (test helper).
func (p *Platform) Stats2() []*Merchant {
	p.mu.RLock()
	defer p.mu.RUnlock()
	out := make([]*Merchant, 0, len(p.merchants))
	for _, m := range p.merchants {
		out = append(out, m)
	}
	return out
}

func busy(p *Platform) bool {
	for _, m := range p.Stats2() {
		if m.busy.Load() {
			return true
		}
	}
	return false
}
