package token

import (
	"context"
	"sync"
	"time"
)

// flight is compare-and-refresh shared by every concurrent caller: at most
// one refresh per key runs at a time, and a caller whose bad token is no
// longer current gets the current one without a refresh. The refresh runs
// on a context that no single caller can cancel, bounded by timeout; each
// caller waits on its own ctx, so one that leaves fails nobody else.
// A flight is safe for concurrent use once its fields are set.
//
// A flight holds memory only while a refresh runs (a platform keeps
// thousands of them): the calls in progress are a short list, of at most
// one per key, that is empty between refreshes.
//
// flight is not a retry loop and keeps no state between refreshes: backoff
// and budgets belong to whoever runs in it.
type flight struct {
	current func() *Token    // the token held now
	now     func() time.Time // validity clock
	timeout time.Duration    // bounds one refresh

	mu    sync.Mutex
	calls *call // in progress, one per key
}

// call is one refresh in progress; done is closed when tok and err are set.
type call struct {
	key  string
	next *call
	done chan struct{}
	tok  *Token
	err  error
}

// do returns a valid token other than bad: the current one if it already
// is, else what refresh returns. Concurrent calls with the same key share
// one run, which compares with the bad of the caller that started it.
func (f *flight) do(ctx context.Context, key, bad string, refresh func(context.Context) (*Token, error)) (*Token, error) {
	f.mu.Lock()
	c := f.calls
	for c != nil && c.key != key {
		c = c.next
	}
	if c == nil {
		c = &call{key: key, next: f.calls, done: make(chan struct{})}
		f.calls = c
		go f.run(context.WithoutCancel(ctx), c, bad, refresh)
	}
	f.mu.Unlock()
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-c.done:
		return c.tok, c.err
	}
}

// run does the refresh of c, then takes c off the list before its callers
// see the result, so a caller arriving later starts a new comparison.
func (f *flight) run(ctx context.Context, c *call, bad string, refresh func(context.Context) (*Token, error)) {
	defer close(c.done)
	defer f.remove(c)
	// Compare inside the flight: a caller that arrives just after a
	// refresh finished finds its bad token replaced.
	if cur := f.current(); cur.Valid(f.now()) && cur.Value != bad {
		c.tok = cur
		return
	}
	fctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	c.tok, c.err = refresh(fctx)
}

// remove takes c off the list of calls in progress.
func (f *flight) remove(c *call) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for p := &f.calls; *p != nil; p = &(*p).next {
		if *p == c {
			*p = c.next
			return
		}
	}
}
