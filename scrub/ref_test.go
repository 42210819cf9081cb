package scrub

import (
	"cmp"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// naive is the reference the Set is checked against: the same values and
// forms, replaced leftmost-longest by brute force.
type naive struct {
	vals map[string]string // value → replacement
}

func newNaive() *naive { return &naive{vals: map[string]string{}} }

func (r *naive) add(v, repl string) bool {
	if len(v) < MinLen || len(v) > MaxLen {
		return false
	}
	r.vals[v] = repl
	return true
}

func (r *naive) remove(v string) { delete(r.vals, v) }

// pairs returns every pattern with its replacement, longest first. A
// pattern produced by several values takes the replacement of the value
// equal to it, else of the least value.
func (r *naive) pairs() [][2]string {
	owner := map[string]string{}
	for v := range r.vals {
		for _, f := range forms(v) {
			o, ok := owner[f]
			if !ok || (o != f && (v == f || v < o)) {
				owner[f] = v
			}
		}
	}
	var ps [][2]string
	for f, v := range owner {
		ps = append(ps, [2]string{f, r.vals[v]})
	}
	slices.SortFunc(ps, func(a, b [2]string) int {
		return cmp.Or(cmp.Compare(len(b[0]), len(a[0])), strings.Compare(a[0], b[0]))
	})
	return ps
}

// replace scans src left to right; at each position it replaces the
// longest pattern that starts there.
func (r *naive) replace(src string) (string, int) {
	ps := r.pairs()
	var b strings.Builder
	n := 0
next:
	for i := 0; i < len(src); {
		for _, p := range ps {
			if strings.HasPrefix(src[i:], p[0]) {
				b.WriteString(p[1])
				i += len(p[0])
				n++
				continue next
			}
		}
		b.WriteByte(src[i])
		i++
	}
	return b.String(), n
}

// replacer is a second reference: strings.Replacer compares its old
// strings in argument order at each position, so with the longest first
// it is leftmost-longest too.
func (r *naive) replacer() *strings.Replacer {
	var args []string
	for _, p := range r.pairs() {
		args = append(args, p[0], p[1])
	}
	return strings.NewReplacer(args...)
}

// survivor returns a pattern of r found in out, or "".
func (r *naive) survivor(out string) string {
	for _, p := range r.pairs() {
		if strings.Contains(out, p[0]) {
			return p[0]
		}
	}
	return ""
}

// randToken returns a WeChat-like access token: a version prefix and
// random [A-Za-z0-9_-].
func randToken(rng *rand.Rand, prefix string, n int) string {
	const alpha = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
	b := []byte(prefix)
	for range n {
		b = append(b, alpha[rng.IntN(len(alpha))])
	}
	return string(b)
}

// newRand returns a deterministic source for a test.
func newRand(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 0x5c4b)) }

// checkSame scrubs src with both s and ref and fails on any difference.
func checkSame(tb testing.TB, s *Set, ref *naive, src string) {
	tb.Helper()
	want, wantN := ref.replace(src)
	got, gotN := s.Replace(nil, []byte(src))
	if string(got) != want || gotN != wantN {
		tb.Fatalf("Replace(%q)\n got %q, %d\nwant %q, %d", src, got, gotN, want, wantN)
	}
	gs, gsN := s.ReplaceString(src)
	if gs != want || gsN != wantN {
		tb.Fatalf("ReplaceString(%q)\n got %q, %d\nwant %q, %d", src, gs, gsN, want, wantN)
	}
}

func TestReferencesAgree(t *testing.T) {
	ref := newNaive()
	ref.add("abcdef", "<1>")
	ref.add("abcdefgh", "<2>")
	ref.add("defghijk", "<3>")
	for _, src := range []string{"", "abcdefghijk", "xxabcdefgxdefghijk", "abcdeabcdefgh"} {
		got, _ := ref.replace(src)
		if want := ref.replacer().Replace(src); got != want {
			t.Errorf("references differ on %q: %q vs %q", src, got, want)
		}
	}
}
