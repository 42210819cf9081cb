package proxy

import (
	"bytes"
	"net/url"
	"strings"
	"unicode/utf8"

	"github.com/valyala/fasthttp"
)

// target is a caller's request target after hygiene: the cleaned path that
// is routed, classified and forwarded, and the query without a fragment.
type target struct {
	path  string // cleaned and unescaped, starting with "/"
	query string // raw query, fragment removed
}

// errTarget is the answer to every request target that is not a plain
// origin-form path wxproxy can reason about.
func errTarget(why string) *Error {
	return &Error{Kind: KindBadRequest, Msg: "bad request target: " + why}
}

// cleanTarget checks the request target and cleans its path, before
// anything reads either (SPEC §4 "Request hygiene"):
//   - only origin-form targets ("/path?query"): absolute-form,
//     authority-form (CONNECT) and asterisk-form are refused;
//   - a fragment is dropped;
//   - an escaped "/" or "\" (%2F, %5C), a raw "\", a control character or
//     space, a ";", invalid UTF-8 or a malformed escape is refused, and so
//     is a query over 16 KiB;
//   - repeated "/" collapse, "." and ".." segments resolve (climbing above
//     the root is refused); one trailing "/" is kept.
//
// The result is what wxproxy routes, classifies and forwards, so no
// spelling of a path can reach WeChat as something wxproxy did not decide
// on. It reads the raw request-target as the caller sent it, never
// fasthttp's normalised URI.
func cleanTarget(h *fasthttp.RequestHeader) (target, error) {
	rawb := h.RequestURI()
	if h.IsConnect() || len(rawb) == 0 || rawb[0] != '/' {
		return target{}, errTarget("only origin-form targets (/path?query) are served")
	}
	if i := bytes.IndexByte(rawb, '#'); i >= 0 {
		rawb = rawb[:i]
	}
	raw := string(rawb)
	rawPath, query, _ := strings.Cut(raw, "?")
	if len(query) > maxQueryBytes {
		return target{}, errTarget("query longer than 16 KiB; send large data in the body")
	}
	if strings.IndexByte(rawPath, '\\') >= 0 {
		return target{}, errTarget(`"\" in the path`)
	}
	path := rawPath
	if strings.IndexByte(rawPath, '%') >= 0 {
		if hasEscapedSlash(rawPath) {
			return target{}, errTarget(`an escaped "/" or "\" (%2F, %5C) in the path`)
		}
		var err error
		if path, err = url.PathUnescape(rawPath); err != nil {
			return target{}, errTarget("malformed escape in the path")
		}
	}
	switch {
	case hasControl(path):
		return target{}, errTarget("a control character or space in the path")
	case strings.IndexByte(path, ';') >= 0:
		// Some servers read "/cgi-bin/token;x" as "/cgi-bin/token": a
		// spelling wxproxy would not classify as what WeChat may run.
		return target{}, errTarget(`";" in the path`)
	case !utf8.ValidString(path):
		return target{}, errTarget("the path is not valid UTF-8")
	case hasControl(query):
		return target{}, errTarget("a control character or space in the query")
	}
	path, ok := cleanPath(path)
	if !ok {
		return target{}, errTarget(`".." climbs above the root`)
	}
	return target{path: path, query: query}, nil
}

