package scrub

import (
	"strings"
	"sync/atomic"
)

// text is what the scanner reads: an answer body or a header value.
type text interface{ ~string | ~[]byte }

// load48 returns the MinLen-byte window of s at i as an integer.
func load48[T text](s T, i int) uint64 {
	s = s[i : i+MinLen]
	return uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 |
		uint64(s[3])<<24 | uint64(s[4])<<32 | uint64(s[5])<<40
}

// load64 returns the 8 bytes of s at i as an integer (one load).
func load64[T text](s T, i int) uint64 {
	s = s[i : i+8]
	return uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
		uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
}

// match is one occurrence of a pattern: src[s:e] is replaced by repl. The
// window at win revealed it.
type match struct {
	s, e int
	repl string
	win  int
}

// matcher finds, in order, the matches that leftmost-longest replacement
// makes in src: scanning from the left, at each position the longest
// pattern that starts there is replaced and scanning resumes after it.
//
// Since a pattern is found through a window inside it, the scanner meets
// matches out of order: a match found at window position i starts at
// i - off. It keeps them in pend (sorted by start, the longest per start)
// and hands out the first one only once every window that could reveal an
// earlier or equally early match has been scanned: past its start plus the
// largest offset.
//
// A round that is not final (more input will follow) decides only matches
// that start before limit, where a pattern cannot run past the end of src;
// the rest is left for the next round, which rescans it with more input.
type matcher[T text] struct {
	t      *table
	src    T
	i      int // next window to scan
	end    int // windows at end and after are not scanned this round
	done   int // end of the last match handed out; matches start at or after it
	limit  int // matches starting at or after limit wait for the next round
	maxOff int
	pend   pending

	// The first window that revealed a pattern running past the end of
	// src, or -1. A later round over the same bytes and more must look at
	// it again; windows before it need no second look.
	cut int
}

// reset starts a round over src. Windows before from need no look (see
// resume). t may be nil: then the round finds nothing.
func (m *matcher[T]) reset(t *table, src T, final bool, from int) {
	*m = matcher[T]{t: t, src: src, i: from, cut: -1}
	n := len(src)
	if t == nil {
		m.limit = n
		return
	}
	maxLen := int(t.maxLen.Load())
	m.maxOff = int(t.maxOff.Load())
	m.end = n - MinLen + 1
	m.limit = n
	if !final {
		// A match starting before limit ends within src; one starting at
		// limit or later may not. Windows at limit+maxOff and after reveal
		// only matches that start at limit or later.
		m.limit = n - maxLen + 1
		m.end = min(m.end, m.limit+m.maxOff)
	}
}

// safe returns how far src is decided once next has reported no more
// matches: everything before it that no match covers passes unchanged.
func (m *matcher[T]) safe() int {
	return max(m.done, m.limit)
}

// resume returns where a later round over the same bytes (and more) may
// start scanning: the windows before it were scanned, and revealed neither
// a pattern cut by the end of src nor a match still undecided. It spares a
// stream arriving a few bytes at a time a rescan of the held-back tail at
// every read.
func (m *matcher[T]) resume() int {
	r := m.i
	if m.cut >= 0 {
		r = min(r, m.cut)
	}
	for _, x := range m.pend.list() {
		r = min(r, x.win)
	}
	return r
}

// next returns the next match to replace, or false when the round has no
// more.
func (m *matcher[T]) next() (match, bool) {
	for {
		if pend := m.pend.list(); len(pend) > 0 {
			f := pend[0]
			if m.i >= m.end || m.i > f.s+m.maxOff {
				// No match starting at or before f.s is still unseen.
				if f.s >= m.limit {
					return match{}, false
				}
				m.done = f.e
				k := 1
				for k < len(pend) && pend[k].s < f.e {
					k++
				}
				m.pend.truncate(copy(pend, pend[k:]))
				return f, true
			}
		} else if m.i >= m.end {
			return match{}, false
		}
		m.scan()
	}
}

// scan looks at windows from m.i until one reveals a match or the round's
// windows run out.
func (m *matcher[T]) scan() {
	t := m.t
	for i := m.i; ; i++ {
		i = prefilter(m.src, t.bits, t.bitShift, i, m.end)
		if i >= m.end {
			m.i = m.end
			return
		}
		if m.candidates(i, load48(m.src, i)) {
			m.i = i + 1
			return
		}
	}
}

