package ratelimit

import (
	"context"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Store keeps the counts of Limiters. LocalStore keeps them in process; a
// Redis store shares them across a fleet of replicas. Keys are built by the
// Limiter as "name|kind|api".
type Store interface {
	// Take takes one request for key under lim: one token from its
	// per-minute bucket and one from its counter for day. It returns how long
	// the caller must wait before proceeding (at most maxWait), or a *Denied
	// without taking anything.
	Take(ctx context.Context, key string, lim Limit, now time.Time, day string, maxWait time.Duration) (time.Duration, error)
	// Remember marks key exhausted until the given time.
	Remember(ctx context.Context, key string, until time.Time, daily bool) error
	// Remembered returns until when key is marked exhausted (zero if not).
	Remembered(ctx context.Context, key string, now time.Time) (until time.Time, daily bool, err error)
	// Used returns the requests taken for key in the minute of now and on day.
	Used(ctx context.Context, key string, now time.Time, day string) (minute, daily int64, err error)
	// Keys lists the keys with state that start with prefix.
	Keys(ctx context.Context, prefix string) ([]string, error)
}

var _ Store = (*LocalStore)(nil)

// LocalStore keeps counts in process memory. It is safe for concurrent use.
type LocalStore struct {
	mu      sync.Mutex
	buckets map[string]*bucket
	memos   map[string]memo
}

type bucket struct {
	mu          sync.Mutex
	rl          *rate.Limiter
	perMinute   int
	burst       int
	day         string
	dayCount    int64
	minute      time.Time
	minuteCount int64
}

type memo struct {
	until time.Time
	daily bool
}

// NewLocalStore returns an empty LocalStore.
func NewLocalStore() *LocalStore {
	return &LocalStore{buckets: make(map[string]*bucket), memos: make(map[string]memo)}
}

// bucket returns the bucket of key. Past maxKeys distinct keys, new API keys
// share one overflow bucket per namespace and kind.
func (s *LocalStore) bucket(key string) *bucket {
	s.mu.Lock()
	defer s.mu.Unlock()
	if b, ok := s.buckets[key]; ok {
		return b
	}
	if len(s.buckets) >= maxKeys {
		if i := strings.LastIndexByte(key, '|'); i >= 0 {
			key = key[:i+1] + "(other)"
		}
		if b, ok := s.buckets[key]; ok {
			return b
		}
	}
	b := &bucket{}
	s.buckets[key] = b
	return b
}

// Take implements Store.
func (s *LocalStore) Take(_ context.Context, key string, lim Limit, now time.Time, day string, maxWait time.Duration) (time.Duration, error) {
	b := s.bucket(key)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.day != day {
		b.day, b.dayCount = day, 0
	}
	if lim.PerDay > 0 && b.dayCount >= int64(lim.PerDay) {
		return 0, &Denied{Daily: true}
	}
	var wait time.Duration
	if lim.PerMinute > 0 {
		every := rate.Limit(float64(lim.PerMinute) / 60)
		switch {
		case b.rl == nil:
			b.rl = rate.NewLimiter(every, lim.Burst)
		case b.perMinute != lim.PerMinute || b.burst != lim.Burst:
			b.rl.SetLimitAt(now, every)
			b.rl.SetBurstAt(now, lim.Burst)
		}
		b.perMinute, b.burst = lim.PerMinute, lim.Burst
		r := b.rl.ReserveN(now, 1)
		if !r.OK() {
			return 0, &Denied{RetryAfter: time.Minute}
		}
		if wait = r.DelayFrom(now); wait > maxWait {
			r.CancelAt(now)
			return 0, &Denied{RetryAfter: wait}
		}
	}
	b.dayCount++
	if m := now.Truncate(time.Minute); !b.minute.Equal(m) {
		b.minute, b.minuteCount = m, 0
	}
	b.minuteCount++
	return wait, nil
}

// Remember implements Store.
func (s *LocalStore) Remember(_ context.Context, key string, until time.Time, daily bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.memos[key] = memo{until: until, daily: daily}
	return nil
}

// Remembered implements Store.
func (s *LocalStore) Remembered(_ context.Context, key string, now time.Time) (time.Time, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.memos[key]
	if !ok {
		return time.Time{}, false, nil
	}
	if !m.until.After(now) {
		delete(s.memos, key)
		return time.Time{}, false, nil
	}
	return m.until, m.daily, nil
}

// Used implements Store.
func (s *LocalStore) Used(_ context.Context, key string, now time.Time, day string) (int64, int64, error) {
	s.mu.Lock()
	b, ok := s.buckets[key]
	s.mu.Unlock()
	if !ok {
		return 0, 0, nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	var minute, daily int64
	if b.minute.Equal(now.Truncate(time.Minute)) {
		minute = b.minuteCount
	}
	if b.day == day {
		daily = b.dayCount
	}
	return minute, daily, nil
}

// Keys implements Store.
func (s *LocalStore) Keys(_ context.Context, prefix string) ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var keys []string
	for k := range s.buckets {
		if strings.HasPrefix(k, prefix) {
			keys = append(keys, k)
		}
	}
	for k := range s.memos {
		if strings.HasPrefix(k, prefix) {
			keys = append(keys, k)
		}
	}
	return keys, nil
}
