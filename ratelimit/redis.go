package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisStore shares counts across a fleet of replicas, so the fleet as a
// whole stays under each limit: per-minute limits are GCRA buckets and
// daily counters are Redis keys, checked and debited by one script;
// remembered upstream exhaustion is a Redis key too. All of them expire on
// their own. When Redis fails, it falls back to a LocalStore with every
// limit divided by the expected number of replicas, and reports the error
// through onError. It is safe for concurrent use.
//
// Permits are taken in leases, not one round trip per request. When a
// key's lease is empty the store asks Redis for a batch of n permits (up
// to n: fewer if fewer are available), which the script debits from the
// bucket (GCRA with cost n) and the daily counter together; the replica
// then hands them out without a lock or an allocation until they run out
// or leaseTTL (1s) passes. Callers who find the lease empty while a fetch
// is in flight wait for it rather than fetch their own. n starts at 1 and
// grows with the replica's demand for the key: at most twice the last
// lease if that one was used up, at most leaseFill's (250ms) worth of the
// demand seen, and never more than max(1, burst/8), max(1, per_day/1000)
// or 256 (leaseCap). A limit whose cap is 1 is not leased at all.
//
// Bounds. Overshoot is 0: every permit is debited in Redis before it is
// handed out, so the fleet admits at most per_day a day, and over any
// window that starts with no lease outstanding at most what the GCRA
// admits (burst + window × rate). A leased permit may be used up to
// leaseTTL after it was debited, so a window that starts while leases are
// outstanding may also see those — permits counted just before it, not
// extra ones: at most replicas × leaseCap. Under-use: each replica holds
// at most one lease per key, so at most replicas × leaseCap permits are
// debited but not yet used at any moment, each for at most leaseTTL. With
// steady demand the leases run out long before they expire (they cover a
// quarter of it), so near a limit the fleet admits at least the limit
// minus replicas × leaseCap over a window. Permits still unused when a
// lease expires or is invalidated are given back in the replica's next
// round trip for the key (no extra one): to the daily and minute counters
// always, and to the bucket when its state is still the one that lease's
// grant wrote (nothing has touched it since, so this is an exact partial
// undo that cannot make room the GCRA would not have had); otherwise they
// count as used when they were leased, and the bucket refills them at its
// rate. Daily permits of a replica that never asks again for the key stay
// away until the day ends: at most max(1, per_day/1000) per replica.
//
// Round trips: under steady load about one per lease, i.e. one per 256
// requests on a high limit (3.9 per 1000 in TestLeaseRoundTrips); a limit
// with a lease cap of 1 (burst < 16, per_day < 2000) costs one per request
// as before.
//
// A lease is valid only for the limit and quota day it was taken under:
// after Update (a reload) the next Take retires the replica's lease for
// the key, gives its unused permits back and applies the new limit in one
// script, so a changed limit takes effect at once. Used counts leased
// permits as used (a lease is at most leaseCap permits, and unused ones
// are given back as above). The fallback does not lease: while Redis is
// unreachable the permits of a lease already held are still handed out,
// and then the local limiters serve.
//
// The GCRA runs on the time the Limiter passes in (its Now), not on Redis's
// clock: replicas are assumed in sync (NTP), and a replica whose clock is
// ahead by d gains at most d's worth of the per-minute rate.
type RedisStore struct {
	rdb      redis.UniversalClient
	prefix   string
	local    *LocalStore
	replicas int
	onError  func(error)
	onUp     func()      // after a success that ends a run of failures; nil: none
	failing  atomic.Bool // the last round trip failed
	maxLease int         // the most permits one lease may hold; 1 = no leasing

	leases atomic.Pointer[map[string]*leases] // copied on write: keys are few and seldom new; at most maxLeaseKeys

	mu    sync.Mutex
	memos map[string]cachedMemo // remembered exhaustion, re-read at most once a second per key; at most maxMemos
}

type cachedMemo struct {
	memo
	read time.Time
}

