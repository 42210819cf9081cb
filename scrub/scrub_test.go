package scrub

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"testing"
)

const (
	tokA = "86_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789-_AbCdEf"
	tokB = "86_ZyXwVuTsRqPoNmLkJiHgFeDcBa9876543210_-ZyXwVu"
	sec  = "0123456789abcdef0123456789abcdef"
	odd  = "ab+c/d=ef==gh" // every escaper changes it
)

func TestReplace(t *testing.T) {
	tests := []struct {
		name  string
		vals  [][2]string // value, replacement
		src   string
		want  string
		wantN int
	}{
		{"empty input", [][2]string{{tokA, "<A>"}}, "", "", 0},
		{"short input", [][2]string{{tokA, "<A>"}}, "86_Ab", "86_Ab", 0},
		{"no match", [][2]string{{tokA, "<A>"}}, `{"errcode":0,"errmsg":"ok"}`, `{"errcode":0,"errmsg":"ok"}`, 0},
		{"exact", [][2]string{{tokA, "<A>"}}, "access_token=" + tokA + "&x=1", "access_token=<A>&x=1", 1},
		{"whole input", [][2]string{{tokA, "<A>"}}, tokA, "<A>", 1},
		{"at start", [][2]string{{tokA, "<A>"}}, tokA + "&x=1", "<A>&x=1", 1},
		{"at end", [][2]string{{tokA, "<A>"}}, "x=" + tokA, "x=<A>", 1},
		{"adjacent", [][2]string{{tokA, "<A>"}, {tokB, "<B>"}}, tokA + tokB + tokA, "<A><B><A>", 3},
		{"prefix only", [][2]string{{tokA, "<A>"}}, tokA[:len(tokA)-1], tokA[:len(tokA)-1], 0},
		{"secret", [][2]string{{sec, "***"}}, `secret=` + sec + `"`, `secret=***"`, 1},
		{"empty replacement", [][2]string{{sec, ""}}, "[" + sec + "]", "[]", 1},
		{
			"overlap: leftmost wins",
			[][2]string{{"abcdef123", "<1>"}, {"def123456", "<2>"}},
			"xabcdef123456", "x<1>456", 1,
		},
		{
			"overlap: leftmost wins though shorter",
			[][2]string{{"abcdef", "<1>"}, {"bcdefghijklmn", "<2>"}},
			"abcdefghijklmn", "<1>ghijklmn", 1,
		},
		{
			"same start: longest wins",
			[][2]string{{"abcdefgh", "<1>"}, {"abcdefghij", "<2>"}, {"abcdef", "<3>"}},
			"abcdefghijk abcdefgh abcdefg", "<2>k <1> <3>g", 3,
		},
		{
			"after an overlap the next match still counts",
			[][2]string{{"aaaabbbb", "<1>"}, {"bbbbcccc", "<2>"}, {"ccccdddd", "<3>"}},
			"aaaabbbbccccdddd", "<1><3>", 2,
		},
		{
			"contained",
			[][2]string{{"xxabcdefxx", "<1>"}, {"abcdef", "<2>"}},
			"xxabcdefxx abcdef", "<1> <2>", 2,
		},
		{
			"self-overlapping",
			[][2]string{{"aaaaaa", "<a>"}},
			"aaaaaaaaaaaaa", "<a><a>a", 2,
		},
		{"query-escaped", [][2]string{{odd, "<O>"}}, "q=" + url.QueryEscape(odd) + "&", "q=<O>&", 1},
		{"path-escaped", [][2]string{{odd, "<O>"}}, "/p/" + url.PathEscape(odd) + "/", "/p/<O>/", 1},
		{"JSON with \\/", [][2]string{{odd, "<O>"}}, `{"v":"ab+c\/d=ef==gh"}`, `{"v":"<O>"}`, 1},
		{"raw and escaped together", [][2]string{{odd, "<O>"}}, odd + " " + url.QueryEscape(odd), "<O> <O>", 2},
		{
			"JSON control and HTML escapes",
			[][2]string{{"a\"b\\c\nd<e>&\x01", "<J>"}},
			`"a\"b\\c\nd\u003ce\u003e\u0026\u0001" "a\"b\\c\nd<e>&\u0001"`, `"<J>" "<J>"`, 2,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, ref := NewSet(), newNaive()
			for _, v := range tt.vals {
				if !s.Add(v[0], v[1]) {
					t.Fatalf("Add(%q) = false", v[0])
				}
				ref.add(v[0], v[1])
			}
			got, n := s.Replace(nil, []byte(tt.src))
			if string(got) != tt.want || n != tt.wantN {
				t.Errorf("Replace(%q) = %q, %d, want %q, %d", tt.src, got, n, tt.want, tt.wantN)
			}
			src := []byte(tt.src)
			if got, n := s.Scrub(src); string(got) != tt.want || n != tt.wantN || string(src) != tt.src {
				t.Errorf("Scrub(%q) = %q, %d, want %q, %d (src now %q)", tt.src, got, n, tt.want, tt.wantN, src)
			} else if n == 0 && len(src) > 0 && &got[0] != &src[0] {
				t.Errorf("Scrub(%q) copied an answer with nothing to replace", tt.src)
			}
			if got, n := s.ReplaceString(tt.src); got != tt.want || n != tt.wantN {
				t.Errorf("ReplaceString(%q) = %q, %d, want %q, %d", tt.src, got, n, tt.want, tt.wantN)
			}
			if want, n := ref.replace(tt.src); want != tt.want || n != tt.wantN {
				t.Errorf("reference(%q) = %q, %d, want %q, %d", tt.src, want, n, tt.want, tt.wantN)
			}
			if got2, n := s.Replace(nil, got); !bytes.Equal(got2, got) || n != 0 {
				t.Errorf("Replace is not idempotent: %q → %q (%d)", got, got2, n)
			}
		})
	}
}

