package token

import (
	"context"
	"time"
)

// Source obtains a credential from WeChat: an access token, a ticket, a
// component, authorizer, suite or corp token. force asks for a forced
// refresh, which only a Kind with Forcible honours; other Sources ignore it.
//
// Source is the Cache's only view of WeChat: a Cache serves every
// credential kind, so a new kind is a new Source (and, if it behaves unlike
// the Modes, a Kind), never a change to Cache. A Source is called from one
// refresh flight at a time per Cache, on a context no single caller can
// cancel; it must honour ctx and must not cache, retry or back off itself —
// the Cache does that. Errors must not contain secrets.
type Source interface {
	Fetch(ctx context.Context, force bool) (Token, error)
}

// Fetcher is the former name of Source, kept so existing callers build.
type Fetcher = Source

// SourceFunc adapts a function to a Source, as http.HandlerFunc does for
// handlers. It is as safe for concurrent use as the function is.
type SourceFunc func(ctx context.Context, force bool) (Token, error)

// Fetch calls f(ctx, force).
func (f SourceFunc) Fetch(ctx context.Context, force bool) (Token, error) { return f(ctx, force) }

var (
	_ Source = (*HTTPFetcher)(nil)
	_ Source = SourceFunc(nil)
)

// Kind describes how a Source's credentials behave: everything a Cache needs
// to know about a credential kind, so that Cache holds no knowledge of any
// one kind. It is a plain value, safe to copy and share.
//
// The zero Kind is the cautious default, WeChat's classic /cgi-bin/token:
// a fetch mints a new credential at any time and may invalidate the one
// other holders use, each fetch counts against WeChat's daily limit, and
// there is no forced refresh.
type Kind struct {
	// Forcible says the Source honours force: a normal fetch may hand back
	// the very credential WeChat just rejected, and only a forced fetch
	// replaces it (stable_token). Forced fetches invalidate every other
	// holder's credential, so they are budgeted (Options.ForcedPerDay and
	// ForcedSpacing) and never made while the shared store is unreachable.
	Forcible bool
	// Shared says a normal fetch leaves every other holder's credential
	// valid (stable_token's normal mode), so a replica cut off from its
	// fleet may fetch on its own. Without Shared, a replica that cannot
	// reach the fleet keeps a valid credential rather than fetch.
	Shared bool
	// Unmetered says fetches are not counted by Options.Budget (stable
	// fetches are budgeted by ForcedPerDay instead).
	Unmetered bool
	// FixedLifetime says a fetch reports the credential's full lifetime
	// even when it hands back the one already held (WeChat's tickets:
	// expires_in is 7200 on every fetch, not what is left): for the same
	// value the held, earlier expiry is kept.
	FixedLifetime bool
	// Rotation is how long before expiry a fetch starts returning a new
	// credential; a proactive refresh earlier than that would get the same
	// one back (stable_token: 5 minutes). Zero means at any time; negative
	// means only once it has expired (WeCom's gettoken).
	Rotation time.Duration
}

// stableRotation is how long before expiry WeChat's stable_token normal
// mode starts handing out the next token.
const stableRotation = 5 * time.Minute

// kind returns the Kind of the tokens that mode obtains.
func (m Mode) kind() (Kind, bool) {
	switch m {
	case Classic:
		return Kind{}, true
	case Stable:
		return Kind{Forcible: true, Shared: true, Unmetered: true, Rotation: stableRotation}, true
	case WeCom:
		// gettoken hands back the same token until it expires. Not
		// Shared: a replica cut off from its fleet keeps a valid token
		// rather than fetch.
		return Kind{Rotation: -1}, true
	}
	return Kind{}, false
}

// lead is how long before t expires a proactive refresh is due. Never more
// than half the lifetime, so short-lived credentials are not refreshed
// continuously.
func (k Kind) lead(t *Token, refreshBefore time.Duration) time.Duration {
	half := t.Lifetime() / 2
	switch {
	case k.Rotation < 0:
		return 0
	case k.Rotation > 0:
		return min(refreshBefore, k.Rotation, half)
	}
	return min(refreshBefore, half)
}
