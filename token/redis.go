package token

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisStore shares tokens across a fleet of replicas: one Redis key per
// token (expiring with it), a refresh lease per token so that exactly one
// replica fetches at a time, a fleet-wide count of forced refreshes, and a
// pub/sub channel announcing every new token so the others adopt it at
// once. It works with a single server, Sentinel or Cluster
// (redis.UniversalClient): a token's keys share one hash tag, {key}, so
// every command and script touches one slot. It is safe for concurrent use.
type RedisStore struct {
	rdb    redis.UniversalClient
	prefix string
}

var (
	_ Store        = (*RedisStore)(nil)
	_ Locker       = (*RedisStore)(nil)
	_ LeaseLocker  = (*RedisStore)(nil)
	_ ForcedBudget = (*RedisStore)(nil)
	_ Watcher      = (*RedisStore)(nil)
)

// NewRedisStore returns a store whose keys all start with prefix.
func NewRedisStore(rdb redis.UniversalClient, prefix string) *RedisStore {
	return &RedisStore{rdb: rdb, prefix: prefix}
}

func (s *RedisStore) tokenKey(key string) string { return s.prefix + "token:{" + key + "}" }
func (s *RedisStore) lockKey(key string) string  { return s.prefix + "lock:{" + key + "}" }
func (s *RedisStore) forcedKey(key string) string {
	return s.prefix + "forced:{" + key + "}"
}
func (s *RedisStore) channel() string { return s.prefix + "tokens" }

// Load returns the token saved under key, or ErrNotFound.
func (s *RedisStore) Load(ctx context.Context, key string) (Token, error) {
	b, err := s.rdb.Get(ctx, s.tokenKey(key)).Bytes()
	if errors.Is(err, redis.Nil) {
		return Token{}, ErrNotFound
	}
	if err != nil {
		return Token{}, fmt.Errorf("token: redis load: %w", err)
	}
	var t Token
	if err := json.Unmarshal(b, &t); err != nil {
		return Token{}, fmt.Errorf("token: redis load: decode: %w", err)
	}
	return t, nil
}

// Save stores t under key until it expires and announces it.
func (s *RedisStore) Save(ctx context.Context, key string, t Token) error {
	b, err := json.Marshal(t)
	if err != nil {
		return fmt.Errorf("token: redis save: %w", err)
	}
	if err := s.rdb.Set(ctx, s.tokenKey(key), b, tokenTTL(t)).Err(); err != nil {
		return fmt.Errorf("token: redis save: %w", err)
	}
	if err := s.rdb.Publish(ctx, s.channel(), key).Err(); err != nil {
		return fmt.Errorf("token: redis publish: %w", err)
	}
	return nil
}

// unlockScript deletes the lock only if it still holds our value, so a
// holder whose lock expired can never release another replica's lock.
var unlockScript = redis.NewScript(`
if redis.call("GET", KEYS[1]) == ARGV[1] then
	return redis.call("DEL", KEYS[1])
end
return 0`)

// TryLock takes key's refresh lock for ttl if nobody holds it.
func (s *RedisStore) TryLock(ctx context.Context, key string, ttl time.Duration) (func(), bool, error) {
	l, ok, err := s.TryLease(ctx, key, ttl)
	if !ok {
		return nil, false, err
	}
	return l.Release, true, nil
}

// TryLease takes key's refresh lock as a lease of ttl if nobody holds it.
// The lock's value is random and this holder's alone: renewing, saving
// under it and releasing it compare it first, in one script.
func (s *RedisStore) TryLease(ctx context.Context, key string, ttl time.Duration) (HeldLease, bool, error) {
	b := make([]byte, 16)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	val := hex.EncodeToString(b)
	ok, err := s.rdb.SetNX(ctx, s.lockKey(key), val, ttl).Result()
	if err != nil {
		return nil, false, fmt.Errorf("token: redis lock: %w", err)
	}
	if !ok {
		return nil, false, nil
	}
	return &redisLease{s: s, key: key, val: val, ttl: ttl}, true, nil
}

// redisLease is a refresh lease held in a RedisStore.
type redisLease struct {
	s   *RedisStore
	key string
	val string
	ttl time.Duration
}

