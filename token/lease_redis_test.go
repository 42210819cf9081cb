package token_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wxproxy/wxproxy/internal/redistest"
	"github.com/wxproxy/wxproxy/token"
)

// A lease is renewed by its holder, lost once it runs out, and a holder
// that lost it can neither renew it nor save under it.
func TestRedisLeaseFenced(t *testing.T) {
	srv := redistest.Start(t)
	prefix := t.Name() + ":"
	s := token.NewRedisStore(srv.Client(t), prefix)
	ctx := context.Background()
	a, ok, err := s.TryLease(ctx, "k", 300*time.Millisecond)
	if !ok || err != nil {
		t.Fatalf("TryLease = %v, %v", ok, err)
	}
	if _, ok, _ := s.TryLease(ctx, "k", time.Second); ok {
		t.Fatal("a second holder took a held lease")
	}
	if err := a.Renew(ctx); err != nil {
		t.Fatalf("Renew by the holder: %v", err)
	}
	// The holder stops renewing (paused): the lease runs out and another
	// replica takes it and saves its token.
	var b token.HeldLease
	waitUntil(t, 3*time.Second, func() bool {
		b, ok, _ = s.TryLease(ctx, "k", 10*time.Second)
		return ok
	})
	newer := token.Token{Value: "newer", ObtainedAt: time.Now(), ExpiresAt: time.Now().Add(time.Hour)}
	if err := b.Save(ctx, newer); err != nil {
		t.Fatalf("Save by the new holder: %v", err)
	}
	older := token.Token{Value: "older", ObtainedAt: time.Now(), ExpiresAt: time.Now().Add(2 * time.Hour)}
	if err := a.Save(ctx, older); !errors.Is(err, token.ErrLeaseLost) {
		t.Errorf("Save by the paused holder = %v, want ErrLeaseLost", err)
	}
	if err := a.Renew(ctx); !errors.Is(err, token.ErrLeaseLost) {
		t.Errorf("Renew by the paused holder = %v, want ErrLeaseLost", err)
	}
	a.Release() // must not release b's lease
	if _, ok, _ := s.TryLease(ctx, "k", time.Second); ok {
		t.Error("the paused holder's Release freed its successor's lease")
	}
	if got, _ := s.Load(ctx, "k"); got.Value != "newer" {
		t.Errorf("stored %q, want the new holder's token", got.Value)
	}
	b.Release()
	if _, ok, _ := s.TryLease(ctx, "k", time.Second); !ok {
		t.Error("Release left the lease held")
	}
}

// A fetch that lasts several lease lifetimes keeps its lease (renewed), so
// two replicas that see the same dead token still fetch once between them.
func TestFleetLeaseOutlivesFetch(t *testing.T) {
	srv := redistest.Start(t)
	prefix := t.Name() + ":"
	m := &mint{ttl: time.Hour, delay: 1200 * time.Millisecond}
	short := func(o *token.Options) { o.LockTTL = 300 * time.Millisecond }
	a := replica(t, srv, prefix, token.Classic, m, short)
	b := replica(t, srv, prefix, token.Classic, m, short)
	var wg sync.WaitGroup
	got := make([]string, 2)
	for i, c := range []*token.Cache{a, b} {
		wg.Go(func() {
			tok, err := c.Get(context.Background())
			if err != nil {
				t.Error(err)
				return
			}
			got[i] = tok.Value
		})
	}
	wg.Wait()
	if m.calls.Load() != 1 || got[0] != got[1] {
		t.Errorf("%d fetches, tokens %q; want 1 fetch shared by both (the lease is renewed during the 1.2s fetch)", m.calls.Load(), got)
	}
}

// gate is a Source whose next fetch waits until released.
type gate struct {
	mint
	entered chan struct{}
	release chan struct{}
	once    sync.Once
}

