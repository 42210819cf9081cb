package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// clock is a settable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time          { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Advance(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

var shanghai = time.FixedZone("CST", 8*3600)

// start is 10:00:00 in Shanghai.
func newClock() *clock { return &clock{t: time.Date(2026, 11, 21, 10, 0, 0, 0, shanghai)} }

func allowN(l *Limiter, api string, n int) (ok int, last error) {
	for range n {
		if last = l.Allow(context.Background(), api); last == nil {
			ok++
		}
	}
	return ok, last
}

func TestPerMinuteWithBurst(t *testing.T) {
	tests := []struct {
		name  string
		lim   Limit
		first int // allowed at once
	}{
		{"burst 60", Limit{PerMinute: 600, Burst: 60}, 60},
		{"default burst = per minute", Limit{PerMinute: 30}, 30},
		{"burst 1", Limit{PerMinute: 60, Burst: 1}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newClock()
			l := New(Settings{APIs: map[string]Limit{"/x": tt.lim}}, Options{Now: c.Now})
			ok, err := allowN(l, "/x", 1000)
			if ok != tt.first {
				t.Errorf("allowed at once = %d, want %d", ok, tt.first)
			}
			var d *Denied
			if !errors.As(err, &d) || !errors.Is(err, ErrLimited) || d.Scope != ScopeAPI || d.RetryAfter <= 0 {
				t.Fatalf("err = %#v, want per-minute *Denied with RetryAfter", err)
			}
			// Refill: one minute later, per_minute more (capped by burst).
			c.Advance(time.Minute)
			if ok, _ := allowN(l, "/x", 1000); ok != min(tt.lim.PerMinute, tt.first) {
				t.Errorf("allowed after a minute = %d, want %d", ok, min(tt.lim.PerMinute, tt.first))
			}
		})
	}
}

func TestDefaultAndUnlimited(t *testing.T) {
	c := newClock()
	l := New(Settings{Default: Limit{PerMinute: 5}, APIs: map[string]Limit{"/free": {}}}, Options{Now: c.Now})
	if ok, _ := allowN(l, "/free", 100); ok != 100 {
		t.Errorf("unlimited API allowed %d of 100", ok)
	}
	// Each well-known API under the default has its own bucket; unknown
	// APIs share one (TestQuotaKeys).
	for _, api := range []string{"/cgi-bin/user/info", "/cgi-bin/user/get"} {
		if ok, _ := allowN(l, api, 10); ok != 5 {
			t.Errorf("%s under default allowed %d, want 5", api, ok)
		}
	}
	if ok, _ := allowN(New(Settings{}, Options{Now: c.Now}), "/any", 100); ok != 100 {
		t.Error("zero settings limited something")
	}
}

func TestDailyResetsAtMidnightOfZone(t *testing.T) {
	c := newClock()
	l := New(Settings{APIs: map[string]Limit{"/x": {PerDay: 3}}, Location: shanghai}, Options{Now: c.Now})
	if ok, err := allowN(l, "/x", 5); ok != 3 || !errors.Is(err, ErrExhausted) {
		t.Fatalf("allowed %d, err %v; want 3 then ErrExhausted", ok, err)
	}
	var d *Denied
	errors.As(l.Allow(context.Background(), "/x"), &d)
	if want := 14 * time.Hour; d == nil || d.RetryAfter != want {
		t.Errorf("RetryAfter = %v, want %v (until 00:00 Shanghai)", d, want)
	}
	c.Advance(14*time.Hour - time.Second) // 23:59:59
	if err := l.Allow(context.Background(), "/x"); !errors.Is(err, ErrExhausted) {
		t.Errorf("at 23:59:59 err = %v, want still exhausted", err)
	}
	c.Advance(time.Second) // 00:00:00 next day
	if ok, _ := allowN(l, "/x", 5); ok != 3 {
		t.Errorf("after midnight allowed %d, want 3", ok)
	}
	// The same instant is another day in another zone: UTC midnight is 08:00 Shanghai.
	c2 := &clock{t: time.Date(2026, 11, 21, 7, 59, 0, 0, shanghai)}
	u := New(Settings{APIs: map[string]Limit{"/x": {PerDay: 1}}, Location: time.UTC}, Options{Now: c2.Now})
	allowN(u, "/x", 1)
	c2.Advance(2 * time.Minute)
	if err := u.Allow(context.Background(), "/x"); err != nil {
		t.Errorf("UTC zone did not reset at UTC midnight: %v", err)
	}
}

