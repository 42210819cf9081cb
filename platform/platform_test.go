package platform_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wxproxy/wxproxy/callback"
	"github.com/wxproxy/wxproxy/platform"
	"github.com/wxproxy/wxproxy/token"
	"github.com/wxproxy/wxproxy/wechat"
	"github.com/wxproxy/wxproxy/wechatsim"
	"github.com/wxproxy/wxproxy/wxcrypt"
)

const (
	compID     = "wxc0ffee0000000001"
	compSecret = "component-secret-0123456789abcdef"
	msgToken   = "msgtoken"
	aesKey     = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"
	merchant   = "wxmerchant00000001"
)

// env is a simulator with one component, pushing to a callback listener
// that serves the platforms under test.
type env struct {
	tb   testing.TB
	sim  *wechatsim.Server
	simU string
	mu   sync.Mutex
	rcv  map[string]callback.Receiver
	cb   *httptest.Server
	// lastPush is the raw last push (query, body), for replays.
	lastQuery url.Values
	lastBody  []byte
}

func newEnv(tb testing.TB, ttl time.Duration) *env {
	tb.Helper()
	e := &env{tb: tb, rcv: map[string]callback.Receiver{}}
	e.cb = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		e.mu.Lock()
		e.lastQuery, e.lastBody = r.URL.Query(), body
		srv := callback.New(callback.Options{Receivers: e.rcv})
		e.mu.Unlock()
		r.Body = io.NopCloser(strings.NewReader(string(body)))
		srv.ServeHTTP(w, r)
	}))
	tb.Cleanup(e.cb.Close)
	sim, err := wechatsim.New(wechatsim.Options{
		Components: []wechatsim.Component{{AppID: compID, Secret: compSecret, Token: msgToken, AESKey: aesKey}},
		Callback:   e.cb.URL + "/callback/acme",
		TokenTTL:   ttl,
	})
	if err != nil {
		tb.Fatal(err)
	}
	e.sim = sim
	s := httptest.NewServer(sim)
	tb.Cleanup(s.Close)
	e.simU = s.URL
	return e
}

// platform starts a platform named acme on store and tokens.
func (e *env) platform(store platform.Store, tokens token.Store, o ...func(*platform.Options)) *platform.Platform {
	e.tb.Helper()
	crypt, err := wxcrypt.New(wxcrypt.Options{Token: msgToken, AESKey: aesKey})
	if err != nil {
		e.tb.Fatal(err)
	}
	opts := platform.Options{Name: "acme", ComponentAppID: compID, Secret: compSecret, Crypter: crypt, Upstream: e.simU,
		Store: store, Tokens: tokens, Tick: 20 * time.Millisecond, MinBackoff: 50 * time.Millisecond}
	for _, f := range o {
		f(&opts)
	}
	p, err := platform.New(opts)
	if err != nil {
		e.tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); p.Run(ctx) }()
	e.tb.Cleanup(func() { cancel(); <-done })
	e.mu.Lock()
	e.rcv["acme"] = p
	e.mu.Unlock()
	return p
}

func (e *env) pushTicket() wechatsim.PushResult {
	e.tb.Helper()
	res, err := e.sim.PushTicket(compID)
	if err != nil || res.Status != http.StatusOK || res.Body != "success" {
		e.tb.Fatalf("push ticket: %+v, %v", res, err)
	}
	return res
}

func (e *env) authorize(appid string) wechatsim.PushResult {
	e.tb.Helper()
	res, err := e.sim.Authorize(compID, appid)
	if err != nil || res.Status != http.StatusOK || res.Body != "success" {
		e.tb.Fatalf("authorize %s: %+v, %v", appid, res, err)
	}
	return res
}

