package suite_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wxproxy/wxproxy/platform"
	"github.com/wxproxy/wxproxy/suite"
	"github.com/wxproxy/wxproxy/token"
	"github.com/wxproxy/wxproxy/wechat"
	"github.com/wxproxy/wxproxy/wxcrypt"
)

// The official WeCom sample (WECHAT.md "Message encryption", S25): its
// receive id stands for the provider corpid of URL checks.
const (
	wcToken  = "QDG6eK"
	wcKey    = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"
	wcCorpID = "wx5823bf96d3bd56c7"
	wcEcho   = "P9nAzCzyDtyTWESHep1vC5X9xho/qYX3Zpb4yKa9SKld1DsH3Iyt3tP3zNdtp+4RPcs8TgAE7OaBO+FZXvnaqQ=="

	suiteID      = "wwsuite0000000001"
	providerCorp = wcCorpID
	corpA        = "wwcorpa000000001"
)

type env struct {
	t     *testing.T
	fake  *fakeWeCom
	url   string
	crypt *wxcrypt.Crypter
	now   atomic.Pointer[time.Time]
	n     int
	mu    sync.Mutex
	held  []string // secrets and tokens announced for scrubbing
}

func newEnv(t *testing.T) *env {
	f, srv := newFake(t)
	c, err := wxcrypt.New(wxcrypt.Options{Token: wcToken, AESKey: wcKey})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, fake: f, url: srv.URL, crypt: c}
	now := time.Now()
	e.now.Store(&now)
	return e
}

func (e *env) clock() time.Time { return *e.now.Load() }

func (e *env) advance(d time.Duration) {
	n := e.clock().Add(d)
	e.now.Store(&n)
}

func (e *env) suite(store platform.Store, tokens token.Store, mod ...func(*suite.Options)) *suite.Suite {
	o := suite.Options{
		Name: "suiteco", SuiteID: suiteID, Secret: "suitesecret", ProviderCorpID: providerCorp, ProviderSecret: "providersecret",
		Crypter: e.crypt, Upstream: e.url, Store: store, Tokens: tokens, Now: e.clock, MinBackoff: time.Millisecond,
		OnSecret:  func(v string) { e.hold(v) },
		OnInstall: func(_, v string) { e.hold(v) },
	}
	for _, m := range mod {
		m(&o)
	}
	s, err := suite.New(o)
	if err != nil {
		e.t.Fatal(err)
	}
	return s
}

func (e *env) hold(v string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.held = append(e.held, v)
}

func (e *env) holds(v string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, h := range e.held {
		if h == v {
			return true
		}
	}
	return false
}

// push seals msg for receiveID and hands it to s as the callback listener
// would.
func (e *env) push(s *suite.Suite, receiveID, msg string) error {
	e.n++
	ts, nonce := fmt.Sprint(e.clock().Unix()), fmt.Sprint(1000+e.n)
	body, sig, err := e.crypt.Seal([]byte(msg), receiveID, ts, nonce)
	if err != nil {
		e.t.Fatal(err)
	}
	q := url.Values{"msg_signature": {sig}, "timestamp": {ts}, "nonce": {nonce}}
	return s.HandlePush(context.Background(), q, body)
}

func (e *env) pushTicket(s *suite.Suite, ticket string) error {
	e.fake.mu.Lock()
	e.fake.tickets[ticket] = true
	e.fake.mu.Unlock()
	return e.push(s, suiteID, fmt.Sprintf("<xml><SuiteId><![CDATA[%s]]></SuiteId><InfoType><![CDATA[suite_ticket]]></InfoType><TimeStamp>%d</TimeStamp><SuiteTicket><![CDATA[%s]]></SuiteTicket></xml>", suiteID, e.clock().Unix(), ticket))
}

func (e *env) createAuth(s *suite.Suite, corpid string) error {
	code := e.fake.install(corpid)
	return e.push(s, suiteID, fmt.Sprintf("<xml><SuiteId><![CDATA[%s]]></SuiteId><AuthCode><![CDATA[%s]]></AuthCode><InfoType><![CDATA[create_auth]]></InfoType><TimeStamp>%d</TimeStamp><State><![CDATA[]]></State></xml>", suiteID, code, e.clock().Unix()))
}

