package main

import (
	"encoding/json"
	"io"
	"slices"
	"strings"
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
		{Target: targetNginx, Round: 1, RPS: 20000, P99: 2}, {Target: targetNginx, Round: 2, RPS: 25000, P99: 3}, {Target: targetNginx, Round: 3, RPS: 1, P99: 9},
		{Target: targetMemory, Round: 1, RPS: 15000, P99: 4, Errors: 1}, {Target: targetMemory, Round: 2, RPS: 16000, P99: 5}, {Target: targetMemory, Round: 3, RPS: 14000, P99: 6, Errors: 2},
		{Target: targetRedis, Round: 1, RPS: 12000}, {Target: targetRedis, Round: 2, RPS: 12000}, {Target: targetRedis, Round: 3, RPS: 99999},
	}
	got := computeRatios(rs)
	want := ratios{MemoryOverNginx: 0.75, RedisOverMemory: 0.8, MemoryOverDirect: 0.375}
	if got != want {
		t.Errorf("computeRatios = %+v, want %+v", got, want)
	}
	s := summarize(rs)[targetMemory]
	if s.RPS != 15000 || s.P99 != 5 || s.Errors != 3 || s.Rounds != 3 {
		t.Errorf("summary of wxproxy-memory = %+v", s)
	}
	if got := computeRatios(rs[:3]); got != (ratios{}) {
		t.Errorf("ratios with missing targets = %+v, want zeros (no Inf/NaN in JSON)", got)
	}
	if got := ratio(2, 3); got != 0.667 {
		t.Errorf("ratio(2, 3) = %v, want 0.667", got)
	}
}

// TestReportJSON pins the JSON shape of SPEC §10.
func TestReportJSON(t *testing.T) {
	rep := report{Machine: "m", Results: []result{{Target: targetNginx, Round: 1, RPS: 1.5, P50: 0.1, P99: 0.2, P999: 0.3, Errors: 4}}}
	data, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"machine":"m","results":[{"target":"nginx","round":1,"rps":1.5,"p50_ms":0.1,"p99_ms":0.2,"p999_ms":0.3,"errors":4}],"ratios":{"wxproxy-memory/nginx":0,"wxproxy-redis/wxproxy-memory":0,"wxproxy-memory/direct":0}}`
	if string(data) != want {
		t.Errorf("JSON:\n got %s\nwant %s", data, want)
	}
}

func TestNginxConf(t *testing.T) {
	conf, err := renderNginxConf(nginxConf{Root: true, Workers: "auto", Dir: "/tmp/x", Listen: "127.0.0.1:81", Upstream: "127.0.0.1:82", Token: "tok+/="})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"user root;",
		"worker_processes auto;",
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

func TestWxproxyConfig(t *testing.T) {
	cfg := wxproxyConfig("127.0.0.1:1", "127.0.0.1:2", appRedis, "http://127.0.0.1:3", `{kind: redis, redis: {url: "redis://x/0", key_prefix: "bench:", replicas_hint: 1}}`)
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
}

func TestParseOptions(t *testing.T) {
	o, err := parseOptions(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o != (options{duration: 10 * time.Second, connections: 64, rounds: 3, out: "bench-results.json"}) {
		t.Errorf("defaults = %+v", o)
	}
	o, err = parseOptions([]string{"-duration", "1500ms", "-connections", "8", "-rounds", "1", "-out", "x.json"}, io.Discard)
	if err != nil || o.duration != 2*time.Second || o.connections != 8 || o.rounds != 1 || o.out != "x.json" {
		t.Errorf("parseOptions = %+v, %v", o, err)
	}
	for _, bad := range [][]string{{"-duration", "100ms"}, {"-connections", "0"}, {"-rounds", "0"}, {"extra"}} {
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
