package token_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/wxproxy/wxproxy/internal/redistest"
	"github.com/wxproxy/wxproxy/token"
	"github.com/wxproxy/wxproxy/wechat"
	"github.com/wxproxy/wxproxy/wechatsim"
)

const (
	simAppID  = "wx0123456789abcdef"
	simSecret = "0123456789abcdef0123456789abcdef"
)

// ticketRig is one replica's view of an app on the simulator: its token
// Cache and its Tickets, sharing store.
type ticketRig struct {
	tokens  *token.Cache
	tickets *token.Tickets
	reasons chan token.Reason // one per ticket fetch, when recorded

	mu     sync.Mutex
	caches map[token.TicketType]*token.Cache // each ticket's Cache, as Tickets made it
}

// cache returns the Cache Tickets made for typ, or nil.
func (r *ticketRig) cache(typ token.TicketType) *token.Cache {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.caches[typ]
}

func newSimServer(tb testing.TB, opts wechatsim.Options) (*wechatsim.Server, string) {
	tb.Helper()
	if opts.Apps == nil {
		opts.Apps = []wechatsim.App{{AppID: simAppID, Secret: simSecret}}
	}
	if opts.Now == nil {
		start := time.Now()
		opts.Now = func() time.Time { return start } // the clock moves only by Advance
	}
	sim, err := wechatsim.New(opts)
	if err != nil {
		tb.Fatal(err)
	}
	srv := httptest.NewServer(sim)
	tb.Cleanup(srv.Close)
	return sim, srv.URL
}

func newTicketRig(tb testing.TB, sim *wechatsim.Server, upstream string, store token.Store, held ...token.TicketType) *ticketRig {
	tb.Helper()
	tokens, err := token.New(token.Options{App: "main", Mode: token.Classic, Store: store, Key: "classic:" + simAppID, Now: sim.Now,
		Fetcher: &token.HTTPFetcher{Mode: token.Classic, Upstream: upstream, AppID: simAppID, Secret: simSecret, Now: sim.Now}})
	if err != nil {
		tb.Fatal(err)
	}
	rig := &ticketRig{tokens: tokens, reasons: make(chan token.Reason, 100), caches: make(map[token.TicketType]*token.Cache)}
	kind := token.TicketKind()
	rig.tickets, err = token.NewTickets(token.TicketTypes(false), held, func(typ token.TicketType) (*token.Cache, error) {
		c, err := token.New(token.Options{App: "main", Kind: &kind, Store: store, Key: "ticket:" + string(typ) + ":" + simAppID, Now: sim.Now,
			Fetcher: &token.TicketSource{Type: typ, Upstream: upstream, Tokens: tokens, Now: sim.Now},
			OnRefresh: func(r token.Reason, _ error) {
				select {
				case rig.reasons <- r:
				default: // nobody counts them
				}
			}})
		if err == nil {
			rig.mu.Lock()
			rig.caches[typ] = c
			rig.mu.Unlock()
		}
		return c, err
	})
	if err != nil {
		tb.Fatal(err)
	}
	return rig
}

func ticketFetches(sim *wechatsim.Server, typ string) int64 {
	return sim.Stats().TicketFetches[simAppID][typ]
}

// The Source fetches the ticket with the app's token; when WeChat rejects
// the token it replaces it by compare-and-refresh (one token fetch however
// many tickets failed with it) and fetches the ticket once more.
func TestTicketSourceRefreshesTheToken(t *testing.T) {
	sim, up := newSimServer(t, wechatsim.Options{})
	rig := newTicketRig(t, sim, up, new(token.MemoryStore))
	ctx := context.Background()
	jsapi, err := rig.tickets.Get(ctx, token.TicketJSAPI)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := jsapi.ExpiresAt.Sub(sim.Now()), 7200*time.Second; got != want {
		t.Errorf("ticket lifetime %v, want %v", got, want)
	}
	if live := sim.Tickets()[simAppID]["jsapi"]; len(live) != 1 || live[0] != jsapi.Value {
		t.Error("the ticket held is not the one WeChat issued")
	}
	if _, err := sim.Invalidate(simAppID); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for _, typ := range []token.TicketType{token.TicketJSAPI, token.TicketWxCard} {
		wg.Go(func() {
			if _, err := rig.tickets.Refresh(ctx, typ); err != nil {
				t.Errorf("Refresh(%s) after the token died: %v", typ, err)
			}
		})
	}
	wg.Wait()
	st := sim.Stats()
	if got := st.TokenFetches[simAppID].Classic; got != 2 {
		t.Errorf("token fetches = %d, want 2 (the first, then one compare-and-refresh for both tickets)", got)
	}
	if got := st.Errcodes[wechat.CodeInvalidCredential]; got < 1 || got > 2 {
		t.Errorf("40001 answers = %d, want 1 or 2 (each ticket fetch with the dead token)", got)
	}
	if got := rig.tickets.Statuses(); len(got) != 2 || got[0].Type != token.TicketJSAPI || got[1].Type != token.TicketWxCard {
		t.Errorf("Statuses = %+v, want jsapi then wx_card", got)
	}
}

