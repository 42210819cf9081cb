package proxy

import (
	"context"
	"encoding/json"
	"sort"
	"time"

	"github.com/redis/go-redis/v9"
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
// is shared. Entries expire when a replica stops publishing. It is safe for
// concurrent use.
type BreakerFleet struct {
	rdb    redis.UniversalClient
	prefix string
	poke   chan struct{}
}

const (
	fleetPublishEvery = 2 * time.Second
	fleetEntryTTL     = 10 * time.Second
)

// NewBreakerFleet returns a fleet registry under prefix in rdb.
func NewBreakerFleet(rdb redis.UniversalClient, prefix string) *BreakerFleet {
	return &BreakerFleet{rdb: rdb, prefix: prefix, poke: make(chan struct{}, 1)}
}

func (f *BreakerFleet) key(bi BreakerInfo) string {
	return f.prefix + "breaker:" + bi.App + ":" + bi.Replica
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

// Publish writes infos; while Redis is down the fleet view is local only.
func (f *BreakerFleet) Publish(ctx context.Context, infos []BreakerInfo) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	pipe := f.rdb.Pipeline()
	for _, bi := range infos {
		b, _ := json.Marshal(bi)
		pipe.Set(ctx, f.key(bi), b, fleetEntryTTL)
	}
	_, _ = pipe.Exec(ctx)
}

// Breakers returns every replica's published breakers, sorted by app and
// replica.
func (f *BreakerFleet) Breakers(ctx context.Context) ([]BreakerInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	var keys []string
	iter := f.rdb.Scan(ctx, 0, f.prefix+"breaker:*", 256).Iterator()
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		return nil, err
	}
	var out []BreakerInfo
	if len(keys) > 0 {
		vals, err := f.rdb.MGet(ctx, keys...).Result()
		if err != nil {
			return nil, err
		}
		for _, v := range vals {
			s, ok := v.(string)
			if !ok {
				continue
			}
			var bi BreakerInfo
			if json.Unmarshal([]byte(s), &bi) == nil {
				out = append(out, bi)
			}
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