func (e *env) cancelAuth(s *suite.Suite, corpid string, ts int64) error {
	return e.push(s, suiteID, fmt.Sprintf("<xml><SuiteId><![CDATA[%s]]></SuiteId><InfoType><![CDATA[cancel_auth]]></InfoType><TimeStamp>%d</TimeStamp><AuthCorpId><![CDATA[%s]]></AuthCorpId></xml>", suiteID, ts, corpid))
}

// TestVerifyURLOfficialVector answers the GET URL check of WeCom's
// official sample with its plain text only.
func TestVerifyURLOfficialVector(t *testing.T) {
	e := newEnv(t)
	s := e.suite(nil, nil)
	q := url.Values{"msg_signature": {"5c45ff5e21c57e6ad56bac8758b79b1d9ac89fd3"}, "timestamp": {"1409659589"}, "nonce": {"263014780"}, "echostr": {wcEcho}}
	out, err := s.VerifyURL(context.Background(), q)
	if err != nil || string(out) != "1616140317555161061" {
		t.Fatalf("VerifyURL = %q, %v; want the plain text 1616140317555161061", out, err)
	}
	// A "+" sent unescaped arrives as a space.
	q.Set("echostr", strings.ReplaceAll(wcEcho, "+", " "))
	if out, err := s.VerifyURL(context.Background(), q); err != nil || string(out) != "1616140317555161061" {
		t.Errorf("echostr with spaces for +: %q, %v", out, err)
	}
	bad := url.Values{"msg_signature": {"5c45ff5e21c57e6ad56bac8758b79b1d9ac89fd4"}, "timestamp": {"1409659589"}, "nonce": {"263014780"}, "echostr": {wcEcho}}
	if _, err := s.VerifyURL(context.Background(), bad); !errors.Is(err, suite.ErrSignature) {
		t.Errorf("bad signature: %v, want ErrSignature", err)
	}
	if _, err := s.VerifyURL(context.Background(), url.Values{}); !errors.Is(err, suite.ErrBadPush) {
		t.Errorf("no echostr: %v, want ErrBadPush", err)
	}
	// The sample's receive id is neither this suite's id nor its
	// provider's corpid: refused.
	other := e.suite(nil, nil, func(o *suite.Options) { o.ProviderCorpID, o.ProviderSecret = "wwotherprovider", "" })
	if _, err := other.VerifyURL(context.Background(), q); !errors.Is(err, suite.ErrBadPush) {
		t.Errorf("foreign receive id: %v, want ErrBadPush", err)
	}
}

// TestTicketBuysSuiteToken: a suite_ticket push makes the suite ready;
// the suite token is fetched with it, once.
func TestTicketBuysSuiteToken(t *testing.T) {
	e := newEnv(t)
	s := e.suite(nil, nil)
	if err := s.Ready(); err == nil || !strings.Contains(err.Error(), "suite_ticket") {
		t.Errorf("Ready before a ticket = %v", err)
	}
	_, err := s.Component().Get(context.Background())
	var api *wechat.APIError
	if !errors.As(err, &api) || api.Code != wechat.CodeComponentTicketInvalid {
		t.Errorf("suite token without a ticket: %v, want 61006", err)
	}
	if err := e.pushTicket(s, "ticket-1"); err != nil {
		t.Fatal(err)
	}
	if got := s.Ticket(); got == nil || got.Value != "ticket-1" || !got.ExpiresAt.Equal(time.Unix(e.clock().Unix(), 0).Add(30*time.Minute)) {
		t.Errorf("ticket = %+v, want ticket-1 valid 30 minutes from its TimeStamp", got)
	}
	e.advance(2 * time.Second) // past the backoff of the failed fetch (Run's kick skips it)
	tok, err := s.Component().Get(context.Background())
	if err != nil || !strings.HasPrefix(tok.Value, "suitetok-") {
		t.Fatalf("suite token = %v, %v", tok, err)
	}
	if !e.holds(tok.Value) {
		t.Error("suite token not announced for scrubbing")
	}
	p, err := s.Provider().Get(context.Background())
	if err != nil || !strings.HasPrefix(p.Value, "providertok-") || !e.holds(p.Value) {
		t.Fatalf("provider token = %v, %v", p, err)
	}
	if err := s.Ready(); err != nil {
		t.Errorf("Ready = %v", err)
	}
	// An older ticket (a late push) does not replace the newer one.
	e.advance(-time.Minute)
	_ = e.pushTicket(s, "ticket-0")
	e.advance(time.Minute)
	if got := s.Ticket().Value; got != "ticket-1" {
		t.Errorf("a late push replaced the ticket: %s", got)
	}
	if got := e.fake.count("suite"); got != 1 {
		t.Errorf("suite token fetches = %d, want 1", got)
	}
}

