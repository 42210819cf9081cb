package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/url"
	"sort"
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

// fleet publishes this replica's breaker states to Redis and reads
// everyone's, so GET /admin/breakers on any replica shows the fleet.
// Entries expire when a replica stops publishing.
type fleet struct {
	rdb     redis.UniversalClient
	prefix  string
	replica string
	log     *slog.Logger
	poke    chan struct{}
}

const (
	fleetPublishEvery = 2 * time.Second
	fleetEntryTTL     = 10 * time.Second
)

func (f *fleet) key(app string) string { return f.prefix + "breaker:" + app + ":" + f.replica }

// run publishes every fleetPublishEvery and whenever poked, until ctx ends.
func (f *fleet) run(ctx context.Context, states func() []breakerInfo) {
	t := time.NewTicker(fleetPublishEvery)
	defer t.Stop()
	for {
		f.publish(ctx, states())
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-f.poke:
		}
	}
}

func (f *fleet) publish(ctx context.Context, infos []breakerInfo) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	pipe := f.rdb.Pipeline()
	for _, bi := range infos {
		b, _ := json.Marshal(bi)
		pipe.Set(ctx, f.key(bi.App), b, fleetEntryTTL)
	}
	_, _ = pipe.Exec(ctx) // while Redis is down the fleet view is local only
}

// breakers returns every replica's published breakers, sorted.
func (f *fleet) breakers(ctx context.Context) ([]breakerInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	var keys []string
	iter := f.rdb.Scan(ctx, 0, f.prefix+"breaker:*", 256).Iterator()
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		return nil, err
	}
	var out []breakerInfo
	if len(keys) > 0 {
		vals, err := f.rdb.MGet(ctx, keys...).Result()
		if err != nil {
			return nil, err
		}
		for _, v := range vals {
			s, ok := v.(string)
			if !ok {
				continue
			}
			var bi breakerInfo
			if json.Unmarshal([]byte(s), &bi) == nil {
				out = append(out, bi)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].App != out[j].App {
			return out[i].App < out[j].App
		}
		return out[i].Replica < out[j].Replica
	})
	return out, nil
}

// redisLog sends go-redis's own messages (dial retries during an outage)
// to the process log at debug level: wxproxy logs store failures itself,
// once per outage.
type redisLog struct{ log *slog.Logger }

func (l redisLog) Printf(ctx context.Context, format string, v ...any) {
	l.log.DebugContext(ctx, "redis: "+fmt.Sprintf(format, v...))
}
