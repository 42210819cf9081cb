package token

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/wxproxy/wxproxy/wechat"
)

// fakeFetcher mints tokens tok-1, tok-2, ... valid for ttl, unless fetch is set.
type fakeFetcher struct {
	ttl    time.Duration
	calls  atomic.Int64
	forced atomic.Int64
	fetch  func(ctx context.Context, force bool) (Token, error)
}

func (f *fakeFetcher) Fetch(ctx context.Context, force bool) (Token, error) {
	n := f.calls.Add(1)
	if force {
		f.forced.Add(1)
	}
	if f.fetch != nil {
		return f.fetch(ctx, force)
	}
	now := time.Now()
	return Token{Value: fmt.Sprintf("tok-%d", n), ObtainedAt: now, ExpiresAt: now.Add(f.ttl)}, nil
}

func newCache(tb testing.TB, mode Mode, f Fetcher, opts ...func(*Options)) *Cache {
	tb.Helper()
	o := Options{App: "main", Mode: mode, Fetcher: f, Rand: func() float64 { return 0.5 }}
	for _, fn := range opts {
		fn(&o)
	}
	c, err := New(o)
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

func TestInvalidateConcurrentOneFetch(t *testing.T) {
	for _, mode := range []Mode{Classic, Stable, WeCom} {
		t.Run(string(mode), func(t *testing.T) {
			f := &fakeFetcher{ttl: 2 * time.Hour}
			c := newCache(t, mode, f)
			first, err := c.Get(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			var wg sync.WaitGroup
			got := make([]string, 200)
			for i := range got {
				wg.Go(func() {
					tok, err := c.Invalidate(t.Context(), first.Value)
					if err != nil {
						t.Error(err)
						return
					}
					got[i] = tok.Value
				})
			}
			wg.Wait()
			if n := f.calls.Load(); n != 2 {
				t.Errorf("fetches = %d, want 2 (startup + one refresh)", n)
			}
			for i, v := range got {
				if v != "tok-2" {
					t.Fatalf("caller %d got %q, want tok-2", i, v)
				}
			}
		})
	}
}

func TestInvalidateStaleTokenNoFetch(t *testing.T) {
	f := &fakeFetcher{ttl: time.Hour}
	c := newCache(t, Classic, f)
	if _, err := c.Get(t.Context()); err != nil {
		t.Fatal(err)
	}
	tok, err := c.Invalidate(t.Context(), "some-older-token")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := tok.Value, "tok-1"; got != want {
		t.Errorf("Invalidate(old) = %q, want %q", got, want)
	}
	if got := f.calls.Load(); got != 1 {
		t.Errorf("fetches = %d, want 1", got)
	}
}

func TestStableForcesOnlyWhenNormalModeReturnsRejected(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		current := "stable-A"
		f := &fakeFetcher{}
		f.fetch = func(_ context.Context, force bool) (Token, error) {
			if force {
				current = fmt.Sprintf("stable-F%d", f.forced.Load())
			}
			now := time.Now()
			return Token{Value: current, ObtainedAt: now, ExpiresAt: now.Add(time.Hour)}, nil
		}
		c := newCache(t, Stable, f)
		ctx := t.Context()
		if _, err := c.Get(ctx); err != nil {
			t.Fatal(err)
		}
		// Normal mode hands back the rejected token: one forced refresh.
		tok, err := c.Invalidate(ctx, "stable-A")
		if err != nil {
			t.Fatal(err)
		}
		if got, want := tok.Value, "stable-F1"; got != want {
			t.Fatalf("after invalidate got %q, want %q", got, want)
		}
		// Inside the 30 s spacing a second rejection may not force.
		time.Sleep(10 * time.Second) // fake time inside the bubble
		tok, err = c.Invalidate(ctx, "stable-F1")
		if err != nil {
			t.Fatal(err)
		}
		if got := f.forced.Load(); got != 1 {
			t.Errorf("forced = %d within 30 s, want 1", got)
		}
		if got, want := tok.Value, "stable-F1"; got != want {
			t.Errorf("token = %q, want %q (unchanged)", got, want)
		}
		// Budget: at most 20 forced refreshes a day.
		for range 30 {
			time.Sleep(31 * time.Second)
			if _, err := c.Invalidate(ctx, c.Current().Value); err != nil {
				t.Fatal(err)
			}
		}
		if got := f.forced.Load(); got != 20 {
			t.Errorf("forced = %d in one day, want 20", got)
		}
		// Normal mode returning a NEW token never forces.
		current = "stable-N"
		before := f.forced.Load()
		tok, err = c.Invalidate(ctx, c.Current().Value)
		if err != nil {
			t.Fatal(err)
		}
		if tok.Value != "stable-N" || f.forced.Load() != before {
			t.Errorf("got %q, forced %d → %d; want stable-N without forcing", tok.Value, before, f.forced.Load())
		}
	})
}

