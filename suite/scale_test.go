package suite_test

import (
	"context"
	"fmt"
	"runtime"
	"testing"

	"github.com/wxproxy/wxproxy/platform"
)

// TestTenThousandCorps measures what 10,000 installed corps cost in
// memory once loaded (run with -v for the number), and that loading them
// fetches nothing: corps are fetched when called.
func TestTenThousandCorps(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	e := newEnv(t)
	store := new(platform.MemoryStore)
	ctx := context.Background()
	for i := range 10_000 {
		corpid := fmt.Sprintf("wwcorp%010d", i)
		if err := store.PutRecord(ctx, "suiteco", platform.Record{AppID: corpid, RefreshToken: fmt.Sprintf("permanentcode@@@%032x", i), State: platform.StateOK}); err != nil {
			t.Fatal(err)
		}
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	s := e.suite(store, nil)
	run(t, s)
	eventually(t, "10,000 corps loaded", func() bool { return s.Stats().OK == 10_000 })
	runtime.GC()
	runtime.ReadMemStats(&after)
	per := float64(after.HeapAlloc-before.HeapAlloc) / 10_000
	t.Logf("10,000 corps: %.0f bytes each in the suite's memory (holder, record, permanent code)", per)
	if per > 8<<10 {
		t.Errorf("a corp costs %.0f bytes; want a few KB at most", per)
	}
	if got := e.fake.count("corp"); got != 0 {
		t.Errorf("loading corps fetched %d corp tokens; none was called", got)
	}
}
