package token

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// sharedStore is a fleet's store in memory: a MemoryStore with one lock
// per store, announcements, and an outage switch.
type sharedStore struct {
	MemoryStore
	down    atomic.Bool
	tryLock atomic.Int64 // TryLock calls
	mu      sync.Mutex
	locked  bool
	updates chan string // nil: no Watcher behaviour wanted
}

var (
	_ Locker  = (*sharedStore)(nil)
	_ Watcher = (*sharedStore)(nil)
)

var errOutage = errors.New("connection refused")

func (s *sharedStore) Load(ctx context.Context, key string) (Token, error) {
	if s.down.Load() {
		return Token{}, errOutage
	}
	return s.MemoryStore.Load(ctx, key)
}

func (s *sharedStore) Save(ctx context.Context, key string, t Token) error {
	if s.down.Load() {
		return errOutage
	}
	return s.MemoryStore.Save(ctx, key, t)
}

func (s *sharedStore) TryLock(_ context.Context, _ string, _ time.Duration) (func(), bool, error) {
	s.tryLock.Add(1)
	if s.down.Load() {
		return nil, false, errOutage
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.locked {
		return nil, false, nil
	}
	s.locked = true
	return s.unlock, true, nil
}

func (s *sharedStore) unlock() {
	s.mu.Lock()
	s.locked = false
	s.mu.Unlock()
}

func (s *sharedStore) isLocked() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.locked
}

func (s *sharedStore) Watch(context.Context) <-chan string { return s.updates }

// leaseLog collects a lease's log lines.
type leaseLog struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *leaseLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *leaseLog) count(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Count(l.b.String(), s)
}

func newTestLease(tb testing.TB, store Store, log *leaseLog, onError func(string, error)) *lease {
	tb.Helper()
	if log == nil {
		log = new(leaseLog)
	}
	return newLease(store, "k", time.Minute, time.Second, time.Now, logger{slog.New(slog.NewTextHandler(log, nil)), "app"}, onError)
}

func none() *Token { return nil }

// With a store of one process the lease is granted at once, without I/O,
// and there is nothing to watch.
func TestLeaseOneProcess(t *testing.T) {
	l := newTestLease(t, new(MemoryStore), nil, nil)
	if l.shared() {
		t.Error("a MemoryStore is not shared")
	}
	adopt, release, err := l.acquire(t.Context(), "bad", none, nil)
	if adopt != nil || release == nil || err != nil {
		t.Fatalf("acquire = %v, release %t, %v; want granted", adopt, release != nil, err)
	}
	release.Release()
	updates, backstop, stop := l.watch(t.Context())
	defer stop()
	if updates != nil || backstop != nil {
		t.Error("a store of one process has announcements or a backstop")
	}
}

func TestLeaseAcquire(t *testing.T) {
	held := fresh("held")
	tests := []struct {
		name    string
		stored  *Token
		current *Token
		bad     string
		adopt   string // "": the lease is granted
		confirm bool   // a proactive refresh: bad confirmed by a peer is adopted
	}{
		{"empty store", nil, nil, "", "", false},
		{"store holds bad", fresh("bad"), &Token{Value: "bad", ExpiresAt: held.ExpiresAt}, "bad", "", false},
		{"store holds an older token", &Token{Value: "old", ExpiresAt: time.Now().Add(time.Minute)}, &Token{Value: "bad", ExpiresAt: held.ExpiresAt}, "bad", "", false},
		{"store holds a newer token", fresh("peer"), &Token{Value: "bad", ExpiresAt: time.Now().Add(time.Minute)}, "bad", "peer", false},
		{"current already replaced", nil, held, "bad", "held", false},
		{"store holds bad confirmed, not asked", fresh("bad"), &Token{Value: "bad", ExpiresAt: held.ExpiresAt}, "bad", "", false},
		{"store holds bad confirmed by a peer", fresh("bad"), &Token{Value: "bad", ExpiresAt: held.ExpiresAt}, "bad", "bad", true},
		{"store holds a newer token, confirming", fresh("peer"), &Token{Value: "bad", ExpiresAt: time.Now().Add(time.Minute)}, "bad", "peer", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := new(sharedStore)
			if tt.stored != nil {
				_ = s.Save(t.Context(), "k", *tt.stored)
			}
			l := newTestLease(t, s, nil, nil)
			var confirmed func(*Token) bool
			if tt.confirm {
				confirmed = func(st *Token) bool { return st.Value == "bad" }
			}
			adopt, release, err := l.acquire(t.Context(), tt.bad, func() *Token { return tt.current }, confirmed)
			if err != nil {
				t.Fatal(err)
			}
			if tt.adopt == "" {
				if adopt != nil || release == nil || !s.isLocked() {
					t.Fatalf("acquire = %v, locked %v; want the lease", adopt, s.isLocked())
				}
				release.Release()
				if s.isLocked() {
					t.Error("release left the lock held")
				}
				return
			}
			if adopt == nil || adopt.Value != tt.adopt {
				t.Fatalf("acquire adopted %v, want %q", adopt, tt.adopt)
			}
			if s.isLocked() {
				t.Error("a replica that adopted kept the lock")
			}
		})
	}
}

