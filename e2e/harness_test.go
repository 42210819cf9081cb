// Package e2e tests the real wxproxy and wechatsim binaries, built once per
// run and started as processes on free loopback ports.
package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var bins struct {
	once     sync.Once
	dir      string
	err      error
	wxproxy  string
	wechatsi string
}

// TestMain removes the built binaries after the run.
func TestMain(m *testing.M) {
	code := m.Run()
	if bins.dir != "" {
		os.RemoveAll(bins.dir)
	}
	os.Exit(code)
}

// build compiles both binaries once per test run. WXPROXY_E2E_WXPROXY
// names a prebuilt wxproxy to test instead (for example one built from an
// older commit, to show that a test fails there).
func build(tb testing.TB) {
	tb.Helper()
	bins.once.Do(func() {
		defer func() {
			if p := os.Getenv("WXPROXY_E2E_WXPROXY"); p != "" && bins.err == nil {
				bins.wxproxy = p
			}
		}()
		bins.dir, bins.err = os.MkdirTemp("", "wxproxy-e2e-")
		if bins.err != nil {
			return
		}
		bins.wxproxy = filepath.Join(bins.dir, "wxproxy")
		bins.wechatsi = filepath.Join(bins.dir, "wechatsim")
		for out, pkg := range map[string]string{bins.wxproxy: "../cmd/wxproxy", bins.wechatsi: "../cmd/wechatsim"} {
			cmd := exec.Command("go", "build", "-race", "-o", out, pkg)
			if b, err := cmd.CombinedOutput(); err != nil {
				bins.err = fmt.Errorf("go build %s: %v\n%s", pkg, err, b)
				return
			}
		}
	})
	if bins.err != nil {
		tb.Fatal(bins.err)
	}
}

// proc is a running binary whose output is captured.
type proc struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  strings.Builder
	done chan struct{}
	err  error
}

func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// start runs bin with args and calls match on every output line until it
// returns true, or fails the test after a deadline.
func start(tb testing.TB, bin string, args []string, env []string, match func(line string) bool) *proc {
	tb.Helper()
	p := &proc{cmd: exec.Command(bin, args...), done: make(chan struct{})}
	p.cmd.Env = append(os.Environ(), env...)
	pr, pw := io.Pipe()
	p.cmd.Stdout, p.cmd.Stderr = pw, pw
	if err := p.cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	matched := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		found := false
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.out.WriteString(line + "\n")
			p.mu.Unlock()
			if !found && match(line) {
				found = true
				close(matched)
			}
		}
	}()
	go func() {
		p.err = p.cmd.Wait()
		pw.Close()
		close(p.done)
	}()
	tb.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
		if tb.Failed() {
			tb.Logf("output of %s:\n%s", filepath.Base(bin), p.output())
		}
	})
	select {
	case <-matched:
	case <-p.done:
		tb.Fatalf("%s exited early: %v\n%s", filepath.Base(bin), p.err, p.output())
	case <-time.After(30 * time.Second):
		tb.Fatalf("%s did not start in time\n%s", filepath.Base(bin), p.output())
	}
	return p
}

// stop sends SIGTERM and waits for the exit.
func (p *proc) stop(tb testing.TB) error {
	tb.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		tb.Fatal(err)
	}
	select {
	case <-p.done:
		return p.err
	case <-time.After(30 * time.Second):
		tb.Fatal("process did not exit after SIGTERM")
		return nil
	}
}

// sim is a running wechatsim.
type sim struct {
	*proc
	url string
}

func startSim(tb testing.TB, args ...string) *sim {
	tb.Helper()
	build(tb)
	s := &sim{}
	s.proc = start(tb, bins.wechatsi, append([]string{"-listen", "127.0.0.1:0"}, args...), nil, func(line string) bool {
		if _, after, ok := strings.Cut(line, "wechatsim listening on "); ok {
			s.url = strings.TrimSpace(after)
			return true
		}
		return false
	})
	return s
}

// wxp is a running wxproxy serve.
type wxp struct {
	*proc
	url, admin string
}

// startProxy writes cfg (YAML) to a file and runs wxproxy serve on it.
// The listen addresses should be 127.0.0.1:0; the bound ones are read from
// the startup log line.
func startProxy(tb testing.TB, dir, cfg string, env ...string) *wxp {
	tb.Helper()
	build(tb)
	path := filepath.Join(dir, "wxproxy.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		tb.Fatal(err)
	}
	w := &wxp{}
	w.proc = start(tb, bins.wxproxy, []string{"serve", "-config", path}, env, func(line string) bool {
		var rec struct {
			Msg    string `json:"msg"`
			Listen string `json:"listen"`
			Admin  string `json:"admin"`
		}
		if json.Unmarshal([]byte(line), &rec) != nil || rec.Msg != "wxproxy listening" {
			return false
		}
		w.url, w.admin = "http://"+rec.Listen, "http://"+rec.Admin
		return true
	})
	return w
}

// get returns the status, header and body of GET url.
func get(tb testing.TB, url string) (int, http.Header, []byte) {
	tb.Helper()
	return do(tb, http.MethodGet, url, "")
}

func do(tb testing.TB, method, url, body string) (int, http.Header, []byte) {
	tb.Helper()
	req, err := http.NewRequestWithContext(context.Background(), method, url, strings.NewReader(body))
	if err != nil {
		tb.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatal(err)
	}
	return resp.StatusCode, resp.Header, b
}

// simStats reads the simulator's stats.
type simStats struct {
	TokenFetches map[string]map[string]int64 `json:"token_fetches"`
	APICalls     map[string]int64            `json:"api_calls"`
	Errcodes     map[string]int64            `json:"errcodes"`
	Duplicates   []string                    `json:"duplicate_request_ids"`
}

func (s *sim) stats(tb testing.TB) simStats {
	tb.Helper()
	_, _, b := get(tb, s.url+"/sim/stats")
	var st simStats
	if err := json.Unmarshal(b, &st); err != nil {
		tb.Fatalf("sim stats %s: %v", b, err)
	}
	return st
}

func (s *sim) fetches(tb testing.TB, appid string) int64 {
	tb.Helper()
	var n int64
	for _, v := range s.stats(tb).TokenFetches[appid] {
		n += v
	}
	return n
}

func (s *sim) post(tb testing.TB, path, body string) {
	tb.Helper()
	if code, _, b := do(tb, http.MethodPost, s.url+path, body); code != 200 {
		tb.Fatalf("POST %s: %d %s", path, code, b)
	}
}

// waitFor polls cond until it holds or fails the test after d.
func waitFor(tb testing.TB, d time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func writeFile(path, content string) error { return os.WriteFile(path, []byte(content), 0o600) }
