// Package scrub replaces held credentials — access tokens, tickets,
// AppSecrets, refresh tokens — in bytes that stream from WeChat to a
// caller, so that none of them ever reaches a caller (SPEC §4, "Answers are
// scrubbed").
//
// A Set holds the credentials and what replaces each of them. Set.Replace
// and Set.ReplaceString scrub a whole buffer (an answer already in memory, a
// header value); Set.NewReader scrubs a body of any length as it streams,
// with bounded memory.
//
// # Cost
//
// The cost per scanned byte does not grow with the number of credentials
// held. Every pattern (a credential or one of its escaped forms) is indexed
// by one window of MinLen bytes taken from inside it. The scanner looks at
// each window of the input once: it loads the 6 bytes as one integer,
// hashes them with one multiplication and tests one bit of a bitmap sized to
// about 64–256 bits per pattern. Almost every position stops there, a couple
// of nanoseconds. Only when the bit is set does it look the window up in an
// open-addressed table (keyed by the 6 bytes themselves, so there are no hash
// collisions past the bitmap) and compare the few patterns indexed by that
// window with the input. The bitmap grows with the number of patterns, so
// the share of positions that reach the table stays near 1% whether the Set
// holds one credential or a hundred thousand.
//
// Comparing a pattern with the input costs its length, and happens only
// where the input holds the exact 6 bytes that index a held pattern. For
// random credentials that is only where a credential actually is, so no
// input, hostile or not, makes a byte cost more than a bitmap test and a
// table probe, unless it contains the credentials. A degenerate value ("aaaaaaaa...") would be compared at every
// position of an input made of its letter; the Set accepts such values but
// they are not what it is built for.
//
// Each pattern is indexed by the window nearest its middle whose slot is not
// yet taken, rather than by its first bytes: credentials of one kind often
// share a prefix (authorizer refresh tokens all start with
// "refreshtoken@@@"), and indexing them by it would put ten thousand of them
// behind one window that every answer mentioning refresh tokens hits.
//
// # Concurrency
//
// The read path takes no lock. Scanning reads the bitmap and the table
// through atomic loads of one snapshot; Add and Remove (serialised by a
// mutex among themselves) publish into that snapshot in place — a new
// pattern is stored in its table slot before its bitmap bit is set, so a
// scanner that sees the bit finds the pattern — and replace the snapshot
// with a rebuilt one only when it must grow or has collected too many
// removed entries. Rebuilds double the sizes, so Add and Remove cost O(1)
// amortised, and a rebuild never blocks a scan. A scan that runs while the
// Set changes sees each change or not; a credential added during a scan is
// guaranteed to be replaced only in scans that start after Add returns.
//
// # What it is not
//
// Package scrub is not a general string replacer: it finds only patterns of
// at least MinLen bytes, and only the escaped forms listed at Set.Add. It
// does not find a credential that is cut short (a prefix of a token), split
// by something other than a read boundary, or encoded in a way not listed
// (base64, double JSON escaping, lower-case percent escapes).
package scrub

import (
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
)

// MinLen is the shortest value a Set holds, in bytes. A shorter value is
// refused: every byte sequence that short occurs by chance in ordinary
// answers, so replacing it would garble them (a one-byte secret would
// destroy every answer) and hide nothing. WeChat's credentials are far
// longer: an AppSecret has 32 bytes, an access token more than 100. MinLen is
// also the width of the window the scanner hashes.
const MinLen = 6

// MaxLen is the longest value a Set holds, in bytes. A longer value is
// refused: the streaming Reader must hold back the longest pattern's length
// of input, and the bound keeps that buffer fixed. WeChat asks clients to
// keep 512 bytes for an access token.
const MaxLen = 1024

// maxPatLen bounds the longest pattern: a value's JSON form with every byte
// written as \u00XX.
const maxPatLen = 6 * MaxLen

