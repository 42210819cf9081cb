package admin

import (
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestErrorLogRingNewestFirst(t *testing.T) {
	l := NewErrorLog(3, nil)
	t0 := time.Unix(1_700_000_000, 0)
	for i := range 7 {
		l.Record(ErrorEvent{Time: t0.Add(time.Duration(i) * time.Second), Kind: "upstream_error", App: "a", API: fmt.Sprintf("/p%d", i), Status: 502})
	}
	got, total := l.Recent()
	if total != 7 || len(got) != 3 || got[0].API != "/p6" || got[1].API != "/p5" || got[2].API != "/p4" {
		t.Fatalf("Recent = %d %+v", total, got)
	}
}

// A storm of one error folds into one entry; another error in between
// starts a new one.
func TestErrorLogFolds(t *testing.T) {
	l := NewErrorLog(3, nil)
	t0 := time.Unix(1_700_000_000, 0)
	l.Record(ErrorEvent{Time: t0, Kind: "rate_limited", App: "a", API: "/x", Message: "first"})
	for i := 1; i <= 1000; i++ {
		l.Record(ErrorEvent{Time: t0.Add(time.Duration(i) * time.Millisecond), Kind: "circuit_open", App: "b", API: "/y", Status: 503, Message: "m"})
	}
	got, total := l.Recent()
	if total != 1001 || len(got) != 2 || got[0].Count != 1000 || got[0].Kind != "circuit_open" ||
		!got[0].First.Equal(t0.Add(time.Millisecond)) || !got[0].Time.Equal(t0.Add(time.Second)) || got[1].Message != "first" {
		t.Fatalf("Recent = %d %+v", total, got)
	}
	if n := testing.AllocsPerRun(100, func() { l.Record(ErrorEvent{Kind: "circuit_open", App: "b", API: "/y"}) }); n != 0 {
		t.Errorf("a repeated error costs %v allocations, want 0", n)
	}
}

// Whatever callers send, an entry's texts stay within their bounds, as
// valid UTF-8, and a credential cut by the bound was scrubbed first.
func TestErrorLogBoundsAndScrubsBeforeCutting(t *testing.T) {
	secret := "SECRET-TOKEN-VALUE-0123456789abcdef"
	scrub := func(s string) string { return strings.ReplaceAll(s, secret, "***") }
	l := NewErrorLog(DefaultErrorLogSize, scrub)
	long := "/" + strings.Repeat("é", 40_000) // 80 KB of two-byte runes
	msg := strings.Repeat("x", maxErrorMessage-20) + secret
	for i := range 2 * DefaultErrorLogSize {
		l.Record(ErrorEvent{Kind: strings.Repeat("k", 1000), App: fmt.Sprint(i), API: long, Message: msg})
	}
	got, _ := l.Recent()
	if len(got) != DefaultErrorLogSize {
		t.Fatalf("%d entries, want %d", len(got), DefaultErrorLogSize)
	}
	for _, e := range got {
		if len(e.API) > maxErrorAPI || len(e.Message) > maxErrorMessage || len(e.Kind) > maxErrorField ||
			!utf8.ValidString(e.API) || !utf8.ValidString(e.Message) {
			t.Fatalf("entry out of bounds: api %d message %d kind %d bytes", len(e.API), len(e.Message), len(e.Kind))
		}
		if strings.Contains(e.Message, secret[:8]) {
			t.Fatalf("part of a credential survived the cut: %q", e.Message[len(e.Message)-20:])
		}
	}
}

func FuzzTruncate(f *testing.F) {
	f.Add("/cgi-bin/x", 8)
	f.Add("日本語のパス", 7)
	f.Add("\xff\xfe abc", 3)
	f.Fuzz(func(t *testing.T, s string, n int) {
		n = 4 + int(uint(n)%600)
		out := truncate(s, n)
		if len(out) > n {
			t.Fatalf("truncate(%q, %d) = %d bytes", s, n, len(out))
		}
		if len(s) <= n && out != s {
			t.Fatalf("truncate changed a short string")
		}
		if utf8.ValidString(s) && !utf8.ValidString(out) {
			t.Fatalf("truncate(%q, %d) = %q: not UTF-8", s, n, out)
		}
	})
}
