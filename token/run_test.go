package token

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

func TestAlarm(t *testing.T) {
	a := alarm{wake: make(chan struct{}, 1)}
	if !a.at().IsZero() {
		t.Errorf("zero alarm due at %v, want now (zero)", a.at())
	}
	due := time.Now().Add(time.Minute)
	a.set(due)
	a.set(due) // a second wake-up never blocks
	a.poke()
	if got := a.at(); !got.Equal(due) {
		t.Errorf("at = %v, want %v", got, due)
	}
	select {
	case <-a.wake:
	default:
		t.Error("set did not wake the loop")
	}
	select {
	case <-a.wake:
		t.Error("wake-ups were not coalesced")
	default:
	}
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
