package wechatsim

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/wxproxy/wxproxy/wechat"
)

// Kinds of the WeCom third-party parts (SPEC §9, WeCom suites).
const (
	KindSuite    = "suite"    // a WeCom third-party suite (第三方应用)
	KindProvider = "provider" // a WeCom service provider (服务商)
)

// Suite is a WeCom third-party suite the simulator knows (SPEC §9, WeCom
// suites): its suite id and secret, and the message token and
// EncodingAESKey with which it encrypts pushes (suite_ticket, create_auth,
// change_auth, cancel_auth, reset_permanent_code) to Callback
// (Options.Callback when empty). Suite is a plain value.
type Suite struct {
	SuiteID  string
	Secret   string
	Token    string
	AESKey   string
	Callback string
}

// Provider is a WeCom service provider: its corpid and provider_secret,
// which buy the provider_access_token. Provider is a plain value.
type Provider struct {
	CorpID string
	Secret string
}

// Paths of the WeCom third-party endpoints.
const (
	PathSuiteToken       = "/cgi-bin/service/get_suite_token"
	PathPreAuthCode      = "/cgi-bin/service/get_pre_auth_code"
	PathPermanentCode    = "/cgi-bin/service/get_permanent_code"
	PathPermanentCodeV2  = "/cgi-bin/service/v2/get_permanent_code"
	PathCorpToken        = "/cgi-bin/service/get_corp_token"
	PathProviderToken    = "/cgi-bin/service/get_provider_token"
	PathAuthInfo         = "/cgi-bin/service/get_auth_info"
	PathAuthInfoV2       = "/cgi-bin/service/v2/get_auth_info"
	pathServicePrefix    = "/cgi-bin/service/"
	suiteTicketTTL       = 30 * time.Minute
	suiteAuthCodeTTL     = 10 * time.Minute
	suitePreAuthCodeTTL  = 1200 * time.Second
	maxSuiteTickets      = 16      // live tickets kept per suite; older ones are forgotten
	defaultMaxSuiteCorps = 100_000 // corps that installed one suite
	defaultMaxAuthCodes  = 10_000  // unexchanged auth codes per suite
)

// WeCom third-party errcodes (WECHAT.md "WeCom third-party").
const (
	codeInvalidAuthCode      = 40078
	codeInvalidSuiteSecret   = 40080
	codeInvalidSuiteToken    = 40082 // invalid suite_token or provider_token
	codeInvalidSuiteID       = 40083
	codeInvalidPermanentCode = 40084
	codeInvalidSuiteTicket   = 40085
	codeSuiteTokenExpired    = 42009
)

// suiteMessages holds WeCom's errmsg for its third-party codes.
var suiteMessages = map[int]string{
	codeInvalidAuthCode:      "invalid auth_code",
	codeInvalidSuiteSecret:   "invalid suite_secret",
	codeInvalidSuiteToken:    "invalid suite_token",
	codeInvalidSuiteID:       "invalid suite_id",
	codeInvalidPermanentCode: "invalid permanent_code",
	codeInvalidSuiteTicket:   "invalid suite_ticket",
	codeSuiteTokenExpired:    "suite_access_token expired",
}

// Errors of the suite control methods.
var (
	// ErrInstalled is returned by Install for a corp that has the suite
	// installed already.
	ErrInstalled = errors.New("wechatsim: the corp has the suite installed already")
	// errTooMany is returned when a bound on corps or auth codes is reached.
	errTooMany = errors.New("wechatsim: too many corps or outstanding auth codes for this suite")
	// errBadCorpID is returned for a corpid that cannot name a corp.
	errBadCorpID = errors.New("wechatsim: corpid: required, at most 64 bytes, without '/', '?' or '#', and not a suite id")
)

// suiteState is the mutable part of a suite's appState; it is guarded by
// the appState's mu.
type suiteState struct {
	tickets []ticket            // pushed tickets still valid, oldest first, at most maxSuiteTickets
	codes   map[string]authCode // auth code → the corp it installs (authCode.appid = corpid)
	corps   map[string]*appState
	order   []string // corpids in installation order
}

// corpState is the suite part of an installing corp's appState; it is
// guarded by that appState's mu.
type corpState struct {
	suite     *appState
	permanent string // "" = not installed: 40084
	authTime  int64
}

