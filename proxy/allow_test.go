package proxy

import (
	"strings"
	"testing"
)

func TestAPIGlob(t *testing.T) {
	tests := []struct {
		glob string
		api  string
		want bool
	}{
		{"/cgi-bin/message/**", "/cgi-bin/message/custom/send", true},
		{"/cgi-bin/message/**", "/cgi-bin/message", true},
		{"/cgi-bin/message/**", "/cgi-bin/messages/x", false},
		{"/cgi-bin/message/**", "/cgi-bin/token", false},
		{"/cgi-bin/*/send", "/cgi-bin/custom/send", true},
		{"/cgi-bin/*/send", "/cgi-bin/message/custom/send", false},
		{"/cgi-bin/media/get*", "/cgi-bin/media/get", true},
		{"/cgi-bin/media/get*", "/cgi-bin/media/getjssdk", true},
		{"/cgi-bin/media/get*", "/cgi-bin/media/upload", false},
		{"/CGI-BIN/Token", "/cgi-bin/token", true},
		{"/cgi-bin/token/", "/cgi-bin/token", true},
		{"/cgi-bin/token", "/cgi-bin/token/x", false},
		{"/**/send", "/cgi-bin/message/custom/send", true},
		{"/**/send", "/send", true},
		{"/**/send", "/cgi-bin/sender", false},
		{"/a/**/b/**/c", "/a/x/b/y/z/c", true},
		{"/a/**/b/**/c", "/a/x/y/c", false},
		{"/**", "/", true},
		{"/", "/", true},
		{"/", "/x", false},
		{"/wxproxy/jssdk/*", "/wxproxy/jssdk/signature", true},
		{"/*", "/cgi-bin/token", false},
		{"/a*b*c", "/aXbYc", true},
		{"/a*b*c", "/aXbY", false},
	}
	for _, tt := range tests {
		g, err := compileAPIGlob(tt.glob)
		if err != nil {
			t.Fatalf("compileAPIGlob(%q): %v", tt.glob, err)
		}
		if got := g.match(tt.api); got != tt.want {
			t.Errorf("%q.match(%q) = %v, want %v", tt.glob, tt.api, got, tt.want)
		}
	}
	for _, bad := range []string{"cgi-bin/x", "/a//b", "/a**/b", "/a/x**"} {
		if _, err := compileAPIGlob(bad); err == nil {
			t.Errorf("compileAPIGlob(%q) = nil error, want one", bad)
		}
	}
}

// TestAPIGlobLongPath shows a hostile path with many segments costs a
// bounded number of steps against many "**": no backtracking blow-up.
func TestAPIGlobLongPath(t *testing.T) {
	g, err := compileAPIGlob("/**/a/**/a/**/a/**/a/**/b")
	if err != nil {
		t.Fatal(err)
	}
	api := strings.Repeat("/a", 20000)
	if g.match(api) {
		t.Fatal("matched a path without b")
	}
	if testing.AllocsPerRun(10, func() { g.match("/cgi-bin/a/a/a/a/b") }) != 0 {
		t.Error("match allocates")
	}
}

// refMatch is the obvious recursive matcher the fast one must agree with.
func refMatch(segs, path []string) bool {
	if len(segs) == 0 {
		return len(path) == 0
	}
	if segs[0] == "**" {
		for i := 0; i <= len(path); i++ {
			if refMatch(segs[1:], path[i:]) {
				return true
			}
		}
		return false
	}
	return len(path) > 0 && refSeg(segs[0], path[0]) && refMatch(segs[1:], path[1:])
}

func refSeg(p, s string) bool {
	if p == "" {
		return s == ""
	}
	if p[0] == '*' {
		for i := 0; i <= len(s); i++ {
			if refSeg(p[1:], s[i:]) {
				return true
			}
		}
		return false
	}
	return s != "" && p[0] == s[0] && refSeg(p[1:], s[1:])
}

func FuzzAPIGlob(f *testing.F) {
	f.Add("/cgi-bin/message/**", "/cgi-bin/message/custom/send")
	f.Add("/**/a*b/**", "/x/aXb/y")
	f.Add("/a/*/c", "/a/b/c")
	f.Add("/**", "/")
	f.Fuzz(func(t *testing.T, glob, api string) {
		if len(glob) > 64 || len(api) > 128 {
			return
		}
		g, err := compileAPIGlob(glob)
		if err != nil {
			return
		}
		api = apiKey(api)
		if !strings.HasPrefix(api, "/") || strings.Contains(api, "//") || (api != "/" && strings.HasSuffix(api, "/")) {
			return // not a cleaned path
		}
		var path []string
		if api != "/" {
			path = strings.Split(api[1:], "/")
		}
		if got, want := g.match(api), refMatch(g.segs, path); got != want {
			t.Errorf("%q.match(%q) = %v, reference says %v", glob, api, got, want)
		}
	})
}
