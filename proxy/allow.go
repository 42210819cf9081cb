package proxy

import (
	"errors"
	"strings"
)

// apiGlob is one compiled pattern of a caller key's API allowlist
// (callers.keys[].apis): segments of a cleaned path, lower-case, where "*"
// matches any characters within one segment and a "**" segment any number
// of segments (none included).
type apiGlob struct {
	segs []string
}

// compileAPIGlob compiles a pattern; config.CheckAPIGlob states the same
// rules for the configuration file.
func compileAPIGlob(g string) (apiGlob, error) {
	if !strings.HasPrefix(g, "/") {
		return apiGlob{}, errors.New("proxy: API glob must start with /")
	}
	g = strings.ToLower(strings.TrimSuffix(g[1:], "/"))
	if g == "" {
		return apiGlob{segs: []string{}}, nil
	}
	segs := strings.Split(g, "/")
	for _, s := range segs {
		if s == "" || (strings.Contains(s, "**") && s != "**") {
			return apiGlob{}, errors.New("proxy: API glob has an empty segment or ** inside a segment")
		}
	}
	return apiGlob{segs: segs}, nil
}

// match reports whether the classification key api (cleaned, lower-case,
// no trailing "/", see apiKey) matches. It does not allocate.
func (g apiGlob) match(api string) bool {
	if api == "/" {
		api = ""
	} else {
		api = strings.TrimPrefix(api, "/")
	}
	return matchSegs(g.segs, api)
}

// matchSegs matches pattern segments against the rest of a path ("a/b/c";
// "" is no segment). It is the greedy wildcard match with one backtrack
// point, at the level of segments ("**" is the wildcard): its cost is at
// most len(segs) × the path's segments, whatever the caller sends.
func matchSegs(segs []string, path string) bool {
	p, star := 0, -1
	var mark string // the path where the last "**" started matching
	for path != "" {
		seg, next, _ := strings.Cut(path, "/")
		switch {
		case p < len(segs) && segs[p] == "**":
			star, mark = p, path
			p++
		case p < len(segs) && matchSeg(segs[p], seg):
			p++
			path = next
		case star >= 0:
			// Let the "**" take one more segment and try again.
			p = star + 1
			_, mark, _ = strings.Cut(mark, "/")
			path = mark
		default:
			return false
		}
	}
	for p < len(segs) && segs[p] == "**" {
		p++
	}
	return p == len(segs)
}

// matchSeg matches one segment against a pattern whose "*" stands for any
// run of characters (no "/" can occur in seg): the classic greedy
// wildcard match with one backtrack point, linear in practice.
func matchSeg(pat, seg string) bool {
	p, s := 0, 0
	star, mark := -1, 0
	for s < len(seg) {
		switch {
		case p < len(pat) && pat[p] == '*':
			star, mark = p, s
			p++
		case p < len(pat) && pat[p] == seg[s]:
			p++
			s++
		case star >= 0:
			p = star + 1
			mark++
			s = mark
		default:
			return false
		}
	}
	for p < len(pat) && pat[p] == '*' {
		p++
	}
	return p == len(pat)
}