func TestManualRefreshStableIsBudgeted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeFetcher{ttl: time.Hour}
		c := newCache(t, Stable, f)
		if _, err := c.Refresh(t.Context()); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Refresh(t.Context()); !errors.Is(err, ErrForceBudget) {
			t.Errorf("second Refresh within 30 s: err = %v, want ErrForceBudget", err)
		}
		if got := f.forced.Load(); got != 1 {
			t.Errorf("forced = %d, want 1", got)
		}
	})
}

func TestBackoff(t *testing.T) {
	tests := []struct {
		name    string
		err     error
		minWait time.Duration
	}{
		{"transient", errors.New("connection refused"), 500 * time.Millisecond},
		{"config errcode", &wechat.APIError{Code: wechat.CodeInvalidSecret, Msg: "invalid appsecret"}, 150 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := &fakeFetcher{fetch: func(context.Context, bool) (Token, error) { return Token{}, tt.err }}
				c := newCache(t, Classic, f)
				if _, err := c.Get(t.Context()); !errors.Is(err, tt.err) {
					t.Fatalf("first Get: err = %v, want %v", err, tt.err)
				}
				// Before the retry time no caller reaches WeChat.
				for range 100 {
					if _, err := c.Get(t.Context()); !errors.Is(err, ErrUnavailable) {
						t.Fatalf("Get during backoff: err = %v, want ErrUnavailable", err)
					}
				}
				if got := f.calls.Load(); got != 1 {
					t.Errorf("fetches during backoff = %d, want 1", got)
				}
				st := c.Status()
				if wait := st.RetryAt.Sub(time.Now()); wait < tt.minWait {
					t.Errorf("retry in %v, want >= %v", wait, tt.minWait)
				}
				if st.Failures != 1 || st.LastError == nil {
					t.Errorf("status = %+v, want 1 failure with an error", st)
				}
			})
		})
	}
}

func TestBackoffGrowsAndRecovers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var fail atomic.Bool
		fail.Store(true)
		f := &fakeFetcher{}
		f.fetch = func(context.Context, bool) (Token, error) {
			if fail.Load() {
				return Token{}, errors.New("boom")
			}
			now := time.Now()
			return Token{Value: "ok", ObtainedAt: now, ExpiresAt: now.Add(time.Hour)}, nil
		}
		c := newCache(t, Classic, f, func(o *Options) { o.Rand = func() float64 { return 0.999 } })
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		go c.Run(ctx)
		// Retries at ~1, 2, 4, 8, 16 s: six fetches within 32 s, not more.
		time.Sleep(32 * time.Second)
		synctest.Wait()
		if got := f.calls.Load(); got != 6 {
			t.Errorf("fetches in 32 s of failures = %d, want 6 (exponential backoff)", got)
		}
		fail.Store(false)
		time.Sleep(40 * time.Second)
		synctest.Wait()
		if tok := c.Current(); !tok.Valid(time.Now()) {
			t.Fatalf("no valid token after recovery")
		}
		if st := c.Status(); st.Failures != 0 || st.LastError != nil {
			t.Errorf("status after recovery = %+v", st)
		}
	})
}

