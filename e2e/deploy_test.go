package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wxproxy/wxproxy/internal/redistest"
	"github.com/wxproxy/wxproxy/token"
)

// deployConfig is a classic-mode app on the Redis deployment that redis
// (the inside of store.redis, without key_prefix) describes.
func deployConfig(simURL, redisYAML, prefix, extra string) string {
	return fmt.Sprintf(`
listen: 127.0.0.1:0
upstream_timeout: 10s
admin: {listen: 127.0.0.1:0}
log: {format: json, level: info}
store:
  kind: redis
  redis: {%s, key_prefix: %q, replicas_hint: 3}
apps:
  - name: main
    appid: %s
    secret: ${E2E_SECRET}
    token_mode: classic
    upstream: %s
    quotas:
      apis:
        /cgi-bin/q: {per_minute: 100000, per_day: 1000000}
%s`, redisYAML, prefix, appID, simURL, extra)
}

func clusterYAML(c *redistest.Cluster) string {
	return fmt.Sprintf("mode: cluster, addrs: [%q]", c.Seed) // one seed is enough
}

func sentinelYAML(d *redistest.Sentinel) string {
	a := d.SentinelAddrs()
	return fmt.Sprintf("mode: sentinel, addrs: [%q, %q, %q], master_name: %s, password: %q, sentinel_password: %q",
		a[0], a[1], a[2], d.MasterName, d.Password, d.SentinelPassword)
}

// load sends requests to every replica in turn, through /cgi-bin/x and
// the quota-limited /cgi-bin/q, until stop is closed; it counts failures.
type load struct {
	sent, failed atomic.Int64
	first        atomic.Value
	stop         chan struct{}
	wg           sync.WaitGroup
}

