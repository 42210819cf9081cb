// Command wechatsim serves the WeChat API simulator of package wechatsim on
// its own port, for integration tests of anything that talks to WeChat:
//
//	wechatsim [-listen ADDR]... [-config FILE] [-app APPID:SECRET]... [-wecom CORPID:SECRET]...
//	          [-latency D] [-token-ttl D] [-ticket-grace D] [-rid-records N]
//	          [-component APPID:SECRET:TOKEN:AESKEY]... [-callback URL] [-ticket-every D]
//	          [-suite SUITEID:SECRET:TOKEN:AESKEY]... [-provider CORPID:SECRET]...
//
// It prints "wechatsim listening on http://ADDR" for each listener, in the
// order of the -listen flags, once it accepts connections, and stops
// gracefully on SIGINT or SIGTERM. Repeated -listen flags serve one WeChat
// on several addresses (api, api2, ...): they share every state, and a
// fault may name one listener by its 0-based index ("listener": N).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/wxproxy/wxproxy/wechatsim"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "wechatsim:", err)
		os.Exit(1)
	}
}

// shutdownTimeout bounds how long in-flight calls may take to finish.
const shutdownTimeout = 5 * time.Second

// run parses args, serves the simulator until ctx is done, then shuts down.
// getenv is unused today; it is there so the command's environment can be
// injected by tests like its other inputs.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("wechatsim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		listens    listenFlag
		config     = fs.String("config", "", "YAML configuration `file` (apps, quotas, latency, token_ttl, rid_records)")
		latency    = fs.Duration("latency", 0, "added to every WeChat answer, e.g. 20ms")
		tokenTTL   = fs.Duration("token-ttl", 0, "expires_in of new tokens (default 7200s)")
		grace      = fs.Duration("ticket-grace", 0, "how long a superseded ticket keeps working (default 5m)")
		ridRecords = fs.Int("rid-records", 0, "how many of the newest calls /cgi-bin/openapi/rid/get can find (default 100000)")
		apps       appFlag
		corps      appFlag
		comps      componentFlag
		suites     suiteFlag
		providers  providerFlag
		callback   = fs.String("callback", "", "`URL` the Open Platform and WeCom suite pushes go to (e.g. http://127.0.0.1:8443/callback/acme)")
		every      = fs.Duration("ticket-every", 0, "push a component_verify_ticket or suite_ticket to -callback every `D` (0 = only on POST /sim/platforms/{appid}/push-ticket or /sim/suites/{id}/push-ticket)")
	)
	fs.Var(&comps, "component", "Open Platform component `APPID:SECRET:TOKEN:AESKEY` (repeatable)")
	fs.Var(&suites, "suite", "WeCom third-party suite `SUITEID:SECRET:TOKEN:AESKEY` (repeatable)")
	fs.Var(&providers, "provider", "WeCom service provider `CORPID:SECRET` (repeatable)")
	apps.kind, corps.kind = wechatsim.KindOfficial, wechatsim.KindWeCom
	fs.Var(&listens, "listen", "listen `address` (repeatable: listeners 0, 1, ... of one WeChat; default 127.0.0.1:8081)")
	fs.Var(&apps, "app", "official account or mini program `APPID:SECRET` (repeatable)")
	fs.Var(&corps, "wecom", "WeCom app `CORPID:SECRET` (repeatable; one per agent secret)")
	if err := fs.Parse(args); errors.Is(err, flag.ErrHelp) {
		return nil // -h: usage printed, nothing to serve
	} else if err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}

	var opts wechatsim.Options
	if *config != "" {
		var err error
		if opts, err = wechatsim.LoadConfig(*config); err != nil {
			return err
		}
	}
	opts.Apps = append(opts.Apps, apps.apps...)
	opts.Apps = append(opts.Apps, corps.apps...)
	opts.Components = append(opts.Components, comps.comps...)
	opts.Suites = append(opts.Suites, suites.suites...)
	opts.Providers = append(opts.Providers, providers.providers...)
	if *callback != "" {
		opts.Callback = *callback
	}
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "latency":
			opts.Latency = *latency
		case "token-ttl":
			opts.TokenTTL = *tokenTTL
		case "ticket-grace":
			opts.TicketGrace = *grace
		case "rid-records":
			opts.RidRecords = *ridRecords
		}
	})
	if len(opts.Apps) == 0 && len(opts.Components) == 0 && len(opts.Suites) == 0 && len(opts.Providers) == 0 {
		return errors.New("no apps configured: pass -app APPID:SECRET, -wecom CORPID:SECRET, -component APPID:SECRET:TOKEN:AESKEY, -suite SUITEID:SECRET:TOKEN:AESKEY, -provider CORPID:SECRET or -config FILE")
	}
	sim, err := wechatsim.New(opts)
	if err != nil {
		return err
	}

	if len(listens) == 0 {
		listens = listenFlag{"127.0.0.1:8081"}
	}
	var lns []net.Listener
	for _, addr := range listens {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			return err
		}
		lns = append(lns, ln)
	}
	srvs := make([]*http.Server, len(lns))
	served := make(chan error, len(lns))
	for i, ln := range lns {
		srvs[i] = &http.Server{Handler: sim.Listener(i), ReadHeaderTimeout: 10 * time.Second}
		go func() { served <- srvs[i].Serve(ln) }()
	}
	for _, ln := range lns {
		fmt.Fprintf(stdout, "wechatsim listening on http://%s\n", ln.Addr())
	}
	for _, a := range opts.Apps {
		kind := a.Kind
		if kind == "" {
			kind = wechatsim.KindOfficial
		}
		fmt.Fprintf(stderr, "wechatsim: app %s (%s)\n", a.AppID, kind)
	}

	for _, c := range opts.Components {
		fmt.Fprintf(stderr, "wechatsim: component %s (pushes to %s)\n", c.AppID, orDefault(c.Callback, opts.Callback))
	}
	for _, su := range opts.Suites {
		fmt.Fprintf(stderr, "wechatsim: suite %s (pushes to %s)\n", su.SuiteID, orDefault(su.Callback, opts.Callback))
	}
	for _, p := range opts.Providers {
		fmt.Fprintf(stderr, "wechatsim: provider %s\n", p.CorpID)
	}
	if *every > 0 {
		go pushTickets(ctx, sim, opts.Components, opts.Suites, *every, stderr)
	}

	select {
	case err := <-served:
		for _, srv := range srvs {
			srv.Close()
		}
		return err // Serve failed on its own; ErrServerClosed cannot happen here
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	var errs []error
	for _, srv := range srvs {
		if err := srv.Shutdown(shutdownCtx); err != nil {
			errs = append(errs, fmt.Errorf("shutdown: %w", err))
		}
	}
	for range srvs {
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// listenFlag collects repeated -listen addresses.
type listenFlag []string

func (f *listenFlag) String() string { return strings.Join(*f, ",") }

func (f *listenFlag) Set(v string) error {
	*f = append(*f, v)
	return nil
}

// appFlag collects repeated APPID:SECRET flags of one kind.
type appFlag struct {
	kind string
	apps []wechatsim.App
}

func (f *appFlag) String() string { return "" }

func (f *appFlag) Set(v string) error {
	id, secret, ok := strings.Cut(v, ":")
	if !ok || id == "" || secret == "" {
		return fmt.Errorf("%q: want ID:SECRET", v)
	}
	f.apps = append(f.apps, wechatsim.App{AppID: id, Secret: secret, Kind: f.kind})
	return nil
}

// componentFlag collects repeated APPID:SECRET:TOKEN:AESKEY flags.
type componentFlag struct{ comps []wechatsim.Component }

func (f *componentFlag) String() string { return "" }

func (f *componentFlag) Set(v string) error {
	parts := strings.Split(v, ":")
	if len(parts) != 4 || slices.Contains(parts, "") {
		return fmt.Errorf("component: want APPID:SECRET:TOKEN:AESKEY")
	}
	f.comps = append(f.comps, wechatsim.Component{AppID: parts[0], Secret: parts[1], Token: parts[2], AESKey: parts[3]})
	return nil
}

// orDefault returns v, or def when v is empty.
func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

// suiteFlag collects repeated SUITEID:SECRET:TOKEN:AESKEY flags.
type suiteFlag struct{ suites []wechatsim.Suite }

func (f *suiteFlag) String() string { return "" }

func (f *suiteFlag) Set(v string) error {
	parts := strings.Split(v, ":")
	if len(parts) != 4 || slices.Contains(parts, "") {
		return fmt.Errorf("suite: want SUITEID:SECRET:TOKEN:AESKEY")
	}
	f.suites = append(f.suites, wechatsim.Suite{SuiteID: parts[0], Secret: parts[1], Token: parts[2], AESKey: parts[3]})
	return nil
}

// providerFlag collects repeated CORPID:SECRET flags.
type providerFlag struct{ providers []wechatsim.Provider }

func (f *providerFlag) String() string { return "" }

func (f *providerFlag) Set(v string) error {
	id, secret, ok := strings.Cut(v, ":")
	if !ok || id == "" || secret == "" {
		return fmt.Errorf("provider: want CORPID:SECRET")
	}
	f.providers = append(f.providers, wechatsim.Provider{CorpID: id, Secret: secret})
	return nil
}

// pushTickets pushes a ticket for every component and suite every d, as
// WeChat does every 10 minutes, until ctx ends.
func pushTickets(ctx context.Context, sim *wechatsim.Server, comps []wechatsim.Component, suites []wechatsim.Suite, d time.Duration, stderr io.Writer) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, c := range comps {
			if res, err := sim.PushTicket(c.AppID); err != nil || res.Status != http.StatusOK {
				fmt.Fprintf(stderr, "wechatsim: ticket push for %s: status %d: %v\n", c.AppID, res.Status, err)
			}
		}
		for _, su := range suites {
			if res, err := sim.PushSuiteTicket(su.SuiteID); err != nil || res.Status != http.StatusOK {
				fmt.Fprintf(stderr, "wechatsim: suite ticket push for %s: status %d: %v\n", su.SuiteID, res.Status, err)
			}
		}
	}
}
