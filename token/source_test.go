package token

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

func TestKindLead(t *testing.T) {
	tests := []struct {
		mode          Mode
		lifetime      time.Duration
		refreshBefore time.Duration
		want          time.Duration
	}{
		{Classic, 2 * time.Hour, 10 * time.Minute, 10 * time.Minute},
		{Classic, 10 * time.Second, 10 * time.Minute, 5 * time.Second},
		{Stable, 2 * time.Hour, 10 * time.Minute, 5 * time.Minute},
		{Stable, 2 * time.Hour, 2 * time.Minute, 2 * time.Minute},
		{Stable, 4 * time.Minute, 10 * time.Minute, 2 * time.Minute},
		{WeCom, 2 * time.Hour, 10 * time.Minute, 0},
	}
	for _, tt := range tests {
		k, ok := tt.mode.kind()
		if !ok {
			t.Fatalf("mode %s has no kind", tt.mode)
		}
		now := time.Now()
		tok := &Token{Value: "v", ObtainedAt: now, ExpiresAt: now.Add(tt.lifetime)}
		if got := k.lead(tok, tt.refreshBefore); got != tt.want {
			t.Errorf("%s, lifetime %v, refresh_before %v: lead = %v, want %v", tt.mode, tt.lifetime, tt.refreshBefore, got, tt.want)
		}
	}
	if _, ok := Mode("weird").kind(); ok {
		t.Error("unknown mode has a kind")
	}
}

func TestNewKindOrMode(t *testing.T) {
	src := SourceFunc(func(context.Context, bool) (Token, error) { return Token{}, nil })
	tests := []struct {
		name string
		mode Mode
		kind *Kind
		ok   bool
	}{
		{"mode", Classic, nil, true},
		{"kind", "", &Kind{}, true},
		{"kind overrides mode", Stable, &Kind{}, true},
		{"neither", "", nil, false},
		{"unknown mode with kind", "weird", &Kind{}, false},
	}
	for _, tt := range tests {
		_, err := New(Options{Mode: tt.mode, Kind: tt.kind, Fetcher: src})
		if (err == nil) != tt.ok {
			t.Errorf("%s: New err = %v, want ok %v", tt.name, err, tt.ok)
		}
	}
}

// A credential kind that is none of the Modes — a ticket here — is a new
// Source with a Kind; Cache serves it unchanged: compare-and-refresh,
// proactive refresh by its Rotation, forced refresh when Forcible.
func TestCacheServesNewKind(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var calls, forced atomic.Int64
		ticket := "T0"
		src := SourceFunc(func(_ context.Context, force bool) (Token, error) {
			calls.Add(1)
			if force {
				forced.Add(1)
				ticket = fmt.Sprintf("T%d", forced.Load())
			}
			now := time.Now()
			return Token{Value: ticket, ObtainedAt: now, ExpiresAt: now.Add(2 * time.Hour)}, nil
		})
		budget := 0
		c, err := New(Options{
			App: "jsapi", Fetcher: src, Rand: func() float64 { return 0 },
			Kind:   &Kind{Forcible: true, Shared: true, Rotation: time.Minute},
			Budget: func(context.Context) error { budget++; return nil },
		})
		if err != nil {
			t.Fatal(err)
		}
		tok, err := c.Get(t.Context())
		if err != nil || tok.Value != "T0" {
			t.Fatalf("Get = %v, %v", tok, err)
		}
		// Rejected, and the normal fetch hands it back: one forced fetch.
		if tok, err = c.Invalidate(t.Context(), "T0"); err != nil || tok.Value != "T1" {
			t.Fatalf("Invalidate = %v, %v; want T1", tok, err)
		}
		if _, err := c.Refresh(t.Context()); !errors.Is(err, ErrForceBudget) {
			t.Errorf("Refresh within the spacing: err = %v, want ErrForceBudget", err)
		}
		if got := budget; got != 3 {
			t.Errorf("Budget asked %d times, want 3 (the kind is metered: every fetch counts)", got)
		}
		// Proactive refresh comes Rotation before expiry: not earlier.
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		go c.Run(ctx)
		before := calls.Load()
		time.Sleep(2*time.Hour - time.Minute - time.Second)
		synctest.Wait()
		if calls.Load() != before {
			t.Errorf("fetched %d times before the rotation window", calls.Load()-before)
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if calls.Load() != before+1 {
			t.Errorf("fetched %d times in the rotation window, want 1", calls.Load()-before)
		}
	})
}