// TestBadSignatureChangesNothing: a push with a wrong signature, or
// addressed to another suite, is refused and changes nothing.
func TestBadSignatureChangesNothing(t *testing.T) {
	e := newEnv(t)
	store := new(platform.MemoryStore)
	s := e.suite(store, nil)
	msg := "<xml><SuiteId>" + suiteID + "</SuiteId><InfoType>suite_ticket</InfoType><TimeStamp>1</TimeStamp><SuiteTicket>t</SuiteTicket></xml>"
	body, sig, _ := e.crypt.Seal([]byte(msg), suiteID, "1", "2")
	last := "0"
	if sig[39] == '0' {
		last = "1"
	}
	q := url.Values{"msg_signature": {sig[:39] + last}, "timestamp": {"1"}, "nonce": {"2"}}
	if err := s.HandlePush(context.Background(), q, body); !errors.Is(err, suite.ErrSignature) {
		t.Errorf("bad signature: %v", err)
	}
	// Signed right, but for another receive id.
	if err := e.push(s, "wwsomeoneelse", msg); !errors.Is(err, suite.ErrBadPush) {
		t.Errorf("foreign receive id: %v", err)
	}
	// Signed right, receive id right, SuiteId of another suite.
	if err := e.push(s, suiteID, strings.Replace(msg, "<SuiteId>"+suiteID, "<SuiteId>wwother", 1)); !errors.Is(err, suite.ErrBadPush) {
		t.Errorf("foreign SuiteId: %v", err)
	}
	if err := e.push(s, suiteID, "<xml><InfoType>create_auth</InfoType></xml>"); !errors.Is(err, suite.ErrBadPush) {
		t.Errorf("create_auth without AuthCode: %v", err)
	}
	if s.Ticket() != nil {
		t.Error("a refused push left a ticket")
	}
	if _, err := store.LoadTicket(context.Background(), "suiteco"); !errors.Is(err, platform.ErrNotFound) {
		t.Errorf("a refused push stored a ticket: %v", err)
	}
	// Pushes addressed to the provider corpid are accepted (create_auth
	// was seen so).
	if err := e.push(s, providerCorp, msg); err != nil {
		t.Errorf("push to the provider corpid: %v", err)
	}
}

