package e2e

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wxproxy/wxproxy/internal/redistest"
)

// fleetConfig is a classic-mode app on Redis, sized for 3 replicas. The
// upstream timeout is the default: on a loaded 2-core machine a burst of
// 300 requests through race-built binaries may take seconds.
func fleetConfig(simURL, redisURL, prefix, extra string) string {
	return fmt.Sprintf(`
listen: 127.0.0.1:0
upstream_timeout: 10s
admin: {listen: 127.0.0.1:0}
log: {format: json, level: info}
store:
  kind: redis
  redis: {url: %q, key_prefix: %q, replicas_hint: 3}
apps:
  - name: main
    appid: %s
    secret: ${E2E_SECRET}
    token_mode: classic
    upstream: %s
%s`, redisURL, prefix, appID, simURL, extra)
}

func startFleet(tb testing.TB, n int, cfg string) []*wxp {
	tb.Helper()
	var ps []*wxp
	for range n {
		ps = append(ps, startProxy(tb, tb.TempDir(), cfg, "E2E_SECRET="+secret))
	}
	for _, p := range ps {
		waitFor(tb, 15*time.Second, "replica ready", func() bool { code, _, _ := get(tb, p.admin+"/readyz"); return code == 200 })
	}
	return ps
}

func classicFetches(tb testing.TB, s *sim) int64 {
	tb.Helper()
	return s.stats(tb).TokenFetches[appID]["classic"]
}

// TestFleetOneFetch: 3 replicas start with one fetch between them; after
// WeChat kills the token, 300 concurrent requests over the replicas cause
// exactly one more fetch and no token error reaches a caller.
func TestFleetOneFetch(t *testing.T) {
	rs := redistest.Start(t)
	s := startSim(t, "-app", appID+":"+secret)
	ps := startFleet(t, 3, fleetConfig(s.url, rs.URL, t.Name()+":", ""))
	if got := classicFetches(t, s); got != 1 {
		t.Errorf("fleet startup fetched %d tokens, want 1", got)
	}
	s.post(t, "/sim/apps/"+appID+"/invalidate", "")
	var wg sync.WaitGroup
	var bad atomic.Int64
	var first atomic.Value
	for i := range 300 {
		wg.Go(func() {
			req, _ := http.NewRequest("POST", ps[i%3].url+"/cgi-bin/message/custom/send", strings.NewReader(fmt.Sprintf(`{"n":%d}`, i)))
			req.Header.Set("X-Request-Id", "fleet-"+strconv.Itoa(i))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				bad.Add(1)
				first.CompareAndSwap(nil, err.Error())
				return
			}
			var b strings.Builder
			buf := make([]byte, 4096)
			for {
				n, err := resp.Body.Read(buf)
				b.Write(buf[:n])
				if err != nil {
					break
				}
			}
			resp.Body.Close()
			if resp.StatusCode != 200 || !strings.Contains(b.String(), `"errcode":0`) {
				bad.Add(1)
				first.CompareAndSwap(nil, b.String())
			}
		})
	}
	wg.Wait()
	if bad.Load() > 0 {
		t.Errorf("%d callers saw errors; first: %v", bad.Load(), first.Load())
	}
	if got := classicFetches(t, s); got != 2 {
		t.Errorf("token fetches = %d, want 2 (startup + one for the fleet)", got)
	}
	if d := s.stats(t).Duplicates; len(d) != 0 {
		t.Errorf("requests sent twice: %v", d)
	}
}

// TestFleetProactiveCycles: with 2 s tokens the fleet refreshes once per
// cycle, not once per replica, and callers on every replica never meet an
// expired token.
func TestFleetProactiveCycles(t *testing.T) {
	rs := redistest.Start(t)
	s := startSim(t, "-app", appID+":"+secret, "-token-ttl", "2s")
	ps := startFleet(t, 3, fleetConfig(s.url, rs.URL, t.Name()+":", ""))
	start, startFetches := time.Now(), classicFetches(t, s)
	var retried, failed int
	for i := 0; time.Since(start) < 11*time.Second; i++ {
		code, h, b := get(t, ps[i%3].url+"/cgi-bin/x")
		if code != 200 || decode(t, b).ErrCode != 0 {
			failed++
		}
		if h.Get("X-WXProxy-Retried") != "" {
			retried++
		}
		time.Sleep(10 * time.Millisecond)
	}
	elapsed := time.Since(start)
	cycles := classicFetches(t, s) - startFetches
	// One holder refreshes every 1.0–1.2 s (lead ttl/2, up to 20% jitter);
	// three independent holders would fetch about three times as often.
	lo, hi := int64(elapsed/(1200*time.Millisecond))-1, int64(elapsed/time.Second)+1
	if cycles < lo || cycles > hi {
		t.Errorf("%d fetches in %v over 3 replicas, want %d..%d (one per cycle)", cycles, elapsed.Round(time.Millisecond), lo, hi)
	}
	if cycles < 9 {
		t.Errorf("only %d refresh cycles observed, want about 10", cycles)
	}
	if failed > 0 || retried > 0 {
		t.Errorf("callers saw %d failures and %d token retries during proactive refreshes, want 0", failed, retried)
	}
}