// TestEscapedForms checks the forms against the encoders that produce
// them, rather than against forms itself.
func TestEscapedForms(t *testing.T) {
	values := []string{
		tokA,
		odd,
		"a b+c/d?e=f&g#h%i",
		`quo"te\back/slash`,
		"<html>&amp;\u2028\u2029</html>",
		"tab\there\nnewline\x00nul",
		"ünïcødé-sécret",
	}
	for _, v := range values {
		t.Run(v, func(t *testing.T) {
			s := NewSet()
			s.Add(v, "***")
			jsonGo, err := json.Marshal(map[string]string{"v": v})
			if err != nil {
				t.Fatal(err)
			}
			var jsonPlain bytes.Buffer
			enc := json.NewEncoder(&jsonPlain)
			enc.SetEscapeHTML(false)
			if err := enc.Encode(map[string]string{"v": v}); err != nil {
				t.Fatal(err)
			}
			jsonSlash := strings.ReplaceAll(strings.TrimSpace(jsonPlain.String()), "/", `\/`)
			u := url.URL{Path: "/x/" + v, RawQuery: url.Values{"v": {v}}.Encode()}
			for _, in := range []string{
				v,
				url.QueryEscape(v),
				url.PathEscape(v),
				u.String(),
				string(jsonGo),
				jsonPlain.String(),
				jsonSlash,
			} {
				out, n := s.ReplaceString(in)
				if n == 0 || strings.Contains(out, v) {
					t.Errorf("ReplaceString(%q) = %q, %d: value not replaced", in, out, n)
				}
				if !strings.Contains(out, "***") {
					t.Errorf("ReplaceString(%q) = %q: no replacement", in, out)
				}
			}
		})
	}
}

