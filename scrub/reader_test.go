package scrub

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"net/url"
	"strings"
	"testing"
	"testing/iotest"
)

// readAll reads r to the end through reads of varying size and closes it.
func readAll(tb testing.TB, r *Reader) string {
	tb.Helper()
	b, err := io.ReadAll(r)
	if err != nil {
		tb.Fatalf("ReadAll: %v", err)
	}
	r.Close()
	return string(b)
}

// splitReader returns its data in chunks of the given sizes, then the rest.
type splitReader struct {
	data  []byte
	sizes []int
}

func (r *splitReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	n := len(r.data)
	if len(r.sizes) > 0 {
		n, r.sizes = min(n, r.sizes[0]), r.sizes[1:]
	}
	n = copy(p, r.data[:n])
	r.data = r.data[n:]
	return n, nil
}

// randReader returns its data in random chunks, sometimes empty, and
// sometimes with io.EOF together with the last bytes.
type randReader struct {
	data []byte
	rng  *rand.Rand
}

func (r *randReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	n := 0
	switch r.rng.IntN(4) {
	case 0:
		n = 0
	case 1:
		n = 1 + r.rng.IntN(8)
	default:
		n = 1 + r.rng.IntN(200)
	}
	n = copy(p, r.data[:min(n, len(r.data))])
	r.data = r.data[n:]
	if len(r.data) == 0 && r.rng.IntN(2) == 0 {
		return n, io.EOF
	}
	return n, nil
}

// readSmall reads r with a random small p each time.
func readSmall(tb testing.TB, r *Reader, rng *rand.Rand) string {
	tb.Helper()
	var out []byte
	for {
		p := make([]byte, 1+rng.IntN(64))
		n, err := r.Read(p)
		out = append(out, p[:n]...)
		if err == io.EOF {
			return string(out)
		}
		if err != nil {
			tb.Fatalf("Read: %v", err)
		}
	}
}

func testSet(tb testing.TB) (*Set, *naive) {
	tb.Helper()
	s, ref := NewSet(), newNaive()
	for _, v := range [][2]string{
		{tokA, "<A>"},
		{tokB, "<B>"},
		{sec, "***"},
		{odd, "<O>"},
		{"abcdef123", "<1>"},
		{"def123456", "<2>"},
		{"aaaaaa", "<a>"},
	} {
		s.Add(v[0], v[1])
		ref.add(v[0], v[1])
	}
	return s, ref
}

var readerCorpus = []string{
	"",
	"short",
	tokA,
	tokA + tokB,
	`{"errcode":0,"errmsg":"ok","request":{"request_url":"access_token=` + tokA + `&x=1","request_body":"{\"secret\":\"` + sec + `\"}"}}`,
	"xabcdef123456x aaaaaaaaaaaaa " + url_(odd) + " " + `ab+c\/d=ef==gh`,
	strings.Repeat("no credential here. ", 20),
}

func url_(v string) string { return url.QueryEscape(v) }

// TestReaderSplits cuts every corpus entry at every position (and at every
// pair of positions for the short ones): the result must equal Replace.
func TestReaderSplits(t *testing.T) {
	s, ref := testSet(t)
	for _, src := range readerCorpus {
		want, _ := ref.replace(src)
		for i := 0; i <= len(src); i++ {
			r := s.NewReader(&splitReader{data: []byte(src), sizes: []int{i}})
			if got := readAll(t, r); got != want {
				t.Fatalf("split at %d of %q:\n got %q\nwant %q", i, src, got, want)
			}
			if len(src) > 100 {
				continue
			}
			for j := 1; i+j <= len(src); j++ {
				r := s.NewReader(&splitReader{data: []byte(src), sizes: []int{i, j}})
				if got := readAll(t, r); got != want {
					t.Fatalf("split at %d and %d of %q:\n got %q\nwant %q", i, i+j, src, got, want)
				}
			}
		}
		r := s.NewReader(iotest.OneByteReader(strings.NewReader(src)))
		if got := readAll(t, r); got != want {
			t.Fatalf("one byte at a time %q:\n got %q\nwant %q", src, got, want)
		}
		r = s.NewReader(iotest.DataErrReader(strings.NewReader(src)))
		if got := readAll(t, r); got != want {
			t.Fatalf("data with EOF %q:\n got %q\nwant %q", src, got, want)
		}
	}
}

func TestReaderRandomChunks(t *testing.T) {
	s, ref := testSet(t)
	rng := newRand(5)
	for iter := range 200 {
		var b strings.Builder
		for range rng.IntN(3000) {
			switch rng.IntN(10) {
			case 0:
				b.WriteString(tokA)
			case 1:
				b.WriteString(url_(odd))
			case 2:
				b.WriteString("aaa")
			default:
				b.WriteString(randToken(rng, "", rng.IntN(12)))
			}
		}
		src := b.String()
		want, wantN := ref.replace(src)
		r := s.NewReader(&randReader{data: []byte(src), rng: rng})
		if got := readSmall(t, r, rng); got != want {
			t.Fatalf("iteration %d: random chunks differ from the reference", iter)
		}
		if got := r.Replaced(); got != wantN {
			t.Errorf("Replaced() = %d, want %d", got, wantN)
		}
		r.Close()
	}
}

