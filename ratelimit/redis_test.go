package ratelimit_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wxproxy/wxproxy/internal/redistest"
	"github.com/wxproxy/wxproxy/ratelimit"
)

// fleet returns n limiters for app "main", each on its own Redis client,
// as n replicas would have.
func fleet(tb testing.TB, srv *redistest.Server, n int, s ratelimit.Settings, errs *atomic.Int64) []*ratelimit.Limiter {
	tb.Helper()
	var out []*ratelimit.Limiter
	for range n {
		store := ratelimit.NewRedisStore(srv.Client(tb), tb.Name()+":", n, func(error) { errs.Add(1) })
		out = append(out, ratelimit.New(s, ratelimit.Options{Name: "main", Store: store}))
	}
	return out
}

func TestRedisFleetPerMinute(t *testing.T) {
	srv := redistest.Start(t)
	var errs atomic.Int64
	ls := fleet(t, srv, 3, ratelimit.Settings{APIs: map[string]ratelimit.Limit{"/x": {PerMinute: 60, Burst: 10}}}, &errs)
	var ok atomic.Int64
	var wg sync.WaitGroup
	for i := range 300 {
		wg.Go(func() {
			err := ls[i%3].Allow(context.Background(), "/x")
			switch {
			case err == nil:
				ok.Add(1)
			case !errors.Is(err, ratelimit.ErrLimited):
				t.Error(err)
			}
		})
	}
	wg.Wait()
	// GCRA: the burst at once, plus what refills while the test runs (1/s).
	if got := ok.Load(); got < 10 || got > 10+5 {
		t.Errorf("fleet let %d of 300 through with per_minute 60 burst 10, want about 10 (at most 60+burst)", got)
	}
	if errs.Load() != 0 {
		t.Errorf("%d Redis errors", errs.Load())
	}
}

func TestRedisFleetDailyAndUsage(t *testing.T) {
	srv := redistest.Start(t)
	var errs atomic.Int64
	ls := fleet(t, srv, 3, ratelimit.Settings{APIs: map[string]ratelimit.Limit{"/d": {PerDay: 7}}, TokenFetchPerDay: 4}, &errs)
	ok := 0
	for i := range 30 {
		if ls[i%3].Allow(context.Background(), "/d") == nil {
			ok++
		}
	}
	if ok != 7 {
		t.Errorf("fleet daily: %d passed, want exactly 7", ok)
	}
	fetches := 0
	for i := range 10 {
		if ls[i%3].AllowTokenFetch(context.Background()) == nil {
			fetches++
		}
	}
	if fetches != 4 {
		t.Errorf("fleet token budget: %d fetches allowed, want 4", fetches)
	}
	u, err := ls[2].Usage(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(u) != 1 || u[0].API != "/d" || u[0].UsedDay != 7 || u[0].UsedMinute != 7 {
		t.Errorf("usage seen by another replica = %+v, want /d with 7 used", u)
	}
}

func TestRedisFleetRemembersUpstream(t *testing.T) {
	srv := redistest.Start(t)
	var errs atomic.Int64
	ls := fleet(t, srv, 2, ratelimit.Settings{RespectUpstream: true}, &errs)
	if err := ls[0].Allow(context.Background(), "/cgi-bin/message/custom/send"); err != nil { // primes replica 1's cache too
		t.Fatal(err)
	}
	_ = ls[1].Allow(context.Background(), "/cgi-bin/message/custom/send")
	if err := ls[0].Observe(context.Background(), "/cgi-bin/message/custom/send", 45009); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(3 * time.Second)
	for ls[1].Allow(context.Background(), "/cgi-bin/message/custom/send") == nil {
		if time.Now().After(deadline) {
			t.Fatal("replica 2 never learned of the upstream 45009")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := ls[1].Allow(context.Background(), "/cgi-bin/message/custom/send"); !errors.Is(err, ratelimit.ErrExhausted) {
		t.Errorf("replica 2: %v, want ErrExhausted", err)
	}
}

func TestRedisOutageFallsBackToSplitLimits(t *testing.T) {
	srv := redistest.Start(t)
	var errs atomic.Int64
	ls := fleet(t, srv, 3, ratelimit.Settings{APIs: map[string]ratelimit.Limit{"/x": {PerMinute: 60, PerDay: 1000, Burst: 30}}}, &errs)
	srv.Stop()
	ok := 0
	for range 100 {
		if ls[0].Allow(context.Background(), "/x") == nil {
			ok++
		}
	}
	if ok != 10 {
		t.Errorf("during the outage one replica let %d through, want burst 30/3 = 10", ok)
	}
	if errs.Load() == 0 {
		t.Error("Redis errors were not reported")
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	// Back on Redis: a fresh server, full limits.
	deadline := time.Now().Add(5 * time.Second)
	for ls[1].Allow(context.Background(), "/x") != nil || errs.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("did not resume on Redis")
		}
		time.Sleep(20 * time.Millisecond)
	}
	before := errs.Load()
	passed := 1
	for range 40 {
		if ls[1].Allow(context.Background(), "/x") == nil {
			passed++
		}
	}
	if errs.Load() != before || passed < 25 {
		t.Errorf("after Redis returned: %d passed, %d new errors; want ~30 and none", passed, errs.Load()-before)
	}
}

// The end of an outage is reported once, on the first answer after it.
func TestRedisOutageRecovery(t *testing.T) {
	srv := redistest.Start(t)
	var errs, ups atomic.Int64
	store := ratelimit.NewRedisStore(srv.Client(t), t.Name()+":", 1, func(error) { errs.Add(1) }).OnRecover(func() { ups.Add(1) })
	l := ratelimit.New(ratelimit.Settings{APIs: map[string]ratelimit.Limit{"/x": {PerMinute: 6000}}}, ratelimit.Options{Name: "main", Store: store})
	allow := func(n int) {
		for range n {
			_ = l.Allow(context.Background(), "/x")
		}
	}
	allow(3)
	if errs.Load() != 0 || ups.Load() != 0 {
		t.Fatalf("healthy store: %d errors, %d recoveries", errs.Load(), ups.Load())
	}
	for round := 1; round <= 2; round++ {
		before := errs.Load()
		srv.Stop()
		waitFor(t, func() bool { allow(1); return errs.Load() > before })
		if err := srv.Start(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, func() bool { allow(1); return ups.Load() == int64(round) })
		allow(20)
		if ups.Load() != int64(round) {
			t.Errorf("after outage %d: %d recoveries reported, want %d", round, ups.Load(), round)
		}
	}
}

func waitFor(tb testing.TB, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatal("condition not met in time")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
