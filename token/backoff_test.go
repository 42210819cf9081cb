package token

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/wxproxy/wxproxy/wechat"
)

func TestBackoffWaits(t *testing.T) {
	transient := errors.New("connection refused")
	config := fmt.Errorf("token: %w", &wechat.APIError{Code: wechat.CodeIPNotAllowed})
	budget := fmt.Errorf("%w: spent", ErrFetchBudget)
	tests := []struct {
		name string
		errs []error
		want []time.Duration // upper end of each wait; rand 0 waits half of it
	}{
		{"doubles to the cap", []error{transient, transient, transient, transient, transient},
			[]time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 10 * time.Second}},
		{"config errcode waits the maximum", []error{config}, []time.Duration{10 * time.Second}},
		{"refused budget waits the maximum", []error{budget, transient}, []time.Duration{10 * time.Second, 2 * time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, r := range []float64{0, 0.999} {
				b := &backoff{min: time.Second, max: 10 * time.Second, rand: func() float64 { return r }}
				now := time.Now()
				for i, err := range tt.errs {
					d, n := b.fail(now, err)
					if n != i+1 {
						t.Errorf("failure %d counted as %d", i+1, n)
					}
					if lo, hi := tt.want[i]/2, tt.want[i]; d < lo || d >= hi {
						t.Errorf("rand %v, failure %d: wait %v, want in [%v, %v)", r, i+1, d, lo, hi)
					}
				}
			}
		})
	}
}

func TestBackoffLongRunStaysCapped(t *testing.T) {
	b := &backoff{min: time.Second, max: time.Minute, rand: func() float64 { return 0.5 }}
	for range 100 {
		if d, _ := b.fail(time.Now(), errors.New("boom")); d <= 0 || d > time.Minute {
			t.Fatalf("wait %v outside (0, max]", d)
		}
	}
}

func TestBackoffBlockedAndReset(t *testing.T) {
	b := &backoff{min: time.Second, max: time.Minute, rand: func() float64 { return 0 }}
	now := time.Now()
	if err := b.blocked(now); err != nil {
		t.Fatalf("zero backoff blocked: %v", err)
	}
	if d, failing := b.wait(now); d != 0 || failing {
		t.Errorf("zero backoff wait = %v, %v", d, failing)
	}
	boom := errors.New("boom")
	d, _ := b.fail(now, boom)
	err := b.blocked(now)
	if !errors.Is(err, ErrUnavailable) || !errors.Is(err, boom) {
		t.Errorf("blocked = %v, want ErrUnavailable wrapping the last error", err)
	}
	if got, failing := b.wait(now); got != d || !failing {
		t.Errorf("wait = %v, %v; want %v, true", got, failing, d)
	}
	// Once the wait is over a fetch may be tried; the cache is still failing.
	if err := b.blocked(now.Add(d)); err != nil {
		t.Errorf("blocked at retry time: %v", err)
	}
	if got, failing := b.wait(now.Add(d)); got != 0 || !failing {
		t.Errorf("wait at retry time = %v, %v; want 0, true", got, failing)
	}
	b.reset()
	if n, at, last := b.state(); n != 0 || !at.IsZero() || last != nil {
		t.Errorf("state after reset = %d, %v, %v", n, at, last)
	}
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
