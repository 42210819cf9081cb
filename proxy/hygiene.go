package proxy

import (
	"net/http"
	"net/url"
	"strings"
	"unicode/utf8"
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
//     authority-form (CONNECT), asterisk-form and anything whose parsed URL
//     has a scheme, host or opaque part are refused;
//   - a fragment is dropped;
//   - an escaped "/" or "\" (%2F, %5C), a raw "\", a control character or
//     space, a ";", invalid UTF-8 or a malformed escape is refused, and so
//     is a query over 16 KiB;
//   - repeated "/" collapse, "." and ".." segments resolve (climbing above
//     the root is refused); one trailing "/" is kept.
//
// The result is what wxproxy routes, classifies and forwards, so no
// spelling of a path can reach WeChat as something wxproxy did not decide
// on.
func cleanTarget(r *http.Request) (target, error) {
	raw := r.RequestURI
	if r.Method == http.MethodConnect || r.URL == nil || r.URL.Scheme != "" || r.URL.Host != "" || r.URL.Opaque != "" ||
		len(raw) == 0 || raw[0] != '/' {
		return target{}, errTarget("only origin-form targets (/path?query) are served")
	}
	if i := strings.IndexByte(raw, '#'); i >= 0 {
		raw = raw[:i]
	}
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
	}
	path, ok := cleanPath(path)
	if !ok {
		return target{}, errTarget(`".." climbs above the root`)
	}
	return target{path: path, query: query}, nil
}

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