// memoCacheFor is how long a remembered-exhaustion answer is reused before
// Redis is asked again: it keeps a Redis round trip off most requests.
const memoCacheFor = time.Second

// maxMemos bounds RedisStore's memo cache. Limiters ask about a bounded
// set of keys, so this is defence in depth: past it the cache is emptied
// (it is only a cache; Redis holds the memos).
const maxMemos = 8192

var _ Store = (*RedisStore)(nil)

// NewRedisStore returns a store whose keys start with prefix. replicas
// (at least 1) sizes the local fallback; onError, if set, is called for
// every Redis failure.
func NewRedisStore(rdb redis.UniversalClient, prefix string, replicas int, onError func(error)) *RedisStore {
	if onError == nil {
		onError = func(error) {}
	}
	s := &RedisStore{rdb: rdb, prefix: prefix, local: NewLocalStore(), maxLease: maxLease,
		replicas: max(1, replicas), onError: onError, memos: make(map[string]cachedMemo)}
	s.leases.Store(&map[string]*leases{})
	return s
}

// OnRecover sets f to be called once when Redis answers again after one
// or more failures reported through onError, so that an outage can be
// logged when it starts and when it ends. Call it before the store is used.
func (s *RedisStore) OnRecover(f func()) *RedisStore {
	s.onUp = f
	return s
}

// fail reports a Redis failure.
func (s *RedisStore) fail(err error) {
	s.failing.Store(true)
	s.onError(fmt.Errorf("ratelimit: redis: %w", err))
}

// up notes a Redis answer: the end of an outage, if one was running.
func (s *RedisStore) up() {
	if s.failing.Load() && s.failing.Swap(false) && s.onUp != nil {
		s.onUp()
	}
}

// base is the hash-tagged root of a key's Redis keys, so that all of them
// live in one Cluster slot.
func (s *RedisStore) base(key string) string { return s.prefix + "q:{" + key + "}" }

