// Command bench is the load benchmark of SPEC §10. It compares seven
// targets in front of the same wechatsim, all on loopback:
//
//	direct                wrk → wechatsim (the token in the URL)
//	nginx                 wrk → nginx (appends a fixed token) → wechatsim
//	haproxy               wrk → HAProxy (appends a fixed token) → wechatsim
//	caddy                 wrk → Caddy (appends a fixed token) → wechatsim
//	wxproxy-memory        wrk → wxproxy serve, memory store → wechatsim
//	wxproxy-redis         wrk → wxproxy serve, redis store → wechatsim
//	wxproxy-redis-quotas  wrk → wxproxy serve, redis store and a per-minute
//	                      quota on the benchmarked API (the fleet's quota
//	                      store on the request path, in permit leases)
//	                      → wechatsim
//
// Usage (from the module root):
//
//	go run ./e2e/bench [-duration 10s] [-connections 64] [-rounds 3] [-idle N] [-out FILE]
//
// It installs nginx, haproxy, caddy, wrk and redis-server with apt-get when
// they are missing, builds ./cmd/wxproxy and ./cmd/wechatsim into a
// temporary directory, starts every process on free 127.0.0.1 ports, checks
// that every target answers 200 with errcode 0, warms every target up for
// 2 s, then runs `wrk -t1` against the targets in alternation for -rounds
// rounds. Around each run it reads the user+system CPU time of the target's
// processes (all processes of its process group, e.g. nginx's master and
// worker) from /proc/PID/stat and divides it by the requests completed; the
// target's resident memory (VmRSS, summed over its processes) is read after
// the run. For direct the target process is the simulator itself. With
// -idle N it then opens N keep-alive connections to each target (one
// request on each, then idle) and reports the target's RSS with them open.
// It prints tables, the medians and the ratios, and writes the JSON of SPEC
// §10 to -out. Every process and temporary directory is removed on exit,
// also on Ctrl-C.
//
// nginx and HAProxy run one worker process or thread, as SPEC §10 says;
// Caddy and wxproxy are Go programs with the default GOMAXPROCS (every
// core). The load generator, the simulator and the proxy share the
// machine's cores, so the numbers compare the targets with each other on
// this machine; they are not the capacity of a dedicated host.
package main

import (
	"bufio"
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"text/template"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

//go:embed wrk.lua
var wrkScript string

//go:embed nginx.conf.tmpl
var nginxTemplate string

//go:embed haproxy.cfg.tmpl
var haproxyTemplate string

//go:embed Caddyfile.tmpl
var caddyTemplate string

// The targets, in the order of every round.
const (
	targetDirect  = "direct"
	targetNginx   = "nginx"
	targetHAProxy = "haproxy"
	targetCaddy   = "caddy"
	targetMemory  = "wxproxy-memory"
	targetRedis   = "wxproxy-redis"
	targetQuotas  = "wxproxy-redis-quotas"
)

var targetOrder = []string{targetDirect, targetNginx, targetHAProxy, targetCaddy, targetMemory, targetRedis, targetQuotas}

const (
	// appMemory is the app of wxproxy-memory (and of the stable token that
	// direct, nginx, HAProxy and Caddy send). Each wxproxy uses its own
	// appid: they fetch classic tokens, and on one appid the second fetch
	// would kill the first proxy's token 5 minutes later, in the middle of
	// a long run.
	appMemory = "wx0123456789abcdef"
	appRedis  = "wxfedcba9876543210"
	appQuotas = "wx00112233445566ff"
	appSecret = "bench-secret"
	// quotaPerMinute is wxproxy-redis-quotas' per-minute quota on the
	// benchmarked API: about 166,000 req/s, far above what this benchmark
	// reaches, so it never refuses but every request takes its token from
	// Redis (one script call per request).
	quotaPerMinute = 10_000_000
	secretEnv      = "BENCH_WX_SECRET"
	// apiPath is the business call under load: a GET answered by the
	// simulator's echo after a token check.
	apiPath = "/cgi-bin/user/info?openid=o1"
	apiName = "/cgi-bin/user/info" // apiPath without its query
	warmup  = 2 * time.Second
	// wrkThreads is wrk's -t: one thread leaves the most CPU to the targets.
	wrkThreads = 1
	// settle is how long the idle connections stay open before the RSS
	// with them is read.
	settle = time.Second
)

// options are the command-line flags of SPEC §10.
type options struct {
	duration    time.Duration
	connections int
	rounds      int
	idle        int
	out         string
}

func parseOptions(args []string, stderr io.Writer) (options, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "length of each measured wrk run (whole seconds)")
	fs.IntVar(&o.connections, "connections", 64, "wrk connections (-c)")
	fs.IntVar(&o.rounds, "rounds", 3, "rounds over all targets, in alternation")
	fs.IntVar(&o.idle, "idle", 0, "after the rounds, open `N` idle keep-alive connections to each target and report its RSS with them")
	fs.StringVar(&o.out, "out", "bench-results.json", "JSON results `file`")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	switch {
	case fs.NArg() > 0:
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	case o.duration < time.Second:
		return o, errors.New("-duration must be at least 1s")
	case o.connections < 1:
		return o, errors.New("-connections must be at least 1")
	case o.rounds < 1:
		return o, errors.New("-rounds must be at least 1")
	case o.idle < 0:
		return o, errors.New("-idle must not be negative")
	case o.idle > maxIdle:
		return o, fmt.Errorf("-idle must be at most %d (one loopback address, one port per connection)", maxIdle)
	case o.out == "":
		return o, errors.New("-out must not be empty")
	}
	o.duration = o.duration.Round(time.Second)
	return o, nil
}

// maxIdle bounds -idle: every idle connection takes one ephemeral port of
// 127.0.0.1 towards the target (Linux's default range has 28,232).
const maxIdle = 25000

// The JSON document of SPEC §10. Idle is this benchmark's addition: the
// RSS of each target with -idle connections open (absent without -idle).
type (
	report struct {
		Machine string       `json:"machine"`
		Results []result     `json:"results"`
		Ratios  ratios       `json:"ratios"`
		Idle    []idleResult `json:"idle,omitempty"`
	}
	result struct {
		Target string  `json:"target"`
		Round  int     `json:"round"`
		RPS    float64 `json:"rps"`
		P50    float64 `json:"p50_ms"`
		P99    float64 `json:"p99_ms"`
		P999   float64 `json:"p999_ms"`
		// CPU is the user+system CPU time of the target's processes
		// during the run divided by the requests completed, in µs.
		CPU float64 `json:"cpu_us_per_req"`
		// RSS is the VmRSS of the target's processes after the run.
		RSS    float64 `json:"rss_mb"`
		Errors int64   `json:"errors"`
	}
	// ratios are of the median req/s over the rounds, except
	// MemoryOverNginxCPU, which is of the median CPU time per request
	// (lower is better).
	ratios struct {
		MemoryOverNginx    float64 `json:"wxproxy-memory/nginx"`
		MemoryOverNginxCPU float64 `json:"wxproxy-memory/nginx-cpu"`
		MemoryOverCaddy    float64 `json:"wxproxy-memory/caddy"`
		RedisOverMemory    float64 `json:"wxproxy-redis/wxproxy-memory"`
		QuotasOverMemory   float64 `json:"wxproxy-redis-quotas/wxproxy-memory"`
		MemoryOverDirect   float64 `json:"wxproxy-memory/direct"`
	}
	// idleResult is one target's memory with -idle connections open.
	idleResult struct {
		Target      string  `json:"target"`
		Connections int     `json:"connections"` // asked for (-idle)
		Opened      int     `json:"opened"`      // answered a first request with 200 and errcode 0
		StillOpen   int     `json:"still_open"`  // answered a second request after the RSS was read
		RSSBefore   float64 `json:"rss_mb_before"`
		RSS         float64 `json:"rss_mb"`
		KBPerConn   float64 `json:"kb_per_conn"`
		notes       []string
	}
)

// wrkResult is the line the done() hook of wrk.lua prints.
type wrkResult struct {
	Requests, RPS, P50, P99, P999  float64
	Errors, StatusErrors, Timeouts int64
}

const wrkLinePrefix = "WXPROXY-BENCH "

