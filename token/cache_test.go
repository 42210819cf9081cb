package token

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
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

// Every line a holder logs names its app (the logger is shared, not
// derived per holder), and no line carries the token itself.
func TestLogLinesNameTheApp(t *testing.T) {
	var buf syncBuffer
	f := &fakeFetcher{ttl: time.Hour}
	c := newCache(t, Classic, f, func(o *Options) {
		o.Logger = slog.New(slog.NewJSONHandler(&buf, nil))
	})
	tok, err := c.Get(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) == 0 || lines[0] == "" {
		t.Fatal("nothing logged")
	}
	for _, l := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("%q: %v", l, err)
		}
		if m["app"] != "main" {
			t.Errorf("line %q does not name app main", l)
		}
		if strings.Contains(l, tok.Value) {
			t.Errorf("line %q holds the token", l)
		}
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// A held token counts as confirmed by the store only when a peer got the
// same value back from WeChat after this replica last did and less than the
// refresh lead ago (CheckedAt, or ObtainedAt where the Source's own time
// stands): never by this replica's own save, never by an old check, never
// for another value.
func TestConfirmedOnlyByARecentPeerCheck(t *testing.T) {
	kind := TicketKind()
	c := newCache(t, "", &fakeFetcher{ttl: 2 * time.Hour}, func(o *Options) { o.Kind = &kind })
	now := time.Now()
	cur := &Token{Value: "t", ObtainedAt: now.Add(-115 * time.Minute), ExpiresAt: now.Add(5 * time.Minute)}
	peer := func(value string, obtained, checked time.Time) *Token {
		st := *cur
		st.Value, st.ObtainedAt, st.CheckedAt = value, obtained, checked
		return &st
	}
	first := cur.ObtainedAt
	tests := []struct {
		name string
		st   *Token
		cur  *Token
		want bool
	}{
		{"a peer checked a minute ago", peer("t", first, now.Add(-time.Minute)), cur, true},
		{"a peer obtained it again a minute ago", peer("t", now.Add(-time.Minute), time.Time{}), cur, true},
		{"our own token", cur, cur, false},
		{"our own check", peer("t", first, now.Add(-time.Minute)), peer("t", first, now.Add(-time.Minute)), false},
		{"a peer check older than the lead (10m)", peer("t", first, now.Add(-11*time.Minute)), cur, false},
		{"another value", peer("u", first, now.Add(-time.Minute)), cur, false},
		{"never checked again", peer("t", first, time.Time{}), cur, false},
		{"nothing held", peer("t", first, now.Add(-time.Minute)), nil, false},
	}
	for _, tt := range tests {
		if got := c.confirmed(tt.st, tt.cur, now); got != tt.want {
			t.Errorf("%s: confirmed = %v, want %v", tt.name, got, tt.want)
		}
	}
}