func startLoad(t *testing.T, ps []*wxp) *load {
	l := &load{stop: make(chan struct{})}
	for i := range ps {
		l.wg.Go(func() {
			for n := 0; ; n++ {
				select {
				case <-l.stop:
					return
				default:
				}
				path := "/cgi-bin/x"
				if n%2 == 1 {
					path = "/cgi-bin/q"
				}
				code, _, b := get(t, ps[(i+n)%len(ps)].url+path)
				l.sent.Add(1)
				if code != 200 || decode(t, b).ErrCode != 0 {
					l.failed.Add(1)
					l.first.CompareAndSwap(nil, fmt.Sprintf("%s: %d %s", path, code, b))
				}
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
	return l
}

func (l *load) end() {
	close(l.stop)
	l.wg.Wait()
}

// more waits until n more requests have been sent.
func (l *load) more(t *testing.T, n int64) {
	t.Helper()
	target := l.sent.Load() + n
	waitFor(t, 20*time.Second, fmt.Sprintf("%d more requests", n), func() bool { return l.sent.Load() >= target })
}

// outageLines counts the start and end lines of store outages in a
// replica's log.
func outageLines(p *wxp) (tokenDown, tokenUp, quotaDown, quotaUp int) {
	out := p.output()
	return strings.Count(out, `"token store failed`), strings.Count(out, `"token store reachable again"`),
		strings.Count(out, `"quota store failed`), strings.Count(out, `"quota store reachable again`)
}

// noticed reports whether every replica has logged the start of the
// outage, for the token and the quota store.
func noticed(ps []*wxp) bool {
	for _, p := range ps {
		if td, _, qd, _ := outageLines(p); td == 0 || qd == 0 {
			return false
		}
	}
	return true
}

// recovered reports whether every replica has logged the end of every
// outage it logged the start of.
func recovered(ps []*wxp) bool {
	for _, p := range ps {
		if td, tu, qd, qu := outageLines(p); td != tu || qd != qu {
			return false
		}
	}
	return true
}

// settle waits up to d for every replica to log the start and the end of
// the outage.
func settle(ps []*wxp, d time.Duration) {
	for deadline := time.Now().Add(d); time.Now().Before(deadline) && !(noticed(ps) && recovered(ps)); {
		time.Sleep(10 * time.Millisecond)
	}
}

// checkOutageLogs: the outage is logged by every replica once when it
// starts and once when it ends, for the token and the quota store.
func checkOutageLogs(t *testing.T, ps []*wxp) {
	t.Helper()
	for i, p := range ps {
		td, tu, qd, qu := outageLines(p)
		t.Logf("replica %d: token store down/up logged %d/%d, quota store %d/%d", i, td, tu, qd, qu)
		if td != 1 || tu != 1 || qd != 1 || qu != 1 {
			t.Errorf("replica %d logged the token store down %d times and up %d times, the quota store %d and %d; want the outage once at its start and once at its end, for each store", i, td, tu, qd, qu)
		}
	}
}

// TestClusterFleet: three replicas on a 3-master Cluster given one seed
// address share one token (one fetch at startup, one per invalidation),
// and every fleet view — breakers, quotas, replicas — answers the same on
// every replica, 5 calls on each.
func TestClusterFleet(t *testing.T) {
	c := redistest.StartCluster(t)
	s := startSim(t, "-app", appID+":"+secret)
	ps := startFleet(t, 3, deployConfig(s.url, clusterYAML(c), "wx:", ""))
	if got := classicFetches(t, s); got != 1 {
		t.Errorf("fleet startup on a Cluster fetched %d tokens, want 1", got)
	}
	s.post(t, "/sim/apps/"+appID+"/invalidate", "")
	var wg sync.WaitGroup
	var bad atomic.Int64
	for i := range 60 {
		wg.Go(func() {
			if code, _, b := get(t, ps[i%3].url+"/cgi-bin/q"); code != 200 || decode(t, b).ErrCode != 0 {
				bad.Add(1)
			}
		})
	}
	wg.Wait()
	if bad.Load() > 0 || classicFetches(t, s) != 2 {
		t.Errorf("after an invalidation: %d callers failed, %d fetches; want 0 and 2", bad.Load(), classicFetches(t, s))
	}

	waitFor(t, 10*time.Second, "3 replicas in the views", func() bool {
		_, _, r := get(t, ps[0].admin+"/admin/replicas")
		_, _, b := get(t, ps[0].admin+"/admin/breakers")
		return strings.Count(string(r), `"replica"`) == 3 && strings.Count(string(b), `"replica"`) == 3
	})
	views := map[string][]string{}
	for _, p := range ps {
		for range 5 {
			views["replicas"] = append(views["replicas"], replicaNames(t, p))
			views["breakers"] = append(views["breakers"], breakerView(t, p))
			views["quotas"] = append(views["quotas"], quotaView(t, p))
		}
	}
	for name, vs := range views {
		if len(slices.Compact(slices.Clone(vs))) != 1 {
			t.Errorf("/admin/%s answered differently over 15 calls on 3 replicas: %q", name, vs)
		}
	}
	if strings.Count(views["replicas"][0], "/") != 3 || strings.Count(views["breakers"][0], "closed") != 3 {
		t.Errorf("views: replicas %s, breakers %s; want 3 replicas, 3 closed breakers", views["replicas"][0], views["breakers"][0])
	}
	// Leased permits count as used (see ratelimit.RedisStore): at least 60.
	var used int
	if _, err := fmt.Sscanf(views["quotas"][0], "main/cgi-bin/q=%d", &used); err != nil || used < 60 {
		t.Errorf("quota view %s, want /cgi-bin/q used at least 60 times today", views["quotas"][0])
	}
}

func replicaNames(t *testing.T, p *wxp) string {
	_, _, b := get(t, p.admin+"/admin/replicas")
	var rs []struct{ Replica string }
	if err := json.Unmarshal(b, &rs); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	var names []string
	for _, r := range rs {
		names = append(names, r.Replica)
	}
	return strings.Join(names, ",")
}

func breakerView(t *testing.T, p *wxp) string {
	_, _, b := get(t, p.admin+"/admin/breakers")
	var bs []struct{ App, Replica, State string }
	if err := json.Unmarshal(b, &bs); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	var out []string
	for _, x := range bs {
		out = append(out, x.App+"@"+x.Replica+":"+x.State)
	}
	return strings.Join(out, ",")
}

func quotaView(t *testing.T, p *wxp) string {
	code, _, b := get(t, p.admin+"/admin/quotas")
	var qs []struct {
		App  string
		APIs []struct {
			API     string `json:"api"`
			UsedDay int64  `json:"used_day"`
		}
	}
	if err := json.Unmarshal(b, &qs); err != nil || code != 200 {
		t.Fatalf("%d %s: %v", code, b, err)
	}
	var out []string
	for _, q := range qs {
		for _, a := range q.APIs {
			out = append(out, fmt.Sprintf("%s%s=%d", q.App, a.API, a.UsedDay))
		}
	}
	return strings.Join(out, ",")
}

// TestClusterMasterStop: the master holding the token's slot stops under
// load and comes back empty. No request fails, nobody fetches, the token
// is back in the Cluster afterwards, and each replica logs the outage once
// when it starts and once when it ends.
func TestClusterMasterStop(t *testing.T) {
	c := redistest.StartCluster(t)
	s := startSim(t, "-app", appID+":"+secret)
	prefix := "wx:"
	ps := startFleet(t, 3, deployConfig(s.url, clusterYAML(c), prefix, ""))
	fetches := classicFetches(t, s)
	key := prefix + "token:{classic:" + appID + "}"
	node := c.NodeOf(t, key)
	l := startLoad(t, ps)
	l.more(t, 50)
	node.Stop()
	// Past cluster-node-timeout the whole Cluster refuses commands
	// (CLUSTERDOWN), so the quota keys fail too, wherever they live.
	waitFor(t, 20*time.Second, "every replica to notice the outage", func() bool { return noticed(ps) })
	l.more(t, 50)
	if err := node.Start(); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitOK(20 * time.Second); err != nil {
		t.Fatal(err)
	}
	rdb := c.Client(t)
	waitFor(t, 15*time.Second, "token back in the Cluster", func() bool {
		n, _ := rdb.Exists(context.Background(), key).Result()
		return n == 1
	})
	settle(ps, 15*time.Second)
	l.more(t, 50)
	l.end()
	if l.failed.Load() > 0 {
		t.Errorf("%d of %d requests failed while a Cluster master was down; first: %v", l.failed.Load(), l.sent.Load(), l.first.Load())
	}
	if got := classicFetches(t, s); got != fetches {
		t.Errorf("%d token fetches during the outage, want 0", got-fetches)
	}
	t.Logf("%d requests during the outage", l.sent.Load())
	checkOutageLogs(t, ps)
}

// TestSentinelFailover: the master behind Sentinels (with passwords) is
// killed under load; the replica takes over. No request fails, nobody
// fetches, the fleet carries on with the token on the new master, and each
// replica logs any outage it noticed once at its start and once at its end.
func TestSentinelFailover(t *testing.T) {
	d := redistest.StartSentinel(t)
	s := startSim(t, "-app", appID+":"+secret)
	prefix := "wx:"
	ps := startFleet(t, 3, deployConfig(s.url, sentinelYAML(d), prefix, ""))
	fetches := classicFetches(t, s)
	l := startLoad(t, ps)
	l.more(t, 50)
	old := d.Master.Addr
	d.Master.Stop()
	waitFor(t, 30*time.Second, "the Sentinels to promote the replica", func() bool { return d.MasterAddr(t) != old })
	rdb := d.Client(t)
	waitFor(t, 15*time.Second, "the new master to take writes", func() bool {
		return rdb.Set(context.Background(), "probe", "1", time.Minute).Err() == nil
	})
	// Every replica logs the outage's start and end (checkOutageLogs
	// tells which did not).
	settle(ps, 15*time.Second)
	l.more(t, 50) // load on the new master
	l.end()
	if l.failed.Load() > 0 {
		t.Errorf("%d of %d requests failed during the failover; first: %v", l.failed.Load(), l.sent.Load(), l.first.Load())
	}
	if got := classicFetches(t, s); got != fetches {
		t.Errorf("%d token fetches during the failover, want 0", got-fetches)
	}
	if n, _ := rdb.Exists(context.Background(), prefix+"token:{classic:"+appID+"}").Result(); n != 1 {
		t.Error("the token is not on the new master")
	}
	// The fleet still refreshes through the new master: one fetch.
	s.post(t, "/sim/apps/"+appID+"/invalidate", "")
	for _, p := range ps {
		if code, _, b := get(t, p.url+"/cgi-bin/x"); code != 200 || decode(t, b).ErrCode != 0 {
			t.Errorf("after the failover: %d %s", code, b)
		}
	}
	if got := classicFetches(t, s); got != fetches+1 {
		t.Errorf("%d fetches for one invalidation after the failover, want 1", got-fetches)
	}
	t.Logf("%d requests during the failover", l.sent.Load())
	checkOutageLogs(t, ps)
}

// TestTLSRedis: a fleet on a TLS-only Redis with its own CA
// (rediss:// + tls.ca_file) shares one token.
func TestTLSRedis(t *testing.T) {
	r := redistest.StartTLS(t)
	s := startSim(t, "-app", appID+":"+secret)
	yaml := fmt.Sprintf("url: %q, tls: {ca_file: %q, server_name: %s}", r.URL, r.CAFile, r.ServerName)
	ps := startFleet(t, 2, deployConfig(s.url, yaml, "wx:", ""))
	for _, p := range ps {
		if code, _, b := get(t, p.url+"/cgi-bin/x"); code != 200 || decode(t, b).ErrCode != 0 {
			t.Errorf("%d %s", code, b)
		}
	}
	if got := classicFetches(t, s); got != 1 {
		t.Errorf("2 replicas on TLS Redis fetched %d tokens, want 1", got)
	}
}

// storedToken reads the fleet's token from Redis.
func storedToken(t *testing.T, rdb redis.UniversalClient, prefix string) string {
	b, err := rdb.Get(context.Background(), prefix+"token:{classic:"+appID+"}").Bytes()
	if err != nil {
		return ""
	}
	var tok token.Token
	_ = json.Unmarshal(b, &tok)
	return tok.Value
}

// TestFleetPausedHolder: behind Sentinels with passwords, the holder of
// the refresh lease is stopped (SIGSTOP) while its fetch hangs. Another
// replica takes over within one lease and callers waiting meanwhile
// succeed; when the holder resumes it does not overwrite the newer token,
// and adopts it.
func TestFleetPausedHolder(t *testing.T) {
	d := redistest.StartSentinel(t)
	s := startSim(t, "-app", appID+":"+secret)
	prefix := "wx:"
	ps := startFleet(t, 3, deployConfig(s.url, sentinelYAML(d), prefix, ""))
	rdb := d.Client(t)
	before := storedToken(t, rdb, prefix)
	s.post(t, "/sim/faults", `{"path":"/cgi-bin/token","latency":"5s","count":1}`)
	s.post(t, "/sim/apps/"+appID+"/invalidate", "")
	go http.Get(ps[0].url + "/cgi-bin/x") // replica 0 takes the lease and hangs in the fetch
	waitFor(t, 10*time.Second, "replica 0 fetching", func() bool { return s.stats(t).APICalls["/cgi-bin/token"] >= 2 })
	if err := ps[0].cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	resumed := false
	defer func() {
		if !resumed {
			_ = ps[0].cmd.Process.Signal(syscall.SIGCONT)
		}
	}()
	paused := time.Now()
	failed := callConcurrently(t, ps[1:], 20)
	took := time.Since(paused)
	if failed != "" {
		t.Errorf("callers saw errors while the holder was paused: %s", failed)
	}
	newer := storedToken(t, rdb, prefix)
	if newer == before || newer == "" {
		t.Fatalf("no new token in the store after the takeover")
	}
	t.Logf("callers served %v after the holder was paused (lease 3s)", took.Round(time.Millisecond))
	if took > 3*time.Second+2*time.Second {
		t.Errorf("takeover took %v, want within one lease (3s) + slack", took)
	}
	// WeChat answers the paused holder's fetch (counted when it answers),
	// with a token minted after the fleet's: the answer waits for it.
	waitFor(t, 10*time.Second, "WeChat to answer the paused holder", func() bool { return classicFetches(t, s) == 3 })
	if err := ps[0].cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	resumed = true
	waitFor(t, 10*time.Second, "the resumed holder to finish its fetch", func() bool {
		return strings.Contains(ps[0].output(), "refresh lease lost")
	})
	if got := storedToken(t, rdb, prefix); got != newer {
		t.Errorf("the resumed holder overwrote the fleet's token")
	}
	want := token.Fingerprint(newer)
	for i, p := range ps {
		waitFor(t, 5*time.Second, fmt.Sprintf("replica %d on the fleet's token", i), func() bool {
			_, _, b := get(t, p.admin+"/admin/apps")
			return strings.Contains(string(b), want)
		})
		if code, _, b := get(t, p.url+"/cgi-bin/x"); code != 200 || decode(t, b).ErrCode != 0 {
			t.Errorf("replica %d after the holder resumed: %d %s", i, code, b)
		}
	}
}

// callConcurrently sends n requests spread over ps at once and returns the
// first failure, or "".
func callConcurrently(t *testing.T, ps []*wxp, n int) string {
	var wg sync.WaitGroup
	var first atomic.Value
	for i := range n {
		wg.Go(func() {
			code, _, b := get(t, ps[i%len(ps)].url+"/cgi-bin/x")
			if code != 200 || decode(t, b).ErrCode != 0 {
				first.CompareAndSwap(nil, fmt.Sprintf("%d %s", code, b))
			}
		})
	}
	wg.Wait()
	if f, ok := first.Load().(string); ok {
		return f
	}
	return ""
}

// TestFleetForcedBudgetShared: stable mode's forced refreshes are counted
// for the fleet: a refresh forced on one replica makes the others wait
// the 30 s spacing.
func TestFleetForcedBudgetShared(t *testing.T) {
	rs := redistest.Start(t)
	s := startSim(t, "-app", appID+":"+secret)
	cfg := strings.Replace(deployConfig(s.url, fmt.Sprintf("url: %q", rs.URL), t.Name()+":", ""), "token_mode: classic", "token_mode: stable", 1)
	cfg = strings.Replace(cfg, "admin: {listen: 127.0.0.1:0}", "admin: {listen: 127.0.0.1:0, token: e2e-admin-token}", 1)
	ps := startFleet(t, 3, cfg)
	refresh := func(p *wxp) int {
		req, _ := http.NewRequest("POST", p.admin+"/admin/apps/main/refresh", nil)
		req.Header.Set("Authorization", "Bearer e2e-admin-token")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := refresh(ps[0]); code != 200 {
		t.Fatalf("first forced refresh: %d", code)
	}
	// Once every replica holds the forced token, a refresh on another one
	// must force again, which the fleet's spacing refuses.
	_, _, b := get(t, ps[0].admin+"/admin/apps")
	var apps []struct{ Token struct{ Fingerprint string } }
	if err := json.Unmarshal(b, &apps); err != nil || len(apps) != 1 {
		t.Fatalf("%s: %v", b, err)
	}
	for _, p := range ps[1:] {
		waitFor(t, 5*time.Second, "replica on the forced token", func() bool {
			_, _, b := get(t, p.admin+"/admin/apps")
			return strings.Contains(string(b), apps[0].Token.Fingerprint)
		})
		if code := refresh(p); code != 429 {
			t.Errorf("forced refresh on another replica within 30s answered %d, want 429", code)
		}
	}
	if got := s.stats(t).TokenFetches[appID]["stable_forced"]; got != 1 {
		t.Errorf("WeChat saw %d forced refreshes, want 1", got)
	}
}