// suite returns the suite with id, or nil.
func (st *state) suite(id string) *appState {
	if a := st.apps[id]; a != nil && a.cfg.kind == KindSuite {
		return a
	}
	return nil
}

// provider returns the provider with corpid, or nil.
func (st *state) provider(corpid string) *appState {
	if a := st.apps[corpid]; a != nil && a.cfg.kind == KindProvider {
		return a
	}
	return nil
}

// suiteCorps returns every corp named corpid that installed a suite (once
// per suite), in suite configuration order.
func (st *state) suiteCorps(corpid string) []*appState {
	var out []*appState
	for _, id := range st.suites {
		s := st.apps[id]
		s.mu.Lock()
		if c := s.suite.corps[corpid]; c != nil {
			out = append(out, c)
		}
		s.mu.Unlock()
	}
	return out
}

// serviceRequest is the union of the /cgi-bin/service/ JSON bodies.
type serviceRequest struct {
	SuiteID        string `json:"suite_id"`
	SuiteSecret    string `json:"suite_secret"`
	SuiteTicket    string `json:"suite_ticket"`
	AuthCode       string `json:"auth_code"`
	AuthCorpID     string `json:"auth_corpid"`
	PermanentCode  string `json:"permanent_code"`
	CorpID         string `json:"corpid"`
	ProviderSecret string `json:"provider_secret"`
}

// readService decodes a service API body; false after answering 47001.
func readService(st *state, w *call) (serviceRequest, bool) {
	var req serviceRequest
	if !readJSON(w.body(), &req) {
		st.fail(w, styleWeCom, wechat.CodeDataFormat)
		return req, false
	}
	return req, true
}

// serveService answers /cgi-bin/service/*: the modelled endpoints, and
// any other path as a suite or provider API: the token is taken from
// suite_access_token (a suite token), provider_access_token (a provider
// token) or access_token (as for business APIs; provider tokens are
// accepted there too), and the call is echoed.
func (s *Server) serveService(st *state, w *call, r *http.Request) {
	switch r.URL.Path {
	case PathSuiteToken:
		s.suiteToken(st, w)
	case PathProviderToken:
		s.providerToken(st, w)
	case PathPreAuthCode:
		s.withSuiteToken(st, w, r, s.preAuthCode)
	case PathPermanentCode, PathPermanentCodeV2:
		s.withSuiteToken(st, w, r, s.permanentCode)
	case PathCorpToken:
		s.withSuiteToken(st, w, r, s.corpToken)
	case PathAuthInfo, PathAuthInfoV2:
		s.withSuiteToken(st, w, r, s.authInfo)
	default:
		q := r.URL.Query()
		switch {
		case q.Has("suite_access_token"):
			s.withSuiteToken(st, w, r, s.business)
		case q.Has("provider_access_token"):
			s.withProviderToken(st, w, r, s.business)
		default:
			s.withToken(st, w, r, s.business)
		}
	}
}

// suiteToken answers POST get_suite_token {suite_id, suite_secret,
// suite_ticket}: a ticket pushed within 30 minutes is required (40085
// otherwise, also for another suite's ticket); the same token is handed
// out while it is valid, with its remaining lifetime.
func (s *Server) suiteToken(st *state, w *call) {
	req, ok := readService(st, w)
	if !ok {
		return
	}
	a := st.suite(req.SuiteID)
	w.app = a
	if a != nil {
		a.fetchSuite.Add(1)
	}
	now := st.now().UnixNano()
	code := 0
	switch {
	case a == nil:
		code = codeInvalidSuiteID
	case !a.cfg.hasSecret(req.SuiteSecret):
		code = codeInvalidSuiteSecret
	case !a.suiteTicketValid(req.SuiteTicket, now):
		code = codeInvalidSuiteTicket
	default:
		code = s.takeQuota(a, PathSuiteToken, now)
	}
	if code != 0 {
		st.fail(w, styleWeCom, code)
		return
	}
	tok, expiresIn := st.held(a, kindSuite, now, s.ttl)
	writeJSON(w, http.StatusOK, map[string]any{"errcode": 0, "errmsg": "ok", "suite_access_token": tok, "expires_in": expiresIn})
}

