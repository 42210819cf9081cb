package redistest

import (
	"context"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Cluster is a Redis Cluster of 3 masters (no replicas) on free ports.
// Stopping a node leaves its slots unserved until Start brings it back:
// it rejoins with its node ID and slots (its nodes.conf survives) but
// without data.
type Cluster struct {
	Nodes []*Server
	Seed  string // one node's address: enough for a cluster client
}

// StartCluster starts the nodes, assigns the slots with
// redis-cli --cluster create and waits until every node reports
// cluster_state:ok.
func StartCluster(tb testing.TB) *Cluster {
	tb.Helper()
	need(tb)
	if _, err := exec.LookPath("redis-cli"); err != nil {
		tb.Skip("redis-cli not found")
	}
	c := &Cluster{}
	args := []string{"--cluster", "create"}
	for range 3 {
		bus := freePort(tb)
		n := launch(tb, []string{"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
			"--cluster-node-timeout", "2000", "--cluster-port", strconv.Itoa(bus)}, "", nil)
		c.Nodes = append(c.Nodes, n)
		args = append(args, n.Addr)
	}
	c.Seed = c.Nodes[0].Addr
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.Command("redis-cli", args...).CombinedOutput(); err != nil {
		tb.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	if err := c.WaitOK(15 * time.Second); err != nil {
		tb.Fatal(err)
	}
	return c
}

// WaitOK waits until every running node reports cluster_state:ok and knows
// every other node as connected.
func (c *Cluster) WaitOK(d time.Duration) error {
	return poll(d, "cluster_state:ok on every node", func() bool {
		for _, n := range c.Nodes {
			cl := redis.NewClient(&redis.Options{Addr: n.Addr, MaxRetries: -1})
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			info, err := cl.ClusterInfo(ctx).Result()
			cancel()
			cl.Close()
			if err != nil || !strings.Contains(info, "cluster_state:ok") {
				return false
			}
		}
		return true
	})
}

// Client returns a cluster client seeded with one address, closed at
// cleanup.
func (c *Cluster) Client(tb testing.TB) *redis.ClusterClient {
	tb.Helper()
	cl := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{c.Seed}, MaxRetries: 1,
		DialTimeout: 500 * time.Millisecond, ReadTimeout: 500 * time.Millisecond, WriteTimeout: 500 * time.Millisecond})
	tb.Cleanup(func() { cl.Close() })
	return cl
}

// NodeOf returns the node serving key's slot.
func (c *Cluster) NodeOf(tb testing.TB, key string) *Server {
	tb.Helper()
	cl := redis.NewClient(&redis.Options{Addr: c.Seed})
	defer cl.Close()
	slot, err := cl.ClusterKeySlot(context.Background(), key).Result()
	if err != nil {
		tb.Fatal(err)
	}
	slots, err := cl.ClusterSlots(context.Background()).Result()
	if err != nil {
		tb.Fatal(err)
	}
	for _, r := range slots {
		if int64(r.Start) <= slot && slot <= int64(r.End) {
			for _, n := range c.Nodes {
				if n.Addr == r.Nodes[0].Addr {
					return n
				}
			}
		}
	}
	tb.Fatalf("no node serves slot %d", slot)
	return nil
}
