package e2e

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wxproxy/wxproxy/internal/redistest"
)

// TestOpenPlatformScale measures many merchants (WXPROXY_SCALE of them) in the real binary:
// each authorizes (a push, an exchange), then is called once through the
// proxy. It reports the heap in use and the RSS before, after the
// authorizations and after the calls, and the size of the durable state,
// and bounds the heap per merchant. It takes a minute or two: set
// WXPROXY_SCALE=1 to run it.
func TestOpenPlatformScale(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("WXPROXY_SCALE"))
	if n <= 0 {
		t.Skip("set WXPROXY_SCALE=10000 to measure 10,000 merchants through the real binaries")
	}
	const maxHeapPerMerchant = 8 << 10
	dir := t.TempDir()
	cb := freeAddr(t)
	s := startSim(t, "-component", compID+":"+compSecret+":"+compToken+":"+compKey, "-callback", "http://"+cb+"/callback/acme")
	storePath := filepath.Join(dir, "tokens.json")
	cfg := platformConfig(s.url, cb, storePath)
	redisMode := os.Getenv("WXPROXY_SCALE_REDIS") != ""
	if redisMode { // authorizations write one hash field each, not the whole file
		rs := redistest.Start(t)
		cfg = strings.Replace(cfg, "store: {kind: file, path: "+storePath+"}",
			fmt.Sprintf("store: {kind: redis, redis: {url: %q, key_prefix: \"scale:\"}}", rs.URL), 1)
	}
	w := startProxy(t, dir, cfg, "GOGC=25")
	s.post(t, "/sim/platforms/"+compID+"/push-ticket", "")
	waitFor(t, 10*time.Second, "ready", func() bool { c, _, _ := get(t, w.admin+"/readyz"); return c == 200 })
	heap0, rss0 := memOf(t, w)

	start := time.Now()
	appid := func(i int) string { return fmt.Sprintf("wxm%015d", i) }
	parallel(t, n, func(i int) error {
		code, _, b := do(t, http.MethodPost, s.url+"/sim/platforms/"+compID+"/authorize", `{"authorizer_appid":"`+appid(i)+`"}`)
		if code != 200 {
			return fmt.Errorf("authorize %d: %d %s", i, code, b)
		}
		return nil
	})
	waitFor(t, time.Minute, "every merchant held", func() bool {
		_, _, b := get(t, w.admin+"/admin/platforms/acme/authorizers?limit=1")
		return strings.Contains(string(b), fmt.Sprintf(`"total":%d`, n))
	})
	heap1, rss1 := memOf(t, w)
	t.Logf("%d authorizations: %v", n, time.Since(start))
	start = time.Now()

	parallel(t, n, func(i int) error {
		code, _, b := get(t, w.url+"/acme@"+appid(i)+"/cgi-bin/user/get")
		if e := decode(t, b); code != 200 || e.Echo.AppID != appid(i) {
			return fmt.Errorf("call %d: %d %s", i, code, b)
		}
		return nil
	})
	heap2, rss2 := memOf(t, w)
	t.Logf("%d calls: %v", n, time.Since(start))
	var size int64
	if !redisMode {
		time.Sleep(1500 * time.Millisecond) // the file store writes within a second
		fi, err := os.Stat(filepath.Join(dir, "tokens.platforms.json"))
		if err != nil {
			t.Fatal(err)
		}
		size = fi.Size()
	}
	t.Logf("%d merchants: heap in use %.1f → %.1f (held) → %.1f MiB (all called); RSS %.1f → %.1f → %.1f MiB; state file %.1f MiB",
		n, mib(heap0), mib(heap1), mib(heap2), mib(rss0), mib(rss1), mib(rss2), mib(size))
	t.Logf("per merchant: %d bytes of heap held, %d once called", (heap1-heap0)/int64(n), (heap2-heap0)/int64(n))
	if per := (heap2 - heap0) / int64(n); per > maxHeapPerMerchant {
		t.Errorf("a called merchant costs %d bytes of heap; want at most %d", per, maxHeapPerMerchant)
	}
	var detail []string
	for _, m := range []string{"go_memstats_heap_sys_bytes", "go_memstats_heap_idle_bytes", "go_memstats_heap_released_bytes", "go_memstats_stack_inuse_bytes", "go_memstats_sys_bytes", "go_goroutines"} {
		detail = append(detail, fmt.Sprintf("%s=%d", strings.TrimPrefix(m, "go_memstats_"), metric(t, w, m)))
	}
	t.Logf("runtime: %s", strings.Join(detail, " "))
	st := s.stats(t)
	t.Logf("simulator: %d authorizer token fetches, %d component token fetches", st.TokenFetches[compID]["authorizer"], st.TokenFetches[compID]["component"])
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// parallel runs f for 0..n-1 on 8 workers and fails the test on the
// first error.
func parallel(t *testing.T, n int, f func(i int) error) {
	t.Helper()
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	next := make(chan int)
	for range 8 {
		wg.Go(func() {
			for i := range next {
				if err := f(i); err != nil {
					once.Do(func() { first = err })
				}
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	if first != nil {
		t.Fatal(first)
	}
}