// TestInstallLifecycle: create_auth is exchanged at once (v1 and v2),
// the permanent code is stored durably and announced for scrubbing, the
// corp's token is held; cancel_auth drops the corp, a late one does not.
func TestInstallLifecycle(t *testing.T) {
	for _, v2 := range []bool{false, true} {
		t.Run(fmt.Sprintf("v2=%v", v2), func(t *testing.T) {
			e := newEnv(t)
			store := new(platform.MemoryStore)
			s := e.suite(store, nil, func(o *suite.Options) { o.PermanentCodeV2 = v2 })
			_ = e.pushTicket(s, "ticket-1")
			if err := e.createAuth(s, corpA); err != nil {
				t.Fatal(err)
			}
			wantPath := "/cgi-bin/service/get_permanent_code"
			if v2 {
				wantPath = "/cgi-bin/service/v2/get_permanent_code"
			}
			if e.fake.count("permanent") != 1 {
				t.Fatalf("permanent code exchanges = %d", e.fake.count("permanent"))
			}
			r, err := store.Record(context.Background(), "suiteco", corpA)
			e.fake.mu.Lock()
			pc, path := e.fake.corps[corpA], e.fake.lastPath
			e.fake.mu.Unlock()
			if path != wantPath {
				t.Errorf("exchanged with %s, want %s", path, wantPath)
			}
			if err != nil || r.RefreshToken != pc || r.State != platform.StateOK {
				t.Fatalf("stored record = %+v, %v; want the permanent code", r, err)
			}
			if !e.holds(pc) {
				t.Error("permanent code not announced for scrubbing")
			}
			c, err := s.Corp(context.Background(), corpA)
			if err != nil {
				t.Fatal(err)
			}
			tok, err := c.Get(context.Background())
			if err != nil || !strings.HasPrefix(tok.Value, "corptok-"+corpA) {
				t.Fatalf("corp token = %v, %v", tok, err)
			}
			wantCorpFetches := 0 // v1 answers the first token itself
			if v2 {
				wantCorpFetches = 1
			}
			if got := e.fake.count("corp"); got != wantCorpFetches {
				t.Errorf("get_corp_token calls = %d, want %d", got, wantCorpFetches)
			}
			list, total := s.Corps("", 0, 10)
			if total != 1 || list[0].CorpID != corpA || list[0].PermanentCodeFP != token.Fingerprint(pc) || list[0].Fingerprint != token.Fingerprint(tok.Value) {
				t.Errorf("Corps = %+v (%d)", list, total)
			}
			// A late cancel_auth (older than the install) is ignored.
			if err := e.cancelAuth(s, corpA, e.clock().Unix()-60); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Corp(context.Background(), corpA); err != nil {
				t.Errorf("a late cancel_auth dropped the corp: %v", err)
			}
			e.advance(time.Second)
			if err := e.cancelAuth(s, corpA, e.clock().Unix()); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Corp(context.Background(), corpA); !errors.Is(err, suite.ErrUnknownCorp) {
				t.Errorf("after cancel_auth: %v, want ErrUnknownCorp", err)
			}
			if _, err := store.Record(context.Background(), "suiteco", corpA); !errors.Is(err, platform.ErrNotFound) {
				t.Errorf("record after cancel_auth: %v", err)
			}
		})
	}
}

// TestDuplicateCreateAuth: the same create_auth pushed twice, and an SDK
// asking get_permanent_code with the same code, cost one exchange.
func TestDuplicateCreateAuth(t *testing.T) {
	e := newEnv(t)
	s := e.suite(nil, nil)
	_ = e.pushTicket(s, "ticket-1")
	code := e.fake.install(corpA)
	msg := fmt.Sprintf("<xml><SuiteId>%s</SuiteId><AuthCode>%s</AuthCode><InfoType>create_auth</InfoType><TimeStamp>%d</TimeStamp></xml>", suiteID, code, e.clock().Unix())
	for range 2 {
		if err := e.push(s, suiteID, msg); err != nil {
			t.Fatal(err)
		}
	}
	in, err := s.ExchangeCode(context.Background(), code)
	if err != nil || in.CorpID != corpA {
		t.Fatalf("ExchangeCode = %+v, %v", in, err)
	}
	if _, ok := in.Answer["permanent_code"]; ok {
		t.Error("the installation's answer still holds the permanent code")
	}
	if _, ok := in.Answer["access_token"]; ok {
		t.Error("the installation's answer still holds the corp token")
	}
	if got := e.fake.count("permanent"); got != 1 {
		t.Errorf("exchanges = %d, want 1", got)
	}
	// An unknown code is WeCom's 40078, reported as such.
	_, err = s.ExchangeCode(context.Background(), "nope"+strings.Repeat("n", 64))
	if api, ok := suite.IsAuthCodeRefused(err); !ok || api.Code != 40078 {
		t.Errorf("unknown code: %v", err)
	}
}

