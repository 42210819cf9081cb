package proxy_test

import (
	"net/http"
	"sync"
	"testing"

	"github.com/wxproxy/wxproxy/proxy"
	"github.com/wxproxy/wxproxy/ratelimit"
)

// Every error wxproxy answers itself is reported to OnError with its
// kind, app, path and status; answers from WeChat, errors or not, are not.
func TestOnErrorReportsOwnErrors(t *testing.T) {
	var mu sync.Mutex
	var got []proxy.ErrorReport
	e := newEnv(t, envOptions{
		quotas:  &ratelimit.Settings{APIs: map[string]ratelimit.Limit{"/cgi-bin/limited": {PerMinute: 1, Burst: 1}}},
		onError: func(r proxy.ErrorReport) { mu.Lock(); got = append(got, r); mu.Unlock() },
	})
	e.get(t, "/cgi-bin/limited")                    // allowed
	e.get(t, "/cgi-bin/limited")                    // rate_limited
	e.get(t, "/cgi-bin/x", "X-WXProxy-App", "nope") // unknown_app
	e.get(t, "/cgi-bin/clear_quota")                // blocked_path
	e.simPost(t, "/sim/faults", `{"path":"/cgi-bin/fails","errcode":40003}`)
	if a := e.get(t, "/cgi-bin/fails"); a.ErrCode != 40003 { // WeChat's own error: not wxproxy's
		t.Fatalf("business error: %+v", a)
	}
	mu.Lock()
	defer mu.Unlock()
	want := []proxy.ErrorReport{
		{Kind: proxy.KindRateLimited, App: "main", Path: "/cgi-bin/limited", Status: http.StatusTooManyRequests},
		{Kind: proxy.KindUnknownApp, App: "", Path: "/cgi-bin/x", Status: http.StatusNotFound},
		{Kind: proxy.KindBlockedPath, App: "", Path: "/cgi-bin/clear_quota", Status: http.StatusForbidden},
	}
	if len(got) != len(want) {
		t.Fatalf("reports: %+v, want %d", got, len(want))
	}
	for i, w := range want {
		g := got[i]
		if g.Kind != w.Kind || g.App != w.App || g.Path != w.Path || g.Status != w.Status || g.Msg == "" || g.Time.IsZero() {
			t.Errorf("report %d = %+v, want %+v", i, g, w)
		}
	}
}