// prefilter returns the first window position in [i, end) whose bitmap
// bit is set, or end. It is the hot path: for almost every window it costs
// one load, one multiplication and one bit test.
func prefilter[T text](src T, bm []atomic.Uint64, shift uint, i, end int) int {
	shift &= 63
	// Three windows per 8-byte load.
	for ; i+8 <= len(src) && i+2 < end; i += 3 {
		x := load64(src, i)
		h0 := (x & mask48 * bitMul) >> shift
		h1 := (x >> 8 & mask48 * bitMul) >> shift
		h2 := (x >> 16 * bitMul) >> shift
		if bm[h0>>6].Load()&(1<<(h0&63)) != 0 {
			return i
		}
		if bm[h1>>6].Load()&(1<<(h1&63)) != 0 {
			return i + 1
		}
		if bm[h2>>6].Load()&(1<<(h2&63)) != 0 {
			return i + 2
		}
	}
	for fast := min(end, len(src)-7); i < fast; i++ {
		h := (load64(src, i) & mask48 * bitMul) >> shift
		if bm[h>>6].Load()&(1<<(h&63)) != 0 {
			return i
		}
	}
	for ; i < end; i++ {
		h := (load48(src, i) * bitMul) >> shift
		if bm[h>>6].Load()&(1<<(h&63)) != 0 {
			return i
		}
	}
	return end
}

// candidates checks the patterns indexed by window w, found at position
// i, and reports whether one matched.
func (m *matcher[T]) candidates(i int, w uint64) bool {
	b := m.t.lookup(w)
	if b == nil {
		return false // the bit was set by another window
	}
	found := false
	for _, p := range b.pats {
		s := i - p.off
		e := s + len(p.s)
		if s < m.done {
			continue
		}
		if e > len(m.src) {
			if m.cut < 0 {
				m.cut = i
			}
			continue
		}
		if string(m.src[s:e]) != p.s {
			continue
		}
		m.pend.add(match{s: s, e: e, repl: p.repl, win: i})
		found = true
	}
	return found
}

// pending is the matches found and not yet handed out, sorted by start,
// with the longest match per start. The first few live in an array inside
// the matcher, so that a scan with a match or two does not allocate.
type pending struct {
	arr   [4]match
	n     int
	spill []match // every pending match, once there were more than len(arr)
}

func (p *pending) list() []match {
	if p.spill != nil {
		return p.spill
	}
	return p.arr[:p.n]
}

func (p *pending) truncate(n int) {
	if p.spill != nil {
		p.spill = p.spill[:n]
	} else {
		p.n = n
	}
}

// add puts x in its place.
func (p *pending) add(x match) {
	l := p.list()
	k := len(l)
	for k > 0 && l[k-1].s >= x.s {
		k--
	}
	if k < len(l) && l[k].s == x.s {
		if x.e > l[k].e {
			l[k] = x
		}
		return
	}
	switch {
	case p.spill != nil:
		p.spill = append(p.spill, match{})
		l = p.spill
	case p.n < len(p.arr):
		p.n++
		l = p.arr[:p.n]
	default:
		p.spill = make([]match, p.n+1, 4*len(p.arr))
		copy(p.spill, p.arr[:p.n])
		l = p.spill
	}
	copy(l[k+1:], l[k:])
	l[k] = x
}

// Replace appends src to dst with every held value replaced and returns
// the extended buffer and the number of replacements. When nothing
// matches, it only copies src: with enough capacity in dst it does not
// allocate. dst and src must not overlap. A nil *Set replaces nothing.
func (s *Set) Replace(dst, src []byte) (out []byte, n int) {
	var m matcher[[]byte]
	m.reset(s.load(), src, true, 0)
	last := 0
	for {
		x, ok := m.next()
		if !ok {
			break
		}
		dst = append(dst, src[last:x.s]...)
		dst = append(dst, x.repl...)
		last = x.e
		n++
	}
	return append(dst, src[last:]...), n
}

// Scrub returns src with every held value replaced, and the number of
// replacements. When nothing matches it returns src itself and does not
// allocate; otherwise the result is a new slice and src is unchanged. A nil
// *Set replaces nothing.
func (s *Set) Scrub(src []byte) ([]byte, int) {
	var m matcher[[]byte]
	m.reset(s.load(), src, true, 0)
	x, ok := m.next()
	if !ok {
		return src, 0
	}
	dst := make([]byte, 0, len(src)+len(x.repl))
	last, n := 0, 0
	for ; ok; x, ok = m.next() {
		dst = append(dst, src[last:x.s]...)
		dst = append(dst, x.repl...)
		last = x.e
		n++
	}
	return append(dst, src[last:]...), n
}

// ReplaceString returns str with every held value replaced, and the number
// of replacements. When nothing matches it returns str itself and does not
// allocate. A nil *Set replaces nothing.
func (s *Set) ReplaceString(str string) (string, int) {
	var m matcher[string]
	m.reset(s.load(), str, true, 0)
	x, ok := m.next()
	if !ok {
		return str, 0
	}
	var b strings.Builder
	b.Grow(len(str))
	last, n := 0, 0
	for ; ok; x, ok = m.next() {
		b.WriteString(str[last:x.s])
		b.WriteString(x.repl)
		last = x.e
		n++
	}
	b.WriteString(str[last:])
	return b.String(), n
}