// suiteTicketValid reports whether t is one of the suite's tickets pushed
// less than 30 minutes before now.
func (a *appState) suiteTicketValid(t string, now int64) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, tk := range a.suite.tickets {
		if tk.value == t && t != "" {
			return now < tk.expires
		}
	}
	return false
}

// held returns a's current token of kind (the suite, provider or corp
// token), minting a new one when there is none alive: WeCom hands out the
// same token while it is valid. It returns the token and its remaining
// seconds.
func (st *state) held(a *appState, kind tokenKind, now int64, ttl time.Duration) (string, int64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	cur := a.held
	if cur == nil || cur.status(now) != 0 || cur.remaining(now) < 1 {
		cur = st.mint(a, kind, now, ttl, "")
		a.held = cur
	}
	return cur.token, cur.remaining(now)
}

// providerToken answers POST get_provider_token {corpid, provider_secret}:
// the same token while it is valid; the success answer has no errcode.
func (s *Server) providerToken(st *state, w *call) {
	req, ok := readService(st, w)
	if !ok {
		return
	}
	a := st.provider(req.CorpID)
	w.app = a
	if a != nil {
		a.fetchProvider.Add(1)
	}
	now := st.now().UnixNano()
	code := 0
	switch {
	case req.CorpID == "":
		code = wechat.CodeAppIDMissing
	case req.ProviderSecret == "":
		code = wechat.CodeSecretMissing
	case a == nil:
		code = wechat.CodeInvalidAppID
	case !a.cfg.hasSecret(req.ProviderSecret):
		code = wechat.CodeInvalidCredential
	default:
		code = s.takeQuota(a, PathProviderToken, now)
	}
	if code != 0 {
		st.fail(w, styleWeCom, code)
		return
	}
	tok, expiresIn := st.held(a, kindProvider, now, s.ttl)
	writeJSON(w, http.StatusOK, map[string]any{"provider_access_token": tok, "expires_in": expiresIn})
}

// withSuiteToken checks suite_access_token (missing 41001; malformed,
// unknown or not a suite token 40082; a suite token that expired or was
// invalidated 42009), applies the path's configured quota, then runs h.
func (s *Server) withSuiteToken(st *state, w *call, r *http.Request, h apiHandler) {
	s.withServiceToken(st, w, r, "suite_access_token", kindSuite, codeSuiteTokenExpired, h)
}

// withProviderToken is withSuiteToken for provider_access_token; a dead
// provider token answers 42001 (WeCom documents no code of its own
// [assumed]).
func (s *Server) withProviderToken(st *state, w *call, r *http.Request, h apiHandler) {
	s.withServiceToken(st, w, r, "provider_access_token", kindProvider, wechat.CodeTokenExpired, h)
}

func (s *Server) withServiceToken(st *state, w *call, r *http.Request, param string, kind tokenKind, dead int, h apiHandler) {
	q := r.URL.Query()
	now := st.now()
	tok, code := st.lookup(q.Get(param), now.UnixNano())
	if tok != nil {
		w.app = tok.app
	}
	switch {
	case code == wechat.CodeTokenMissing:
	case tok == nil || tok.kind != kind:
		code = codeInvalidSuiteToken
	case code != 0:
		code = dead
	default:
		code = s.takeQuota(tok.app, r.URL.Path, now.UnixNano())
	}
	if code != 0 {
		st.fail(w, styleWeCom, code)
		return
	}
	h(st, w, r, q, tok, now)
}

// preAuthCode answers get_pre_auth_code.
func (s *Server) preAuthCode(st *state, w *call, _ *http.Request, _ url.Values, _ *record, _ time.Time) {
	writeJSON(w, http.StatusOK, map[string]any{"errcode": 0, "errmsg": "ok",
		"pre_auth_code": "preauthcode@@@" + randomString(24), "expires_in": int64(suitePreAuthCodeTTL / time.Second)})
}

