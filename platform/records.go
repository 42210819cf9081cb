package platform

import (
	"context"
	"sync"
	"sync/atomic"
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

// Schedule is the one scheduler of a set of accounts: every tick it runs
// step for each account due() returns, at most concurrency at a time,
// with busy(account) set while its step runs (so that due can skip it).
// Each signal on kick runs onKick at once (a ticket arrived while the
// platform's own token was missing: fetch now rather than after the
// backoff). It returns when ctx ends, after the steps it started.
func Schedule[A any](ctx context.Context, tick time.Duration, concurrency int, kick <-chan struct{}, onKick func(context.Context),
	due func() []A, busy func(A) *atomic.Bool, step func(context.Context, A)) {
	t := time.NewTicker(tick)
	defer t.Stop()
	sem := make(chan struct{}, concurrency)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		select {
		case <-ctx.Done():
			return
		case <-kick:
			wg.Go(func() { onKick(ctx) })
			continue
		case <-t.C:
		}
		for _, a := range due() {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			b := busy(a)
			b.Store(true)
			wg.Go(func() {
				defer func() { b.Store(false); <-sem }()
				step(ctx, a)
			})
		}
	}
}