func TestProactiveRefresh(t *testing.T) {
	tests := []struct {
		mode Mode
		ttl  time.Duration
		// fetches after 3 lifetimes
		want int64
	}{
		{Classic, 2 * time.Hour, 4},
		{Stable, 2 * time.Hour, 4},
		{Classic, 10 * time.Second, 6}, // lead = ttl/2: every ~5.5 s
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s/%s", tt.mode, tt.ttl), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := &fakeFetcher{ttl: tt.ttl}
				var reasons sync.Map
				c := newCache(t, tt.mode, f, func(o *Options) {
					o.OnRefresh = func(r Reason, err error) {
						v, _ := reasons.LoadOrStore(r, new(atomic.Int64))
						v.(*atomic.Int64).Add(1)
					}
				})
				ctx, cancel := context.WithCancel(t.Context())
				defer cancel()
				go c.Run(ctx)
				synctest.Wait()
				start := c.Current()
				if start == nil {
					t.Fatal("no token after startup")
				}
				// Watch every instant: the current token must never be expired.
				step := tt.ttl / 100
				for range 300 {
					time.Sleep(step)
					synctest.Wait()
					if tok := c.Current(); !tok.Valid(time.Now()) {
						t.Fatalf("token expired at %v: the proactive refresh was late", time.Now())
					}
				}
				if got := f.calls.Load(); got != tt.want {
					t.Errorf("fetches over 3 lifetimes = %d, want %d", got, tt.want)
				}
				if v, ok := reasons.Load(ReasonProactive); !ok || v.(*atomic.Int64).Load() != tt.want-1 {
					t.Errorf("proactive refreshes not counted as such")
				}
			})
		})
	}
}

func TestStableSameTokenRechecks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// Normal mode: the same token until 5 minutes before expiry.
		start := time.Now()
		f := &fakeFetcher{}
		f.fetch = func(context.Context, bool) (Token, error) {
			now := time.Now()
			gen := int(now.Sub(start) / (2 * time.Hour))
			exp := start.Add(time.Duration(gen+1) * 2 * time.Hour)
			if exp.Sub(now) <= 5*time.Minute {
				gen++
				exp = exp.Add(2 * time.Hour)
			}
			return Token{Value: fmt.Sprintf("s%d", gen), ObtainedAt: now, ExpiresAt: exp}, nil
		}
		c := newCache(t, Stable, f)
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		go c.Run(ctx)
		time.Sleep(2*time.Hour + time.Minute)
		synctest.Wait()
		if got, want := c.Current().Value, "s1"; got != want {
			t.Errorf("after one lifetime token = %q, want %q", got, want)
		}
		if got := f.calls.Load(); got > 3 {
			t.Errorf("fetches = %d, want at most 3 for one rotation", got)
		}
	})
}

func TestWaiterCancelDoesNotCancelFlight(t *testing.T) {
	release := make(chan struct{})
	f := &fakeFetcher{ttl: time.Hour}
	f.fetch = func(ctx context.Context, _ bool) (Token, error) {
		<-release
		if err := ctx.Err(); err != nil {
			return Token{}, err
		}
		now := time.Now()
		return Token{Value: "shared", ObtainedAt: now, ExpiresAt: now.Add(time.Hour)}, nil
	}
	c := newCache(t, Classic, f)
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() { _, err := c.Get(ctx); errc <- err }()
	done := make(chan *Token, 1)
	go func() {
		// Second waiter joins the same flight once it is running.
		for f.calls.Load() == 0 {
			time.Sleep(time.Millisecond)
		}
		tok, err := c.Get(t.Context())
		if err != nil {
			t.Error(err)
		}
		done <- tok
	}()
	for f.calls.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled waiter: err = %v, want context.Canceled", err)
	}
	close(release)
	if tok := <-done; tok == nil || tok.Value != "shared" {
		t.Errorf("other waiter got %v, want the shared token", tok)
	}
	if got := f.calls.Load(); got != 1 {
		t.Errorf("fetches = %d, want 1", got)
	}
}

