package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisStore shares counts across a fleet of replicas, so the fleet as a
// whole stays under each limit: per-minute limits are GCRA buckets and
// daily counters are Redis keys, checked and counted by one script per
// request; remembered upstream exhaustion is a Redis key too. All of them
// expire on their own. When Redis fails, it falls back to a LocalStore
// with every limit divided by the expected number of replicas, and
// reports the error through onError. It is safe for concurrent use.
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
	return &RedisStore{rdb: rdb, prefix: prefix, local: NewLocalStore(),
		replicas: max(1, replicas), onError: onError, memos: make(map[string]cachedMemo)}
}

// base is the hash-tagged root of a key's Redis keys, so that all of them
// live in one Cluster slot.
func (s *RedisStore) base(key string) string { return s.prefix + "q:{" + key + "}" }

// takeScript checks and counts one request atomically. KEYS: the daily
// counter, this minute's counter, the GCRA state (a hash: tat, the
// theoretical arrival time in ms, and the per_minute and burst it was
// set under). ARGV: now (ms), per_day, per_minute, burst, max_wait (ms).
// It returns {-1, 0} when the daily limit is reached, {0, retry ms} when
// the per-minute limit is, else {1, wait ms} having counted the request.
//
// The state keeps its limit so that a change takes effect at once, as
// afterChange says: the bucket then holds the new burst minus this
// minute's count, no less than it held on a raise, no more on a lowering.
// The state lives until its bucket is full plus a minute, so an idle key
// expires without losing anything. Times near 1.8e12 ms carry float
// rounding of about 1e-4 ms, so a request within a millisecond of its
// turn is admitted (else the last of a burst could be refused).
var takeScript = redis.NewScript(`
local now, per_day, per_minute, burst, max_wait = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
if per_day > 0 and tonumber(redis.call("GET", KEYS[1]) or "0") >= per_day then return {-1, 0} end
local wait = 0
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
  local next = math.max(tat, now) + t
  wait = next - burst * t - now
  if wait > max_wait + 1 then return {0, math.ceil(wait)} end
  redis.call("HSET", KEYS[3], "tat", next, "per_minute", per_minute, "burst", burst)
  redis.call("PEXPIRE", KEYS[3], math.ceil(next - now) + 60000)
end
redis.call("INCR", KEYS[1])
redis.call("EXPIRE", KEYS[1], 172800)
redis.call("INCR", KEYS[2])
redis.call("EXPIRE", KEYS[2], 120)
return {1, math.max(0, math.floor(wait))}`)

// Take implements Store in one round trip. With maxWait > 0 a request may
// be admitted ahead of its time, like a rate.Reservation: the returned
// wait is then the caller's to sleep.
func (s *RedisStore) Take(ctx context.Context, key string, lim Limit, now time.Time, day string, maxWait time.Duration) (time.Duration, error) {
	b := s.base(key)
	keys := []string{b + ":d:" + day, b + ":m:" + strconv.FormatInt(now.Unix()/60, 10), b + ":rate"}
	res, err := takeScript.Run(ctx, s.rdb, keys, now.UnixMilli(), lim.PerDay, lim.PerMinute, lim.Burst, maxWait.Milliseconds()).Int64Slice()
	if err == nil && len(res) != 2 {
		err = fmt.Errorf("take script answered %v", res)
	}
	if err != nil {
		return s.fallback(ctx, err, key, lim, now, day, maxWait)
	}
	d := time.Duration(res[1]) * time.Millisecond
	switch res[0] {
	case -1:
		return 0, &Denied{Daily: true}
	case 0:
		return 0, &Denied{RetryAfter: d}
	}
	return d, nil
}

// fallback serves a request locally while Redis is unreachable, with the
// fleet's limit split across the replicas.
func (s *RedisStore) fallback(ctx context.Context, err error, key string, lim Limit, now time.Time, day string, maxWait time.Duration) (time.Duration, error) {
	if ctx.Err() != nil {
		return 0, ctx.Err()
	}
	s.onError(fmt.Errorf("ratelimit: redis: %w", err))
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
		s.onError(fmt.Errorf("ratelimit: redis: %w", err))
		return nil // remembered locally
	}
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
			c = cachedMemo{read: time.Now()}
		case err != nil:
			if ctx.Err() != nil {
				return time.Time{}, false, ctx.Err()
			}
			s.onError(fmt.Errorf("ratelimit: redis: %w", err))
			return s.local.Remembered(ctx, key, now)
		default:
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

// Used implements Store.
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
