package token

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/wxproxy/wxproxy/wechat"
)

// backoff is the failure state of one credential: how many fetches in a
// row failed, the last error, and when the next may be tried. Waits grow
// exponentially from min to max with jitter in [d/2, d); a configuration
// errcode or a refused fetch budget waits the maximum at once, as retrying
// sooner cannot help. A backoff is safe for concurrent use once min, max
// and rand are set; the zero state is "not failing".
//
// backoff is not a scheduler: it says when trying again is allowed, and
// others decide to.
type backoff struct {
	min, max time.Duration
	rand     func() float64 // jitter source in [0,1)

	mu       sync.Mutex
	failures int
	retryAt  time.Time
	lastErr  error
}

// fail records a failed fetch at now and returns the wait it imposes and
// the number of failures in a row.
func (b *backoff) fail(now time.Time, err error) (time.Duration, int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.failures++
	d := b.max
	if _, configErr := configError(err); !configErr && !errors.Is(err, ErrFetchBudget) && b.failures < 32 {
		d = min(b.min<<(b.failures-1), b.max)
	}
	d = d/2 + time.Duration(b.rand()*float64(d/2)) // jitter in [d/2, d)
	b.retryAt, b.lastErr = now.Add(d), err
	return d, b.failures
}

// reset clears the failure state after a success.
func (b *backoff) reset() {
	b.mu.Lock()
	b.failures, b.retryAt, b.lastErr = 0, time.Time{}, nil
	b.mu.Unlock()
}

// blocked returns an error wrapping ErrUnavailable and the last failure if
// no fetch may be tried at now, else nil.
func (b *backoff) blocked(now time.Time) error {
	b.mu.Lock()
	retryAt, lastErr := b.retryAt, b.lastErr
	b.mu.Unlock()
	if now.Before(retryAt) {
		return fmt.Errorf("%w until %s: %w", ErrUnavailable, retryAt.Format(time.RFC3339), lastErr)
	}
	return nil
}

// wait returns how long until a fetch may be tried (0 if it may now) and
// whether the last fetch failed.
func (b *backoff) wait(now time.Time) (time.Duration, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if now.Before(b.retryAt) {
		return b.retryAt.Sub(now), true
	}
	return 0, b.failures > 0
}

// state returns the failure state for Status.
func (b *backoff) state() (failures int, retryAt time.Time, lastErr error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.failures, b.retryAt, b.lastErr
}

// configError returns WeChat's answer if err is a configuration errcode
// (wrong secret, IP not whitelisted, ...): no retry fixes those.
func configError(err error) (*wechat.APIError, bool) {
	var apiErr *wechat.APIError
	if !errors.As(err, &apiErr) {
		return nil, false
	}
	return apiErr, wechat.IsConfigError(apiErr.Code)
}
