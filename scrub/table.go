package scrub

import (
	"math/bits"
	"sync/atomic"
)

// The window hash: Fibonacci hashing of the window's 48 bits. The top bits
// of the product depend on every input bit.
const (
	mask48  = 1<<(8*MinLen) - 1
	bitMul  = 0x9e3779b97f4a7c15 // indexes the bitmap
	slotMul = 0xd6e8feb86659fd93 // indexes the table; independent of bitMul
)

// Sizes of a snapshot. The bitmap keeps 64 to 256 bits per pattern, so a
// window of ordinary text hits a set bit with probability under 1.6%; the
// table keeps at least every other slot empty, so a probe ends quickly.
const (
	minBits        = 1 << 15 // 4 KiB: one credential costs no more than this
	bitsPerPattern = 128     // when sizing; a rebuild comes below 64
	minSlots       = 64
)

// pattern is one byte string to find and its replacement. It is immutable
// once published.
type pattern struct {
	s    string
	off  int // offset in s of the window that indexes it
	repl string
}

// bucket is the patterns indexed by one window. It is immutable once
// published: writers replace it. A bucket with no patterns is a tombstone
// that keeps the probe chain through its slot intact.
type bucket struct {
	key  uint64
	pats []*pattern
}

// table is one snapshot: a bitmap prefilter and an open-addressed table
// from window to bucket. Scanners use it through atomic loads only; the
// writer holding Set.mu changes it in place or replaces it.
type table struct {
	bits      []atomic.Uint64
	bitShift  uint // 64 - log2(bit count)
	slots     []atomic.Pointer[bucket]
	slotShift uint // 64 - log2(len(slots))

	// Grow-only between rebuilds, so a scanner that reads them at its start
	// never holds back too little for a pattern present at that time.
	maxLen atomic.Int64 // longest pattern
	maxOff atomic.Int64 // largest window offset

	// Writer's bookkeeping, under Set.mu.
	live  int // patterns in the table
	used  int // non-empty slots, tombstones included
	stale int // patterns removed since the table was built
}

// newTable returns an empty table with room for n patterns and as many
// again before it must be rebuilt.
func newTable(n int) *table {
	nb := max(minBits, ceilPow2(n*bitsPerPattern))
	ns := max(minSlots, ceilPow2(4*n))
	return &table{
		bits:      make([]atomic.Uint64, nb/64),
		bitShift:  uint(64 - bits.TrailingZeros(uint(nb))),
		slots:     make([]atomic.Pointer[bucket], ns),
		slotShift: uint(64 - bits.TrailingZeros(uint(ns))),
	}
}

func ceilPow2(n int) int {
	if n <= 1 {
		return 1
	}
	return 1 << bits.Len(uint(n-1))
}

// full reports whether one more pattern would push the table past its
// bounds: fewer than 64 bits (one word) of bitmap per pattern, or more than
// half the slots taken.
func (t *table) full() bool {
	return t.live+1 > len(t.bits) || (t.used+1)*2 > len(t.slots)
}

// bit returns the bitmap word index and bit mask of window w.
func (t *table) bit(w uint64) (int, uint64) {
	h := (w * bitMul) >> t.bitShift
	return int(h >> 6), 1 << (h & 63)
}

// lookup returns the bucket of window w, or nil.
func (t *table) lookup(w uint64) *bucket {
	mask := uint64(len(t.slots) - 1)
	for i := (w * slotMul) >> t.slotShift; ; i = (i + 1) & mask {
		b := t.slots[i].Load()
		if b == nil || b.key == w {
			return b
		}
	}
}

// slot returns the slot of window w: the one holding its bucket, else the
// empty one that ends its probe chain. Writer only.
func (t *table) slot(w uint64) *atomic.Pointer[bucket] {
	mask := uint64(len(t.slots) - 1)
	for i := (w * slotMul) >> t.slotShift; ; i = (i + 1) & mask {
		b := t.slots[i].Load()
		if b == nil || b.key == w {
			return &t.slots[i]
		}
	}
}

// pick returns the offset of the window that should index pattern s: the
// one nearest the middle of s whose bucket is empty, else the one with the
// smallest bucket. The middle of a credential is its random part, which
// ordinary text does not contain. Writer only.
func (t *table) pick(s string) int {
	last := len(s) - MinLen
	mid := last / 2
	best, bestLen := mid, int(^uint(0)>>1)
	for d := 0; d <= max(mid, last-mid); d++ {
		for k, off := range [2]int{mid - d, mid + d} {
			if off < 0 || off > last || (d == 0 && k == 1) {
				continue
			}
			n := 0
			if b := t.lookup(load48(s, off)); b != nil {
				n = len(b.pats)
			}
			if n == 0 {
				return off
			}
			if n < bestLen {
				best, bestLen = off, n
			}
		}
	}
	return best
}

// put publishes p under window w. Writer only.
func (t *table) put(p *pattern, w uint64) {
	sl := t.slot(w)
	old := sl.Load()
	nb := &bucket{key: w}
	if old != nil {
		nb.pats = make([]*pattern, 0, len(old.pats)+1)
		nb.pats = append(nb.pats, old.pats...)
	} else {
		t.used++
	}
	nb.pats = append(nb.pats, p)
	// The pattern is in its slot before its bit is set: a scanner that
	// sees the bit finds it.
	sl.Store(nb)
	i, m := t.bit(w)
	t.bits[i].Or(m)
	if n := int64(len(p.s)); n > t.maxLen.Load() {
		t.maxLen.Store(n)
	}
	if o := int64(p.off); o > t.maxOff.Load() {
		t.maxOff.Store(o)
	}
	t.live++
}

// del withdraws p, published under window w. Its bit stays set. Writer
// only.
func (t *table) del(p *pattern, w uint64) {
	sl := t.slot(w)
	old := sl.Load()
	nb := &bucket{key: w, pats: make([]*pattern, 0, len(old.pats)-1)}
	for _, q := range old.pats {
		if q != p {
			nb.pats = append(nb.pats, q)
		}
	}
	sl.Store(nb)
	t.live--
	t.stale++
}

// swap replaces old, published under window w, with p. Writer only.
func (t *table) swap(old, p *pattern, w uint64) {
	sl := t.slot(w)
	ob := sl.Load()
	nb := &bucket{key: w, pats: make([]*pattern, len(ob.pats))}
	for i, q := range ob.pats {
		if q == old {
			q = p
		}
		nb.pats[i] = q
	}
	sl.Store(nb)
}
