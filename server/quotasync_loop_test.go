package server

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/wxproxy/wxproxy/config"
	"github.com/wxproxy/wxproxy/ratelimit"
	"github.com/wxproxy/wxproxy/token"
	"github.com/wxproxy/wxproxy/wechatsim"
)

// inProcess is a RoundTripper that serves every request with h in the
// calling goroutine: no sockets, so a synctest bubble sees every wait.
type inProcess struct{ h http.Handler }

func (p inProcess) RoundTrip(r *http.Request) (*http.Response, error) {
	rec := httptest.NewRecorder()
	p.h.ServeHTTP(rec, r)
	return rec.Result(), nil
}

// TestQuotaSyncLoop: the sync asks WeChat at startup and then every
// interval, adopting the figures each time (the daily limit where per_day
// is 0, the day count raised to WeChat's used); it reads the interval
// again on every loop, so a reload that switches it off stops the asking
// and one that switches it on (or changes it) is followed. Fake time in a
// synctest bubble: no sleep really waits.
func TestQuotaSyncLoop(t *testing.T) {
	const (
		appID  = "wx5555555555555555"
		secret = "server-test-secret-0123456789"
		send   = "/cgi-bin/message/custom/send"
		get    = "/cgi-bin/openapi/quota/get"
		base   = "http://wechat.invalid"
	)
	synctest.Test(t, func(t *testing.T) {
		sim, err := wechatsim.New(wechatsim.Options{Apps: []wechatsim.App{{AppID: appID, Secret: secret}},
			Quotas: map[string]wechatsim.Quota{send: {PerDay: 500}}})
		if err != nil {
			t.Fatal(err)
		}
		client := &http.Client{Transport: inProcess{sim}}
		cache, err := token.New(token.Options{App: "main", Mode: token.Stable,
			Fetcher: &token.HTTPFetcher{Mode: token.Stable, Upstream: base, AppID: appID, Secret: secret, Client: client}})
		if err != nil {
			t.Fatal(err)
		}
		limiter := ratelimit.New(ratelimit.Settings{APIs: map[string]ratelimit.Limit{send: {}}},
			ratelimit.Options{Name: "main", Store: ratelimit.NewLocalStore()})
		var every atomic.Int64
		every.Store(int64(time.Minute))
		qs := &quotaSync{log: slog.New(slog.DiscardHandler), client: client, now: time.Now,
			app:      &appState{cfg: config.App{Name: "main", Upstream: base}, cache: cache, limiter: limiter},
			interval: func() time.Duration { return time.Duration(every.Load()) }}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() { qs.run(ctx); close(done) }()

		asked := func() int64 { return sim.Stats().APICalls[get] }
		// spend makes n calls of send straight to WeChat, as another client
		// of the account would.
		spend := func(n int) {
			tok, err := cache.Get(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for range n {
				req, _ := http.NewRequest(http.MethodPost, base+send+"?access_token="+tok.Value, strings.NewReader("{}"))
				resp, err := client.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
			}
		}
		check := func(step string, wantAsked int64, wantUsed int64, readAt time.Time) {
			t.Helper()
			if n := asked(); n != wantAsked {
				t.Fatalf("%s: quota/get asked %d times, want %d", step, n, wantAsked)
			}
			us, err := limiter.Usage(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, u := range us {
				if u.API != send {
					continue
				}
				if u.WeChat == nil || u.PerDay != 500 || u.UsedDay != wantUsed || u.WeChat.Used != wantUsed || !u.WeChat.ReadAt.Equal(readAt) {
					t.Fatalf("%s: usage %+v (wechat %+v), want per_day 500 adopted, used %d read at %s", step, u, u.WeChat, wantUsed, readAt)
				}
				return
			}
			t.Fatalf("%s: %s not in usage %+v", step, send, us)
		}

		synctest.Wait()
		start := time.Now()
		check("startup", 1, 0, start)

		// Every interval: three more rounds, each seeing what was spent
		// elsewhere since the last.
		for round := 1; round <= 3; round++ {
			spend(4)
			time.Sleep(time.Minute)
			synctest.Wait()
			check(fmt.Sprint("round ", round), int64(1+round), int64(4*round), start.Add(time.Duration(round)*time.Minute))
		}
		if time.Since(start) != 3*time.Minute {
			t.Fatalf("fake time moved %s", time.Since(start))
		}

		// A reload switches it off: no more asking, however long.
		every.Store(0)
		time.Sleep(time.Hour)
		synctest.Wait()
		if n := asked(); n != 4 {
			t.Fatalf("switched off: quota/get asked %d times, want still 4", n)
		}

		// Switched on again with 10s: picked up within quotaSyncIdle, then
		// every 10 seconds.
		every.Store(int64(10 * time.Second))
		time.Sleep(quotaSyncIdle)
		synctest.Wait()
		if n := asked(); n != 5 {
			t.Fatalf("switched on: quota/get asked %d times within %s, want 5", n, quotaSyncIdle)
		}
		time.Sleep(30 * time.Second)
		synctest.Wait()
		if n := asked(); n != 8 {
			t.Fatalf("every 10s: quota/get asked %d times after 30s more, want 8", n)
		}

		cancel()
		<-done
	})
}
