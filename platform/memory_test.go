package platform_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"testing"
	"time"

	"github.com/wxproxy/wxproxy/platform"
	"github.com/wxproxy/wxproxy/token"
	"github.com/wxproxy/wxproxy/wxcrypt"
)

// maxBytesPerMerchant bounds what one merchant costs in memory once it has
// been called: its holder, its token, its record and the platform's map
// entry. SPEC §12: 10,000 merchants cost a few MB.
const maxBytesPerMerchant = 1024

// TestMerchantMemory measures the live heap one merchant costs, with a
// logger like the server's (a JSON handler): the stores' contents are
// allocated before the first reading, so what is counted is what the
// platform itself holds per merchant. Run with -v for the number.
func TestMerchantMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	const n = 10_000
	ctx := context.Background()
	now := time.Now()
	records, tokens := new(platform.MemoryStore), new(token.MemoryStore)
	for i := range n {
		appid := fmt.Sprintf("wx%016x", i)
		if err := records.PutRecord(ctx, "acme", platform.Record{AppID: appid, RefreshToken: fmt.Sprintf("refreshtoken@@@%032x", i), State: platform.StateOK, UpdatedAt: now}); err != nil {
			t.Fatal(err)
		}
		if err := tokens.Save(ctx, platform.MerchantKey("acme", appid), platform.TokenFor(fmt.Sprintf("86_%0128x", i), now)); err != nil {
			t.Fatal(err)
		}
	}
	crypt, err := wxcrypt.New(wxcrypt.Options{Token: msgToken, AESKey: aesKey})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewJSONHandler(io.Discard, nil))
	heap := func() uint64 {
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	before := heap()
	p, err := platform.New(platform.Options{Name: "acme", ComponentAppID: compID, Secret: compSecret, Crypter: crypt,
		Upstream: "http://127.0.0.1:1", Store: records, Tokens: tokens, Tick: time.Hour, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); p.Run(rctx) }()
	defer func() { cancel(); <-done }()
	eventually(t, "records loaded", func() bool { _, total := p.Authorizers("", 0, 1); return total == n })
	held := make([]*platform.Merchant, 0, n)
	for i := range n {
		m, err := p.Merchant(ctx, fmt.Sprintf("wx%016x", i))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := m.Get(ctx); err != nil { // its token, loaded from the store
			t.Fatal(err)
		}
		held = append(held, m)
	}
	after := heap()
	runtime.KeepAlive(held)
	per := (int64(after) - int64(before)) / n
	t.Logf("%d merchants: %.1f MiB live heap, %d bytes per merchant (holder, token, record, map entry)",
		n, float64(int64(after)-int64(before))/(1<<20), per)
	if per > maxBytesPerMerchant {
		t.Errorf("a merchant costs %d bytes; want at most %d", per, maxBytesPerMerchant)
	}
}
