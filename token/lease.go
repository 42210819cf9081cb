package token

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Locker is implemented by stores shared between processes: only the
// holder of a key's lock may fetch, so N replicas seeing the same dead token
// cause one fetch in all. The lock expires after ttl whatever happens to its
// holder; unlock releases it only if it is still ours (compare-and-delete).
// A Cache calls TryLock concurrently from its refresh flights. A plain
// Locker is not renewed: its LockTTL must then exceed FetchTimeout. A store
// that is also a LeaseLocker gets its lease renewed instead.
type Locker interface {
	TryLock(ctx context.Context, key string, ttl time.Duration) (unlock func(), ok bool, err error)
}

// LeaseLocker is implemented by shared stores whose refresh lock is a
// lease: TryLease takes key's lock for ttl if nobody holds it, and the
// HeldLease it returns renews it and saves under it. A Cache that finds a
// LeaseLocker renews its lease every ttl/3 while it fetches, so a fetch may
// take longer than ttl, while a holder that dies (SIGKILL, partition)
// blocks the fleet for at most ttl. Saves are fenced: a holder whose lease
// ran out (it was paused, or cut off) cannot overwrite the token of the
// replica that took over. A LeaseLocker is still a Locker.
type LeaseLocker interface {
	Locker
	TryLease(ctx context.Context, key string, ttl time.Duration) (HeldLease, bool, error)
}

// HeldLease is a refresh lease a replica holds. Renew extends it by its ttl
// and Save stores a token under it; both fail with ErrLeaseLost once the
// lease is no longer this holder's. Release gives it back if it still is.
type HeldLease interface {
	Renew(ctx context.Context) error
	Save(ctx context.Context, t Token) error
	Release()
}

// ErrLeaseLost means a refresh lease ran out and another replica may hold
// it now.
var ErrLeaseLost = errors.New("token: refresh lease lost")

// ForcedBudget is implemented by shared stores that count forced refreshes
// for the whole fleet: TakeForced spends one of key's perDay forced
// refreshes of day at now, or reports false if the day's budget is spent or
// the last one was less than spacing ago.
type ForcedBudget interface {
	TakeForced(ctx context.Context, key, day string, perDay int, spacing time.Duration, now time.Time) (bool, error)
}

// Watcher is implemented by stores that announce tokens saved by others:
// Watch returns the keys of new tokens until ctx ends, then closes the
// channel. Announcements may be dropped (the Cache re-reads the store as a
// backstop), so Watcher is not a delivery guarantee.
type Watcher interface {
	Watch(ctx context.Context) <-chan string
}

// storeTimeout bounds one store round trip on the refresh path, so an
// unreachable shared store is noticed quickly.
const storeTimeout = 500 * time.Millisecond

// lockPoll is how often a replica waiting on another's lease looks again.
const lockPoll = 25 * time.Millisecond

// errStoreDown marks a refresh made while the shared store is unreachable.
var errStoreDown = errors.New("token: shared store unreachable")

// lease is a Cache's link to its Store, and — when the store is shared by a
// fleet (a Locker) — the fleet's refresh lease: one replica at a time holds
// a key's lock and fetches, renewing it (LeaseLocker) while it does; the
// others wait for its token and adopt it. Forced refreshes are counted by
// the store when it keeps a fleet budget (ForcedBudget).
// Tokens saved by others arrive by announcement (a Watcher), with a periodic
// re-read as a backstop. Every store failure is reported; an outage is
// logged once when it starts and once when it ends. A lease is safe for
// concurrent use once its fields are set.
//
// lease does not install tokens: it returns those to adopt and the Cache
// decides. With a store of one process the lease is always granted.
type lease struct {
	store   Store
	key     string
	ttl     time.Duration // lock lifetime; outlives one refresh
	every   time.Duration // backstop re-read of a shared store
	now     func() time.Time
	log     logger
	onError func(op string, err error) // nil: none

	down atomic.Bool // the last store operation failed
}

// newLease returns the lease of key in store.
func newLease(store Store, key string, ttl, every time.Duration, now func() time.Time, log logger, onError func(string, error)) *lease {
	l := &lease{store: store, key: key, ttl: ttl, every: every, now: now, log: log, onError: onError}
	return l
}

// What the store can do beyond a Store is asked of it when needed rather
// than kept (a platform keeps thousands of leases): each is nil when the
// store cannot.

