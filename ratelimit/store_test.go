package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wxproxy/wxproxy/internal/redistest"
	"github.com/wxproxy/wxproxy/wechat"
)

// eachStore runs f on a LocalStore and on a RedisStore backed by a real
// redis-server, so both stores are held to the same contract.
func eachStore(t *testing.T, f func(t *testing.T, newStore func() Store)) {
	t.Run("local", func(t *testing.T) {
		f(t, func() Store { return NewLocalStore() })
	})
	t.Run("redis", func(t *testing.T) {
		srv := redistest.Start(t)
		n := 0
		f(t, func() Store {
			n++
			return NewRedisStore(srv.Client(t), fmt.Sprintf("%s:%d:", t.Name(), n), 1, func(err error) { t.Errorf("redis: %v", err) })
		})
	})
}

// TestLimitChangeTakesEffectAtOnce: a reload that raises a limit lets
// requests through at once, a reload that lowers one holds at once; this
// minute's allowance becomes the new burst minus what was used (SPEC §5).
func TestLimitChangeTakesEffectAtOnce(t *testing.T) {
	tests := []struct {
		name          string
		before, after Limit
		use           int // requests taken under before, all at 10:00:00
		want          int // then allowed at once under after
	}{
		{"raise after exhausting", Limit{PerMinute: 10, Burst: 10}, Limit{PerMinute: 100, Burst: 100}, 10, 90},
		{"raise with some left", Limit{PerMinute: 10, Burst: 10}, Limit{PerMinute: 100, Burst: 100}, 4, 96},
		{"raise burst only", Limit{PerMinute: 60, Burst: 10}, Limit{PerMinute: 60, Burst: 30}, 10, 20},
		{"raise with default burst", Limit{PerMinute: 10}, Limit{PerMinute: 50}, 10, 40},
		{"lower above what was used", Limit{PerMinute: 100, Burst: 100}, Limit{PerMinute: 40, Burst: 40}, 30, 10},
		{"lower below what was used", Limit{PerMinute: 100, Burst: 100}, Limit{PerMinute: 20, Burst: 20}, 30, 0},
		{"lower rate only", Limit{PerMinute: 600, Burst: 50}, Limit{PerMinute: 60, Burst: 50}, 20, 30},
		{"daily only to per-minute", Limit{PerDay: 1000}, Limit{PerMinute: 40, PerDay: 1000}, 30, 10},
		// 10 requests lease 1+2+4+8 permits in Redis: the 5 unused must not
		// outlive the lowering.
		{"lower with a lease outstanding", Limit{PerMinute: 800, Burst: 800}, Limit{PerMinute: 10, Burst: 10}, 10, 0},
		{"raise with a lease outstanding", Limit{PerMinute: 800, Burst: 800}, Limit{PerMinute: 1000, Burst: 1000}, 10, 990},
	}
	eachStore(t, func(t *testing.T, newStore func() Store) {
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				c := newClock()
				l := New(Settings{APIs: map[string]Limit{"/x": tt.before}}, Options{Name: "main", Store: newStore(), Now: c.Now})
				if ok, err := allowN(l, "/x", tt.use); ok != tt.use {
					t.Fatalf("before the change: %d of %d allowed (%v)", ok, tt.use, err)
				}
				l.Update(Settings{APIs: map[string]Limit{"/x": tt.after}})
				ok, err := allowN(l, "/x", tt.want+50)
				if ok != tt.want {
					t.Errorf("after %+v → %+v with %d used: %d allowed at once, want %d (last: %v)", tt.before, tt.after, tt.use, ok, tt.want, err)
				}
				var d *Denied
				if !errors.As(err, &d) || !errors.Is(err, ErrLimited) || d.RetryAfter < time.Second {
					t.Errorf("past the new allowance: %v, want a per-minute denial with RetryAfter >= 1s", err)
				}
				// A minute later the bucket is full at the new limit.
				c.Advance(time.Minute)
				burst := tt.after.Burst
				if burst == 0 {
					burst = tt.after.PerMinute
				}
				if ok, _ := allowN(l, "/x", burst+50); ok != burst {
					t.Errorf("a minute later: %d allowed, want the new burst %d", ok, burst)
				}
			})
		}
	})
}

// TestRetryAfterAtLeastASecond: a per-minute denial never says "retry
// after 0s", even when the next token is due in less than a second.
func TestRetryAfterAtLeastASecond(t *testing.T) {
	eachStore(t, func(t *testing.T, newStore func() Store) {
		c := newClock()
		l := New(Settings{APIs: map[string]Limit{"/x": {PerMinute: 6000, Burst: 1}}}, Options{Name: "main", Store: newStore(), Now: c.Now})
		_, err := allowN(l, "/x", 2)
		var d *Denied
		if !errors.As(err, &d) {
			t.Fatalf("second call at 6000/min burst 1: %v, want *Denied", err)
		}
		if d.RetryAfter < time.Second || strings.Contains(err.Error(), "after 0s") {
			t.Errorf("RetryAfter = %v (%q), want at least 1s", d.RetryAfter, err)
		}
	})
}

// randomPaths returns n paths: distinct ones no configuration knows, and
// every tenth a variant (case, trailing slash) of a well-known API, so that
// the first thousand reach every well-known API.
func randomPaths(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("/cgi-bin/r%d/%x", i, rand.Uint64())
		if i%10 == 0 {
			api := wechat.WellKnownAPIs[i/10%len(wechat.WellKnownAPIs)]
			switch i / 10 % 3 {
			case 1:
				api = strings.ToUpper(api)
			case 2:
				api += "/"
			}
			out[i] = api
		}
	}
	return out
}

