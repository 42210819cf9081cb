package fleet

import (
	"context"
	"encoding/json"
	"time"

	"github.com/redis/go-redis/v9"
)

// Replica is one replica of the fleet as GET /admin/replicas shows it.
type Replica struct {
	Replica string    `json:"replica"` // host/pid
	Started time.Time `json:"started"`
	Seen    time.Time `json:"seen"` // last heartbeat, by Redis's clock
	Apps    []string  `json:"apps"`
}

// ReplicaTTL is how long a replica stays listed after its last heartbeat;
// replicas beat every HeartbeatEvery.
const (
	ReplicaTTL     = 10 * time.Second
	HeartbeatEvery = 2 * time.Second
)

// Replicas is the registry of live replicas. It is safe for concurrent use.
type Replicas struct {
	reg  *Registry
	self Replica
}

// NewReplicas returns the replicas registry under prefix; self describes
// this replica.
func NewReplicas(rdb redis.UniversalClient, prefix string, self Replica) *Replicas {
	return &Replicas{reg: NewRegistry(rdb, prefix, "replicas", ReplicaTTL), self: self}
}

// Beat announces this replica alive.
func (r *Replicas) Beat(ctx context.Context) error {
	b, _ := json.Marshal(r.self)
	return r.reg.Beat(ctx, r.self.Replica, map[string][]byte{"": b})
}

// Run beats every HeartbeatEvery until ctx ends.
func (r *Replicas) Run(ctx context.Context) {
	t := time.NewTicker(HeartbeatEvery)
	defer t.Stop()
	for {
		bctx, cancel := context.WithTimeout(ctx, time.Second)
		_ = r.Beat(bctx) // while Redis is down the view is stale; it expires
		cancel()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// List returns the live replicas, ordered by name.
func (r *Replicas) List(ctx context.Context) ([]Replica, error) {
	entries, err := r.reg.List(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]Replica, 0, len(entries))
	for _, e := range entries {
		var rep Replica
		if json.Unmarshal(e.Value, &rep) == nil {
			rep.Replica, rep.Seen = e.Member, e.Seen
			out = append(out, rep)
		}
	}
	return out, nil
}

// Self returns this replica's description, for a view without Redis.
func (r *Replicas) Self() Replica { return r.self }
