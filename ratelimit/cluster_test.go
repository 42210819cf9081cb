package ratelimit_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wxproxy/wxproxy/internal/redistest"
	"github.com/wxproxy/wxproxy/ratelimit"
)

// On a 3-master Cluster, through clients seeded with one node, every
// script and read of the quota store touches one slot: daily limits and
// the token budget hold exactly for the fleet, a remembered upstream 45009
// reaches the other replica, and usage reads back. Any multi-slot command
// would fail with CROSSSLOT and count as an error.
func TestRedisFleetOnCluster(t *testing.T) {
	c := redistest.StartCluster(t)
	var errs atomic.Int64
	s := ratelimit.Settings{APIs: map[string]ratelimit.Limit{"/d": {PerDay: 7}, "/m": {PerMinute: 60, Burst: 5}},
		TokenFetchPerDay: 4, RespectUpstream: true}
	var ls []*ratelimit.Limiter
	for range 3 {
		store := ratelimit.NewRedisStore(c.Client(t), "wx:", 3, func(error) { errs.Add(1) })
		ls = append(ls, ratelimit.New(s, ratelimit.Options{Name: "main", Store: store}))
	}
	ctx := context.Background()
	day, minute, fetches := 0, 0, 0
	for i := range 30 {
		if ls[i%3].Allow(ctx, "/d") == nil {
			day++
		}
		if ls[i%3].Allow(ctx, "/m") == nil {
			minute++
		}
	}
	for i := range 10 {
		if ls[i%3].AllowTokenFetch(ctx) == nil {
			fetches++
		}
	}
	if day != 7 || minute < 5 || minute > 5+2 || fetches != 4 {
		t.Errorf("fleet on a Cluster let through %d of 30 with per_day 7, %d with burst 5, %d token fetches with a budget of 4; want 7, about 5, 4", day, minute, fetches)
	}
	u, err := ls[2].Usage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	used := map[string]int64{}
	for _, x := range u {
		used[x.API] = x.UsedDay
	}
	if used["/d"] != 7 {
		t.Errorf("usage on a Cluster = %+v, want /d used 7 times", u)
	}

	const api = "/cgi-bin/message/custom/send"
	if err := ls[0].Observe(ctx, api, 45009); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(3 * time.Second)
	for !errors.Is(ls[1].Allow(ctx, api), ratelimit.ErrExhausted) {
		if time.Now().After(deadline) {
			t.Fatal("replica 2 never learned of the upstream 45009 through the Cluster")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if errs.Load() != 0 {
		t.Errorf("%d quota store errors on a Cluster (CROSSSLOT or MOVED?)", errs.Load())
	}
}