// renewScript extends the lock only if it still holds our value.
var renewScript = redis.NewScript(`
if redis.call("GET", KEYS[1]) == ARGV[1] then
	return redis.call("PEXPIRE", KEYS[1], ARGV[2])
end
return 0`)

// saveScript stores the token only while the lock still holds our value:
// a holder whose lease ran out never overwrites its successor's token.
var saveScript = redis.NewScript(`
if redis.call("GET", KEYS[1]) ~= ARGV[1] then
	return 0
end
redis.call("SET", KEYS[2], ARGV[2], "PX", ARGV[3])
return 1`)

// Renew extends the lease by its ttl, or fails with ErrLeaseLost.
func (l *redisLease) Renew(ctx context.Context) error {
	n, err := renewScript.Run(ctx, l.s.rdb, []string{l.s.lockKey(l.key)}, l.val, l.ttl.Milliseconds()).Int()
	if err != nil {
		return fmt.Errorf("token: redis renew: %w", err)
	}
	if n != 1 {
		return ErrLeaseLost
	}
	return nil
}

// Save stores t under the lease and announces it, or fails with
// ErrLeaseLost without storing it.
func (l *redisLease) Save(ctx context.Context, t Token) error {
	b, err := json.Marshal(t)
	if err != nil {
		return fmt.Errorf("token: redis save: %w", err)
	}
	keys := []string{l.s.lockKey(l.key), l.s.tokenKey(l.key)}
	n, err := saveScript.Run(ctx, l.s.rdb, keys, l.val, b, tokenTTL(t).Milliseconds()).Int()
	if err != nil {
		return fmt.Errorf("token: redis save: %w", err)
	}
	if n != 1 {
		return ErrLeaseLost
	}
	if err := l.s.rdb.Publish(ctx, l.s.channel(), l.key).Err(); err != nil {
		return fmt.Errorf("token: redis publish: %w", err)
	}
	return nil
}

// Release deletes the lock if it still holds our value; expiry releases it
// otherwise.
func (l *redisLease) Release() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = unlockScript.Run(ctx, l.s.rdb, []string{l.s.lockKey(l.key)}, l.val).Err()
}

// forcedScript spends one of the day's forced refreshes if the budget
// allows. KEYS[1] is a hash: day, count, last (ms). ARGV: day, per_day,
// spacing (ms), now (ms). It returns 1 when spent, 0 when refused.
var forcedScript = redis.NewScript(`
local day, per_day, spacing, now = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local st = redis.call("HMGET", KEYS[1], "day", "count", "last")
local count = 0
if st[1] == day then count = tonumber(st[2]) or 0 end
local last = tonumber(st[3])
if count >= per_day or (last ~= nil and now - last < spacing) then return 0 end
redis.call("HSET", KEYS[1], "day", day, "count", count + 1, "last", now)
redis.call("PEXPIRE", KEYS[1], 172800000)
return 1`)

// TakeForced spends one of the fleet's forced refreshes of key on day.
func (s *RedisStore) TakeForced(ctx context.Context, key, day string, perDay int, spacing time.Duration, now time.Time) (bool, error) {
	n, err := forcedScript.Run(ctx, s.rdb, []string{s.forcedKey(key)}, day, perDay, spacing.Milliseconds(), now.UnixMilli()).Int()
	if err != nil {
		return false, fmt.Errorf("token: redis forced budget: %w", err)
	}
	return n == 1, nil
}

// Watch announces the keys of tokens saved by any replica until ctx ends.
// The subscription reconnects by itself after Redis comes back.
func (s *RedisStore) Watch(ctx context.Context) <-chan string {
	out := make(chan string, 16)
	sub := s.rdb.Subscribe(ctx, s.channel())
	go func() {
		defer close(out)
		defer sub.Close()
		ch := sub.Channel()
		for {
			select {
			case <-ctx.Done():
				return
			case m, ok := <-ch:
				if !ok {
					return
				}
				select {
				case out <- m.Payload:
				default: // a re-read is already due
				}
			}
		}
	}()
	return out
}

// tokenTTL is how long t is kept: until it expires, at least a second.
func tokenTTL(t Token) time.Duration { return max(time.Until(t.ExpiresAt), time.Second) }
