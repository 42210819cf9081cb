package scrub

import (
	"errors"
	"io"
	"sync"
)

// ErrClosed is returned by Read after Close.
var ErrClosed = errors.New("scrub: read after close")

// readChunk is how much a Reader asks of the underlying reader at most;
// its buffer holds that plus the longest possible pattern.
const (
	readChunk   = 32 << 10
	readBufSize = readChunk + maxPatLen
)

// maxEmptyReads is how many (0, nil) reads in a row from the underlying
// reader a Read tolerates before it gives up with io.ErrNoProgress, as
// bufio does.
const maxEmptyReads = 100

// Reader is an io.Reader that returns what an underlying reader returns
// with every value of its Set replaced, however the underlying reader cuts
// the stream: a credential split across its reads is still replaced.
//
// A Reader holds one buffer of 38 KiB (32 KiB plus the longest possible
// pattern) from its Set's pool, whatever the stream's length. It
// takes the buffer at the first Read and gives it back at the end of the
// stream or at Close. Of what it has read, it holds back at most the
// longest pattern's length less one byte until more arrives.
//
// When the underlying reader fails with an error other than io.EOF, the
// Reader returns what it has already decided, drops what it holds back
// (which may be the first part of a credential cut by the failure) and
// returns the error.
//
// Each read from the underlying reader is scanned with the Set as it is at
// that moment: a value added while a stream is in flight is replaced in
// what the Reader reads after Add returns; an occurrence that begins in
// bytes it read before may be missed.
//
// A Reader is not safe for concurrent use, except that Close may be called
// while a Read is in progress (to abort a copy); it does not close the
// underlying reader.
type Reader struct {
	set *Set
	r   io.Reader

	mu      sync.Mutex // guards reading and closed against Close
	reading bool       // a Read is in progress; Close leaves the buffer to it
	closed  bool

	bp     *[]byte // the pooled buffer; nil before the first Read and after the end
	buf    []byte
	used   int // high-water mark of buf, cleared before it goes back to the pool
	lo, hi int // buf[lo:hi] is input not yet returned
	base   int // where in buf the matcher's round starts

	m       matcher[[]byte]
	active  bool   // the matcher has a round in progress
	raw     int    // buf[lo:raw] is decided: it passes unchanged
	inMatch bool   // after raw, repl replaces buf[raw:skip]
	repl    string // what of the replacement is still to be returned
	skip    int

	err      error // from the underlying reader; the stream ends after this round
	replaced int
}

// NewReader returns a Reader that scrubs r with s. It allocates nothing
// but the Reader; a nil *Set gives a Reader that passes r through.
func (s *Set) NewReader(r io.Reader) *Reader {
	return &Reader{set: s, r: r}
}

// Replaced returns the number of replacements made so far. It must not be
// called concurrently with Read.
func (z *Reader) Replaced() int { return z.replaced }

// Read reads scrubbed bytes into p. It returns as soon as it has some,
// reading from the underlying reader only when it has nothing decided to
// return.
func (z *Reader) Read(p []byte) (int, error) {
	z.mu.Lock()
	if z.closed {
		z.mu.Unlock()
		return 0, ErrClosed
	}
	z.reading = true
	z.mu.Unlock()

	var (
		n   int
		err error
	)
	if z.set == nil {
		n, err = z.r.Read(p)
	} else {
		n, err = z.read(p)
	}

	z.mu.Lock()
	z.reading = false
	if z.closed {
		z.release()
	}
	z.mu.Unlock()
	return n, err
}

func (z *Reader) read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		switch {
		case z.lo < z.raw:
			c := copy(p[n:], z.buf[z.lo:z.raw])
			z.lo += c
			n += c
		case z.inMatch:
			c := copy(p[n:], z.repl)
			z.repl = z.repl[c:]
			n += c
			if z.repl == "" {
				z.inMatch = false
				z.lo = z.skip
			}
		case z.active:
			if x, ok := z.m.next(); ok {
				z.raw, z.inMatch, z.repl, z.skip = z.base+x.s, true, x.repl, z.base+x.e
				z.replaced++
				continue
			}
			z.raw = z.base + z.m.safe()
			z.active = false
		case z.err != nil:
			// The last round is out; drop what is held back (nothing after
			// io.EOF, which ends a final round).
			z.release()
			if n > 0 {
				return n, nil
			}
			return 0, z.err
		case n > 0:
			return n, nil // do not wait on the underlying reader
		default:
			z.fill()
		}
	}
	return n, nil
}

// fill reads once more from the underlying reader, after what is held
// back, and starts a round over it.
func (z *Reader) fill() {
	if z.bp == nil {
		bp, _ := z.set.bufs.Get().(*[]byte)
		if bp == nil {
			b := make([]byte, readBufSize)
			bp = &b
		}
		z.bp, z.buf = bp, *bp
	}
	// The new round starts at lo. It need not rescan what the last round
	// settled (see matcher.resume), and the buffer moves its content to the
	// front only when it runs short of room, so that a stream arriving a
	// few bytes at a time costs neither a rescan nor a copy of the held-back
	// tail at every read.
	from := z.base + z.m.resume()
	if len(z.buf)-z.hi < readChunk/2 {
		z.hi = copy(z.buf, z.buf[z.lo:z.hi])
		from -= z.lo
		z.lo, z.raw, z.skip = 0, 0, 0
	}
	z.base = z.lo
	from = max(0, from-z.base)
	var k int
	for tries := 0; k == 0 && z.err == nil; tries++ {
		if tries == maxEmptyReads {
			z.err = io.ErrNoProgress
			break
		}
		k, z.err = z.r.Read(z.buf[z.hi:])
	}
	z.hi += k
	z.used = max(z.used, z.hi)
	z.m.reset(z.set.load(), z.buf[z.base:z.hi], z.err == io.EOF, from)
	z.active = true
}

// release gives the buffer back to the pool, cleared so that no answer
// outlives its request in memory. It is idempotent.
func (z *Reader) release() {
	z.m = matcher[[]byte]{}
	z.active = false
	z.lo, z.hi, z.base, z.raw, z.inMatch, z.repl = 0, 0, 0, 0, false, ""
	if z.bp == nil {
		return
	}
	clear(z.buf[:z.used])
	z.set.bufs.Put(z.bp)
	z.bp, z.buf, z.used = nil, nil, 0
}

// Close releases the Reader's buffer; a later Read returns ErrClosed. If a
// Read is in progress, that Read releases the buffer when it returns.
// Close does not close the underlying reader and always returns nil.
func (z *Reader) Close() error {
	z.mu.Lock()
	defer z.mu.Unlock()
	z.closed = true
	if !z.reading {
		z.release()
	}
	return nil
}
