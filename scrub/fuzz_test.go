package scrub

import (
	"fmt"
	"net/url"
	"strings"
	"testing"
)

// expand builds the fuzz input text: in src, bytes 1 to 3 stand for the
// values, 4 to 6 for their query-escaped forms and 7 to 9 for their JSON
// forms with \/, so that the fuzzer meets the values without guessing them.
func expand(src []byte, vals []string) string {
	var b strings.Builder
	for _, c := range src {
		k := int(c) - 1
		if k < 0 || k >= 9 || k%3 >= len(vals) {
			b.WriteByte(c)
			continue
		}
		v := vals[k%3]
		switch k / 3 {
		case 0:
			b.WriteString(v)
		case 1:
			b.WriteString(url.QueryEscape(v))
		default:
			b.WriteString(jsonEscape(v, true, false))
		}
	}
	return b.String()
}

// fuzzSet holds the fuzz values in a Set and in the reference. Each is
// replaced by "#i#"; values containing '#' are skipped, so that no
// replacement can form a value with its neighbours and "no value survives"
// is a property of every output.
func fuzzSet(t *testing.T, vals []string) (*Set, *naive) {
	s, ref := NewSet(), newNaive()
	for i, v := range vals {
		if strings.Contains(v, "#") {
			continue
		}
		repl := fmt.Sprintf("#%d#", i)
		if got, want := s.Add(v, repl), ref.add(v, repl); got != want {
			t.Fatalf("Add(%q) = %v, want %v", v, got, want)
		}
	}
	return s, ref
}

func FuzzReplace(f *testing.F) {
	f.Add([]byte("x \x01 y"), tokA, sec, odd)
	f.Add([]byte("\x01\x02\x03\x04\x05\x06\x07\x08\x09"), "abcdef123", "def123456", "aaaaaa")
	f.Add([]byte("aaaaaaaaaaaaaaa"), "aaaaaa", "aaaaaaaaa", "aaaaaaa")
	f.Add([]byte("ab/cd/ef/gh \x07\x04"), "ab/cd/ef", "cd/ef/gh", `ab\/cd\/ef`)
	f.Fuzz(func(t *testing.T, src []byte, v1, v2, v3 string) {
		vals := []string{v1, v2, v3}
		s, ref := fuzzSet(t, vals)
		in := expand(src, vals)
		checkSame(t, s, ref, in)
		out, _ := s.ReplaceString(in)
		if v := ref.survivor(out); v != "" {
			t.Fatalf("%q survives in %q", v, out)
		}
		for _, v := range vals {
			s.Remove(v)
		}
		if out, n := s.ReplaceString(in); out != in || n != 0 {
			t.Fatalf("after removing everything: %q, %d", out, n)
		}
	})
}

func FuzzReader(f *testing.F) {
	f.Add([]byte("x \x01 y \x02"), tokA, sec, uint64(1))
	f.Add([]byte("\x01\x02\x01\x04\x05\x07\x08"), "abcdef123", "def123456", uint64(2))
	f.Add([]byte("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"), "aaaaaa", "aaaaaaaaaaaaaaaaaaa", uint64(3))
	f.Fuzz(func(t *testing.T, src []byte, v1, v2 string, seed uint64) {
		vals := []string{v1, v2}
		s, ref := fuzzSet(t, vals)
		in := expand(src, vals)
		want, wantN := ref.replace(in)
		rng := newRand(seed)
		r := s.NewReader(&randReader{data: []byte(in), rng: rng})
		if got := readSmall(t, r, rng); got != want {
			t.Fatalf("Reader(%q)\n got %q\nwant %q", in, got, want)
		}
		if got := r.Replaced(); got != wantN {
			t.Fatalf("Replaced() = %d, want %d", got, wantN)
		}
		r.Close()
		if v := ref.survivor(want); v != "" {
			t.Fatalf("%q survives in %q", v, want)
		}
	})
}
