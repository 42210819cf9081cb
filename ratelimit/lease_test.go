package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/wxproxy/wxproxy/internal/redistest"
)

// roundTrips counts the commands and pipelines a Redis client sends.
type roundTrips struct{ n atomic.Int64 }

func (r *roundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }
func (r *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error { r.n.Add(1); return next(ctx, cmd) }
}
func (r *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error { r.n.Add(1); return next(ctx, cmds) }
}

var _ redis.Hook = (*roundTrips)(nil)

// countedStore returns a RedisStore on srv and the count of its round trips.
func countedStore(tb testing.TB, srv *redistest.Server, prefix string, replicas int, onError func(error)) (*RedisStore, *roundTrips) {
	tb.Helper()
	rdb := srv.Client(tb)
	rt := &roundTrips{}
	rdb.AddHook(rt)
	return NewRedisStore(rdb, prefix, replicas, onError), rt
}

// untilDenied calls Allow from workers goroutines of each limiter, each
// until it is refused (or gives up after most calls), and returns how many
// were admitted. Every worker ending on a refusal means every replica's
// lease is empty at the end: nothing is left stranded.
func untilDenied(tb testing.TB, ls []*Limiter, workers, most int) int64 {
	tb.Helper()
	var ok atomic.Int64
	var wg sync.WaitGroup
	for _, l := range ls {
		for range workers {
			wg.Go(func() {
				for range most {
					err := l.Allow(context.Background(), "/x")
					if err == nil {
						ok.Add(1)
						continue
					}
					if !errors.Is(err, ErrLimited) && !errors.Is(err, ErrExhausted) {
						tb.Error(err)
					}
					return
				}
				tb.Errorf("never refused after %d calls", most)
			})
		}
	}
	wg.Wait()
	return ok.Load()
}

// TestLeaseFleetStaysUnderLimit: two replicas on one redis-server hammer
// one per-minute limit with leases of up to 100 permits. Over a minute of
// steady demand beyond the limit the fleet admits no more than the GCRA
// allows (burst + a minute's rate: overshoot 0), and no less than that
// minus replicas × the largest lease.
func TestLeaseFleetStaysUnderLimit(t *testing.T) {
	srv := redistest.Start(t)
	c := newClock()
	lim := Limit{PerMinute: 6000, Burst: 800, PerDay: 1_000_000}
	const replicas = 2
	capN := int64(leaseCap(lim, maxLease))
	if capN != 100 {
		t.Fatalf("leaseCap(%+v) = %d, want 100 (burst/8)", lim, capN)
	}
	var ls []*Limiter
	var trips []*roundTrips
	for range replicas {
		s, rt := countedStore(t, srv, "fleet:", replicas, func(err error) { t.Errorf("redis: %v", err) })
		ls = append(ls, New(Settings{APIs: map[string]Limit{"/x": lim}}, Options{Name: "main", Store: s, Now: c.Now}))
		trips = append(trips, rt)
	}
	// One instant: the burst.
	got := untilDenied(t, ls, 8, 100_000)
	if want := int64(lim.Burst); got > want || got < want-replicas*capN {
		t.Errorf("at one instant the fleet admitted %d, want %d at most and %d at least", got, want, want-replicas*capN)
	}
	total := got
	// A minute of steady demand beyond the rate, second by second: each
	// step the leases of the last one have expired.
	for range 60 {
		c.Advance(time.Second)
		total += untilDenied(t, ls, 8, 100_000)
	}
	limit := int64(lim.Burst + lim.PerMinute)
	t.Logf("fleet of %d admitted %d in a minute under burst %d + %d/min; %d and %d round trips", replicas, total, lim.Burst, lim.PerMinute, trips[0].n.Load(), trips[1].n.Load())
	if total > limit || total < limit-replicas*capN {
		t.Errorf("fleet admitted %d over a minute, want at most %d and at least %d", total, limit, limit-replicas*capN)
	}
}

// TestLeaseFleetRealClock: the same on the real clock, with the replicas
// racing each other for real: from a fresh key the fleet admits at most
// burst + elapsed × rate.
func TestLeaseFleetRealClock(t *testing.T) {
	srv := redistest.Start(t)
	lim := Limit{PerMinute: 60_000, Burst: 800}
	var ls []*Limiter
	for range 2 {
		s := NewRedisStore(srv.Client(t), "real:", 2, func(err error) { t.Errorf("redis: %v", err) })
		ls = append(ls, New(Settings{APIs: map[string]Limit{"/x": lim}}, Options{Name: "main", Store: s}))
	}
	start := time.Now()
	deadline := start.Add(300 * time.Millisecond)
	var ok atomic.Int64
	var wg sync.WaitGroup
	for _, l := range ls {
		for range 8 {
			wg.Go(func() {
				for time.Now().Before(deadline) {
					if l.Allow(context.Background(), "/x") == nil {
						ok.Add(1)
					}
				}
			})
		}
	}
	wg.Wait()
	elapsed := time.Since(start)
	// +1: the GCRA admits a request up to a millisecond early.
	most := int64(lim.Burst) + int64(elapsed.Seconds()*float64(lim.PerMinute)/60) + 1
	t.Logf("admitted %d in %v, at most %d allowed", ok.Load(), elapsed, most)
	if ok.Load() > most {
		t.Errorf("fleet admitted %d in %v, want at most %d", ok.Load(), elapsed, most)
	}
	if ok.Load() < int64(lim.Burst) {
		t.Errorf("fleet admitted %d, want at least the burst %d", ok.Load(), lim.Burst)
	}
}