// TestFleetKilledLockHolder: on a 3-master Cluster, a replica killed
// (SIGKILL) while it holds the refresh lease and its fetch hangs blocks
// refreshes for at most one lease (lock_lease 3s): another replica takes
// over, and callers whose token was rejected meanwhile wait (token_wait
// 5s) and succeed — no token error reaches a caller.
func TestFleetKilledLockHolder(t *testing.T) {
	c := redistest.StartCluster(t)
	s := startSim(t, "-app", appID+":"+secret)
	ps := startFleet(t, 3, deployConfig(s.url, clusterYAML(c), "wx:", ""))
	// The next token fetch hangs: whoever refreshes holds the lease meanwhile.
	s.post(t, "/sim/faults", `{"path":"/cgi-bin/token","latency":"60s","count":1}`)
	s.post(t, "/sim/apps/"+appID+"/invalidate", "")
	go http.Get(ps[0].url + "/cgi-bin/x") // replica 0 takes the lease and hangs in the fetch
	waitFor(t, 10*time.Second, "replica 0 fetching", func() bool { return s.stats(t).APICalls["/cgi-bin/token"] >= 2 })
	if err := ps[0].cmd.Process.Kill(); err != nil { // SIGKILL: the lease is never released
		t.Fatal(err)
	}
	killed := time.Now()
	failed := callConcurrently(t, ps[1:], 40)
	recovered := time.Since(killed)
	if failed != "" {
		t.Errorf("callers saw errors after the lease holder died: %s", failed)
	}
	const lease = 3 * time.Second
	if recovered > lease+2*time.Second {
		t.Errorf("callers were served after %v, want within one lease (%v) + slack", recovered, lease)
	}
	if got := s.stats(t).APICalls["/cgi-bin/token"]; got != 3 {
		t.Errorf("%d token requests, want 3 (startup, the dead holder's, the takeover)", got)
	}
	t.Logf("callers were served %v after the holder died (lease %v), with no error", recovered.Round(time.Millisecond), lease)
}

// TestFleetQuotas: per-minute limits, the token-fetch budget and
// remembered upstream 45009 hold for the fleet as a whole.
func TestFleetQuotas(t *testing.T) {
	rs := redistest.Start(t)
	s := startSim(t, "-config", writeSimQuota(t))
	ps := startFleet(t, 3, fleetConfig(s.url, rs.URL, t.Name()+":", `    quotas:
      token_fetch_per_day: 2
      apis:
        /cgi-bin/q: {per_minute: 60, burst: 10}
        /cgi-bin/lim: {}
`))
	var ok, limited atomic.Int64
	var wg sync.WaitGroup
	for i := range 300 {
		wg.Go(func() {
			code, h, _ := get(t, ps[i%3].url+"/cgi-bin/q")
			switch {
			case code == 200:
				ok.Add(1)
			case code == 429 && h.Get("X-WXProxy-Error") == "rate_limited":
				limited.Add(1)
			}
		})
	}
	wg.Wait()
	if ok.Load() > 60+10 || ok.Load() < 10 || ok.Load()+limited.Load() != 300 {
		t.Errorf("fleet burst of 300 with per_minute 60 burst 10: %d passed, %d limited; want 10..70 passed, the rest limited", ok.Load(), limited.Load())
	}

	// Remembered upstream 45009, learned by one replica, holds on the others.
	get(t, ps[0].url+"/cgi-bin/lim")
	if _, _, b := get(t, ps[0].url+"/cgi-bin/lim"); decode(t, b).ErrCode != 45009 {
		t.Fatalf("WeChat's second answer should be 45009: %s", b)
	}
	calls := s.stats(t).APICalls["/cgi-bin/lim"]
	waitFor(t, 5*time.Second, "replica 2 refuses locally", func() bool {
		_, h, _ := get(t, ps[2].url+"/cgi-bin/lim")
		return h.Get("X-WXProxy-Error") == "quota_exhausted"
	})
	if got := s.stats(t).APICalls["/cgi-bin/lim"]; got > calls+3 {
		t.Errorf("remembered 45009 still reached WeChat %d more times", got-calls)
	}

	// Token budget of 2 a day for the fleet: startup used 1.
	s.post(t, "/sim/apps/"+appID+"/invalidate", "")
	get(t, ps[1].url+"/cgi-bin/x")
	s.post(t, "/sim/apps/"+appID+"/invalidate", "")
	for _, p := range ps {
		get(t, p.url+"/cgi-bin/x")
	}
	if got := classicFetches(t, s); got != 2 {
		t.Errorf("fleet fetched %d tokens with token_fetch_per_day 2, want 2", got)
	}
}