func TestDailyDenialDoesNotSpendMinute(t *testing.T) {
	c := newClock()
	l := New(Settings{APIs: map[string]Limit{"/x": {PerMinute: 10, PerDay: 2}}}, Options{Now: c.Now})
	allowN(l, "/x", 2)
	allowN(l, "/x", 50) // denied daily
	u, _ := l.Usage(context.Background())
	if len(u) != 1 || u[0].UsedDay != 2 || u[0].UsedMinute != 2 {
		t.Errorf("usage = %+v, want 2 used today and this minute", u)
	}
}

func TestWaitMode(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := New(Settings{APIs: map[string]Limit{"/x": {PerMinute: 60, Burst: 1}}, Wait: true, MaxWait: 2 * time.Second}, Options{})
		ctx := context.Background()
		start := time.Now()
		for range 3 { // 1 immediately, then one a second
			if err := l.Allow(ctx, "/x"); err != nil {
				t.Fatal(err)
			}
		}
		if got := time.Since(start); got != 2*time.Second {
			t.Errorf("three calls at 1/s took %v, want 2s", got)
		}
		// Queue deeper than MaxWait: the far ones are refused at once.
		var wg sync.WaitGroup
		errs := make(chan error, 5)
		for range 5 {
			wg.Go(func() { errs <- l.Allow(ctx, "/x") })
		}
		wg.Wait()
		close(errs)
		var ok, limited int
		for err := range errs {
			switch {
			case err == nil:
				ok++
			case errors.Is(err, ErrLimited):
				limited++
			default:
				t.Errorf("unexpected %v", err)
			}
		}
		if ok != 2 || limited != 3 {
			t.Errorf("queue of 5 with max_wait 2s: %d passed, %d refused; want 2 and 3", ok, limited)
		}
		// A waiting caller that goes away gets its ctx error.
		cctx, cancel := context.WithCancel(ctx)
		go func() { time.Sleep(100 * time.Millisecond); cancel() }()
		time.Sleep(5 * time.Second) // refill
		_ = l.Allow(ctx, "/x")
		if err := l.Allow(cctx, "/x"); !errors.Is(err, context.Canceled) {
			t.Errorf("cancelled waiter: %v", err)
		}
	})
}

func TestUpstreamMemory(t *testing.T) {
	c := newClock()
	ctx := context.Background()
	l := New(Settings{RespectUpstream: true}, Options{Now: c.Now})
	c.Advance(30 * time.Second) // 10:00:30
	if err := l.Observe(ctx, "/cgi-bin/message/custom/send", 45011); err != nil {
		t.Fatal(err)
	}
	err := l.Allow(ctx, "/cgi-bin/message/custom/send")
	var d *Denied
	if !errors.As(err, &d) || d.Scope != ScopeUpstream || d.Daily || d.RetryAfter != 30*time.Second {
		t.Fatalf("after 45011: %#v, want upstream per-minute denial for 30s", err)
	}
	if err := l.Allow(ctx, "/cgi-bin/user/info"); err != nil {
		t.Errorf("another API was refused: %v", err)
	}
	c.Advance(30 * time.Second)
	if err := l.Allow(ctx, "/cgi-bin/message/custom/send"); err != nil {
		t.Errorf("next minute still refused: %v", err)
	}
	l.Observe(ctx, "/cgi-bin/message/custom/send", 45009)
	if err := l.Allow(ctx, "/cgi-bin/message/custom/send"); !errors.Is(err, ErrExhausted) {
		t.Errorf("after 45009: %v, want ErrExhausted", err)
	}
	u, _ := l.Usage(ctx)
	if len(u) != 1 || u[0].UpstreamLimit != "45009" || u[0].UpstreamResets == nil {
		t.Errorf("usage = %+v, want remembered 45009", u)
	}
	c.Advance(14 * time.Hour)
	if err := l.Allow(ctx, "/cgi-bin/message/custom/send"); err != nil {
		t.Errorf("next day still refused: %v", err)
	}
	// Without respect_upstream nothing is remembered.
	off := New(Settings{}, Options{Now: c.Now})
	off.Observe(ctx, "/cgi-bin/message/custom/send", 45009)
	if err := off.Allow(ctx, "/cgi-bin/message/custom/send"); err != nil {
		t.Errorf("respect_upstream off: %v", err)
	}
}

