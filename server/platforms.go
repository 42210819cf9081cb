package server

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sony/gobreaker/v2"

	"github.com/wxproxy/wxproxy/callback"
	"github.com/wxproxy/wxproxy/config"
	"github.com/wxproxy/wxproxy/platform"
	"github.com/wxproxy/wxproxy/proxy"
	"github.com/wxproxy/wxproxy/ratelimit"
	"github.com/wxproxy/wxproxy/scrub"
	"github.com/wxproxy/wxproxy/token"
	"github.com/wxproxy/wxproxy/wxcrypt"
)

// platformState is what the server keeps per third-party platform.
type platformState struct {
	cfg     config.Platform
	p       *platform.Platform
	breaker *proxy.Breaker
}

// platformStores returns where platforms keep their state and tokens for
// the configured store kind: the file store's platforms live in a file
// beside the token file, <path without .json>.platforms.json.
func (s *Server) platformStores(cfg *config.Config, tokens token.Store) (platform.Store, token.Store, func(name string) func(context.Context) <-chan string, func() error) {
	switch cfg.Store.Kind {
	case config.StoreFile:
		fs := platform.NewFileStore(PlatformStatePath(cfg.Store.Path), 0)
		return fs, fs, nil, fs.Close
	case config.StoreRedis:
		ps := platform.NewRedisStore(s.rdb, cfg.Store.Redis.KeyPrefix)
		watch := func(name string) func(context.Context) <-chan string {
			return func(ctx context.Context) <-chan string { return ps.Watch(ctx, name) }
		}
		return ps, tokens, watch, func() error { return nil }
	}
	return new(platform.MemoryStore), tokens, nil, func() error { return nil }
}

// PlatformStatePath is the file holding the platforms' state (tickets,
// merchants' refresh tokens, component and merchant tokens) next to the
// token file of store.kind file.
func PlatformStatePath(tokenPath string) string {
	return strings.TrimSuffix(tokenPath, ".json") + ".platforms.json"
}

// newPlatforms builds the platforms of cfg and their proxy routes.
func (s *Server) newPlatforms(cfg *config.Config, tokens token.Store, quotaStore ratelimit.Store, client *http.Client, log *slog.Logger) ([]proxy.Platform, error) {
	if len(cfg.Platforms) == 0 {
		return nil, nil
	}
	store, ptokens, watch, closeStore := s.platformStores(cfg, tokens)
	s.closePlatforms = closeStore
	var out []proxy.Platform
	for _, pc := range cfg.Platforms {
		if pc.Kind == config.KindWeComSuite {
			pp, err := s.newSuite(cfg, pc, store, ptokens, watch, quotaStore, client, log)
			if err != nil {
				return nil, err
			}
			out = append(out, pp)
			continue
		}
		up, err := url.Parse(pc.Upstream)
		if err != nil {
			return nil, fmt.Errorf("platforms.%s.upstream: %w", pc.Name, err)
		}
		crypt, err := wxcrypt.New(wxcrypt.Options{Token: pc.Token, AESKey: pc.EncodingAESKey, PreviousKey: pc.PreviousEncodingAESKey})
		if err != nil {
			return nil, fmt.Errorf("platforms.%s: %w", pc.Name, err)
		}
		name := pc.Name
		opts := platform.Options{
			Name: name, ComponentAppID: pc.ComponentAppID, Secret: pc.Secret, Crypter: crypt,
			Upstream: pc.Upstream, Client: client, Store: store, Tokens: ptokens,
			RefreshBefore: pc.RefreshBefore, AuthorizerIdle: pc.AuthorizerIdle, FetchTimeout: cfg.UpstreamTimeout,
			LockTTL: cfg.Store.Redis.LockLease, // a lease its holder renews
			Logger:  log,
			// Every credential is registered for scrubbing before any
			// caller can see it; s.proxy exists before Run.
			OnInstall:    func(appid, v string) { s.proxy.HoldPlatformToken(name, appid, v) },
			OnSecret:     func(v string) { s.proxy.HoldSecret(v) },
			OnRefresh:    func(_ string, r token.Reason, err error) { s.metrics.TokenRefreshed(name, r, err) },
			OnStoreError: func(op string, _ error) { s.metrics.StoreError("platform_" + op) },
		}
		if watch != nil {
			opts.Watch = watch(name)
		}
		p, err := platform.New(opts)
		if err != nil {
			return nil, err
		}
		breaker := proxy.NewBreaker(name, breakerSettings(pc.Breaker), func(app string, to gobreaker.State) {
			log.Warn("circuit breaker changed state", "app", app, "state", to.String())
			if s.fleet != nil {
				s.fleet.Poke()
			}
		})
		quotas := quotaSettings(pc.Quotas)
		s.platforms = append(s.platforms, &platformState{cfg: pc, p: p, breaker: breaker})
		pp := proxy.Platform{
			Name: name, ComponentAppID: pc.ComponentAppID, Secret: pc.Secret, Upstream: up,
			Component: p.Component(), Merchants: merchants{p}, Breaker: breaker,
		}
		// A limiter costs a few KB: merchants get one only when the
		// platform sets a limit (thousands of merchants otherwise hold
		// tens of MB for nothing).
		if hasLimits(pc.Quotas) {
			pp.Quotas = func(appid string) proxy.Quotas {
				return ratelimit.New(quotas, ratelimit.Options{Name: name + "@" + appid, Store: quotaStore})
			}
		}
		out = append(out, pp)
		if len(pc.Secret) < scrub.MinLen {
			log.Warn("component secret is too short to be scrubbed from answers", "platform", name)
		}
	}
	return out, nil
}