// permanentCode answers get_permanent_code and v2/get_permanent_code: an
// auth code pushed with create_auth or reset_permanent_code, unused and
// less than 10 minutes old, gives the corp's permanent code (40078
// otherwise). v1 also answers the corp's token.
func (s *Server) permanentCode(st *state, w *call, r *http.Request, _ url.Values, tok *record, now time.Time) {
	req, ok := readService(st, w)
	if !ok {
		return
	}
	su, nowNS := tok.app, now.UnixNano()
	su.mu.Lock()
	ac, found := su.suite.codes[req.AuthCode]
	if found {
		delete(su.suite.codes, req.AuthCode) // single use
	}
	var c *appState
	if found && nowNS < ac.expires {
		c = su.suite.corps[ac.appid]
	}
	su.mu.Unlock()
	var permanent string
	if c != nil {
		c.mu.Lock()
		permanent = c.corp.permanent
		c.mu.Unlock()
	}
	if permanent == "" {
		st.fail(w, styleWeCom, codeInvalidAuthCode)
		return
	}
	ans := map[string]any{
		"errcode": 0, "errmsg": "ok", "permanent_code": permanent,
		"auth_corp_info": map[string]any{"corpid": c.cfg.id, "corp_name": "corp " + c.cfg.id},
		"auth_user_info": map[string]any{"userid": "admin", "open_userid": userID("open_userid", c.cfg.id), "name": "admin"},
		"state":          "",
	}
	if r.URL.Path == PathPermanentCode {
		c.fetchCorp.Add(1)
		ans["access_token"], ans["expires_in"] = st.held(c, kindCorp, nowNS, s.ttl)
		ans["auth_info"] = map[string]any{"agent": []map[string]any{{"agentid": 1000001 + int(c.cfg.num%1000), "name": "suite " + su.cfg.id}}}
	}
	writeJSON(w, http.StatusOK, ans)
}

// corpToken answers get_corp_token {auth_corpid, permanent_code}: the
// corp's token (the same one while it is valid), for a corp that has the
// suite installed and its current permanent code (40084 otherwise).
func (s *Server) corpToken(st *state, w *call, _ *http.Request, _ url.Values, tok *record, now time.Time) {
	req, ok := readService(st, w)
	if !ok {
		return
	}
	su := tok.app
	su.mu.Lock()
	named := su.suite.corps[req.AuthCorpID]
	su.mu.Unlock()
	if named != nil {
		named.fetchCorp.Add(1)
	}
	c := su.installed(req.AuthCorpID, req.PermanentCode)
	if c == nil {
		st.fail(w, styleWeCom, codeInvalidPermanentCode)
		return
	}
	t, expiresIn := st.held(c, kindCorp, now.UnixNano(), s.ttl)
	writeJSON(w, http.StatusOK, wechat.TokenResponse{Response: wechat.Response{ErrMsg: "ok"}, AccessToken: t, ExpiresIn: expiresIn})
}

// installed returns the corp corpid of suite su when permanent is its
// current permanent code, or nil.
func (su *appState) installed(corpid, permanent string) *appState {
	su.mu.Lock()
	c := su.suite.corps[corpid]
	su.mu.Unlock()
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.corp.permanent == "" || c.corp.permanent != permanent {
		return nil
	}
	return c
}

// authInfo answers get_auth_info and v2/get_auth_info {auth_corpid,
// permanent_code}: the corp's authorization, or 40084.
func (s *Server) authInfo(st *state, w *call, _ *http.Request, _ url.Values, tok *record, _ time.Time) {
	req, ok := readService(st, w)
	if !ok {
		return
	}
	su := tok.app
	c := su.installed(req.AuthCorpID, req.PermanentCode)
	if c == nil {
		st.fail(w, styleWeCom, codeInvalidPermanentCode)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"errcode": 0, "errmsg": "ok",
		"auth_corp_info": map[string]any{"corpid": c.cfg.id, "corp_name": "corp " + c.cfg.id},
		"auth_info":      map[string]any{"agent": []map[string]any{{"agentid": 1000001 + int(c.cfg.num%1000), "name": "suite " + su.cfg.id}}},
	})
}

// PushSuiteTicket mints a new suite_ticket for the suite id and pushes it,
// encrypted, to its callback URL; the ticket buys suite tokens for 30
// minutes, even when the push failed.
func (s *Server) PushSuiteTicket(id string) (PushResult, error) { return s.pushSuiteTicket(id, "") }