// Only the types of the app's kind are held; another type is refused and
// nothing is made for it, whatever a caller asks.
func TestTicketsBounded(t *testing.T) {
	sim, up := newSimServer(t, wechatsim.Options{})
	rig := newTicketRig(t, sim, up, new(token.MemoryStore), token.TicketJSAPI)
	ctx := context.Background()
	for _, typ := range []token.TicketType{"", "nope", token.TicketAgentConfig, token.TicketCorpJSAPI, "jsapi\x00", token.TicketType(strings.Repeat("x", 1<<16))} {
		if _, err := rig.tickets.Get(ctx, typ); !errors.Is(err, token.ErrUnknownTicketType) {
			t.Errorf("Get(%.20q) err = %v, want ErrUnknownTicketType", typ, err)
		}
	}
	if got := rig.tickets.Statuses(); len(got) != 1 || !got[0].Held {
		t.Errorf("Statuses = %+v, want the held jsapi only", got)
	}
	if n := sim.Stats().APICalls["/cgi-bin/ticket/getticket"]; n != 0 {
		t.Errorf("%d ticket fetches for refused types, want 0", n)
	}
	if _, err := rig.tickets.Get(ctx, token.TicketWxCard); err != nil {
		t.Fatal(err)
	}
	st := rig.tickets.Statuses()
	if len(st) != 2 || st[1].Type != token.TicketWxCard || st[1].Held || st[1].Token == nil {
		t.Errorf("after demand: Statuses = %+v, want wx_card held on demand", st)
	}
}

// WeChat answers expires_in 7200 on every fetch, also for a ticket issued
// an hour ago: the first sighting's expiry is kept, and the ticket is
// fetched again when WeChat issues the next one.
func TestTicketKeepsFirstExpiry(t *testing.T) {
	sim, up := newSimServer(t, wechatsim.Options{})
	rig := newTicketRig(t, sim, up, new(token.MemoryStore))
	ctx := context.Background()
	first, err := rig.tickets.Get(ctx, token.TicketJSAPI)
	if err != nil {
		t.Fatal(err)
	}
	if err := sim.Advance(time.Hour); err != nil {
		t.Fatal(err)
	}
	again, err := rig.tickets.Refresh(ctx, token.TicketJSAPI)
	if err != nil {
		t.Fatal(err)
	}
	if again.Value != first.Value || !again.ExpiresAt.Equal(first.ExpiresAt) || !again.ObtainedAt.Equal(first.ObtainedAt) {
		t.Errorf("refetch within validity: same=%v expires %v, want the same ticket expiring at %v", again.Value == first.Value, again.ExpiresAt, first.ExpiresAt)
	}
	if !first.CheckedAt.IsZero() || !again.CheckedAt.Equal(sim.Now()) {
		t.Errorf("CheckedAt %v then %v, want zero (ObtainedAt says it), then the refetch's time %v", first.CheckedAt, again.CheckedAt, sim.Now())
	}
	if err := sim.Advance(time.Hour); err != nil {
		t.Fatal(err)
	}
	next, err := rig.tickets.Get(ctx, token.TicketJSAPI)
	if err != nil {
		t.Fatal(err)
	}
	if next.Value == first.Value || !next.ExpiresAt.Equal(sim.Now().Add(7200*time.Second)) {
		t.Error("after expiry: want WeChat's next ticket with a full lifetime")
	}
}

