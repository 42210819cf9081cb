package proxy

import (
	"context"
	"encoding/json"
	"sort"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wxproxy/wxproxy/fleet"
)

// BreakerInfo is one replica's view of one app's breaker, as the admin API
// shows it and the fleet registry stores it.
type BreakerInfo struct {
	App     string        `json:"app"`
	Replica string        `json:"replica"`
	State   string        `json:"state"`
	Since   time.Time     `json:"since"`
	Counts  BreakerCounts `json:"counts"`
}

// BreakerCounts are the counts of a breaker's current window.
type BreakerCounts struct {
	Requests            uint32 `json:"requests"`
	TotalSuccesses      uint32 `json:"total_successes"`
	TotalFailures       uint32 `json:"total_failures"`
	ConsecutiveFailures uint32 `json:"consecutive_failures"`
}

// Info describes b for the replica named replica.
func (b *Breaker) Info(replica string) BreakerInfo {
	st := b.State()
	return BreakerInfo{App: b.app, Replica: replica, State: st.State, Since: st.Since, Counts: BreakerCounts{
		Requests: st.Counts.Requests, TotalSuccesses: st.Counts.TotalSuccesses,
		TotalFailures: st.Counts.TotalFailures, ConsecutiveFailures: st.Counts.ConsecutiveFailures,
	}}
}

// BreakerFleet publishes this replica's breaker states to Redis and reads
// every replica's, so the admin API of any replica shows the fleet.
// Breakers stay local (no lock around an upstream call); only their state
// is shared, in one hash-tagged registry (fleet.Registry): one slot, no
// SCAN, the same answer from every replica of a Cluster. Entries expire
// when a replica stops publishing. It is safe for concurrent use.
type BreakerFleet struct {
	reg  *fleet.Registry
	poke chan struct{}
}

const (
	fleetPublishEvery = 2 * time.Second
	fleetEntryTTL     = 10 * time.Second
)

// NewBreakerFleet returns a fleet registry under prefix in rdb.
func NewBreakerFleet(rdb redis.UniversalClient, prefix string) *BreakerFleet {
	return &BreakerFleet{reg: fleet.NewRegistry(rdb, prefix, "breakers", fleetEntryTTL), poke: make(chan struct{}, 1)}
}

// Poke asks Run to publish now (a breaker changed state). It never blocks.
func (f *BreakerFleet) Poke() {
	select {
	case f.poke <- struct{}{}:
	default:
	}
}

// Run publishes states() every 2 s and whenever poked, until ctx ends.
func (f *BreakerFleet) Run(ctx context.Context, states func() []BreakerInfo) {
	t := time.NewTicker(fleetPublishEvery)
	defer t.Stop()
	for {
		f.Publish(ctx, states())
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-f.poke:
		}
	}
}

// Publish writes infos, which all belong to one replica; while Redis is
// down the fleet view is local only.
func (f *BreakerFleet) Publish(ctx context.Context, infos []BreakerInfo) {
	if len(infos) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	entries := make(map[string][]byte, len(infos))
	for _, bi := range infos {
		b, _ := json.Marshal(bi)
		entries[bi.App] = b
	}
	_ = f.reg.Beat(ctx, infos[0].Replica, entries)
}

// Breakers returns every replica's published breakers, sorted by app and
// replica.
func (f *BreakerFleet) Breakers(ctx context.Context) ([]BreakerInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	entries, err := f.reg.List(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]BreakerInfo, 0, len(entries))
	for _, e := range entries {
		var bi BreakerInfo
		if json.Unmarshal(e.Value, &bi) == nil {
			out = append(out, bi)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].App != out[j].App {
			return out[i].App < out[j].App
		}
		return out[i].Replica < out[j].Replica
	})
	return out, nil
}
