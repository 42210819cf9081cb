package platform_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wxproxy/wxproxy/internal/redistest"
	"github.com/wxproxy/wxproxy/platform"
	"github.com/wxproxy/wxproxy/token"
)

func TestRedisStore(t *testing.T) {
	srv := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	t.Cleanup(func() { rdb.Close() })
	s := platform.NewRedisStore(rdb, "t1:")
	ctx := context.Background()
	now := time.Now()
	newer := platform.Ticket{Value: "b", CreateTime: 200, ReceivedAt: now, ExpiresAt: now.Add(time.Hour)}
	older := platform.Ticket{Value: "a", CreateTime: 100, ReceivedAt: now.Add(time.Second), ExpiresAt: now.Add(time.Hour)}
	if got, err := s.SaveTicket(ctx, "acme", newer); err != nil || got.Value != "b" {
		t.Fatalf("save = %v %v", got, err)
	}
	if got, _ := s.SaveTicket(ctx, "acme", older); got.Value != "b" {
		t.Errorf("an older ticket won: %v", got)
	}
	if got, _ := s.LoadTicket(ctx, "acme"); got.Value != "b" {
		t.Errorf("load = %v", got)
	}
	// Keys are hash-tagged per platform and never expire.
	for _, k := range []string{"t1:platform:{acme}:ticket"} {
		if ttl := rdb.TTL(ctx, k).Val(); ttl != -1 {
			t.Errorf("%s TTL = %v, want none", k, ttl)
		}
	}
	events := s.Watch(ctx, "acme")
	// The subscription starts asynchronously (peers re-read all records
	// periodically for that reason): put until an event arrives.
	deadline := time.Now().Add(5 * time.Second)
	for got := false; !got; {
		if time.Now().After(deadline) {
			t.Fatal("no record event")
		}
		if err := s.PutRecord(ctx, "acme", platform.Record{AppID: "wx1", RefreshToken: "rt", State: platform.StateOK}); err != nil {
			t.Fatal(err)
		}
		select {
		case id := <-events:
			if id != "wx1" {
				t.Errorf("event = %q", id)
			}
			got = true
		case <-time.After(100 * time.Millisecond):
		}
	}
	if r, err := s.Record(ctx, "acme", "wx1"); err != nil || r.RefreshToken != "rt" {
		t.Errorf("record = %v %v", r, err)
	}
	if rs, _ := s.Records(ctx, "acme"); len(rs) != 1 {
		t.Errorf("records = %v", rs)
	}
	if ttl := rdb.TTL(ctx, "t1:platform:{acme}:authorizers").Val(); ttl != -1 {
		t.Errorf("authorizers TTL = %v, want none", ttl)
	}
	s.DeleteRecord(ctx, "acme", "wx1")
	if _, err := s.Record(ctx, "acme", "wx1"); err != platform.ErrNotFound {
		t.Errorf("after delete: %v", err)
	}
}

// Two replicas on one Redis: a push to either serves both, a merchant
// authorized on one is known to the other, and a dead merchant token seen
// by both costs one fetch.
func TestRedisFleet(t *testing.T) {
	srv := redistest.Start(t)
	e := newEnv(t, 0)
	replica := func() *platform.Platform {
		rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
		t.Cleanup(func() { rdb.Close() })
		ps := platform.NewRedisStore(rdb, "f:")
		return e.platform(ps, token.NewRedisStore(rdb, "f:"), func(o *platform.Options) {
			o.Watch = func(ctx context.Context) <-chan string { return ps.Watch(ctx, "acme") }
		})
	}
	a := replica()
	b := replica() // the callback now reaches b only (e.rcv["acme"] = b)
	e.pushTicket()
	eventually(t, "b ready", func() bool { return b.Ready() == nil })
	if _, err := a.Component().Get(context.Background()); err != nil {
		t.Fatalf("replica a: component token: %v", err)
	}
	if got := e.sim.Stats().TokenFetches[compID].Component; got != 1 {
		t.Errorf("component fetches = %d, want 1 for the fleet", got)
	}
	e.authorize(merchant)
	ma, err := a.Merchant(context.Background(), merchant)
	if err != nil {
		t.Fatalf("replica a does not know the merchant b was told of: %v", err)
	}
	mb, _ := b.Merchant(context.Background(), merchant)
	ta, err := ma.Get(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if tb := mb.Current(); tb == nil || tb.Value != ta.Value {
		t.Fatal("replicas hold different merchant tokens")
	}
	before := e.sim.Stats().TokenFetches[merchant].Authorizer
	e.sim.Invalidate(merchant)
	var wg sync.WaitGroup
	for _, m := range []*platform.Merchant{ma, mb, ma, mb} {
		wg.Go(func() {
			if _, err := m.Invalidate(context.Background(), ta.Value); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if got := e.sim.Stats().TokenFetches[merchant].Authorizer; got != before+1 {
		t.Errorf("fleet fetches for one dead merchant token = %d, want 1", got-before)
	}
}

// TestRedisSizeTenThousand measures what 10,000 merchants occupy in Redis:
// their records (one hash) and their tokens. Run with -v for the number.
func TestRedisSizeTenThousand(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	srv := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	t.Cleanup(func() { rdb.Close() })
	ctx := context.Background()
	used := func() int64 {
		v, err := rdb.MemoryUsage(ctx, "s:platform:{acme}:authorizers").Result()
		if err != nil {
			return 0
		}
		return v
	}
	ps := platform.NewRedisStore(rdb, "s:")
	ts := token.NewRedisStore(rdb, "s:")
	now := time.Now()
	var tokens int64
	for i := range 10_000 {
		appid := fmt.Sprintf("wx%016x", i)
		if err := ps.PutRecord(ctx, "acme", platform.Record{AppID: appid, RefreshToken: "refreshtoken@@@" + fmt.Sprintf("%032x", i), State: platform.StateOK, UpdatedAt: now}); err != nil {
			t.Fatal(err)
		}
		if err := ts.Save(ctx, platform.MerchantKey("acme", appid), platform.TokenFor("86_"+fmt.Sprintf("%0128x", i), now)); err != nil {
			t.Fatal(err)
		}
		if i%1000 == 0 {
			n, _ := rdb.MemoryUsage(ctx, "s:token:{"+platform.MerchantKey("acme", appid)+"}").Result()
			tokens += n * 1000
		}
	}
	t.Logf("Redis, 10,000 merchants: records %.1f MiB (one hash), tokens ≈ %.1f MiB (one key each)", float64(used())/(1<<20), float64(tokens)/(1<<20))
	if rs, err := ps.Records(ctx, "acme"); err != nil || len(rs) != 10_000 {
		t.Errorf("records = %d, %v", len(rs), err)
	}
}