// parseWrk finds the WXPROXY-BENCH line in wrk's output and decodes it.
func parseWrk(out string) (wrkResult, error) {
	var line string
	for l := range strings.Lines(out) {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(l), wrkLinePrefix); ok {
			line = rest
		}
	}
	if line == "" {
		return wrkResult{}, errors.New("no " + strings.TrimSpace(wrkLinePrefix) + " line in wrk's output")
	}
	vals := map[string]float64{}
	for f := range strings.FieldsSeq(line) {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			return wrkResult{}, fmt.Errorf("wrk line: field %q is not key=value", f)
		}
		x, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return wrkResult{}, fmt.Errorf("wrk line: %s: %v", k, err)
		}
		vals[k] = x
	}
	for _, k := range []string{"requests", "rps", "p50_ms", "p99_ms", "p999_ms", "errors"} {
		if _, ok := vals[k]; !ok {
			return wrkResult{}, fmt.Errorf("wrk line: no %s", k)
		}
	}
	return wrkResult{
		Requests: vals["requests"], RPS: vals["rps"],
		P50: vals["p50_ms"], P99: vals["p99_ms"], P999: vals["p999_ms"],
		Errors: int64(vals["errors"]), StatusErrors: int64(vals["status_errors"]), Timeouts: int64(vals["timeouts"]),
	}, nil
}

// median of xs (the mean of the middle two for an even count); 0 for none.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// summary is a target's medians over its rounds.
type summary struct {
	RPS, P50, P99, P999, CPU, RSS float64
	MinRPS, MaxRPS                float64
	Errors                        int64
	Rounds                        int
}

func summarize(rs []result) map[string]summary {
	by := map[string][]result{}
	for _, r := range rs {
		by[r.Target] = append(by[r.Target], r)
	}
	out := map[string]summary{}
	for t, list := range by {
		var rps, p50, p99, p999, cpu, rss []float64
		var s summary
		for _, r := range list {
			rps, p50, p99, p999 = append(rps, r.RPS), append(p50, r.P50), append(p99, r.P99), append(p999, r.P999)
			cpu, rss = append(cpu, r.CPU), append(rss, r.RSS)
			s.Errors += r.Errors
		}
		s.RPS, s.P50, s.P99, s.P999, s.Rounds = median(rps), median(p50), median(p99), median(p999), len(list)
		s.CPU, s.RSS = median(cpu), median(rss)
		s.MinRPS, s.MaxRPS = slices.Min(rps), slices.Max(rps)
		out[t] = s
	}
	return out
}

// ratio is a/b rounded to 3 decimals, or 0 when b is 0 (JSON has no Inf).
func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return roundTo(a/b, 3)
}

func computeRatios(rs []result) ratios {
	m := summarize(rs)
	return ratios{
		MemoryOverNginx:    ratio(m[targetMemory].RPS, m[targetNginx].RPS),
		MemoryOverNginxCPU: ratio(m[targetMemory].CPU, m[targetNginx].CPU),
		MemoryOverCaddy:    ratio(m[targetMemory].RPS, m[targetCaddy].RPS),
		RedisOverMemory:    ratio(m[targetRedis].RPS, m[targetMemory].RPS),
		QuotasOverMemory:   ratio(m[targetQuotas].RPS, m[targetMemory].RPS),
		MemoryOverDirect:   ratio(m[targetMemory].RPS, m[targetDirect].RPS),
	}
}

func roundTo(x float64, digits int) float64 {
	p := 1.0
	for range digits {
		p *= 10
	}
	if x < 0 {
		return -float64(int64(-x*p+0.5)) / p
	}
	return float64(int64(x*p+0.5)) / p
}

// nginxConf is what nginx.conf.tmpl needs.
type nginxConf struct {
	Root              bool   // running as root: workers run as root too (paths are root's)
	Workers           string // worker_processes
	WorkerConnections int    // worker_connections: callers and upstream connections together
	RlimitNofile      int    // worker_rlimit_nofile
	Dir               string // pid, logs and temp paths live here
	Listen            string // host:port
	Upstream          string // the simulator's host:port
	Token             string // the fixed access_token nginx appends
}

func renderNginxConf(c nginxConf) (string, error) {
	c.Token = url.QueryEscape(c.Token)
	return render("nginx.conf", nginxTemplate, c)
}

// haproxyConf is what haproxy.cfg.tmpl needs.
type haproxyConf struct {
	MaxConn int    // global and per-frontend maxconn
	Nofile  uint64 // ulimit-n: RLIMIT_NOFILE, or 0 to let HAProxy size it from maxconn
	// LooseLimits (set by renderHAProxyConf) is "no strict-limits": HAProxy
	// refuses to start when ulimit-n is below its maxsock, about 2 *
	// maxconn, unless told so.
	LooseLimits bool
	Dir         string // the pid file lives here
	Listen      string // host:port
	Upstream    string // the simulator's host:port
	Token       string // the fixed access_token HAProxy appends
}

func renderHAProxyConf(c haproxyConf) (string, error) {
	// The token sits in a log-format string, where % starts a variable.
	c.Token = strings.ReplaceAll(url.QueryEscape(c.Token), "%", "%%")
	c.LooseLimits = c.Nofile > 0 && haproxyMaxsock(c.MaxConn) > c.Nofile
	return render("haproxy.cfg", haproxyTemplate, c)
}

// haproxyMaxsock is about the descriptors HAProxy reserves for maxconn
// (two per connection, plus listeners and pollers).
func haproxyMaxsock(maxconn int) uint64 {
	return 2*uint64(maxconn) + 64
}

// caddyConf is what Caddyfile.tmpl needs.
type caddyConf struct {
	Dir      string // Caddy's storage lives here
	Listen   string // host:port
	Host     string // Listen's host, for bind (set by renderCaddyfile)
	Upstream string // the simulator's host:port
	Token    string // the fixed access_token Caddy appends
}

func renderCaddyfile(c caddyConf) (string, error) {
	// QueryEscape leaves no braces, quotes or blanks, which the Caddyfile
	// would read as placeholders or token boundaries.
	c.Token = url.QueryEscape(c.Token)
	host, _, err := net.SplitHostPort(c.Listen)
	if err != nil {
		return "", fmt.Errorf("caddy listen address: %w", err)
	}
	c.Host = host
	return render("Caddyfile", caddyTemplate, c)
}

func render(name, text string, data any) (string, error) {
	t, err := template.New(name).Option("missingkey=error").Parse(text)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	err = t.Execute(&b, data)
	return b.String(), err
}

// wxproxyConfig is the YAML of one wxproxy serve: one classic-mode app on
// the simulator, logging at warn so that access lines (Info) stay off the
// hot path. storeYAML is the value of the store key. perMinute > 0 sets a
// per-minute quota on the benchmarked API; 0 configures no quotas.
func wxproxyConfig(listen, admin, appid, simURL, storeYAML string, perMinute int) string {
	cfg := fmt.Sprintf(`# written by e2e/bench
listen: %s
admin: {listen: %s}
log: {format: json, level: warn}
store: %s
apps:
  - name: main
    kind: official
    appid: %s
    secret: ${%s}
    token_mode: classic
    upstream: %s
`, listen, admin, storeYAML, appid, secretEnv, simURL)
	if perMinute > 0 {
		cfg += fmt.Sprintf(`    quotas:
      apis:
        %s: {per_minute: %d}
`, apiName, perMinute)
	}
	return cfg
}

// run is the whole benchmark.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	opt, err := parseOptions(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	} else if err != nil {
		return err
	}
	b := &bench{opt: opt, stdout: stdout, stderr: stderr, client: &http.Client{Timeout: 5 * time.Second}}
	if err := b.raiseNofile(); err != nil {
		return err
	}
	if err := b.ensureTools(ctx); err != nil {
		return err
	}
	b.tmp, err = os.MkdirTemp("", "wxproxy-bench-")
	if err != nil {
		return err
	}
	defer b.cleanup()
	if err := b.setUp(ctx); err != nil {
		return err
	}
	runs, err := b.measure(ctx)
	if ctx.Err() != nil {
		return fmt.Errorf("interrupted: %w", ctx.Err())
	}
	if err != nil {
		return err
	}
	var idle []idleResult
	if opt.idle > 0 {
		if idle, err = b.measureIdle(ctx); ctx.Err() != nil {
			return fmt.Errorf("interrupted: %w", ctx.Err())
		} else if err != nil {
			return err
		}
	}
	return b.finish(runs, idle)
}