// TestResetPermanentCode: reset_permanent_code exchanges its auth code and
// the new permanent code replaces the old.
func TestResetPermanentCode(t *testing.T) {
	e := newEnv(t)
	store := new(platform.MemoryStore)
	s := e.suite(store, nil)
	_ = e.pushTicket(s, "ticket-1")
	_ = e.createAuth(s, corpA)
	before, _ := store.Record(context.Background(), "suiteco", corpA)
	code := e.fake.install(corpA)
	if err := e.push(s, suiteID, fmt.Sprintf("<xml><SuiteId>%s</SuiteId><AuthCode>%s</AuthCode><InfoType>reset_permanent_code</InfoType><TimeStamp>%d</TimeStamp></xml>", suiteID, code, e.clock().Unix())); err != nil {
		t.Fatal(err)
	}
	after, _ := store.Record(context.Background(), "suiteco", corpA)
	if after.RefreshToken == before.RefreshToken || after.RefreshToken == "" {
		t.Errorf("permanent code not replaced: %q → %q", before.RefreshToken, after.RefreshToken)
	}
	// change_auth keeps the corp.
	if err := e.push(s, suiteID, fmt.Sprintf("<xml><SuiteId>%s</SuiteId><InfoType>change_auth</InfoType><TimeStamp>%d</TimeStamp><AuthCorpId>%s</AuthCorpId></xml>", suiteID, e.clock().Unix(), corpA)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Corp(context.Background(), corpA); err != nil {
		t.Errorf("after change_auth: %v", err)
	}
}

// TestCorpTokenErrors: 42009 on get_corp_token refreshes the suite token
// and retries once; a dead corp token is replaced once for many callers
// (compare-and-refresh); 40084 marks the corp unauthorized (61023).
func TestCorpTokenErrors(t *testing.T) {
	e := newEnv(t)
	s := e.suite(nil, nil, func(o *suite.Options) { o.PermanentCodeV2 = true })
	_ = e.pushTicket(s, "ticket-1")
	_ = e.createAuth(s, corpA)
	c, _ := s.Corp(context.Background(), corpA)
	tok, err := c.Get(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	suiteBefore := e.fake.count("suite")
	e.fake.expireSuite()
	e.fake.kill(corpA)
	corpBefore := e.fake.count("corp")
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if nt, err := c.Invalidate(context.Background(), tok.Value); err != nil || nt.Value == tok.Value {
				t.Errorf("Invalidate = %v, %v", nt, err)
			}
		})
	}
	wg.Wait()
	if got := e.fake.count("suite") - suiteBefore; got != 1 {
		t.Errorf("suite token fetches after 42009 = %d, want 1", got)
	}
	if got := e.fake.count("corp") - corpBefore; got != 1 {
		t.Errorf("get_corp_token calls with a dead suite token = %d, want 1 (the 42009 itself is answered before counting)", got)
	}
	// 40084: the permanent code is dead.
	e.fake.mu.Lock()
	e.fake.corpFaults = []int{40084}
	e.fake.mu.Unlock()
	cur := c.Current()
	_, err = c.Invalidate(context.Background(), cur.Value)
	var api *wechat.APIError
	if !errors.As(err, &api) || api.Code != wechat.CodeRefreshTokenInvalid {
		t.Errorf("after 40084: %v, want 61023", err)
	}
	if c.State() != platform.StateUnauthorized || c.Current() != nil || s.Stats().Unauthorized != 1 {
		t.Errorf("state = %s, stats %+v", c.State(), s.Stats())
	}
}