func TestAddRefuses(t *testing.T) {
	s := NewSet()
	for _, v := range []string{"", "a", "12345", strings.Repeat("x", MaxLen+1)} {
		if s.Add(v, "***") {
			t.Errorf("Add(%d bytes) = true, want false", len(v))
		}
	}
	if got, want := s.Len(), 0; got != want {
		t.Errorf("Len() = %d, want %d", got, want)
	}
	for _, v := range []string{"123456", strings.Repeat("y", MaxLen)} {
		if !s.Add(v, "***") {
			t.Errorf("Add(%d bytes) = false, want true", len(v))
		}
	}
	if got, n := s.ReplaceString("a 12345 b"); n != 0 {
		t.Errorf("ReplaceString replaced a short value: %q", got)
	}
	if got, n := s.ReplaceString("a 123456 b " + strings.Repeat("y", MaxLen)); got != "a *** b ***" || n != 2 {
		t.Errorf("ReplaceString = %q, %d", got, n)
	}
}

func TestRemove(t *testing.T) {
	s := NewSet()
	s.Add(tokA, "<A>")
	s.Add(tokB, "<B>")
	s.Add(odd, "<O>")
	if !s.Remove(tokA) {
		t.Error("Remove(tokA) = false, want true")
	}
	if s.Remove(tokA) {
		t.Error("second Remove(tokA) = true, want false")
	}
	if s.Remove("never held") {
		t.Error("Remove(never held) = true")
	}
	if !s.Remove(odd) {
		t.Error("Remove(odd) = false")
	}
	src := tokA + " " + tokB + " " + url.QueryEscape(odd)
	if got, want := mustString(s.ReplaceString(src)), tokA+" <B> "+url.QueryEscape(odd); got != want {
		t.Errorf("after Remove: %q, want %q", got, want)
	}
	if got, want := s.Len(), 1; got != want {
		t.Errorf("Len() = %d, want %d", got, want)
	}
	s.Add(tokA, "<A2>")
	if got, want := mustString(s.ReplaceString(src)), "<A2> <B> "+url.QueryEscape(odd); got != want {
		t.Errorf("after re-Add: %q, want %q", got, want)
	}
}

func TestAddReplacesReplacement(t *testing.T) {
	s := NewSet()
	if !s.Add(odd, "<1>") || !s.Add(odd, "<2>") {
		t.Fatal("Add = false")
	}
	src := odd + url.QueryEscape(odd)
	if got, want := mustString(s.ReplaceString(src)), "<2><2>"; got != want {
		t.Errorf("ReplaceString = %q, want %q", got, want)
	}
	if got, want := s.Len(), 1; got != want {
		t.Errorf("Len() = %d, want %d", got, want)
	}
}

// TestSharedForm: a value that equals another value's escaped form keeps
// its own replacement, and the form survives the other's removal.
func TestSharedForm(t *testing.T) {
	s, ref := NewSet(), newNaive()
	a := "abc/def/ghi"
	b := `abc\/def\/ghi` // a's JSON form with \/
	for _, v := range [][2]string{{a, "<a>"}, {b, "<b>"}} {
		s.Add(v[0], v[1])
		ref.add(v[0], v[1])
	}
	checkSame(t, s, ref, b+" "+a)
	if got, want := mustString(s.ReplaceString(b)), "<b>"; got != want {
		t.Errorf("ReplaceString(b) = %q, want %q", got, want)
	}
	s.Remove(b)
	ref.remove(b)
	checkSame(t, s, ref, b+" "+a)
	if got, want := mustString(s.ReplaceString(b)), "<a>"; got != want {
		t.Errorf("after Remove(b): %q, want %q", got, want)
	}
	s.Add(b, "<b>")
	ref.add(b, "<b>")
	s.Remove(a)
	ref.remove(a)
	checkSame(t, s, ref, b+" "+a)
}