// Set is a set of credentials to hide, each with the string that replaces
// it. The zero value is an empty Set ready to use, and a nil *Set behaves as
// an empty Set for Replace, ReplaceString, NewReader, Len and Remove. A Set
// is safe for concurrent use; it must not be copied after first use.
//
// A Set is not a store of credentials: it keeps the values only to find
// them, and offers no way to list them.
type Set struct {
	mu   sync.Mutex            // serialises writers; scans never take it
	t    atomic.Pointer[table] // what scanners read; nil until the first Add
	vals map[string]*valEntry  // value → its replacement and forms; under mu
	pats map[string]*patEntry  // pattern → who produces it; under mu
	bufs sync.Pool             // *[]byte of readBufSize, for Readers
}

// valEntry is one registered value.
type valEntry struct {
	repl  string
	forms []string // the value and its distinct escaped forms
}

// patEntry is one distinct pattern. Two values can produce the same pattern
// (a value containing a backslash can equal another value's JSON form);
// owners lists them all, and the pattern stays until the last one goes.
type patEntry struct {
	s      string
	owners []string
	w      uint64   // the window that indexes it
	off    int      // where w starts in s
	cur    *pattern // what is published in the table
}

// NewSet returns an empty Set. It is the same as new(Set).
func NewSet() *Set { return new(Set) }

