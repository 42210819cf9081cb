package fleet_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/wxproxy/wxproxy/fleet"
	"github.com/wxproxy/wxproxy/internal/redistest"
)

// On a Cluster a registry is one slot: heartbeats and lists work through a
// client seeded with one node, entries of a member are replaced by its
// next heartbeat, and entries not refreshed within the ttl disappear.
func TestRegistryOnCluster(t *testing.T) {
	c := redistest.StartCluster(t)
	rdb := c.Client(t)
	ctx := context.Background()
	reg := fleet.NewRegistry(rdb, "wx:", "breakers", 600*time.Millisecond)
	if err := reg.Beat(ctx, "r1", map[string][]byte{"main": []byte(`{"a":1}`), "other": []byte("x")}); err != nil {
		t.Fatal(err)
	}
	if err := reg.Beat(ctx, "r2", map[string][]byte{"main": []byte(`{"a":2}`)}); err != nil {
		t.Fatal(err)
	}
	if err := reg.Beat(ctx, "r1", map[string][]byte{"main": []byte(`{"a":3}`)}); err != nil {
		t.Fatal(err)
	}
	got, err := reg.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if s := render(got); s != `r1/main={"a":3} r2/main={"a":2} ` {
		t.Errorf("List = %s; want r1's second heartbeat to have replaced its first", s)
	}
	// r2 stops beating; r1 goes on.
	deadline := time.Now().Add(5 * time.Second)
	for {
		if err := reg.Beat(ctx, "r1", map[string][]byte{"main": []byte(`{"a":4}`)}); err != nil {
			t.Fatal(err)
		}
		got, err = reg.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if render(got) == `r1/main={"a":4} ` {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("r2's entry outlived its ttl: %s", render(got))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got[0].Seen.IsZero() || time.Since(got[0].Seen) > time.Minute {
		t.Errorf("Seen = %v, want Redis's time of the last heartbeat", got[0].Seen)
	}
}

// A registry holds at most MaxEntries live entries; member and entry names
// holding the separator are refused.
func TestRegistryBounds(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	ctx := context.Background()
	reg := fleet.NewRegistry(rdb, t.Name()+":", "v", time.Minute)
	big := make(map[string][]byte, fleet.MaxEntries)
	for i := range fleet.MaxEntries {
		big[fmt.Sprint(i)] = []byte("x")
	}
	if err := reg.Beat(ctx, "r1", big); err != nil {
		t.Fatal(err)
	}
	if err := reg.Beat(ctx, "r2", map[string][]byte{"main": []byte("x")}); !errors.Is(err, fleet.ErrFull) {
		t.Errorf("Beat past MaxEntries = %v, want ErrFull", err)
	}
	if got, _ := reg.List(ctx); len(got) != fleet.MaxEntries {
		t.Errorf("registry holds %d entries, want %d", len(got), fleet.MaxEntries)
	}
	// r1 replacing its own entries is not growth.
	if err := reg.Beat(ctx, "r1", map[string][]byte{"main": []byte("x")}); err != nil {
		t.Errorf("a member shrinking its entries: %v", err)
	}
	if err := reg.Beat(ctx, "r\x1f1", nil); err == nil {
		t.Error("a member name with the separator was accepted")
	}
	if err := reg.Beat(ctx, "r1", map[string][]byte{"a\x1fb": nil}); err == nil {
		t.Error("an entry name with the separator was accepted")
	}
	if err := reg.Beat(ctx, "", nil); err == nil {
		t.Error("an empty member name was accepted")
	}
}

func render(es []fleet.Entry) string {
	var s string
	for _, e := range es {
		s += e.Member + "/" + e.Name + "=" + string(e.Value) + " "
	}
	return s
}