func TestTokenFetchBudget(t *testing.T) {
	c := newClock()
	l := New(Settings{TokenFetchPerDay: 3}, Options{Now: c.Now})
	var n int
	var err error
	for range 5 {
		if err = l.AllowTokenFetch(context.Background()); err == nil {
			n++
		}
	}
	var d *Denied
	if n != 3 || !errors.As(err, &d) || d.Scope != ScopeToken || !d.Daily {
		t.Errorf("fetches allowed %d, last err %v; want 3 then a daily token denial", n, err)
	}
	if err := New(Settings{}, Options{}).AllowTokenFetch(context.Background()); err != nil {
		t.Errorf("no budget configured: %v", err)
	}
}

func TestUpdateKeepsCounts(t *testing.T) {
	c := newClock()
	l := New(Settings{APIs: map[string]Limit{"/x": {PerDay: 10}}}, Options{Now: c.Now})
	allowN(l, "/x", 8)
	l.Update(Settings{APIs: map[string]Limit{"/x": {PerDay: 9}}})
	if ok, _ := allowN(l, "/x", 5); ok != 1 {
		t.Errorf("after lowering to 9 with 8 used: %d allowed, want 1", ok)
	}
	// A new per-minute limit counts what this minute already used (SPEC §5).
	l.Update(Settings{APIs: map[string]Limit{"/x": {PerMinute: 2, Burst: 2}}})
	if ok, _ := allowN(l, "/x", 5); ok != 0 {
		t.Errorf("after switching to per-minute 2 with 9 used this minute: %d allowed, want 0", ok)
	}
	c.Advance(time.Minute)
	if ok, _ := allowN(l, "/x", 5); ok != 2 {
		t.Errorf("a minute after switching to per-minute 2: %d allowed, want 2", ok)
	}
}

func TestConcurrentExact(t *testing.T) {
	c := newClock()
	l := New(Settings{APIs: map[string]Limit{"/x": {PerMinute: 100, PerDay: 150}}}, Options{Now: c.Now})
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok := 0
	for range 8 {
		wg.Go(func() {
			n, _ := allowN(l, "/x", 100)
			mu.Lock()
			ok += n
			mu.Unlock()
		})
	}
	wg.Wait()
	if ok != 100 {
		t.Errorf("concurrent callers got %d, want exactly 100", ok)
	}
}

func BenchmarkAllow(b *testing.B) {
	l := New(Settings{APIs: map[string]Limit{"/x": {PerMinute: 1 << 30, PerDay: 1 << 40}}}, Options{})
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			_ = l.Allow(ctx, "/x")
		}
	})
}

