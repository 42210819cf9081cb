// Command bench is the load benchmark of SPEC §10. It compares four targets
// in front of the same wechatsim, all on loopback:
//
//	direct          wrk → wechatsim (the token in the URL)
//	nginx           wrk → nginx (appends a fixed token) → wechatsim
//	wxproxy-memory  wrk → wxproxy serve, memory store → wechatsim
//	wxproxy-redis   wrk → wxproxy serve, redis store → wechatsim
//
// Usage (from the module root):
//
//	go run ./e2e/bench [-duration 10s] [-connections 64] [-rounds 3] [-out FILE]
//
// It installs nginx, wrk and redis-server with apt-get when they are missing,
// builds ./cmd/wxproxy and ./cmd/wechatsim into a temporary directory, starts
// every process on free 127.0.0.1 ports, warms every target up for 2 s, then
// runs `wrk -t1` against the targets in alternation for -rounds rounds. It
// prints a table, the medians and the ratios, and writes the JSON of SPEC §10
// to -out. Every process and temporary directory is removed on exit, also on
// Ctrl-C.
//
// The load generator, the simulator and the proxy share the machine's cores,
// so the numbers compare the targets with each other on this machine; they
// are not the capacity of a dedicated host.
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

// The targets, in the order of every round.
const (
	targetDirect = "direct"
	targetNginx  = "nginx"
	targetMemory = "wxproxy-memory"
	targetRedis  = "wxproxy-redis"
)

var targetOrder = []string{targetDirect, targetNginx, targetMemory, targetRedis}

const (
	// appMemory is the app of wxproxy-memory (and of the nginx and direct
	// token). wxproxy-redis uses its own appid: both proxies fetch classic
	// tokens, and on one appid the second fetch would kill the first
	// proxy's token 5 minutes later, in the middle of a long run.
	appMemory = "wx0123456789abcdef"
	appRedis  = "wxfedcba9876543210"
	appSecret = "bench-secret"
	secretEnv = "BENCH_WX_SECRET"
	// apiPath is the business call under load: a GET answered by the
	// simulator's echo after a token check.
	apiPath = "/cgi-bin/user/info?openid=o1"
	warmup  = 2 * time.Second
	// wrkThreads is wrk's -t: one thread leaves the most CPU to the targets.
	wrkThreads = 1
)

// options are the command-line flags of SPEC §10.
type options struct {
	duration    time.Duration
	connections int
	rounds      int
	out         string
}

func parseOptions(args []string, stderr io.Writer) (options, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "length of each measured wrk run (whole seconds)")
	fs.IntVar(&o.connections, "connections", 64, "wrk connections (-c)")
	fs.IntVar(&o.rounds, "rounds", 3, "rounds over all targets, in alternation")
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
	case o.out == "":
		return o, errors.New("-out must not be empty")
	}
	o.duration = o.duration.Round(time.Second)
	return o, nil
}

