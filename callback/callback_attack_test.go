package callback_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
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
