package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"
	"github.com/sony/gobreaker/v2"

	"github.com/wxproxy/wxproxy/config"
	"github.com/wxproxy/wxproxy/proxy"
	"github.com/wxproxy/wxproxy/ratelimit"
	"github.com/wxproxy/wxproxy/scrub"
	"github.com/wxproxy/wxproxy/token"
)

// check validates the file at path and prints the effective config.
func check(path string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, err := config.Load(path, getenv)
	if err != nil {
		fmt.Fprintf(stderr, "%s: invalid configuration:\n%v\n", path, err)
		return errReported
	}
	if err := cfg.WriteRedacted(stdout); err != nil {
		return err
	}
	return nil
}

func serve(ctx context.Context, path string, getenv func(string) string, stderr io.Writer) error {
	cfg, err := config.Load(path, getenv)
	if err != nil {
		fmt.Fprintf(stderr, "%s: invalid configuration:\n%v\n", path, err)
		return errReported
	}
	log := newLogger(cfg.Log, stderr)
	tuneGC(getenv, log)
	srv, err := newServer(cfg, log)
	if err != nil {
		return err
	}
	srv.reloadFrom = func() (*config.Config, error) { return config.Load(path, getenv) }
	return srv.run(ctx, nil)
}

// tuneGC runs the collector less often than Go's default unless GOGC is
// set: a proxy's live heap is a few MiB, so the memory cost is small, and
// the load benchmark gains about 12% req/s.
func tuneGC(getenv func(string) string, log *slog.Logger) {
	if getenv("GOGC") == "" {
		debug.SetGCPercent(400)
		log.Debug("GOGC not set; using 400")
	}
}

