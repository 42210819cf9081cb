package token

import (
	"sync"
	"time"
)

// forceBudget caps forced refreshes: at most perDay in a calendar day of
// loc, and at least spacing apart. WeChat allows stable_token 20 forced
// refreshes a day; each one invalidates every other holder's token, so
// spending them fast would turn one bad answer into an outage. A
// forceBudget is safe for concurrent use once its fields are set; the zero
// state has spent nothing.
//
// forceBudget counts in this process only; with a store that keeps a
// fleet-wide budget (ForcedBudget) the lease asks the store instead, with
// these limits.
type forceBudget struct {
	perDay  int
	spacing time.Duration
	loc     *time.Location

	mu    sync.Mutex
	day   string // the day of count, in loc
	count int
	last  time.Time // the last forced refresh; zero before the first
}

// take spends one forced refresh at now, or reports false if the day's
// budget is spent or the last one was less than spacing ago.
func (b *forceBudget) take(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	day := now.In(b.loc).Format(time.DateOnly)
	if day != b.day {
		b.day, b.count = day, 0
	}
	if b.count >= b.perDay || (!b.last.IsZero() && now.Sub(b.last) < b.spacing) {
		return false
	}
	b.count++
	b.last = now
	return true
}
