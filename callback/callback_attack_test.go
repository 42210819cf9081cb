package callback_test

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wxproxy/wxproxy/callback"
)

// ctxReceiver hands the push's context to a func field.
type ctxReceiver struct {
	push func(ctx context.Context) error
}

func (c ctxReceiver) HandlePush(ctx context.Context, _ url.Values, _ []byte) error {
	return c.push(ctx)
}
func (c ctxReceiver) VerifyURL(context.Context, url.Values) ([]byte, error) {
	return nil, callback.ErrSignature
}

// Applying a push is bounded by HandleTimeout even though a disconnecting
// sender does not cancel it: a push whose handling hangs (an exchange of
// its authorization code waiting on a component token that never comes, a
// slow store) must not hold a goroutine and its connection for ever, or
// replayed pushes pile them up. Before the fix the handler's context had
// no deadline at all (context.WithoutCancel drops it).
func TestAttackPushHandlingIsBounded(t *testing.T) {
	var hung atomic.Int32
	rcv := ctxReceiver{push: func(ctx context.Context) error {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Second):
			hung.Add(1)
			return nil
		}
	}}
	srv := httptest.NewServer(callback.New(callback.Options{Receivers: map[string]callback.Receiver{"acme": rcv}, HandleTimeout: 50 * time.Millisecond}))
	defer srv.Close()
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Post(srv.URL+"/callback/acme", "text/xml", strings.NewReader("<xml/>"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || hung.Load() != 0 {
		t.Errorf("a hanging push: HTTP %d, ran past HandleTimeout: %v; want 503 when HandleTimeout ends", resp.StatusCode, hung.Load() != 0)
	}
}

// The plain-signature URL check (Official Account style) echoes echostr,
// which the signature does not cover: anyone who saw one signed push URL
// can make the internet-facing listener answer any text. It goes out as
// text/plain that no browser may sniff into HTML.
func TestAttackEchoIsNeverMarkup(t *testing.T) {
	rcv := fake{
		push:   func(url.Values, []byte) error { return nil },
		verify: func(q url.Values) ([]byte, error) { return []byte(q.Get("echostr")), nil },
	}
	srv := httptest.NewServer(callback.New(callback.Options{Receivers: map[string]callback.Receiver{"acme": rcv}}))
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/callback/acme?echostr=" + url.QueryEscape("<html><script>alert(1)</script>"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if ct, nosniff := resp.Header.Get("Content-Type"), resp.Header.Get("X-Content-Type-Options"); !strings.HasPrefix(ct, "text/plain") || nosniff != "nosniff" {
		t.Errorf("echo answered as %q, X-Content-Type-Options %q; want text/plain and nosniff", ct, nosniff)
	}
}

// The listener faces the internet: refused pushes cost anyone nothing to
// send, so they must not cost a log line each (a disk or log pipeline
// flooded by strangers). They are all counted; the log gets a line now
// and then with how many were refused.
func TestAttackRefusedPushesDoNotFloodTheLog(t *testing.T) {
	var logs syncBuf
	var counted atomic.Int32
	rcv := fake{
		push: func(q url.Values, _ []byte) error {
			if q.Get("case") == "bad" {
				return callback.ErrBadPush
			}
			return callback.ErrSignature
		},
		verify: func(url.Values) ([]byte, error) { return nil, callback.ErrSignature },
	}
	srv := httptest.NewServer(callback.New(callback.Options{Receivers: map[string]callback.Receiver{"acme": rcv},
		Logger: slog.New(slog.NewJSONHandler(&logs, nil)), OnPush: func(string, string) { counted.Add(1) }}))
	defer srv.Close()
	const n = 200
	for i := range n {
		u := srv.URL + "/callback/acme"
		if i%2 == 0 {
			u += "?case=bad"
		}
		resp, err := http.Post(u, "text/xml", strings.NewReader("<xml/>"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp, err = http.Get(srv.URL + "/callback/acme?echostr=x"); err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	if lines := strings.Count(logs.String(), "\n"); lines > 6 {
		t.Errorf("%d refused requests wrote %d log lines; want a few", 2*n, lines)
	}
	if counted.Load() != 2*n {
		t.Errorf("counted %d refused requests, want %d", counted.Load(), 2*n)
	}
}

type syncBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Strangers can open connections to the internet-facing listener and send
// nothing; each costs a goroutine and buffers until the header timeout.
// The listener holds at most MaxConns at once and closes the rest at
// once, so its memory is bounded whatever the internet does.
func TestAttackConnectionsAreBounded(t *testing.T) {
	rcv := fake{push: func(url.Values, []byte) error { return nil }, verify: func(url.Values) ([]byte, error) { return nil, callback.ErrSignature }}
	s := callback.New(callback.Options{Receivers: map[string]callback.Receiver{"acme": rcv}, MaxConns: 8})
	srv := httptest.NewUnstartedServer(s)
	srv.Config = s.HTTPServer()
	srv.Start()
	defer srv.Close()
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range 24 {
		c, err := net.Dial("tcp", srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	var open atomic.Int32
	var wg sync.WaitGroup
	deadline := time.Now().Add(time.Second) // well within ReadHeaderTimeout
	for _, c := range conns {
		_ = c.SetReadDeadline(deadline)
		wg.Go(func() {
			var b [1]byte
			if _, err := c.Read(b[:]); err != nil {
				if ne, ok := err.(net.Error); ok && ne.Timeout() {
					open.Add(1) // still held by the server
				}
			}
		})
	}
	wg.Wait()
	if n := open.Load(); n > 8 || n == 0 {
		t.Errorf("%d idle connections held open; want at most MaxConns (8), and some", n)
	}
}