// TestDurableFileStore: a restart on the same file knows the ticket and
// every corp with its permanent code, and reuses the stored tokens.
func TestDurableFileStore(t *testing.T) {
	e := newEnv(t)
	path := filepath.Join(t.TempDir(), "state.json")
	fs := platform.NewFileStore(path, time.Millisecond)
	s := e.suite(fs, fs)
	_ = e.pushTicket(s, "ticket-1")
	_ = e.createAuth(s, corpA)
	if err := fs.Close(); err != nil {
		t.Fatal(err)
	}
	fs2 := platform.NewFileStore(path, time.Millisecond)
	// Runs after s2 stopped (cleanups run last first): nothing is left
	// to write when the temporary directory is removed.
	t.Cleanup(func() { fs2.Close() })
	s2 := e.suite(fs2, fs2)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s2.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	deadline := time.Now().Add(5 * time.Second)
	for s2.Ticket() == nil || s2.Stats().OK != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("restart: ticket %v, stats %+v", s2.Ticket(), s2.Stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
	c, err := s2.Corp(context.Background(), corpA)
	if err != nil {
		t.Fatal(err)
	}
	before := e.fake.count("corp")
	if _, err := c.Get(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := e.fake.count("corp"); got != before {
		t.Errorf("restart fetched the corp token again (%d calls): the stored one should be reused", got-before)
	}
}

// TestImport adds a corp from an existing system and checks its code.
func TestImport(t *testing.T) {
	e := newEnv(t)
	s := e.suite(nil, nil)
	_ = e.pushTicket(s, "ticket-1")
	e.fake.mu.Lock()
	e.fake.corps[corpA] = "imported-permanent-code"
	e.fake.mu.Unlock()
	in, err := s.Import(context.Background(), corpA, "imported-permanent-code")
	if err != nil || in.CorpID != corpA || in.Fingerprint == "" || in.PermanentCodeFP != token.Fingerprint("imported-permanent-code") {
		t.Fatalf("Import = %+v, %v", in, err)
	}
	if !e.holds("imported-permanent-code") {
		t.Error("imported permanent code not announced for scrubbing")
	}
	for _, bad := range [][2]string{{"", "x"}, {corpA, ""}, {"a@b", "x"}, {strings.Repeat("c", 65), "x"}} {
		if _, err := s.Import(context.Background(), bad[0], bad[1]); err == nil {
			t.Errorf("Import(%q, %q) accepted", bad[0], bad[1])
		}
	}
	if _, err := s.Import(context.Background(), "wwcorpb", "wrong"); err == nil {
		t.Error("a wrong permanent code imported without error")
	}
}

// TestUnknownCorpsBounded: callers naming random corpids cost one store
// read per corpid per 10 s and at most 1024 remembered misses.
func TestUnknownCorpsBounded(t *testing.T) {
	e := newEnv(t)
	s := e.suite(nil, nil)
	for i := range 3000 {
		if _, err := s.Corp(context.Background(), fmt.Sprintf("wwunknown%06d", i)); !errors.Is(err, suite.ErrUnknownCorp) {
			t.Fatal(err)
		}
	}
	if got := s.Misses(); got > 1024 {
		t.Errorf("misses remembered = %d, want <= 1024", got)
	}
	if _, err := s.Corp(context.Background(), strings.Repeat("w", 65)); !errors.Is(err, suite.ErrUnknownCorp) {
		t.Error("a 65-byte corpid was looked up")
	}
}

// TestAttackImportRejectsOddCorpIDs: an imported corpid must look like
// one (letters, digits, _ or -, as the Open Platform's appids): before,
// only "@", "/" and whitespace were refused, so a corpid with markup,
// "%", "?", "#" or control characters was stored, listed on the admin
// API and logged, and named a corp no /{p}@{corpid}/ route could reach.
func TestAttackImportRejectsOddCorpIDs(t *testing.T) {
	e := newEnv(t)
	s := e.suite(nil, nil)
	for _, corpid := range []string{"ww<b>x</b>", "ww%2fx", "ww?x=1", "ww#x", "ww\x00x", "ww\x1b[31mx", "wwcorp\u00e9", "ww.x", "ww:x"} {
		if _, err := s.Import(context.Background(), corpid, "imported-permanent-code"); err == nil {
			t.Errorf("Import(%q) accepted", corpid)
		}
	}
	if _, total := s.Corps("", 0, 100); total != 0 {
		t.Errorf("%d corps stored after refused imports", total)
	}
}
