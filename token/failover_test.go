package token_test

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wxproxy/wxproxy/failover"
	"github.com/wxproxy/wxproxy/token"
	"github.com/wxproxy/wxproxy/wechatsim"
)

// refusing returns the URL of a loopback port nobody listens on.
func refusing(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	return "http://" + ln.Addr().String()
}

// failing is an upstream that answers every call with HTTP 502, and counts
// them.
func failing(tb testing.TB) (string, *atomic.Int64) {
	tb.Helper()
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		n.Add(1)
		w.WriteHeader(http.StatusBadGateway)
	}))
	tb.Cleanup(srv.Close)
	return srv.URL, &n
}

func upstreamSet(tb testing.TB, urls ...string) *failover.Set {
	tb.Helper()
	s, err := failover.New(failover.Options{URLs: urls, Settings: failover.Settings{Failures: 2, OpenTimeout: time.Hour}})
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// TestFetchFailover: a token fetch whose upstream refuses the connection
// goes at once to the next upstream (and says so); after the failure count
// the refusing upstream is down. A fetch that reached an upstream which
// failed (HTTP 502) is not sent anywhere else.
func TestFetchFailover(t *testing.T) {
	sim, simURL := newSimServer(t, wechatsim.Options{})
	dead := refusing(t)
	set := upstreamSet(t, dead, simURL)
	var moves []string
	f := &token.HTTPFetcher{Mode: token.Stable, AppID: simAppID, Secret: simSecret, Failover: set,
		OnFailover: func(from, to string) { moves = append(moves, from+" -> "+to) }}
	for i := range 2 {
		tok, err := f.Fetch(context.Background(), false)
		if err != nil || tok.Value == "" {
			t.Fatalf("fetch %d through failover: %v", i, err)
		}
	}
	if len(moves) != 2 || moves[0] != dead+" -> "+simURL {
		t.Errorf("failovers %v, want two from %s to %s", moves, dead, simURL)
	}
	if set.Up(0) || !set.Up(1) {
		t.Errorf("after 2 refused connections: up = %v,%v; want down,up", set.Up(0), set.Up(1))
	}

	bad, hits := failing(t)
	before := sim.Stats().TokenFetches[simAppID].Stable
	f = &token.HTTPFetcher{Mode: token.Stable, AppID: simAppID, Secret: simSecret, Failover: upstreamSet(t, bad, simURL)}
	if _, err := f.Fetch(context.Background(), false); err == nil {
		t.Fatal("a fetch answered 502 succeeded")
	}
	if hits.Load() != 1 || sim.Stats().TokenFetches[simAppID].Stable != before {
		t.Errorf("502 upstream hit %d times, simulator fetched %d more: a fetch that was sent must not be sent again",
			hits.Load(), sim.Stats().TokenFetches[simAppID].Stable-before)
	}
}

// TestTicketFetchFailover: ticket fetches follow the app's upstreams like
// token fetches: a refused connection moves at once to the next one, a
// 502 answer is not resent.
func TestTicketFetchFailover(t *testing.T) {
	sim, simURL := newSimServer(t, wechatsim.Options{})
	tokens, err := token.New(token.Options{App: "main", Mode: token.Stable,
		Fetcher: &token.HTTPFetcher{Mode: token.Stable, Upstream: simURL, AppID: simAppID, Secret: simSecret}})
	if err != nil {
		t.Fatal(err)
	}
	dead := refusing(t)
	var moves []string
	src := &token.TicketSource{Type: token.TicketJSAPI, Failover: upstreamSet(t, dead, simURL), Tokens: tokens,
		OnFailover: func(from, to string) { moves = append(moves, from+" -> "+to) }}
	tk, err := src.Fetch(context.Background(), false)
	if err != nil || tk.Value == "" {
		t.Fatalf("ticket through failover: %v", err)
	}
	if len(moves) != 1 || moves[0] != dead+" -> "+simURL || ticketFetches(sim, "jsapi") != 1 {
		t.Errorf("failovers %v, ticket fetches %d; want one move to the simulator and one fetch", moves, ticketFetches(sim, "jsapi"))
	}

	bad, hits := failing(t)
	src = &token.TicketSource{Type: token.TicketJSAPI, Failover: upstreamSet(t, bad, simURL), Tokens: tokens}
	if _, err := src.Fetch(context.Background(), false); err == nil {
		t.Fatal("a ticket fetch answered 502 succeeded")
	}
	if hits.Load() != 1 || ticketFetches(sim, "jsapi") != 1 {
		t.Errorf("502 upstream hit %d times, simulator ticket fetches %d: a fetch that was sent must not be sent again", hits.Load(), ticketFetches(sim, "jsapi"))
	}
}
