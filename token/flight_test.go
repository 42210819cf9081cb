package token

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// newFlight returns a flight that compares with the token in held.
func newFlight(held *atomic.Pointer[Token]) *flight {
	return &flight{current: held.Load, now: time.Now, timeout: 10 * time.Second}
}

func fresh(value string) *Token {
	now := time.Now()
	return &Token{Value: value, ObtainedAt: now, ExpiresAt: now.Add(time.Hour)}
}

func TestFlightCompare(t *testing.T) {
	tests := []struct {
		name    string
		held    *Token
		bad     string
		refresh bool // whether the refresh runs
	}{
		{"bad is current", fresh("A"), "A", true},
		{"bad already replaced", fresh("B"), "A", false},
		{"no token", nil, "", true},
		{"current expired", &Token{Value: "B", ExpiresAt: time.Now().Add(-time.Second)}, "A", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var held atomic.Pointer[Token]
			held.Store(tt.held)
			f := newFlight(&held)
			ran := false
			got, err := f.do(t.Context(), "refresh", tt.bad, func(context.Context) (*Token, error) {
				ran = true
				return fresh("C"), nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if ran != tt.refresh {
				t.Errorf("refresh ran = %v, want %v", ran, tt.refresh)
			}
			if want := map[bool]string{true: "C", false: "B"}[tt.refresh]; got.Value != want {
				t.Errorf("do = %q, want %q", got.Value, want)
			}
		})
	}
}

// Concurrent callers share one refresh, and its error.
func TestFlightShared(t *testing.T) {
	for _, fail := range []bool{false, true} {
		synctest.Test(t, func(t *testing.T) {
			var held atomic.Pointer[Token]
			f := newFlight(&held)
			release := make(chan struct{})
			var runs atomic.Int64
			boom := errors.New("boom")
			refresh := func(context.Context) (*Token, error) {
				runs.Add(1)
				<-release
				if fail {
					return nil, boom
				}
				tok := fresh("new")
				held.Store(tok)
				return tok, nil
			}
			var wg sync.WaitGroup
			for range 50 {
				wg.Go(func() {
					tok, err := f.do(t.Context(), "refresh", "", refresh)
					switch {
					case fail && !errors.Is(err, boom):
						t.Errorf("err = %v, want the shared error", err)
					case !fail && (err != nil || tok.Value != "new"):
						t.Errorf("do = %v, %v; want the shared token", tok, err)
					}
				})
			}
			synctest.Wait()
			close(release)
			wg.Wait()
			if got := runs.Load(); got != 1 {
				t.Errorf("refreshes = %d, want 1", got)
			}
		})
	}
}

// Flights of different keys do not wait on each other.
func TestFlightKeysIndependent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var held atomic.Pointer[Token]
		f := newFlight(&held)
		release := make(chan struct{})
		go f.do(t.Context(), "refresh", "", func(context.Context) (*Token, error) {
			<-release
			return fresh("slow"), nil
		})
		synctest.Wait()
		tok, err := f.do(t.Context(), "manual", "", func(context.Context) (*Token, error) { return fresh("manual"), nil })
		if err != nil || tok.Value != "manual" {
			t.Errorf("manual flight = %v, %v; want its own token at once", tok, err)
		}
		close(release)
	})
}

// The refresh outlives the caller that started it but not the timeout.
func TestFlightContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var held atomic.Pointer[Token]
		f := newFlight(&held)
		f.timeout = 3 * time.Second
		ctx, cancel := context.WithCancel(t.Context())
		started := make(chan struct{})
		fctx := make(chan context.Context, 1)
		errc := make(chan error, 1)
		go func() {
			_, err := f.do(ctx, "refresh", "", func(ctx context.Context) (*Token, error) {
				fctx <- ctx
				close(started)
				<-ctx.Done()
				return nil, ctx.Err()
			})
			errc <- err
		}()
		<-started
		rctx := <-fctx
		cancel()
		if err := <-errc; !errors.Is(err, context.Canceled) {
			t.Errorf("caller err = %v, want context.Canceled", err)
		}
		if err := rctx.Err(); err != nil {
			t.Errorf("refresh context ended with its caller: %v", err)
		}
		time.Sleep(3 * time.Second) // fake time inside the bubble
		synctest.Wait()
		if err := rctx.Err(); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("refresh context after the timeout: %v, want DeadlineExceeded", err)
		}
	})
}

func TestWaiterCancelDoesNotCancelFlight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
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
		synctest.Wait() // the flight is running
		done := make(chan *Token, 1)
		go func() {
			// Second waiter joins the same flight once it is running.
			tok, err := c.Get(t.Context())
			if err != nil {
				t.Error(err)
			}
			done <- tok
		}()
		synctest.Wait()
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
	})
}
