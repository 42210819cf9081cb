package proxy

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
)

// FuzzCleanTarget checks the request-target hygiene: whatever the caller
// sends, an accepted target has a clean path (no empty, "." or ".."
// segment, no "\", no NUL), cleaning it again changes nothing, and its
// classification key is its lower-case form without a trailing "/".
func FuzzCleanTarget(f *testing.F) {
	for _, s := range []string{
		"/cgi-bin/token", "/cgi-bin//clear_quota", "/cgi-bin/./clear_quota", "/cgi-bin/clear_quota/",
		"/a/../b", "/../x", "/%2e%2e/x", "/x%2Fy", "/x%5cy", "/x\\y", "/x?a=1#f", "//evil/x", "/x/.",
		"/x/..", "/%00", "/CGI-BIN/TOKEN/", "a:http://evil/x", "http://evil/x", "*", "/", "/x?#",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		u, err := url.ParseRequestURI(raw)
		if err != nil {
			return // net/http refuses it before any handler
		}
		_ = u
		var h fasthttp.RequestHeader
		h.SetMethod(http.MethodGet)
		h.SetRequestURI(raw)
		tg, err := cleanTarget(&h)
		if err != nil {
			return
		}
		p := tg.path
		if !isClean(p) {
			t.Fatalf("cleanTarget(%q) path %q is not clean", raw, p)
		}
		if strings.ContainsAny(p, "\\\x00") || strings.Contains(tg.query, "#") {
			t.Fatalf("cleanTarget(%q) = %q ? %q", raw, p, tg.query)
		}
		if again, ok := cleanPath(p); !ok || again != p {
			t.Fatalf("cleanPath(%q) = %q, %v; want it unchanged", p, again, ok)
		}
		k := apiKey(p)
		want := []byte(strings.TrimSuffix(p, "/"))
		for i, c := range want {
			if 'A' <= c && c <= 'Z' {
				want[i] = c + 'a' - 'A'
			}
		}
		if string(want) != k && p != "/" {
			t.Fatalf("apiKey(%q) = %q", p, k)
		}
		// What is forwarded is what was classified.
		sent := "http://up" + string(appendEscapedPath(nil, p))
		if u2, err := url.Parse(sent); err != nil || u2.Path != p || u2.Host != "up" {
			t.Fatalf("cleaned path %q is forwarded as %q, which reads back differently (%v)", p, sent, err)
		}
	})
}

// FuzzInjectToken checks the query rewrite: the result carries exactly
// one access_token, the app's, first; every other parameter keeps its
// order and bytes.
func FuzzInjectToken(f *testing.F) {
	for _, s := range []string{"", "a=1", "access_token=x&a=1", "access%5Ftoken=x", "a=1&&b=2", "access_token", "%zz=1&access_token=%", "a=1;access_token=2"} {
		f.Add(s, "TOKEN_abc-123")
	}
	f.Fuzz(func(t *testing.T, q, tok string) {
		if tok == "" {
			return
		}
		out := injectToken(q, tok)
		vals, _ := url.ParseQuery(out) // may fail on the caller's own bad escapes
		got := vals["access_token"]
		if len(got) != 1 || got[0] != tok {
			// ParseQuery stops at nothing but drops bad pairs; check by hand.
			n := 0
			for part := range strings.SplitSeq(out, "&") {
				if paramName(part) == "access_token" {
					n++
				}
			}
			if n != 1 || !strings.HasPrefix(out, "access_token="+url.QueryEscape(tok)) {
				t.Fatalf("injectToken(%q, %q) = %q: want exactly one access_token, the app's", q, tok, out)
			}
		}
		var kept []string
		for part := range strings.SplitSeq(q, "&") {
			if part != "" && paramName(part) != "access_token" {
				kept = append(kept, part)
			}
		}
		want := strings.Join(append([]string{"access_token=" + url.QueryEscape(tok)}, kept...), "&")
		if out != want {
			t.Fatalf("injectToken(%q, %q) = %q, want %q", q, tok, out, want)
		}
	})
}

// FuzzCheckPageURL checks the url of /wxproxy/jssdk/config: whatever a
// caller sends, an accepted URL is an absolute http(s) URL of at most
// maxPageURL bytes with a host, without a fragment, spaces or control
// characters, and is the caller's text up to its first '#'.
func FuzzCheckPageURL(f *testing.F) {
	for _, s := range []string{
		"http://mp.weixin.qq.com?params=value", "https://a.example/x?y=1#/z", "http://", "javascript:alert(1)",
		"HTTP://a/", "http://u:p@a/", "//a/b", "/a", "http://a b/", "http://[::1]:80/x", "https://a/%zz", "http:/a",
		"https://a/\x00", "ftp://a/", "http://a#", "",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		page, err := checkPageURL(raw)
		if err != nil {
			return
		}
		if len(raw) > maxPageURL || page == "" || strings.Contains(page, "#") || !strings.HasPrefix(raw, page) {
			t.Fatalf("checkPageURL(%q) = %q", raw, page)
		}
		if len(raw) > len(page) && raw[len(page)] != '#' {
			t.Fatalf("checkPageURL(%q) = %q: not cut at the fragment", raw, page)
		}
		if strings.ContainsFunc(page, func(c rune) bool { return c <= ' ' || c == 0x7f }) {
			t.Fatalf("checkPageURL(%q) accepted a space or control character", raw)
		}
		u, err := url.Parse(page)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
			t.Fatalf("checkPageURL(%q) accepted %q", raw, page)
		}
	})
}
