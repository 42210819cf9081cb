package ratelimit

import (
	"context"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Store keeps the counts of Limiters. LocalStore keeps them in process; a
// Redis store shares them across a fleet of replicas. Keys are built by the
// Limiter as "name|kind|api" from its bounded set of quota keys, so a
// Store's state is bounded by the configuration, not by the paths callers
// send.
type Store interface {
	// Take takes one request for key under lim: one token from its
	// per-minute bucket and one from its counter for day. It returns how long
	// the caller must wait before proceeding (at most maxWait), or a *Denied
	// without taking anything. When lim's per-minute limit or burst differs
	// from the one key was last taken under, the change takes effect at once:
	// the bucket holds the new burst minus what was taken this minute — no
	// less than it held if the limit was raised, no more if it was lowered.
	Take(ctx context.Context, key string, lim Limit, now time.Time, day string, maxWait time.Duration) (time.Duration, error)
	// Remember marks key exhausted until the given time.
	Remember(ctx context.Context, key string, until time.Time, daily bool) error
	// Remembered returns until when key is marked exhausted (zero if not).
	Remembered(ctx context.Context, key string, now time.Time) (until time.Time, daily bool, err error)
	// Used returns the requests taken for key in the minute of now and on day.
	Used(ctx context.Context, key string, now time.Time, day string) (minute, daily int64, err error)
}

var _ Store = (*LocalStore)(nil)

// LocalStore keeps counts in process memory: a bucket per key and a memo
// per remembered key, as many as its Limiters have quota keys. It is safe
// for concurrent use.
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

// bucket returns the bucket of key.
func (s *LocalStore) bucket(key string) *bucket {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.buckets[key]
	if !ok {
		b = &bucket{}
		s.buckets[key] = b
	}
	return b
}

// Take implements Store.
func (s *LocalStore) Take(_ context.Context, key string, lim Limit, now time.Time, day string, maxWait time.Duration) (time.Duration, error) {
	if lim.Burst <= 0 {
		lim.Burst = lim.PerMinute
	}
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
		if b.rl == nil || b.perMinute != lim.PerMinute || b.burst != lim.Burst {
			b.retune(lim, now)
		}
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

// retune puts b under a new (or first) per-minute limit at once. Setting
// the rate and burst of a rate.Limiter keeps its level, so an exhausted
// bucket would stay empty after a raise; instead b gets a fresh bucket
// holding the allowance of afterChange.
func (b *bucket) retune(lim Limit, now time.Time) {
	var used int64
	if b.minute.Equal(now.Truncate(time.Minute)) {
		used = b.minuteCount
	}
	var held float64
	if b.rl != nil {
		held = b.rl.TokensAt(now)
	}
	allowance := afterChange(Limit{PerMinute: b.perMinute, Burst: b.burst}, lim, held, used)
	b.rl = rate.NewLimiter(rate.Limit(float64(lim.PerMinute)/60), lim.Burst)
	if n := lim.Burst - int(allowance); n > 0 {
		b.rl.ReserveN(now, n) // a fresh bucket is full: take what is not allowed
	}
	b.perMinute, b.burst = lim.PerMinute, lim.Burst
}

// afterChange is what a bucket holds when its per-minute limit changes
// from old (PerMinute 0: there was none) to lim, having held tokens, with
// used requests taken in this clock minute: lim's burst minus used (SPEC
// §5), but never less than it held if no part of the limit was lowered, and
// never more if any part was; always within [0, lim.Burst].
// redisTakeScript mirrors it.
func afterChange(old, lim Limit, held float64, used int64) float64 {
	allowance := float64(max(0, int64(lim.Burst)-used))
	switch {
	case old.PerMinute <= 0:
	case lim.PerMinute >= old.PerMinute && lim.Burst >= old.Burst:
		allowance = max(allowance, held)
	default:
		allowance = min(allowance, held)
	}
	return max(0, min(allowance, float64(lim.Burst)))
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