func TestNilAndZero(t *testing.T) {
	for _, s := range []*Set{nil, new(Set)} {
		src := "x " + tokA
		if got, n := s.Replace([]byte("pre:"), []byte(src)); string(got) != "pre:"+src || n != 0 {
			t.Errorf("%v.Replace = %q, %d", s, got, n)
		}
		if got, n := s.ReplaceString(src); got != src || n != 0 {
			t.Errorf("%v.ReplaceString = %q, %d", s, got, n)
		}
		if got := readAll(t, s.NewReader(strings.NewReader(src))); got != src {
			t.Errorf("%v.NewReader = %q", s, got)
		}
		if s.Len() != 0 || s.Remove(tokA) {
			t.Errorf("%v: Len or Remove not empty", s)
		}
	}
}

// TestMany holds tens of thousands of values, many sharing a prefix, and
// checks the results against strings.Replacer.
func TestMany(t *testing.T) {
	rng := newRand(1)
	s, ref := NewSet(), newNaive()
	var vals []string
	for i := range 12000 {
		var v string
		switch i % 3 {
		case 0:
			v = randToken(rng, "86_", 130)
		case 1:
			v = randToken(rng, "refreshtoken@@@", 40) // all share a 15-byte prefix
		default:
			v = randToken(rng, "", 32)
		}
		vals = append(vals, v)
		repl := fmt.Sprintf("<%d>", i)
		if !s.Add(v, repl) {
			t.Fatalf("Add(%q) = false", v)
		}
		ref.add(v, repl)
	}
	if got, want := s.Len(), len(vals); got != want {
		t.Fatalf("Len() = %d, want %d", got, want)
	}
	check := func() {
		t.Helper()
		var b strings.Builder
		for i := 0; i < 3000; i++ {
			v := vals[rng.IntN(len(vals))]
			switch rng.IntN(4) {
			case 0:
				b.WriteString(v)
			case 1:
				b.WriteString(v[:len(v)-1]) // cut short: not replaced
			case 2:
				b.WriteString(`{"authorizer_refresh_token":"refreshtoken@@@`)
			default:
				b.WriteString(randToken(rng, "", rng.IntN(20)))
			}
			b.WriteByte(" &\"/"[rng.IntN(4)])
		}
		src := b.String()
		got, n := s.ReplaceString(src)
		if want := ref.replacer().Replace(src); got != want {
			t.Fatalf("ReplaceString differs from strings.Replacer (%d replacements)", n)
		}
	}
	check()
	for _, v := range vals[:9000] {
		s.Remove(v)
		ref.remove(v)
	}
	vals = vals[9000:]
	check()

	// The prefix shared by 4000 refresh tokens must not make one huge
	// bucket: every pattern found a window of its own or nearly.
	tb := s.t.Load()
	maxBucket := 0
	for i := range tb.slots {
		if b := tb.slots[i].Load(); b != nil {
			maxBucket = max(maxBucket, len(b.pats))
		}
	}
	if maxBucket > 2 {
		t.Errorf("largest bucket holds %d patterns, want at most 2", maxBucket)
	}
}

// TestRebuildBounds: the snapshot shrinks again once values are removed,
// and tombstones do not pile up.
func TestRebuildBounds(t *testing.T) {
	rng := newRand(2)
	s := NewSet()
	for round := range 5 {
		var vals []string
		for range 5000 {
			v := randToken(rng, "", 40)
			vals = append(vals, v)
			s.Add(v, "***")
		}
		for _, v := range vals {
			s.Remove(v)
		}
		tb := s.t.Load()
		if len(tb.slots) > 4096 || len(tb.bits)*64 > 1<<20 {
			t.Errorf("round %d: after removing everything: %d slots, %d bits", round, len(tb.slots), len(tb.bits)*64)
		}
		if tb.live != 0 || tb.used > len(tb.slots)/2 {
			t.Errorf("round %d: live %d, used %d of %d slots", round, tb.live, tb.used, len(tb.slots))
		}
	}
}