// The JSON document of SPEC §10.
type (
	report struct {
		Machine string   `json:"machine"`
		Results []result `json:"results"`
		Ratios  ratios   `json:"ratios"`
	}
	result struct {
		Target string  `json:"target"`
		Round  int     `json:"round"`
		RPS    float64 `json:"rps"`
		P50    float64 `json:"p50_ms"`
		P99    float64 `json:"p99_ms"`
		P999   float64 `json:"p999_ms"`
		Errors int64   `json:"errors"`
	}
	// ratios are of the median req/s over the rounds.
	ratios struct {
		MemoryOverNginx  float64 `json:"wxproxy-memory/nginx"`
		RedisOverMemory  float64 `json:"wxproxy-redis/wxproxy-memory"`
		MemoryOverDirect float64 `json:"wxproxy-memory/direct"`
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
	RPS, P50, P99, P999 float64
	Errors              int64
	Rounds              int
}

func summarize(rs []result) map[string]summary {
	by := map[string][]result{}
	for _, r := range rs {
		by[r.Target] = append(by[r.Target], r)
	}
	out := map[string]summary{}
	for t, list := range by {
		var rps, p50, p99, p999 []float64
		var s summary
		for _, r := range list {
			rps, p50, p99, p999 = append(rps, r.RPS), append(p50, r.P50), append(p99, r.P99), append(p999, r.P999)
			s.Errors += r.Errors
		}
		s.RPS, s.P50, s.P99, s.P999, s.Rounds = median(rps), median(p50), median(p99), median(p999), len(list)
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
		MemoryOverNginx:  ratio(m[targetMemory].RPS, m[targetNginx].RPS),
		RedisOverMemory:  ratio(m[targetRedis].RPS, m[targetMemory].RPS),
		MemoryOverDirect: ratio(m[targetMemory].RPS, m[targetDirect].RPS),
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
	Root     bool   // running as root: workers run as root too (paths are root's)
	Workers  string // worker_processes
	Dir      string // pid, logs and temp paths live here
	Listen   string // host:port
	Upstream string // the simulator's host:port
	Token    string // the fixed access_token nginx appends
}

func renderNginxConf(c nginxConf) (string, error) {
	t, err := template.New("nginx").Parse(nginxTemplate)
	if err != nil {
		return "", err
	}
	c.Token = url.QueryEscape(c.Token)
	var b strings.Builder
	err = t.Execute(&b, c)
	return b.String(), err
}

// wxproxyConfig is the YAML of one wxproxy serve: one classic-mode app on
// the simulator, no quotas, logging at warn so that access lines (Info) stay
// off the hot path. storeYAML is the value of the store key.
func wxproxyConfig(listen, admin, appid, simURL, storeYAML string) string {
	return fmt.Sprintf(`# written by e2e/bench
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
	return b.finish(runs)
}

// bench holds the tools, processes and targets of one run.
type bench struct {
	opt            options
	stdout, stderr io.Writer
	client         *http.Client

	nginxBin, wrkBin, redisBin string
	tmp, wrkLua                string
	procs                      []*proc
	sim, redis                 *proc
	simURL                     string
	targets                    map[string]*target
	nginxVersion, wrkVersion   string
	goVersion                  string
}

// target is one thing wrk loads.
type target struct {
	name string
	url  string
	proc *proc // the proxy process (nil for direct)
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

// ensureTools installs nginx, wrk and redis-server with apt-get when missing.
func (b *bench) ensureTools(ctx context.Context) error {
	need := map[string]string{"nginx": "nginx", "wrk": "wrk", "redis-server": "redis-server"}
	var missing []string
	for _, bin := range []string{"nginx", "wrk", "redis-server"} {
		if lookTool(bin) == "" {
			missing = append(missing, need[bin])
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
		// packages' own nginx and redis services.
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
		b.logf("tools present: nginx, wrk, redis-server")
	}
	b.nginxBin, b.wrkBin, b.redisBin = lookTool("nginx"), lookTool("wrk"), lookTool("redis-server")
	if b.nginxBin == "" || b.wrkBin == "" || b.redisBin == "" {
		return errors.New("nginx, wrk or redis-server still not found after installing")
	}
	out, _ := exec.CommandContext(ctx, b.nginxBin, "-v").CombinedOutput()
	b.nginxVersion = strings.TrimPrefix(strings.TrimSpace(string(out)), "nginx version: ")
	out, _ = exec.CommandContext(ctx, b.wrkBin, "-v").CombinedOutput() // exits 1 after printing
	if f := strings.Fields(string(out)); len(f) >= 2 {
		b.wrkVersion = f[0] + " " + f[1]
	}
	b.logf("nginx: %s (%s); wrk: %s (%s); redis-server: %s", b.nginxBin, b.nginxVersion, b.wrkBin, b.wrkVersion, b.redisBin)
	return nil
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
	b.logf("starting wechatsim (apps %s and %s, no latency)", appMemory, appRedis)
	b.sim, err = b.start(ctx, "wechatsim", filepath.Join(bin, "wechatsim"),
		[]string{"-listen", "127.0.0.1:0", "-app", appMemory + ":" + appSecret, "-app", appRedis + ":" + appSecret}, nil,
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
	redisDir := filepath.Join(b.tmp, "redis")
	if err := os.MkdirAll(redisDir, 0o700); err != nil {
		return err
	}
	b.logf("starting redis-server on %s (--save \"\" --appendonly no)", redisAddr)
	_, port, _ := net.SplitHostPort(redisAddr)
	b.redis, err = b.start(ctx, "redis", b.redisBin, []string{"--port", port, "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", redisDir, "--loglevel", "warning"}, nil, nil)
	if err != nil {
		return err
	}
	if err := b.waitFor(ctx, 15*time.Second, "redis-server PING", func() bool { return redisPing(redisAddr) }); err != nil {
		return err
	}

	// The token for nginx and direct: the stable token, which is independent
	// of the classic tokens the proxies fetch, so nobody invalidates anybody.
	token, err := b.stableToken(ctx)
	if err != nil {
		return err
	}
	b.logf("got a stable token for nginx and direct from the simulator (%d chars)", len(token))

	b.targets = map[string]*target{targetDirect: {name: targetDirect, url: b.simURL + apiPath + "&access_token=" + url.QueryEscape(token)}}

	// The two wxproxy serve processes.
	for _, t := range []struct{ name, appid, store string }{
		{targetMemory, appMemory, "{kind: memory}"},
		{targetRedis, appRedis, fmt.Sprintf(`{kind: redis, redis: {url: %q, key_prefix: "bench:", replicas_hint: 1}}`, "redis://"+redisAddr+"/0")},
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
		if err := os.WriteFile(cfg, []byte(wxproxyConfig(listen, admin, t.appid, b.simURL, t.store)), 0o600); err != nil {
			return err
		}
		b.logf("starting %s: wxproxy serve on %s (admin %s), app main = %s, classic tokens, store %s, log level warn (access lines are Info: logging stays off the hot path)",
			t.name, listen, admin, t.appid, t.store)
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
		b.targets[t.name] = &target{name: t.name, url: "http://" + listen + apiPath, proc: p}
	}

	// nginx.
	if err := b.startNginx(ctx, token); err != nil {
		return err
	}

	for _, name := range targetOrder {
		t := b.targets[name]
		if err := b.waitFor(ctx, 30*time.Second, name+" answering errcode 0", func() bool { return b.probe(t.url) == nil }); err != nil {
			return fmt.Errorf("%w (last probe: %v)", err, b.probe(t.url))
		}
		b.logf("%s answers errcode 0: %s", name, redactToken(t.url))
	}
	return nil
}

// startNginx writes nginx.conf and runs nginx in the foreground.
func (b *bench) startNginx(ctx context.Context, token string) error {
	listen, err := freeAddr()
	if err != nil {
		return err
	}
	dir := filepath.Join(b.tmp, "nginx")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	sim, _ := url.Parse(b.simURL)
	conf, err := renderNginxConf(nginxConf{Root: os.Geteuid() == 0, Workers: "auto", Dir: dir, Listen: listen, Upstream: sim.Host, Token: token})
	if err != nil {
		return err
	}
	path := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return err
	}
	args := []string{"-c", path, "-p", dir + "/", "-e", filepath.Join(dir, "error.log")}
	out, err := exec.CommandContext(ctx, b.nginxBin, append([]string{"-t"}, args...)...).CombinedOutput()
	if err != nil && strings.Contains(string(out), "invalid option") {
		args = args[:4] // nginx before 1.19.5 has no -e
		out, err = exec.CommandContext(ctx, b.nginxBin, append([]string{"-t"}, args...)...).CombinedOutput()
	}
	if err != nil {
		return fmt.Errorf("nginx -t: %v\n%s\n%s", err, out, conf)
	}
	b.logf("starting nginx on %s: worker_processes auto (= %d, like GOMAXPROCS of the Go targets), access_log off, upstream keepalive 128, appends the fixed token; %s", listen, runtime.NumCPU(), strings.Join(append([]string{"nginx"}, args...), " "))
	p, err := b.start(ctx, "nginx", b.nginxBin, args, nil, nil)
	if err != nil {
		return err
	}
	b.targets[targetNginx] = &target{name: targetNginx, url: "http://" + listen + apiPath, proc: p}
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
	cpu       map[string]float64 // % of one core: wrk, sim, proxy, redis
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
		b.logf("warm-up %-15s %9.0f req/s, %d errors", name, ri.RPS, ri.Errors)
	}
	b.logf("measuring: %d rounds of %v per target, wrk -t%d -c%d, targets in alternation", b.opt.rounds, b.opt.duration, wrkThreads, b.opt.connections)
	var runs []runInfo
	for round := 1; round <= b.opt.rounds; round++ {
		for _, name := range targetOrder {
			ri, err := b.load(ctx, b.targets[name], round, b.opt.duration)
			if err != nil {
				return runs, err
			}
			b.logf("round %d %-15s %9.0f req/s  p50 %.3f ms  p99 %.3f ms  p99.9 %.3f ms  errors %d  cpu wrk %.0f%% sim %.0f%% proxy %s redis %.0f%% irq %.0f%% idle %.0f%%%s",
				round, name, ri.RPS, ri.P50, ri.P99, ri.P999, ri.Errors, ri.cpu["wrk"], ri.cpu["sim"], cpuCell(ri, "proxy"), ri.cpu["redis"], ri.cpu["irq"], ri.cpu["idle"], notesSuffix(ri.notes))
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
// simulator's stats and every process's CPU time around it.
func (b *bench) load(ctx context.Context, t *target, round int, d time.Duration) (runInfo, error) {
	ri := runInfo{result: result{Target: t.name, Round: round}, cpu: map[string]float64{}}
	if err := b.probe(t.url); err != nil {
		return ri, fmt.Errorf("%s: probe before round %d: %v", t.name, round, err)
	}
	before, err := b.simStats()
	if err != nil {
		return ri, fmt.Errorf("sim stats: %w", err)
	}
	groups := map[string]*proc{"sim": b.sim, "redis": b.redis}
	if t.proc != nil {
		groups["proxy"] = t.proc
	}
	cpu0 := map[string]time.Duration{}
	for k, p := range groups {
		cpu0[k] = groupCPU(p.pgid())
	}
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
	ri.cpu["idle"] = 100 * float64(host.idle) / float64(wall)
	ri.cpu["irq"] = 100 * float64(host.irq) / float64(wall)
	if steal := 100 * float64(host.steal) / float64(wall); steal >= 5 {
		ri.notes = append(ri.notes, fmt.Sprintf("%.0f%% of a core stolen by the hypervisor", steal))
	}
	for k, p := range groups {
		ri.cpu[k] = 100 * float64(groupCPU(p.pgid())-cpu0[k]) / float64(wall)
	}
	ri.cpu["wrk"] = 100 * float64(wrkCPU) / float64(wall)
	after, err := b.simStats()
	if err != nil {
		return ri, fmt.Errorf("sim stats: %w", err)
	}
	for k, v := range after.Errcodes {
		if k != "0" {
			ri.simErrs += v - before.Errcodes[k]
		}
	}
	p := strings.SplitN(apiPath, "?", 2)[0]
	ri.forwarded = after.APICalls[p] - before.APICalls[p]
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

// wrk runs wrk -t1 with the done() script and returns its result line and
// the CPU time wrk used.
func (b *bench) wrk(ctx context.Context, u string, d time.Duration) (wrkResult, time.Duration, error) {
	cmd := exec.CommandContext(ctx, b.wrkBin, "-t"+strconv.Itoa(wrkThreads), "-c"+strconv.Itoa(b.opt.connections),
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

// finish prints the table, the medians and the ratios and writes the JSON.
func (b *bench) finish(runs []runInfo) error {
	rep := report{Machine: b.machine()}
	for _, r := range runs {
		rep.Results = append(rep.Results, r.result)
	}
	rep.Ratios = computeRatios(rep.Results)

	fmt.Fprintf(b.stdout, "\nmachine: %s\n\n", rep.Machine)
	tw := tabwriter.NewWriter(b.stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "target\tround\treq/s\tp50 ms\tp99 ms\tp99.9 ms\terrors\t| cpu: wrk\tsim\tproxy\tredis\tirq\tidle\t")
	for _, r := range runs {
		fmt.Fprintf(tw, "%s\t%d\t%.0f\t%.3f\t%.3f\t%.3f\t%d\t%.0f%%\t%.0f%%\t%s\t%.0f%%\t%.0f%%\t%.0f%%\t\n",
			r.Target, r.Round, r.RPS, r.P50, r.P99, r.P999, r.Errors, r.cpu["wrk"], r.cpu["sim"], cpuCell(r, "proxy"), r.cpu["redis"], r.cpu["irq"], r.cpu["idle"])
	}
	tw.Flush()
	fmt.Fprintf(b.stdout, "(cpu: %% of one core over the run, %d00%% in all; wrk, the simulator and the proxy share the same cores; irq = hard+soft interrupts, mostly loopback TCP, charged to no process)\n", runtime.NumCPU())

	sums := summarize(rep.Results)
	fmt.Fprintf(b.stdout, "\nmedians over %d rounds:\n", b.opt.rounds)
	tw = tabwriter.NewWriter(b.stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "target\treq/s\tp50 ms\tp99 ms\tp99.9 ms\terrors (sum)\tmin..max req/s\t")
	for _, name := range targetOrder {
		s := sums[name]
		var rps []float64
		for _, r := range rep.Results {
			if r.Target == name {
				rps = append(rps, r.RPS)
			}
		}
		fmt.Fprintf(tw, "%s\t%.0f\t%.3f\t%.3f\t%.3f\t%d\t%.0f..%.0f\t\n", name, s.RPS, s.P50, s.P99, s.P999, s.Errors, slices.Min(rps), slices.Max(rps))
	}
	tw.Flush()

	fmt.Fprintf(b.stdout, "\nratios of median req/s:\n")
	fmt.Fprintf(b.stdout, "  wxproxy-memory/nginx          %.3f\n", rep.Ratios.MemoryOverNginx)
	fmt.Fprintf(b.stdout, "  wxproxy-redis/wxproxy-memory  %.3f\n", rep.Ratios.RedisOverMemory)
	fmt.Fprintf(b.stdout, "  wxproxy-memory/direct         %.3f\n", rep.Ratios.MemoryOverDirect)
	fmt.Fprintf(b.stdout, "ratio of median p99 latency:\n")
	fmt.Fprintf(b.stdout, "  wxproxy-memory/nginx          %.3f\n", ratio(sums[targetMemory].P99, sums[targetNginx].P99))

	var notes []string
	for _, r := range runs {
		for _, n := range r.notes {
			notes = append(notes, fmt.Sprintf("%s round %d: %s", r.Target, r.Round, n))
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
	return nil
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
	return fmt.Sprintf("%s, %d cores (shared by wrk, wechatsim and the target); %s %s/%s, GOMAXPROCS default (%d); %s, worker_processes auto (%d), upstream keepalive 128; %s -t%d -c%d -d%s, %d rounds in alternation after a %v warm-up; wxproxy log level warn, classic tokens, no quotas; wechatsim without latency",
		cpu, runtime.NumCPU(), b.goVersion, runtime.GOOS, runtime.GOARCH, runtime.NumCPU(),
		b.nginxVersion, runtime.NumCPU(), b.wrkVersion, wrkThreads, b.opt.connections, b.opt.duration, b.opt.rounds, warmup)
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
	for _, p := range b.procs {
		if p.name == "nginx" {
			// error.log is kept only in the temporary directory; show it
			// when nginx complained.
			if data, _ := os.ReadFile(filepath.Join(b.tmp, "nginx", "error.log")); bytes.Contains(data, []byte("[error]")) || bytes.Contains(data, []byte("[crit]")) || bytes.Contains(data, []byte("[alert]")) {
				fmt.Fprintf(b.stderr, "nginx error.log (last lines):\n%s\n", tail(data, 2000))
			}
		}
	}
	if err := os.RemoveAll(b.tmp); err != nil {
		fmt.Fprintf(b.stderr, "removing %s: %v\n", b.tmp, err)
	}
	b.logf("stopped %d processes and removed %s", len(b.procs), b.tmp)
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// groupCPU is the user+system CPU time of the live processes in process
// group pgid, from /proc (in clock ticks of 1/100 s, Linux's USER_HZ).
func groupCPU(pgid int) time.Duration {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0
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
		if pg, t, ok := parseStat(string(data)); ok && pg == pgid {
			ticks += t
		}
	}
	return time.Duration(ticks) * (time.Second / 100)
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
