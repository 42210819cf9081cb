package ratelimit

import (
	"context"
	"testing"
	"time"
)

func TestSyncWeChat(t *testing.T) {
	now := time.Date(2026, 3, 10, 10, 0, 0, 0, time.UTC)
	l := New(Settings{APIs: map[string]Limit{"/cgi-bin/x": {}, "/cgi-bin/y": {PerDay: 5}}}, Options{Now: func() time.Time { return now }})
	ctx := context.Background()
	if err := l.SyncWeChat(ctx, "/CGI-BIN/x/", WeChatQuota{DailyLimit: 10, Used: 8, ReadAt: now}); err != nil {
		t.Fatal(err)
	}
	_ = l.SyncWeChat(ctx, "/cgi-bin/y", WeChatQuota{DailyLimit: 100, Used: 1, ReadAt: now})
	_ = l.SyncWeChat(ctx, "/cgi-bin/unconfigured", WeChatQuota{DailyLimit: 1, Used: 1, ReadAt: now})
	for i := range 3 {
		err := l.Allow(ctx, "/cgi-bin/x")
		if (i < 2) != (err == nil) {
			t.Fatalf("call %d: %v (WeChat's limit 10 with 8 used elsewhere)", i, err)
		}
	}
	u, _ := l.Usage(ctx)
	got := map[string]Usage{}
	for _, x := range u {
		got[x.API] = x
	}
	if x := got["/cgi-bin/x"]; x.PerDay != 10 || x.UsedDay != 10 || x.WeChat == nil || x.WeChat.Used != 8 {
		t.Errorf("x: %+v", x)
	}
	if y := got["/cgi-bin/y"]; y.PerDay != 5 {
		t.Errorf("a configured per_day must win: %+v", y)
	}
	if len(l.WeChatQuotas()) != 2 {
		t.Errorf("figures kept for %v, want only configured APIs", l.WeChatQuotas())
	}
	// A reload keeps the adopted limit.
	l.Update(Settings{APIs: map[string]Limit{"/cgi-bin/x": {PerMinute: 100}}})
	if err := l.Allow(ctx, "/cgi-bin/x"); err == nil {
		t.Error("after reload the adopted daily limit was lost")
	}
	// Yesterday's figures raise nothing.
	l2 := New(Settings{APIs: map[string]Limit{"/cgi-bin/x": {PerDay: 3}}}, Options{Now: func() time.Time { return now }})
	_ = l2.SyncWeChat(ctx, "/cgi-bin/x", WeChatQuota{Used: 3, ReadAt: now.Add(-24 * time.Hour)})
	if err := l2.Allow(ctx, "/cgi-bin/x"); err != nil {
		t.Errorf("yesterday's used count was applied: %v", err)
	}
}
