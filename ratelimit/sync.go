package ratelimit

import (
	"context"
	"fmt"
	"maps"
	"time"

	"github.com/redis/go-redis/v9"
)

// WeChatQuota is what WeChat's /cgi-bin/openapi/quota/get said of one API:
// its daily limit, the calls used today (by every client of the app, not
// only this proxy) and the rest, and when that was read.
type WeChatQuota struct {
	DailyLimit int64     `json:"daily_limit"`
	Used       int64     `json:"used"`
	Remain     int64     `json:"remain"`
	ReadAt     time.Time `json:"read_at"`
}

// dayRaiser is a Store that can raise a day count to a floor (quota sync).
// LocalStore and RedisStore are.
type dayRaiser interface {
	RaiseDay(ctx context.Context, key, day string, used int64) error
}

var (
	_ dayRaiser = (*LocalStore)(nil)
	_ dayRaiser = (*RedisStore)(nil)
)

// SyncWeChat adopts WeChat's figures for a configured API (SPEC §14): its
// daily limit replaces a per_day of 0, and today's local count is raised to
// WeChat's used when that is higher, so a quota spent elsewhere is not
// spent again through the proxy. The figures are shown by Usage. APIs that
// are not configured are ignored (the set of synced APIs stays bounded by
// the configuration). Figures of an earlier quota day than now's raise
// nothing.
func (l *Limiter) SyncWeChat(ctx context.Context, api string, q WeChatQuota) error {
	c := l.cfg.Load()
	qk, ok := c.quotas[canonical(api)]
	if !ok || !qk.configured {
		return nil
	}
	for {
		old := l.wechat.Load()
		next := map[string]WeChatQuota{}
		if old != nil {
			for k, v := range *old {
				if cq, ok := c.quotas[k]; ok && cq.configured { // APIs no longer configured drop out
					next[k] = v
				}
			}
		}
		next[qk.api] = q
		if l.wechat.CompareAndSwap(old, &next) {
			break
		}
	}
	l.updMu.Lock()
	l.update(*l.settings.Load())
	l.updMu.Unlock()
	loc := c.s.Location
	day := l.dayOf(l.now(), loc)
	if q.Used <= 0 || q.ReadAt.In(loc).Format(time.DateOnly) != day {
		return nil
	}
	if r, ok := l.store.(dayRaiser); ok {
		return r.RaiseDay(ctx, qk.key, day, q.Used)
	}
	return nil
}

// WeChatQuotas returns the figures last adopted by SyncWeChat, by
// canonical API path.
func (l *Limiter) WeChatQuotas() map[string]WeChatQuota {
	if m := l.wechat.Load(); m != nil {
		return maps.Clone(*m)
	}
	return map[string]WeChatQuota{}
}

// adopt returns lim with WeChat's daily limit of api where lim has none.
func (l *Limiter) adopt(api string, lim Limit) Limit {
	if lim.PerDay > 0 {
		return lim
	}
	if m := l.wechat.Load(); m != nil {
		if q, ok := (*m)[api]; ok && q.DailyLimit > 0 && q.DailyLimit <= int64(^uint32(0)>>1) {
			lim.PerDay = int(q.DailyLimit)
		}
	}
	return lim
}

// RaiseDay raises the count of key on day to used if it is lower.
func (s *LocalStore) RaiseDay(_ context.Context, key, day string, used int64) error {
	b := s.bucket(key)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.day != day {
		b.day, b.dayCount = day, 0
	}
	b.dayCount = max(b.dayCount, used)
	return nil
}

var raiseScript = redis.NewScript(`
local cur = tonumber(redis.call("GET", KEYS[1]) or "0")
local used = tonumber(ARGV[1])
if used > cur then
  redis.call("SET", KEYS[1], used, "EX", 172800)
end
return 0`)

// RaiseDay raises the fleet's count of key on day to used if it is lower.
// The day key keeps the lifetime Take gives it.
func (s *RedisStore) RaiseDay(ctx context.Context, key, day string, used int64) error {
	if err := raiseScript.Run(ctx, s.rdb, []string{s.base(key) + ":d:" + day}, used).Err(); err != nil {
		return fmt.Errorf("ratelimit: redis: %w", err)
	}
	return nil
}
