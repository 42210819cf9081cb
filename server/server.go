// Package server assembles one running wxproxy from a configuration: the
// token holders and their stores, the limiters, the breakers, the
// caller-facing proxy and the admin port. It runs them, drains them on
// shutdown and applies reloads. It holds no product logic of its own
// beyond that wiring; cmd/wxproxy parses flags and handles signals.
package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"
	"github.com/sony/gobreaker/v2"

	"github.com/wxproxy/wxproxy/admin"
	"github.com/wxproxy/wxproxy/config"
	"github.com/wxproxy/wxproxy/proxy"
	"github.com/wxproxy/wxproxy/ratelimit"
	"github.com/wxproxy/wxproxy/scrub"
	"github.com/wxproxy/wxproxy/token"
)

// Server is one running wxproxy: the token caches, the caller-facing proxy
// and the admin port, wired by hand from the config. Its methods are safe
// for concurrent use.
type Server struct {
	log     *slog.Logger
	replica string // this process, on the admin API
	apps    []*appState
	proxy   *proxy.Proxy
	admin   *http.Server
	reg     *prometheus.Registry
	metrics *proxy.Metrics

	errors    *admin.ErrorLog       // the last wxproxy errors, for /admin/status
	rdb       redis.UniversalClient // store.kind redis; nil otherwise
	fleet     *proxy.BreakerFleet   // breaker fleet view; nil without Redis
	adminApps []admin.App

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

// New builds a Server from cfg. It starts nothing and binds nothing; Run
// does.
func New(cfg *config.Config, log *slog.Logger) (*Server, error) {
	// Every log line of the process passes the proxy's scrubber, which
	// knows every credential held (set once the proxy exists, before any
	// token is fetched).
	log = slog.New(proxy.NewScrubHandler(log.Handler()))
	s := &Server{cfg: cfg, log: log, reg: prometheus.NewRegistry(), callers: map[string]*ratelimit.Limiter{}}
	s.replica, _ = os.Hostname()
	s.replica = fmt.Sprintf("%s/%d", s.replica, os.Getpid())
	s.metrics = proxy.NewMetrics(s.reg)
	// Texts pass the proxy's scrubber (which exists before any request or
	// token fetch can record an error).
	s.errors = admin.NewErrorLog(admin.DefaultErrorLogSize, func(v string) string { return s.proxy.Scrub(v) })
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
		s.fleet = proxy.NewBreakerFleet(rdb, prefix)
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
			OnRefresh: func(r token.Reason, err error) {
				s.metrics.TokenRefreshed(a.Name, r, err)
				if err != nil {
					s.errors.Record(admin.ErrorEvent{Time: time.Now(), Kind: "token_refresh", App: a.Name,
						Message: string(r) + " refresh failed: " + err.Error()})
				}
			},
			OnStoreError: func(op string, _ error) { s.metrics.StoreError("token_" + op) },
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
				s.fleet.Poke()
			}
		})
		s.apps = append(s.apps, &appState{cfg: a, cache: cache, limiter: limiter, breaker: breaker})
		papps = append(papps, &proxy.App{Name: a.Name, Kind: a.Kind, AppID: a.AppID, Secret: a.Secret, Upstream: up,
			Tokens: cache, Quotas: limiter, Breaker: breaker})
		s.metrics.SetAPIs(slices.Collect(maps.Keys(a.Quotas.APIs)))
	}
	callerClient, err := proxy.NewClient(transport)
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
		// The caller port's own bounds (SPEC §3, §5): headers must arrive
		// within read_header_timeout and fit max_header_bytes, the body
		// within body_read_timeout; idle keep-alive connections close
		// after idle_timeout. No write timeout: it would cut long media.
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		MaxHeaderBytes:    int(cfg.MaxHeaderBytes),
		Transport:         callerClient,
		Logger:            log,
		Access:            s.access(cfg.Callers),
		Metrics:           s.metrics,
		Registry:          s.reg,
		OnError: func(e proxy.ErrorReport) {
			s.errors.Record(admin.ErrorEvent{Time: e.Time, Kind: string(e.Kind), App: e.App, API: e.Path, Status: e.Status, Message: e.Msg})
		},
	})
	if err != nil {
		return nil, err
	}
	errLog := slog.NewLogLogger(log.Handler(), slog.LevelWarn)
	for _, a := range s.apps {
		s.adminApps = append(s.adminApps, admin.App{Name: a.cfg.Name, Kind: a.cfg.Kind, AppID: a.cfg.AppID,
			TokenMode: string(tokenMode(a.cfg)), Tokens: a.cache, Breaker: a.breaker, Quotas: a.limiter})
	}
	var fleet admin.Fleet
	if s.fleet != nil {
		fleet = s.fleet
	}
	adminHandler := admin.New(admin.Options{
		Apps: s.adminApps, Replica: s.replica, Fleet: fleet, PProf: cfg.Admin.PProf, Gatherer: s.reg,
		Token:  func() string { return s.config().Admin.Token },
		Quota:  s.quotaSettings,
		Reload: s.Reload,
		Scrub:  s.proxy.Scrub,
		Errors: s.errors,
		Log:    log,
	})
	s.admin = &http.Server{Handler: adminHandler, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: cfg.IdleTimeout, ErrorLog: errLog}
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
func (s *Server) access(c config.Callers) proxy.Access {
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

// ReloadFrom sets where Reload reads the configuration again; without it
// Reload is refused (the demo has no file).
func (s *Server) ReloadFrom(load func() (*config.Config, error)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reloadFrom = load
}

// quotaSettings shows an app's quota settings in force, for the admin API.
func (s *Server) quotaSettings(app string) admin.QuotaSettings {
	if a, ok := s.config().App(app); ok {
		return admin.QuotaSettings{ResetTimezone: a.Quotas.ResetTimezone, OnLimit: a.Quotas.OnLimit}
	}
	return admin.QuotaSettings{}
}

// Reload re-reads the configuration and applies what a reload applies
// (quotas, breakers, callers) without dropping a request. An invalid file
// is refused and the running configuration stays. It returns the keys of
// changes that need a restart.
func (s *Server) Reload() ([]string, error) {
	s.mu.Lock()
	load := s.reloadFrom
	s.mu.Unlock()
	if load == nil {
		return nil, errors.New("nothing to reload: this server was not started from a file")
	}
	next, err := load()
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
func (s *Server) config0() *config.Config { return s.cfg }

// config returns the running configuration.
func (s *Server) config() *config.Config {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cfg
}

func (s *Server) listen() (listeners, error) {
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

// Run serves until ctx ends, then drains in-flight requests within
// shutdown_timeout. ready, if not nil, receives the bound addresses.
func (s *Server) Run(ctx context.Context, ready func(caller, admin net.Addr)) error {
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
		wg.Go(func() {
			s.fleet.Run(bg, func() []proxy.BreakerInfo { return admin.LocalBreakers(s.adminApps, s.replica) })
		})
	}
	errc := make(chan error, 2)
	go func() { errc <- s.proxy.Serve(ls.caller) }()
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
	if err := s.proxy.Shutdown(sctx); err != nil {
		// fasthttp closes the listener and idle connections at once;
		// requests still running past shutdown_timeout are abandoned.
		s.log.Warn("caller port did not drain in time", "err", err)
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
