package redistest

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

func TestCluster(t *testing.T) {
	start := time.Now()
	c := StartCluster(t)
	t.Logf("3-master cluster up in %v", time.Since(start).Round(time.Millisecond))
	cl := c.Client(t)
	ctx := context.Background()
	for _, k := range []string{"a", "b", "c", "d", "e"} {
		if err := cl.Set(ctx, k, k, 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]bool{}
	for _, k := range []string{"a", "b", "c", "d", "e"} {
		seen[c.NodeOf(t, k).Addr] = true
	}
	if len(seen) < 2 {
		t.Errorf("5 keys landed on %d nodes; want the slots spread over the masters", len(seen))
	}
}

func TestSentinel(t *testing.T) {
	start := time.Now()
	d := StartSentinel(t)
	t.Logf("master + replica + 3 sentinels up in %v", time.Since(start).Round(time.Millisecond))
	c := d.Client(t)
	if err := c.Set(context.Background(), "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if d.MasterAddr(t) != d.Master.Addr {
		t.Fatalf("sentinels name %s, want %s", d.MasterAddr(t), d.Master.Addr)
	}
	// Without the Sentinels' password nothing is answered.
	if err := d.Sentinels[0].Client(t).Ping(context.Background()).Err(); err != nil {
		t.Fatalf("sentinel with password: %v", err)
	}
	noAuth := redis.NewClient(&redis.Options{Addr: d.Sentinels[0].Addr})
	defer noAuth.Close()
	if err := noAuth.Ping(context.Background()).Err(); err == nil || !strings.Contains(err.Error(), "NOAUTH") {
		t.Errorf("sentinel without password: %v, want NOAUTH", err)
	}
}

// Servers refuse KEYS and SCAN, on a Cluster node as on a single server.
func TestNoKeyspaceWalks(t *testing.T) {
	s := Start(t)
	if !s.own {
		t.Skip("REDIS_URL: a server not started here")
	}
	c := StartCluster(t)
	ctx := context.Background()
	for _, rdb := range []redis.Cmdable{s.Client(t), c.Nodes[1].Client(t)} {
		if err := rdb.Keys(ctx, "*").Err(); err == nil || !strings.Contains(err.Error(), "unknown command") {
			t.Errorf("KEYS: %v, want unknown command", err)
		}
		if err := rdb.Scan(ctx, 0, "", 10).Err(); err == nil || !strings.Contains(err.Error(), "unknown command") {
			t.Errorf("SCAN: %v, want unknown command", err)
		}
	}
}

func TestTLS(t *testing.T) {
	s := StartTLS(t)
	if err := s.Client(t).Ping(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
}