// pushSuiteTicket is PushSuiteTicket, encrypting for and addressing the push to receiveID (the
// suite id when empty).
func (s *Server) pushSuiteTicket(id, receiveID string) (PushResult, error) {
	st := s.st.Load()
	su := st.suite(id)
	if su == nil {
		return PushResult{}, ErrUnknownApp
	}
	now := st.now()
	t := ticket{value: "suiteticket@@@" + randomString(48), expires: now.Add(suiteTicketTTL).UnixNano()}
	su.mu.Lock()
	keep := su.suite.tickets[:0]
	for _, old := range su.suite.tickets {
		if now.UnixNano() < old.expires {
			keep = append(keep, old)
		}
	}
	if len(keep) >= maxSuiteTickets {
		keep = append(keep[:0], keep[len(keep)-maxSuiteTickets+1:]...)
	}
	su.suite.tickets = append(keep, t)
	su.mu.Unlock()
	res, err := s.pushAs(st, su, receiveID, fmt.Sprintf("<xml><SuiteId><![CDATA[%s]]></SuiteId><InfoType><![CDATA[suite_ticket]]></InfoType><TimeStamp>%d</TimeStamp><SuiteTicket><![CDATA[%s]]></SuiteTicket></xml>",
		id, now.Unix(), t.value))
	res.Ticket = t.value
	return res, err
}

// validCorpID reports whether corpid may name an installing corp.
func validCorpID(corpid string) bool {
	return corpid != "" && len(corpid) <= 64 && !strings.ContainsAny(corpid, "/?#")
}

// newAuthCode records a fresh auth code for corpid. The caller holds su.mu.
func (s *Server) newAuthCode(su *appState, corpid string, now time.Time) (string, error) {
	codes := su.suite.codes
	if len(codes) >= s.maxAuthCodes {
		for k, v := range codes {
			if now.UnixNano() >= v.expires {
				delete(codes, k)
			}
		}
		if len(codes) >= s.maxAuthCodes {
			return "", errTooMany
		}
	}
	code := "authcode@@@" + randomString(48)
	codes[code] = authCode{appid: corpid, expires: now.Add(suiteAuthCodeTTL).UnixNano()}
	return code, nil
}

// Install makes corpid install the suite id: the corp gets a permanent
// code (a new one if it had uninstalled before) and create_auth is pushed
// with a fresh auth code. A corp that has the suite installed answers
// ErrInstalled.
func (s *Server) Install(id, corpid string) (PushResult, error) { return s.install(id, corpid, "") }

// install is Install, encrypting for and addressing the push to receiveID (the
// suite id when empty).
func (s *Server) install(id, corpid, receiveID string) (PushResult, error) {
	st := s.st.Load()
	su := st.suite(id)
	if su == nil {
		return PushResult{}, ErrUnknownApp
	}
	if !validCorpID(corpid) || st.suite(corpid) != nil {
		return PushResult{}, errBadCorpID
	}
	now := st.now()
	su.mu.Lock()
	c := su.suite.corps[corpid]
	if c != nil {
		c.mu.Lock()
		installed := c.corp.permanent != ""
		c.mu.Unlock()
		if installed {
			su.mu.Unlock()
			return PushResult{}, ErrInstalled
		}
	} else if len(su.suite.corps) >= s.maxSuiteCorps {
		su.mu.Unlock()
		return PushResult{}, errTooMany
	}
	code, err := s.newAuthCode(su, corpid, now)
	if err != nil {
		su.mu.Unlock()
		return PushResult{}, err
	}
	if c == nil {
		c = &appState{cfg: &appConfig{id: corpid, kind: KindWeCom, suite: id, num: st.merchNum.Add(1)}, weCom: map[string]*record{},
			tickets: map[string]*ticket{}, hourly: map[string]*hourWindow{}, counters: newCounterSet(), corp: &corpState{suite: su}}
		su.suite.corps[corpid] = c
		su.suite.order = append(su.suite.order, corpid)
	}
	c.mu.Lock()
	c.corp.permanent = "permanentcode@@@" + randomString(32)
	c.corp.authTime = now.Unix()
	c.mu.Unlock()
	su.mu.Unlock()
	res, err := s.pushAs(st, su, receiveID, fmt.Sprintf("<xml><SuiteId><![CDATA[%s]]></SuiteId><AuthCode><![CDATA[%s]]></AuthCode><InfoType><![CDATA[create_auth]]></InfoType><TimeStamp>%d</TimeStamp><State><![CDATA[]]></State></xml>",
		id, code, now.Unix()))
	res.AuthCode = code
	return res, err
}

