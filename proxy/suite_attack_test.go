package proxy_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/wxproxy/wxproxy/proxy"
	"github.com/wxproxy/wxproxy/ratelimit"
)

// get_permanent_code is answered by wxproxy, but each call exchanges an
// auth code with WeCom using the suite token. A caller key's per-minute
// limit applies to it like to any forwarded call (as for api_query_auth):
// before, the local answer skipped every limit, so a caller held to 1 a
// minute could drive unbounded exchanges with WeCom.
func TestAttackPermanentCodeHonoursCallerLimit(t *testing.T) {
	lim := ratelimit.New(ratelimit.Settings{Default: ratelimit.Limit{PerMinute: 1, Burst: 1}}, ratelimit.Options{Name: "caller:slow"})
	e := newSuiteEnv(t, true, proxy.Access{Keys: []proxy.CallerKey{{Name: "slow", Key: "slow-key-0123456789", Limiter: lim}}})
	var limited int
	for i := range 5 {
		path := "/suiteco/cgi-bin/service/get_permanent_code"
		if i%2 == 1 {
			path = "/suiteco/cgi-bin/service/v2/get_permanent_code"
		}
		req, _ := http.NewRequest(http.MethodPost, e.url+path, strings.NewReader(`{"auth_code":"code`+string(rune('a'+i))+`"}`))
		req.Header.Set("X-WXProxy-Key", "slow-key-0123456789")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusTooManyRequests {
			limited++
		}
	}
	e.mu.Lock()
	n := len(e.exchanged)
	e.mu.Unlock()
	if n > 1 || limited != 4 {
		t.Errorf("5 get_permanent_code calls at 1/minute: %d exchanges with WeCom, %d limited; want 1 and 4", n, limited)
	}
}
