package server

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wxproxy/wxproxy/config"
)

// newRedisClient builds the go-redis client of c.Mode — never guessed from
// the number of addresses: a single server (*redis.Client), a Cluster
// (*redis.ClusterClient, which discovers every node from one seed) or a
// master behind Sentinels (a failover client). Every client fails fast: a
// proxy must notice an outage in about a second and carry on with its
// cached token.
func newRedisClient(c config.Redis) (redis.UniversalClient, error) {
	addrs, db, username, password := c.Addrs, c.DB, c.Username, c.Password
	var tlsConf *tls.Config
	if c.URL != "" {
		o, err := redis.ParseURL(c.URL)
		if err != nil {
			return nil, fmt.Errorf("store.redis.url: %w", redactedURLError(err))
		}
		addrs, db, tlsConf = []string{o.Addr}, o.DB, o.TLSConfig
		if username == "" {
			username = o.Username
		}
		if password == "" {
			password = o.Password
		}
	}
	if c.TLS {
		if tlsConf == nil {
			tlsConf = &tls.Config{}
		}
		tlsConf.MinVersion = tls.VersionTLS12
		switch {
		case c.TLSServerName != "":
			tlsConf.ServerName = c.TLSServerName
		case c.Mode == config.RedisCluster:
			// Each node is checked against its own address, not the seed's.
			tlsConf.ServerName = ""
		}
		if c.TLSCAFile != "" {
			pool, err := config.LoadRedisCA(c.TLSCAFile, "")
			if err != nil {
				return nil, fmt.Errorf("store.redis.tls.ca_file: %w", err)
			}
			tlsConf.RootCAs = pool
		}
	}
	const timeout = time.Second
	switch c.Mode {
	case config.RedisCluster:
		return redis.NewClusterClient(&redis.ClusterOptions{
			Addrs: addrs, Username: username, Password: password, TLSConfig: tlsConf,
			MaxRetries: 1, DialerRetries: 1, MaxRedirects: 3,
			DialTimeout: timeout, ReadTimeout: timeout, WriteTimeout: timeout, PoolSize: 64,
		}), nil
	case config.RedisSentinel:
		return redis.NewFailoverClient(&redis.FailoverOptions{
			MasterName: c.MasterName, SentinelAddrs: addrs,
			SentinelUsername: c.SentinelUsername, SentinelPassword: c.SentinelPassword,
			Username: username, Password: password, DB: db, TLSConfig: tlsConf,
			MaxRetries: 1, DialerRetries: 1,
			DialTimeout: timeout, ReadTimeout: timeout, WriteTimeout: timeout, PoolSize: 64,
		}), nil
	}
	if len(addrs) != 1 {
		return nil, fmt.Errorf("store.redis: mode standalone needs exactly one address (got %d)", len(addrs))
	}
	return redis.NewClient(&redis.Options{
		Addr: addrs[0], Username: username, Password: password, DB: db, TLSConfig: tlsConf,
		MaxRetries: 1, DialerRetries: 1,
		DialTimeout: timeout, ReadTimeout: timeout, WriteTimeout: timeout, PoolSize: 64,
	}), nil
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

// outage logs a store outage once when it starts and once when it ends,
// however many requests fail in between. It is safe for concurrent use.
type outage struct {
	log        *slog.Logger
	start, end string
	down       atomic.Bool
}

func (o *outage) fail(err error) {
	if !o.down.Swap(true) {
		o.log.Warn(o.start, "err", err)
	}
}

func (o *outage) up() {
	if o.down.Swap(false) {
		o.log.Info(o.end)
	}
}

// checkNotCluster logs an error when a standalone client talks to a Redis
// Cluster node: every command on another node's slots would fail with
// MOVED, and the replica would act without its fleet.
func checkNotCluster(ctx context.Context, rdb redis.UniversalClient, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	info, err := rdb.Info(ctx, "cluster").Result()
	if err == nil && strings.Contains(info, "cluster_enabled:1") {
		log.Error("store.redis: the server is a Redis Cluster node but store.redis.mode is standalone; set mode: cluster (one seed address is enough)")
	}
}