// nofileNeed is the RLIMIT_NOFILE this run needs: the idle connections
// sit once in this process and once in the target, the measured ones
// twice in a proxy (caller and upstream side), plus slack for everything
// else.
func nofileNeed(o options) uint64 {
	return uint64(o.idle) + 4*uint64(o.connections) + 8192
}

// raiseNofile raises this process's RLIMIT_NOFILE (soft and, as root,
// hard) to what -idle and -connections need. Children inherit it: nginx,
// HAProxy, Caddy, wxproxy, the simulator and redis-server. syscall.Setrlimit
// also stops os/exec from restoring the soft limit Go started with in them.
func (b *bench) raiseNofile() error {
	need := nofileNeed(b.opt)
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("getrlimit: %w", err)
	}
	want := syscall.Rlimit{Cur: max(lim.Cur, need), Max: max(lim.Max, need)}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err != nil {
		// Not allowed to raise the hard limit: take what it allows.
		want = syscall.Rlimit{Cur: lim.Max, Max: lim.Max}
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err != nil {
			return fmt.Errorf("setrlimit: %w", err)
		}
	}
	if want.Cur < need {
		return fmt.Errorf("RLIMIT_NOFILE is %d and may not be raised to the %d that -idle %d -connections %d need (run as root, or raise ulimit -Hn)",
			want.Cur, need, b.opt.idle, b.opt.connections)
	}
	b.nofile = want.Cur
	b.logf("RLIMIT_NOFILE %d (was %d/%d), inherited by every process started", want.Cur, lim.Cur, lim.Max)
	return nil
}

// bench holds the tools, processes and targets of one run.
type bench struct {
	opt            options
	stdout, stderr io.Writer
	client         *http.Client

	bins, versions    map[string]string // by tool name
	nofile            uint64
	tmp, wrkLua       string
	procs             []*proc
	sim, redis        *proc
	simURL, redisAddr string
	targets           map[string]*target
	goVersion         string
}

// target is one thing wrk loads.
type target struct {
	name  string
	url   string
	proc  *proc // the proxy process (nil for direct)
	redis bool  // uses redis-server
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(b.stdout, "==> "+format+"\n", args...)
}

// lookTool finds name in PATH or in the sbin directories root's PATH may lack.
func lookTool(name string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/usr/local/sbin", "/usr/local/bin", "/usr/bin", "/sbin"} {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p
		}
	}
	return ""
}

// tools are the programs the benchmark runs and their Debian packages.
var tools = []struct{ bin, pkg string }{
	{"nginx", "nginx"}, {"haproxy", "haproxy"}, {"caddy", "caddy"}, {"wrk", "wrk"}, {"redis-server", "redis-server"},
}

// ensureTools installs nginx, haproxy, caddy, wrk and redis-server with
// apt-get when missing, and reads their versions.
func (b *bench) ensureTools(ctx context.Context) error {
	var missing []string
	for _, t := range tools {
		if lookTool(t.bin) == "" {
			missing = append(missing, t.pkg)
		}
	}
	if len(missing) > 0 {
		b.logf("missing tools: %s; installing them with apt-get", strings.Join(missing, " "))
		if os.Geteuid() != 0 {
			return fmt.Errorf("not root: install them first: sudo apt-get install -y %s", strings.Join(missing, " "))
		}
		if _, err := exec.LookPath("apt-get"); err != nil {
			return fmt.Errorf("apt-get not found: install %s by hand", strings.Join(missing, " "))
		}
		// RUNLEVEL=1 keeps Debian's maintainer scripts from starting the
		// packages' own nginx, haproxy, caddy and redis services.
		env := append(os.Environ(), "DEBIAN_FRONTEND=noninteractive", "RUNLEVEL=1")
		for _, args := range [][]string{{"update"}, append([]string{"install", "-y", "--no-install-recommends"}, missing...)} {
			b.logf("apt-get %s", strings.Join(args, " "))
			cmd := exec.CommandContext(ctx, "apt-get", args...)
			cmd.Env, cmd.Stdout, cmd.Stderr = env, b.stdout, b.stderr
			if err := cmd.Run(); err != nil {
				return fmt.Errorf("apt-get %s: %w", args[0], err)
			}
		}
	} else {
		b.logf("tools present: nginx, haproxy, caddy, wrk, redis-server")
	}
	b.bins, b.versions = map[string]string{}, map[string]string{}
	for _, t := range tools {
		if b.bins[t.bin] = lookTool(t.bin); b.bins[t.bin] == "" {
			return fmt.Errorf("%s still not found after installing package %s", t.bin, t.pkg)
		}
	}
	version := func(bin string, args ...string) string {
		out, _ := exec.CommandContext(ctx, b.bins[bin], args...).CombinedOutput() // wrk -v exits 1 after printing
		return string(out)
	}
	b.versions["nginx"] = strings.TrimPrefix(strings.TrimSpace(version("nginx", "-v")), "nginx version: ")
	b.versions["haproxy"] = parseVersion(version("haproxy", "-v"), "HAProxy version ", "haproxy ")
	b.versions["caddy"] = parseVersion(version("caddy", "version"), "", "caddy ")
	b.versions["wrk"] = parseVersion(version("wrk", "-v"), "wrk ", "wrk ")
	b.versions["redis-server"] = parseVersion(version("redis-server", "--version"), "Redis server v=", "redis ")
	for _, t := range tools {
		b.logf("%s: %s (%s)", t.bin, b.bins[t.bin], b.versions[t.bin])
	}
	return nil
}

// parseVersion takes the first word after prefix on the first line of
// out, and names it with label: "HAProxy version 2.6.12-1 2023/..." with
// prefix "HAProxy version " and label "haproxy " is "haproxy 2.6.12-1".
func parseVersion(out, prefix, label string) string {
	line, _, _ := strings.Cut(strings.TrimSpace(out), "\n")
	rest, ok := strings.CutPrefix(strings.TrimSpace(line), prefix)
	if f := strings.Fields(rest); ok && len(f) > 0 {
		return label + f[0]
	}
	return label + "(unknown version)"
}