func (g *gate) Fetch(ctx context.Context, force bool) (token.Token, error) {
	first := false
	g.once.Do(func() { first = true })
	if first {
		close(g.entered)
		select {
		case <-g.release:
		case <-ctx.Done():
			return token.Token{}, ctx.Err()
		}
	}
	return g.mint.Fetch(ctx, force)
}

// A holder whose lease ran out while it fetched (paused, partitioned) must
// not overwrite the token of the replica that took over: it adopts that one
// and the store keeps it.
func TestFleetLostLeaseDoesNotOverwrite(t *testing.T) {
	srv := redistest.Start(t)
	prefix := t.Name() + ":"
	rdb := srv.Client(t)
	g := &gate{mint: mint{ttl: 2 * time.Hour}, entered: make(chan struct{}), release: make(chan struct{})}
	a := replica(t, srv, prefix, token.Classic, g, func(o *token.Options) { o.LockTTL = 3 * time.Second })
	done := make(chan *token.Token, 1)
	go func() {
		tok, err := a.Get(context.Background())
		if err != nil {
			t.Error(err)
		}
		done <- tok
	}()
	<-g.entered
	// The partition: a's lease disappears (as if it had run out while a was
	// paused) and b refreshes.
	if err := rdb.Del(context.Background(), prefix+"lock:{classic:wx1}").Err(); err != nil {
		t.Fatal(err)
	}
	bm := &mint{ttl: time.Hour}
	b := replica(t, srv, prefix, token.Classic, bm)
	tb, err := b.Get(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	close(g.release) // a comes back with its (later-expiring) token
	ta := <-done
	if ta == nil || ta.Value != tb.Value {
		t.Errorf("the holder that lost its lease serves %v, want the fleet's %q", ta, tb.Value)
	}
	s := token.NewRedisStore(rdb, prefix)
	if st, _ := s.Load(context.Background(), "classic:wx1"); st.Value != tb.Value {
		t.Errorf("store holds %q, want %q: the stale holder overwrote it", st.Value, tb.Value)
	}
}

// Forced refreshes are budgeted for the fleet: two replicas together force
// at most 20 a day (the default ForcedPerDay), 30 s apart.
func TestFleetForcedBudget(t *testing.T) {
	srv := redistest.Start(t)
	prefix := t.Name() + ":"
	var mu sync.Mutex
	now := time.Date(2026, 1, 1, 1, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	var forced atomic.Int64
	src := token.SourceFunc(func(_ context.Context, force bool) (token.Token, error) {
		if force {
			forced.Add(1)
		}
		n := clock()
		return token.Token{Value: "tok-" + n.String() + "-" + time.Now().String(), ObtainedAt: n, ExpiresAt: n.Add(2 * time.Hour)}, nil
	})
	opts := func(o *token.Options) {
		o.Key, o.Now = "stable:wx1", clock // the defaults: 20 a day, 30 s apart
	}
	cs := []*token.Cache{replica(t, srv, prefix, token.Stable, src, opts), replica(t, srv, prefix, token.Stable, src, opts)}
	refused := 0
	for i := range 60 {
		_, err := cs[i%2].Refresh(context.Background())
		switch {
		case errors.Is(err, token.ErrForceBudget):
			refused++
		case err != nil:
			t.Fatal(err)
		}
		if i%2 == 1 {
			advance(31 * time.Second) // each pair: one allowed, one too soon
		}
	}
	// Per replica budgets would have allowed 20 each, and a pair 30 s
	// apart two at a time: 40. (A replica whose token another one just
	// replaced adopts that one instead of forcing.)
	if forced.Load() != 20 || refused < 20 {
		t.Errorf("two replicas forced %d refreshes (%d refused) in one day, want 20 for the fleet", forced.Load(), refused)
	}
	advance(24 * time.Hour)
	if _, err := cs[1].Refresh(context.Background()); err != nil || forced.Load() != 21 {
		t.Errorf("next day: %v, %d forced; want the budget back", err, forced.Load())
	}
}