// locker is the store's refresh lock; nil: the store is not shared.
func (l *lease) locker() Locker { x, _ := l.store.(Locker); return x }

// leaser is the store's renewable lock; nil: the lock is not renewed.
func (l *lease) leaser() LeaseLocker { x, _ := l.store.(LeaseLocker); return x }

// budget is the store's fleet-wide forced-refresh budget; nil: forced
// refreshes are counted per process.
func (l *lease) budget() ForcedBudget { x, _ := l.store.(ForcedBudget); return x }

// watcher announces tokens others saved; nil: no announcements.
func (l *lease) watcher() Watcher { x, _ := l.store.(Watcher); return x }

// shared reports whether the store is shared by a fleet.
func (l *lease) shared() bool { return l.locker() != nil }

// isDown reports whether the last store operation failed.
func (l *lease) isDown() bool { return l.down.Load() }

// grant is a refresh lock held (or, with a store of one process, the
// store itself): release gives it back, save stores the fetched token under
// it.
type grant struct {
	l       *lease
	held    HeldLease // nil: a plain lock, or none
	unlock  func()
	stop    chan struct{} // ends the renewal; nil without one
	lost    atomic.Bool   // the renewal found the lease taken
	release sync.Once
}

// Release stops renewing and gives the lock back (a no-op if it expired
// and another replica took it).
func (g *grant) Release() {
	g.release.Do(func() {
		if g.stop != nil {
			close(g.stop)
		}
		if g.unlock != nil {
			g.unlock()
		}
	})
}

// save stores t under the lease. ErrLeaseLost means another replica took
// the lease meanwhile and t was not stored; other store failures are
// reported and swallowed (t is still current here).
func (g *grant) save(ctx context.Context, t Token) error {
	if g.held == nil {
		g.l.save(ctx, t)
		return nil
	}
	if g.lost.Load() {
		return ErrLeaseLost
	}
	sctx, cancel := context.WithTimeout(ctx, storeTimeout)
	defer cancel()
	err := g.held.Save(sctx, t)
	switch {
	case errors.Is(err, ErrLeaseLost):
		return err
	case err != nil:
		g.l.fail("save", err)
	default:
		g.l.ok()
	}
	return nil
}

// renew extends the lease every ttl/3 until stop is closed or the lease is
// found taken. A failed renewal is retried at the next tick: the lease
// outlives two missed renewals.
func (g *grant) renew(every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-g.stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
		err := g.held.Renew(ctx)
		cancel()
		if errors.Is(err, ErrLeaseLost) {
			g.lost.Store(true)
			g.l.log.Warn("refresh lease lost while fetching; the token fetched will not replace the fleet's")
			return
		}
	}
}

// acquire takes the refresh lock of a shared store; the grant's Release
// gives it back. While another replica holds it, acquire waits for that
// replica's token and returns it to adopt. The holder re-reads the store
// before fetching: a token newer than the current one and not bad is
// returned to adopt instead, as is the current token once it is no longer
// bad, and bad itself when confirmed (if not nil) accepts the stored copy
// — another replica just got it back from WeChat. A lease (LeaseLocker) is renewed by the grant until Release.
//
// A store known to be down is not asked (the backstop re-probes it); then,
// and when locking fails, the error wraps errStoreDown. An error with ctx
// done is ctx's.
func (l *lease) acquire(ctx context.Context, bad string, current func() *Token, confirmed func(st *Token) bool) (adopt *Token, g *grant, err error) {
	locker := l.locker()
	if locker == nil {
		return nil, &grant{l: l}, nil
	}
	if l.isDown() {
		return nil, nil, errStoreDown
	}
	for {
		lctx, cancel := context.WithTimeout(ctx, storeTimeout)
		g := &grant{l: l}
		var ok bool
		var err error
		if leaser := l.leaser(); leaser != nil {
			g.held, ok, err = leaser.TryLease(lctx, l.key, l.ttl)
			if ok {
				g.unlock = g.held.Release
			}
		} else {
			g.unlock, ok, err = locker.TryLock(lctx, l.key, l.ttl)
		}
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				err = fmt.Errorf("%w: %w", errStoreDown, err)
				l.fail("lock", err)
			}
			return nil, nil, err
		}
		// Read the store first, then look at the current token: an
		// announcement installs a token only after it is stored, so
		// between the two nothing can be missed.
		st := l.newer(ctx, bad, current, confirmed)
		if cur := current(); cur.Valid(l.now()) && cur.Value != bad {
			st = cur // already replaced, by us or by an announcement
		}
		if st != nil {
			if ok {
				g.Release()
			}
			return st, nil, nil
		}
		if ok {
			if g.held != nil {
				g.stop = make(chan struct{})
				go g.renew(max(l.ttl/3, 10*time.Millisecond))
			}
			return nil, g, nil
		}
		t := time.NewTimer(lockPoll)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, nil, ctx.Err()
		case <-t.C:
		}
	}
}

