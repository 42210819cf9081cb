package server

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wxproxy/wxproxy/config"
)

// newRedisClient builds a go-redis UniversalClient (single server,
// Sentinel or Cluster) that fails fast: a proxy must notice an outage in
// about a second and carry on with its cached token.
func newRedisClient(c config.Redis) (redis.UniversalClient, error) {
	opts := &redis.UniversalOptions{Addrs: c.Addrs, MasterName: c.MasterName, DB: c.DB}
	if c.URL != "" {
		o, err := redis.ParseURL(c.URL)
		if err != nil {
			return nil, fmt.Errorf("store.redis.url: %w", redactedURLError(err))
		}
		opts.Addrs, opts.DB, opts.Username, opts.Password, opts.TLSConfig = []string{o.Addr}, o.DB, o.Username, o.Password, o.TLSConfig
	}
	if c.Username != "" {
		opts.Username = c.Username
	}
	if c.Password != "" {
		opts.Password = c.Password
	}
	opts.MaxRetries, opts.DialerRetries = 1, 1
	opts.DialTimeout, opts.ReadTimeout, opts.WriteTimeout = time.Second, time.Second, time.Second
	opts.PoolSize = 64
	return redis.NewUniversalClient(opts), nil
}

// redactedURLError keeps a Redis URL (which may hold a password) out of
// error text.
func redactedURLError(err error) error {
	if ue, ok := err.(*url.Error); ok {
		return fmt.Errorf("%s: %w", ue.Op, ue.Err)
	}
	return err
}

// redisLog sends go-redis's own messages (dial retries during an outage)
// to the process log at debug level: wxproxy logs store failures itself,
// once per outage.
type redisLog struct{ log *slog.Logger }

func (l redisLog) Printf(ctx context.Context, format string, v ...any) {
	l.log.DebugContext(ctx, "redis: "+fmt.Sprintf(format, v...))
}
