package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer collects output written from several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func noEnv(string) string { return "" }

// TestDemo runs the demo as a user would and follows its printed commands.
func TestDemo(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	var stdout, stderr syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"demo", "-listen", "127.0.0.1:0", "-admin", "127.0.0.1:0"}, noEnv, &stdout, &stderr)
	}()

	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(stdout.String(), "Stop with Ctrl-C") {
		if time.Now().After(deadline) {
			t.Fatalf("demo did not print its commands:\n%s\n%s", stdout.String(), stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	out := stdout.String()
	caller := regexp.MustCompile(`caller port\s+(http://\S+)`).FindStringSubmatch(out)
	if caller == nil {
		t.Fatalf("no caller address in:\n%s", out)
	}
	// Every printed curl command that targets the proxy works with no token.
	urls := regexp.MustCompile(`curl -s[i]? (?:-X POST )?'(`+regexp.QuoteMeta(caller[1])+`[^']*)'`).FindAllStringSubmatch(out, -1)
	if len(urls) < 3 {
		t.Fatalf("found %d proxy commands in the demo output, want >= 3:\n%s", len(urls), out)
	}
	for _, u := range urls {
		resp, err := http.Get(u[1])
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var a struct {
			ErrCode     int    `json:"errcode"`
			AccessToken string `json:"access_token"`
		}
		if err := json.Unmarshal(body, &a); err != nil || a.ErrCode != 0 {
			t.Errorf("GET %s: %d %s", u[1], resp.StatusCode, body)
		}
	}
	// The printed console URL serves the status page, and its data.
	console := regexp.MustCompile(`console\s+(http://\S+/)`).FindStringSubmatch(out)
	if console == nil {
		t.Fatalf("no console URL in:\n%s", out)
	}
	for path, want := range map[string]string{"": "<title>wxproxy status</title>", "admin/status": `"name":"demo"`} {
		resp, err := http.Get(console[1] + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), want) {
			t.Errorf("GET %s%s: %d, want 200 with %q:\n%.300s", console[1], path, resp.StatusCode, want, body)
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("demo exit: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("demo did not stop")
	}
	if strings.Contains(stderr.String(), demoSecret) {
		t.Error("demo log shows the secret")
	}
}

func TestRunUsage(t *testing.T) {
	tests := []struct {
		args    []string
		wantErr bool
		out     string
	}{
		{nil, true, "usage:"},
		{[]string{"bogus"}, true, `unknown command "bogus"`},
		{[]string{"help"}, false, "usage:"},
		{[]string{"version"}, false, "wxproxy "},
		{[]string{"check", "-config", "/nonexistent/x.yaml"}, true, "/nonexistent/x.yaml"},
		{[]string{"serve", "-nope"}, true, "flag provided but not defined"},
		{[]string{"check", "extra"}, true, "unexpected argument"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var out bytes.Buffer
			err := run(t.Context(), tt.args, noEnv, &out, &out)
			if (err != nil) != tt.wantErr {
				t.Errorf("run(%q) err = %v, wantErr %v", tt.args, err, tt.wantErr)
			}
			if !strings.Contains(out.String(), tt.out) {
				t.Errorf("run(%q) output %q, want it to contain %q", tt.args, out.String(), tt.out)
			}
		})
	}
}

func TestConfigFlagDefault(t *testing.T) {
	var out bytes.Buffer
	env := func(k string) string {
		if k == "WXPROXY_CONFIG" {
			return "/from/env.yaml"
		}
		return ""
	}
	path, err := configFlag("serve", nil, env, &out)
	if err != nil || path != "/from/env.yaml" {
		t.Errorf("configFlag with $WXPROXY_CONFIG = %q, %v", path, err)
	}
	if path, _ := configFlag("serve", nil, noEnv, &out); path != "configs/wxproxy.yaml" {
		t.Errorf("configFlag default = %q, want configs/wxproxy.yaml", path)
	}
}
