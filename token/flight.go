package token

import (
	"context"
	"time"

	"golang.org/x/sync/singleflight"
)

// flight is compare-and-refresh shared by every concurrent caller: at most
// one refresh per key runs at a time, and a caller whose bad token is no
// longer current gets the current one without a refresh. The refresh runs
// on a context that no single caller can cancel, bounded by timeout; each
// caller waits on its own ctx, so one that leaves fails nobody else.
// A flight is safe for concurrent use once its fields are set.
//
// flight is not a retry loop and keeps no state between refreshes: backoff
// and budgets belong to whoever runs in it.
type flight struct {
	current func() *Token    // the token held now
	now     func() time.Time // validity clock
	timeout time.Duration    // bounds one refresh
	group   singleflight.Group
}

// do returns a valid token other than bad: the current one if it already
// is, else what refresh returns. Concurrent calls with the same key share
// one run, which compares with the bad of the caller that started it.
func (f *flight) do(ctx context.Context, key, bad string, refresh func(context.Context) (*Token, error)) (*Token, error) {
	ch := f.group.DoChan(key, func() (any, error) {
		// Compare inside the flight: a caller that arrives just after a
		// refresh finished finds its bad token replaced.
		if cur := f.current(); cur.Valid(f.now()) && cur.Value != bad {
			return cur, nil
		}
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), f.timeout)
		defer cancel()
		return refresh(fctx)
	})
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case r := <-ch:
		if r.Err != nil {
			return nil, r.Err
		}
		t, _ := r.Val.(*Token)
		return t, nil
	}
}
