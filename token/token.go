// Package token holds WeChat credentials — access tokens today (classic,
// stable and WeCom modes), tickets and platform tokens tomorrow: it fetches
// them, keeps the current one in memory for the hot path, refreshes it
// before it expires, and refreshes it at most once when WeChat rejects it
// (compare-and-refresh).
//
// The hot path is Cache.Current: one atomic load, no lock, no I/O. Every
// network call happens on the slow path, shared through one flight, on a
// context that no single caller can cancel.
//
// Cache is a generic holder over a Source; each credential kind is a
// Source (HTTPFetcher for access tokens) described by a Kind. Cache composes
// small types, one concurrency story each, one file each: holder.go (the
// hot path), flight.go (compare-and-refresh), backoff.go (failures),
// budget.go (forced refreshes), lease.go (the store and the fleet's
// refresh lease) and run.go (the background refresh). Stores sit in
// store.go and redis.go.
package token

import (
	"crypto/sha256"
	"encoding/hex"
	"time"
)

// Token is an access token as WeChat issued it. The zero Token is not valid.
// A Token is a value; share it by pointer only when it is never modified.
type Token struct {
	Value      string    `json:"value"`
	ObtainedAt time.Time `json:"obtained_at"`
	ExpiresAt  time.Time `json:"expires_at"`
	// CheckedAt is when a replica last asked WeChat and got this same
	// token back, when ObtainedAt does not say it: a kind with
	// FixedLifetime keeps ObtainedAt (and ExpiresAt) from the first
	// sighting. Zero otherwise, so tokens that never come back (most of
	// them: a platform's merchants) cost no extra bytes in the store.
	// Kept in the store with the token, it tells the fleet that a
	// proactive check is done: a replica whose own check falls due shortly
	// after another's adopts the stored token instead of asking WeChat
	// again (see Cache.confirmed).
	CheckedAt time.Time `json:"checked_at,omitzero"`
}

// checked is when WeChat last handed out t: CheckedAt, or ObtainedAt when
// that is later.
func (t *Token) checked() time.Time {
	if t.CheckedAt.After(t.ObtainedAt) {
		return t.CheckedAt
	}
	return t.ObtainedAt
}

// Valid reports whether t holds a token that has not expired at now.
// A nil *Token is not valid.
func (t *Token) Valid(now time.Time) bool {
	return t != nil && t.Value != "" && now.Before(t.ExpiresAt)
}

// Lifetime is how long the token was valid when it was obtained.
func (t *Token) Lifetime() time.Duration { return t.ExpiresAt.Sub(t.ObtainedAt) }

// Fingerprint returns the first 8 hex digits of sha256(value): enough to
// tell tokens apart in logs and on the admin API, useless to an attacker.
func Fingerprint(value string) string {
	if value == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(value))
	return hex.EncodeToString(sum[:4])
}

// Mode is how a token is obtained from WeChat.
type Mode string

// The token modes. Stable is WeChat's recommendation for official accounts
// and mini programs: normal-mode calls return the same token and never
// invalidate another holder's.
const (
	Stable  Mode = "stable"  // POST /cgi-bin/stable_token
	Classic Mode = "classic" // GET /cgi-bin/token: every fetch invalidates the previous token after 5 minutes
	WeCom   Mode = "wecom"   // GET /cgi-bin/gettoken (corpid + corpsecret)
)

// Reason says why a refresh happened; it is a metrics label.
type Reason string

// The refresh reasons of SPEC §8.
const (
	ReasonStartup   Reason = "startup"
	ReasonProactive Reason = "proactive"
	ReasonInvalid   Reason = "invalid"
	ReasonManual    Reason = "manual"
)