// setUp builds the binaries and starts the simulator, redis, both wxproxy
// and nginx, and checks that every target answers errcode 0.
func (b *bench) setUp(ctx context.Context) error {
	root, err := moduleRoot(ctx)
	if err != nil {
		return err
	}
	out, _ := exec.CommandContext(ctx, "go", "env", "GOVERSION").Output()
	if b.goVersion = strings.TrimSpace(string(out)); b.goVersion == "" {
		b.goVersion = runtime.Version()
	}
	bin := filepath.Join(b.tmp, "bin")
	for _, name := range []string{"wxproxy", "wechatsim"} {
		b.logf("go build -o %s ./cmd/%s (%s, no -race)", filepath.Join(bin, name), name, b.goVersion)
		cmd := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(bin, name), "./cmd/"+name)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build ./cmd/%s: %v\n%s", name, err, out)
		}
	}
	b.wrkLua = filepath.Join(b.tmp, "bench.lua")
	if err := os.WriteFile(b.wrkLua, []byte(wrkScript), 0o644); err != nil {
		return err
	}

	// wechatsim, no latency.
	b.logf("starting wechatsim (apps %s, %s and %s, no latency)", appMemory, appRedis, appQuotas)
	b.sim, err = b.start(ctx, "wechatsim", filepath.Join(bin, "wechatsim"),
		[]string{"-listen", "127.0.0.1:0", "-app", appMemory + ":" + appSecret, "-app", appRedis + ":" + appSecret, "-app", appQuotas + ":" + appSecret}, nil,
		func(line string) bool {
			if _, after, ok := strings.Cut(line, "wechatsim listening on "); ok {
				b.simURL = strings.TrimSpace(after)
				return true
			}
			return false
		})
	if err != nil {
		return err
	}
	b.logf("wechatsim listening on %s", b.simURL)

	// redis-server.
	redisAddr, err := freeAddr()
	if err != nil {
		return err
	}
	b.redisAddr = redisAddr
	redisDir := filepath.Join(b.tmp, "redis")
	if err := os.MkdirAll(redisDir, 0o700); err != nil {
		return err
	}
	b.logf("starting redis-server on %s (--save \"\" --appendonly no)", redisAddr)
	_, port, _ := net.SplitHostPort(redisAddr)
	b.redis, err = b.start(ctx, "redis", b.bins["redis-server"], []string{"--port", port, "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", redisDir, "--loglevel", "warning"}, nil, nil)
	if err != nil {
		return err
	}
	if err := b.waitFor(ctx, 15*time.Second, "redis-server PING", func() bool { return redisPing(redisAddr) }); err != nil {
		return err
	}

	// The token for direct, nginx, HAProxy and Caddy: the stable token,
	// which is independent of the classic tokens the proxies fetch, so
	// nobody invalidates anybody.
	token, err := b.stableToken(ctx)
	if err != nil {
		return err
	}
	b.logf("got a stable token for direct, nginx, haproxy and caddy from the simulator (%d chars)", len(token))

	b.targets = map[string]*target{targetDirect: {name: targetDirect, url: b.simURL + apiPath + "&access_token=" + url.QueryEscape(token)}}

	// The three wxproxy serve processes; each Redis one has its own key
	// prefix.
	redisStore := func(prefix string) string {
		return fmt.Sprintf(`{kind: redis, redis: {url: %q, key_prefix: %q, replicas_hint: 1}}`, "redis://"+redisAddr+"/0", prefix)
	}
	for _, t := range []struct {
		name, appid, store string
		perMinute          int
	}{
		{targetMemory, appMemory, "{kind: memory}", 0},
		{targetRedis, appRedis, redisStore("bench:"), 0},
		{targetQuotas, appQuotas, redisStore("bench-quotas:"), quotaPerMinute},
	} {
		listen, err := freeAddr()
		if err != nil {
			return err
		}
		admin, err := freeAddr()
		if err != nil {
			return err
		}
		dir := filepath.Join(b.tmp, t.name)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		cfg := filepath.Join(dir, "wxproxy.yaml")
		if err := os.WriteFile(cfg, []byte(wxproxyConfig(listen, admin, t.appid, b.simURL, t.store, t.perMinute)), 0o600); err != nil {
			return err
		}
		quotas := "no quotas"
		if t.perMinute > 0 {
			quotas = fmt.Sprintf("quota %s per_minute %d", apiName, t.perMinute)
		}
		b.logf("starting %s: wxproxy serve on %s (admin %s), app main = %s, classic tokens, store %s, %s, log level warn (access lines are Info: logging stays off the hot path)",
			t.name, listen, admin, t.appid, t.store, quotas)
		p, err := b.start(ctx, t.name, filepath.Join(bin, "wxproxy"), []string{"serve", "-config", cfg}, []string{secretEnv + "=" + appSecret}, nil)
		if err != nil {
			return err
		}
		if err := b.waitFor(ctx, 30*time.Second, t.name+" /readyz", func() bool {
			resp, err := b.client.Get("http://" + admin + "/readyz")
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == 200
		}); err != nil {
			return err
		}
		b.targets[t.name] = &target{name: t.name, url: "http://" + listen + apiPath, proc: p, redis: t.store != "{kind: memory}"}
	}

	// The three reference proxies.
	for _, start := range []func(context.Context, string) error{b.startNginx, b.startHAProxy, b.startCaddy} {
		if err := start(ctx, token); err != nil {
			return err
		}
	}

	for _, name := range targetOrder {
		t := b.targets[name]
		if err := b.waitFor(ctx, 30*time.Second, name+" answering 200 with errcode 0", func() bool { return b.probe(t.url) == nil }); err != nil {
			return fmt.Errorf("%w (last probe: %v)\n%s log:\n%s", err, b.probe(t.url), name, t.self(b).output())
		}
		b.logf("%s answers 200 with errcode 0: %s", name, redactToken(t.url))
	}
	return nil
}

// self is the target's own process: the proxy, or the simulator for direct.
func (t *target) self(b *bench) *proc {
	if t.proc != nil {
		return t.proc
	}
	return b.sim
}

// upstreamHost is the simulator's host:port.
func (b *bench) upstreamHost() string {
	u, _ := url.Parse(b.simURL)
	return u.Host
}

// proxyDir makes the directory of a reference proxy's config and files.
func (b *bench) proxyDir(name string) (string, error) {
	dir := filepath.Join(b.tmp, name)
	return dir, os.MkdirAll(dir, 0o755)
}

// maxConns is what a reference proxy must accept at once: the idle
// connections and the measured ones, with room to spare.
func (b *bench) maxConns() int { return b.opt.idle + 2*b.opt.connections + 1024 }

// startNginx writes nginx.conf and runs nginx in the foreground: one
// worker, with worker_connections and worker_rlimit_nofile sized for -idle.
func (b *bench) startNginx(ctx context.Context, token string) error {
	listen, err := freeAddr()
	if err != nil {
		return err
	}
	dir, err := b.proxyDir("nginx")
	if err != nil {
		return err
	}
	// Each proxied connection holds a caller and an upstream connection.
	conns := b.maxConns() + b.opt.connections
	conf, err := renderNginxConf(nginxConf{Root: os.Geteuid() == 0, Workers: "1", WorkerConnections: conns, RlimitNofile: conns + 1024,
		Dir: dir, Listen: listen, Upstream: b.upstreamHost(), Token: token})
	if err != nil {
		return err
	}
	path := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return err
	}
	bin := b.bins["nginx"]
	args := []string{"-c", path, "-p", dir + "/", "-e", filepath.Join(dir, "error.log")}
	out, err := exec.CommandContext(ctx, bin, append([]string{"-t"}, args...)...).CombinedOutput()
	if err != nil && strings.Contains(string(out), "invalid option") {
		args = args[:4] // nginx before 1.19.5 has no -e
		out, err = exec.CommandContext(ctx, bin, append([]string{"-t"}, args...)...).CombinedOutput()
	}
	if err != nil {
		return fmt.Errorf("nginx -t: %v\n%s\n%s", err, out, conf)
	}
	b.logf("starting nginx on %s: worker_processes 1, worker_connections %d, worker_rlimit_nofile %d, access_log off, upstream keepalive 128, appends the fixed token; %s",
		listen, conns, conns+1024, strings.Join(append([]string{"nginx"}, args...), " "))
	p, err := b.start(ctx, "nginx", bin, args, nil, nil)
	if err != nil {
		return err
	}
	b.targets[targetNginx] = &target{name: targetNginx, url: "http://" + listen + apiPath, proc: p}
	return nil
}

// startHAProxy writes haproxy.cfg and runs HAProxy in the foreground (-db:
// one process, no master): nbthread 1, maxconn sized for -idle.
func (b *bench) startHAProxy(ctx context.Context, token string) error {
	listen, err := freeAddr()
	if err != nil {
		return err
	}
	dir, err := b.proxyDir("haproxy")
	if err != nil {
		return err
	}
	conf, err := renderHAProxyConf(haproxyConf{MaxConn: b.maxConns(), Nofile: b.nofile, Dir: dir, Listen: listen, Upstream: b.upstreamHost(), Token: token})
	if err != nil {
		return err
	}
	path := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return err
	}
	bin := b.bins["haproxy"]
	if out, err := exec.CommandContext(ctx, bin, "-c", "-f", path).CombinedOutput(); err != nil {
		return fmt.Errorf("haproxy -c: %v\n%s\n%s", err, out, conf)
	}
	args := []string{"-db", "-f", path}
	b.logf("starting haproxy on %s: nbthread 1, maxconn %d, ulimit-n %d, keep-alive both sides, http-reuse always, no log, appends the fixed token; %s",
		listen, b.maxConns(), b.nofile, strings.Join(append([]string{"haproxy"}, args...), " "))
	p, err := b.start(ctx, "haproxy", bin, args, nil, nil)
	if err != nil {
		return err
	}
	b.targets[targetHAProxy] = &target{name: targetHAProxy, url: "http://" + listen + apiPath, proc: p}
	return nil
}

