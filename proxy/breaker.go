package proxy

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sony/gobreaker/v2"
)

// BreakerSettings configure an app's circuit breaker.
type BreakerSettings struct {
	ConsecutiveFailures uint32        // trip after this many failures in a row
	FailureRatio        float64       // ... or this share of failures
	MinRequests         uint32        // ... among at least this many requests in Interval
	Interval            time.Duration // closed-state window; 0 = counts never cleared
	OpenTimeout         time.Duration // open this long, then half-open
	HalfOpenRequests    uint32        // probes while half-open
}

// errFailure is what the proxy reports to gobreaker for a failed call:
// a transport error, a timeout, HTTP 5xx or errcode -1. Business errcodes
// are successes: WeChat answered.
var errFailure = errors.New("proxy: upstream failure")

// Breaker guards one app's upstream with a local gobreaker
// TwoStepCircuitBreaker: it never holds a lock across the upstream call.
// Update swaps in new settings (and a fresh breaker) on reload. It is safe
// for concurrent use.
type Breaker struct {
	app      string
	now      func() time.Time
	onChange func(app string, to gobreaker.State)

	cb       atomic.Pointer[gobreaker.TwoStepCircuitBreaker[struct{}]]
	settings atomic.Pointer[BreakerSettings]

	mu      sync.Mutex
	since   time.Time         // when the state last changed
	pending []gobreaker.State // changes not yet reported to onChange

	hasPending atomic.Bool // pending is not empty
	notifyMu   sync.Mutex  // keeps onChange calls in order
}

// NewBreaker returns a closed breaker for app. onChange, if set, is called
// on every state change.
func NewBreaker(app string, s BreakerSettings, onChange func(app string, to gobreaker.State)) *Breaker {
	b := &Breaker{app: app, now: time.Now, onChange: onChange, since: time.Now()}
	b.Update(s)
	return b
}

// Update applies new settings. Unchanged settings keep the current breaker
// and its state; changed ones start a fresh, closed breaker.
func (b *Breaker) Update(s BreakerSettings) {
	if cur := b.settings.Load(); cur != nil && *cur == s {
		return
	}
	b.settings.Store(&s)
	st := gobreaker.Settings{
		Name:        b.app,
		MaxRequests: s.HalfOpenRequests,
		Interval:    s.Interval,
		Timeout:     s.OpenTimeout,
		ReadyToTrip: func(c gobreaker.Counts) bool {
			if s.ConsecutiveFailures > 0 && c.ConsecutiveFailures >= s.ConsecutiveFailures {
				return true
			}
			return s.MinRequests > 0 && c.Requests >= s.MinRequests && float64(c.TotalFailures) >= s.FailureRatio*float64(c.Requests)
		},
		// gobreaker calls this with its mutex held: only record the
		// change here; onChange runs later, outside it (notify).
		OnStateChange: func(_ string, _, to gobreaker.State) { b.changed(to) },
		// A caller that went away says nothing about WeChat.
		IsExcluded: func(err error) bool { return errors.Is(err, context.Canceled) },
	}
	old := b.cb.Swap(gobreaker.NewTwoStepCircuitBreaker[struct{}](st))
	if old != nil && old.State() != gobreaker.StateClosed {
		b.changed(gobreaker.StateClosed)
	}
	b.notify()
}

// changed records a state change; it may run under gobreaker's mutex.
func (b *Breaker) changed(to gobreaker.State) {
	b.mu.Lock()
	b.since = b.now()
	if b.onChange != nil {
		b.pending = append(b.pending, to)
		b.hasPending.Store(true)
	}
	b.mu.Unlock()
}

// notify reports recorded state changes to onChange, in order, outside
// gobreaker's mutex, so a slow onChange (a log write) never stalls the
// requests of the app. It costs one atomic load when nothing changed.
func (b *Breaker) notify() {
	if !b.hasPending.Load() {
		return
	}
	b.notifyMu.Lock()
	defer b.notifyMu.Unlock()
	b.mu.Lock()
	changes := b.pending
	b.pending = nil
	b.hasPending.Store(false)
	b.mu.Unlock()
	for _, to := range changes {
		b.onChange(b.app, to)
	}
}

// Allow asks to make one upstream call. done must be called with the
// outcome: nil, errFailure, or the caller's context error; then Settle.
func (b *Breaker) Allow() (done func(error), err error) {
	done, err = b.cb.Load().Allow()
	if err != nil {
		b.notify()
	}
	return done, err
}

// halfOpen reports whether the breaker is letting probes through.
func (b *Breaker) halfOpen() bool { return b.cb.Load().State() == gobreaker.StateHalfOpen }

// Settle reports state changes caused by the last calls; the proxy calls
// it after every done.
func (b *Breaker) Settle() { b.notify() }

// BreakerState is a snapshot for the admin API.
type BreakerState struct {
	State  string
	Since  time.Time
	Counts gobreaker.Counts
}

// State returns the current state ("closed", "half-open", "open"), since
// when, and the counts of the current window.
func (b *Breaker) State() BreakerState {
	cb := b.cb.Load()
	st := cb.State() // moves open → half-open when the timeout has passed
	b.notify()
	b.mu.Lock()
	since := b.since
	b.mu.Unlock()
	return BreakerState{State: st.String(), Since: since, Counts: cb.Counts()}
}

// StateValue is the state as the wxproxy_breaker_state gauge encodes it:
// 0 closed, 1 half-open, 2 open.
func StateValue(s gobreaker.State) float64 {
	switch s {
	case gobreaker.StateHalfOpen:
		return 1
	case gobreaker.StateOpen:
		return 2
	}
	return 0
}

// RetryAfter is how long an open breaker stays open.
func (b *Breaker) RetryAfter() time.Duration {
	b.mu.Lock()
	since := b.since
	b.mu.Unlock()
	return max(time.Second, since.Add(b.settings.Load().OpenTimeout).Sub(b.now()))
}