// takeScript gives back what a retired lease did not use, then takes up
// to want permits atomically. KEYS: the daily counter, this minute's
// counter, the GCRA state (a hash: tat, the theoretical arrival time in ms
// as written by %.17g, and the per_minute and burst it was set under), and
// the daily and minute counters the retired lease debited. ARGV: now (ms),
// per_day, per_minute, burst, max_wait (ms), want; then the give-back:
// permits for the counters, permits for the bucket, the tat the lease
// wrote, and its per_minute and burst. It returns {-1, 0, 0, ""} when the
// daily limit is reached, {0, 0, retry ms, ""} when the per-minute limit
// is, else {1, n, wait ms, tat} having debited n permits (1 <= n <= want).
//
// The bucket gets permits back only if its tat is still the one the lease
// wrote — nothing has touched it since — so the give-back undoes exactly
// part of that grant and can never make room the GCRA would not have had.
//
// n is as many permits as are available now (GCRA with cost n), capped by
// what is left of the day. If none is, one permit is reserved as before
// leasing: admitted ahead of its time by up to max_wait, with that wait
// returned. The state keeps its limit so that a change takes effect at
// once, as afterChange says: the bucket then holds the new burst minus
// this minute's count, no less than it held on a raise, no more on a
// lowering. The state lives until its bucket is full plus a minute, so an
// idle key expires without losing anything. Times near 1.8e12 ms carry
// float rounding of about 1e-4 ms, so a request within a millisecond of
// its turn is admitted (else the last of a burst could be refused).
var takeScript = redis.NewScript(`
local now, per_day, per_minute, burst, max_wait, want = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local back, back_gcra, back_pm, back_burst = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[10]), tonumber(ARGV[11])
if back > 0 then
  for _, k in ipairs({KEYS[4], KEYS[5]}) do
    local c = tonumber(redis.call("GET", k) or "0")
    if c > 0 then redis.call("DECRBY", k, math.min(c, back)) end
  end
  if back_gcra > 0 and back_pm > 0 then
    if back_burst <= 0 then back_burst = back_pm end
    local st = redis.call("HMGET", KEYS[3], "tat", "per_minute", "burst")
    if st[1] == ARGV[9] and tonumber(st[2]) == back_pm and tonumber(st[3]) == back_burst then
      redis.call("HSET", KEYS[3], "tat", string.format("%.17g", tonumber(ARGV[9]) - back_gcra * 60000 / back_pm))
    end
  end
end
local n = want
if per_day > 0 then
  local used = tonumber(redis.call("GET", KEYS[1]) or "0")
  if used >= per_day then return {-1, 0, 0, ""} end
  n = math.min(n, per_day - used)
end
local wait, tat_s = 0, ""
if per_minute > 0 then
  if burst <= 0 then burst = per_minute end
  local t = 60000 / per_minute
  local st = redis.call("HMGET", KEYS[3], "tat", "per_minute", "burst")
  local tat, old_pm, old_burst = tonumber(st[1]), tonumber(st[2]) or 0, tonumber(st[3]) or 0
  if tat == nil or old_pm ~= per_minute or old_burst ~= burst then
    local allowance = math.max(0, burst - tonumber(redis.call("GET", KEYS[2]) or "0"))
    if tat ~= nil and old_pm > 0 then
      local held = old_burst - math.max(0, tat - now) * old_pm / 60000
      if per_minute >= old_pm and burst >= old_burst then
        allowance = math.max(allowance, held)
      else
        allowance = math.min(allowance, held)
      end
    end
    allowance = math.max(0, math.min(allowance, burst))
    tat = now + (burst - allowance) * t
  end
  local base = math.max(tat, now)
  local avail = math.floor((now + burst * t - base + 1) / t)
  local next
  if avail >= 1 then
    n = math.min(n, avail)
    next = base + n * t
  else
    n = 1
    next = base + t
    wait = next - burst * t - now
    if wait > max_wait + 1 then return {0, 0, math.ceil(wait), ""} end
  end
  tat_s = string.format("%.17g", next)
  redis.call("HSET", KEYS[3], "tat", tat_s, "per_minute", per_minute, "burst", burst)
  redis.call("PEXPIRE", KEYS[3], math.ceil(next - now) + 60000)
end
redis.call("INCRBY", KEYS[1], n)
redis.call("EXPIRE", KEYS[1], 172800)
redis.call("INCRBY", KEYS[2], n)
redis.call("EXPIRE", KEYS[2], 120)
return {1, n, math.max(0, math.floor(wait)), tat_s}`)

// Take implements Store. A permit of the key's lease is handed out without
// a lock, an allocation or a round trip; otherwise Take leases more (see
// RedisStore). With maxWait > 0 a request may be admitted ahead of its
// time, like a rate.Reservation: the returned wait is then the caller's to
// sleep. Permits of a lease are never ahead of their time.
func (s *RedisStore) Take(ctx context.Context, key string, lim Limit, now time.Time, day string, maxWait time.Duration) (time.Duration, error) {
	k := s.leasesOf(key)
	if g := k.cur.Load(); g != nil && g.take(lim, day, now.UnixNano()) {
		return 0, nil
	}
	return s.lease(ctx, k, key, lim, now, day, maxWait)
}