// holdPlatformSecrets registers the platforms' own secrets for scrubbing.
func (s *Server) holdPlatformSecrets() {
	for _, ps := range s.platforms {
		for _, v := range []string{ps.cfg.Secret, ps.cfg.Token, ps.cfg.EncodingAESKey, ps.cfg.PreviousEncodingAESKey} {
			s.proxy.HoldSecret(v)
		}
	}
	s.holdSuiteSecrets()
}

// merchants adapts a Platform to the proxy's view of its merchants.
type merchants struct{ p *platform.Platform }

func (m merchants) Merchant(ctx context.Context, appid string) (proxy.TokenSource, error) {
	mm, err := m.p.Merchant(ctx, appid)
	if err != nil {
		return nil, err
	}
	return merchantHolder{mm}, nil
}

// merchantHolder is a merchant as the proxy sees it: its token, and its
// tickets (answered locally on /{p}@{appid}/cgi-bin/ticket/getticket).
type merchantHolder struct{ *platform.Merchant }

func (h merchantHolder) Tickets() proxy.Tickets { return h.Merchant.Tickets() }

func (m merchants) QueryAuth(ctx context.Context, code string) (proxy.Authorization, error) {
	a, err := m.p.ExchangeCode(ctx, code)
	return proxy.Authorization{AppID: a.AppID, ExpiresIn: a.ExpiresIn, FuncInfo: a.FuncInfo}, err
}

// runPlatforms runs every platform until ctx ends.
func (s *Server) runPlatforms(ctx context.Context, wg *sync.WaitGroup) {
	for _, ps := range s.platforms {
		wg.Go(func() { ps.p.Run(ctx) })
	}
	for _, ss := range s.suites {
		wg.Go(func() { ss.s.Run(ctx) })
	}
}

// callbackServer is the push listener of the platforms; nil without one.
func (s *Server) callbackServer(cfg *config.Config) *http.Server {
	if cfg.Callbacks.Listen == "" || len(s.platforms)+len(s.suites) == 0 {
		return nil
	}
	rcv := make(map[string]callback.Receiver, len(s.platforms)+len(s.suites))
	for _, ps := range s.platforms {
		rcv[ps.cfg.Name] = ps.p
	}
	for _, ss := range s.suites {
		rcv[ss.cfg.Name] = ss.s
	}
	pushes := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "wxproxy_callback_pushes_total",
		Help: "Pushes received on the callback listener, by platform and result."}, []string{"platform", "result"})
	s.reg.MustRegister(pushes, platform.NewCollector(s.platformList()))
	return callback.New(callback.Options{
		Receivers: rcv, MaxBody: cfg.Callbacks.MaxBodyBytes, ReadHeaderTimeout: cfg.Callbacks.ReadHeaderTimeout,
		ReadTimeout: cfg.Callbacks.ReadTimeout, Logger: s.log,
		OnPush: func(p, result string) { pushes.WithLabelValues(p, result).Inc() },
	}).HTTPServer()
}

// platformList is every platform and suite, for wxproxy_authorizers.
func (s *Server) platformList() []platform.Counted {
	out := make([]platform.Counted, 0, len(s.platforms)+len(s.suites))
	for _, ps := range s.platforms {
		out = append(out, ps.p)
	}
	for _, ss := range s.suites {
		out = append(out, ss.s)
	}
	return out
}

// hasLimits reports whether q limits anything.
func hasLimits(q config.Quotas) bool {
	if q.Default != (config.Limit{}) {
		return true
	}
	for _, l := range q.APIs {
		if l != (config.Limit{}) {
			return true
		}
	}
	return false
}
