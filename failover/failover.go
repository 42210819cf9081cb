// Package failover keeps the health of an app's upstreams (its upstream and
// the failover list of SPEC §14) and picks the first one that is up.
//
// An upstream is marked down after Settings.Failures failures in a row of
// the kinds the breaker counts (connection failures, timeouts, HTTP 5xx,
// errcode -1); after Settings.OpenTimeout one call probes it, and a
// successful probe marks it up again. A Set is not a breaker for the app:
// the caller decides what to do when every upstream is down.
//
// The proxy's request path uses Next and Report (no allocation); token and
// ticket fetches, which are rare, use Do.
package failover

import (
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Settings says when an upstream is down and when it is probed again.
type Settings struct {
	Failures    uint32        // failures in a row that mark an upstream down; 0 = 1
	OpenTimeout time.Duration // how long a down upstream waits before a probe; 0 = 30 s
}

// Outcome is what one call on an upstream says about it.
type Outcome uint8

const (
	// Neutral calls say nothing about the upstream (the caller's body
	// failed, the caller went away, a local refusal).
	Neutral Outcome = iota
	// Success: the upstream answered (a business errcode is an answer).
	Success
	// Failure: a connection failure, a timeout, HTTP 5xx or errcode -1.
	Failure
)

// Set is the ordered upstreams of one app. It is safe for concurrent use.
type Set struct {
	ups      []*upstream
	settings atomic.Pointer[Settings]
	now      func() time.Time
	onChange func(i int, up bool)
}

// upstream is one upstream's health. down is the unix nanoseconds until
// which it is down (0 = up); probing is set while its one probe is out.
type upstream struct {
	url     string
	fails   atomic.Uint32
	down    atomic.Int64
	probing atomic.Bool

	mu    sync.Mutex
	since time.Time // when it last went up or down
}

// Options configures New. URLs is required (the first is the primary).
type Options struct {
	URLs     []string
	Settings Settings
	// OnChange, if set, is called when upstream i goes down or comes back
	// up; not with any lock of the Set held.
	OnChange func(i int, up bool)
	Now      func() time.Time // default time.Now
}

// New returns a Set with every upstream up.
func New(o Options) (*Set, error) {
	if len(o.URLs) == 0 {
		return nil, errors.New("failover: no upstreams")
	}
	s := &Set{now: o.Now, onChange: o.OnChange}
	if s.now == nil {
		s.now = time.Now
	}
	start := s.now()
	for _, u := range o.URLs {
		s.ups = append(s.ups, &upstream{url: u, since: start})
	}
	s.Update(o.Settings)
	return s, nil
}

// Update applies new settings; the upstreams keep their state.
func (s *Set) Update(st Settings) {
	if st.Failures == 0 {
		st.Failures = 1
	}
	if st.OpenTimeout <= 0 {
		st.OpenTimeout = 30 * time.Second
	}
	s.settings.Store(&st)
}

// Len is the number of upstreams.
func (s *Set) Len() int { return len(s.ups) }

// URL returns the base URL of upstream i.
func (s *Set) URL(i int) string { return s.ups[i].url }

// Next returns the first upstream at index from or later that may be
// called now, and whether that call is its probe (then Report must be
// called with probe true). ok is false when none may be called.
func (s *Set) Next(from int) (i int, probe bool, ok bool) {
	var now int64
	for i = from; i < len(s.ups); i++ {
		u := s.ups[i]
		d := u.down.Load()
		if d == 0 {
			return i, false, true
		}
		if now == 0 {
			now = s.now().UnixNano()
		}
		if now >= d && u.probing.CompareAndSwap(false, true) {
			return i, true, true
		}
	}
	return 0, false, false
}

// Report records the outcome of a call on upstream i that Next returned.
func (s *Set) Report(i int, probe bool, o Outcome) {
	u := s.ups[i]
	switch o {
	case Success:
		if probe || u.fails.Load() != 0 {
			u.fails.Store(0)
		}
		if probe {
			s.mark(i, true, 0)
			u.probing.Store(false)
		}
	case Failure:
		n := u.fails.Add(1)
		st := s.settings.Load()
		if probe || n >= st.Failures {
			s.mark(i, false, s.now().Add(st.OpenTimeout).UnixNano())
		}
		if probe {
			u.probing.Store(false)
		}
	default:
		if probe {
			u.probing.Store(false)
		}
	}
}

// mark sets upstream i down until the given time (0 = up), reporting a
// change of state.
func (s *Set) mark(i int, up bool, until int64) {
	u := s.ups[i]
	was := u.down.Swap(until) == 0
	if was == up {
		return
	}
	u.mu.Lock()
	u.since = s.now()
	u.mu.Unlock()
	if s.onChange != nil {
		s.onChange(i, up)
	}
}

// Up reports whether upstream i is up (not marked down).
func (s *Set) Up(i int) bool { return s.ups[i].down.Load() == 0 }

// AnyUp reports whether some upstream is up or due for a probe.
func (s *Set) AnyUp() bool {
	now := s.now().UnixNano()
	for _, u := range s.ups {
		if d := u.down.Load(); d == 0 || now >= d {
			return true
		}
	}
	return false
}

// State is one upstream as the admin API shows it.
type State struct {
	URL                 string    `json:"url"`
	State               string    `json:"state"` // "up", "down" or "probing" (down, and due for a probe)
	Since               time.Time `json:"since"`
	ConsecutiveFailures uint32    `json:"consecutive_failures"`
}

// States describes every upstream, in order.
func (s *Set) States() []State {
	now := s.now().UnixNano()
	out := make([]State, len(s.ups))
	for i, u := range s.ups {
		st := "up"
		if d := u.down.Load(); d != 0 {
			st = "down"
			if now >= d {
				st = "probing"
			}
		}
		u.mu.Lock()
		since := u.since
		u.mu.Unlock()
		out[i] = State{URL: u.url, State: st, Since: since, ConsecutiveFailures: u.fails.Load()}
	}
	return out
}

// DialError marks an error of a connection attempt: nothing of the request
// was sent, so it may go to the next upstream whatever its method.
type DialError struct{ Err error }

func (e *DialError) Error() string { return "connect: " + e.Err.Error() }
func (e *DialError) Unwrap() error { return e.Err }

// NotSent reports whether err says a call never left: a DialError, a
// failed dial as net/http reports it (a *net.OpError of Op "dial"), or a
// TLS handshake that failed on the client's side (the server's certificate
// did not verify) — so a net/http client without
// a wrapping dialer fails over too. A TLS alert from the server is not
// one: with TLS 1.3 it may arrive after the request was written.
func NotSent(err error) bool {
	var (
		de  *DialError
		oe  *net.OpError
		cve *tls.CertificateVerificationError
	)
	return errors.As(err, &de) || (errors.As(err, &oe) && oe.Op == "dial") || errors.As(err, &cve)
}

// ErrAllDown is returned by Do when every upstream is down.
var ErrAllDown = errors.New("failover: every upstream is down")

// Do makes one call with failover: try gets the base URL of the first
// upstream that may be called and says what its call showed. When the call
// never left (err satisfies NotSent), try is called again with the next
// upstream; any other error is returned as is, never retried, because the
// upstream may have acted on it. onFailover, if set, is told when a call
// moves from one upstream to another.
func (s *Set) Do(try func(base string) (Outcome, error), onFailover func(from, to int)) error {
	prev := 0
	var last error
	for from := 0; ; {
		i, probe, ok := s.Next(from)
		if !ok {
			if last != nil {
				return last
			}
			return ErrAllDown
		}
		if i != prev && onFailover != nil {
			onFailover(prev, i)
		}
		o, err := try(s.ups[i].url)
		s.Report(i, probe, o)
		if err == nil || !NotSent(err) {
			return err
		}
		last, prev, from = err, i, i+1
	}
}