// TestLeaseFleetDaily: a daily limit leased in batches of per_day/1000 is
// met exactly by the fleet.
func TestLeaseFleetDaily(t *testing.T) {
	srv := redistest.Start(t)
	c := newClock()
	lim := Limit{PerDay: 8000}
	var ls []*Limiter
	for range 2 {
		s := NewRedisStore(srv.Client(t), "daily:", 2, func(err error) { t.Errorf("redis: %v", err) })
		ls = append(ls, New(Settings{APIs: map[string]Limit{"/x": lim}}, Options{Name: "main", Store: s, Now: c.Now}))
	}
	if got := untilDenied(t, ls, 8, 100_000); got != int64(lim.PerDay) {
		t.Errorf("fleet admitted %d with per_day %d, want exactly that", got, lim.PerDay)
	}
	u, err := ls[1].Usage(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(u) != 1 || u[0].UsedDay != int64(lim.PerDay) {
		t.Errorf("usage = %+v, want %d used today", u, lim.PerDay)
	}
}

// TestLeaseRoundTrips counts Redis round trips under steady load on a
// limit like the load benchmark's (per_minute 10,000,000).
func TestLeaseRoundTrips(t *testing.T) {
	srv := redistest.Start(t)
	for _, tt := range []struct {
		name     string
		maxLease int
		most     int64 // round trips per 1000 requests
	}{
		{"leases", maxLease, 20},
		{"no leases", 1, 1010}, // + EVAL after the first NOSCRIPTs
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, rt := countedStore(t, srv, t.Name()+":", 1, func(err error) { t.Errorf("redis: %v", err) })
			s.maxLease = tt.maxLease
			l := New(Settings{APIs: map[string]Limit{"/x": {PerMinute: 10_000_000}}}, Options{Name: "main", Store: s})
			const workers, each = 16, 2000
			var wg sync.WaitGroup
			for range workers {
				wg.Go(func() {
					for range each {
						if err := l.Allow(context.Background(), "/x"); err != nil {
							t.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			per1000 := float64(rt.n.Load()) * 1000 / (workers * each)
			t.Logf("%s: %d round trips for %d requests: %.1f per 1000", tt.name, rt.n.Load(), workers*each, per1000)
			if per1000 > float64(tt.most) {
				t.Errorf("%.1f round trips per 1000 requests, want at most %d", per1000, tt.most)
			}
		})
	}
}

// TestLeaseGivesBack: permits of a lease count as used at once; those
// unused when it expires go back to the counters and to the untouched
// bucket in the next round trip.
func TestLeaseGivesBack(t *testing.T) {
	srv := redistest.Start(t)
	c := newClock()
	s := NewRedisStore(srv.Client(t), "back:", 1, func(err error) { t.Errorf("redis: %v", err) })
	lim := Limit{PerMinute: 60, Burst: 60, PerDay: 100_000} // cap 7: burst/8
	l := New(Settings{APIs: map[string]Limit{"/x": lim}}, Options{Name: "main", Store: s, Now: c.Now})
	ctx := context.Background()
	// Leases of 1, 2, 4, then 7: 14 leased, 10 used, 4 left.
	if ok, err := allowN(l, "/x", 10); ok != 10 {
		t.Fatalf("%d of 10 allowed (%v)", ok, err)
	}
	used := func() (int64, int64) {
		t.Helper()
		m, d, err := s.Used(ctx, "main|api|/x", c.Now(), "2026-11-21")
		if err != nil {
			t.Fatal(err)
		}
		return m, d
	}
	if m, d := used(); m != 14 || d != 14 {
		t.Errorf("used with a lease of 4 outstanding = %d this minute, %d today; want 14 and 14 (leased counts as used)", m, d)
	}
	// The lease expires; the next request gives back 4 and takes 1. At
	// 1/s, 2s refilled 2: the bucket holds 60-10+2 = 52 after the give-back
	// (48 without it), 51 after that request.
	c.Advance(2 * time.Second)
	if err := l.Allow(ctx, "/x"); err != nil {
		t.Fatal(err)
	}
	if m, d := used(); m != 11 || d != 11 {
		t.Errorf("used after the give-back = %d this minute, %d today; want 11 and 11", m, d)
	}
	if ok, _ := allowN(l, "/x", 100); ok != 51 {
		t.Errorf("after the give-back %d allowed at once, want 51", ok)
	}
}

// TestLeaseKeepsWaitMode: with on_limit wait, a leased limit still
// reserves past its burst as before leasing.
func TestLeaseKeepsWaitMode(t *testing.T) {
	srv := redistest.Start(t)
	c := newClock()
	s := NewRedisStore(srv.Client(t), "wait:", 1, func(err error) { t.Errorf("redis: %v", err) })
	// One every 10ms, burst 16 (leases up to 2): 16 now, then 10 within 100ms.
	l := New(Settings{APIs: map[string]Limit{"/x": {PerMinute: 6000, Burst: 16}}, Wait: true, MaxWait: 100 * time.Millisecond},
		Options{Name: "main", Store: s, Now: c.Now})
	var ok, limited atomic.Int64
	var wg sync.WaitGroup
	for range 40 {
		wg.Go(func() {
			switch err := l.Allow(context.Background(), "/x"); {
			case err == nil:
				ok.Add(1)
			case errors.Is(err, ErrLimited):
				limited.Add(1)
			default:
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if ok.Load() != 26 || limited.Load() != 14 {
		t.Errorf("40 at once, burst 16, 1/10ms, max_wait 100ms: %d admitted, %d refused; want 26 and 14", ok.Load(), limited.Load())
	}
}

// TestLeaseOutage: while Redis is down a lease already held is still
// handed out, then the local fallback serves, with the error reported.
func TestLeaseOutage(t *testing.T) {
	srv := redistest.Start(t)
	c := newClock()
	var errs atomic.Int64
	s := NewRedisStore(srv.Client(t), "outage:", 3, func(error) { errs.Add(1) })
	l := New(Settings{APIs: map[string]Limit{"/x": {PerMinute: 6000, Burst: 800}}}, Options{Name: "main", Store: s, Now: c.Now})
	if ok, err := allowN(l, "/x", 10); ok != 10 { // 15 leased, 5 left
		t.Fatalf("%d of 10 allowed (%v)", ok, err)
	}
	srv.Stop()
	if ok, _ := allowN(l, "/x", 5); ok != 5 || errs.Load() != 0 {
		t.Errorf("Redis down, lease of 5 held: %d of 5 allowed, %d errors; want 5 and none", ok, errs.Load())
	}
	if ok, _ := allowN(l, "/x", 300); ok != 800/3 || errs.Load() == 0 {
		t.Errorf("Redis down, lease spent: %d allowed, %d errors; want burst 800/3 = %d and errors", ok, errs.Load(), 800/3)
	}
}

// TestLeaseHotPathAllocates nothing while the lease has permits.
func TestLeaseHotPathAllocatesNothing(t *testing.T) {
	srv := redistest.Start(t)
	c := newClock()
	s := NewRedisStore(srv.Client(t), "alloc:", 1, func(err error) { t.Errorf("redis: %v", err) })
	l := New(Settings{APIs: map[string]Limit{"/x": {PerMinute: 10_000_000}}}, Options{Name: "main", Store: s, Now: c.Now})
	ctx := context.Background()
	k := s.leasesOf("main|api|/x")
	for g := k.cur.Load(); g == nil || g.left.Load() < 200; g = k.cur.Load() {
		if err := l.Allow(ctx, "/x"); err != nil {
			t.Fatal(err)
		}
	}
	if n := testing.AllocsPerRun(100, func() { _ = l.Allow(ctx, "/x") }); n != 0 {
		t.Errorf("Allow from a lease: %v allocations, want 0", n)
	}
}

// TestLeaseTableBounded: the lease table is emptied past maxLeaseKeys.
func TestLeaseTableBounded(t *testing.T) {
	s := NewRedisStore(redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", Dialer: func(context.Context, string, string) (net.Conn, error) {
		return nil, errors.New("no redis")
	}}), "t:", 1, nil)
	full := make(map[string]*leases, maxLeaseKeys)
	for i := range maxLeaseKeys {
		full[fmt.Sprint("k", i)] = &leases{}
	}
	s.leases.Store(&full)
	s.leasesOf("k0") // known: the table stays
	if n := len(*s.leases.Load()); n != maxLeaseKeys {
		t.Errorf("%d lease keys after a known key, want %d", n, maxLeaseKeys)
	}
	for i := range 10 {
		s.leasesOf(fmt.Sprint("new", i))
	}
	if n := len(*s.leases.Load()); n > maxLeaseKeys || n != 10 {
		t.Errorf("%d lease keys past the bound, want a fresh table of 10", n)
	}
}

// BenchmarkRedisAllow: Allow on a limit like the load benchmark's, with
// leases (the hot path: an atomic decrement) and without (a round trip
// each).
func BenchmarkRedisAllow(b *testing.B) {
	srv := redistest.Start(b)
	for _, bb := range []struct {
		name     string
		maxLease int
	}{{"lease", maxLease}, {"no-lease", 1}} {
		b.Run(bb.name, func(b *testing.B) {
			s, rt := countedStore(b, srv, b.Name()+":", 1, func(err error) { b.Error(err) })
			s.maxLease = bb.maxLease
			l := New(Settings{APIs: map[string]Limit{"/x": {PerMinute: 1 << 30, PerDay: 1 << 40}}}, Options{Name: "main", Store: s})
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			start := rt.n.Load()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					_ = l.Allow(ctx, "/x")
				}
			})
			b.ReportMetric(float64(rt.n.Load()-start)*1000/float64(b.N), "roundtrips/1000req")
		})
	}
}
