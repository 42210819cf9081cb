package suite_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wxproxy/wxproxy/internal/redistest"
	"github.com/wxproxy/wxproxy/platform"
	"github.com/wxproxy/wxproxy/suite"
	"github.com/wxproxy/wxproxy/token"
)

func run(t *testing.T, s *suite.Suite) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

func eventually(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestRunKick: a ticket pushed to a running suite has the suite token
// fetched at once, without waiting out the failed fetch's backoff.
func TestRunKick(t *testing.T) {
	e := newEnv(t)
	s := e.suite(nil, nil, func(o *suite.Options) { o.MinBackoff = time.Hour })
	run(t, s)
	eventually(t, "a failed first fetch", func() bool { return s.Component().Status().Failures > 0 })
	_ = e.pushTicket(s, "ticket-1")
	eventually(t, "the suite token", func() bool { return s.Component().Current().Valid(e.clock()) })
}

// TestRedisFleet: two replicas on one Redis. A ticket pushed to one
// serves both, the suite token is fetched once for the fleet, a corp
// installed on one is known to the other, its permanent code is stored
// in Redis, and a dead corp token seen by both costs one fetch.
func TestRedisFleet(t *testing.T) {
	srv := redistest.Start(t)
	e := newEnv(t)
	replica := func() (*suite.Suite, *platform.RedisStore) {
		rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
		t.Cleanup(func() { rdb.Close() })
		ps := platform.NewRedisStore(rdb, "f:")
		s := e.suite(ps, token.NewRedisStore(rdb, "f:"), func(o *suite.Options) {
			o.Watch = func(ctx context.Context) <-chan string { return ps.Watch(ctx, "suiteco") }
			o.PermanentCodeV2 = true
		})
		run(t, s)
		return s, ps
	}
	a, ps := replica()
	b, _ := replica()
	if err := e.pushTicket(b, "ticket-1"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "b ready", func() bool { return b.Ready() == nil })
	var wg sync.WaitGroup
	for _, s := range []*suite.Suite{a, b, a, b} {
		wg.Go(func() {
			if _, err := s.Component().Get(context.Background()); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if got := e.fake.count("suite"); got != 1 {
		t.Errorf("suite token fetches = %d, want 1 for the fleet", got)
	}
	if got := e.fake.count("provider"); got != 1 {
		t.Errorf("provider token fetches = %d, want 1 for the fleet", got)
	}
	if err := e.createAuth(b, corpA); err != nil {
		t.Fatal(err)
	}
	if r, err := ps.Record(context.Background(), "suiteco", corpA); err != nil || r.RefreshToken == "" {
		t.Fatalf("permanent code in Redis: %+v, %v", r, err)
	}
	ca, err := a.Corp(context.Background(), corpA)
	if err != nil {
		t.Fatalf("replica a does not know the corp b was told of: %v", err)
	}
	cb, _ := b.Corp(context.Background(), corpA)
	ta, err := ca.Get(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if tb, err := cb.Get(context.Background()); err != nil || tb.Value != ta.Value {
		t.Fatalf("replicas hold different corp tokens: %v", err)
	}
	before := e.fake.count("corp")
	e.fake.kill(corpA)
	e.advance(time.Second) // the new token expires later than the dead one
	for _, c := range []*suite.Corp{ca, cb, ca, cb} {
		wg.Go(func() {
			if _, err := c.Invalidate(context.Background(), ta.Value); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if got := e.fake.count("corp") - before; got != 1 {
		t.Errorf("fleet fetches for one dead corp token = %d, want 1", got)
	}
}

// TestProactiveRefresh: a corp called recently gets a new token when its
// token runs out, from the scheduler and without a caller waiting; a corp
// not called within CorpIdle is left alone until its next call.
func TestProactiveRefresh(t *testing.T) {
	e := newEnv(t)
	s := e.suite(nil, nil, func(o *suite.Options) { o.Tick = 5 * time.Millisecond; o.CorpIdle = time.Hour })
	_ = e.pushTicket(s, "ticket-1")
	_ = e.createAuth(s, corpA)
	_ = e.createAuth(s, "wwidlecorp")
	run(t, s)
	busy, _ := s.Corp(context.Background(), corpA)
	idle, _ := s.Corp(context.Background(), "wwidlecorp")
	old := busy.Current() // a call: busy was used now
	idleOld := idle.Cache().Current()
	e.fake.kill(corpA)
	e.fake.kill("wwidlecorp")
	e.advance(2*time.Hour + time.Second)
	_ = e.pushTicket(s, "ticket-2") // WeCom pushes one every 10 minutes
	busy.Current()                  // called again, within CorpIdle of the new time
	eventually(t, "the busy corp's new token", func() bool {
		t := busy.Cache().Current()
		return t != nil && t.Value != old.Value && t.Valid(e.clock())
	})
	if cur := idle.Cache().Current(); cur.Value != idleOld.Value {
		t.Error("an idle corp was refreshed proactively")
	}
	if got := e.fake.count("suite"); got < 2 {
		t.Errorf("suite token fetches = %d: the expired suite token was not refreshed", got)
	}
}