// startCaddy writes a Caddyfile and runs caddy run: no admin endpoint, no
// automatic HTTPS, no access log; its HOME and XDG directories point into
// the temporary directory, so it writes nothing elsewhere.
func (b *bench) startCaddy(ctx context.Context, token string) error {
	listen, err := freeAddr()
	if err != nil {
		return err
	}
	dir, err := b.proxyDir("caddy")
	if err != nil {
		return err
	}
	conf, err := renderCaddyfile(caddyConf{Dir: dir, Listen: listen, Upstream: b.upstreamHost(), Token: token})
	if err != nil {
		return err
	}
	path := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return err
	}
	env := []string{"HOME=" + dir, "XDG_CONFIG_HOME=" + filepath.Join(dir, "config"), "XDG_DATA_HOME=" + filepath.Join(dir, "data")}
	bin := b.bins["caddy"]
	validate := exec.CommandContext(ctx, bin, "validate", "--config", path, "--adapter", "caddyfile")
	validate.Env = append(os.Environ(), env...)
	if out, err := validate.CombinedOutput(); err != nil {
		return fmt.Errorf("caddy validate: %v\n%s\n%s", err, out, conf)
	}
	args := []string{"run", "--config", path, "--adapter", "caddyfile"}
	b.logf("starting caddy on %s: reverse_proxy with keep-alive (128 idle upstream connections), admin off, auto_https off, log level WARN (no access log), GOMAXPROCS default (%d), appends the fixed token; %s",
		listen, runtime.NumCPU(), strings.Join(append([]string{"caddy"}, args...), " "))
	p, err := b.start(ctx, "caddy", bin, args, env, nil)
	if err != nil {
		return err
	}
	b.targets[targetCaddy] = &target{name: targetCaddy, url: "http://" + listen + apiPath, proc: p}
	return nil
}

