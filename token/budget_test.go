package token

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"testing/synctest"
	"time"
)

func TestForceBudget(t *testing.T) {
	utc8 := time.FixedZone("UTC+8", 8*3600)
	// 10:00 UTC+8; midnight UTC+8 is 14 h later.
	base := time.Date(2025, 3, 1, 10, 0, 0, 0, utc8)
	type take struct {
		at   time.Duration // after base
		want bool
	}
	tests := []struct {
		name  string
		takes []take
	}{
		{"spacing", []take{{0, true}, {29 * time.Second, false}, {30 * time.Second, true}, {31 * time.Second, false}}},
		{"three a day", []take{{0, true}, {time.Hour, true}, {2 * time.Hour, true}, {3 * time.Hour, false}, {13 * time.Hour, false}}},
		{"new day in UTC+8", []take{{0, true}, {time.Hour, true}, {2 * time.Hour, true}, {14 * time.Hour, true}, {15 * time.Hour, true}}},
		{"spacing across midnight", []take{{0, true}, {time.Hour, true}, {14*time.Hour - 10*time.Second, true}, {14 * time.Hour, false}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := &forceBudget{perDay: 3, spacing: 30 * time.Second, loc: utc8}
			for _, tk := range tt.takes {
				if got := b.take(base.Add(tk.at)); got != tk.want {
					t.Errorf("take at +%v = %v, want %v", tk.at, got, tk.want)
				}
			}
		})
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