// takeForced spends one forced refresh: from the fleet's budget in a store
// that keeps one (refused while that store fails), else from local.
func (l *lease) takeForced(ctx context.Context, local *forceBudget, now time.Time) bool {
	budget := l.budget()
	if budget == nil {
		return local.take(now)
	}
	ctx, cancel := context.WithTimeout(ctx, storeTimeout)
	defer cancel()
	ok, err := budget.TakeForced(ctx, l.key, now.In(local.loc).Format(time.DateOnly), local.perDay, local.spacing, now)
	if err != nil {
		l.fail("budget", err)
		return false
	}
	l.ok()
	return ok
}

// newer returns the stored token if it is valid, is not bad, and is newer
// than the current one — or is bad itself but confirmed accepts it (nil
// accepts nothing).
func (l *lease) newer(ctx context.Context, bad string, current func() *Token, confirmed func(st *Token) bool) *Token {
	st, ok := l.load(ctx)
	if !ok || !st.Valid(l.now()) {
		return nil
	}
	if st.Value == bad {
		if confirmed != nil && confirmed(&st) {
			return &st
		}
		return nil
	}
	if !newer(&st, current()) {
		return nil
	}
	return &st
}

// load reads the stored token within storeTimeout; false if there is none
// or the store failed.
func (l *lease) load(ctx context.Context) (Token, bool) {
	ctx, cancel := context.WithTimeout(ctx, storeTimeout)
	defer cancel()
	t, err := l.store.Load(ctx, l.key)
	if err != nil {
		if !errors.Is(err, ErrNotFound) {
			l.fail("load", err)
		} else {
			l.ok()
		}
		return Token{}, false
	}
	l.ok()
	return t, true
}

// save stores t; in a shared store that announces it to the fleet.
func (l *lease) save(ctx context.Context, t Token) {
	if err := l.store.Save(ctx, l.key, t); err != nil {
		l.fail("save", err)
		return
	}
	l.ok()
}

// watch returns the announcements of the key's new tokens and the backstop
// ticks of a shared store (nil channels where there are none), until ctx
// ends or stop is called.
func (l *lease) watch(ctx context.Context) (updates <-chan string, backstop <-chan time.Time, stop func()) {
	stop = func() {}
	if w := l.watcher(); w != nil {
		updates = w.Watch(ctx)
	}
	if l.locker() != nil {
		t := time.NewTicker(l.every)
		backstop, stop = t.C, t.Stop
	}
	return updates, backstop, stop
}

// sync re-reads the store and returns a valid stored token newer than the
// current one, to adopt. A store that lost its data (Redis restarted
// empty) gets the current token back, so replicas that start later reuse
// it instead of fetching.
func (l *lease) sync(ctx context.Context, current func() *Token) *Token {
	sctx, cancel := context.WithTimeout(ctx, storeTimeout)
	defer cancel()
	st, err := l.store.Load(sctx, l.key)
	switch {
	case errors.Is(err, ErrNotFound):
		l.ok()
		if cur := current(); cur.Valid(l.now()) {
			if err := l.store.Save(sctx, l.key, *cur); err != nil {
				l.fail("save", err)
			} else {
				l.log.Info("token restored to the store", "fingerprint", Fingerprint(cur.Value))
			}
		}
	case err != nil:
		l.fail("load", err)
	default:
		l.ok()
		if st.Valid(l.now()) && newer(&st, current()) {
			return &st
		}
	}
	return nil
}

// fail reports every store failure and logs the first of a run, so an
// outage does not flood the log.
func (l *lease) fail(op string, err error) {
	if !l.down.Swap(true) {
		l.log.Warn("token store failed; serving the cached token", "op", op, "err", err)
	}
	if l.onError != nil {
		l.onError(op, err)
	}
}

// ok marks the store reachable, logging the end of an outage.
func (l *lease) ok() {
	if l.down.Swap(false) {
		l.log.Info("token store reachable again")
	}
}
