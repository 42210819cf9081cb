package platform_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/wxproxy/wxproxy/platform"
	"github.com/wxproxy/wxproxy/token"
)

// A captured authorization push replayed to the internet-facing listener
// (after wxproxy forgot the code it exchanged: a restart) made wxproxy ask
// WeChat to exchange the used code again on every replay, each an
// api_query_auth call on the component's quota. WeChat's refusal of a code
// (61009 invalid, 61010 expired) is final and remembered like a success.
func TestReplayedAuthorizationCostsOneExchange(t *testing.T) {
	e := newEnv(t, 0)
	store, tokens := new(platform.MemoryStore), new(token.MemoryStore)
	first := e.platform(store, tokens)
	e.pushTicket()
	eventually(t, "ready", func() bool { return first.Ready() == nil })
	e.authorize(merchant)
	// Restart: a new holder on the same store has forgotten the code.
	p := e.platform(store, tokens)
	eventually(t, "ready after restart", func() bool { return p.Ready() == nil })
	if _, err := p.Merchant(context.Background(), merchant); err != nil {
		t.Fatal(err)
	}
	before := e.sim.Stats().APICalls["/cgi-bin/component/api_query_auth"]
	for range 5 {
		if resp := e.replay(nil); resp.StatusCode == http.StatusOK {
			t.Errorf("a replay of a used code answered success")
		}
	}
	if n := e.sim.Stats().APICalls["/cgi-bin/component/api_query_auth"] - before; n > 1 {
		t.Errorf("5 replays of one used code: %d exchanges with WeChat, want at most 1", n)
	}
	if _, err := p.Merchant(context.Background(), merchant); err != nil {
		t.Errorf("the merchant was lost to the replays: %v", err)
	}
}