// TestReaderLong streams far more than the buffer, with credentials
// around every buffer boundary, and checks the Reader never holds more
// than its buffer.
func TestReaderLong(t *testing.T) {
	s, ref := testSet(t)
	var b strings.Builder
	for b.Len() < 1<<20 {
		b.WriteString(strings.Repeat("x", 1000+b.Len()%97))
		b.WriteString(tokA)
	}
	src := b.String()
	want, wantN := ref.replace(src)
	for _, tc := range []struct {
		name string
		r    io.Reader
	}{
		{"large reads", strings.NewReader(src)},
		{"small reads", &randReader{data: []byte(src), rng: newRand(7)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cr := &countReader{r: tc.r}
			r := s.NewReader(cr)
			var out bytes.Buffer
			p := make([]byte, 4096)
			for {
				n, err := r.Read(p)
				out.Write(p[:n])
				// What was read and not returned (in input bytes, roughly:
				// each replacement shortens the output) fits the buffer.
				if held := cr.n - out.Len() - r.Replaced()*(len(tokA)-len("<A>")); held > readBufSize {
					t.Fatalf("Reader holds %d bytes, more than its %d-byte buffer", held, readBufSize)
				}
				if len(r.buf) > readBufSize {
					t.Fatalf("buffer grew to %d bytes", len(r.buf))
				}
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			if out.String() != want || r.Replaced() != wantN {
				t.Errorf("long stream differs from the reference (%d replacements, want %d)", r.Replaced(), wantN)
			}
			if r.bp != nil {
				t.Error("buffer not released at EOF")
			}
		})
	}
}

type countReader struct {
	r io.Reader
	n int
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// TestReaderError: a failure of the underlying reader ends the stream
// with that error and does not reveal the part of a credential held back.
func TestReaderError(t *testing.T) {
	s, _ := testSet(t)
	boom := errors.New("boom")
	src := "head " + tokA[:20]
	r := s.NewReader(io.MultiReader(strings.NewReader(src), iotest.ErrReader(boom)))
	got, err := io.ReadAll(r)
	if !errors.Is(err, boom) {
		t.Errorf("err = %v, want %v", err, boom)
	}
	if strings.Contains(string(got), tokA[:10]) {
		t.Errorf("got %q: part of a credential leaked", got)
	}
	if !strings.HasPrefix(src, string(got)) {
		t.Errorf("got %q, want a prefix of %q", got, src)
	}
	if _, err := r.Read(make([]byte, 10)); !errors.Is(err, boom) {
		t.Errorf("Read after the error: %v, want %v", err, boom)
	}
	r.Close()
}

func TestReaderNoProgress(t *testing.T) {
	s, _ := testSet(t)
	r := s.NewReader(emptyReader{})
	if _, err := r.Read(make([]byte, 10)); !errors.Is(err, io.ErrNoProgress) {
		t.Errorf("err = %v, want io.ErrNoProgress", err)
	}
}

type emptyReader struct{}

func (emptyReader) Read([]byte) (int, error) { return 0, nil }

func TestReaderClose(t *testing.T) {
	s, _ := testSet(t)
	r := s.NewReader(strings.NewReader(strings.Repeat("data ", 10000)))
	if _, err := r.Read(make([]byte, 100)); err != nil {
		t.Fatal(err)
	}
	if r.bp == nil {
		t.Fatal("no buffer while reading")
	}
	if err := r.Close(); err != nil {
		t.Errorf("Close() = %v", err)
	}
	if r.bp != nil {
		t.Error("Close did not release the buffer")
	}
	if _, err := r.Read(make([]byte, 100)); !errors.Is(err, ErrClosed) {
		t.Errorf("Read after Close: %v, want ErrClosed", err)
	}
	if err := r.Close(); err != nil {
		t.Errorf("second Close() = %v", err)
	}
}

// TestReaderCloseDuringRead: Close while a Read waits on the underlying
// reader returns at once; the Read releases the buffer when it returns.
func TestReaderCloseDuringRead(t *testing.T) {
	s, _ := testSet(t)
	pr, pw := io.Pipe()
	r := s.NewReader(pr)
	done := make(chan error)
	go func() {
		_, err := r.Read(make([]byte, 100))
		done <- err
	}()
	pw.Write([]byte("abc")) // held back: shorter than the longest pattern
	if err := r.Close(); err != nil {
		t.Errorf("Close() = %v", err)
	}
	pw.CloseWithError(errors.New("aborted"))
	if err := <-done; err == nil {
		t.Error("Read returned no error")
	}
	if r.bp != nil {
		t.Error("buffer not released after the Read returned")
	}
}

func TestReaderPoolClears(t *testing.T) {
	s, _ := testSet(t)
	r := s.NewReader(strings.NewReader("x " + tokA + " secret"))
	io.ReadAll(r)
	buf := r.bp
	r.Close()
	if buf == nil {
		// released at EOF already; take one from the pool to check it
		bp, _ := s.bufs.Get().(*[]byte)
		if bp == nil {
			return // the pool dropped it
		}
		buf = bp
	}
	if bytes.Contains(*buf, []byte("secret")) || bytes.Contains(*buf, []byte(tokA[:10])) {
		t.Error("pooled buffer still holds answer data")
	}
}