// The background refresh fetches held tickets at start and again before
// they expire, without any caller asking.
func TestTicketsRunProactive(t *testing.T) {
	sim, up := newSimServer(t, wechatsim.Options{TokenTTL: 4 * time.Second, Now: time.Now})
	rig := newTicketRig(t, sim, up, new(token.MemoryStore), token.TicketJSAPI)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { rig.tokens.Run(ctx) }()
	go func() { rig.tickets.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	want := []token.Reason{token.ReasonStartup, token.ReasonProactive}
	for _, w := range want {
		select {
		case r := <-rig.reasons:
			if r != w {
				t.Fatalf("refresh reason %s, want %s", r, w)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("no %s ticket refresh within 20s", w)
		}
	}
}

// A restart costs no ticket fetch, with the file store and with Redis: the
// held ticket is read back by the new process.
func TestTicketsPersist(t *testing.T) {
	for _, tt := range []struct {
		name  string
		store func(t *testing.T) func() token.Store // a new process's store over the same data
	}{
		{"file", func(t *testing.T) func() token.Store {
			path := filepath.Join(t.TempDir(), "tokens.json")
			return func() token.Store { return token.NewFileStore(path) }
		}},
		{"redis", func(t *testing.T) func() token.Store {
			srv := redistest.Start(t)
			return func() token.Store { return token.NewRedisStore(srv.Client(t), "persist:") }
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			sim, up := newSimServer(t, wechatsim.Options{})
			store := tt.store(t)
			first := newTicketRig(t, sim, up, store(), token.TicketJSAPI)
			held, err := first.tickets.Get(context.Background(), token.TicketJSAPI)
			if err != nil {
				t.Fatal(err)
			}
			before := ticketFetches(sim, "jsapi")

			restarted := newTicketRig(t, sim, up, store(), token.TicketJSAPI)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { restarted.tickets.Run(ctx); close(done) }()
			defer func() { cancel(); <-done }()
			deadline := time.Now().Add(10 * time.Second)
			for restarted.tickets.Statuses()[0].Token == nil && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
			got := restarted.tickets.Statuses()[0].Token
			if got == nil || got.Value != held.Value || !got.ExpiresAt.Equal(held.ExpiresAt) {
				t.Fatal("the restarted process does not hold the stored ticket with its expiry")
			}
			if got := ticketFetches(sim, "jsapi"); got != before {
				t.Errorf("the restart fetched the ticket %d times, want 0", got-before)
			}
		})
	}
}

// A type not configured is fetched on first demand and held from then on:
// once Run runs, its background refresh keeps it fresh like a configured
// one, without any caller asking again.
func TestTicketsOnDemandKeptFresh(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		fetches := map[token.TicketType]int{}
		kind := token.TicketKind()
		ts, err := token.NewTickets(token.TicketTypes(false), []token.TicketType{token.TicketJSAPI}, func(typ token.TicketType) (*token.Cache, error) {
			return token.New(token.Options{App: "main", Kind: &kind, Fetcher: token.SourceFunc(func(context.Context, bool) (token.Token, error) {
				mu.Lock()
				defer mu.Unlock()
				fetches[typ]++
				now := time.Now()
				// A new ticket every fetch: every refresh shows.
				return token.Token{Value: fmt.Sprintf("%s-%d", typ, fetches[typ]), ObtainedAt: now, ExpiresAt: now.Add(7200 * time.Second)}, nil
			})})
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { ts.Run(ctx); close(done) }()
		synctest.Wait()
		if _, err := ts.Get(ctx, token.TicketWxCard); err != nil {
			t.Fatal(err)
		}
		time.Sleep(4 * time.Hour)
		synctest.Wait()
		mu.Lock()
		jsapi, card := fetches[token.TicketJSAPI], fetches[token.TicketWxCard]
		mu.Unlock()
		// Refreshed 10-8 minutes before each 2-hour expiry: 2 or 3 fetches in 4 hours.
		if jsapi < 2 || card < 2 || jsapi > 3 || card > 3 {
			t.Errorf("in 4 hours: jsapi fetched %d times, wx_card (asked for once) %d; want 2 or 3 each", jsapi, card)
		}
		st := ts.Statuses()
		if len(st) != 2 || st[1].Type != token.TicketWxCard || st[1].Held || !st[1].Token.Valid(time.Now()) {
			t.Errorf("Statuses = %+v, want wx_card valid, held on demand", st)
		}
		cancel()
		<-done
	})
}

// Three replicas on one Redis asking for the ticket at once cause one
// ticket fetch in all (and one token fetch).
func TestTicketsFleetOneFetch(t *testing.T) {
	srv := redistest.Start(t)
	sim, up := newSimServer(t, wechatsim.Options{Latency: 30 * time.Millisecond})
	var fleet []*ticketRig
	for range 3 {
		fleet = append(fleet, newTicketRig(t, sim, up, token.NewRedisStore(srv.Client(t), t.Name()+":")))
	}
	var wg sync.WaitGroup
	var values sync.Map
	var n atomic.Int64
	for i, rig := range fleet {
		for range 3 {
			wg.Go(func() {
				tk, err := rig.tickets.Get(context.Background(), token.TicketJSAPI)
				if err != nil {
					t.Errorf("replica %d: %v", i, err)
					return
				}
				values.Store(tk.Value, true)
				n.Add(1)
			})
		}
	}
	wg.Wait()
	distinct := 0
	values.Range(func(any, any) bool { distinct++; return true })
	if distinct != 1 || n.Load() != 9 {
		t.Errorf("%d distinct tickets over %d answers, want 1 over 9", distinct, n.Load())
	}
	if got := ticketFetches(sim, "jsapi"); got != 1 {
		t.Errorf("fleet ticket fetches = %d, want 1", got)
	}
	if got := sim.Stats().TokenFetches[simAppID].Classic; got != 1 {
		t.Errorf("fleet token fetches = %d, want 1", got)
	}
}

// The early check of a ticket — refresh_before ahead of its expiry, to
// catch a ticket WeChat replaced early — costs one fetch for the fleet, not
// one per replica: WeChat hands back the same ticket, and a replica whose
// check falls due after another's adopts the confirmed ticket from Redis.
// At expiry the next ticket is again one fetch. Each round is driven by
// Step on the simulator's clock: concurrently (the replicas queue on the
// refresh lease) and one after the other (each reads the store first).
func TestTicketsFleetEarlyCheckOneFetch(t *testing.T) {
	srv := redistest.Start(t)
	sim, up := newSimServer(t, wechatsim.Options{Latency: 20 * time.Millisecond})
	const replicas = 4
	var fleet []*token.Cache
	for range replicas {
		rig := newTicketRig(t, sim, up, token.NewRedisStore(srv.Client(t), t.Name()+":"), token.TicketJSAPI)
		if _, err := rig.tickets.Get(t.Context(), token.TicketJSAPI); err != nil {
			t.Fatal(err)
		}
		fleet = append(fleet, rig.cache(token.TicketJSAPI))
	}
	if got := ticketFetches(sim, "jsapi"); got != 1 {
		t.Fatalf("first ticket: %d fetches, want 1", got)
	}
	step := func(concurrent bool) {
		var wg sync.WaitGroup
		for _, c := range fleet {
			if !c.Due() {
				t.Fatalf("at %v a replica has no refresh due (ticket expires %v)", sim.Now(), c.Current().ExpiresAt)
			}
			if concurrent {
				wg.Go(func() { c.Step(t.Context()) })
			} else {
				c.Step(t.Context())
			}
		}
		wg.Wait()
	}
	same := func(what string) *token.Token {
		held := fleet[0].Current()
		for i, c := range fleet {
			if cur := c.Current(); !cur.Valid(sim.Now()) || cur.Value != held.Value || !cur.ExpiresAt.Equal(held.ExpiresAt) {
				t.Fatalf("%s: replica %d holds another ticket than replica 0", what, i)
			}
			if c.Due() {
				t.Errorf("%s: replica %d still has a refresh due", what, i)
			}
		}
		return held
	}
	for round, concurrent := range []bool{true, false} {
		held := same("before the check")
		// Every replica's check is due between 10m and 8m before expiry
		// (refresh_before 10m, 20% jitter).
		if err := sim.Advance(held.ExpiresAt.Add(-5 * time.Minute).Sub(sim.Now())); err != nil {
			t.Fatal(err)
		}
		before := ticketFetches(sim, "jsapi")
		step(concurrent)
		if got := ticketFetches(sim, "jsapi") - before; got != 1 {
			t.Errorf("round %d (concurrent %v): the early check of %d replicas cost %d ticket fetches, want 1", round, concurrent, replicas, got)
		}
		if checked := same("after the check"); checked.Value != held.Value || !checked.ExpiresAt.Equal(held.ExpiresAt) {
			t.Errorf("round %d: the check replaced the ticket WeChat still hands back", round)
		}
		// At expiry WeChat issues the next ticket: one fetch again.
		if err := sim.Advance(held.ExpiresAt.Sub(sim.Now())); err != nil {
			t.Fatal(err)
		}
		before = ticketFetches(sim, "jsapi")
		step(concurrent)
		if got := ticketFetches(sim, "jsapi") - before; got != 1 {
			t.Errorf("round %d: the next ticket cost %d fetches, want 1", round, got)
		}
		if next := same("after expiry"); next.Value == held.Value {
			t.Errorf("round %d: after expiry the fleet still holds the expired ticket", round)
		}
	}
}

// A ticket endpoint that redirects must not make the Source send the
// access token elsewhere, and its errors never show the token.
func TestTicketSourceNeverFollowsRedirects(t *testing.T) {
	var stolen atomic.Int64
	evil := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { stolen.Add(1) }))
	defer evil.Close()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, evil.URL+r.URL.RequestURI(), http.StatusFound)
	}))
	defer up.Close()
	tokens := staticTokens{value: "the-real-access-token"}
	for _, typ := range []token.TicketType{token.TicketJSAPI, token.TicketWxCard, token.TicketCorpJSAPI, token.TicketAgentConfig} {
		src := &token.TicketSource{Type: typ, Upstream: up.URL, Tokens: tokens}
		_, err := src.Fetch(context.Background(), false)
		if err == nil || strings.Contains(err.Error(), "the-real-access-token") {
			t.Errorf("%s: err = %v, want a failed fetch that does not show the token", typ, err)
		}
	}
	if stolen.Load() != 0 {
		t.Errorf("the redirect target got %d requests, want 0", stolen.Load())
	}
}

