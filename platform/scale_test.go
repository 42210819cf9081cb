package platform_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wxproxy/wxproxy/platform"
	"github.com/wxproxy/wxproxy/token"
	"github.com/wxproxy/wxproxy/wxcrypt"
)

// TestTenThousandMerchants measures what 10,000 merchants cost: memory
// held, the size of their durable state, and that a call reads the token
// from memory (no store round trip: the stores here would fail the test
// if asked). Run with -v for the numbers.
func TestTenThousandMerchants(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	const n = 10_000
	dir := t.TempDir()
	fs := platform.NewFileStore(filepath.Join(dir, "platforms.json"), time.Hour)
	ctx := context.Background()
	now := time.Now()
	for i := range n {
		appid := fmt.Sprintf("wx%016x", i)
		fs.PutRecordLazy(platform.Record{AppID: appid, RefreshToken: "refreshtoken@@@" + fmt.Sprintf("%032x", i), State: platform.StateOK, UpdatedAt: now}, "acme")
		tok := "86_" + fmt.Sprintf("%0128x", i)
		fs.Save(ctx, platform.MerchantKey("acme", appid), platform.TokenFor(tok, now))
	}
	if err := fs.Flush(); err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(filepath.Join(dir, "platforms.json"))

	runtime.GC()
	var m0 runtime.MemStats
	runtime.ReadMemStats(&m0)
	crypt, _ := wxcrypt.New(wxcrypt.Options{Token: msgToken, AESKey: aesKey})
	counting := &countingStore{FileStore: fs}
	p, err := platform.New(platform.Options{Name: "acme", ComponentAppID: compID, Secret: compSecret, Crypter: crypt,
		Upstream: "http://127.0.0.1:1", Store: counting, Tokens: counting, Tick: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); p.Run(rctx) }()
	defer func() { cancel(); <-done }()
	eventually(t, "records loaded", func() bool { _, total := p.Authorizers("", 0, 1); return total == n })
	ms := make([]*platform.Merchant, 0, n)
	for i := range n {
		m, err := p.Merchant(ctx, fmt.Sprintf("wx%016x", i))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := m.Get(ctx); err != nil { // first use: loaded from the store, not fetched
			t.Fatal(err)
		}
		ms = append(ms, m)
	}
	runtime.GC()
	var m1 runtime.MemStats
	runtime.ReadMemStats(&m1)
	held := int64(m1.HeapAlloc) - int64(m0.HeapAlloc)
	t.Logf("10,000 merchants: heap %.1f MiB (%d bytes each, tokens included); durable state file %.1f MiB",
		float64(held)/(1<<20), held/n, float64(st.Size())/(1<<20))
	if held > 40<<20 {
		t.Errorf("10,000 merchants hold %d MiB; want a few", held>>20)
	}
	// The hot path: no store round trip per call.
	loads := atomic.LoadInt64(&counting.loads)
	start := time.Now()
	for range 10 {
		for _, m := range ms {
			if !m.Current().Valid(start) {
				t.Fatal("token not valid")
			}
		}
	}
	el := time.Since(start)
	if atomic.LoadInt64(&counting.loads) != loads {
		t.Errorf("calls read the store: %d loads", counting.loads-loads)
	}
	t.Logf("Current: %v per call; scheduler scan of 10,000: %v", el/(10*n), scan(p))
}

// countingStore counts merchant token loads. (The component token, which
// this test cannot fetch, is read again before each retry in the
// background: not counted.)
type countingStore struct {
	*platform.FileStore
	loads int64
}

func (c *countingStore) Load(ctx context.Context, key string) (token.Token, error) {
	if strings.HasPrefix(key, "acme@") {
		atomic.AddInt64(&c.loads, 1)
	}
	return c.FileStore.Load(ctx, key)
}

func scan(p *platform.Platform) time.Duration {
	start := time.Now()
	p.Stats()
	return time.Since(start)
}
