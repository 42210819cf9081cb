package token

import (
	"sync"
	"sync/atomic"
)

// holder is the hot path: the current token behind an atomic pointer.
// Readers take no lock and never wait. Writers are serialised by mu, so a
// conditional install decides on the token it actually replaces, and what
// follows an install (clearing the backoff, scheduling the next refresh)
// happens in the order of the installs. The zero holder holds nothing.
//
// holder is not where tokens come from or are checked for expiry: it holds
// whatever it is given.
type holder struct {
	cur       atomic.Pointer[Token]
	mu        sync.Mutex
	onInstall func(value string) // nil: none
}

// load returns the held token, or nil.
func (h *holder) load() *Token { return h.cur.Load() }

// install makes t current if ok accepts the token held now (nil accepts
// anything). onInstall sees t.Value before any reader can load t; then, if
// set, runs with the token t replaced, still before any other install.
// install returns the token held afterwards and whether it is t.
func (h *holder) install(t *Token, ok func(cur *Token) bool, then func(prev *Token)) (*Token, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	prev := h.cur.Load()
	if ok != nil && !ok(prev) {
		return prev, false
	}
	if h.onInstall != nil {
		h.onInstall(t.Value)
	}
	h.cur.Store(t)
	if then != nil {
		then(prev)
	}
	return t, true
}

// newer reports whether st, read from the store or announced by a peer,
// should replace cur: it is another token that lives longer.
func newer(st, cur *Token) bool {
	return cur == nil || (st.Value != cur.Value && st.ExpiresAt.After(cur.ExpiresAt))
}
