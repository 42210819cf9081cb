package wechatsim

import (
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// recordN records n calls of about size bytes each in l and returns their
// rids, oldest first.
func recordN(tb testing.TB, l *ridLog, n, size int) []ridKey {
	tb.Helper()
	var keys []ridKey
	for i := range n {
		r := httptest.NewRequest("POST", fmt.Sprintf("/p?i=%d", i), nil) // RemoteAddr 192.0.2.1:1234
		c := newCall().(*call)
		c.begin(httptest.NewRecorder(), r, time.Unix(1741572000, 0))
		c.out = append(c.out, strings.Repeat("x", size-len("/pi=0192.0.2.1:1234"))...)
		l.record(c, c.start)
		keys = append(keys, c.rid)
	}
	return keys
}

// found reports which of keys l still holds.
func found(l *ridLog, keys []ridKey) []bool {
	out := make([]bool, len(keys))
	for i, k := range keys {
		_, out[i] = l.find(k)
	}
	return out
}

func TestRidLogBounds(t *testing.T) {
	tests := []struct {
		name                 string
		maxRecs, chunkSize   int
		maxChunks, n, size   int
		wantKept, wantChunks int // records kept (the newest), chunks allocated at most
	}{
		{name: "records bound", maxRecs: 3, chunkSize: 1000, maxChunks: 4, n: 10, size: 100, wantKept: 3, wantChunks: 1},
		{name: "byte bound", maxRecs: 100, chunkSize: 250, maxChunks: 2, n: 10, size: 100, wantKept: 4, wantChunks: 2},
		{name: "one chunk", maxRecs: 100, chunkSize: 250, maxChunks: 1, n: 10, size: 100, wantKept: 2, wantChunks: 1},
		{name: "forgotten chunks are reused", maxRecs: 2, chunkSize: 250, maxChunks: 100, n: 50, size: 100, wantKept: 2, wantChunks: 2},
		{name: "larger than a chunk", maxRecs: 10, chunkSize: 50, maxChunks: 4, n: 3, size: 100, wantKept: 0, wantChunks: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := newRidLog(tt.maxRecs, tt.chunkSize, tt.maxChunks)
			keys := recordN(t, l, tt.n, tt.size)
			got := found(l, keys)
			for i, ok := range got {
				if want := i >= tt.n-tt.wantKept; ok != want {
					t.Errorf("record %d of %d kept = %v, want %v", i, tt.n, ok, want)
				}
			}
			if got := len(l.chunks); got > tt.wantChunks {
				t.Errorf("%d chunks allocated, want at most %d", got, tt.wantChunks)
			}
			if got, want := len(l.newest(0, "", 0)), tt.wantKept; got != want {
				t.Errorf("newest lists %d records, want %d", got, want)
			}
		})
	}
}

func TestRidLogFields(t *testing.T) {
	l := newRidLog(10, 1<<10, 2)
	r := httptest.NewRequest("POST", "/cgi-bin/x?access_token=T&b=%20", strings.NewReader("request body"))
	c := newCall().(*call)
	c.begin(httptest.NewRecorder(), r, time.Unix(1741572000, 0))
	c.app = &appState{cfg: &appConfig{id: "wx1", num: 7}}
	if _, err := c.Write([]byte("the answer")); err != nil {
		t.Fatal(err)
	}
	c.drain()
	l.record(c, c.start.Add(1500*time.Millisecond))
	e, ok := l.find(c.rid)
	if !ok {
		t.Fatal("record not found")
	}
	want := [numFields]string{"/cgi-bin/x", "access_token=T&b=%20", "request body", "the answer", "192.0.2.1:1234"}
	if e.fields != want || e.at != 1741572000 || e.cost != 1500 || e.app != 7 {
		t.Errorf("record = %+v, want fields %q, app 7, at 1741572000, cost 1500", e, want)
	}
	if got := l.newest(7, "/cgi-bin/x", 1); len(got) != 1 || got[0] != c.rid.String() {
		t.Errorf("newest(app 7, /cgi-bin/x) = %v, want [%s]", got, c.rid)
	}
	if got := l.newest(8, "", 0); len(got) != 0 {
		t.Errorf("newest(app 8) = %v, want none", got)
	}
}

func TestCallCapsFields(t *testing.T) {
	big := strings.Repeat("b", maxRidField+10)
	c := newCall().(*call)
	c.begin(httptest.NewRecorder(), httptest.NewRequest("POST", "/x", strings.NewReader(big)), time.Now())
	c.drain()
	_, _ = c.Write([]byte(big))
	if len(c.in) != maxRidField || len(c.out) != maxRidField {
		t.Errorf("captured %d and %d bytes, want %d each", len(c.in), len(c.out), maxRidField)
	}
}

func TestParseRid(t *testing.T) {
	for _, k := range []ridKey{{unix: 0x67ce4f20, a: 0xdeadbeef, b: 0x1}, {unix: 1, a: 0, b: 0xffffffff}} {
		got, ok := parseRid(k.String())
		if !ok || got != k {
			t.Errorf("parseRid(%q) = %+v, %v; want %+v", k.String(), got, ok, k)
		}
	}
	for _, s := range []string{"", "-", "67ce4f20", "67ce4f20-deadbeef", "67ce4f20-deadbeef-0000000", "67ce4f20-deadbeef-000000001",
		"67CE4F20-deadbeef-00000001", "g7ce4f20-deadbeef-00000001", "-deadbeef-00000001", "1234567890abcdef-deadbeef-00000001",
		"67ce4f20-deadbeef-00000001-", " 67ce4f20-deadbeef-00000001"} {
		if _, ok := parseRid(s); ok {
			t.Errorf("parseRid(%q) accepted it", s)
		}
	}
}