// TestConcurrent runs scans while values come and go. Values held all
// along must always be replaced; run with -race.
func TestConcurrent(t *testing.T) {
	s := NewSet()
	s.Add(tokA, "<A>")
	s.Add(sec, "***")
	src := []byte(strings.Repeat(`{"access_token":"`+tokA+`","secret":"`+sec+`"} `, 50))
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Go(func() {
			var buf []byte
			for {
				select {
				case <-stop:
					return
				default:
				}
				var n int
				buf, n = s.Replace(buf[:0], src)
				if n != 100 || bytes.Contains(buf, []byte(tokA)) || bytes.Contains(buf, []byte(sec)) {
					t.Errorf("concurrent Replace: %d replacements", n)
					return
				}
				if got := readAll(t, s.NewReader(bytes.NewReader(src))); strings.Contains(got, tokA) {
					t.Error("concurrent Reader let a token through")
					return
				}
			}
		})
	}
	rng := newRand(3)
	for i := range 20000 {
		v := randToken(rng, "", 20+i%50)
		s.Add(v, "***")
		if i%3 != 0 {
			s.Remove(v)
		}
	}
	close(stop)
	wg.Wait()
}

// TestDifferential compares random sets and inputs built from their
// values, with overlaps and shared windows, with the reference.
func TestDifferential(t *testing.T) {
	rng := newRand(4)
	for iter := range 300 {
		s, ref := NewSet(), newNaive()
		alpha := "ab/+=" // a tiny alphabet makes overlaps and shared windows common
		var vals []string
		for i := range 1 + rng.IntN(12) {
			b := make([]byte, MinLen+rng.IntN(10))
			for j := range b {
				b[j] = alpha[rng.IntN(len(alpha))]
			}
			v := string(b)
			vals = append(vals, v)
			repl := fmt.Sprintf("#%d#", i)
			s.Add(v, repl)
			ref.add(v, repl)
		}
		for range 5 {
			var b strings.Builder
			for range rng.IntN(30) {
				if rng.IntN(2) == 0 {
					f := forms(vals[rng.IntN(len(vals))])
					b.WriteString(f[rng.IntN(len(f))])
				} else {
					b.WriteByte(alpha[rng.IntN(len(alpha))])
				}
			}
			checkSame(t, s, ref, b.String())
			out, _ := s.ReplaceString(b.String())
			if v := ref.survivor(out); v != "" {
				t.Fatalf("iteration %d: %q survives in %q", iter, v, out)
			}
		}
		if iter%2 == 0 {
			v := vals[rng.IntN(len(vals))]
			s.Remove(v)
			ref.remove(v)
			checkSame(t, s, ref, strings.Join(vals, ""))
		}
	}
}

func mustString(s string, _ int) string { return s }

// TestPrefilterRate backs the cost claim: however many values are held,
// about 1% of the windows of ordinary text get past the bitmap, and almost
// none of those find a bucket.
func TestPrefilterRate(t *testing.T) {
	src := []byte(strings.Repeat(answer, 50) + randToken(newRand(6), "", 20000))
	for _, n := range []int{1, 100, 10000, 30000} {
		s := benchSet(t, n)
		tb := s.load()
		hits, buckets := 0, 0
		for i := 0; ; i++ {
			i = prefilter(src, tb.bits, tb.bitShift, i, len(src)-MinLen+1)
			if i > len(src)-MinLen {
				break
			}
			hits++
			if tb.lookup(load48(src, i)) != nil {
				buckets++
			}
		}
		rate := float64(hits) / float64(len(src)-MinLen+1)
		t.Logf("%d values: %.2f%% of windows pass the bitmap, %d reach a bucket", n, 100*rate, buckets)
		if rate > 0.02 || buckets > 0 {
			t.Errorf("%d values: %.2f%% of windows pass the bitmap, %d reach a bucket; want under 2%% and none",
				n, 100*rate, buckets)
		}
	}
}
