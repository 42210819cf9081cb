package ratelimit

import (
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// A RedisStore takes permits from Redis in leases: one round trip debits a
// batch of n permits from a key's per-minute bucket and daily counter at
// once, and the replica hands them out locally until they run out or the
// lease expires. The limits in Redis are never exceeded — every permit is
// debited before it is handed out — at the price of leased permits that
// sit unused on one replica while another is refused (see RedisStore).

const (
	// leaseTTL is how long the permits of a lease may be handed out after
	// Redis granted them. It bounds how late a permit is used after it was
	// counted, and how long an unused one stays away from the fleet.
	leaseTTL = time.Second
	// leaseFill is how much of a replica's recent demand for a key one
	// lease covers: a quarter of leaseTTL, so that under steady demand a
	// lease runs out well before it expires.
	leaseFill = leaseTTL / 4
	// maxLease caps a lease whatever the limits.
	maxLease = 256
	// maxLeaseKeys bounds the lease table of a RedisStore. Limiters ask for
	// a bounded set of keys, so this is defence in depth: past it the table
	// is emptied, stranding at most one lease per key until it expires.
	maxLeaseKeys = 8192
)

// leaseCap is the most permits one lease of lim may hold, given the
// store's cap most: at most max(1, burst/8) and max(1, per_day/1000), so a
// fleet of many replicas cannot strand much of a small limit. A cap of 1
// means no leasing: every request is one round trip.
func leaseCap(lim Limit, most int) int {
	n := most
	if lim.PerMinute > 0 {
		burst := lim.Burst
		if burst <= 0 {
			burst = lim.PerMinute
		}
		n = min(n, max(1, burst/8))
	}
	if lim.PerDay > 0 {
		n = min(n, max(1, lim.PerDay/1000))
	}
	return max(1, n)
}

// grant is one lease: permits Redis debited for a key, handed out locally.
// All fields but left are fixed once the grant is published; left is
// decremented by whoever takes a permit and is closed (made very negative)
// by whoever retires the grant, so that each permit goes to exactly one
// caller or back to Redis, never both.
type grant struct {
	lim    Limit
	day    string
	minute int64 // the clock minute (Unix/60) whose counter was debited
	start  int64 // when Redis granted it, Unix ns on the Limiter's clock
	exp    int64 // start + leaseTTL
	size   int64 // permits leased, including the one its fetcher used
	tat    string
	fresh  int64 // permits of the Redis grant that wrote tat; at most these go back to the bucket
	left   atomic.Int64
}

// closedLease is what left holds once a grant is retired: far enough
// below zero that late decrements never bring it back.
const closedLease = math.MinInt64 / 2

// valid reports whether g may serve a request under lim on day at now.
func (g *grant) valid(lim Limit, day string, now int64) bool {
	return g.lim == lim && g.day == day && now < g.exp
}

// take hands out one permit of g, if g is valid and has one left. It takes
// no lock and allocates nothing.
func (g *grant) take(lim Limit, day string, now int64) bool {
	return g.valid(lim, day, now) && g.left.Add(-1) >= 0
}

// close retires g and returns how many of its permits were never handed
// out; from then on take fails.
func (g *grant) close() int64 { return max(0, g.left.Swap(closedLease)) }

// refund is what a retired grant gives back to Redis, in the next
// round trip for its key.
type refund struct {
	n     int64 // to the daily and minute counters the grant debited
	gcra  int64 // to the bucket, if the grant's Redis write is still its last one
	day   string
	min   int64
	tat   string
	limit Limit
}

// refundOf retires g and returns what it gives back.
func refundOf(g *grant) refund {
	if g == nil {
		return refund{}
	}
	n := g.close()
	return refund{n: n, gcra: min(n, g.fresh), day: g.day, min: g.minute, tat: g.tat, limit: g.lim}
}

// leases is one key's lease state in a RedisStore: the grant in force,
// read lock-free on the hot path, and the one lease fetch in flight, so
// that callers who find the grant empty wait for that fetch instead of
// each leasing a batch of their own.
type leases struct {
	cur atomic.Pointer[grant]

	mu     sync.Mutex // guards flight and the replacing of cur; never held across I/O
	flight *flight
}

// flight is a lease fetch in progress; done is closed when it ends. Its
// other fields are written before done is closed and read after.
type flight struct {
	done    chan struct{}
	lim     Limit
	day     string
	maxWait time.Duration
	denied  *Denied // Redis refused the fetcher: those who waited are refused alike
	failed  bool    // Redis failed: those who waited go to the local fallback at once
}

// nextSize is the size of the next lease of a key whose last grant was g:
// 1 to start with (or after a limit change), then twice the last lease if
// it was all used, but never more than leaseFill's worth of the demand
// seen while it lasted, and never more than capN.
func nextSize(g *grant, lim Limit, now int64, capN int) int64 {
	if g == nil || g.lim != lim || capN <= 1 {
		return 1
	}
	used := g.size - max(0, g.left.Load())
	n := 2 * g.size
	if elapsed := now - g.start; elapsed > 0 {
		n = min(n, (used*int64(leaseFill)+elapsed-1)/elapsed)
	}
	return max(1, min(n, int64(capN)))
}