// Malformed ticket answers are failed fetches, never a held ticket.
func TestTicketSourceMalformedAnswers(t *testing.T) {
	for _, body := range []string{
		`{"errcode":0,"errmsg":"ok","expires_in":7200}`,
		`{"errcode":0,"errmsg":"ok","ticket":"t","expires_in":0}`,
		`{"errcode":0,"errmsg":"ok","ticket":"t","expires_in":864000}`,
		`{"errcode":0,"errmsg":"ok","ticket":"` + strings.Repeat("t", 2000) + `","expires_in":7200}`,
		`{"errcode":-1,"errmsg":"system error"}`,
		`not json`,
	} {
		up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte(body)) }))
		src := &token.TicketSource{Type: token.TicketJSAPI, Upstream: up.URL, Tokens: staticTokens{value: "tok"}}
		if tk, err := src.Fetch(context.Background(), false); err == nil {
			t.Errorf("%.60s: fetched %+v, want an error", body, tk)
		}
		up.Close()
	}
}

type staticTokens struct{ value string }

func (s staticTokens) Get(context.Context) (*token.Token, error) {
	return &token.Token{Value: s.value, ExpiresAt: time.Now().Add(time.Hour)}, nil
}

func (s staticTokens) Invalidate(context.Context, string) (*token.Token, error) {
	return s.Get(context.Background())
}