// installedCorp returns the corp corpid of the suite id when it has the
// suite installed, or ErrUnknownApp.
func (st *state) installedCorp(id, corpid string) (*appState, *appState, error) {
	su := st.suite(id)
	if su == nil {
		return nil, nil, ErrUnknownApp
	}
	su.mu.Lock()
	c := su.suite.corps[corpid]
	su.mu.Unlock()
	if c == nil {
		return nil, nil, ErrUnknownApp
	}
	c.mu.Lock()
	installed := c.corp.permanent != ""
	c.mu.Unlock()
	if !installed {
		return nil, nil, ErrUnknownApp
	}
	return su, c, nil
}

// Uninstall makes corpid remove the suite id: its permanent code and
// tokens die (40084, 40001), and cancel_auth is pushed.
func (s *Server) Uninstall(id, corpid string) (PushResult, error) { return s.uninstall(id, corpid, "") }

// uninstall is Uninstall, encrypting for and addressing the push to receiveID (the
// suite id when empty).
func (s *Server) uninstall(id, corpid, receiveID string) (PushResult, error) {
	st := s.st.Load()
	su, c, err := st.installedCorp(id, corpid)
	if err != nil {
		return PushResult{}, err
	}
	st.invalidate(c)
	c.mu.Lock()
	c.corp.permanent = ""
	c.mu.Unlock()
	return s.pushAs(st, su, receiveID, fmt.Sprintf("<xml><SuiteId><![CDATA[%s]]></SuiteId><InfoType><![CDATA[cancel_auth]]></InfoType><TimeStamp>%d</TimeStamp><AuthCorpId><![CDATA[%s]]></AuthCorpId></xml>",
		id, st.now().Unix(), corpid))
}

// ChangeAuth pushes change_auth for the installed corp corpid of the suite
// id (its administrator changed the authorized scope); nothing else changes.
func (s *Server) ChangeAuth(id, corpid string) (PushResult, error) {
	return s.changeAuth(id, corpid, "")
}

// changeAuth is ChangeAuth, encrypting for and addressing the push to receiveID (the
// suite id when empty).
func (s *Server) changeAuth(id, corpid, receiveID string) (PushResult, error) {
	st := s.st.Load()
	su, _, err := st.installedCorp(id, corpid)
	if err != nil {
		return PushResult{}, err
	}
	return s.pushAs(st, su, receiveID, fmt.Sprintf("<xml><SuiteId><![CDATA[%s]]></SuiteId><InfoType><![CDATA[change_auth]]></InfoType><TimeStamp>%d</TimeStamp><AuthCorpId><![CDATA[%s]]></AuthCorpId><State><![CDATA[]]></State></xml>",
		id, st.now().Unix(), corpid))
}

// ResetPermanentCode gives the installed corp corpid of the suite id a new
// permanent code (the old one dies at once: 40084; its tokens live on) and
// pushes reset_permanent_code with an auth code that get_permanent_code
// exchanges for the new one.
func (s *Server) ResetPermanentCode(id, corpid string) (PushResult, error) {
	return s.resetPermanentCode(id, corpid, "")
}

// resetPermanentCode is ResetPermanentCode, encrypting for and addressing the push to receiveID (the
// suite id when empty).
func (s *Server) resetPermanentCode(id, corpid, receiveID string) (PushResult, error) {
	st := s.st.Load()
	su, c, err := st.installedCorp(id, corpid)
	if err != nil {
		return PushResult{}, err
	}
	now := st.now()
	su.mu.Lock()
	code, err := s.newAuthCode(su, corpid, now)
	su.mu.Unlock()
	if err != nil {
		return PushResult{}, err
	}
	c.mu.Lock()
	c.corp.permanent = "permanentcode@@@" + randomString(32)
	c.mu.Unlock()
	res, err := s.pushAs(st, su, receiveID, fmt.Sprintf("<xml><SuiteId><![CDATA[%s]]></SuiteId><AuthCode><![CDATA[%s]]></AuthCode><InfoType><![CDATA[reset_permanent_code]]></InfoType><TimeStamp>%d</TimeStamp></xml>",
		id, code, now.Unix()))
	res.AuthCode = code
	return res, err
}