func newLogger(c config.Log, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level)) // validated by config
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == config.LogFormatText {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// server is one running wxproxy: the token caches, the caller-facing proxy
// and the admin port, wired by hand from the config.
type server struct {
	log     *slog.Logger
	replica string // this process, on the admin API
	apps    []*appState
	proxy   *proxy.Proxy
	caller  *http.Server
	admin   *http.Server
	reg     *prometheus.Registry
	metrics *proxy.Metrics

	rdb   redis.UniversalClient // store.kind redis; nil otherwise
	fleet *fleet                // breaker fleet view; nil without Redis

	// reloadFrom reads the configuration again; nil when there is no file
	// (demo).
	reloadFrom func() (*config.Config, error)

	mu      sync.Mutex // guards cfg and callers across reloads
	cfg     *config.Config
	callers map[string]*ratelimit.Limiter // per-caller limiters by key name, kept across reloads
}

// appState is what the server keeps per app.
type appState struct {
	cfg     config.App
	cache   *token.Cache
	limiter *ratelimit.Limiter
	breaker *proxy.Breaker
}

func newServer(cfg *config.Config, log *slog.Logger) (*server, error) {
	s := &server{cfg: cfg, log: log, reg: prometheus.NewRegistry(), callers: map[string]*ratelimit.Limiter{}}
	s.replica, _ = os.Hostname()
	s.replica = fmt.Sprintf("%s/%d", s.replica, os.Getpid())
	s.metrics = proxy.NewMetrics(s.reg)
	s.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	var store token.Store = new(token.MemoryStore)
	var quotaStore ratelimit.Store = ratelimit.NewLocalStore()
	switch cfg.Store.Kind {
	case config.StoreFile:
		store = token.NewFileStore(cfg.Store.Path)
	case config.StoreRedis:
		rdb, err := newRedisClient(cfg.Store.Redis)
		if err != nil {
			return nil, err
		}
		s.rdb = rdb
		// go-redis has one process-wide logger; route it into ours.
		redis.SetLogger(redisLog{log})
		prefix := cfg.Store.Redis.KeyPrefix
		store = token.NewRedisStore(rdb, prefix)
		var quotaDown atomic.Bool
		quotaStore = ratelimit.NewRedisStore(rdb, prefix, cfg.Store.Redis.ReplicasHint, func(err error) {
			s.metrics.StoreError("quota")
			if !quotaDown.Swap(true) {
				log.Warn("quota store failed; limits fall back to limit / replicas_hint on this replica", "err", err)
			}
		})
		s.fleet = &fleet{rdb: rdb, prefix: prefix, replica: s.replica, log: log, poke: make(chan struct{}, 1)}
	}
	transport := proxy.TransportOptions{Timeout: cfg.UpstreamTimeout, Proxy: cfg.UpstreamProxy}
	fetchTransport, err := proxy.NewTransport(transport)
	if err != nil {
		return nil, fmt.Errorf("upstream_proxy: %w", err)
	}
	fetchClient := &http.Client{Transport: fetchTransport, Timeout: cfg.UpstreamTimeout}
	var papps []*proxy.App
	for _, a := range cfg.Apps {
		up, err := url.Parse(a.Upstream)
		if err != nil {
			return nil, fmt.Errorf("apps.%s.upstream: %w", a.Name, err)
		}
		mode := tokenMode(a)
		limiter := ratelimit.New(quotaSettings(a.Quotas), ratelimit.Options{Name: a.Name, Store: quotaStore})
		cache, err := token.New(token.Options{
			App:           a.Name,
			Mode:          mode,
			Fetcher:       &token.HTTPFetcher{Mode: mode, Upstream: a.Upstream, AppID: a.AppID, Secret: a.Secret, Client: fetchClient},
			Store:         store,
			Key:           storeKey(mode, a),
			RefreshBefore: a.RefreshBefore,
			FetchTimeout:  cfg.UpstreamTimeout,
			Location:      a.Quotas.Location,
			Logger:        log,
			Budget:        limiter.AllowTokenFetch,
			OnRefresh:     func(r token.Reason, err error) { s.metrics.TokenRefreshed(a.Name, r, err) },
			OnStoreError:  func(op string, _ error) { s.metrics.StoreError("token_" + op) },
			// Every token is registered for scrubbing before any caller
			// can see it. s.proxy exists before any token is installed.
			OnInstall: func(v string) { s.proxy.HoldToken(a.Name, v) },
			// A shared store's refresh lock must outlive one fetch.
			LockTTL: cfg.UpstreamTimeout + 5*time.Second,
		})
		if err != nil {
			return nil, err
		}
		breaker := proxy.NewBreaker(a.Name, breakerSettings(a.Breaker), func(app string, to gobreaker.State) {
			log.Warn("circuit breaker changed state", "app", app, "state", to.String())
			if s.fleet != nil {
				select {
				case s.fleet.poke <- struct{}{}:
				default:
				}
			}
		})
		s.apps = append(s.apps, &appState{cfg: a, cache: cache, limiter: limiter, breaker: breaker})
		papps = append(papps, &proxy.App{Name: a.Name, Kind: a.Kind, AppID: a.AppID, Secret: a.Secret, Upstream: up,
			Tokens: cache, Quotas: limiter, Breaker: breaker})
		s.metrics.SetAPIs(slices.Collect(maps.Keys(a.Quotas.APIs)))
	}
	callerTransport, err := proxy.NewTransport(transport)
	if err != nil {
		return nil, fmt.Errorf("upstream_proxy: %w", err)
	}
	s.proxy, err = proxy.New(proxy.Options{
		Apps:             papps,
		DefaultApp:       cfg.DefaultApp,
		MaxBodyBytes:     cfg.MaxBodyBytes,
		RetryBodyBytes:   cfg.RetryBodyBytes,
		MaxBufferedBytes: cfg.MaxBufferedBytes,
		BodyReadTimeout:  cfg.BodyReadTimeout,
		UpstreamTimeout:  cfg.UpstreamTimeout,
		Transport:        callerTransport,
		Logger:           log,
		Access:           s.access(cfg.Callers),
		Metrics:          s.metrics,
		Registry:         s.reg,
	})
	if err != nil {
		return nil, err
	}
	errLog := slog.NewLogLogger(log.Handler(), slog.LevelWarn)
	// The caller port's own bounds (SPEC §3, §5): headers must arrive within
	// read_header_timeout and fit max_header_bytes; the body read deadline
	// (body_read_timeout) is set per request by the proxy; idle keep-alive
	// connections close after idle_timeout. No ReadTimeout/WriteTimeout:
	// they would cut long media transfers.
	s.caller = &http.Server{Handler: s.proxy, ReadHeaderTimeout: cfg.ReadHeaderTimeout, IdleTimeout: cfg.IdleTimeout,
		DisableGeneralOptionsHandler: true, // "OPTIONS *" is refused by the proxy like every odd target
		MaxHeaderBytes:               int(cfg.MaxHeaderBytes), ErrorLog: errLog}
	s.admin = &http.Server{Handler: s.adminRoutes(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: cfg.IdleTimeout, ErrorLog: errLog}
	for _, a := range cfg.Apps {
		if len(a.Secret) < scrub.MinLen {
			log.Warn("secret is too short to be scrubbed from answers; a real AppSecret has 32 characters", "app", a.Name)
		}
	}
	return s, nil
}

func quotaSettings(q config.Quotas) ratelimit.Settings {
	conv := func(l config.Limit) ratelimit.Limit {
		return ratelimit.Limit{PerMinute: l.PerMinute, PerDay: l.PerDay, Burst: l.Burst}
	}
	apis := make(map[string]ratelimit.Limit, len(q.APIs))
	for k, v := range q.APIs {
		apis[k] = conv(v)
	}
	return ratelimit.Settings{
		Default: conv(q.Default), APIs: apis, Location: q.Location,
		Wait: q.OnLimit == config.OnLimitWait, MaxWait: q.MaxWait,
		RespectUpstream: q.RespectUpstream, TokenFetchPerDay: q.TokenFetchPerDay,
	}
}

func breakerSettings(b config.Breaker) proxy.BreakerSettings {
	return proxy.BreakerSettings{
		ConsecutiveFailures: b.ConsecutiveFailures, FailureRatio: b.FailureRatio, MinRequests: b.MinRequests,
		Interval: b.Interval, OpenTimeout: b.OpenTimeout, HalfOpenRequests: b.HalfOpenRequests,
	}
}

// access builds the caller rules; per-caller limiters are reused by key
// name so a reload does not reset their counts. The caller holds s.mu or
// is the constructor.
func (s *server) access(c config.Callers) proxy.Access {
	quotaStore := ratelimit.Store(nil)
	if s.rdb != nil {
		quotaStore = ratelimit.NewRedisStore(s.rdb, s.config0().Store.Redis.KeyPrefix, s.config0().Store.Redis.ReplicasHint, func(error) { s.metrics.StoreError("quota") })
	}
	a := proxy.Access{AllowCIDRs: c.AllowCIDRs}
	for _, k := range c.Keys {
		ck := proxy.CallerKey{Name: k.Name, Key: k.Key, Apps: k.Apps}
		if k.PerMinute > 0 {
			set := ratelimit.Settings{Default: ratelimit.Limit{PerMinute: k.PerMinute}}
			lim := s.callers[k.Name]
			if lim == nil {
				lim = ratelimit.New(set, ratelimit.Options{Name: "caller:" + k.Name, Store: quotaStore})
				s.callers[k.Name] = lim
			} else {
				lim.Update(set)
			}
			ck.Limiter = lim
		}
		a.Keys = append(a.Keys, ck)
	}
	return a
}

// reload re-reads the configuration and applies what a reload applies
// (quotas, breakers, callers) without dropping a request. An invalid file
// is refused and the running configuration stays. It returns the keys of
// changes that need a restart.
func (s *server) reload() ([]string, error) {
	if s.reloadFrom == nil {
		return nil, errors.New("nothing to reload: this server was not started from a file")
	}
	next, err := s.reloadFrom()
	if err != nil {
		s.log.Error("reload refused: invalid configuration; the running one stays", "err", err)
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	restart := s.cfg.ReloadDiff(next)
	applied := *s.cfg
	applied.Callers = next.Callers
	applied.Apps = slices.Clone(s.cfg.Apps)
	for i, a := range s.apps {
		na, ok := next.App(a.cfg.Name)
		if !ok {
			continue // removing an app needs a restart
		}
		a.limiter.Update(quotaSettings(na.Quotas))
		a.breaker.Update(breakerSettings(na.Breaker))
		applied.Apps[i].Quotas, applied.Apps[i].Breaker = na.Quotas, na.Breaker
		s.metrics.SetAPIs(slices.Collect(maps.Keys(na.Quotas.APIs)))
	}
	s.proxy.SetAccess(s.access(next.Callers))
	s.cfg = &applied
	for _, k := range restart {
		s.log.Warn("reload: change needs a restart", "key", k)
	}
	s.log.Info("configuration reloaded", "needs_restart", len(restart))
	return restart, nil
}

func tokenMode(a config.App) token.Mode {
	switch {
	case a.Kind == config.KindWeCom:
		return token.WeCom
	case a.TokenMode == config.TokenModeClassic:
		return token.Classic
	}
	return token.Stable
}

// storeKey names an app's token in the store by what the token belongs to,
// so renaming an app or pointing a name at another account can never hand
// out the wrong token. WeCom tokens belong to corpid + secret.
func storeKey(mode token.Mode, a config.App) string {
	key := string(mode) + ":" + a.AppID
	if mode == token.WeCom {
		sum := sha256.Sum256([]byte(a.Secret))
		key += ":" + hex.EncodeToString(sum[:4])
	}
	return key
}

// listeners are the bound caller and admin sockets, made before serving so
// a bind error surfaces at once.
type listeners struct{ caller, admin net.Listener }

// config0 is the configuration during construction and reload, when s.mu
// is held or not yet needed.
func (s *server) config0() *config.Config { return s.cfg }

// config returns the running configuration.
func (s *server) config() *config.Config {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cfg
}

func (s *server) listen() (listeners, error) {
	caller, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return listeners{}, fmt.Errorf("listen: %w", err)
	}
	admin, err := net.Listen("tcp", s.cfg.Admin.Listen)
	if err != nil {
		caller.Close()
		return listeners{}, fmt.Errorf("admin.listen: %w", err)
	}
	return listeners{caller, admin}, nil
}

// run serves until ctx ends, then drains in-flight requests within
// shutdown_timeout. ready, if not nil, receives the bound addresses.
func (s *server) run(ctx context.Context, ready func(caller, admin net.Addr)) error {
	ls, err := s.listen()
	if err != nil {
		return err
	}
	bg, stopBG := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	for _, a := range s.apps {
		wg.Go(func() { a.cache.Run(bg) })
	}
	if s.fleet != nil {
		wg.Go(func() { s.fleet.run(bg, s.localBreakers) })
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for {
			select {
			case <-bg.Done():
				return
			case <-hup:
				_, _ = s.reload() // logged by reload
			}
		}
	}()
	errc := make(chan error, 2)
	go func() { errc <- serveHTTP(s.caller, ls.caller) }()
	go func() { errc <- serveHTTP(s.admin, ls.admin) }()
	s.log.Info("wxproxy listening", "listen", ls.caller.Addr().String(), "admin", ls.admin.Addr().String(), "apps", len(s.apps), "replica", s.replica)
	if ready != nil {
		ready(ls.caller.Addr(), ls.admin.Addr())
	}
	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
	}
	timeout := s.config().ShutdownTimeout
	s.log.Info("shutting down", "timeout", timeout.String())
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	if err := s.caller.Shutdown(sctx); err != nil {
		s.log.Warn("caller port did not drain in time", "err", err)
		s.caller.Close()
	}
	if err := s.admin.Shutdown(sctx); err != nil {
		s.admin.Close()
	}
	stopBG()
	wg.Wait()
	if s.rdb != nil {
		_ = s.rdb.Close()
	}
	s.log.Info("stopped")
	return runErr
}

func serveHTTP(srv *http.Server, l net.Listener) error {
	if err := srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
