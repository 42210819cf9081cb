package server

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wxproxy/wxproxy/config"
	"github.com/wxproxy/wxproxy/internal/redistest"
)

// roundTrip writes and reads keys that land in different Cluster slots.
func roundTrip(t *testing.T, rdb redis.UniversalClient) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for i := range 5 {
		k := fmt.Sprintf("k%d", i)
		if err := rdb.Set(ctx, k, k, time.Minute).Err(); err != nil {
			t.Fatalf("SET %s: %v", k, err)
		}
		if v, err := rdb.Get(ctx, k).Result(); err != nil || v != k {
			t.Fatalf("GET %s = %q, %v", k, v, err)
		}
	}
}

func redisConfig(t *testing.T, yaml string) config.Redis {
	t.Helper()
	c, err := config.Parse([]byte("store: {kind: redis, redis: "+yaml+"}\napps: [{name: a, appid: wx1, secret: s}]"), nil, "")
	if err != nil {
		t.Fatal(err)
	}
	return c.Store.Redis
}

// The client follows store.redis.mode: one seed address is enough for a
// Cluster (no MOVED), Sentinels and servers with passwords, TLS with the
// CA of store.redis.tls.ca_file.
func TestRedisClientModes(t *testing.T) {
	t.Run("cluster one seed", func(t *testing.T) {
		c := redistest.StartCluster(t)
		rdb, err := newRedisClient(redisConfig(t, fmt.Sprintf("{mode: cluster, addrs: [%q]}", c.Seed)))
		if err != nil {
			t.Fatal(err)
		}
		defer rdb.Close()
		if _, ok := rdb.(*redis.ClusterClient); !ok {
			t.Fatalf("client is %T, want *redis.ClusterClient", rdb)
		}
		roundTrip(t, rdb)
	})
	t.Run("sentinel with auth", func(t *testing.T) {
		d := redistest.StartSentinel(t)
		yaml := fmt.Sprintf("{mode: sentinel, addrs: [%q, %q, %q], master_name: %s, password: %s, sentinel_password: %s}",
			d.SentinelAddrs()[0], d.SentinelAddrs()[1], d.SentinelAddrs()[2], d.MasterName, d.Password, d.SentinelPassword)
		rdb, err := newRedisClient(redisConfig(t, yaml))
		if err != nil {
			t.Fatal(err)
		}
		defer rdb.Close()
		roundTrip(t, rdb)

		// Without the Sentinels' password the master cannot be found.
		bad := redisConfig(t, strings.Replace(yaml, d.SentinelPassword, "wrong", 1))
		rdb2, _ := newRedisClient(bad)
		defer rdb2.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		if err := rdb2.Ping(ctx).Err(); err == nil {
			t.Error("a wrong sentinel_password reached the master")
		}
	})
	t.Run("sentinel with ACL users and password files", func(t *testing.T) {
		d := redistest.StartSentinel(t)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		// Users whose passwords differ from the default users': only a
		// client that sends the usernames gets in.
		for _, n := range []*redistest.Server{d.Master, d.Replica} {
			c := redis.NewClient(&redis.Options{Addr: n.Addr, Password: d.Password})
			err := c.Do(ctx, "ACL", "SETUSER", "wxp", "on", ">acl-srv-pass", "~*", "&*", "+@all").Err()
			c.Close()
			if err != nil {
				t.Fatal(err)
			}
		}
		for _, n := range d.Sentinels {
			c := redis.NewClient(&redis.Options{Addr: n.Addr, Password: d.SentinelPassword})
			err := c.Do(ctx, "ACL", "SETUSER", "wxsen", "on", ">acl-sen-pass", "+@all").Err()
			c.Close()
			if err != nil {
				t.Fatal(err)
			}
		}
		dir := t.TempDir()
		for name, v := range map[string]string{"pw": "acl-srv-pass\n", "spw": "acl-sen-pass\n"} {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(v), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		a := d.SentinelAddrs()
		yaml := fmt.Sprintf("{mode: sentinel, addrs: [%q, %q, %q], master_name: %s, username: wxp, password_file: %q, sentinel_username: wxsen, sentinel_password_file: %q}",
			a[0], a[1], a[2], d.MasterName, filepath.Join(dir, "pw"), filepath.Join(dir, "spw"))
		rdb, err := newRedisClient(redisConfig(t, yaml))
		if err != nil {
			t.Fatal(err)
		}
		defer rdb.Close()
		roundTrip(t, rdb)
		if who, err := rdb.Do(ctx, "ACL", "WHOAMI").Text(); err != nil || who != "wxp" {
			t.Errorf("ACL WHOAMI = %q, %v; want wxp", who, err)
		}

		// Without sentinel_username the Sentinels refuse the password.
		rdb2, _ := newRedisClient(redisConfig(t, strings.Replace(yaml, "sentinel_username: wxsen, ", "", 1)))
		defer rdb2.Close()
		ctx2, cancel2 := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel2()
		if err := rdb2.Ping(ctx2).Err(); err == nil {
			t.Error("the Sentinels answered without sentinel_username")
		}
	})
	t.Run("tls", func(t *testing.T) {
		s := redistest.StartTLS(t)
		rdb, err := newRedisClient(redisConfig(t, fmt.Sprintf("{url: %q, tls: {ca_file: %q, server_name: %s}}", s.URL, s.CAFile, s.ServerName)))
		if err != nil {
			t.Fatal(err)
		}
		defer rdb.Close()
		roundTrip(t, rdb)

		// The system roots do not know the test's CA: refused.
		rdb2, _ := newRedisClient(redisConfig(t, fmt.Sprintf("{url: %q}", s.URL)))
		defer rdb2.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		if err := rdb2.Ping(ctx).Err(); err == nil || !strings.Contains(err.Error(), "certificate") {
			t.Errorf("TLS without the CA: %v, want a certificate error", err)
		}
	})
}

// An outage is logged once when it starts and once when it ends.
func TestOutageLoggedOnce(t *testing.T) {
	var buf bytes.Buffer
	o := &outage{log: slog.New(slog.NewTextHandler(&buf, nil)), start: "down", end: "up"}
	for range 2 {
		for range 5 {
			o.fail(fmt.Errorf("refused"))
		}
		for range 5 {
			o.up()
		}
	}
	if got := strings.Count(buf.String(), "msg=down"); got != 2 {
		t.Errorf("2 outages logged %d starts:\n%s", got, buf.String())
	}
	if got := strings.Count(buf.String(), "msg=up"); got != 2 {
		t.Errorf("2 outages logged %d ends:\n%s", got, buf.String())
	}
}

// A standalone client pointed at a Cluster node says so.
func TestStandaloneOnClusterNode(t *testing.T) {
	c := redistest.StartCluster(t)
	var buf bytes.Buffer
	rdb, err := newRedisClient(redisConfig(t, fmt.Sprintf("{addrs: [%q]}", c.Seed)))
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	checkNotCluster(context.Background(), rdb, slog.New(slog.NewTextHandler(&buf, nil)))
	if !strings.Contains(buf.String(), "set mode: cluster") {
		t.Errorf("no error logged for a standalone client on a Cluster node: %q", buf.String())
	}
	s := redistest.Start(t)
	buf.Reset()
	checkNotCluster(context.Background(), s.Client(t), slog.New(slog.NewTextHandler(&buf, nil)))
	if buf.Len() != 0 {
		t.Errorf("a plain server was taken for a Cluster node: %q", buf.String())
	}
}