// lease is Take's slow path: it waits for a lease fetch already in flight
// for key, or makes one, and installs what Redis granted.
func (s *RedisStore) lease(ctx context.Context, k *leases, key string, lim Limit, now time.Time, day string, maxWait time.Duration) (time.Duration, error) {
	ns := now.UnixNano()
	capN := leaseCap(lim, s.maxLease)
	for {
		k.mu.Lock()
		g := k.cur.Load()
		if g != nil && g.take(lim, day, ns) { // filled while we came here
			k.mu.Unlock()
			return 0, nil
		}
		if f := k.flight; f != nil && capN > 1 {
			k.mu.Unlock()
			select {
			case <-ctx.Done():
				return 0, ctx.Err()
			case <-f.done:
			}
			if f.lim == lim && f.day == day && maxWait <= f.maxWait {
				if f.denied != nil {
					d := *f.denied
					return 0, &d
				}
				if f.failed {
					return s.fallback(ctx, key, lim, now, day, maxWait)
				}
			}
			continue
		}
		want := nextSize(g, lim, ns, capN)
		var back refund
		if g != nil && !g.valid(lim, day, ns) {
			back = refundOf(g) // expired, or taken under another limit or day
			k.cur.Store(nil)
		}
		var f *flight
		if capN > 1 {
			f = &flight{done: make(chan struct{}), lim: lim, day: day, maxWait: maxWait}
			k.flight = f
		}
		k.mu.Unlock()

		n, tat, wait, err := s.run(ctx, key, lim, now, day, maxWait, want, back)

		k.mu.Lock()
		if err == nil && capN > 1 {
			ng := &grant{lim: lim, day: day, minute: now.Unix() / 60, start: ns, exp: ns + int64(leaseTTL), size: n, tat: tat, fresh: n - 1}
			left := n - 1
			if old := k.cur.Load(); old != nil && old.valid(lim, day, ns) {
				// Granted to another caller meanwhile: merge, keeping the
				// earlier expiry so that no permit outlives its lease.
				if r := old.close(); r > 0 {
					left += r
					ng.size += r
					ng.exp = min(ng.exp, old.exp)
				}
			}
			ng.left.Store(left)
			k.cur.Store(ng)
		}
		if f != nil {
			k.flight = nil
			var d *Denied
			if errors.As(err, &d) {
				c := *d
				f.denied = &c
			}
			f.failed = err != nil && f.denied == nil && ctx.Err() == nil
			close(f.done)
		}
		k.mu.Unlock()
		if err != nil {
			if ctx.Err() != nil {
				return 0, ctx.Err()
			}
			var d *Denied
			if errors.As(err, &d) {
				s.up()
				return 0, err
			}
			s.fail(err)
			return s.fallback(ctx, key, lim, now, day, maxWait)
		}
		s.up()
		return wait, nil
	}
}

// run is one round trip of takeScript: it gives back back, then takes up
// to want permits for key. It returns how many it took, the tat their
// grant wrote and the wait of a reserved permit, or a *Denied, or Redis's
// error.
func (s *RedisStore) run(ctx context.Context, key string, lim Limit, now time.Time, day string, maxWait time.Duration, want int64, back refund) (n int64, tat string, wait time.Duration, err error) {
	b := s.base(key)
	dayKey, minKey := b+":d:"+day, b+":m:"+strconv.FormatInt(now.Unix()/60, 10)
	backDay, backMin := dayKey, minKey
	if back.n > 0 {
		backDay, backMin = b+":d:"+back.day, b+":m:"+strconv.FormatInt(back.min, 10)
	}
	keys := []string{dayKey, minKey, b + ":rate", backDay, backMin}
	res, err := takeScript.Run(ctx, s.rdb, keys, now.UnixMilli(), lim.PerDay, lim.PerMinute, lim.Burst, maxWait.Milliseconds(), want,
		back.n, back.gcra, back.tat, back.limit.PerMinute, back.limit.Burst).Slice()
	if err != nil {
		return 0, "", 0, err
	}
	if len(res) != 4 {
		return 0, "", 0, fmt.Errorf("take script answered %v", res)
	}
	code, _ := res[0].(int64)
	n, _ = res[1].(int64)
	ms, _ := res[2].(int64)
	tat, _ = res[3].(string)
	switch {
	case code == -1:
		return 0, "", 0, &Denied{Daily: true}
	case code == 0:
		return 0, "", 0, &Denied{RetryAfter: time.Duration(ms) * time.Millisecond}
	case code != 1 || n < 1 || n > want:
		return 0, "", 0, fmt.Errorf("take script answered %v", res)
	}
	return n, tat, time.Duration(ms) * time.Millisecond, nil
}

