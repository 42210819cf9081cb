package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wxproxy/wxproxy/failover"
	"github.com/wxproxy/wxproxy/ratelimit"
	"github.com/wxproxy/wxproxy/wechat"
)

// quotaSync reconciles an app's quotas with WeChat's own figures
// (quotas.sync_from_wechat, SPEC §14): every interval, and at startup, it
// asks /cgi-bin/openapi/quota/get for each configured API and hands the
// answers to the app's limiter (ratelimit.Limiter.SyncWeChat). With Redis
// one replica asks for the fleet — the one that wins a short lock — and
// shares the figures in a hash every replica adopts.
type quotaSync struct {
	log      *slog.Logger
	app      *appState
	client   *http.Client
	interval func() time.Duration // in force (reload may change it); 0 = off
	now      func() time.Time
	// onFailover, if set, is told when a quota/get moves from one upstream
	// to another (for wxproxy_failovers_total).
	onFailover func(from, to string)

	rdb     redis.UniversalClient // nil = this replica alone
	prefix  string
	replica string
}

// maxQuotaAnswer bounds what is read of a quota/get answer.
const maxQuotaAnswer = 64 << 10

// quotaSyncIdle is how often a switched-off sync looks whether a reload
// switched it on.
const quotaSyncIdle = time.Minute

// quotaAdoptEvery is how often a replica of a fleet adopts the figures
// another replica fetched.
const quotaAdoptEvery = 5 * time.Second

func (q *quotaSync) run(ctx context.Context) {
	var next time.Time // when this replica next tries to fetch
	for {
		d, wait := q.interval(), quotaSyncIdle
		if d > 0 {
			if now := q.now(); !now.Before(next) {
				q.fetchRound(ctx, d)
				next = now.Add(d)
			}
			q.adoptShared(ctx)
			wait = d
			if q.rdb != nil {
				wait = min(d, quotaAdoptEvery)
			}
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

func (q *quotaSync) keys() (figures, lock string) {
	k := q.prefix + "qsync:{" + q.app.cfg.Name + "}"
	return k, k + ":lock"
}

// fetchRound asks WeChat for every configured API's figures and adopts
// them. In a fleet it does so only if it wins the round's lock, and shares
// what it read.
func (q *quotaSync) fetchRound(ctx context.Context, every time.Duration) {
	apis := slices.Sorted(maps.Keys(q.app.limiter.Settings().APIs))
	if len(apis) == 0 {
		return
	}
	figures, lock := q.keys()
	if q.rdb != nil {
		// The lock lasts about one round: the replica that wins it asks
		// WeChat for the fleet, the others adopt what it wrote.
		won, err := q.rdb.SetNX(ctx, lock, q.replica, max(every-time.Second, time.Second)).Result()
		if err != nil {
			q.log.Warn("quota sync: redis unavailable; asking WeChat from this replica", "app", q.app.cfg.Name, "err", err)
		} else if !won {
			return
		}
	}
	for _, api := range apis {
		w, ok := q.fetch(ctx, api)
		if !ok {
			continue
		}
		q.adopt(ctx, api, w)
		if q.rdb != nil {
			b, _ := json.Marshal(w)
			if q.rdb.HSet(ctx, figures, api, b).Err() == nil {
				q.rdb.Expire(ctx, figures, 2*every+time.Minute)
			}
		}
	}
}

// adoptShared adopts the figures the fleet's last fetch shared.
func (q *quotaSync) adoptShared(ctx context.Context) {
	if q.rdb == nil {
		return
	}
	figures, _ := q.keys()
	all, err := q.rdb.HGetAll(ctx, figures).Result()
	if err != nil {
		return
	}
	for api, v := range all { // SyncWeChat ignores APIs that are not configured
		var w ratelimit.WeChatQuota
		if json.Unmarshal([]byte(v), &w) == nil && !q.app.limiter.WeChatQuotas()[strings.ToLower(api)].ReadAt.Equal(w.ReadAt) {
			q.adopt(ctx, api, w)
		}
	}
}

func (q *quotaSync) adopt(ctx context.Context, api string, w ratelimit.WeChatQuota) {
	if err := q.app.limiter.SyncWeChat(ctx, api, w); err != nil {
		q.log.Warn("quota sync: could not raise the day count", "app", q.app.cfg.Name, "api", api, "err", err)
	}
}

// fetch asks WeChat for one API's figures; failures are logged, never
// fatal.
func (q *quotaSync) fetch(ctx context.Context, api string) (ratelimit.WeChatQuota, bool) {
	name := q.app.cfg.Name
	tok, err := q.app.cache.Get(ctx)
	if err != nil {
		q.log.Warn("quota sync: no access_token", "app", name, "err", err)
		return ratelimit.WeChatQuota{}, false
	}
	body, _ := json.Marshal(map[string]string{"cgi_path": api})
	var w ratelimit.WeChatQuota
	call := func(base string) (failover.Outcome, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost,
			strings.TrimRight(base, "/")+"/cgi-bin/openapi/quota/get?access_token="+url.QueryEscape(tok.Value), bytes.NewReader(body))
		if err != nil {
			return failover.Neutral, err
		}
		req.Header.Set("Content-Type", "application/json")
		client := *q.client
		client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
		resp, err := client.Do(req)
		if err != nil {
			return failover.Failure, wechat.RedactError(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(io.LimitReader(resp.Body, maxQuotaAnswer))
		if err != nil {
			return failover.Failure, wechat.RedactError(err)
		}
		if resp.StatusCode != http.StatusOK {
			o := failover.Success
			if resp.StatusCode >= 500 {
				o = failover.Failure
			}
			return o, fmt.Errorf("HTTP %d", resp.StatusCode)
		}
		if code, ok := wechat.ScanErrcode(b); ok && code != wechat.CodeOK {
			o := failover.Success
			if code == wechat.CodeSystemError {
				o = failover.Failure
			}
			return o, &wechat.APIError{Code: code}
		}
		var a struct {
			Quota struct {
				DailyLimit int64 `json:"daily_limit"`
				Used       int64 `json:"used"`
				Remain     int64 `json:"remain"`
			} `json:"quota"`
		}
		if err := json.Unmarshal(b, &a); err != nil {
			return failover.Success, errors.New("answer is not quota/get's JSON")
		}
		if a.Quota.DailyLimit < 0 || a.Quota.Used < 0 {
			return failover.Success, errors.New("answer has negative figures")
		}
		w = ratelimit.WeChatQuota{DailyLimit: a.Quota.DailyLimit, Used: a.Quota.Used, Remain: a.Quota.Remain, ReadAt: q.now()}
		return failover.Success, nil
	}
	if len(q.app.cfg.Failover) > 0 {
		err = q.app.upstreams.Do(call, func(from, to int) {
			if q.onFailover != nil {
				q.onFailover(q.app.upstreams.URL(from), q.app.upstreams.URL(to))
			}
		})
	} else {
		_, err = call(q.app.cfg.Upstream)
	}
	if err != nil {
		q.log.Warn("quota sync: quota/get failed", "app", name, "api", api, "err", err)
		return ratelimit.WeChatQuota{}, false
	}
	return w, true
}
