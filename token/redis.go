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
// token (expiring with it), a refresh lock per token so that exactly one
// replica fetches at a time, and a pub/sub channel announcing every new
// token so the others adopt it at once. It works with a single server,
// Sentinel or Cluster (redis.UniversalClient). It is safe for concurrent
// use.
type RedisStore struct {
	rdb    redis.UniversalClient
	prefix string
}

var (
	_ Store   = (*RedisStore)(nil)
	_ Locker  = (*RedisStore)(nil)
	_ Watcher = (*RedisStore)(nil)
)

// NewRedisStore returns a store whose keys all start with prefix.
func NewRedisStore(rdb redis.UniversalClient, prefix string) *RedisStore {
	return &RedisStore{rdb: rdb, prefix: prefix}
}

func (s *RedisStore) tokenKey(key string) string { return s.prefix + "token:{" + key + "}" }
func (s *RedisStore) lockKey(key string) string  { return s.prefix + "lock:{" + key + "}" }
func (s *RedisStore) channel() string            { return s.prefix + "tokens" }

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
	ttl := time.Until(t.ExpiresAt)
	if ttl < time.Second {
		ttl = time.Second
	}
	if err := s.rdb.Set(ctx, s.tokenKey(key), b, ttl).Err(); err != nil {
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
	unlock := func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		_ = unlockScript.Run(ctx, s.rdb, []string{s.lockKey(key)}, val).Err() // expiry releases it otherwise
	}
	return unlock, true, nil
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