// leasesOf returns the lease state of key, adding it on first use.
func (s *RedisStore) leasesOf(key string) *leases {
	if k := (*s.leases.Load())[key]; k != nil {
		return k
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	m := *s.leases.Load()
	if k := m[key]; k != nil {
		return k
	}
	next := make(map[string]*leases, len(m)+1)
	if len(m) < maxLeaseKeys {
		maps.Copy(next, m)
	}
	k := &leases{}
	next[key] = k
	s.leases.Store(&next)
	return k
}

// fallback serves a request locally while Redis is unreachable, with the
// fleet's limit split across the replicas.
func (s *RedisStore) fallback(ctx context.Context, key string, lim Limit, now time.Time, day string, maxWait time.Duration) (time.Duration, error) {
	if ctx.Err() != nil {
		return 0, ctx.Err()
	}
	split := func(n int) int {
		if n <= 0 {
			return 0
		}
		return max(1, n/s.replicas)
	}
	return s.local.Take(ctx, key, Limit{PerMinute: split(lim.PerMinute), PerDay: split(lim.PerDay), Burst: split(lim.Burst)}, now, day, maxWait)
}

// Remember implements Store.
func (s *RedisStore) Remember(ctx context.Context, key string, until time.Time, daily bool) error {
	s.cache(key, cachedMemo{memo: memo{until: until, daily: daily}, read: time.Now()})
	_ = s.local.Remember(ctx, key, until, daily)
	val := strconv.FormatInt(until.UnixMilli(), 10)
	if daily {
		val += "|daily"
	}
	// The key must expire: SET with a TTL <= 0 would keep it forever.
	if err := s.rdb.Set(ctx, s.base(key)+":memo", val, max(time.Until(until), time.Second)).Err(); err != nil {
		s.fail(err)
		return nil // remembered locally
	}
	s.up()
	return nil
}

// Remembered implements Store. Answers are reused for up to a second.
func (s *RedisStore) Remembered(ctx context.Context, key string, now time.Time) (time.Time, bool, error) {
	s.mu.Lock()
	c, ok := s.memos[key]
	s.mu.Unlock()
	if !ok || time.Since(c.read) >= memoCacheFor {
		val, err := s.rdb.Get(ctx, s.base(key)+":memo").Result()
		switch {
		case errors.Is(err, redis.Nil):
			s.up()
			c = cachedMemo{read: time.Now()}
		case err != nil:
			if ctx.Err() != nil {
				return time.Time{}, false, ctx.Err()
			}
			s.fail(err)
			return s.local.Remembered(ctx, key, now)
		default:
			s.up()
			ms, flag, _ := strings.Cut(val, "|")
			n, _ := strconv.ParseInt(ms, 10, 64)
			c = cachedMemo{memo: memo{until: time.UnixMilli(n), daily: flag == "daily"}, read: time.Now()}
		}
		s.cache(key, c)
	}
	if !c.until.After(now) {
		return time.Time{}, false, nil
	}
	return c.until, c.daily, nil
}

// Used implements Store. Leased permits count as used from the moment
// they are leased, so each replica may add up to leaseCap permits it has
// not handed out yet; unused ones are subtracted when they are given back.
func (s *RedisStore) Used(ctx context.Context, key string, now time.Time, day string) (int64, int64, error) {
	b := s.base(key)
	pipe := s.rdb.Pipeline()
	m := pipe.Get(ctx, b+":m:"+strconv.FormatInt(now.Unix()/60, 10))
	d := pipe.Get(ctx, b+":d:"+day)
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return 0, 0, fmt.Errorf("ratelimit: redis: %w", err)
	}
	minute, _ := m.Int64()
	daily, _ := d.Int64()
	return minute, daily, nil
}

// cache stores a memo in the memo cache, emptying it first when full.
func (s *RedisStore) cache(key string, c cachedMemo) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.memos[key]; !ok && len(s.memos) >= maxMemos {
		clear(s.memos)
	}
	s.memos[key] = c
}
