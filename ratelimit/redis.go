package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"
)

// RedisStore shares counts across a fleet of replicas, so the fleet as a
// whole stays under each limit: per-minute limits are GCRA (redis_rate),
// daily counters and remembered upstream exhaustion are Redis keys that
// expire on their own. When Redis fails, it falls back to a LocalStore
// with every limit divided by the expected number of replicas, and
// reports the error through onError. It is safe for concurrent use.
type RedisStore struct {
	rdb      redis.UniversalClient
	prefix   string
	gcra     *redis_rate.Limiter
	local    *LocalStore
	replicas int
	onError  func(error)

	mu    sync.Mutex
	memos map[string]cachedMemo // remembered exhaustion, re-read at most once a second per key
}

type cachedMemo struct {
	memo
	read time.Time
}

// memoCacheFor is how long a remembered-exhaustion answer is reused before
// Redis is asked again: it keeps a Redis round trip off most requests.
const memoCacheFor = time.Second

var _ Store = (*RedisStore)(nil)

// NewRedisStore returns a store whose keys start with prefix. replicas
// (at least 1) sizes the local fallback; onError, if set, is called for
// every Redis failure.
func NewRedisStore(rdb redis.UniversalClient, prefix string, replicas int, onError func(error)) *RedisStore {
	if onError == nil {
		onError = func(error) {}
	}
	return &RedisStore{rdb: rdb, prefix: prefix, gcra: redis_rate.NewLimiter(rdb), local: NewLocalStore(),
		replicas: max(1, replicas), onError: onError, memos: make(map[string]cachedMemo)}
}

// base is the hash-tagged root of a key's Redis keys, so that all of them
// live in one Cluster slot.
func (s *RedisStore) base(key string) string { return s.prefix + "q:{" + key + "}" }

// countScript checks and counts one request: it refuses (-1) when the
// daily counter is at its limit, else increments the daily and per-minute
// counters, which expire on their own.
var countScript = redis.NewScript(`
local d = tonumber(redis.call("GET", KEYS[1]) or "0")
local limit = tonumber(ARGV[1])
if limit > 0 and d >= limit then return -1 end
redis.call("INCR", KEYS[1])
redis.call("EXPIRE", KEYS[1], 172800)
redis.call("INCR", KEYS[2])
redis.call("EXPIRE", KEYS[2], 120)
return d + 1`)

// Take implements Store. With a per-minute limit and maxWait > 0 it
// waits inside Take (GCRA cannot reserve), and then returns 0.
func (s *RedisStore) Take(ctx context.Context, key string, lim Limit, now time.Time, day string, maxWait time.Duration) (time.Duration, error) {
	b := s.base(key)
	dayKey, minKey := b+":d:"+day, b+":m:"+strconv.FormatInt(now.Unix()/60, 10)
	n, err := countScript.Run(ctx, s.rdb, []string{dayKey, minKey}, lim.PerDay).Int64()
	if err != nil {
		return s.fallback(ctx, err, key, lim, now, day, maxWait)
	}
	if n < 0 {
		return 0, &Denied{Daily: true}
	}
	if lim.PerMinute <= 0 {
		return 0, nil
	}
	limit := redis_rate.Limit{Rate: lim.PerMinute, Burst: lim.Burst, Period: time.Minute}
	deadline := time.Now().Add(maxWait)
	for {
		res, err := s.gcra.Allow(ctx, b+":gcra", limit)
		if err != nil {
			s.uncount(ctx, dayKey, minKey)
			return s.fallback(ctx, err, key, lim, now, day, maxWait)
		}
		if res.Allowed > 0 {
			return 0, nil
		}
		if time.Now().Add(res.RetryAfter).After(deadline) {
			s.uncount(ctx, dayKey, minKey)
			return 0, &Denied{RetryAfter: res.RetryAfter}
		}
		t := time.NewTimer(res.RetryAfter)
		select {
		case <-ctx.Done():
			t.Stop()
			s.uncount(context.WithoutCancel(ctx), dayKey, minKey)
			return 0, ctx.Err()
		case <-t.C:
		}
	}
}

// uncount takes back a count for a request that was refused after all.
func (s *RedisStore) uncount(ctx context.Context, keys ...string) {
	pipe := s.rdb.Pipeline()
	for _, k := range keys {
		pipe.Decr(ctx, k)
	}
	_, _ = pipe.Exec(ctx) // best effort: a lost decrement errs on the safe side
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
	m := memo{until: until, daily: daily}
	s.mu.Lock()
	s.memos[key] = cachedMemo{memo: m, read: time.Now()}
	s.mu.Unlock()
	_ = s.local.Remember(ctx, key, until, daily)
	val := strconv.FormatInt(until.UnixMilli(), 10)
	if daily {
		val += "|daily"
	}
	if err := s.rdb.Set(ctx, s.base(key)+":memo", val, time.Until(until)).Err(); err != nil {
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
		s.mu.Lock()
		s.memos[key] = c
		s.mu.Unlock()
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

// Keys implements Store.
func (s *RedisStore) Keys(ctx context.Context, prefix string) ([]string, error) {
	seen := map[string]bool{}
	iter := s.rdb.Scan(ctx, 0, s.prefix+"q:{"+prefix+"*", 256).Iterator()
	for iter.Next(ctx) {
		k := iter.Val()
		if i, j := strings.IndexByte(k, '{'), strings.IndexByte(k, '}'); i >= 0 && j > i {
			seen[k[i+1:j]] = true
		}
	}
	if err := iter.Err(); err != nil {
		return nil, fmt.Errorf("ratelimit: redis: %w", err)
	}
	keys := make([]string, 0, len(seen))
	for k := range seen {
		keys = append(keys, k)
	}
	return keys, nil
}