// stableToken asks the simulator for appMemory's stable token. Unlike a
// classic fetch it invalidates no token the proxies hold.
func (b *bench) stableToken(ctx context.Context) (string, error) {
	body := fmt.Sprintf(`{"grant_type":"client_credential","appid":%q,"secret":%q}`, appMemory, appSecret)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, b.simURL+"/cgi-bin/stable_token", strings.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := b.client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var ans struct {
		AccessToken string `json:"access_token"`
		ErrCode     int    `json:"errcode"`
		ErrMsg      string `json:"errmsg"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&ans); err != nil {
		return "", fmt.Errorf("stable_token: %w", err)
	}
	if ans.AccessToken == "" {
		return "", fmt.Errorf("stable_token: errcode %d %s", ans.ErrCode, ans.ErrMsg)
	}
	return ans.AccessToken, nil
}

// probe sends one request and wants HTTP 200 with errcode 0.
func (b *bench) probe(u string) error {
	resp, err := b.client.Get(u)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != 200 || !bytes.Contains(body, []byte(`"errcode":0`)) {
		return fmt.Errorf("HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(body))
	}
	return nil
}

func (b *bench) waitFor(ctx context.Context, d time.Duration, what string, cond func() bool) error {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %v waiting for %s", d, what)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

// simStats is the part of GET /sim/stats the benchmark checks.
type simStats struct {
	APICalls map[string]int64 `json:"api_calls"`
	Errcodes map[string]int64 `json:"errcodes"`
}

func (b *bench) simStats() (simStats, error) {
	var st simStats
	resp, err := b.client.Get(b.simURL + "/sim/stats")
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

// run is one measured (or warm-up) wrk run and what was seen around it.
type runInfo struct {
	result
	requests  float64
	cpu       map[string]float64 // % of one core: wrk, sim, proxy, redis, irq, idle
	redisCPU  float64            // µs of redis-server CPU per request
	redisCmds float64            // redis commands per request (-1: not a Redis target)
	simErrs   int64              // answers with errcode != 0 the simulator sent during the run
	forwarded int64              // business calls the simulator received during the run
	notes     []string
}

// measure warms every target up, then runs the rounds.
func (b *bench) measure(ctx context.Context) ([]runInfo, error) {
	b.logf("warm-up: %v per target", warmup)
	for _, name := range targetOrder {
		ri, err := b.load(ctx, b.targets[name], 0, warmup)
		if err != nil {
			return nil, err
		}
		b.logf("warm-up %-20s %9.0f req/s, %d errors%s", name, ri.RPS, ri.Errors, notesSuffix(ri.notes))
	}
	b.logf("measuring: %d rounds of %v per target, wrk -t%d -c%d, targets in alternation", b.opt.rounds, b.opt.duration, wrkThreads, b.opt.connections)
	var runs []runInfo
	for round := 1; round <= b.opt.rounds; round++ {
		for _, name := range targetOrder {
			ri, err := b.load(ctx, b.targets[name], round, b.opt.duration)
			if err != nil {
				return runs, err
			}
			b.logf("round %d %-20s %9.0f req/s  p50 %.3f ms  p99 %.3f ms  p99.9 %.3f ms  errors %d  %.1f µs/req  rss %.1f MB  cpu wrk %.0f%% sim %.0f%% proxy %s redis %.0f%% irq %.0f%% idle %.0f%%%s",
				round, name, ri.RPS, ri.P50, ri.P99, ri.P999, ri.Errors, ri.CPU, ri.RSS, ri.cpu["wrk"], ri.cpu["sim"], cpuCell(ri, "proxy"), ri.cpu["redis"], ri.cpu["irq"], ri.cpu["idle"], notesSuffix(ri.notes))
			runs = append(runs, ri)
		}
	}
	return runs, nil
}

func notesSuffix(notes []string) string {
	if len(notes) == 0 {
		return ""
	}
	return "  [" + strings.Join(notes, "; ") + "]"
}

func cpuCell(ri runInfo, k string) string {
	v, ok := ri.cpu[k]
	if !ok {
		return "-"
	}
	return fmt.Sprintf("%.0f%%", v)
}

// load runs wrk against t for d, with a probe before and after, and the
// simulator's stats, Redis's command counts and every process's CPU time
// around it.
func (b *bench) load(ctx context.Context, t *target, round int, d time.Duration) (runInfo, error) {
	ri := runInfo{result: result{Target: t.name, Round: round}, cpu: map[string]float64{}, redisCmds: -1}
	if err := b.probe(t.url); err != nil {
		return ri, fmt.Errorf("%s: probe before round %d: %v", t.name, round, err)
	}
	before, err := b.simStats()
	if err != nil {
		return ri, fmt.Errorf("sim stats: %w", err)
	}
	// The target's own process group is "proxy", or "sim" for direct.
	groups := map[string]*proc{"sim": b.sim, "redis": b.redis}
	selfKey := "sim"
	if t.proc != nil {
		groups["proxy"], selfKey = t.proc, "proxy"
	}
	cpu0 := map[string]time.Duration{}
	for k, p := range groups {
		cpu0[k] = readGroup(p.pgid()).cpu
	}
	cmds0, redisErr := redisCommands(b.redisAddr)
	host0 := readHostCPU()
	start := time.Now()
	wr, wrkCPU, err := b.wrk(ctx, t.url, d)
	wall := time.Since(start)
	if err != nil {
		if round == 0 {
			return ri, fmt.Errorf("%s warm-up: %w", t.name, err)
		}
		return ri, fmt.Errorf("%s round %d: %w", t.name, round, err)
	}
	host := readHostCPU().sub(host0)
	cmds1, err := redisCommands(b.redisAddr)
	ri.cpu["idle"] = 100 * float64(host.idle) / float64(wall)
	ri.cpu["irq"] = 100 * float64(host.irq) / float64(wall)
	if steal := 100 * float64(host.steal) / float64(wall); steal >= 5 {
		ri.notes = append(ri.notes, fmt.Sprintf("%.0f%% of a core stolen by the hypervisor", steal))
	}
	used := map[string]time.Duration{}
	for k, p := range groups {
		g := readGroup(p.pgid())
		used[k] = g.cpu - cpu0[k]
		ri.cpu[k] = 100 * float64(used[k]) / float64(wall)
		if k == selfKey {
			ri.RSS = roundTo(float64(g.rssKB)/1024, 1)
			if g.procs == 0 {
				return ri, fmt.Errorf("%s round %d: no process of %s is running any more\n%s", t.name, round, p.name, p.output())
			}
		}
	}
	ri.cpu["wrk"] = 100 * float64(wrkCPU) / float64(wall)
	ri.CPU = roundTo(perRequestMicros(used[selfKey], wr.Requests), 2)
	ri.redisCPU = perRequestMicros(used["redis"], wr.Requests)
	if t.redis {
		switch {
		case redisErr != nil || err != nil:
			ri.notes = append(ri.notes, fmt.Sprintf("redis INFO commandstats: %v", errors.Join(redisErr, err)))
		case wr.Requests > 0:
			ri.redisCmds = float64(cmds1-cmds0) / wr.Requests
		}
		if t.name == targetQuotas && ri.redisCmds == 0 {
			// With permit leases a replica asks Redis a few times per
			// thousand requests, not per request; none at all means the
			// quota was not in force.
			ri.notes = append(ri.notes, "no Redis commands: the quota was not in force")
		}
	}
	after, err := b.simStats()
	if err != nil {
		return ri, fmt.Errorf("sim stats: %w", err)
	}
	for k, v := range after.Errcodes {
		if k != "0" {
			ri.simErrs += v - before.Errcodes[k]
		}
	}
	ri.forwarded = after.APICalls[apiName] - before.APICalls[apiName]
	ri.RPS, ri.P50, ri.P99, ri.P999, ri.Errors = roundTo(wr.RPS, 1), roundTo(wr.P50, 3), roundTo(wr.P99, 3), roundTo(wr.P999, 3), wr.Errors
	ri.requests = wr.Requests
	if wr.StatusErrors > 0 {
		ri.notes = append(ri.notes, fmt.Sprintf("%d non-2xx/3xx answers", wr.StatusErrors))
	}
	if wr.Timeouts > 0 {
		ri.notes = append(ri.notes, fmt.Sprintf("%d timeouts", wr.Timeouts))
	}
	if ri.simErrs > 0 {
		ri.notes = append(ri.notes, fmt.Sprintf("simulator sent %d errcode!=0 answers %v", ri.simErrs, after.Errcodes))
	}
	// wrk counts completed answers; requests still in flight when it stops
	// reach the simulator without being counted, at most one per connection.
	if diff := float64(ri.forwarded) - wr.Requests; diff < -1 || diff > float64(b.opt.connections)+1 {
		ri.notes = append(ri.notes, fmt.Sprintf("simulator received %d calls for %0.f answers", ri.forwarded, wr.Requests))
	}
	if err := b.probe(t.url); err != nil {
		ri.notes = append(ri.notes, "probe after the run failed: "+err.Error())
		ri.Errors++
	}
	return ri, nil
}

// perRequestMicros is cpu divided by requests, in µs; 0 without requests.
func perRequestMicros(cpu time.Duration, requests float64) float64 {
	if requests <= 0 {
		return 0
	}
	return float64(cpu) / float64(time.Microsecond) / requests
}

// measureIdle opens -idle keep-alive connections to each target in turn
// and reads the target's RSS with them open.
func (b *bench) measureIdle(ctx context.Context) ([]idleResult, error) {
	b.logf("idle: %d keep-alive connections to each target, one request on each (200, errcode 0), RSS read %v after the last one opened, then a second request on each to check it stayed open",
		b.opt.idle, settle)
	var out []idleResult
	for _, name := range targetOrder {
		r, err := b.idle(ctx, b.targets[name], b.opt.idle)
		if err != nil {
			return out, fmt.Errorf("%s idle: %w", name, err)
		}
		b.logf("idle %-20s RSS %.1f MB → %.1f MB with %d of %d connections open (%.1f KB per connection), %d still open after%s",
			name, r.RSSBefore, r.RSS, r.Opened, r.Connections, r.KBPerConn, r.StillOpen, notesSuffix(r.notes))
		out = append(out, r)
	}
	return out, nil
}

// idleWorkers open and use the idle connections concurrently.
const idleWorkers = 64

// idle opens n connections to t, sends one request on each and keeps them
// open; after settle it reads t's RSS, then sends a second request on each
// (were they all kept?) and closes them.
func (b *bench) idle(ctx context.Context, t *target, n int) (idleResult, error) {
	r := idleResult{Target: t.name, Connections: n}
	u, err := url.Parse(t.url)
	if err != nil {
		return r, err
	}
	req := []byte("GET " + u.RequestURI() + " HTTP/1.1\r\nHost: " + u.Host + "\r\nUser-Agent: wxproxy-bench-idle\r\n\r\n")
	self := t.self(b)
	r.RSSBefore = roundTo(float64(readGroup(self.pgid()).rssKB)/1024, 1)

	conns := make([]*idleConn, n)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	errs := parallel(ctx, n, func(i int) error {
		c, err := net.DialTimeout("tcp", u.Host, 10*time.Second)
		if err != nil {
			return err
		}
		conns[i] = &idleConn{Conn: c, r: bufio.NewReader(c)}
		return conns[i].get(req)
	})
	if ctx.Err() != nil {
		return r, ctx.Err()
	}
	for i, err := range errs {
		if err != nil && conns[i] != nil {
			conns[i].Close()
			conns[i] = nil
		}
	}
	r.Opened = n - countErrs(errs)
	r.noteErrs("opening", errs)
	select {
	case <-ctx.Done():
		return r, ctx.Err()
	case <-time.After(settle):
	}
	g := readGroup(self.pgid())
	if g.procs == 0 {
		return r, fmt.Errorf("no process of %s is running any more\n%s", self.name, self.output())
	}
	r.RSS = roundTo(float64(g.rssKB)/1024, 1)
	if r.Opened > 0 {
		r.KBPerConn = roundTo((r.RSS-r.RSSBefore)*1024/float64(r.Opened), 1)
	}
	errs = parallel(ctx, n, func(i int) error {
		if conns[i] == nil {
			return nil
		}
		return conns[i].get(req)
	})
	r.StillOpen = r.Opened - countErrs(errs)
	r.noteErrs("second request", errs)
	return r, ctx.Err()
}

// noteErrs notes how many of errs failed and the first error.
func (r *idleResult) noteErrs(what string, errs []error) {
	if n := countErrs(errs); n > 0 {
		first := errors.Join(errs...) // the first line is the first error
		line, _, _ := strings.Cut(first.Error(), "\n")
		r.notes = append(r.notes, fmt.Sprintf("%s: %d of %d connections failed, first: %s", what, n, len(errs), line))
	}
}

func countErrs(errs []error) int {
	n := 0
	for _, err := range errs {
		if err != nil {
			n++
		}
	}
	return n
}

// parallel runs f(0..n-1) on idleWorkers goroutines and returns the errors
// by index; it stops starting new calls when ctx is done.
func parallel(ctx context.Context, n int, f func(i int) error) []error {
	errs := make([]error, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(idleWorkers, n) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if ctx.Err() != nil {
					errs[i] = ctx.Err()
					continue
				}
				errs[i] = f(i)
			}
		})
	}
	wg.Wait()
	return errs
}

// idleConn is one keep-alive connection of the idle measurement.
type idleConn struct {
	net.Conn
	r *bufio.Reader
}

// get sends req and wants 200 with errcode 0 and no Connection: close.
func (c *idleConn) get(req []byte) error {
	_ = c.SetDeadline(time.Now().Add(15 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := c.Write(req); err != nil {
		return err
	}
	resp, err := http.ReadResponse(c.r, nil)
	if err != nil {
		return err
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	switch {
	case err != nil:
		return err
	case resp.StatusCode != 200 || !bytes.Contains(body, []byte(`"errcode":0`)):
		return fmt.Errorf("HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(body))
	case resp.Close:
		return errors.New("the target closes the connection after the request (no keep-alive)")
	}
	return nil
}

// wrk runs wrk -t1 with the done() script and returns its result line and
// the CPU time wrk used.
func (b *bench) wrk(ctx context.Context, u string, d time.Duration) (wrkResult, time.Duration, error) {
	cmd := exec.CommandContext(ctx, b.bins["wrk"], "-t"+strconv.Itoa(wrkThreads), "-c"+strconv.Itoa(b.opt.connections),
		"-d"+strconv.Itoa(int(d/time.Second))+"s", "--latency", "-s", b.wrkLua, u)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ctx.Err() != nil {
		return wrkResult{}, 0, ctx.Err()
	}
	if err != nil {
		return wrkResult{}, 0, fmt.Errorf("wrk: %v\n%s", err, out.String())
	}
	r, err := parseWrk(out.String())
	if err != nil {
		return r, 0, fmt.Errorf("%w\n%s", err, out.String())
	}
	return r, cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime(), nil
}

// finish prints the tables, the medians and the ratios and writes the JSON.
func (b *bench) finish(runs []runInfo, idle []idleResult) error {
	rep := report{Machine: b.machine(), Idle: idle}
	for _, r := range runs {
		rep.Results = append(rep.Results, r.result)
	}
	rep.Ratios = computeRatios(rep.Results)

	fmt.Fprintf(b.stdout, "\nmachine: %s\n\n", rep.Machine)
	tw := tabwriter.NewWriter(b.stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "target\tround\treq/s\tp50 ms\tp99 ms\tp99.9 ms\terrors\tcpu µs/req\trss MB\t| cpu: wrk\tsim\tproxy\tredis\tirq\tidle\t| redis cmd/req\t")
	for _, r := range runs {
		fmt.Fprintf(tw, "%s\t%d\t%.0f\t%.3f\t%.3f\t%.3f\t%d\t%.1f\t%.1f\t%.0f%%\t%.0f%%\t%s\t%.0f%%\t%.0f%%\t%.0f%%\t%s\t\n",
			r.Target, r.Round, r.RPS, r.P50, r.P99, r.P999, r.Errors, r.CPU, r.RSS,
			r.cpu["wrk"], r.cpu["sim"], cpuCell(r, "proxy"), r.cpu["redis"], r.cpu["irq"], r.cpu["idle"], redisCmdCell(r.redisCmds))
	}
	tw.Flush()
	fmt.Fprintf(b.stdout, "(cpu µs/req: user+system CPU time of the target's processes (/proc/PID/stat) over the requests completed, for direct the simulator's; rss: VmRSS of the target's processes after the run;\n"+
		" cpu: %% of one core over the run, %d00%% in all; wrk, the simulator and the proxy share the same cores; irq = hard+soft interrupts, mostly loopback TCP, charged to no process;\n"+
		" redis cmd/req: commands redis-server ran per request completed, those inside Lua scripts included (INFO commandstats))\n", runtime.NumCPU())

	sums := summarize(rep.Results)
	redisCPU := map[string][]float64{}
	for _, r := range runs {
		if b.targets[r.Target].redis {
			redisCPU[r.Target] = append(redisCPU[r.Target], r.redisCPU)
		}
	}
	fmt.Fprintf(b.stdout, "\nmedians over %d rounds:\n", b.opt.rounds)
	tw = tabwriter.NewWriter(b.stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "target\treq/s\tp50 ms\tp99 ms\tp99.9 ms\tcpu µs/req\t+ redis µs/req\trss MB\terrors (sum)\tmin..max req/s\t")
	for _, name := range targetOrder {
		s := sums[name]
		redis := "-"
		if v, ok := redisCPU[name]; ok {
			redis = fmt.Sprintf("%.1f", median(v))
		}
		fmt.Fprintf(tw, "%s\t%.0f\t%.3f\t%.3f\t%.3f\t%.1f\t%s\t%.1f\t%d\t%.0f..%.0f\t\n", name, s.RPS, s.P50, s.P99, s.P999, s.CPU, redis, s.RSS, s.Errors, s.MinRPS, s.MaxRPS)
	}
	tw.Flush()

	fmt.Fprintf(b.stdout, "\nratios (of median req/s; -cpu: of median CPU µs per request, lower is better):\n")
	tw = tabwriter.NewWriter(b.stdout, 0, 0, 2, ' ', 0)
	for _, r := range []struct {
		name string
		v    float64
	}{
		{"wxproxy-memory/nginx", rep.Ratios.MemoryOverNginx},
		{"wxproxy-memory/nginx-cpu", rep.Ratios.MemoryOverNginxCPU},
		{"wxproxy-memory/caddy", rep.Ratios.MemoryOverCaddy},
		{"wxproxy-redis/wxproxy-memory", rep.Ratios.RedisOverMemory},
		{"wxproxy-redis-quotas/wxproxy-memory", rep.Ratios.QuotasOverMemory},
		{"wxproxy-memory/direct", rep.Ratios.MemoryOverDirect},
	} {
		fmt.Fprintf(tw, "  %s\t%.3f\n", r.name, r.v)
	}
	tw.Flush()
	fmt.Fprintf(b.stdout, "not in the JSON:\n")
	tw = tabwriter.NewWriter(b.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "  wxproxy-memory/haproxy\t%.3f\n", ratio(sums[targetMemory].RPS, sums[targetHAProxy].RPS))
	fmt.Fprintf(tw, "  wxproxy-memory/haproxy-cpu\t%.3f\n", ratio(sums[targetMemory].CPU, sums[targetHAProxy].CPU))
	fmt.Fprintf(tw, "  wxproxy-memory/caddy-cpu\t%.3f\n", ratio(sums[targetMemory].CPU, sums[targetCaddy].CPU))
	fmt.Fprintf(tw, "  wxproxy-memory/nginx p99 latency\t%.3f\n", ratio(sums[targetMemory].P99, sums[targetNginx].P99))
	tw.Flush()

	if len(idle) > 0 {
		fmt.Fprintf(b.stdout, "\nidle: RSS with %d idle keep-alive connections open to the target (each used for one request first):\n", b.opt.idle)
		tw = tabwriter.NewWriter(b.stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "target\trss MB before\trss MB with idle\tKB per conn\topened\tstill open after\t")
		for _, r := range idle {
			fmt.Fprintf(tw, "%s\t%.1f\t%.1f\t%.1f\t%d/%d\t%d\t\n", r.Target, r.RSSBefore, r.RSS, r.KBPerConn, r.Opened, r.Connections, r.StillOpen)
		}
		tw.Flush()
	}

	var notes []string
	for _, r := range runs {
		for _, n := range r.notes {
			notes = append(notes, fmt.Sprintf("%s round %d: %s", r.Target, r.Round, n))
		}
	}
	for _, r := range idle {
		for _, n := range r.notes {
			notes = append(notes, fmt.Sprintf("%s idle: %s", r.Target, n))
		}
	}
	if len(notes) > 0 {
		fmt.Fprintln(b.stdout, "\nnotes:")
		for _, n := range notes {
			fmt.Fprintln(b.stdout, "  "+n)
		}
	}

	data, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(b.opt.out, append(data, '\n'), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(b.stdout, "\nwrote %s\n", b.opt.out)
	for _, r := range idle {
		if r.Opened < r.Connections || r.StillOpen < r.Opened {
			return fmt.Errorf("%s: only %d of %d idle connections opened and %d stayed open (see the notes)", r.Target, r.Opened, r.Connections, r.StillOpen)
		}
	}
	return nil
}

func redisCmdCell(v float64) string {
	if v < 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", v)
}

// machine describes the host and the settings for the JSON "machine" field.
func (b *bench) machine() string {
	cpu := "unknown CPU"
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for l := range strings.Lines(string(data)) {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	v := b.versions
	idle := ""
	if b.opt.idle > 0 {
		idle = fmt.Sprintf("; -idle %d, RLIMIT_NOFILE %d", b.opt.idle, b.nofile)
	}
	return fmt.Sprintf("%s, %d cores (shared by wrk, wechatsim and the target); %s %s/%s, GOMAXPROCS default (%d) for wxproxy and wechatsim; "+
		"%s, worker_processes 1, upstream keepalive 128; %s, nbthread 1, http-reuse always; %s, GOMAXPROCS default, 128 idle upstream connections; %s; "+
		"%s -t%d -c%d -d%s, %d rounds in alternation after a %v warm-up; wxproxy log level warn, classic tokens, no quotas except wxproxy-redis-quotas (%s per_minute %d, Redis store); wechatsim without latency%s",
		cpu, runtime.NumCPU(), b.goVersion, runtime.GOOS, runtime.GOARCH, runtime.NumCPU(),
		v["nginx"], v["haproxy"], v["caddy"], v["redis-server"],
		v["wrk"], wrkThreads, b.opt.connections, b.opt.duration, b.opt.rounds, warmup, apiName, quotaPerMinute, idle)
}

// redactToken hides the access_token value of a URL in printed output.
func redactToken(u string) string {
	if i := strings.Index(u, "access_token="); i >= 0 {
		return u[:i] + "access_token=REDACTED"
	}
	return u
}

// moduleRoot is the directory of the main module's go.mod.
func moduleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not inside the wxproxy module: run from the repository (go run ./e2e/bench)")
	}
	return filepath.Dir(mod), nil
}

// freeAddr returns a 127.0.0.1 address that was free a moment ago.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func redisPing(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return false
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && strings.HasPrefix(line, "+PONG")
}

// proc is a started process, the leader of its own process group (so that
// nginx's workers are stopped with their master and Ctrl-C reaches only
// this command, which then stops everything in order).
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
	log  string // its stdout and stderr
}

func (p *proc) pgid() int { return p.cmd.Process.Pid }

// start runs bin; when match is not nil it waits until match accepts an
// output line. Output goes to a log file in the temporary directory.
func (b *bench) start(ctx context.Context, name, bin string, args, env []string, match func(string) bool) (*proc, error) {
	p := &proc{name: name, cmd: exec.Command(bin, args...), done: make(chan struct{}), log: filepath.Join(b.tmp, name+".log")}
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Dir = b.tmp
	// Pdeathsig stops the child if this command dies without cleaning up.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	logf, err := os.Create(p.log)
	if err != nil {
		return nil, err
	}
	pr, pw := io.Pipe()
	p.cmd.Stdout, p.cmd.Stderr = pw, pw
	if err := p.cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	b.procs = append(b.procs, p)
	matched := make(chan struct{})
	var once sync.Once
	go func() {
		defer logf.Close()
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			fmt.Fprintln(logf, sc.Text())
			if match != nil && match(sc.Text()) {
				once.Do(func() { close(matched) })
			}
		}
		_, _ = io.Copy(logf, pr) // a line over 1 MiB: keep draining
	}()
	go func() {
		p.err = p.cmd.Wait()
		pw.Close()
		close(p.done)
	}()
	if match == nil {
		select {
		case <-p.done:
			return nil, fmt.Errorf("%s exited at once: %v\n%s", name, p.err, p.output())
		case <-time.After(100 * time.Millisecond):
			return p, nil
		}
	}
	select {
	case <-matched:
		return p, nil
	case <-p.done:
		return nil, fmt.Errorf("%s exited early: %v\n%s", name, p.err, p.output())
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(30 * time.Second):
		return nil, fmt.Errorf("%s did not start in 30s\n%s", name, p.output())
	}
}

func (p *proc) output() string {
	data, _ := os.ReadFile(p.log)
	if len(data) > 4000 {
		data = data[len(data)-4000:]
	}
	return string(data)
}

// stop sends SIGTERM to the process group, then SIGKILL after 10 s.
func (p *proc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = syscall.Kill(-p.pgid(), syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-p.pgid(), syscall.SIGKILL)
		<-p.done
	}
}

// cleanup stops every process, newest first, and removes the temporary
// directory.
func (b *bench) cleanup() {
	for _, p := range slices.Backward(b.procs) {
		p.stop()
	}
	// The reference proxies' logs are kept only in the temporary
	// directory; show them when the proxy complained.
	for _, p := range b.procs {
		log := p.log
		var marks []string
		switch p.name {
		case "nginx":
			log, marks = filepath.Join(b.tmp, "nginx", "error.log"), []string{"[error]", "[crit]", "[alert]", "[emerg]"}
		case "haproxy":
			marks = []string{"[ALERT]", "[WARNING]"}
		case "caddy":
			marks = []string{`"level":"error"`}
		default:
			continue
		}
		if data, _ := os.ReadFile(log); complained(string(data), marks) {
			fmt.Fprintf(b.stderr, "%s log (last lines):\n%s\n", p.name, tail(data, 2000))
		}
	}
	if err := os.RemoveAll(b.tmp); err != nil {
		fmt.Fprintf(b.stderr, "removing %s: %v\n", b.tmp, err)
	}
	b.logf("stopped %d processes and removed %s", len(b.procs), b.tmp)
}

// complained reports whether a line of log has one of marks, leaving out
// HAProxy's expected complaint that ulimit-n is below 2 * maxconn (see
// haproxy.cfg.tmpl, no strict-limits).
func complained(log string, marks []string) bool {
	for l := range strings.Lines(log) {
		if strings.Contains(l, "FD limit (") && strings.Contains(l, "too low for maxconn") {
			continue
		}
		if slices.ContainsFunc(marks, func(m string) bool { return strings.Contains(l, m) }) {
			return true
		}
	}
	return false
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// group is what /proc says of the live processes of one process group.
type group struct {
	procs int
	cpu   time.Duration // user+system, from /proc/PID/stat
	rssKB int64         // VmRSS, from /proc/PID/status
}

// readGroup sums the user+system CPU time and the VmRSS of the live
// processes in process group pgid (nginx's master and worker; one process
// for the others). CPU time is in clock ticks of 1/100 s, Linux's USER_HZ.
func readGroup(pgid int) group {
	var g group
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return g
	}
	var ticks int64
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		data, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		pg, t, ok := parseStat(string(data))
		if !ok || pg != pgid {
			continue
		}
		g.procs++
		ticks += t
		if data, err := os.ReadFile("/proc/" + e.Name() + "/status"); err == nil {
			if kb, ok := parseVmRSS(string(data)); ok {
				g.rssKB += kb
			}
		}
	}
	g.cpu = time.Duration(ticks) * (time.Second / 100)
	return g
}

// parseVmRSS reads the "VmRSS:   1234 kB" line of /proc/PID/status (a
// zombie or kernel thread has none).
func parseVmRSS(status string) (kB int64, ok bool) {
	for l := range strings.Lines(status) {
		rest, found := strings.CutPrefix(l, "VmRSS:")
		if !found {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, false
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		return n, err == nil && n >= 0
	}
	return 0, false
}

// redisCommands is the number of commands redis-server at addr has run
// (INFO commandstats, the INFO calls themselves left out).
func redisCommands(addr string) (int64, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte("INFO commandstats\r\n")); err != nil {
		return 0, err
	}
	r := bufio.NewReader(c)
	head, err := r.ReadString('\n')
	if err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(head, "$")))
	if !strings.HasPrefix(head, "$") || err != nil || n < 0 {
		return 0, fmt.Errorf("INFO answered %q", strings.TrimSpace(head))
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return 0, err
	}
	return parseCommandStats(string(body))
}

// parseCommandStats sums calls= over the cmdstat_ lines of INFO
// commandstats, except cmdstat_info.
func parseCommandStats(info string) (int64, error) {
	var total int64
	seen := false
	for l := range strings.Lines(info) {
		name, rest, ok := strings.Cut(strings.TrimSpace(l), ":")
		if !ok || !strings.HasPrefix(name, "cmdstat_") {
			continue
		}
		seen = true
		if name == "cmdstat_info" {
			continue
		}
		for kv := range strings.SplitSeq(rest, ",") {
			if v, ok := strings.CutPrefix(kv, "calls="); ok {
				n, err := strconv.ParseInt(v, 10, 64)
				if err != nil {
					return 0, fmt.Errorf("%s: calls=%q", name, v)
				}
				total += n
			}
		}
	}
	if !seen {
		return 0, errors.New("no cmdstat_ lines in INFO commandstats")
	}
	return total, nil
}

// hostCPU is the machine-wide CPU time of the first line of /proc/stat.
type hostCPU struct{ idle, irq, steal time.Duration }

func (a hostCPU) sub(b hostCPU) hostCPU {
	return hostCPU{a.idle - b.idle, a.irq - b.irq, a.steal - b.steal}
}

func readHostCPU() hostCPU {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return hostCPU{}
	}
	line, _, _ := strings.Cut(string(data), "\n")
	return parseHostCPU(line)
}

// parseHostCPU reads "cpu user nice system idle iowait irq softirq steal ...".
func parseHostCPU(line string) hostCPU {
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return hostCPU{}
	}
	n := func(i int) time.Duration {
		v, _ := strconv.ParseInt(f[i], 10, 64)
		return time.Duration(v) * (time.Second / 100)
	}
	return hostCPU{idle: n(4) + n(5), irq: n(6) + n(7), steal: n(8)}
}

// parseStat returns the process group and utime+stime of a /proc/PID/stat line.
func parseStat(s string) (pgrp int, ticks int64, ok bool) {
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 > len(s) {
		return 0, 0, false
	}
	f := strings.Fields(s[i+2:]) // f[0] is field 3 (state)
	if len(f) < 13 {
		return 0, 0, false
	}
	pg, err1 := strconv.Atoi(f[2])
	ut, err2 := strconv.ParseInt(f[11], 10, 64)
	st, err3 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil {
		return 0, 0, false
	}
	return pg, ut + st, true
}
