package proxy

import (
	"hash/maphash"
	"net/netip"
	"sync"
	"time"
)

// missThrottle counts wrong corpsecrets per caller address in one-minute
// windows, so the WeCom token endpoint is no secret-guessing oracle.
//
// It is a count-min sketch: each address (an IPv6 caller by its /64, the
// unit one host can usually choose from) increments one counter in each of
// two rows of fixed size under a random per-process seed, and is blocked
// when both its counters are at the limit. Memory is fixed whatever the
// number of addresses, and an address that made no misses is blocked only
// if others filled both of its counters — which takes misses from
// thousands of distinct addresses (or /64s) within the minute, not one
// noisy neighbour. It is safe for concurrent use.
type missThrottle struct {
	limit int // misses a minute an address may make
	now   func() time.Time

	mu     sync.Mutex
	seed   maphash.Seed
	window int64 // unix minute of the counts
	rows   [2][sketchWidth]uint8
}

const sketchWidth = 8192

// blocked reports whether ip has used up its misses this minute, and how
// long until the window ends.
func (t *missThrottle) blocked(ip netip.Addr) (bool, time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.roll()
	a, b := t.slots(ip)
	n := min(t.rows[0][a], t.rows[1][b])
	return int(n) >= t.limit, time.Duration(60-now.Unix()%60) * time.Second
}

// miss records one wrong secret from ip.
func (t *missThrottle) miss(ip netip.Addr) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.roll()
	a, b := t.slots(ip)
	for _, c := range []*uint8{&t.rows[0][a], &t.rows[1][b]} {
		if *c < 255 {
			*c++
		}
	}
}

// roll starts a new window when the minute changed; t.mu is held.
func (t *missThrottle) roll() time.Time {
	now := t.now()
	if t.seed == (maphash.Seed{}) {
		t.seed = maphash.MakeSeed()
	}
	if w := now.Unix() / 60; w != t.window {
		t.window, t.rows = w, [2][sketchWidth]uint8{}
	}
	return now
}

// slots are ip's counters in the two rows: an IPv4 address by itself, an
// IPv6 address by its /64.
func (t *missThrottle) slots(ip netip.Addr) (int, int) {
	var key [16]byte
	if ip.Is4() || ip.Is4In6() {
		v4 := ip.Unmap().As4()
		copy(key[:], v4[:])
	} else {
		v6 := ip.As16()
		copy(key[:8], v6[:8])
		key[15] = 6
	}
	h := maphash.Bytes(t.seed, key[:])
	return int(uint32(h) % sketchWidth), int(uint32(h>>32) % sketchWidth)
}
