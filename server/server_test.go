package server_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/wxproxy/wxproxy/config"
	"github.com/wxproxy/wxproxy/server"
	"github.com/wxproxy/wxproxy/wechatsim"
)

const (
	appID  = "wx5555555555555555"
	secret = "server-test-secret-0123456789"
)

func configFor(simURL string, perMinute int) string {
	return fmt.Sprintf(`
listen: 127.0.0.1:0
admin: {listen: 127.0.0.1:0, token: t0ken-for-admin}
apps:
  - name: main
    appid: %s
    secret: %s
    upstream: %s
    quotas: {apis: {/cgi-bin/message/custom/send: {per_minute: %d, burst: %d}}}
`, appID, secret, simURL, perMinute, perMinute)
}

// A Server built from a config serves the proxy and the admin port,
// applies a reload without a restart, and drains on shutdown.
func TestServeReloadShutdown(t *testing.T) {
	sim, err := wechatsim.New(wechatsim.Options{Apps: []wechatsim.App{{AppID: appID, Secret: secret, Kind: wechatsim.KindOfficial}}})
	if err != nil {
		t.Fatal(err)
	}
	simSrv := httptest.NewServer(sim)
	defer simSrv.Close()
	perMinute := 1
	load := func() (*config.Config, error) {
		return config.Parse([]byte(configFor(simSrv.URL, perMinute)), func(string) string { return "" }, ".")
	}
	cfg, err := load()
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	srv.ReloadFrom(load)
	ctx, cancel := context.WithCancel(context.Background())
	addrs := make(chan [2]net.Addr, 1)
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx, func(c, a net.Addr) { addrs <- [2]net.Addr{c, a} }) }()
	var caller, adm string
	select {
	case a := <-addrs:
		caller, adm = "http://"+a[0].String(), "http://"+a[1].String()
	case err := <-done:
		t.Fatalf("Run: %v", err)
	}
	get := func(url string) (int, string) {
		resp, err := http.Post(url, "application/json", strings.NewReader("{}"))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(adm + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("not ready in time")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if code, body := get(caller + "/cgi-bin/message/custom/send"); code != 200 || !strings.Contains(body, `"errcode":0`) {
		t.Fatalf("first call: %d %s", code, body)
	}
	if code, _ := get(caller + "/cgi-bin/message/custom/send"); code != 429 {
		t.Fatalf("second call at 1/min: %d, want 429", code)
	}
	perMinute = 100
	if restart, err := srv.Reload(); err != nil || len(restart) != 0 {
		t.Fatalf("Reload = %v, %v", restart, err)
	}
	if code, body := get(caller + "/cgi-bin/message/custom/send"); code != 200 {
		t.Fatalf("after raising the limit: %d %s", code, body)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run after shutdown: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return after shutdown")
	}
}