func writeSimQuota(tb testing.TB) string {
	tb.Helper()
	path := tb.TempDir() + "/sim.yaml"
	cfg := "apps: [{appid: " + appID + ", secret: " + secret + ", kind: official}]\nquotas:\n  /cgi-bin/lim: {per_day: 1}\n"
	if err := writeFile(path, cfg); err != nil {
		tb.Fatal(err)
	}
	return path
}

// TestFleetRedisOutage: Redis stops mid-load and comes back. No request
// fails, classic mode does not fetch while its token is valid, quotas fall
// back to limit / replicas_hint, store errors are counted, and the token
// is back in Redis afterwards.
func TestFleetRedisOutage(t *testing.T) {
	rs := redistest.Start(t)
	s := startSim(t, "-app", appID+":"+secret)
	prefix := t.Name() + ":"
	ps := startFleet(t, 3, fleetConfig(s.url, rs.URL, prefix, `    quotas:
      apis:
        /cgi-bin/q: {per_minute: 60, burst: 30}
`))
	fetches := classicFetches(t, s)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var sent, failed atomic.Int64
	var firstFail atomic.Value
	for i := range 3 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				code, _, b := get(t, ps[i].url+"/cgi-bin/x")
				sent.Add(1)
				if code != 200 || decode(t, b).ErrCode != 0 {
					failed.Add(1)
					firstFail.CompareAndSwap(nil, fmt.Sprintf("%d %s", code, b))
				}
			}
		})
	}
	waitFor(t, 10*time.Second, "load to start", func() bool { return sent.Load() >= 30 })
	rs.Stop()
	// During the outage: one replica's share of the burst is 30/3 = 10.
	okDuring := 0
	for range 30 {
		if code, _, _ := get(t, ps[0].url+"/cgi-bin/q"); code == 200 {
			okDuring++
		}
	}
	waitFor(t, 10*time.Second, "every replica to notice the outage", func() bool {
		for _, p := range ps {
			if !strings.Contains(p.output(), `"token store failed`) {
				return false
			}
		}
		return true
	})
	during := sent.Load()
	waitFor(t, 10*time.Second, "load during the outage", func() bool { return sent.Load() >= during+30 })
	if err := rs.Start(); err != nil {
		t.Fatal(err)
	}
	// Back: the token is restored to the (empty) Redis by a replica.
	c := rs.Client(t)
	waitFor(t, 10*time.Second, "token back in Redis", func() bool {
		n, _ := c.Exists(context.Background(), prefix+"token:{classic:"+appID+"}").Result()
		return n == 1
	})
	after := sent.Load()
	waitFor(t, 10*time.Second, "load after the outage", func() bool { return sent.Load() >= after+30 })
	close(stop)
	wg.Wait()

	if failed.Load() > 0 {
		t.Errorf("%d of %d requests failed during the Redis outage; first: %v", failed.Load(), sent.Load(), firstFail.Load())
	}
	if got := classicFetches(t, s); got != fetches {
		t.Errorf("classic mode fetched %d tokens during the outage, want 0", got-fetches)
	}
	if okDuring != 10 {
		t.Errorf("during the outage replica 0 let %d of 30 through, want 10 (burst 30 / replicas_hint 3)", okDuring)
	}
	_, _, m := get(t, ps[0].admin+"/metrics")
	if !strings.Contains(string(m), "wxproxy_store_errors_total{") {
		t.Error("wxproxy_store_errors_total did not count the outage")
	}
}

// TestFleetBreakerView: /admin/breakers on any replica lists every replica.
func TestFleetBreakerView(t *testing.T) {
	rs := redistest.Start(t)
	s := startSim(t, "-app", appID+":"+secret)
	ps := startFleet(t, 3, fleetConfig(s.url, rs.URL, t.Name()+":", ""))
	waitFor(t, 10*time.Second, "3 replicas in the fleet view", func() bool {
		_, _, b := get(t, ps[1].admin+"/admin/breakers")
		return strings.Count(string(b), `"replica"`) == 3
	})
	_, _, b := get(t, ps[2].admin+"/admin/breakers")
	seen := map[string]bool{}
	for _, part := range strings.Split(string(b), `"replica":"`)[1:] {
		seen[part[:strings.IndexByte(part, '"')]] = true
	}
	if len(seen) != 3 {
		t.Errorf("fleet view names %d distinct replicas, want 3: %s", len(seen), b)
	}
}
