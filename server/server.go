// Package server assembles one running wxproxy from a configuration: the
// token holders and their stores, the limiters, the breakers, the
// caller-facing proxy and the admin port. It runs them, drains them on
// shutdown and applies reloads. It holds no product logic of its own
// beyond that wiring; cmd/wxproxy parses flags and handles signals.
package server

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
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
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"
	"github.com/sony/gobreaker/v2"

	"github.com/wxproxy/wxproxy/admin"
	"github.com/wxproxy/wxproxy/config"
	"github.com/wxproxy/wxproxy/failover"
	"github.com/wxproxy/wxproxy/fleet"
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

	certs          *certs       // caller-port TLS; nil = plain HTTP
	fetch          *http.Client // token fetches and quota syncs (upstream_proxy, no redirects)
	platforms      []*platformState
	suites         []*suiteState
	closePlatforms func() error // writes the platforms' file store; nil without platforms
	callbacks      *http.Server // the push listener; nil without platforms

	errors    *admin.ErrorLog       // the last wxproxy errors, for /admin/status
	rdb       redis.UniversalClient // store.kind redis; nil otherwise
	fleet     *proxy.BreakerFleet   // breaker fleet view; nil without Redis
	replicas  *fleet.Replicas       // replica registry; nil without Redis
	quotaDown *outage               // the quota store's outages; nil without Redis
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
	cfg       config.App
	cache     *token.Cache
	tickets   *token.Tickets
	limiter   *ratelimit.Limiter
	breaker   *proxy.Breaker
	upstreams *failover.Set // the upstream and its failover list, in order
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
		s.quotaDown = &outage{log: log,
			start: "quota store failed; limits fall back to limit / replicas_hint on this replica",
			end:   "quota store reachable again; limits are shared by the fleet"}
		quotaStore = s.newQuotaStore(rdb, cfg.Store.Redis)
		s.fleet = proxy.NewBreakerFleet(rdb, prefix)
		names := make([]string, 0, len(cfg.Apps))
		for _, a := range cfg.Apps {
			names = append(names, a.Name)
		}
		s.replicas = fleet.NewReplicas(rdb, prefix, fleet.Replica{Replica: s.replica, Started: time.Now().UTC(), Apps: names})
	}
	if cfg.TLS.Enabled() {
		var err error
		if s.certs, err = newCerts(cfg.TLS, log); err != nil {
			return nil, err
		}
	}
	transport := proxy.TransportOptions{Timeout: cfg.UpstreamTimeout, Proxy: cfg.UpstreamProxy}
	fetchTransport, err := proxy.NewTransport(transport)
	if err != nil {
		return nil, fmt.Errorf("upstream_proxy: %w", err)
	}
	fetchClient := &http.Client{Transport: fetchTransport, Timeout: cfg.UpstreamTimeout}
	s.fetch = fetchClient
	var papps []*proxy.App
	for _, a := range cfg.Apps {
		up, err := url.Parse(a.Upstream)
		if err != nil {
			return nil, fmt.Errorf("apps.%s.upstream: %w", a.Name, err)
		}
		mode := tokenMode(a)
		limiter := ratelimit.New(quotaSettings(a.Quotas), ratelimit.Options{Name: a.Name, Store: quotaStore})
		upstreams, err := failover.New(failover.Options{
			URLs:     append([]string{up.String()}, a.Failover...),
			Settings: failoverSettings(a.Breaker),
			OnChange: func(i int, isUp bool) {
				state := "down"
				if isUp {
					state = "up"
				}
				log.Warn("upstream changed state", "app", a.Name, "upstream", upstreamURL(a, i), "state", state)
			},
		})
		if err != nil {
			return nil, err
		}
		fetcher := &token.HTTPFetcher{Mode: mode, Upstream: a.Upstream, AppID: a.AppID, Secret: a.Secret, Client: fetchClient}
		if len(a.Failover) > 0 {
			fetcher.Failover = upstreams
			fetcher.OnFailover = func(from, to string) { s.metrics.Failover(a.Name, from, to) }
		}
		cache, err := token.New(token.Options{
			App:           a.Name,
			Mode:          mode,
			Fetcher:       fetcher,
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
			// A shared store's refresh lock is a lease its holder renews.
			LockTTL: cfg.Store.Redis.LockLease,
		})
		if err != nil {
			return nil, err
		}
		var ticketUpstreams *failover.Set
		if len(a.Failover) > 0 {
			ticketUpstreams = upstreams
		}
		tickets, err := s.newTickets(a, cache, store, fetchClient, ticketUpstreams)
		if err != nil {
			return nil, err
		}
		breaker := proxy.NewBreaker(a.Name, breakerSettings(a.Breaker), func(app string, to gobreaker.State) {
			log.Warn("circuit breaker changed state", "app", app, "state", to.String())
			if s.fleet != nil {
				s.fleet.Poke()
			}
		})
		s.apps = append(s.apps, &appState{cfg: a, cache: cache, tickets: tickets, limiter: limiter, breaker: breaker, upstreams: upstreams})
		papps = append(papps, &proxy.App{Name: a.Name, Kind: a.Kind, AppID: a.AppID, Secret: a.Secret, Upstream: up,
			Tokens: cache, Quotas: limiter, Breaker: breaker, TokenWait: a.TokenWait, Tickets: tickets, AgentID: a.AgentID, Upstreams: upstreams})
		s.metrics.SetAPIs(slices.Collect(maps.Keys(a.Quotas.APIs)))
	}
	callerClient, err := proxy.NewClient(transport)
	if err != nil {
		return nil, fmt.Errorf("upstream_proxy: %w", err)
	}
	pplats, err := s.newPlatforms(cfg, store, quotaStore, fetchClient, log)
	if err != nil {
		return nil, err
	}
	s.proxy, err = proxy.New(proxy.Options{
		Apps:             papps,
		Platforms:        pplats,
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
	s.holdPlatformSecrets()
	s.callbacks = s.callbackServer(cfg)
	errLog := slog.NewLogLogger(log.Handler(), slog.LevelWarn)
	for _, a := range s.apps {
		s.adminApps = append(s.adminApps, admin.App{Name: a.cfg.Name, Kind: a.cfg.Kind, AppID: a.cfg.AppID,
			TokenMode: string(tokenMode(a.cfg)), Tokens: a.cache, Breaker: a.breaker, Quotas: a.limiter, Tickets: a.tickets,
			Upstreams: upstreamStates(a)})
	}
	var breakers admin.Fleet
	var replicas func(context.Context) ([]fleet.Replica, error)
	self := fleet.Replica{Replica: s.replica, Started: time.Now().UTC()}
	if s.fleet != nil {
		breakers, replicas, self = s.fleet, s.replicas.List, s.replicas.Self()
	}
	var adminPlatforms []admin.Platform
	for _, ps := range s.platforms {
		adminPlatforms = append(adminPlatforms, ps.p)
	}
	adminHandler := admin.New(admin.Options{
		Apps: s.adminApps, Platforms: adminPlatforms, Suites: s.adminSuites(), Replica: s.replica, Fleet: breakers, Replicas: replicas, Self: self,
		PProf: cfg.Admin.PProf, Gatherer: s.reg,
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

// newTickets builds the tickets of app a (SPEC §11): those configured are
// held from the start, any other of its kind from the first request for
// it. Each is fetched with the app's token from the app's upstream, shared
// through the store like the token (fleet-wide single fetch, reused after a
// restart), and never registered for scrubbing: tickets are not secrets,
// pages need them.
func (s *Server) newTickets(a config.App, tokens *token.Cache, store token.Store, client *http.Client, upstreams *failover.Set) (*token.Tickets, error) {
	cfg := s.config0()
	held := make([]token.TicketType, len(a.Tickets))
	for i, t := range a.Tickets {
		held[i] = token.TicketType(t)
	}
	// A ticket fetch may wait for a token refresh first, then fetch twice.
	timeout := 3 * cfg.UpstreamTimeout
	return token.NewTickets(token.TicketTypes(a.Kind == config.KindWeCom), held, func(typ token.TicketType) (*token.Cache, error) {
		kind := token.TicketKind()
		return token.New(token.Options{
			App:  a.Name,
			Kind: &kind,
			Fetcher: &token.TicketSource{Type: typ, Upstream: a.Upstream, Failover: upstreams, Tokens: tokens, Client: client,
				OnFailover: func(from, to string) { s.metrics.Failover(a.Name, from, to) }},
			Store:         store,
			Key:           ticketKey(typ, a),
			RefreshBefore: a.RefreshBefore,
			FetchTimeout:  timeout,
			LockTTL:       cfg.Store.Redis.LockLease, // a lease its holder renews, as for the token
			Location:      a.Quotas.Location,
			Logger:        s.log.With("ticket", string(typ)),
			OnRefresh:     func(r token.Reason, err error) { s.metrics.TicketRefreshed(a.Name, typ, r, err) },
			OnStoreError:  func(op string, _ error) { s.metrics.StoreError("ticket_" + op) },
		})
	})
}

// ticketKey names a ticket in the store by what it belongs to: a WeChat
// app's by its appid, a WeCom agent's (corp ticket included: it is
// fetched with that agent's token) by corpid and secret, as its token.
func ticketKey(typ token.TicketType, a config.App) string {
	if a.Kind == config.KindWeCom {
		return "ticket:" + string(typ) + ":" + storeKey(token.WeCom, a)
	}
	return "ticket:" + string(typ) + ":" + a.AppID
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

// failoverSettings marks an upstream down after the breaker's count of
// consecutive failures and probes it after its open_timeout (SPEC §14).
func failoverSettings(b config.Breaker) failover.Settings {
	return failover.Settings{Failures: b.ConsecutiveFailures, OpenTimeout: b.OpenTimeout}
}

// upstreamURL names upstream i of app a, as configured.
func upstreamURL(a config.App, i int) string {
	if i == 0 {
		return a.Upstream
	}
	return a.Failover[i-1]
}

// upstreamStates shows the upstreams of an app on the admin API: with a
// failover list, each one's health; with one upstream, it is down while
// the app's breaker is open.
func upstreamStates(a *appState) func() []failover.State {
	return func() []failover.State {
		if len(a.cfg.Failover) > 0 {
			return a.upstreams.States()
		}
		st := failover.State{URL: a.cfg.Upstream, State: "up"}
		b := a.breaker.State()
		if b.State != "closed" {
			st.State, st.Since = "down", b.Since
			if b.State == "half-open" {
				st.State = "probing"
			}
		}
		st.ConsecutiveFailures = b.Counts.ConsecutiveFailures
		return []failover.State{st}
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
		quotaStore = s.newQuotaStore(s.rdb, s.config0().Store.Redis)
	}
	a := proxy.Access{AllowCIDRs: c.AllowCIDRs}
	for _, k := range c.Keys {
		ck := proxy.CallerKey{Name: k.Name, Key: k.Key, Apps: k.Apps, APIs: k.APIs, CertCN: k.CertCN}
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

// newQuotaStore returns a Redis quota store whose failures are counted and
// whose outages are logged once when they start and once when they end.
func (s *Server) newQuotaStore(rdb redis.UniversalClient, c config.Redis) *ratelimit.RedisStore {
	return ratelimit.NewRedisStore(rdb, c.KeyPrefix, c.ReplicasHint, func(err error) {
		s.metrics.StoreError("quota")
		s.quotaDown.fail(err)
	}).OnRecover(s.quotaDown.up)
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
	if s.certs != nil && next.TLS.Enabled() {
		// New certificate files (or the same ones, re-read) apply to the
		// next handshakes; open connections keep theirs.
		if err := s.certs.load(next.TLS); err != nil {
			s.log.Error("reload refused: TLS files do not load; the running configuration stays", "err", err)
			return nil, err
		}
	}
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
		a.upstreams.Update(failoverSettings(na.Breaker))
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

// listeners are the bound caller, admin and callback sockets, made before
// serving so a bind error surfaces at once. callback is nil without
// platforms.
type listeners struct{ caller, admin, callback net.Listener }

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
	ls := listeners{caller: caller, admin: admin}
	if s.callbacks != nil {
		if ls.callback, err = net.Listen("tcp", s.cfg.Callbacks.Listen); err != nil {
			caller.Close()
			admin.Close()
			return listeners{}, fmt.Errorf("callbacks.listen: %w", err)
		}
	}
	return ls, nil
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
		wg.Go(func() { a.tickets.Run(bg) })
	}
	for _, a := range s.apps {
		qs := &quotaSync{log: s.log, app: a, client: s.fetch, now: time.Now, rdb: s.rdb,
			onFailover: func(from, to string) { s.metrics.Failover(a.cfg.Name, from, to) },
			prefix:     s.config().Store.Redis.KeyPrefix, replica: s.replica,
			interval: func() time.Duration {
				if c, ok := s.config().App(a.cfg.Name); ok {
					return c.Quotas.SyncFromWeChat
				}
				return 0
			}}
		wg.Go(func() { qs.run(bg) })
	}
	s.runPlatforms(bg, &wg)
	if s.fleet != nil {
		wg.Go(func() {
			s.fleet.Run(bg, func() []proxy.BreakerInfo { return admin.LocalBreakers(s.adminApps, s.replica) })
		})
		wg.Go(func() { s.replicas.Run(bg) })
		if s.config().Store.Redis.Mode == config.RedisStandalone {
			wg.Go(func() { checkNotCluster(bg, s.rdb, s.log) })
		}
	}
	caller := ls.caller
	if s.certs != nil {
		caller = tls.NewListener(caller, s.certs.config())
		wg.Go(func() { s.certs.watch(bg, certWatchEvery) })
	}
	errc := make(chan error, 3)
	go func() { errc <- s.proxy.Serve(caller) }()
	go func() { errc <- serveHTTP(s.admin, ls.admin) }()
	attrs := []any{"listen", ls.caller.Addr().String(), "admin", ls.admin.Addr().String(), "tls", s.certs != nil, "apps", len(s.apps), "replica", s.replica}
	if ls.callback != nil {
		go func() { errc <- serveHTTP(s.callbacks, ls.callback) }()
		attrs = append(attrs, "callbacks", ls.callback.Addr().String(), "platforms", len(s.platforms)+len(s.suites))
	}
	s.log.Info("wxproxy listening", attrs...)
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
	if s.callbacks != nil {
		if err := s.callbacks.Shutdown(sctx); err != nil {
			s.callbacks.Close()
		}
	}
	stopBG()
	wg.Wait()
	if s.closePlatforms != nil {
		if err := s.closePlatforms(); err != nil {
			s.log.Error("platform state not written", "err", err)
		}
	}
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