func TestRunReusesStoredToken(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "tokens.json")
		store := NewFileStore(path)
		f := &fakeFetcher{ttl: 2 * time.Hour}
		first := newCache(t, Classic, f, func(o *Options) { o.Store = store; o.Key = "classic:wx1" })
		tok, err := first.Get(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		// A new process: a fresh store on the same file, a fresh cache.
		g := &fakeFetcher{ttl: 2 * time.Hour}
		second := newCache(t, Classic, g, func(o *Options) { o.Store = NewFileStore(path); o.Key = "classic:wx1" })
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		go second.Run(ctx)
		synctest.Wait()
		if got := g.calls.Load(); got != 0 {
			t.Errorf("restart fetched %d times, want 0", got)
		}
		if cur := second.Current(); cur == nil || cur.Value != tok.Value {
			t.Errorf("restart token = %v, want the stored %q", cur, tok.Value)
		}
	})
}

func TestInvalidateAdoptsNewerStoredToken(t *testing.T) {
	store := new(MemoryStore)
	f := &fakeFetcher{ttl: time.Hour}
	c := newCache(t, Classic, f, func(o *Options) { o.Store = store })
	old, err := c.Get(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	// Another replica refreshed and saved a newer token.
	newer := Token{Value: "from-peer", ObtainedAt: time.Now(), ExpiresAt: time.Now().Add(2 * time.Hour)}
	if err := store.Save(t.Context(), "main", newer); err != nil {
		t.Fatal(err)
	}
	tok, err := c.Invalidate(t.Context(), old.Value)
	if err != nil {
		t.Fatal(err)
	}
	if tok.Value != "from-peer" || f.calls.Load() != 1 {
		t.Errorf("got %q after %d fetches; want the peer's token without a fetch", tok.Value, f.calls.Load())
	}
}

func TestNewValidates(t *testing.T) {
	if _, err := New(Options{Mode: Classic}); err == nil {
		t.Error("New without Fetcher: want error")
	}
	if _, err := New(Options{Mode: "weird", Fetcher: &fakeFetcher{}}); err == nil {
		t.Error("New with bad mode: want error")
	}
}

func BenchmarkCurrent(b *testing.B) {
	c := newCache(b, Classic, &fakeFetcher{ttl: time.Hour})
	if _, err := c.Get(b.Context()); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if c.Current() == nil {
				b.Fatal("nil")
			}
		}
	})
}

func TestFetchBudget(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeFetcher{ttl: time.Hour}
		left := 2
		c := newCache(t, Classic, f, func(o *Options) {
			o.Budget = func(context.Context) error {
				if left == 0 {
					return errors.New("spent")
				}
				left--
				return nil
			}
		})
		for range 2 {
			if _, err := c.Refresh(t.Context()); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := c.Refresh(t.Context()); !errors.Is(err, ErrFetchBudget) {
			t.Errorf("third fetch: err = %v, want ErrFetchBudget", err)
		}
		if got := f.calls.Load(); got != 2 {
			t.Errorf("fetcher called %d times, want 2", got)
		}
		if wait := c.Status().RetryAt.Sub(time.Now()); wait < 150*time.Second {
			t.Errorf("budget refusal backs off %v, want the maximum", wait)
		}
	})
}

// OnInstall sees every token before a caller can be handed it: the first
// fetch, a refresh after invalidation, and one loaded from the store.
func TestOnInstallBeforeUse(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	f := &fakeFetcher{ttl: 2 * time.Hour}
	store := new(MemoryStore)
	install := func(o *Options) {
		o.Store = store
		o.OnInstall = func(v string) { mu.Lock(); seen = append(seen, v); mu.Unlock() }
	}
	c := newCache(t, Classic, f, install)
	check := func(tok *Token) {
		t.Helper()
		mu.Lock()
		defer mu.Unlock()
		if len(seen) == 0 || seen[len(seen)-1] != tok.Value {
			t.Fatalf("token %q handed out; OnInstall saw %q", tok.Value, seen)
		}
	}
	tok, err := c.Get(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	check(tok)
	if tok, err = c.Invalidate(t.Context(), tok.Value); err != nil {
		t.Fatal(err)
	}
	check(tok)
	// A second cache on the same store adopts the stored token.
	c2 := newCache(t, Classic, f, install)
	if tok, err = c2.Get(t.Context()); err != nil {
		t.Fatal(err)
	}
	check(tok)
}
