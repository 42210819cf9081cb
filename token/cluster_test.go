package token_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/wxproxy/wxproxy/internal/redistest"
	"github.com/wxproxy/wxproxy/token"
)

// On a 3-master Cluster, through a client seeded with one node, every
// command and script of the token store touches one slot: save and load,
// the announcement, the lease (take, renew, fenced save, release) and the
// fleet's forced-refresh budget. A multi-slot script would fail with
// CROSSSLOT.
func TestRedisStoreOnCluster(t *testing.T) {
	c := redistest.StartCluster(t)
	s := token.NewRedisStore(c.Client(t), "wx:")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	watch := token.NewRedisStore(c.Client(t), "wx:").Watch(ctx)

	// Keys spread over the masters: each token's keys share its slot.
	keys := []string{"classic:wx1", "stable:wx2", "wecom:ww3|s", "classic:wx4"}
	for _, k := range keys {
		l, ok, err := s.TryLease(ctx, k, time.Second)
		if err != nil || !ok {
			t.Fatalf("TryLease %s = %v, %v", k, ok, err)
		}
		if err := l.Renew(ctx); err != nil {
			t.Fatalf("Renew %s: %v", k, err)
		}
		tok := token.Token{Value: "tok-" + k, ObtainedAt: time.Now(), ExpiresAt: time.Now().Add(time.Hour)}
		if err := l.Save(ctx, tok); err != nil {
			t.Fatalf("fenced Save %s: %v", k, err)
		}
		l.Release()
		if got, err := s.Load(ctx, k); err != nil || got.Value != tok.Value {
			t.Errorf("Load %s = %q, %v", k, got.Value, err)
		}
		select {
		case got := <-watch:
			if got != k {
				t.Errorf("announced %q, want %q", got, k)
			}
		case <-ctx.Done():
			t.Fatalf("no announcement of %s", k)
		}
		if _, ok, err := s.TryLease(ctx, k, time.Second); !ok || err != nil {
			t.Errorf("lease of %s not released: %v, %v", k, ok, err)
		}
	}
	seen := map[string]bool{}
	for _, k := range keys {
		seen[c.NodeOf(t, "wx:token:{"+k+"}").Addr] = true
	}
	if len(seen) < 2 {
		t.Errorf("the test keys landed on %d master(s); want them spread", len(seen))
	}

	// A lease that ran out cannot save.
	a, _, _ := s.TryLease(ctx, "classic:wx9", 200*time.Millisecond)
	var b token.HeldLease
	waitUntil(t, 3*time.Second, func() bool { var ok bool; b, ok, _ = s.TryLease(ctx, "classic:wx9", time.Minute); return ok })
	defer b.Release()
	if err := a.Save(ctx, token.Token{Value: "stale", ExpiresAt: time.Now().Add(time.Hour)}); !errors.Is(err, token.ErrLeaseLost) {
		t.Errorf("Save under a lost lease on a Cluster = %v, want ErrLeaseLost", err)
	}

	now := time.Now()
	okFirst, err1 := s.TakeForced(ctx, "stable:wx2", "2026-12-06", 20, 30*time.Second, now)
	okSoon, err2 := s.TakeForced(ctx, "stable:wx2", "2026-12-06", 20, 30*time.Second, now.Add(time.Second))
	if err1 != nil || err2 != nil || !okFirst || okSoon {
		t.Errorf("forced budget on a Cluster: %v %v, %v %v; want the first taken and the second refused (30s apart)", okFirst, err1, okSoon, err2)
	}
}
