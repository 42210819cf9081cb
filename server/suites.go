package server

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"

	"github.com/sony/gobreaker/v2"

	"github.com/wxproxy/wxproxy/admin"
	"github.com/wxproxy/wxproxy/config"
	"github.com/wxproxy/wxproxy/platform"
	"github.com/wxproxy/wxproxy/proxy"
	"github.com/wxproxy/wxproxy/ratelimit"
	"github.com/wxproxy/wxproxy/scrub"
	"github.com/wxproxy/wxproxy/suite"
	"github.com/wxproxy/wxproxy/token"
	"github.com/wxproxy/wxproxy/wxcrypt"
)

// suiteState is what the server keeps per WeCom suite.
type suiteState struct {
	cfg     config.Platform
	s       *suite.Suite
	breaker *proxy.Breaker
}

// newSuite builds one WeCom suite (SPEC §13) on the platforms' stores,
// and its proxy route.
func (s *Server) newSuite(cfg *config.Config, pc config.Platform, store platform.Store, tokens token.Store,
	watch func(name string) func(context.Context) <-chan string, quotaStore ratelimit.Store, client *http.Client, log *slog.Logger) (proxy.Platform, error) {
	up, err := url.Parse(pc.Upstream)
	if err != nil {
		return proxy.Platform{}, fmt.Errorf("platforms.%s.upstream: %w", pc.Name, err)
	}
	crypt, err := wxcrypt.New(wxcrypt.Options{Token: pc.Token, AESKey: pc.EncodingAESKey, PreviousKey: pc.PreviousEncodingAESKey})
	if err != nil {
		return proxy.Platform{}, fmt.Errorf("platforms.%s: %w", pc.Name, err)
	}
	name := pc.Name
	opts := suite.Options{
		Name: name, SuiteID: pc.SuiteID, Secret: pc.Secret, ProviderCorpID: pc.ProviderCorpID, ProviderSecret: pc.ProviderSecret,
		PermanentCodeV2: pc.PermanentCodeAPI == config.PermanentCodeV2, Crypter: crypt,
		Upstream: pc.Upstream, Client: client, Store: store, Tokens: tokens,
		RefreshBefore: pc.RefreshBefore, CorpIdle: pc.AuthorizerIdle, FetchTimeout: cfg.UpstreamTimeout,
		LockTTL: cfg.Store.Redis.LockLease,
		Logger:  log,
		// Every credential is registered for scrubbing before any caller
		// can see it; s.proxy exists before Run.
		OnInstall:    func(corpid, v string) { s.proxy.HoldPlatformToken(name, corpid, v) },
		OnSecret:     func(v string) { s.proxy.HoldSecret(v) },
		OnRefresh:    func(_ string, r token.Reason, err error) { s.metrics.TokenRefreshed(name, r, err) },
		OnStoreError: func(op string, _ error) { s.metrics.StoreError("suite_" + op) },
	}
	if watch != nil {
		opts.Watch = watch(name)
	}
	st, err := suite.New(opts)
	if err != nil {
		return proxy.Platform{}, err
	}
	breaker := proxy.NewBreaker(name, breakerSettings(pc.Breaker), func(app string, to gobreaker.State) {
		log.Warn("circuit breaker changed state", "app", app, "state", to.String())
		if s.fleet != nil {
			s.fleet.Poke()
		}
	})
	s.suites = append(s.suites, &suiteState{cfg: pc, s: st, breaker: breaker})
	pp := proxy.Platform{
		Name: name, Kind: proxy.PlatformWeComSuite, ComponentAppID: pc.SuiteID, Secret: pc.Secret, Upstream: up,
		Component: st.Component(), Merchants: corps{st}, Breaker: breaker, ProviderCorpID: pc.ProviderCorpID,
		PermanentCode: func(ctx context.Context, code string) (proxy.SuiteInstallation, error) {
			in, err := st.ExchangeCode(ctx, code)
			return proxy.SuiteInstallation{CorpID: in.CorpID, HasToken: in.HasToken, Answer: in.Answer}, err
		},
	}
	if p := st.Provider(); p != nil {
		pp.Provider = p
	}
	if hasLimits(pc.Quotas) {
		quotas := quotaSettings(pc.Quotas)
		pp.Quotas = func(corpid string) proxy.Quotas {
			return ratelimit.New(quotas, ratelimit.Options{Name: name + "@" + corpid, Store: quotaStore})
		}
	}
	for _, v := range []string{pc.Secret, pc.ProviderSecret} {
		if v != "" && len(v) < scrub.MinLen {
			log.Warn("suite or provider secret is too short to be scrubbed from answers", "platform", name)
		}
	}
	return pp, nil
}

// holdSuiteSecrets registers the suites' own secrets for scrubbing.
func (s *Server) holdSuiteSecrets() {
	for _, ss := range s.suites {
		for _, v := range []string{ss.cfg.Secret, ss.cfg.Token, ss.cfg.EncodingAESKey, ss.cfg.PreviousEncodingAESKey, ss.cfg.ProviderSecret} {
			s.proxy.HoldSecret(v)
		}
	}
}

// corps adapts a Suite to the proxy's view of a platform's merchants.
type corps struct{ s *suite.Suite }

func (c corps) Merchant(ctx context.Context, corpid string) (proxy.TokenSource, error) {
	cp, err := c.s.Corp(ctx, corpid)
	if err != nil {
		return nil, err
	}
	return cp, nil
}

func (c corps) QueryAuth(context.Context, string) (proxy.Authorization, error) {
	return proxy.Authorization{}, fmt.Errorf("suite %s: api_query_auth is an Open Platform API", c.s.Name())
}

func (s *Server) adminSuites() []admin.Suite {
	out := make([]admin.Suite, 0, len(s.suites))
	for _, ss := range s.suites {
		out = append(out, ss.s)
	}
	return out
}
