package token

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

func TestHolderInstall(t *testing.T) {
	var h holder
	var visible []bool // at each onInstall: was the token already loadable?
	var installing *Token
	h.onInstall = func(v string) { visible = append(visible, h.load() == installing) }
	a, b := fresh("A"), fresh("B")

	installing = a
	var prevs []*Token
	then := func(prev *Token) { prevs = append(prevs, prev) }
	if got, ok := h.install(a, nil, then); got != a || !ok {
		t.Fatalf("install(A, nil) = %v, %v; want A, true", got, ok)
	}
	// A refused install changes nothing and calls nothing.
	installing = b
	if got, ok := h.install(b, func(*Token) bool { return false }, then); got != a || ok {
		t.Fatalf("refused install = %v, %v; want A, false", got, ok)
	}
	if got, ok := h.install(b, func(cur *Token) bool { return cur == a }, then); got != b || !ok {
		t.Fatalf("install(B, cur is A) = %v, %v; want B, true", got, ok)
	}
	if got := h.load(); got != b {
		t.Errorf("load = %v, want B", got)
	}
	if got, want := fmt.Sprint(visible), "[false false]"; got != want {
		t.Errorf("token loadable during onInstall: %s, want %s", got, want)
	}
	if len(prevs) != 2 || prevs[0] != nil || prevs[1] != a {
		t.Errorf("then saw %v, want [nil A]", prevs)
	}
}

// Conditional installs decide on the token they replace: racing adopts of
// older and newer tokens end with the newest, whatever the order.
func TestHolderAdoptsNeverGoBack(t *testing.T) {
	var h holder
	base := time.Now()
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Go(func() {
			st := &Token{Value: fmt.Sprint("t", i), ObtainedAt: base, ExpiresAt: base.Add(time.Hour + time.Duration(i)*time.Second)}
			h.install(st, func(cur *Token) bool { return newer(st, cur) }, nil)
		})
	}
	wg.Wait()
	if got, want := h.load().Value, "t199"; got != want {
		t.Errorf("held %q after racing adopts, want the newest %q", got, want)
	}
}

func TestNewer(t *testing.T) {
	now := time.Now()
	cur := &Token{Value: "A", ObtainedAt: now, ExpiresAt: now.Add(time.Hour)}
	tests := []struct {
		name string
		st   *Token
		cur  *Token
		want bool
	}{
		{"nothing held", cur, nil, true},
		{"longer lived", &Token{Value: "B", ExpiresAt: now.Add(2 * time.Hour)}, cur, true},
		{"shorter lived", &Token{Value: "B", ExpiresAt: now.Add(time.Minute)}, cur, false},
		{"same expiry", &Token{Value: "B", ExpiresAt: cur.ExpiresAt}, cur, false},
		{"same value", &Token{Value: "A", ExpiresAt: now.Add(2 * time.Hour)}, cur, false},
	}
	for _, tt := range tests {
		if got := newer(tt.st, tt.cur); got != tt.want {
			t.Errorf("%s: newer = %v, want %v", tt.name, got, tt.want)
		}
	}
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
