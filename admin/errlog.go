package admin

import (
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// ErrorEvent is one error wxproxy answered or met itself (SPEC §5 kinds,
// and failed token refreshes), as the status console lists it. Its texts
// pass the scrubber before they are cut to size (a cut could otherwise
// leave part of a credential the scrubber no longer recognises), and again
// when shown, so a credential learned after the event is replaced too.
type ErrorEvent struct {
	Time    time.Time
	Kind    string // rate_limited, circuit_open, token_refresh, ...
	App     string // "" when no app was resolved
	API     string // the request path (no query), or ""
	Status  int    // HTTP status answered; 0 for background errors
	Message string // what wxproxy said or met; scrubbed when shown
}

// ErrorLog keeps the last wxproxy errors in a fixed ring. Consecutive
// events of the same kind, app and API are folded into one entry with a
// count, so a storm of one error (an open breaker refusing thousands of
// requests) does not push every other error out. Texts are cut to a bound,
// so the ring's memory is bounded whatever callers send. It is safe for
// concurrent use; the zero value is not usable, use NewErrorLog.
type ErrorLog struct {
	scrub func(string) string
	mu    sync.Mutex
	ring  []loggedError
	next  int   // where the next new entry goes
	n     int   // entries held
	total int64 // events recorded since start
}

type loggedError struct {
	ErrorEvent
	key   string // the raw API's first maxErrorAPI bytes, for folding
	first time.Time
	count int64
}

// Bounds of one entry's texts, in bytes.
const (
	maxErrorAPI     = 256
	maxErrorMessage = 512
	maxErrorField   = 64 // kind, app
)

// DefaultErrorLogSize is the ring size servers use.
const DefaultErrorLogSize = 50

// NewErrorLog returns a ring of size entries (at least 1) whose texts pass
// scrub (nil = identity).
func NewErrorLog(size int, scrub func(string) string) *ErrorLog {
	if scrub == nil {
		scrub = func(s string) string { return s }
	}
	return &ErrorLog{scrub: scrub, ring: make([]loggedError, max(size, 1))}
}

// Record adds e. When e repeats the newest entry (same kind, app and API)
// it only counts it: one lock, no allocation, no scrubbing; the entry
// keeps its first message.
func (l *ErrorLog) Record(e ErrorEvent) {
	key := e.API[:min(len(e.API), maxErrorAPI)]
	l.mu.Lock()
	if l.n > 0 {
		last := &l.ring[(l.next-1+len(l.ring))%len(l.ring)]
		if last.Kind == e.Kind && last.App == e.App && last.key == key {
			last.count++
			last.Time, last.Status = e.Time, e.Status
			l.total++
			l.mu.Unlock()
			return
		}
	}
	l.mu.Unlock()
	// A new entry: scrub and cut outside the lock.
	entry := loggedError{key: strings.Clone(key), first: e.Time, count: 1, ErrorEvent: ErrorEvent{
		Time: e.Time, Status: e.Status,
		Kind: truncate(e.Kind, maxErrorField), App: truncate(e.App, maxErrorField),
		API: truncate(l.scrub(e.API), maxErrorAPI), Message: truncate(l.scrub(e.Message), maxErrorMessage),
	}}
	// The caller's strings may share a buffer it reuses: keep copies.
	entry.Kind, entry.App = strings.Clone(entry.Kind), strings.Clone(entry.App)
	entry.API, entry.Message = strings.Clone(entry.API), strings.Clone(entry.Message)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total++
	l.ring[l.next] = entry
	l.next = (l.next + 1) % len(l.ring)
	l.n = min(l.n+1, len(l.ring))
}

// ErrorEntry is a recorded error as /admin/status shows it.
type ErrorEntry struct {
	Time    time.Time `json:"time"`             // the latest occurrence
	First   time.Time `json:"first"`            // the first of Count in a row
	Count   int64     `json:"count"`            // occurrences folded into this entry
	Kind    string    `json:"kind"`             // SPEC §5 kind, or token_refresh
	App     string    `json:"app"`              // "" when no app was resolved
	API     string    `json:"api,omitempty"`    // request path, no query
	Status  int       `json:"status,omitempty"` // HTTP status answered
	Message string    `json:"message,omitempty"`
	Replica string    `json:"replica,omitempty"` // the replica that saw it
}

// Recent returns the entries, newest first, and how many events were
// recorded since start.
func (l *ErrorLog) Recent() ([]ErrorEntry, int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]ErrorEntry, 0, l.n)
	for i := 1; i <= l.n; i++ {
		e := l.ring[(l.next-i+len(l.ring))%len(l.ring)]
		out = append(out, ErrorEntry{Time: e.Time, First: e.first, Count: e.count, Kind: e.Kind, App: e.App,
			API: e.API, Status: e.Status, Message: e.Message})
	}
	return out, l.total
}

// truncate cuts s to at most n bytes on a rune boundary, marking the cut.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n - len("…")
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}
