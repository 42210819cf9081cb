package failover

import (
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestSetDownProbeUp(t *testing.T) {
	var now atomic.Int64
	var changes []string
	s, err := New(Options{URLs: []string{"a", "b"}, Settings: Settings{Failures: 2, OpenTimeout: time.Minute},
		Now:      func() time.Time { return time.Unix(0, now.Load()) },
		OnChange: func(i int, up bool) { changes = append(changes, s2(i, up)) }})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		i, probe, ok := s.Next(0)
		if !ok || i != 0 || probe {
			t.Fatalf("Next = %d %v %v, want 0", i, probe, ok)
		}
		s.Report(i, probe, Failure)
	}
	if s.Up(0) {
		t.Fatal("a still up after 2 failures")
	}
	if i, _, _ := s.Next(0); i != 1 {
		t.Fatalf("Next = %d, want the failover", i)
	}
	now.Add(int64(time.Minute))
	i, probe, _ := s.Next(0)
	if i != 0 || !probe {
		t.Fatalf("after open_timeout Next = %d probe %v, want a probe of 0", i, probe)
	}
	if j, p, _ := s.Next(0); j != 1 || p {
		t.Errorf("a second caller during the probe got %d %v, want 1", j, p)
	}
	s.Report(0, true, Success)
	if !s.Up(0) || len(changes) != 2 || changes[0] != "0 down" || changes[1] != "0 up" {
		t.Errorf("up %v, changes %v", s.Up(0), changes)
	}
	// A neutral probe outcome releases the probe without a verdict.
	s.Report(0, false, Failure)
	s.Report(0, false, Failure)
	now.Add(int64(time.Minute))
	_, probe, _ = s.Next(0)
	s.Report(0, probe, Neutral)
	if _, probe2, _ := s.Next(0); !probe2 {
		t.Error("the probe was not released by a neutral outcome")
	}
}

func s2(i int, up bool) string {
	if up {
		return string(rune('0'+i)) + " up"
	}
	return string(rune('0'+i)) + " down"
}

func TestDoFailsOverOnlyWhenNotSent(t *testing.T) {
	s, _ := New(Options{URLs: []string{"a", "b", "c"}, Settings: Settings{Failures: 5}})
	var tried []string
	var moves []int
	err := s.Do(func(base string) (Outcome, error) {
		tried = append(tried, base)
		if base == "a" {
			return Failure, &DialError{Err: errors.New("refused")}
		}
		return Failure, errors.New("timeout after sending")
	}, func(from, to int) { moves = append(moves, from, to) })
	if err == nil || NotSent(err) || len(tried) != 2 || tried[1] != "b" || len(moves) != 2 || moves[1] != 1 {
		t.Errorf("Do = %v, tried %v, moves %v; want a then b, and b's error", err, tried, moves)
	}
	all, _ := New(Options{URLs: []string{"a"}, Settings: Settings{Failures: 1, OpenTimeout: time.Hour}})
	all.Report(0, false, Failure)
	if err := all.Do(func(string) (Outcome, error) { return Success, nil }, nil); !errors.Is(err, ErrAllDown) {
		t.Errorf("every upstream down: %v, want ErrAllDown", err)
	}
}

// TestNotSent: a refused connection or a failed TLS handshake is "not
// sent" whether a dialer wrapped it in a DialError or net/http reports it
// plainly; a connection cut after the request was written is not.
func TestNotSent(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := "http://" + ln.Addr().String()
	ln.Close()
	_, err = http.Get(refused)
	if err == nil || !NotSent(err) {
		t.Errorf("refused connection: NotSent(%v) = false", err)
	}
	if !NotSent(fmt.Errorf("wrapped: %w", &DialError{Err: errors.New("refused")})) {
		t.Error("a wrapped DialError is not NotSent")
	}
	untrusted := httptest.NewUnstartedServer(http.NotFoundHandler())
	untrusted.Config.ErrorLog = log.New(io.Discard, "", 0) // the handshake failure is expected
	untrusted.StartTLS()
	defer untrusted.Close()
	if _, err = http.Get(untrusted.URL); err == nil || !NotSent(err) {
		t.Errorf("certificate that does not verify: NotSent(%v) = false", err)
	}
	cut := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		c, _, _ := http.NewResponseController(w).Hijack()
		c.Close()
	}))
	defer cut.Close()
	_, err = http.Post(cut.URL, "application/json", strings.NewReader("{}"))
	if err == nil || NotSent(err) {
		t.Errorf("connection cut after sending: NotSent(%v) = true", err)
	}
}
