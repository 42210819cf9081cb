package platform

import (
	"context"
	"sync"
	"time"
)

// LoadRecords reads every record of name from store, hands each to adopt,
// then drops from set (guarded by mu) every account no longer stored. It
// keeps one replica's accounts — a platform's merchants, a suite's corps —
// in step with the fleet's store.
func LoadRecords[V any](ctx context.Context, store Store, name string, mu *sync.RWMutex, set map[string]V, adopt func(Record) V) error {
	recs, err := store.Records(ctx, name)
	if err != nil {
		return err
	}
	seen := make(map[string]bool, len(recs))
	for _, r := range recs {
		seen[r.AppID] = true
		adopt(r)
	}
	mu.Lock()
	for id := range set {
		if !seen[id] {
			delete(set, id)
		}
	}
	mu.Unlock()
	return nil
}

// FollowRecords reloads each account announced on events (record changes
// made by other replicas) and, as a backstop for lost announcements,
// calls loadAll every every, until ctx ends.
func FollowRecords(ctx context.Context, events <-chan string, every time.Duration, reload func(context.Context, string), loadAll func(context.Context)) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case id, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			reload(ctx, id)
		case <-t.C:
			loadAll(ctx)
		}
	}
}