// TestQuotaKeys: configured APIs and well-known ones keep their own
// counts, matched case-insensitively and without one trailing slash;
// every other path shares (other).
func TestQuotaKeys(t *testing.T) {
	c := newClock()
	ctx := context.Background()
	l := New(Settings{
		Default:         Limit{PerMinute: 2},
		APIs:            map[string]Limit{"/cgi-bin/Custom/": {PerMinute: 3}},
		RespectUpstream: true,
	}, Options{Now: c.Now})
	if _, ok := l.Settings().APIs["/cgi-bin/custom"]; !ok {
		t.Errorf("Settings().APIs = %v, want the key canonicalised to /cgi-bin/custom", l.Settings().APIs)
	}
	tests := []struct {
		name  string
		paths []string // all share one quota key
		want  int      // allowed in total
	}{
		{"configured", []string{"/cgi-bin/custom", "/CGI-BIN/custom", "/cgi-bin/custom/", "/cgi-bin/Custom/"}, 3},
		{"well-known", []string{"/cgi-bin/user/info", "/cgi-bin/USER/info/", "/Cgi-Bin/User/Info"}, 2},
		{"another well-known", []string{"/cgi-bin/user/get"}, 2},
		{"other", []string{"/a", "/b", "/A/", "/cgi-bin/user/info//", "/", ""}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ok := 0
			for range 3 {
				for _, p := range tt.paths {
					if l.Allow(ctx, p) == nil {
						ok++
					}
				}
			}
			if ok != tt.want {
				t.Errorf("%q together allowed %d, want %d", tt.paths, ok, tt.want)
			}
		})
	}
	c.Advance(time.Minute)
	// Upstream exhaustion is remembered per well-known API, not for (other).
	l.Observe(ctx, "/CGI-BIN/user/info/", 45009)
	if err := l.Allow(ctx, "/cgi-bin/user/info"); !errors.Is(err, ErrExhausted) {
		t.Errorf("after 45009 on a well-known API: %v, want ErrExhausted", err)
	}
	l.Observe(ctx, "/unknown", 45009)
	if err := l.Allow(ctx, "/unknown"); err != nil {
		t.Errorf("after 45009 on an unknown API: %v, want it not remembered", err)
	}
}

func TestUsageListsQuotaKeys(t *testing.T) {
	c := newClock()
	ctx := context.Background()
	l := New(Settings{Default: Limit{PerMinute: 100}, APIs: map[string]Limit{"/cgi-bin/configured": {PerDay: 5}}}, Options{Now: c.Now})
	allowN(l, "/cgi-bin/user/info", 2)
	allowN(l, "/random/1", 1)
	allowN(l, "/random/2", 2)
	u, err := l.Usage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int64{}
	for _, x := range u {
		got[x.API] = x.UsedMinute
	}
	want := map[string]int64{"/cgi-bin/configured": 0, "/cgi-bin/user/info": 2, "(other)": 3}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("usage = %v, want %v", got, want)
	}
}

func BenchmarkAllowPaths(b *testing.B) {
	l := New(Settings{
		Default: Limit{PerMinute: 1 << 30, PerDay: 1 << 40},
		APIs:    map[string]Limit{"/cgi-bin/configured": {PerMinute: 1 << 30, PerDay: 1 << 40}},
	}, Options{})
	ctx := context.Background()
	for _, path := range []string{"/cgi-bin/configured", "/cgi-bin/user/info", "/CGI-BIN/User/Info/", "/random/path"} {
		b.Run(path, func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					_ = l.Allow(ctx, path)
				}
			})
		})
	}
}

// BenchmarkAllowDistinctPaths is a flood of paths no one configured.
func BenchmarkAllowDistinctPaths(b *testing.B) {
	l := New(Settings{Default: Limit{PerMinute: 1 << 30, PerDay: 1 << 40}}, Options{})
	ctx := context.Background()
	paths := make([]string, 1<<14)
	for i := range paths {
		paths[i] = fmt.Sprintf("/cgi-bin/random/%d", i)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			_ = l.Allow(ctx, paths[i%len(paths)])
			i++
		}
	})
}
