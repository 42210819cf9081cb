package token_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wxproxy/wxproxy/internal/redistest"
	"github.com/wxproxy/wxproxy/token"
)

// mint is a fake WeChat: every fetch mints tok-N valid for ttl.
type mint struct {
	ttl   time.Duration
	calls atomic.Int64
	delay time.Duration
}

func (m *mint) Fetch(ctx context.Context, _ bool) (token.Token, error) {
	n := m.calls.Add(1)
	if m.delay > 0 {
		select {
		case <-time.After(m.delay):
		case <-ctx.Done():
			return token.Token{}, ctx.Err()
		}
	}
	now := time.Now()
	return token.Token{Value: fmt.Sprintf("tok-%d", n), ObtainedAt: now, ExpiresAt: now.Add(m.ttl)}, nil
}

func replica(tb testing.TB, srv *redistest.Server, prefix string, mode token.Mode, f token.Fetcher, o ...func(*token.Options)) *token.Cache {
	tb.Helper()
	opts := token.Options{App: "main", Mode: mode, Fetcher: f, Key: "classic:wx1",
		Store: token.NewRedisStore(srv.Client(tb), prefix), FetchTimeout: 5 * time.Second}
	for _, fn := range o {
		fn(&opts)
	}
	c, err := token.New(opts)
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

func TestRedisStoreBasics(t *testing.T) {
	srv := redistest.Start(t)
	s := token.NewRedisStore(srv.Client(t), t.Name()+":")
	ctx := context.Background()
	if _, err := s.Load(ctx, "k"); !errors.Is(err, token.ErrNotFound) {
		t.Fatalf("Load(empty) err = %v, want ErrNotFound", err)
	}
	now := time.Now().Truncate(time.Millisecond)
	want := token.Token{Value: "v", ObtainedAt: now, ExpiresAt: now.Add(time.Hour)}
	if err := s.Save(ctx, "k", want); err != nil {
		t.Fatal(err)
	}
	got, err := s.Load(ctx, "k")
	if err != nil || got.Value != want.Value || !got.ExpiresAt.Equal(want.ExpiresAt) {
		t.Errorf("Load = %+v, %v; want %+v", got, err, want)
	}
	if ttl := srv.Client(t).TTL(ctx, t.Name()+":token:{k}").Val(); ttl <= 59*time.Minute || ttl > time.Hour {
		t.Errorf("key TTL = %v, want the token's remaining life", ttl)
	}
	// The lock is exclusive and released by compare-and-delete only.
	unlock, ok, err := s.TryLock(ctx, "k", time.Minute)
	if err != nil || !ok {
		t.Fatalf("first TryLock = %v, %v", ok, err)
	}
	if _, ok, _ := s.TryLock(ctx, "k", time.Minute); ok {
		t.Error("second TryLock succeeded while held")
	}
	unlock()
	unlock2, ok, _ := s.TryLock(ctx, "k", 100*time.Millisecond)
	if !ok {
		t.Fatal("TryLock after unlock failed")
	}
	// A stale holder (its lock expired and was taken) must not release the new one.
	deadline := time.Now().Add(5 * time.Second)
	var unlock3 func()
	for time.Now().Before(deadline) {
		if unlock3, ok, _ = s.TryLock(ctx, "k", time.Minute); ok {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !ok {
		t.Fatal("lock did not expire")
	}
	unlock2() // stale
	if _, ok, _ := s.TryLock(ctx, "k", time.Minute); ok {
		t.Error("a stale holder released the current lock")
	}
	unlock3()
}

// TestFleetOneFetch: three replicas see the same dead token at once; one
// fetch in total, and all end up with the new token.
func TestFleetOneFetch(t *testing.T) {
	srv := redistest.Start(t)
	m := &mint{ttl: 2 * time.Hour, delay: 50 * time.Millisecond}
	var fleet []*token.Cache
	for range 3 {
		fleet = append(fleet, replica(t, srv, t.Name()+":", token.Classic, m))
	}
	first, err := fleet[0].Get(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range fleet[1:] {
		if tok, err := c.Get(context.Background()); err != nil || tok.Value != first.Value {
			t.Fatalf("replica startup got %v, %v; want the shared %q", tok, err, first.Value)
		}
	}
	if got := m.calls.Load(); got != 1 {
		t.Fatalf("startup fetches = %d, want 1", got)
	}
	var wg sync.WaitGroup
	results := make(chan string, 300)
	for i := range 300 {
		wg.Go(func() {
			tok, err := fleet[i%3].Invalidate(context.Background(), first.Value)
			if err != nil {
				t.Error(err)
				return
			}
			results <- tok.Value
		})
	}
	wg.Wait()
	close(results)
	for v := range results {
		if v != "tok-2" {
			t.Fatalf("a caller got %q, want tok-2", v)
		}
	}
	if got := m.calls.Load(); got != 2 {
		t.Errorf("fetches = %d, want 2 (startup + one refresh for the whole fleet)", got)
	}
}

// TestFleetAdoptsAnnouncedToken: a refresh on one replica reaches the
// others through pub/sub (well within a second) without any fetch there.
func TestFleetAdoptsAnnouncedToken(t *testing.T) {
	srv := redistest.Start(t)
	m := &mint{ttl: 2 * time.Hour}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a := replica(t, srv, t.Name()+":", token.Classic, m, func(o *token.Options) { o.SyncEvery = time.Hour })
	b := replica(t, srv, t.Name()+":", token.Classic, m, func(o *token.Options) { o.SyncEvery = time.Hour })
	go a.Run(ctx)
	go b.Run(ctx)
	waitUntil(t, 5*time.Second, func() bool { return a.Current() != nil && b.Current() != nil })
	if m.calls.Load() != 1 {
		t.Fatalf("fleet startup fetched %d times, want 1", m.calls.Load())
	}
	if _, err := a.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	waitUntil(t, 5*time.Second, func() bool { return b.Current().Value == a.Current().Value })
	if d := time.Since(start); d > time.Second {
		t.Errorf("replica b learned the new token after %v, want < 1s", d)
	}
	if got := m.calls.Load(); got != 2 {
		t.Errorf("fetches = %d, want 2", got)
	}
}

// TestFleetDeadLockHolder: a replica that took the lock and died blocks
// refreshes only until the lock expires.
func TestFleetDeadLockHolder(t *testing.T) {
	srv := redistest.Start(t)
	prefix := t.Name() + ":"
	store := token.NewRedisStore(srv.Client(t), prefix)
	if _, ok, err := store.TryLock(context.Background(), "classic:wx1", 500*time.Millisecond); !ok || err != nil {
		t.Fatal("could not take the lock")
	}
	m := &mint{ttl: time.Hour}
	c := replica(t, srv, prefix, token.Classic, m)
	start := time.Now()
	tok, err := c.Get(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 400*time.Millisecond {
		t.Errorf("fetched after %v while the dead holder's lock (500ms) was live", d)
	}
	if tok.Value != "tok-1" || m.calls.Load() != 1 {
		t.Errorf("got %q after %d fetches", tok.Value, m.calls.Load())
	}
}

// TestRedisDown: with the store unreachable a classic replica keeps its
// valid token and does not fetch; a stable one may fetch in normal mode.
func TestRedisDown(t *testing.T) {
	srv := redistest.Start(t)
	var storeErrors atomic.Int64
	for _, mode := range []token.Mode{token.Classic, token.Stable} {
		t.Run(string(mode), func(t *testing.T) {
			m := &mint{ttl: time.Hour}
			c := replica(t, srv, t.Name()+":", mode, m, func(o *token.Options) {
				o.OnStoreError = func(string, error) { storeErrors.Add(1) }
				o.FetchTimeout = 3 * time.Second
			})
			first, err := c.Get(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			srv.Stop()
			defer func() {
				if err := srv.Start(); err != nil {
					t.Fatal(err)
				}
			}()
			tok, err := c.Invalidate(context.Background(), first.Value)
			switch mode {
			case token.Classic:
				if err != nil || tok.Value != first.Value || m.calls.Load() != 1 {
					t.Errorf("classic with Redis down: %v, %v after %d fetches; want the valid token, no fetch", tok, err, m.calls.Load())
				}
			case token.Stable:
				if err != nil || tok.Value == first.Value || m.calls.Load() != 2 {
					t.Errorf("stable with Redis down: %v, %v after %d fetches; want a normal-mode fetch", tok, err, m.calls.Load())
				}
			}
			if storeErrors.Load() == 0 {
				t.Error("store errors not reported")
			}
		})
	}
}

func waitUntil(tb testing.TB, d time.Duration, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatal("condition not met in time")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

var _ redis.UniversalClient = (*redis.Client)(nil)
