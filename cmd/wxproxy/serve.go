package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/wxproxy/wxproxy/config"
	"github.com/wxproxy/wxproxy/proxy"
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
	srv, err := newServer(cfg, log)
	if err != nil {
		return err
	}
	return srv.run(ctx, nil)
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
	cfg    *config.Config
	log    *slog.Logger
	apps   []*appState
	proxy  *proxy.Proxy
	caller *http.Server
	admin  *http.Server
}

// appState is what the server keeps per app.
type appState struct {
	cfg   config.App
	cache *token.Cache
}

func newServer(cfg *config.Config, log *slog.Logger) (*server, error) {
	s := &server{cfg: cfg, log: log}
	store, err := newStore(cfg.Store)
	if err != nil {
		return nil, err
	}
	fetchClient := &http.Client{Transport: proxy.NewTransport(cfg.UpstreamTimeout), Timeout: cfg.UpstreamTimeout}
	var papps []*proxy.App
	for _, a := range cfg.Apps {
		up, err := url.Parse(a.Upstream)
		if err != nil {
			return nil, fmt.Errorf("apps.%s.upstream: %w", a.Name, err)
		}
		mode := tokenMode(a)
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
		})
		if err != nil {
			return nil, err
		}
		s.apps = append(s.apps, &appState{cfg: a, cache: cache})
		papps = append(papps, &proxy.App{Name: a.Name, Kind: a.Kind, AppID: a.AppID, Secret: a.Secret, Upstream: up, Tokens: cache})
	}
	s.proxy, err = proxy.New(proxy.Options{
		Apps:           papps,
		DefaultApp:     cfg.DefaultApp,
		MaxBodyBytes:   cfg.MaxBodyBytes,
		RetryBodyBytes: cfg.RetryBodyBytes,
		Transport:      proxy.NewTransport(cfg.UpstreamTimeout),
		Logger:         log,
	})
	if err != nil {
		return nil, err
	}
	s.caller = &http.Server{Handler: s.callerRoutes(), ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	s.admin = &http.Server{Handler: s.adminRoutes(), ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	return s, nil
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

func newStore(c config.Store) (token.Store, error) {
	switch c.Kind {
	case config.StoreFile:
		return token.NewFileStore(c.Path), nil
	case config.StoreRedis:
		return nil, errors.New("store.kind redis: not available in this build yet")
	}
	return new(token.MemoryStore), nil
}

func (s *server) callerRoutes() http.Handler {
	r := chi.NewRouter()
	r.Handle("/*", s.proxy)
	return r
}

// listeners are the bound caller and admin sockets, made before serving so
// a bind error surfaces at once.
type listeners struct{ caller, admin net.Listener }

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
	errc := make(chan error, 2)
	go func() { errc <- serveHTTP(s.caller, ls.caller) }()
	go func() { errc <- serveHTTP(s.admin, ls.admin) }()
	s.log.Info("wxproxy listening", "listen", ls.caller.Addr().String(), "admin", ls.admin.Addr().String(), "apps", len(s.apps))
	if ready != nil {
		ready(ls.caller.Addr(), ls.admin.Addr())
	}
	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
	}
	s.log.Info("shutting down", "timeout", s.cfg.ShutdownTimeout.String())
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.ShutdownTimeout)
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
	s.log.Info("stopped")
	return runErr
}

func serveHTTP(srv *http.Server, l net.Listener) error {
	if err := srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