// While another replica holds the lease, acquire waits for the token it
// saves and adopts it; it never takes the lock.
func TestLeaseWaitsForHolder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := new(sharedStore)
		unlock, ok, _ := s.TryLock(t.Context(), "k", time.Minute)
		if !ok {
			t.Fatal("could not take the lock")
		}
		l := newTestLease(t, s, nil, nil)
		type result struct {
			adopt   *Token
			release *grant
			err     error
		}
		done := make(chan result, 1)
		go func() {
			a, r, err := l.acquire(t.Context(), "bad", none, nil)
			done <- result{a, r, err}
		}()
		time.Sleep(time.Second) // fake time: the holder fetches
		synctest.Wait()
		select {
		case r := <-done:
			t.Fatalf("acquire returned (%v, %v) while another replica held the lease", r.adopt, r.err)
		default:
		}
		_ = s.Save(t.Context(), "k", *fresh("peer"))
		unlock()
		r := <-done
		if r.err != nil || r.release != nil || r.adopt == nil || r.adopt.Value != "peer" {
			t.Errorf("acquire = %v, release %t, %v; want the holder's token", r.adopt, r.release != nil, r.err)
		}
		if s.isLocked() {
			t.Error("the waiter took the lock")
		}
	})
}

// A dead holder (its lock expires, nothing saved) blocks only until then.
func TestLeaseDeadHolder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := new(sharedStore)
		if _, ok, _ := s.TryLock(t.Context(), "k", time.Minute); !ok {
			t.Fatal("could not take the lock")
		}
		l := newTestLease(t, s, nil, nil)
		time.AfterFunc(5*time.Second, s.unlock) // the lock expires
		start := time.Now()
		adopt, release, err := l.acquire(t.Context(), "bad", none, nil)
		if err != nil || adopt != nil || release == nil {
			t.Fatalf("acquire = %v, release %t, %v; want the lease", adopt, release != nil, err)
		}
		if d := time.Since(start); d < 5*time.Second {
			t.Errorf("lease granted after %v, before the dead holder's lock expired", d)
		}
		release.Release()
	})
}

func TestLeaseAcquireCancelled(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := new(sharedStore)
		_, _, _ = s.TryLock(t.Context(), "k", time.Minute)
		l := newTestLease(t, s, nil, nil)
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		if _, _, err := l.acquire(ctx, "bad", none, nil); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("acquire with ctx done = %v, want its error", err)
		}
	})
}