// replay sends the last push again, optionally altered.
func (e *env) replay(alter func(q url.Values, body []byte) []byte) *http.Response {
	e.tb.Helper()
	e.mu.Lock()
	q := url.Values{}
	for k, v := range e.lastQuery {
		q[k] = append([]string(nil), v...)
	}
	body := append([]byte(nil), e.lastBody...)
	e.mu.Unlock()
	if alter != nil {
		body = alter(q, body)
	}
	resp, err := http.Post(e.cb.URL+"/callback/acme?"+q.Encode(), "text/xml", strings.NewReader(string(body)))
	if err != nil {
		e.tb.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

// eventually polls cond until it holds or 10 seconds pass.
func eventually(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// apiAs calls a business API on the simulator with tok and returns the errcode.
func (e *env) apiAs(tok string) (int, string) {
	e.tb.Helper()
	resp, err := http.Get(e.simU + "/cgi-bin/user/get?access_token=" + url.QueryEscape(tok))
	if err != nil {
		e.tb.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	code, _ := wechat.ScanErrcode(b)
	return code, string(b)
}

func TestChain(t *testing.T) {
	e := newEnv(t, 0)
	p := e.platform(nil, nil)
	if err := p.Ready(); err == nil || !strings.Contains(err.Error(), "component_verify_ticket") {
		t.Fatalf("Ready before a ticket = %v", err)
	}
	_, err := p.Component().Get(context.Background())
	var api *wechat.APIError
	if !errors.As(err, &api) || api.Code != wechat.CodeComponentTicketInvalid {
		t.Fatalf("component token without a ticket: %v, want 61006", err)
	}
	e.pushTicket()
	eventually(t, "the component token", func() bool { return p.Ready() == nil })

	res := e.authorize(merchant)
	m, err := p.Merchant(context.Background(), merchant)
	if err != nil {
		t.Fatal(err)
	}
	tok := m.Current()
	if !tok.Valid(time.Now()) {
		t.Fatal("no merchant token after the authorization push")
	}
	if code, body := e.apiAs(tok.Value); code != 0 || !strings.Contains(body, `"appid":"`+merchant+`"`) {
		t.Fatalf("merchant token on a business API: %d %s", code, body)
	}
	fetches := e.sim.Stats().TokenFetches[merchant].Authorizer

	// A duplicated authorization push is harmless.
	if resp := e.replay(nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("duplicate push: HTTP %d", resp.StatusCode)
	}
	if got := e.sim.Stats().TokenFetches[merchant].Authorizer; got != fetches {
		t.Errorf("duplicate push fetched: %d → %d", fetches, got)
	}
	// An SDK exchanging the same code (from its redirect) gets the push's result.
	if auth, err := p.ExchangeCode(context.Background(), res.AuthorizationCode); err != nil || auth.AppID != merchant {
		t.Errorf("ExchangeCode after the push = %+v, %v", auth, err)
	}
	if got := e.sim.Stats().TokenFetches[merchant].Authorizer; got != fetches {
		t.Errorf("a second exchange of one code fetched: %d → %d", fetches, got)
	}

	// Compare-and-refresh: the token dies; concurrent callers cause one fetch.
	e.sim.Invalidate(merchant)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if _, err := m.Invalidate(context.Background(), tok.Value); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if got := e.sim.Stats().TokenFetches[merchant].Authorizer; got != fetches+1 {
		t.Errorf("authorizer fetches after 8 concurrent invalidations = %d, want %d", got, fetches+1)
	}
	if code, _ := e.apiAs(m.Current().Value); code != 0 {
		t.Errorf("refreshed merchant token: errcode %d", code)
	}

	// A dead component token is refreshed and the merchant fetch retried once.
	e.sim.Invalidate(compID)
	if _, err := m.Invalidate(context.Background(), m.Current().Value); err != nil {
		t.Fatalf("merchant refresh with a dead component token: %v", err)
	}

	// Unauthorized: the merchant is dropped.
	if res, err := e.sim.Unauthorize(compID, merchant); err != nil || res.Status != http.StatusOK {
		t.Fatalf("unauthorize: %+v %v", res, err)
	}
	if _, err := p.Merchant(context.Background(), merchant); !errors.Is(err, platform.ErrUnknownMerchant) {
		t.Errorf("merchant after unauthorized: %v", err)
	}
}

func TestPushRefusals(t *testing.T) {
	e := newEnv(t, 0)
	p := e.platform(nil, nil)
	first := e.pushTicket()
	eventually(t, "ticket", func() bool { return p.Ticket() != nil && p.Ticket().Value == first.Ticket })
	for _, tc := range []struct {
		name   string
		alter  func(q url.Values, body []byte) []byte
		status int
	}{
		{"bad msg_signature", func(q url.Values, b []byte) []byte { q.Set("msg_signature", strings.Repeat("0", 40)); return b }, 401},
		{"no msg_signature", func(q url.Values, b []byte) []byte { q.Del("msg_signature"); return b }, 401},
		{"altered timestamp", func(q url.Values, b []byte) []byte { q.Set("timestamp", "1"); return b }, 401},
		{"not XML", func(q url.Values, b []byte) []byte { return []byte("hello") }, 400},
		{"too large", func(q url.Values, b []byte) []byte { return make([]byte, 70<<10) }, 413},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if resp := e.replay(tc.alter); resp.StatusCode != tc.status {
				t.Errorf("HTTP %d, want %d", resp.StatusCode, tc.status)
			}
			if got := p.Ticket().Value; got != first.Ticket {
				t.Errorf("ticket changed by a refused push")
			}
		})
	}
	// A push signed for another component (another token) is refused.
	other, _ := wxcrypt.New(wxcrypt.Options{Token: "other", AESKey: aesKey})
	body, sig, _ := other.Seal([]byte("<xml><AppId>"+compID+"</AppId><InfoType>component_verify_ticket</InfoType><ComponentVerifyTicket>forged</ComponentVerifyTicket><CreateTime>9999999999</CreateTime></xml>"), compID, "1", "2")
	resp, err := http.Post(e.cb.URL+"/callback/acme?timestamp=1&nonce=2&msg_signature="+sig, "text/xml", strings.NewReader(string(body)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 || p.Ticket().Value != first.Ticket {
		t.Errorf("forged push: HTTP %d, ticket changed %v", resp.StatusCode, p.Ticket().Value != first.Ticket)
	}
	// Right token, wrong receive id (another component's key and id).
	good, _ := wxcrypt.New(wxcrypt.Options{Token: msgToken, AESKey: aesKey})
	body, sig, _ = good.Seal([]byte("<xml><InfoType>component_verify_ticket</InfoType><ComponentVerifyTicket>forged</ComponentVerifyTicket></xml>"), "wxother", "1", "2")
	resp, _ = http.Post(e.cb.URL+"/callback/acme?timestamp=1&nonce=2&msg_signature="+sig, "text/xml", strings.NewReader(string(body)))
	resp.Body.Close()
	if resp.StatusCode != 400 || p.Ticket().Value != first.Ticket {
		t.Errorf("wrong receive id: HTTP %d", resp.StatusCode)
	}
	// Only /callback/{known platform}; other paths and methods: 404/405.
	for _, u := range []string{"/", "/callback/", "/callback/other", "/callback/acme/x", "/admin/apps", "/cgi-bin/token"} {
		resp, err := http.Get(e.cb.URL + u)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: HTTP %d, want 404", u, resp.StatusCode)
		}
	}
	req, _ := http.NewRequest(http.MethodPut, e.cb.URL+"/callback/acme", nil)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("PUT: %v %v", resp.StatusCode, err)
	}
	// A late push (an older ticket replayed after a newer one) does not win.
	second := e.pushTicket()
	if p.Ticket().Value != second.Ticket {
		t.Fatal("newer ticket not taken")
	}
	// URL check, Official Account style.
	ts, nonce := "1409659589", "263014780"
	resp, err = http.Get(e.cb.URL + "/callback/acme?echostr=hello&timestamp=" + ts + "&nonce=" + nonce + "&signature=" + wxcrypt.Signature(msgToken, ts, nonce))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "hello" {
		t.Errorf("URL check: %d %q", resp.StatusCode, b)
	}
}

func TestLateTicketPush(t *testing.T) {
	e := newEnv(t, 0)
	p := e.platform(nil, nil)
	e.pushTicket()
	e.mu.Lock()
	oldQ, oldBody := e.lastQuery, e.lastBody
	e.mu.Unlock()
	e.sim.Advance(time.Minute) // the next push has a later CreateTime
	second := e.pushTicket()
	e.mu.Lock()
	e.lastQuery, e.lastBody = oldQ, oldBody
	e.mu.Unlock()
	if resp := e.replay(nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("late push: HTTP %d", resp.StatusCode)
	}
	if got := p.Ticket().Value; got != second.Ticket {
		t.Errorf("a late push replaced the newest ticket")
	}
}

func TestImportAndUnauthorized(t *testing.T) {
	e := newEnv(t, 0)
	p := e.platform(nil, nil)
	e.pushTicket()
	eventually(t, "ready", func() bool { return p.Ready() == nil })
	e.authorize(merchant)
	m, _ := p.Merchant(context.Background(), merchant)
	good := m.Info().RefreshTokenFP

	// An import with a wrong refresh token: 61023, state unauthorized, 503 for its calls.
	info, err := p.Import(context.Background(), "wxmerchant00000002", "refreshtoken@@@wrong")
	if err != nil {
		t.Logf("import check: %v", err)
	}
	e.sim.Authorize(compID, "wxmerchant00000002") // exists in WeChat, but the imported token is not its
	info, err = p.Import(context.Background(), "wxmerchant00000002", "refreshtoken@@@wrong")
	var api *wechat.APIError
	if !errors.As(err, &api) || api.Code != wechat.CodeRefreshTokenInvalid || info.State != platform.StateUnauthorized {
		t.Fatalf("import with a wrong refresh token: %+v %v", info, err)
	}
	m2, _ := p.Merchant(context.Background(), "wxmerchant00000002")
	if _, err := m2.Get(context.Background()); !errors.As(err, &api) || api.Code != 61023 {
		t.Errorf("calls of an unauthorized merchant: %v", err)
	}
	if m2.Current() != nil {
		t.Error("an unauthorized merchant hands out a token")
	}
	if s := p.Stats(); s.Unauthorized != 1 || s.OK != 1 {
		t.Errorf("stats = %+v", s)
	}
	list, total := p.Authorizers(platform.StateUnauthorized, 0, 10)
	if total != 1 || list[0].AppID != "wxmerchant00000002" {
		t.Errorf("unauthorized list = %+v (%d)", list, total)
	}
	// Re-authorization heals it.
	e.authorize("wxmerchant00000002")
	if m2.State() != platform.StateOK {
		t.Errorf("state after re-authorization = %s", m2.State())
	}
	// Recover reads the refresh tokens WeChat holds.
	listed, changed, err := p.Recover(context.Background())
	if err != nil || listed != 2 || changed != 0 {
		t.Errorf("Recover = %d listed, %d changed, %v", listed, changed, err)
	}
	if m.Info().RefreshTokenFP != good {
		t.Error("refresh token changed")
	}
	if err := p.StartPush(context.Background()); err != nil {
		t.Errorf("StartPush: %v", err)
	}
}

func TestRestartCostsNoFetch(t *testing.T) {
	e := newEnv(t, 0)
	path := filepath.Join(t.TempDir(), "platforms.json")
	fs := platform.NewFileStore(path, 10*time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	crypt, _ := wxcrypt.New(wxcrypt.Options{Token: msgToken, AESKey: aesKey})
	p1, _ := platform.New(platform.Options{Name: "acme", ComponentAppID: compID, Secret: compSecret, Crypter: crypt, Upstream: e.simU, Store: fs, Tokens: fs, Tick: 20 * time.Millisecond})
	done := make(chan struct{})
	go func() { defer close(done); p1.Run(ctx) }()
	e.mu.Lock()
	e.rcv["acme"] = p1
	e.mu.Unlock()
	e.pushTicket()
	eventually(t, "ready", func() bool { return p1.Ready() == nil })
	e.authorize(merchant)
	m1, _ := p1.Merchant(context.Background(), merchant)
	tok1 := m1.Current().Value
	cancel()
	<-done
	if err := fs.Close(); err != nil {
		t.Fatal(err)
	}
	before := e.sim.Stats()

	fs2 := platform.NewFileStore(path, 10*time.Millisecond)
	p2 := e.platform(fs2, fs2)
	if err := p2.Ready(); err != nil {
		eventually(t, "ready after restart", func() bool { return p2.Ready() == nil })
	}
	m2, err := p2.Merchant(context.Background(), merchant)
	if err != nil {
		t.Fatalf("merchant lost on restart: %v", err)
	}
	got, err := m2.Get(context.Background())
	if err != nil || got.Value != tok1 {
		t.Fatalf("merchant token after restart: %v (same: %v)", err, got != nil && got.Value == tok1)
	}
	after := e.sim.Stats()
	if a, b := after.TokenFetches[compID].Component, before.TokenFetches[compID].Component; a != b {
		t.Errorf("restart fetched the component token: %d → %d", b, a)
	}
	if a, b := after.TokenFetches[merchant].Authorizer, before.TokenFetches[merchant].Authorizer; a != b {
		t.Errorf("restart fetched the merchant token: %d → %d", b, a)
	}
}

func TestProactiveRefreshOnlyForUsedMerchants(t *testing.T) {
	e := newEnv(t, 4*time.Second) // refresh due 2 s before expiry (half the life)
	p := e.platform(nil, nil, func(o *platform.Options) { o.AuthorizerIdle = time.Hour })
	e.pushTicket()
	eventually(t, "ready", func() bool { return p.Ready() == nil })
	e.authorize("wxmerchant0000000a")
	e.authorize("wxmerchant0000000b")
	used, _ := p.Merchant(context.Background(), "wxmerchant0000000a")
	idle, _ := p.Merchant(context.Background(), "wxmerchant0000000b")
	first := used.Current().Value // a call: used now
	idleTok := idle.Cache().Current().Value
	eventually(t, "a proactive refresh of the used merchant", func() bool {
		c := used.Cache().Current()
		return c != nil && c.Value != first
	})
	if idle.Cache().Current().Value != idleTok {
		t.Error("the merchant never called was refreshed proactively")
	}
}

func TestAuthorizersPaging(t *testing.T) {
	store := new(platform.MemoryStore)
	for i := range 25 {
		store.PutRecord(context.Background(), "acme", platform.Record{AppID: fmt.Sprintf("wx%02d", i), RefreshToken: "rt", State: platform.StateOK})
	}
	e := newEnv(t, 0)
	p := e.platform(store, nil)
	eventually(t, "records loaded", func() bool { _, n := p.Authorizers("", 0, 1); return n == 25 })
	list, total := p.Authorizers("", 20, 10)
	if total != 25 || len(list) != 5 || list[0].AppID != "wx20" {
		t.Errorf("page = %d of %d, first %v", len(list), total, list)
	}
	if list, _ := p.Authorizers("", 30, 10); len(list) != 0 {
		t.Errorf("past the end: %v", list)
	}
}