// Add registers value, to be replaced by replacement wherever it appears,
// and reports whether it did. Adding a value that is already held changes
// its replacement. Add refuses (reports false) a value shorter than MinLen
// or longer than MaxLen; the caller should treat that as a configuration
// error, since the value will not be hidden.
//
// Besides value itself, Add registers the forms in which WeChat may echo
// it, each replaced by the same replacement: query-escaped
// (url.QueryEscape), path-escaped (url.PathEscape), and JSON-escaped — the
// minimal escaping, with "/" written as "\/" (as PHP and WeChat write it),
// and with encoding/json's HTML-safe escapes (\u003c, \u0026, ...). Tokens
// from WeChat use only [A-Za-z0-9_-], for which every form is the value
// itself.
//
// The replacement should be plain ASCII that cannot form a held value
// together with the text around it — a placeholder such as "wxp.main.AbC1"
// or "***". Replacing is one pass: a replacement is never scanned again, so
// a replacement that ends with "abc" next to input "def..." could in theory
// spell a held "abcdef...". With placeholders and "***" and credentials that
// do not contain them, it cannot.
//
// When two held patterns overlap in the input, the one that starts first is
// replaced; of two starting at the same byte, the longer. When two values
// produce the same pattern, the replacement of the value that equals it
// wins, else that of the value first in byte order.
//
// Add on a nil *Set panics.
func (s *Set) Add(value, replacement string) bool {
	if len(value) < MinLen || len(value) > MaxLen {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.vals == nil {
		s.vals = make(map[string]*valEntry)
		s.pats = make(map[string]*patEntry)
	}
	if ve := s.vals[value]; ve != nil {
		if ve.repl != replacement {
			ve.repl = replacement
			for _, f := range ve.forms {
				s.publish(s.pats[f])
			}
		}
		return true
	}
	ve := &valEntry{repl: replacement, forms: forms(value)}
	s.vals[value] = ve
	for _, f := range ve.forms {
		if pe := s.pats[f]; pe != nil {
			pe.owners = append(pe.owners, value)
			s.publish(pe)
			continue
		}
		pe := &patEntry{s: f, owners: []string{value}}
		s.pats[f] = pe
		s.insert(pe)
	}
	return true
}

// Remove forgets value and its escaped forms, and reports whether it was
// held. Removing a value that is not held does nothing.
func (s *Set) Remove(value string) bool {
	if s == nil {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ve := s.vals[value]
	if ve == nil {
		return false
	}
	delete(s.vals, value)
	t := s.t.Load()
	for _, f := range ve.forms {
		pe := s.pats[f]
		pe.owners = slices.DeleteFunc(pe.owners, func(o string) bool { return o == value })
		if len(pe.owners) > 0 {
			s.publish(pe)
			continue
		}
		delete(s.pats, f)
		t.del(pe.cur, pe.w)
	}
	// Removed patterns leave their bitmap bits set and their slots as
	// tombstones; both only cost false hits. Rebuild once they outnumber
	// the live patterns, which keeps Remove O(1) amortised.
	if t.stale >= 64 && t.stale > t.live {
		s.rebuild()
	}
	return true
}

// Len returns the number of values held (not counting escaped forms).
func (s *Set) Len() int {
	if s == nil {
		return 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.vals)
}

// load returns the snapshot scanners read, or nil when the Set holds
// nothing.
func (s *Set) load() *table {
	if s == nil {
		return nil
	}
	t := s.t.Load()
	if t == nil || t.maxLen.Load() == 0 {
		return nil
	}
	return t
}

// insert indexes a new pattern. Under s.mu.
func (s *Set) insert(pe *patEntry) {
	t := s.t.Load()
	if t == nil || t.full() {
		t = s.rebuild()
	}
	pe.off = t.pick(pe.s)
	pe.w = load48(pe.s, pe.off)
	pe.cur = &pattern{s: pe.s, off: pe.off, repl: s.repl(pe)}
	t.put(pe.cur, pe.w)
}

// publish updates the replacement of an existing pattern after its owners
// changed. Under s.mu.
func (s *Set) publish(pe *patEntry) {
	repl := s.repl(pe)
	if repl == pe.cur.repl {
		return
	}
	p := &pattern{s: pe.s, off: pe.off, repl: repl}
	s.t.Load().swap(pe.cur, p, pe.w)
	pe.cur = p
}

// repl returns the replacement of a pattern: that of the owner equal to
// it, else that of the least owner. Under s.mu.
func (s *Set) repl(pe *patEntry) string {
	best := pe.owners[0]
	for _, o := range pe.owners[1:] {
		if best != pe.s && (o == pe.s || o < best) {
			best = o
		}
	}
	return s.vals[best].repl
}

// rebuild publishes a fresh snapshot sized for the patterns held plus room
// to grow, and returns it. Under s.mu.
func (s *Set) rebuild() *table {
	t := newTable(len(s.pats))
	for _, pe := range s.pats {
		if pe.cur != nil {
			t.put(pe.cur, pe.w)
		}
	}
	s.t.Store(t)
	return t
}

// forms returns v and its distinct escaped forms, v first.
func forms(v string) []string {
	fs := []string{v}
	for _, f := range [...]string{
		url.QueryEscape(v),
		url.PathEscape(v),
		jsonEscape(v, false, false),
		jsonEscape(v, true, false),
		jsonEscape(v, false, true),
	} {
		if !slices.Contains(fs, f) {
			fs = append(fs, f)
		}
	}
	return fs
}

// jsonEscape returns v as it appears inside a JSON string: with the
// escapes every encoder writes (\" \\, control characters, and U+2028 and
// U+2029 as encoding/json and PHP write them); with slash, "/" as "\/" too;
// with html, "<", ">" and "&" as encoding/json writes them.
func jsonEscape(v string, slash, html bool) string {
	const hex = "0123456789abcdef"
	var b strings.Builder
	b.Grow(len(v))
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case c == '"' || c == '\\' || (slash && c == '/'):
			b.WriteByte('\\')
			b.WriteByte(c)
		case c == '\b':
			b.WriteString(`\b`)
		case c == '\f':
			b.WriteString(`\f`)
		case c == '\n':
			b.WriteString(`\n`)
		case c == '\r':
			b.WriteString(`\r`)
		case c == '\t':
			b.WriteString(`\t`)
		case c < 0x20 || (html && (c == '<' || c == '>' || c == '&')):
			b.WriteString(`\u00`)
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&0xf])
		case c == 0xe2 && i+2 < len(v) && v[i+1] == 0x80 && (v[i+2] == 0xa8 || v[i+2] == 0xa9):
			b.WriteString(`\u202`)
			b.WriteByte(hex[v[i+2]&0xf])
			i += 2
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}