// An outage is reported on every failure and logged once each way; a store
// known to be down is not asked for the lock.
func TestLeaseOutage(t *testing.T) {
	s := new(sharedStore)
	log := new(leaseLog)
	var ops []string
	l := newTestLease(t, s, log, func(op string, _ error) { ops = append(ops, op) })
	s.down.Store(true)
	if _, _, err := l.acquire(t.Context(), "bad", none, nil); !errors.Is(err, errStoreDown) || !errors.Is(err, errOutage) {
		t.Fatalf("acquire with the store down = %v, want errStoreDown wrapping the cause", err)
	}
	if !l.isDown() {
		t.Fatal("outage not noticed")
	}
	calls := s.tryLock.Load()
	if _, _, err := l.acquire(t.Context(), "bad", none, nil); !errors.Is(err, errStoreDown) {
		t.Errorf("second acquire = %v, want errStoreDown", err)
	}
	if s.tryLock.Load() != calls {
		t.Error("a store known to be down was asked for the lock")
	}
	if _, ok := l.load(t.Context()); ok {
		t.Error("load succeeded with the store down")
	}
	l.save(t.Context(), *fresh("x"))
	if got, want := strings.Join(ops, ","), "lock,load,save"; got != want {
		t.Errorf("reported %s, want %s", got, want)
	}
	s.down.Store(false)
	if _, ok := l.load(t.Context()); ok {
		t.Error("load of an empty store succeeded")
	}
	if l.isDown() {
		t.Error("recovery not noticed")
	}
	if f, r := log.count("token store failed"), log.count("reachable again"); f != 1 || r != 1 {
		t.Errorf("logged %d failures and %d recoveries, want 1 and 1", f, r)
	}
}

func TestLeaseSync(t *testing.T) {
	cur := fresh("cur")
	tests := []struct {
		name   string
		stored *Token
		adopt  string // "": nothing to adopt
	}{
		{"same token", cur, ""},
		{"older token", &Token{Value: "old", ExpiresAt: time.Now().Add(time.Minute)}, ""},
		{"expired token", &Token{Value: "dead", ExpiresAt: time.Now().Add(-time.Minute)}, ""},
		{"newer token", &Token{Value: "new", ExpiresAt: cur.ExpiresAt.Add(time.Hour)}, "new"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := new(sharedStore)
			_ = s.Save(t.Context(), "k", *tt.stored)
			l := newTestLease(t, s, nil, nil)
			got := l.sync(t.Context(), func() *Token { return cur })
			if (got == nil) != (tt.adopt == "") || (got != nil && got.Value != tt.adopt) {
				t.Errorf("sync = %v, want %q", got, tt.adopt)
			}
		})
	}
}

// A store that lost its data gets the current token back.
func TestLeaseSyncRestores(t *testing.T) {
	s := new(sharedStore)
	log := new(leaseLog)
	l := newTestLease(t, s, log, nil)
	if got := l.sync(t.Context(), none); got != nil {
		t.Errorf("sync of an empty store with nothing held = %v", got)
	}
	cur := fresh("cur")
	if got := l.sync(t.Context(), func() *Token { return cur }); got != nil {
		t.Errorf("sync = %v, want nothing to adopt", got)
	}
	if st, err := s.Load(t.Context(), "k"); err != nil || st.Value != "cur" {
		t.Errorf("store after sync = %v, %v; want the current token restored", st, err)
	}
	if log.count("token restored to the store") != 1 {
		t.Error("restore not logged")
	}
}

func TestLeaseWatch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := &sharedStore{updates: make(chan string, 1)}
		l := newTestLease(t, s, nil, nil)
		updates, backstop, stop := l.watch(t.Context())
		defer stop()
		s.updates <- "k"
		if got := <-updates; got != "k" {
			t.Errorf("announced %q, want k", got)
		}
		start := time.Now()
		<-backstop
		if d := time.Since(start); d != time.Second {
			t.Errorf("backstop after %v, want every %v", d, time.Second)
		}
	})
}

// In a fleet the Cache adopts what the lease hands it: a replica whose
// peer holds the lease fetches nothing.
func TestCacheWaitsOnPeerLease(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := new(sharedStore)
		unlock, _, _ := s.TryLock(t.Context(), "main", time.Minute)
		f := &fakeFetcher{ttl: time.Hour}
		c := newCache(t, Classic, f, func(o *Options) { o.Store = s })
		done := make(chan *Token, 1)
		go func() {
			tok, err := c.Get(t.Context())
			if err != nil {
				t.Error(err)
			}
			done <- tok
		}()
		time.Sleep(time.Second)
		_ = s.Save(t.Context(), "main", *fresh("peer"))
		unlock()
		if tok := <-done; tok == nil || tok.Value != "peer" || c.Current().Value != "peer" {
			t.Errorf("Get = %v, current %v; want the peer's token installed", tok, c.Current())
		}
		if got := f.calls.Load(); got != 0 {
			t.Errorf("fetches = %d, want 0", got)
		}
	})
}