// checkFraming refuses the heads that net/http refused and fasthttp
// accepts or repairs, so that wxproxy and whatever stands in front of it
// cannot disagree on where a request ends (request smuggling) or what it
// says. It reads the raw header bytes as they arrived:
//   - a folded header line (obs-fold, a line starting with a space or
//     tab): fasthttp unfolds it, net/http refused it;
//   - a header name that is not an RFC 9110 token (a space before the
//     colon, "Content-Length : 5", is the classic smuggling spelling);
//   - Transfer-Encoding other than a single "chunked", and
//     Transfer-Encoding together with Content-Length (fasthttp lets
//     chunked win and closes the connection; a front proxy may have used
//     Content-Length);
//   - an HTTP/1.1 request without exactly one Host header.
//
// Duplicate Content-Length, a malformed Content-Length and bad chunk
// framing fasthttp refuses itself (parseError answers them through the
// funnel) or reports while the body is read (body.go).
func checkFraming(h *fasthttp.RequestHeader) error {
	raw := h.RawHeaders()
	if len(raw) == 0 {
		// No header line at all, or a request built in process.
		if h.IsHTTP11() && len(h.Host()) == 0 {
			return errFraming("an HTTP/1.1 request needs exactly one Host header")
		}
		return nil
	}
	var te, cl, hosts int
	for len(raw) > 0 {
		line := raw
		if i := bytes.IndexByte(raw, '\n'); i >= 0 {
			line, raw = raw[:i], raw[i+1:]
		} else {
			raw = nil
		}
		line = bytes.TrimSuffix(line, crStr)
		if len(line) == 0 {
			continue
		}
		if line[0] == ' ' || line[0] == '\t' {
			return errFraming("a folded header line (obs-fold)")
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 || !isToken(line[:colon]) {
			return errFraming("a malformed header name")
		}
		name, value := line[:colon], bytes.TrimSpace(line[colon+1:])
		switch {
		case bytes.EqualFold(name, strTE):
			te++
			if !bytes.EqualFold(value, strChunked) {
				return errFraming("Transfer-Encoding other than chunked")
			}
		case bytes.EqualFold(name, strCL):
			cl++
		case bytes.EqualFold(name, strHost):
			hosts++
		}
	}
	switch {
	case te > 1 || cl > 1:
		return errFraming("repeated Transfer-Encoding or Content-Length")
	case te > 0 && cl > 0:
		return errFraming("both Transfer-Encoding and Content-Length")
	case h.IsHTTP11() && hosts != 1:
		return errFraming("an HTTP/1.1 request needs exactly one Host header")
	}
	return nil
}

var (
	crStr      = []byte("\r")
	strTE      = []byte("Transfer-Encoding")
	strCL      = []byte("Content-Length")
	strHost    = []byte("Host")
	strChunked = []byte("chunked")
)

func errFraming(why string) *Error {
	return &Error{Kind: KindBadRequest, Msg: "malformed request: " + why}
}

// isToken reports whether b is an RFC 9110 token (a valid header name).
func isToken(b []byte) bool {
	for _, c := range b {
		if c >= 0x80 || !tokenChars[c] {
			return false
		}
	}
	return true
}

var tokenChars = func() (t [128]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c], t[c-'a'+'A'] = true, true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

// maxQueryBytes bounds a request's query. WeChat's APIs take their data
// in the body; a long query only serves to push what follows out of logs
// and echoes that keep a URL's first bytes.
const maxQueryBytes = 16 << 10

// hasControl reports whether s holds an ASCII control character or space.
func hasControl(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= 0x20 || s[i] == 0x7f {
			return true
		}
	}
	return false
}

// hasEscapedSlash reports whether s holds %2F or %5C in any case.
func hasEscapedSlash(s string) bool {
	for i := 0; i+2 < len(s); i++ {
		if s[i] != '%' {
			continue
		}
		a, b := s[i+1], s[i+2]|0x20
		if (a == '2' && b == 'f') || (a == '5' && b == 'c') {
			return true
		}
	}
	return false
}

// cleanPath collapses repeated "/", resolves "." and ".." segments and keeps
// one trailing "/" if p had one. ok is false when ".." climbs above the
// root. An already clean path is returned as is, without allocating.
func cleanPath(p string) (clean string, ok bool) {
	if isClean(p) {
		return p, true
	}
	trailing := strings.HasSuffix(p, "/") || strings.HasSuffix(p, "/.") || strings.HasSuffix(p, "/..")
	segs := make([]string, 0, strings.Count(p, "/"))
	for seg := range strings.SplitSeq(p, "/") {
		switch seg {
		case "", ".":
		case "..":
			if len(segs) == 0 {
				return "", false
			}
			segs = segs[:len(segs)-1]
		default:
			segs = append(segs, seg)
		}
	}
	var b strings.Builder
	b.Grow(len(p))
	for _, s := range segs {
		b.WriteByte('/')
		b.WriteString(s)
	}
	if trailing || b.Len() == 0 {
		b.WriteByte('/')
	}
	return b.String(), true
}

// isClean reports whether p starts with "/" and has no empty, "." or ".."
// segment (a single trailing "/" is allowed).
func isClean(p string) bool {
	if len(p) == 0 || p[0] != '/' {
		return false
	}
	for i := 0; i < len(p); i++ {
		if p[i] != '/' {
			continue
		}
		rest := p[i+1:]
		switch {
		case rest == "":
			return i > 0 || len(p) == 1 // one trailing "/" (or the root)
		case rest[0] == '/':
			return false
		case rest[0] == '.':
			if len(rest) == 1 || rest[1] == '/' || (rest[1] == '.' && (len(rest) == 2 || rest[2] == '/')) {
				return false
			}
		}
	}
	return true
}

// apiKey is the form of a cleaned path that classification compares:
// lower-case ASCII without one trailing "/". It allocates only when p has
// upper-case letters.
func apiKey(p string) string {
	if len(p) > 1 && p[len(p)-1] == '/' {
		p = p[:len(p)-1]
	}
	for i := 0; i < len(p); i++ {
		if c := p[i]; 'A' <= c && c <= 'Z' {
			b := []byte(p)
			for j := i; j < len(b); j++ {
				if 'A' <= b[j] && b[j] <= 'Z' {
					b[j] += 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return p
}