// VerifyURL makes WeCom's URL verification of the suite id's callback: a
// GET with msg_signature, timestamp, nonce and echostr (a random number,
// encrypted for receiveID: the suite id when empty; WeCom uses the
// provider's corpid for third-party URLs). Verified says whether the
// callback answered 200 with exactly the plain number, as WeCom requires.
func (s *Server) VerifyURL(id, receiveID string) (PushResult, error) {
	st := s.st.Load()
	su := st.suite(id)
	if su == nil {
		return PushResult{}, ErrUnknownApp
	}
	if su.cfg.callback == "" {
		return PushResult{}, errors.New("wechatsim: no callback URL configured (-callback)")
	}
	if receiveID == "" {
		receiveID = id
	}
	plain := strconv.FormatUint(rand.Uint64N(1e19), 10)
	echo, err := su.cfg.crypt.Encrypt([]byte(plain), receiveID)
	if err != nil {
		return PushResult{}, err
	}
	ts := strconv.FormatInt(st.now().Unix(), 10)
	nonce := strconv.FormatUint(rand.Uint64N(1e10), 10)
	res, err := s.send(http.MethodGet, su.cfg.callback, url.Values{"msg_signature": {su.cfg.crypt.Sign(ts, nonce, echo)},
		"timestamp": {ts}, "nonce": {nonce}, "echostr": {echo}}, "")
	res.Echo = plain
	res.Verified = err == nil && res.Status == http.StatusOK && res.Body == plain
	return res, err
}

// suiteActions are the control actions under /sim/suites/{id}/.
var suiteActions = []string{"push-ticket", "install", "uninstall", "change-auth", "reset-permanent-code", "verify-url"}

// controlSuite answers POST /sim/suites/{id}/push-ticket, /install,
// /uninstall, /change-auth, /reset-permanent-code and /verify-url. The
// body names the corp ({"corpid"}) and may name the receive id the push
// is encrypted for and addressed to ("receive_id"; WeCom was seen sending
// create_auth with the provider's corpid), the suite id by default.
func (s *Server) controlSuite(w http.ResponseWriter, r *http.Request, rest string) {
	id, action, ok := strings.Cut(rest, "/")
	if !ok || id == "" || !slices.Contains(suiteActions, action) {
		writeJSON(w, http.StatusNotFound, controlError{Error: "unknown control path " + r.URL.Path})
		return
	}
	if !methodIs(w, r, http.MethodPost) {
		return
	}
	var res PushResult
	var err error
	var req struct {
		CorpID    string `json:"corpid"`
		ReceiveID string `json:"receive_id"`
	}
	if r.ContentLength != 0 || action != "push-ticket" && action != "verify-url" {
		if err := readControl(r, &req); err != nil {
			badRequest(w, err)
			return
		}
	}
	switch action {
	case "push-ticket":
		res, err = s.pushSuiteTicket(id, req.ReceiveID)
	case "verify-url":
		res, err = s.VerifyURL(id, req.ReceiveID)
	case "install":
		res, err = s.install(id, req.CorpID, req.ReceiveID)
	case "uninstall":
		res, err = s.uninstall(id, req.CorpID, req.ReceiveID)
	case "change-auth":
		res, err = s.changeAuth(id, req.CorpID, req.ReceiveID)
	default:
		res, err = s.resetPermanentCode(id, req.CorpID, req.ReceiveID)
	}
	switch {
	case errors.Is(err, ErrUnknownApp):
		writeJSON(w, http.StatusNotFound, controlError{Error: "unknown suite, or a corp without the suite installed"})
	case errors.Is(err, ErrInstalled):
		writeJSON(w, http.StatusConflict, controlError{Error: err.Error()})
	case errors.Is(err, errTooMany):
		writeJSON(w, http.StatusTooManyRequests, controlError{Error: err.Error()})
	case errors.Is(err, errBadCorpID):
		badRequest(w, err)
	case err != nil:
		writeJSON(w, http.StatusBadGateway, map[string]any{"error": err.Error(), "ticket": res.Ticket, "auth_code": res.AuthCode, "echo": res.Echo})
	default:
		writeJSON(w, http.StatusOK, res)
	}
}