// keyBound is how many quota keys a Limiter may have: its configured
// APIs, the well-known ones and (other).
func keyBound(s Settings) int { return len(s.APIs) + len(wechat.WellKnownAPIs) + 1 }

// flood sends every path through Allow and Observe (as an upstream 45009),
// from a few goroutines.
func flood(l *Limiter, paths []string) {
	var wg sync.WaitGroup
	const workers = 8
	for w := range workers {
		wg.Go(func() {
			for i := w; i < len(paths); i += workers {
				_ = l.Allow(context.Background(), paths[i])
				_ = l.Observe(context.Background(), paths[i], 45009)
			}
		})
	}
	wg.Wait()
}

var floodSettings = Settings{
	Default:         Limit{PerMinute: 1000, PerDay: 100000},
	APIs:            map[string]Limit{"/cgi-bin/configured": {PerMinute: 10}},
	RespectUpstream: true,
}

func TestRandomPathsBoundedLocal(t *testing.T) {
	s := NewLocalStore()
	l := New(floodSettings, Options{Name: "main", Store: s})
	flood(l, randomPaths(20000))
	s.mu.Lock()
	buckets, memos := len(s.buckets), len(s.memos)
	s.mu.Unlock()
	t.Logf("after 20000 random paths: %d buckets, %d memos", buckets, memos)
	if bound := keyBound(floodSettings); buckets > bound || memos > bound {
		t.Errorf("20000 random paths left %d buckets and %d memos, want at most %d each", buckets, memos, bound)
	}
	// Random paths share (other): they do not each get a day's quota.
	if err := l.Allow(context.Background(), "/cgi-bin/yet/another"); !errors.Is(err, ErrLimited) {
		t.Errorf("a new random path after 20000 others: %v, want the shared limit", err)
	}
}

func TestRandomPathsBoundedRedis(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	s := NewRedisStore(rdb, "wx:", 1, func(err error) { t.Errorf("redis: %v", err) })
	now := time.Now() // fixed: a minute boundary during the test would add counters
	l := New(floodSettings, Options{Name: "main", Store: s, Now: func() time.Time { return now }})
	paths := randomPaths(20000)
	ctx := context.Background()
	flood(l, paths[:1000])
	before, err := rdb.DBSize(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	flood(l, paths[1000:])
	after, err := rdb.DBSize(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	memos := len(s.memos)
	s.mu.Unlock()
	t.Logf("Redis keys after 1000 random paths: %d, after 20000: %d; cached memos: %d", before, after, memos)
	// Per quota key: a daily and a minute counter, a GCRA state, a memo.
	if bound := int64(4 * keyBound(floodSettings)); after != before || after > bound {
		t.Errorf("Redis keys grew from %d to %d with random paths, want flat and at most %d", before, after, bound)
	}
	if bound := keyBound(floodSettings); memos > bound {
		t.Errorf("%d cached memos after 20000 random paths, want at most %d", memos, bound)
	}
}

// TestRedisMemoCacheBounded hits the cap of RedisStore's memo cache with
// keys no Limiter would make: it is defence in depth, not a key set.
func TestRedisMemoCacheBounded(t *testing.T) {
	srv := redistest.Start(t)
	s := NewRedisStore(srv.Client(t), "wx:", 1, nil)
	ctx := context.Background()
	for i := range maxMemos + 1000 {
		if _, _, err := s.Remembered(ctx, fmt.Sprintf("main|upstream|/k%d", i), time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	s.mu.Lock()
	n := len(s.memos)
	s.mu.Unlock()
	if n > maxMemos {
		t.Errorf("%d cached memos, want at most %d", n, maxMemos)
	}
}

// TestBurstExact: the whole burst passes at one instant and no more, for
// limits whose emission interval is not a whole number of milliseconds.
func TestBurstExact(t *testing.T) {
	eachStore(t, func(t *testing.T, newStore func() Store) {
		store := newStore()
		for _, pm := range []int{7, 13, 59, 61, 997, 6001} {
			c := newClock()
			c.Advance(time.Duration(pm) * 1234567 * time.Microsecond)
			l := New(Settings{APIs: map[string]Limit{"/x": {PerMinute: pm}}}, Options{Name: fmt.Sprint(pm), Store: store, Now: c.Now})
			if ok, err := allowN(l, "/x", pm+5); ok != pm {
				t.Errorf("per_minute %d: %d allowed at once, want %d (%v)", pm, ok, pm, err)
			}
		}
	})
}

// TestWaitReserves: with on_limit wait, a request is admitted when its turn
// comes within MaxWait and sleeps until then; later ones are refused at
// once. Both stores reserve the same way.
func TestWaitReserves(t *testing.T) {
	eachStore(t, func(t *testing.T, newStore func() Store) {
		c := newClock()
		// One every 10ms, burst 1: at one instant, 1 now and 10 within 100ms.
		l := New(Settings{APIs: map[string]Limit{"/x": {PerMinute: 6000, Burst: 1}}, Wait: true, MaxWait: 100 * time.Millisecond},
			Options{Name: "main", Store: newStore(), Now: c.Now})
		var wg sync.WaitGroup
		var mu sync.Mutex
		ok, limited := 0, 0
		for range 20 {
			wg.Go(func() {
				err := l.Allow(context.Background(), "/x")
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					ok++
				case errors.Is(err, ErrLimited):
					limited++
				default:
					t.Error(err)
				}
			})
		}
		wg.Wait()
		if ok != 11 || limited != 9 {
			t.Errorf("20 at once, 1/10ms, max_wait 100ms: %d admitted, %d refused; want 11 and 9", ok, limited)
		}
	})
}
