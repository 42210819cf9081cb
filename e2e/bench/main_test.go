package main

import (
	"encoding/json"
	"io"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// These tests cover the pure parts only; they never run the benchmark.

func TestParseWrk(t *testing.T) {
	out := `Running 10s test @ http://127.0.0.1:1234/cgi-bin/user/info?openid=o1
  1 threads and 64 connections
  Latency Distribution
     50%    1.20ms
  123456 requests in 10.00s, 40.00MB read
Requests/sec:  12345.60
Transfer/sec:      4.00MB
WXPROXY-BENCH requests=123456 duration_us=10000123 rps=12345.476 p50_ms=1.203 p99_ms=4.560 p999_ms=9.870 errors=3 status_errors=2 timeouts=1
`
	got, err := parseWrk(out)
	if err != nil {
		t.Fatal(err)
	}
	want := wrkResult{Requests: 123456, RPS: 12345.476, P50: 1.203, P99: 4.56, P999: 9.87, Errors: 3, StatusErrors: 2, Timeouts: 1}
	if got != want {
		t.Errorf("parseWrk = %+v, want %+v", got, want)
	}

	for name, bad := range map[string]string{
		"no line":       "Requests/sec: 1\n",
		"missing field": "WXPROXY-BENCH requests=1 rps=1 p50_ms=1 p99_ms=1 errors=0\n",
		"not a number":  "WXPROXY-BENCH requests=x rps=1 p50_ms=1 p99_ms=1 p999_ms=1 errors=0\n",
		"no equals":     "WXPROXY-BENCH requests 1\n",
	} {
		if _, err := parseWrk(bad); err == nil {
			t.Errorf("%s: parseWrk(%q) succeeded", name, bad)
		}
	}
}

// TestWrkScriptFormat checks that the Lua script prints the keys parseWrk reads.
func TestWrkScriptFormat(t *testing.T) {
	for _, k := range []string{"requests=", "rps=", "p50_ms=", "p99_ms=", "p999_ms=", "errors=", "percentile(99.9)"} {
		if !strings.Contains(wrkScript, k) {
			t.Errorf("wrk.lua lacks %q", k)
		}
	}
	if !strings.Contains(wrkScript, strings.TrimSpace(wrkLinePrefix)) {
		t.Error("wrk.lua does not print the line prefix parseWrk looks for")
	}
}

func TestMedian(t *testing.T) {
	for _, c := range []struct {
		in   []float64
		want float64
	}{
		{nil, 0},
		{[]float64{5}, 5},
		{[]float64{3, 1, 2}, 2},
		{[]float64{4, 1, 3, 2}, 2.5},
		{[]float64{10, 10, 1000}, 10},
	} {
		in := slices.Clone(c.in)
		if got := median(c.in); got != c.want {
			t.Errorf("median(%v) = %v, want %v", c.in, got, c.want)
		}
		if !slices.Equal(in, c.in) {
			t.Errorf("median reordered its input: %v", c.in)
		}
	}
}

func TestRatios(t *testing.T) {
	rs := []result{
		{Target: targetDirect, Round: 1, RPS: 40000}, {Target: targetDirect, Round: 2, RPS: 30000}, {Target: targetDirect, Round: 3, RPS: 50000},
		{Target: targetNginx, Round: 1, RPS: 20000, P99: 2, CPU: 20}, {Target: targetNginx, Round: 2, RPS: 25000, P99: 3, CPU: 25}, {Target: targetNginx, Round: 3, RPS: 1, P99: 9, CPU: 900},
		{Target: targetCaddy, Round: 1, RPS: 10000}, {Target: targetCaddy, Round: 2, RPS: 12000}, {Target: targetCaddy, Round: 3, RPS: 11000},
		{Target: targetMemory, Round: 1, RPS: 15000, P99: 4, Errors: 1, CPU: 40, RSS: 20}, {Target: targetMemory, Round: 2, RPS: 16000, P99: 5, CPU: 30, RSS: 22},
		{Target: targetMemory, Round: 3, RPS: 14000, P99: 6, Errors: 2, CPU: 35, RSS: 21},
		{Target: targetRedis, Round: 1, RPS: 12000}, {Target: targetRedis, Round: 2, RPS: 12000}, {Target: targetRedis, Round: 3, RPS: 99999},
		{Target: targetQuotas, Round: 1, RPS: 9000}, {Target: targetQuotas, Round: 2, RPS: 6000},
	}
	got := computeRatios(rs)
	want := ratios{
		MemoryOverNginx:    0.75,
		MemoryOverNginxCPU: 1.4, // 35 µs over 25 µs: CPU per request, lower is better
		MemoryOverCaddy:    1.364,
		RedisOverMemory:    0.8,
		QuotasOverMemory:   0.5, // the median of two rounds is their mean
		MemoryOverDirect:   0.375,
	}
	if got != want {
		t.Errorf("computeRatios = %+v, want %+v", got, want)
	}
	s := summarize(rs)[targetMemory]
	if s.RPS != 15000 || s.P99 != 5 || s.Errors != 3 || s.Rounds != 3 || s.CPU != 35 || s.RSS != 21 || s.MinRPS != 14000 || s.MaxRPS != 16000 {
		t.Errorf("summary of wxproxy-memory = %+v", s)
	}
	if got := computeRatios(rs[:3]); got != (ratios{}) {
		t.Errorf("ratios with missing targets = %+v, want zeros (no Inf/NaN in JSON)", got)
	}
	if got := ratio(2, 3); got != 0.667 {
		t.Errorf("ratio(2, 3) = %v, want 0.667", got)
	}
	if got := perRequestMicros(1500*time.Millisecond, 100000); got != 15 {
		t.Errorf("perRequestMicros(1.5s, 100000) = %v, want 15", got)
	}
	if got := perRequestMicros(time.Second, 0); got != 0 {
		t.Errorf("perRequestMicros without requests = %v, want 0", got)
	}
}

// TestReportJSON pins the JSON shape of SPEC §10.
func TestReportJSON(t *testing.T) {
	rep := report{Machine: "m", Results: []result{{Target: targetNginx, Round: 1, RPS: 1.5, P50: 0.1, P99: 0.2, P999: 0.3, CPU: 12.5, RSS: 3.2, Errors: 4}}}
	data, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"machine":"m","results":[{"target":"nginx","round":1,"rps":1.5,"p50_ms":0.1,"p99_ms":0.2,"p999_ms":0.3,"cpu_us_per_req":12.5,"rss_mb":3.2,"errors":4}],` +
		`"ratios":{"wxproxy-memory/nginx":0,"wxproxy-memory/nginx-cpu":0,"wxproxy-memory/caddy":0,"wxproxy-redis/wxproxy-memory":0,"wxproxy-redis-quotas/wxproxy-memory":0,"wxproxy-memory/direct":0}}`
	if string(data) != want {
		t.Errorf("JSON:\n got %s\nwant %s", data, want)
	}
	// With -idle, the idle results follow.
	rep.Idle = []idleResult{{Target: targetMemory, Connections: 10, Opened: 10, StillOpen: 9, RSSBefore: 10, RSS: 11, KBPerConn: 102.4, notes: []string{"x"}}}
	data, err = json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	wantIdle := `,"idle":[{"target":"wxproxy-memory","connections":10,"opened":10,"still_open":9,"rss_mb_before":10,"rss_mb":11,"kb_per_conn":102.4}]}`
	if !strings.HasSuffix(string(data), wantIdle) {
		t.Errorf("JSON with idle:\n got %s\nwant suffix %s", data, wantIdle)
	}
}

// TestTargets pins the targets of SPEC §10.
func TestTargets(t *testing.T) {
	want := []string{"direct", "nginx", "haproxy", "caddy", "wxproxy-memory", "wxproxy-redis", "wxproxy-redis-quotas"}
	if !slices.Equal(targetOrder, want) {
		t.Errorf("targetOrder = %q, want %q", targetOrder, want)
	}
	if apiName+"?openid=o1" != apiPath {
		t.Errorf("apiName %q is not apiPath %q without its query", apiName, apiPath)
	}
	apps := []string{appMemory, appRedis, appQuotas}
	slices.Sort(apps)
	if len(slices.Compact(apps)) != 3 {
		t.Error("two wxproxy targets share an appid: their classic token fetches would invalidate each other")
	}
}

func TestNginxConf(t *testing.T) {
	conf, err := renderNginxConf(nginxConf{Root: true, Workers: "1", WorkerConnections: 11152, RlimitNofile: 12176, Dir: "/tmp/x", Listen: "127.0.0.1:81", Upstream: "127.0.0.1:82", Token: "tok+/="})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"user root;",
		"worker_processes 1;",
		"worker_rlimit_nofile 12176;",
		"worker_connections 11152;",
		"daemon off;",
		"pid /tmp/x/nginx.pid;",
		"access_log off;",
		"server 127.0.0.1:82;",
		"keepalive 128;",
		"listen 127.0.0.1:81;",
		"proxy_pass http://sim$uri?$args&access_token=tok%2B%2F%3D;",
		"proxy_http_version 1.1;",
		`proxy_set_header Connection "";`,
	} {
		if !strings.Contains(conf, want) {
			t.Errorf("nginx.conf lacks %q:\n%s", want, conf)
		}
	}
	conf, _ = renderNginxConf(nginxConf{Workers: "1", Dir: "/d", Listen: "a", Upstream: "b", Token: "t"})
	if strings.Contains(conf, "user ") {
		t.Errorf("user directive without root:\n%s", conf)
	}
}

func TestHAProxyConf(t *testing.T) {
	conf, err := renderHAProxyConf(haproxyConf{MaxConn: 11152, Nofile: 20000, Dir: "/tmp/x", Listen: "127.0.0.1:81", Upstream: "127.0.0.1:82", Token: "tok+/="})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"nbthread 1\n",
		"maxconn 11152\n",
		"ulimit-n 20000\n",
		"pidfile /tmp/x/haproxy.pid",
		"mode http",
		"option http-keep-alive",
		"http-reuse always",
		"timeout http-keep-alive 120s",
		"bind 127.0.0.1:81\n",
		// the token URL-escaped, and % doubled for HAProxy's log-format strings
		"http-request set-query %[query]&access_token=tok%%2B%%2F%%3D\n",
		"http-request set-header X-Request-Id %[uuid]",
		"server sim 127.0.0.1:82\n",
	} {
		if !strings.Contains(conf, want) {
			t.Errorf("haproxy.cfg lacks %q:\n%s", want, conf)
		}
	}
	for _, bad := range []string{"\n    log ", "nbproc", "option httpclose", "{{", "<no value>"} {
		if strings.Contains(conf, bad) {
			t.Errorf("haproxy.cfg has %q:\n%s", bad, conf)
		}
	}
	if !strings.Contains(conf, "\n    no strict-limits\n") {
		t.Errorf("maxconn 11152 needs more than ulimit-n 20000 but haproxy.cfg lacks no strict-limits:\n%s", conf)
	}
	conf, _ = renderHAProxyConf(haproxyConf{MaxConn: 1, Dir: "/d", Listen: "a", Upstream: "b", Token: "t"})
	if strings.Contains(conf, "ulimit-n") || strings.Contains(conf, "strict-limits") {
		t.Errorf("ulimit-n or strict-limits without Nofile:\n%s", conf)
	}
	conf, _ = renderHAProxyConf(haproxyConf{MaxConn: 1152, Nofile: 20000, Dir: "/d", Listen: "a", Upstream: "b", Token: "t"})
	if strings.Contains(conf, "strict-limits") {
		t.Errorf("no strict-limits though ulimit-n suffices:\n%s", conf)
	}
}

func TestCaddyfile(t *testing.T) {
	conf, err := renderCaddyfile(caddyConf{Dir: "/tmp/x", Listen: "127.0.0.1:81", Upstream: "127.0.0.1:82", Token: "tok+/={}"})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"\tadmin off\n",
		"\tauto_https off\n",
		"storage file_system /tmp/x/data",
		"level WARN",
		"\nhttp://127.0.0.1:81 {\n",
		"\tbind 127.0.0.1\n", // loopback only, not every interface
		// braces would be placeholders: the token is URL-escaped
		"rewrite * {path}?{query}&access_token=tok%2B%2F%3D%7B%7D\n",
		"reverse_proxy 127.0.0.1:82 {",
		"header_up X-Request-Id {http.request.uuid}",
		"keepalive_idle_conns_per_host 128",
	} {
		if !strings.Contains(conf, want) {
			t.Errorf("Caddyfile lacks %q:\n%s", want, conf)
		}
	}
	for _, bad := range []string{"\n\tlog {\n\t\toutput file", "https://", "<no value>"} {
		if strings.Contains(conf, bad) {
			t.Errorf("Caddyfile has %q:\n%s", bad, conf)
		}
	}
	if _, err := renderCaddyfile(caddyConf{Listen: "no-port"}); err == nil {
		t.Error("renderCaddyfile accepted a listen address without a port")
	}
	// Every template field is set: missingkey=error and no <no value>.
	if _, err := render("x", "{{.Nope}}", caddyConf{}); err == nil {
		t.Error("render accepted an unknown field")
	}
}

func TestWxproxyConfig(t *testing.T) {
	cfg := wxproxyConfig("127.0.0.1:1", "127.0.0.1:2", appRedis, "http://127.0.0.1:3", `{kind: redis, redis: {url: "redis://x/0", key_prefix: "bench:", replicas_hint: 1}}`, 0)
	for _, want := range []string{
		"listen: 127.0.0.1:1\n", "admin: {listen: 127.0.0.1:2}", "log: {format: json, level: warn}",
		"appid: " + appRedis, "secret: ${" + secretEnv + "}", "token_mode: classic", "upstream: http://127.0.0.1:3",
		`key_prefix: "bench:"`, "replicas_hint: 1",
	} {
		if !strings.Contains(cfg, want) {
			t.Errorf("config lacks %q:\n%s", want, cfg)
		}
	}
	if strings.Contains(cfg, appSecret) {
		t.Error("the secret is written into the config file; it must come from the environment")
	}
	if strings.Contains(cfg, "quotas") {
		t.Errorf("quotas without perMinute:\n%s", cfg)
	}
	cfg = wxproxyConfig("127.0.0.1:1", "127.0.0.1:2", appQuotas, "http://127.0.0.1:3", "{kind: memory}", 600)
	if want := "    secret: ${" + secretEnv + "}\n    token_mode: classic\n    upstream: http://127.0.0.1:3\n    quotas:\n      apis:\n        /cgi-bin/user/info: {per_minute: 600}\n"; !strings.HasSuffix(cfg, want) {
		t.Errorf("config with a quota:\n%s\nwant suffix:\n%s", cfg, want)
	}
}

func TestParseOptions(t *testing.T) {
	o, err := parseOptions(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o != (options{duration: 10 * time.Second, connections: 64, rounds: 3, out: "bench-results.json"}) {
		t.Errorf("defaults = %+v", o)
	}
	o, err = parseOptions([]string{"-duration", "1500ms", "-connections", "8", "-rounds", "1", "-idle", "10000", "-out", "x.json"}, io.Discard)
	if err != nil || o.duration != 2*time.Second || o.connections != 8 || o.rounds != 1 || o.idle != 10000 || o.out != "x.json" {
		t.Errorf("parseOptions = %+v, %v", o, err)
	}
	if got := nofileNeed(o); got != 10000+4*8+8192 {
		t.Errorf("nofileNeed = %d", got)
	}
	for _, bad := range [][]string{{"-duration", "100ms"}, {"-connections", "0"}, {"-rounds", "0"}, {"-idle", "-1"}, {"-idle", "30000"}, {"extra"}} {
		if _, err := parseOptions(bad, io.Discard); err == nil {
			t.Errorf("parseOptions(%q) succeeded", bad)
		}
	}
}

func TestParseStat(t *testing.T) {
	line := "1234 (nginx: worker (x)) S 1200 1200 1200 0 -1 4194624 100 0 0 0 250 75 0 0 20 0 1 0 5000 1000 100\n"
	pg, ticks, ok := parseStat(line)
	if !ok || pg != 1200 || ticks != 325 {
		t.Errorf("parseStat = %d, %d, %v; want 1200, 325, true", pg, ticks, ok)
	}
	if _, _, ok := parseStat("garbage"); ok {
		t.Error("parseStat accepted garbage")
	}
	// A command name with spaces and a ") " inside: fields are counted
	// after the last ')'.
	line = "42 (a) b (c) ) R 7 9 9 0 -1 0 0 0 0 0 1234567 89 0 0 20 0 2 0 1 2 3\n"
	if pg, ticks, ok := parseStat(line); !ok || pg != 9 || ticks != 1234656 {
		t.Errorf("parseStat(odd name) = %d, %d, %v; want 9, 1234656, true", pg, ticks, ok)
	}
	if _, _, ok := parseStat("1 (x) S 1 2\n"); ok {
		t.Error("parseStat accepted a short line")
	}
}

// TestReadGroupSelf reads this test's own process group from /proc.
func TestReadGroupSelf(t *testing.T) {
	g := readGroup(syscall.Getpgrp())
	if g.procs < 1 || g.rssKB <= 0 || g.cpu < 0 {
		t.Errorf("readGroup(own group) = %+v", g)
	}
	if g := readGroup(-1); g.procs != 0 || g.cpu != 0 || g.rssKB != 0 {
		t.Errorf("readGroup(no such group) = %+v", g)
	}
}

func TestParseVmRSS(t *testing.T) {
	status := "Name:\tnginx\nVmPeak:\t  20000 kB\nVmRSS:\t   12345 kB\nRssAnon:\t 1000 kB\n"
	if kb, ok := parseVmRSS(status); !ok || kb != 12345 {
		t.Errorf("parseVmRSS = %d, %v; want 12345, true", kb, ok)
	}
	for _, bad := range []string{"Name:\tkthreadd\nState:\tS\n", "VmRSS:\t12 MB\n", "VmRSS:\tx kB\n", ""} {
		if kb, ok := parseVmRSS(bad); ok {
			t.Errorf("parseVmRSS(%q) = %d, true", bad, kb)
		}
	}
}

func TestParseCommandStats(t *testing.T) {
	info := "# Commandstats\r\n" +
		"cmdstat_evalsha:calls=1000,usec=5000,usec_per_call=5.00,rejected_calls=0,failed_calls=0\r\n" +
		"cmdstat_info:calls=7,usec=70,usec_per_call=10.00,rejected_calls=0,failed_calls=0\r\n" +
		"cmdstat_get:calls=23,usec=23,usec_per_call=1.00\r\n"
	if n, err := parseCommandStats(info); err != nil || n != 1023 {
		t.Errorf("parseCommandStats = %d, %v; want 1023 (INFO itself left out)", n, err)
	}
	if _, err := parseCommandStats("# Commandstats\r\n"); err == nil {
		t.Error("parseCommandStats accepted no cmdstat lines")
	}
	if _, err := parseCommandStats("cmdstat_get:calls=x,usec=1\r\n"); err == nil {
		t.Error("parseCommandStats accepted calls=x")
	}
}

func TestParseVersion(t *testing.T) {
	for _, c := range []struct{ out, prefix, label, want string }{
		{"HAProxy version 2.6.12-1+deb12u1 2023/12/16 - https://haproxy.org/\nStatus: long-term\n", "HAProxy version ", "haproxy ", "haproxy 2.6.12-1+deb12u1"},
		{"2.6.2\n", "", "caddy ", "caddy 2.6.2"},
		{"wrk 4.1.0 [epoll] Copyright (C) 2012 Will Glozer\nUsage: ...", "wrk ", "wrk ", "wrk 4.1.0"},
		{"Redis server v=7.0.15 sha=00000000:0 malloc=jemalloc-5.3.0 bits=64 build=1\n", "Redis server v=", "redis ", "redis 7.0.15"},
		{"sh: 1: nope: not found\n", "HAProxy version ", "haproxy ", "haproxy (unknown version)"},
	} {
		if got := parseVersion(c.out, c.prefix, c.label); got != c.want {
			t.Errorf("parseVersion(%q) = %q, want %q", c.out, got, c.want)
		}
	}
}

func TestParseHostCPU(t *testing.T) {
	got := parseHostCPU("cpu  100 5 50 1000 10 3 7 2 0 0")
	want := hostCPU{idle: 10100 * time.Millisecond, irq: 100 * time.Millisecond, steal: 20 * time.Millisecond}
	if got != want {
		t.Errorf("parseHostCPU = %+v, want %+v", got, want)
	}
	if got := parseHostCPU("cpu0 1 2 3"); got != (hostCPU{}) {
		t.Errorf("parseHostCPU(short) = %+v", got)
	}
}

func TestComplained(t *testing.T) {
	haproxy := []string{"[ALERT]", "[WARNING]"}
	fd := "[NOTICE]   (1) : haproxy version is 2.6.12\n[ALERT]    (1) : [/usr/sbin/haproxy.main()] FD limit (20000) too low for maxconn=11152/maxsock=22318. Please raise 'ulimit-n'.\n"
	if complained(fd, haproxy) {
		t.Error("the expected FD limit alert counts as a complaint")
	}
	if !complained(fd+"[WARNING]  (1) : Server sim/sim is DOWN\n", haproxy) {
		t.Error("a real warning is not a complaint")
	}
	if complained(`{"level":"warn","msg":"admin endpoint disabled"}`+"\n", []string{`"level":"error"`}) {
		t.Error("caddy's warn lines count as complaints")
	}
}
