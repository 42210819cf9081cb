package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/wxproxy/wxproxy/config"
	"github.com/wxproxy/wxproxy/internal/redistest"
	"github.com/wxproxy/wxproxy/server"
	"github.com/wxproxy/wxproxy/wechatsim"
)

const sendAPI = "/cgi-bin/message/custom/send"

// running is a Server started by startServer.
type running struct{ caller, admin string }

func startServer(tb testing.TB, cfgText string) running {
	tb.Helper()
	cfg, err := config.Parse([]byte(cfgText), func(string) string { return "" }, ".")
	if err != nil {
		tb.Fatal(err)
	}
	srv, err := server.New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	addrs := make(chan [2]net.Addr, 1)
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx, func(c, a net.Addr) { addrs <- [2]net.Addr{c, a} }) }()
	tb.Cleanup(func() { cancel(); <-done })
	select {
	case a := <-addrs:
		return running{"http://" + a[0].String(), "http://" + a[1].String()}
	case err := <-done:
		tb.Fatalf("Run: %v", err)
	}
	return running{}
}

// usage is one API of GET /admin/quotas.
type usage struct {
	API     string `json:"api"`
	PerDay  int    `json:"per_day"`
	UsedDay int64  `json:"used_day"`
	WeChat  *struct {
		DailyLimit int64     `json:"daily_limit"`
		Used       int64     `json:"used"`
		ReadAt     time.Time `json:"read_at"`
	} `json:"wechat"`
}

func (r running) quota(tb testing.TB, api string) usage {
	tb.Helper()
	resp, err := http.Get(r.admin + "/admin/quotas")
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	var out []struct {
		APIs []usage `json:"apis"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		tb.Fatal(err)
	}
	for _, u := range out[0].APIs {
		if u.API == api {
			return u
		}
	}
	return usage{}
}

func waitUntil(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// spendElsewhere makes n calls of api straight to the simulator, as another
// client of the same account would.
func spendElsewhere(tb testing.TB, simURL string, n int) {
	tb.Helper()
	resp, err := http.Get(simURL + "/cgi-bin/token?grant_type=client_credential&appid=" + appID + "&secret=" + secret)
	if err != nil {
		tb.Fatal(err)
	}
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&tok)
	resp.Body.Close()
	for range n {
		resp, err := http.Post(simURL+sendAPI+"?access_token="+url.QueryEscape(tok.AccessToken), "application/json", strings.NewReader("{}"))
		if err != nil {
			tb.Fatal(err)
		}
		resp.Body.Close()
	}
}

func syncConfig(simURL, store string) string {
	return fmt.Sprintf(`
listen: 127.0.0.1:0
admin: {listen: 127.0.0.1:0}
%s
apps:
  - name: main
    appid: %s
    secret: %s
    upstream: %s
    quotas: {sync_from_wechat: 1m, apis: {%s: {per_minute: 0, per_day: 0}}}
`, store, appID, secret, simURL, sendAPI)
}

// TestQuotaSync: at startup wxproxy reads WeChat's figures, adopts its
// daily limit where per_day is 0, and counts the calls made elsewhere, so
// it refuses locally once WeChat's quota is spent.
func TestQuotaSync(t *testing.T) {
	sim, err := wechatsim.New(wechatsim.Options{Apps: []wechatsim.App{{AppID: appID, Secret: secret}},
		Quotas: map[string]wechatsim.Quota{sendAPI: {PerDay: 40}}})
	if err != nil {
		t.Fatal(err)
	}
	simSrv := httptest.NewServer(sim)
	defer simSrv.Close()
	spendElsewhere(t, simSrv.URL, 30)
	r := startServer(t, syncConfig(simSrv.URL, ""))
	waitUntil(t, "WeChat's figures on /admin/quotas", func() bool { return r.quota(t, sendAPI).WeChat != nil })
	u := r.quota(t, sendAPI)
	if u.PerDay != 40 || u.UsedDay != 30 || u.WeChat.DailyLimit != 40 || u.WeChat.Used != 30 || u.WeChat.ReadAt.IsZero() {
		t.Fatalf("after sync: %+v %+v; want per_day 40 adopted, used_day raised to 30", u, *u.WeChat)
	}
	ok := 0
	for range 12 {
		resp, err := http.Post(r.caller+sendAPI, "application/json", strings.NewReader("{}"))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		switch {
		case resp.StatusCode == 200:
			ok++
		case resp.StatusCode != 429 || resp.Header.Get("X-WXProxy-Error") != "quota_exhausted":
			t.Fatalf("HTTP %d %s", resp.StatusCode, b)
		}
	}
	if ok != 10 {
		t.Errorf("%d calls passed, want the 10 WeChat had left", ok)
	}
	if n := sim.Stats().Errcodes[45009]; n != 0 {
		t.Errorf("WeChat answered 45009 %d times: the local count did not hold", n)
	}
}

// TestQuotaSyncFleet: in Redis mode one replica asks WeChat for the fleet
// and every replica adopts the figures.
func TestQuotaSyncFleet(t *testing.T) {
	rds := redistest.Start(t)
	sim, err := wechatsim.New(wechatsim.Options{Apps: []wechatsim.App{{AppID: appID, Secret: secret}},
		Quotas: map[string]wechatsim.Quota{sendAPI: {PerDay: 1000}}})
	if err != nil {
		t.Fatal(err)
	}
	simSrv := httptest.NewServer(sim)
	defer simSrv.Close()
	spendElsewhere(t, simSrv.URL, 7)
	store := fmt.Sprintf("store: {kind: redis, redis: {url: %q, key_prefix: %q}}", rds.URL, "qs"+fmt.Sprint(time.Now().UnixNano())+":")
	a := startServer(t, syncConfig(simSrv.URL, store))
	b := startServer(t, syncConfig(simSrv.URL, store))
	for _, r := range []running{a, b} {
		waitUntil(t, "figures on every replica", func() bool {
			u := r.quota(t, sendAPI)
			return u.WeChat != nil && u.PerDay == 1000 && u.UsedDay >= 7
		})
	}
	if n := sim.Stats().APICalls["/cgi-bin/openapi/quota/get"]; n != 1 {
		t.Errorf("quota/get called %d times by a fleet of 2, want 1", n)
	}
}
