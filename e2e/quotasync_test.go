package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/wxproxy/wxproxy/internal/redistest"
)

// quotaUsage is one API of GET /admin/quotas.
type quotaUsage struct {
	API     string `json:"api"`
	PerDay  int    `json:"per_day"`
	UsedDay int64  `json:"used_day"`
	WeChat  *struct {
		DailyLimit int64     `json:"daily_limit"`
		Used       int64     `json:"used"`
		Remain     int64     `json:"remain"`
		ReadAt     time.Time `json:"read_at"`
	} `json:"wechat"`
}

func adminQuotas(tb testing.TB, admin string) map[string]quotaUsage {
	tb.Helper()
	_, _, b := get(tb, admin+"/admin/quotas")
	var apps []struct {
		App  string       `json:"app"`
		APIs []quotaUsage `json:"apis"`
	}
	if err := json.Unmarshal(b, &apps); err != nil || len(apps) != 1 {
		tb.Fatalf("/admin/quotas: %s (%v)", b, err)
	}
	out := map[string]quotaUsage{}
	for _, u := range apps[0].APIs {
		out[u.API] = u
	}
	return out
}

// TestQuotaSyncFleetE2E: three wxproxy replicas on Redis with
// quotas.sync_from_wechat. At startup one replica asks WeChat's
// /cgi-bin/openapi/quota/get for the fleet (once per configured API; a
// replica started later asks nothing), and every replica's /admin/quotas
// shows WeChat's figures and when they were read. WeChat's daily limit is
// adopted where per_day is 0 and not where it is configured; the fleet's
// day count is raised to the calls another client made, so the fleet lets
// through only what WeChat has left and WeChat never answers 45009.
func TestQuotaSyncFleetE2E(t *testing.T) {
	const (
		send     = "/cgi-bin/message/custom/send"
		template = "/cgi-bin/message/template/send"
	)
	rs := redistest.Start(t)
	simCfg := t.TempDir() + "/sim.yaml"
	if err := writeFile(simCfg, fmt.Sprintf("apps: [{appid: %s, secret: %s, kind: official}]\nquotas:\n  %s: {per_day: 40}\n  %s: {per_day: 100}\n",
		appID, secret, send, template)); err != nil {
		t.Fatal(err)
	}
	s := startSim(t, "-config", simCfg)

	// Another client of the account spends 25 of send's 40 today.
	code, _, b := do(t, http.MethodPost, s.url+"/cgi-bin/stable_token",
		fmt.Sprintf(`{"grant_type":"client_credential","appid":%q,"secret":%q}`, appID, secret))
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal(b, &tok); code != 200 || err != nil || tok.AccessToken == "" {
		t.Fatalf("stable_token: %d %s", code, b)
	}
	for range 25 {
		if code, _, b := do(t, http.MethodPost, s.url+send+"?access_token="+tok.AccessToken, "{}"); code != 200 || !strings.Contains(string(b), `"errcode":0`) {
			t.Fatalf("spending elsewhere: %d %s", code, b)
		}
	}

	began := time.Now().Add(-time.Second)
	cfg := fmt.Sprintf(`
listen: 127.0.0.1:0
admin: {listen: 127.0.0.1:0}
store:
  kind: redis
  redis: {url: %q, key_prefix: %q, replicas_hint: 3}
apps:
  - name: main
    appid: %s
    secret: ${E2E_SECRET}
    upstream: %s
    quotas:
      sync_from_wechat: 1h
      apis:
        %s: {per_minute: 0, per_day: 0}
        %s: {per_day: 30}
`, rs.URL, t.Name()+":", appID, s.url, send, template)
	ps := startFleet(t, 3, cfg)
	synced := func(p *wxp) bool {
		q := adminQuotas(t, p.admin)
		return q[send].WeChat != nil && q[template].WeChat != nil
	}
	for _, p := range ps {
		waitFor(t, 20*time.Second, "WeChat's figures on every replica's /admin/quotas", func() bool { return synced(p) })
	}
	// A replica that joins later adopts the figures the fleet holds.
	late := startFleet(t, 1, cfg)[0]
	waitFor(t, 20*time.Second, "WeChat's figures on the late replica", func() bool { return synced(late) })
	ps = append(ps, late)

	for i, p := range ps {
		q := adminQuotas(t, p.admin)
		u, tu := q[send], q[template]
		if u.PerDay != 40 || u.UsedDay != 25 || u.WeChat.DailyLimit != 40 || u.WeChat.Used != 25 || u.WeChat.Remain != 15 {
			t.Errorf("replica %d %s: %+v %+v; want per_day 40 adopted, used_day raised to 25", i, send, u, *u.WeChat)
		}
		if at := u.WeChat.ReadAt; at.Before(began) || at.After(time.Now()) {
			t.Errorf("replica %d: read_at %s is not within the test (%s..now)", i, at, began)
		}
		if tu.PerDay != 30 || tu.WeChat.DailyLimit != 100 || tu.UsedDay != 0 {
			t.Errorf("replica %d %s: %+v %+v; want the configured per_day 30 kept, WeChat's 100 shown", i, template, tu, *tu.WeChat)
		}
	}
	if n := s.stats(t).APICalls["/cgi-bin/openapi/quota/get"]; n != 2 {
		t.Errorf("quota/get asked %d times by a fleet of 4, want 2 (one replica, one call per configured API)", n)
	}

	// The fleet lets through what WeChat has left (15), then refuses
	// locally.
	answers := map[string]int{}
	for i := range 24 {
		code, h, b := postJSON(t, http.DefaultClient, ps[i%len(ps)].url+send, "{}")
		switch {
		case code == 200 && strings.Contains(string(b), `"errcode":0`):
			answers["ok"]++
		case code == 429 && h.Get("X-WXProxy-Error") == "quota_exhausted":
			answers["quota_exhausted"]++
		default:
			t.Fatalf("call %d: %d %s %s", i, code, h.Get("X-WXProxy-Error"), b)
		}
	}
	if answers["ok"] != 15 || answers["quota_exhausted"] != 9 {
		t.Errorf("answers %v, want 15 ok and 9 quota_exhausted", answers)
	}
	if n := s.stats(t).Errcodes["45009"]; n != 0 {
		t.Errorf("WeChat answered 45009 %d times: the fleet's count did not hold", n)
	}
}
