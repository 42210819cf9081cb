package redistest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Sentinel is a master and a replica watched by 3 Sentinels, all of them
// requiring a password: the servers Password (requirepass and
// masterauth), the Sentinels SentinelPassword (requirepass, and
// sentinel-pass between them). Sentinels declare the master down after
// 1 s and fail over.
type Sentinel struct {
	Master, Replica  *Server
	Sentinels        []*Server
	MasterName       string
	Password         string
	SentinelPassword string
}

// SentinelAddrs returns the Sentinels' addresses.
func (s *Sentinel) SentinelAddrs() []string {
	var out []string
	for _, n := range s.Sentinels {
		out = append(out, n.Addr)
	}
	return out
}

// StartSentinel starts the deployment and waits until every Sentinel
// knows the replica and the other Sentinels.
func StartSentinel(tb testing.TB) *Sentinel {
	tb.Helper()
	need(tb)
	d := &Sentinel{MasterName: "wxmaster", Password: "srv-pass-" + strconv.Itoa(freePort(tb)), SentinelPassword: "sentinel-pass-" + strconv.Itoa(freePort(tb))}
	auth := []string{"--requirepass", d.Password, "--masterauth", d.Password}
	d.Master = launch(tb, auth, d.Password, nil)
	d.Replica = launch(tb, append(auth, "--replicaof", "127.0.0.1", strconv.Itoa(d.Master.port)), d.Password, nil)
	for range 3 {
		d.Sentinels = append(d.Sentinels, d.launchSentinel(tb))
	}
	err := poll(20*time.Second, "sentinels to see the replica and each other", func() bool {
		for _, n := range d.Sentinels {
			c := redis.NewSentinelClient(&redis.Options{Addr: n.Addr, Password: d.SentinelPassword})
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			reps, err1 := c.Replicas(ctx, d.MasterName).Result()
			sens, err2 := c.Sentinels(ctx, d.MasterName).Result()
			cancel()
			c.Close()
			if err1 != nil || err2 != nil || len(reps) != 1 || len(sens) != 2 {
				return false
			}
		}
		return true
	})
	if err != nil {
		tb.Fatal(err)
	}
	return d
}

func (d *Sentinel) launchSentinel(tb testing.TB) *Server {
	tb.Helper()
	port := freePort(tb)
	s := &Server{port: port, dir: tb.TempDir(), own: true, password: d.SentinelPassword}
	s.Addr = "127.0.0.1:" + strconv.Itoa(port)
	s.URL = "redis://" + s.Addr
	conf := filepath.Join(s.dir, "sentinel.conf")
	text := fmt.Sprintf(`port %d
bind 127.0.0.1
dir %s
requirepass %s
sentinel sentinel-pass %s
sentinel monitor %s 127.0.0.1 %d 2
sentinel auth-pass %s %s
sentinel down-after-milliseconds %s 1000
sentinel failover-timeout %s 4000
sentinel parallel-syncs %s 1
`, port, s.dir, d.SentinelPassword, d.SentinelPassword, d.MasterName, d.Master.port,
		d.MasterName, d.Password, d.MasterName, d.MasterName, d.MasterName)
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		tb.Fatal(err)
	}
	s.args = []string{conf, "--sentinel", "--loglevel", "warning"}
	if err := s.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(s.Stop)
	return s
}

// MasterAddr asks a Sentinel for the current master.
func (d *Sentinel) MasterAddr(tb testing.TB) string {
	tb.Helper()
	for _, n := range d.Sentinels {
		c := redis.NewSentinelClient(&redis.Options{Addr: n.Addr, Password: d.SentinelPassword})
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		a, err := c.GetMasterAddrByName(ctx, d.MasterName).Result()
		cancel()
		c.Close()
		if err == nil && len(a) == 2 {
			return a[0] + ":" + a[1]
		}
	}
	tb.Fatal("no Sentinel named a master")
	return ""
}

// Client returns a failover client, closed at cleanup.
func (d *Sentinel) Client(tb testing.TB) *redis.Client {
	tb.Helper()
	c := redis.NewFailoverClient(&redis.FailoverOptions{MasterName: d.MasterName, SentinelAddrs: d.SentinelAddrs(),
		SentinelPassword: d.SentinelPassword, Password: d.Password, MaxRetries: 1,
		DialTimeout: 500 * time.Millisecond, ReadTimeout: 500 * time.Millisecond, WriteTimeout: 500 * time.Millisecond})
	tb.Cleanup(func() { c.Close() })
	return c
}
