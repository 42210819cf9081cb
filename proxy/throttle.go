package proxy

import (
	"net/netip"
	"sync"
	"time"
)

// missThrottle counts wrong corpsecrets per caller address in one-minute
// windows, so the WeCom token endpoint is no secret-guessing oracle. Its
// memory is bounded: past maxTracked addresses in a window, the rest share
// one counter. It is safe for concurrent use.
type missThrottle struct {
	limit int // misses a minute an address may make
	now   func() time.Time

	mu     sync.Mutex
	window int64 // unix minute of the counts
	counts map[netip.Addr]int
}

// maxTracked bounds the addresses counted in one window.
const maxTracked = 4096

// blocked reports whether ip has used up its misses this minute, and how
// long until the window ends.
func (t *missThrottle) blocked(ip netip.Addr) (bool, time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.roll()
	return t.counts[t.slot(ip)] >= t.limit, time.Duration(60-now.Unix()%60) * time.Second
}

// miss records one wrong secret from ip.
func (t *missThrottle) miss(ip netip.Addr) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.roll()
	t.counts[t.slot(ip)]++
}

// roll starts a new window when the minute changed; t.mu is held.
func (t *missThrottle) roll() time.Time {
	now := t.now()
	if w := now.Unix() / 60; w != t.window || t.counts == nil {
		t.window, t.counts = w, make(map[netip.Addr]int)
	}
	return now
}

// slot is the counter of ip: its own, or the shared one when the window
// already tracks maxTracked addresses.
func (t *missThrottle) slot(ip netip.Addr) netip.Addr {
	if _, ok := t.counts[ip]; ok || len(t.counts) < maxTracked {
		return ip
	}
	return netip.Addr{}
}
