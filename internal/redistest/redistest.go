// Package redistest starts real Redis deployments for tests, on free
// loopback ports, with no persistence, stopped at cleanup: a single server
// (Start), a 3-master Cluster (StartCluster), a master and a replica
// behind 3 Sentinels, all with passwords (StartSentinel), and a server
// that speaks only TLS with a CA made by the test (StartTLS). With
// REDIS_URL set, Start uses that server instead. When redis-server is
// missing the test is skipped, unless WXPROXY_REQUIRE_REDIS=1 (CI), where
// it fails.
//
// Every server started here has KEYS and SCAN disabled (renamed away):
// wxproxy never walks the keyspace — on a Cluster that would reach one node
// only — so a test that made it do so fails with "unknown command".
package redistest

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Server is one redis-server (or Sentinel) for one test.
type Server struct {
	URL  string // redis://127.0.0.1:PORT/0 (rediss:// for TLS)
	Addr string

	mu       sync.Mutex
	cmd      *exec.Cmd
	port     int
	dir      string
	own      bool     // started here (Stop and Start work)
	args     []string // the command line after the binary
	password string   // for the readiness check
	tls      *tls.Config
}

// need skips or fails tb when redis-server is not installed.
func need(tb testing.TB) {
	tb.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		if os.Getenv("WXPROXY_REQUIRE_REDIS") == "1" {
			tb.Fatal("redis-server not found and WXPROXY_REQUIRE_REDIS=1")
		}
		tb.Skip("redis-server not found; install it (apt-get install redis-server) or set REDIS_URL")
	}
}

// freePort returns a loopback port that was free a moment ago.
func freePort(tb testing.TB) int {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Start returns a running server. Each call gets its own server (or, with
// REDIS_URL, the shared one: use distinct key prefixes).
func Start(tb testing.TB) *Server {
	tb.Helper()
	if u := os.Getenv("REDIS_URL"); u != "" {
		opt, err := redis.ParseURL(u)
		if err != nil {
			tb.Fatalf("REDIS_URL: %v", err)
		}
		return &Server{URL: u, Addr: opt.Addr}
	}
	need(tb)
	return launch(tb, nil, "", nil)
}

// noScan disables the commands that walk the keyspace.
var noScan = []string{"--rename-command", "KEYS", "", "--rename-command", "SCAN", ""}

// launch starts a redis-server on a free port with extra arguments (and,
// with conf, a configuration file written first: Sentinel rewrites it).
func launch(tb testing.TB, extra []string, password string, tc *tls.Config) *Server {
	tb.Helper()
	port := freePort(tb)
	s := &Server{port: port, dir: tb.TempDir(), own: true, password: password, tls: tc}
	s.Addr = "127.0.0.1:" + strconv.Itoa(port)
	s.URL = "redis://" + s.Addr + "/0"
	s.args = append([]string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", s.dir, "--loglevel", "warning"}, noScan...)
	s.args = append(s.args, extra...)
	if err := s.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(s.Stop)
	return s
}

// Start (re)starts a server that Stop stopped, on the same port.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.own || s.cmd != nil {
		return nil
	}
	cmd := exec.Command("redis-server", s.args...)
	cmd.Dir = s.dir
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("redistest: start redis-server: %w", err)
	}
	s.cmd = cmd
	c := redis.NewClient(&redis.Options{Addr: s.Addr, Password: s.password, TLSConfig: s.tls, MaxRetries: -1})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redistest: redis-server on %s did not answer: %w", s.Addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop kills the server (a simulated outage); Start brings it back empty.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
	s.cmd = nil
}

// Client returns a client for the server, closed at cleanup. Like
// wxproxy's own, it fails fast when the server is gone.
func (s *Server) Client(tb testing.TB) *redis.Client {
	tb.Helper()
	opt, err := redis.ParseURL(s.URL)
	if err != nil {
		tb.Fatal(err)
	}
	opt.Password, opt.TLSConfig = s.password, s.tls
	opt.MaxRetries, opt.DialerRetries = 1, 1
	opt.DialTimeout, opt.ReadTimeout, opt.WriteTimeout = 500*time.Millisecond, 500*time.Millisecond, 500*time.Millisecond
	c := redis.NewClient(opt)
	tb.Cleanup(func() { c.Close() })
	return c
}

// poll calls cond every 50ms until it holds, or returns an error naming
// what after d.
func poll(d time.Duration, what string, cond func() bool) error {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("redistest: timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}