// Over a day, the background refresh of a ticket asks WeChat twice per
// 2-hour ticket: once before it expires (WeChat hands back the same one),
// and once at its expiry, when WeChat issues the next. Every ticket held
// is valid whenever it is read.
func TestTicketFetchesPerDay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex // WeChat's side
		var fetches, issued int
		var cur string
		var exp time.Time
		src := token.SourceFunc(func(context.Context, bool) (token.Token, error) {
			mu.Lock()
			defer mu.Unlock()
			fetches++
			now := time.Now()
			if cur == "" || !now.Before(exp) {
				issued++
				cur, exp = fmt.Sprintf("ticket-%d", issued), now.Add(7200*time.Second)
			}
			// As WeChat: the full lifetime on every fetch.
			return token.Token{Value: cur, ObtainedAt: now, ExpiresAt: now.Add(7200 * time.Second)}, nil
		})
		kind := token.TicketKind()
		c, err := token.New(token.Options{App: "main", Kind: &kind, Fetcher: src})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		go c.Run(ctx)
		for range 24*60 - 1 {
			time.Sleep(time.Minute)
			synctest.Wait()
			mu.Lock()
			tk, wantValue, wantExp := c.Current(), cur, exp
			mu.Unlock()
			if tk.Value != wantValue || !tk.ExpiresAt.Equal(wantExp) {
				t.Fatalf("at %v: held %+v, WeChat's ticket %s expires %v", time.Now(), tk, wantValue, wantExp)
			}
		}
		cancel()
		synctest.Wait()
		mu.Lock()
		defer mu.Unlock()
		if issued != 12 || fetches > 2*issued+1 {
			t.Errorf("a day: %d fetches for %d tickets, want 12 tickets and at most 2 fetches each", fetches, issued)
		}
	})
}
