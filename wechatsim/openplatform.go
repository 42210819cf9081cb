package wechatsim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/wxproxy/wxproxy/wechat"
	"github.com/wxproxy/wxproxy/wxcrypt"
)

// KindComponent is the kind of a third-party platform's component app.
const KindComponent = "component"

// Component is a WeChat Open Platform third-party platform the simulator
// knows (SPEC §9, Open Platform): its component appid and secret, and the
// message token and EncodingAESKey with which it encrypts pushes to
// Callback (Options.Callback when empty). Component is a plain value.
type Component struct {
	AppID    string
	Secret   string
	Token    string
	AESKey   string
	Callback string
}

// Open Platform behaviour, per WECHAT.md.
const (
	componentTicketTTL = 12 * time.Hour
	authCodeTTL        = time.Hour
	preAuthCodeTTL     = 600 * time.Second
	maxMerchants       = 100_000
)

// Errcodes of the Open Platform.
const (
	codeTicketExpired  = 61005
	codeTicketInvalid  = 61006
	codeInvalidComp    = 61011
	codeRefreshInvalid = 61023
	codeInvalidAuth    = 61009 // code invalid (authorization code unknown, used or expired)
)

// platformState is the mutable Open Platform part of a component's
// appState; it is guarded by the appState's mu.
type platformState struct {
	tickets   []ticket            // pushed tickets still valid, oldest first
	codes     map[string]authCode // authorization code → its merchant
	merchants map[string]*appState
	order     []string // merchant appids in authorization order
}

type authCode struct {
	appid   string
	expires int64
}

// merchantState is the Open Platform part of a merchant's appState.
type merchantState struct {
	component  *appState
	refresh    string // "" = unauthorized: 61023
	authTime   int64
	authorizer *record // the latest authorizer token
}

// comp returns the component with appid, or nil.
func (st *state) comp(appid string) *appState {
	if a := st.apps[appid]; a != nil && a.cfg.kind == KindComponent {
		return a
	}
	return nil
}

// merchant returns the merchant appid of any component, or nil.
func (st *state) merchant(appid string) *appState {
	for _, id := range st.components {
		c := st.apps[id]
		c.mu.Lock()
		m := c.plat.merchants[appid]
		c.mu.Unlock()
		if m != nil {
			return m
		}
	}
	return nil
}

// componentRequest is the union of the component APIs' JSON bodies.
type componentRequest struct {
	ComponentAppID     string `json:"component_appid"`
	ComponentAppSecret string `json:"component_appsecret"`
	ComponentSecret    string `json:"component_secret"`
	Ticket             string `json:"component_verify_ticket"`
	AuthorizationCode  string `json:"authorization_code"`
	AuthorizerAppID    string `json:"authorizer_appid"`
	RefreshToken       string `json:"authorizer_refresh_token"`
	Offset             int    `json:"offset"`
	Count              int    `json:"count"`
}

// readComponent decodes a component API body; false after answering 47001.
func readComponent(st *state, w *call, r *http.Request) (componentRequest, bool) {
	var req componentRequest
	if err := json.NewDecoder(io.LimitReader(w.body(), maxControlBody)).Decode(&req); err != nil {
		st.fail(w, styleWeChat, wechat.CodeDataFormat)
		return req, false
	}
	return req, true
}

// serveComponent answers /cgi-bin/component/*; false if path is not one.
func (s *Server) serveComponent(st *state, w *call, r *http.Request) bool {
	switch r.URL.Path {
	case "/cgi-bin/component/api_component_token":
		s.componentToken(st, w, r)
	case "/cgi-bin/component/api_start_push_ticket":
		s.startPush(st, w, r)
	case "/cgi-bin/component/api_create_preauthcode", "/cgi-bin/component/api_query_auth",
		"/cgi-bin/component/api_authorizer_token", "/cgi-bin/component/api_get_authorizer_info",
		"/cgi-bin/component/api_get_authorizer_list":
		s.withComponentToken(st, w, r)
	default:
		return false
	}
	return true
}

// componentToken answers api_component_token: a valid ticket is required;
// each fetch mints a new token, the previous one lives 5 more minutes.
func (s *Server) componentToken(st *state, w *call, r *http.Request) {
	req, ok := readComponent(st, w, r)
	if !ok {
		return
	}
	c := st.comp(req.ComponentAppID)
	w.app = c
	if c != nil {
		c.fetchComponent.Add(1)
	}
	now := st.now().UnixNano()
	code := 0
	switch {
	case req.ComponentAppID == "":
		code = wechat.CodeAppIDMissing
	case c == nil:
		code = codeInvalidComp
	case req.ComponentAppSecret == "":
		code = wechat.CodeSecretMissing
	case !c.cfg.hasSecret(req.ComponentAppSecret):
		code = wechat.CodeInvalidSecret
	default:
		code = c.checkTicket(req.Ticket, now)
	}
	if code != 0 {
		st.fail(w, styleWeChat, code)
		return
	}
	c.mu.Lock()
	prev := c.classic
	supersede(c, kindComponent, prev, now)
	c.classic = st.mint(c, kindComponent, now, s.ttl, "")
	tok := c.classic.token
	c.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{"component_access_token": tok, "expires_in": int64(s.ttl / time.Second)})
}

// checkTicket answers 0, 61005 (expired) or 61006 (never pushed).
func (c *appState) checkTicket(t string, now int64) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, tk := range c.plat.tickets {
		if tk.value == t {
			if now >= tk.expires {
				return codeTicketExpired
			}
			return 0
		}
	}
	return codeTicketInvalid
}

// startPush answers api_start_push_ticket (secret in the body, no token)
// and pushes a ticket at once.
func (s *Server) startPush(st *state, w *call, r *http.Request) {
	req, ok := readComponent(st, w, r)
	if !ok {
		return
	}
	c := st.comp(req.ComponentAppID)
	w.app = c
	code := 0
	switch {
	case c == nil:
		code = codeInvalidComp
	case !c.cfg.hasSecret(req.ComponentSecret):
		code = wechat.CodeInvalidSecret
	}
	if code != 0 {
		st.fail(w, styleWeChat, code)
		return
	}
	go func() { _, _ = s.PushTicket(c.cfg.id) }() // WeChat pushes later, not within the call
	writeJSON(w, http.StatusOK, wechat.Response{ErrCode: 0, ErrMsg: "ok"})
}

// withComponentToken checks component_access_token (41001, 40014, 40001,
// 42001; a token that is not a component token: 61014 "must use component
// token for component api"), then answers the component API.
func (s *Server) withComponentToken(st *state, w *call, r *http.Request) {
	q := r.URL.Query()
	now := st.now()
	tok, code := st.lookup(q.Get("component_access_token"), now.UnixNano())
	if code == 0 && tok.kind != kindComponent {
		code = 61014
	}
	if tok != nil {
		w.app = tok.app
	}
	if code != 0 {
		st.fail(w, styleWeChat, code)
		return
	}
	req, ok := readComponent(st, w, r)
	if !ok {
		return
	}
	c := tok.app
	if req.ComponentAppID != c.cfg.id {
		st.fail(w, styleWeChat, codeInvalidComp)
		return
	}
	nowNS := now.UnixNano()
	switch r.URL.Path {
	case "/cgi-bin/component/api_create_preauthcode":
		writeJSON(w, http.StatusOK, map[string]any{"pre_auth_code": "preauthcode@@@" + randomString(24), "expires_in": int64(preAuthCodeTTL / time.Second)})
	case "/cgi-bin/component/api_query_auth":
		s.queryAuth(st, w, c, req, nowNS)
	case "/cgi-bin/component/api_authorizer_token":
		s.authorizerToken(st, w, c, req, nowNS)
	case "/cgi-bin/component/api_get_authorizer_info":
		c.mu.Lock()
		m := c.plat.merchants[req.AuthorizerAppID]
		var rt string
		if m != nil {
			rt = m.merch.refresh
		}
		c.mu.Unlock()
		if m == nil || rt == "" {
			st.fail(w, styleWeChat, 61003) // component is not authorized by this account
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{
			"authorizer_info":    map[string]any{"nick_name": "merchant " + req.AuthorizerAppID, "user_name": "gh_" + req.AuthorizerAppID, "service_type_info": map[string]int{"id": 2}, "verify_type_info": map[string]int{"id": 0}},
			"authorization_info": map[string]any{"authorizer_appid": req.AuthorizerAppID, "authorizer_refresh_token": rt, "func_info": funcInfo()},
		})
	case "/cgi-bin/component/api_get_authorizer_list":
		count := req.Count
		if count <= 0 || count > 500 {
			st.fail(w, styleWeChat, wechat.CodeInvalidArgs)
			return
		}
		c.mu.Lock()
		type item struct {
			AppID   string `json:"authorizer_appid"`
			Refresh string `json:"refresh_token"`
			Time    int64  `json:"auth_time"`
		}
		var list []item
		for _, id := range c.plat.order {
			if m := c.plat.merchants[id]; m != nil && m.merch.refresh != "" {
				list = append(list, item{id, m.merch.refresh, m.merch.authTime})
			}
		}
		c.mu.Unlock()
		total := len(list)
		list = list[min(req.Offset, total):min(max(req.Offset, 0)+count, total)]
		writeJSON(w, http.StatusOK, map[string]any{"total_count": total, "list": list})
	}
}

func funcInfo() []map[string]any {
	return []map[string]any{{"funcscope_category": map[string]int{"id": 1}}, {"funcscope_category": map[string]int{"id": 15}}}
}

// queryAuth answers api_query_auth: a valid, unused authorization code
// gives the merchant's first token and its refresh token.
func (s *Server) queryAuth(st *state, w *call, c *appState, req componentRequest, now int64) {
	c.mu.Lock()
	ac, ok := c.plat.codes[req.AuthorizationCode]
	if ok {
		delete(c.plat.codes, req.AuthorizationCode) // single use
	}
	var m *appState
	if ok && now < ac.expires {
		m = c.plat.merchants[ac.appid]
	}
	c.mu.Unlock()
	if m == nil || m.merch.refresh == "" {
		st.fail(w, styleWeChat, codeInvalidAuth)
		return
	}
	m.fetchAuthorizer.Add(1)
	tok, rt := st.mintAuthorizer(m, now, s.ttl)
	writeJSON(w, http.StatusOK, map[string]any{"authorization_info": map[string]any{
		"authorizer_appid": m.cfg.id, "authorizer_access_token": tok, "expires_in": int64(s.ttl / time.Second),
		"authorizer_refresh_token": rt, "func_info": funcInfo(),
	}})
}

// authorizerToken answers api_authorizer_token: a new token each call
// (the previous lives 5 more minutes), the refresh token unchanged; a
// wrong or dead refresh token answers 61023.
func (s *Server) authorizerToken(st *state, w *call, c *appState, req componentRequest, now int64) {
	c.mu.Lock()
	m := c.plat.merchants[req.AuthorizerAppID]
	c.mu.Unlock()
	if m == nil {
		st.fail(w, styleWeChat, 61003)
		return
	}
	w.app = m
	m.fetchAuthorizer.Add(1)
	m.mu.Lock()
	valid := m.merch.refresh != "" && m.merch.refresh == req.RefreshToken
	m.mu.Unlock()
	if !valid {
		st.fail(w, styleWeChat, codeRefreshInvalid)
		return
	}
	tok, rt := st.mintAuthorizer(m, now, s.ttl)
	writeJSON(w, http.StatusOK, map[string]any{"authorizer_access_token": tok, "expires_in": int64(s.ttl / time.Second), "authorizer_refresh_token": rt})
}

// mintAuthorizer mints a merchant's new token, superseding the previous
// one with the 5-minute overlap.
func (st *state) mintAuthorizer(m *appState, now int64, ttl time.Duration) (tok, refresh string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	supersede(m, kindAuthorizer, m.merch.authorizer, now)
	m.merch.authorizer = st.mint(m, kindAuthorizer, now, ttl, "")
	return m.merch.authorizer.token, m.merch.refresh
}

// PushTicket mints a new component_verify_ticket for the component appid
// and pushes it, encrypted, to its callback URL. It returns the callback's
// HTTP status (0 when it could not be reached).
func (s *Server) PushTicket(appid string) (PushResult, error) {
	st := s.st.Load()
	c := st.comp(appid)
	if c == nil {
		return PushResult{}, ErrUnknownApp
	}
	now := st.now()
	t := ticket{value: "ticket@@@" + randomString(48), expires: now.Add(componentTicketTTL).UnixNano()}
	c.mu.Lock()
	keep := c.plat.tickets[:0]
	for _, old := range c.plat.tickets {
		if now.UnixNano() < old.expires {
			keep = append(keep, old)
		}
	}
	c.plat.tickets = append(keep, t)
	c.mu.Unlock()
	res, err := s.push(st, c, fmt.Sprintf("<xml><AppId><![CDATA[%s]]></AppId><CreateTime>%d</CreateTime><InfoType><![CDATA[component_verify_ticket]]></InfoType><ComponentVerifyTicket><![CDATA[%s]]></ComponentVerifyTicket></xml>",
		c.cfg.id, now.Unix(), t.value))
	res.Ticket = t.value
	return res, err
}

// PushResult is what the callback answered a push.
type PushResult struct {
	Status            int    `json:"status"` // 0: unreachable
	Body              string `json:"body"`
	Ticket            string `json:"ticket,omitempty"`             // PushTicket, PushSuiteTicket: the ticket pushed (for tests)
	AuthorizationCode string `json:"authorization_code,omitempty"` // Authorize
	AuthCode          string `json:"auth_code,omitempty"`          // Install, ResetPermanentCode
	Echo              string `json:"echo,omitempty"`               // VerifyURL: the plain echostr the callback should answer
	Verified          bool   `json:"verified,omitempty"`           // VerifyURL: it did
}

// Authorize makes merchant authorize the component (creating it, with a
// refresh token, if new; an existing one keeps its refresh token unless
// it had unauthorized) and pushes authorized (updateauthorized for an
// authorized merchant) with a fresh authorization code.
func (s *Server) Authorize(component, merchant string) (PushResult, error) {
	st := s.st.Load()
	c := st.comp(component)
	if c == nil {
		return PushResult{}, ErrUnknownApp
	}
	if merchant == "" || len(merchant) > 64 || strings.ContainsAny(merchant, "/?#") || st.apps[merchant] != nil {
		return PushResult{}, fmt.Errorf("wechatsim: authorizer_appid %q is not usable", merchant)
	}
	now := st.now()
	code := "queryauthcode@@@" + randomString(48)
	c.mu.Lock()
	m := c.plat.merchants[merchant]
	if m == nil {
		if len(c.plat.merchants) >= maxMerchants {
			c.mu.Unlock()
			return PushResult{}, errors.New("wechatsim: too many merchants")
		}
		m = &appState{cfg: &appConfig{id: merchant, kind: KindOfficial, component: c.cfg.id, num: st.merchNum.Add(1)}, weCom: map[string]*record{},
			tickets: map[string]*ticket{}, counters: newCounterSet(), merch: &merchantState{component: c}}
		c.plat.merchants[merchant] = m
		c.plat.order = append(c.plat.order, merchant)
	}
	c.plat.codes[code] = authCode{appid: merchant, expires: now.Add(authCodeTTL).UnixNano()}
	if len(c.plat.codes) > 10_000 {
		for k, v := range c.plat.codes {
			if now.UnixNano() >= v.expires {
				delete(c.plat.codes, k)
			}
		}
	}
	c.mu.Unlock()
	m.mu.Lock()
	event := "updateauthorized"
	if m.merch.refresh == "" {
		event = "authorized"
		m.merch.refresh = "refreshtoken@@@" + randomString(32)
	}
	m.merch.authTime = now.Unix()
	m.mu.Unlock()
	res, err := s.push(st, c, fmt.Sprintf("<xml><AppId><![CDATA[%s]]></AppId><CreateTime>%d</CreateTime><InfoType><![CDATA[%s]]></InfoType><AuthorizerAppid><![CDATA[%s]]></AuthorizerAppid><AuthorizationCode><![CDATA[%s]]></AuthorizationCode><AuthorizationCodeExpiredTime>%d</AuthorizationCodeExpiredTime><PreAuthCode><![CDATA[preauthcode@@@x]]></PreAuthCode></xml>",
		c.cfg.id, now.Unix(), event, merchant, code, now.Add(authCodeTTL).Unix()))
	res.AuthorizationCode = code
	return res, err
}

// Unauthorize makes merchant cancel its authorization: its refresh token
// and tokens die (61023, 40001), and unauthorized is pushed.
func (s *Server) Unauthorize(component, merchant string) (PushResult, error) {
	st := s.st.Load()
	c := st.comp(component)
	if c == nil {
		return PushResult{}, ErrUnknownApp
	}
	c.mu.Lock()
	m := c.plat.merchants[merchant]
	c.mu.Unlock()
	if m == nil {
		return PushResult{}, ErrUnknownApp
	}
	st.invalidate(m)
	m.mu.Lock()
	m.merch.refresh = ""
	m.mu.Unlock()
	return s.push(st, c, fmt.Sprintf("<xml><AppId><![CDATA[%s]]></AppId><CreateTime>%d</CreateTime><InfoType><![CDATA[unauthorized]]></InfoType><AuthorizerAppid><![CDATA[%s]]></AuthorizerAppid></xml>",
		c.cfg.id, st.now().Unix(), merchant))
}

// push encrypts msg for component or suite c and POSTs it to its callback
// URL as WeChat does: encrypted XML envelope, timestamp, nonce and
// msg_signature in the query, plus signature and encrypt_type=aes from the
// Open Platform (WeCom sends neither).
func (s *Server) push(st *state, c *appState, msg string) (PushResult, error) {
	return s.pushAs(st, c, "", msg)
}

// pushAs is push with the receive id receiveID (c's id when empty) for the
// encryption and, from WeCom, the envelope's ToUserName.
func (s *Server) pushAs(st *state, c *appState, receiveID, msg string) (PushResult, error) {
	target := c.cfg.callback
	if target == "" {
		return PushResult{}, errors.New("wechatsim: no callback URL configured (-callback)")
	}
	if receiveID == "" {
		receiveID = c.cfg.id
	}
	enc, err := c.cfg.crypt.Encrypt([]byte(msg), receiveID)
	if err != nil {
		return PushResult{}, err
	}
	ts := strconv.FormatInt(st.now().Unix(), 10)
	nonce := strconv.FormatUint(rand.Uint64N(1e10), 10)
	q := url.Values{"timestamp": {ts}, "nonce": {nonce}, "msg_signature": {c.cfg.crypt.Sign(ts, nonce, enc)}}
	var body string
	if c.cfg.kind == KindSuite {
		// WeCom: only msg_signature, timestamp and nonce; the envelope names
		// the suite as ToUserName.
		body = "<xml><ToUserName><![CDATA[" + receiveID + "]]></ToUserName><Encrypt><![CDATA[" + enc + "]]></Encrypt><AgentID><![CDATA[]]></AgentID></xml>"
	} else {
		q.Set("signature", wxcrypt.Signature(c.cfg.msgToken, ts, nonce))
		q.Set("encrypt_type", "aes")
		body = "<xml><AppId><![CDATA[" + c.cfg.id + "]]></AppId><Encrypt><![CDATA[" + enc + "]]></Encrypt></xml>"
	}
	return s.send(http.MethodPost, target, q, body)
}

// send makes one request to a callback URL with the query q added and
// returns what it answered.
func (s *Server) send(method, target string, q url.Values, body string) (PushResult, error) {
	sep := "?"
	if strings.Contains(target, "?") {
		sep = "&"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, target+sep+q.Encode(), strings.NewReader(body))
	if err != nil {
		return PushResult{}, err
	}
	if body != "" {
		req.Header.Set("Content-Type", "text/xml")
	}
	resp, err := s.pushClient.Do(req)
	if err != nil {
		return PushResult{}, fmt.Errorf("wechatsim: push to the callback: %w", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return PushResult{Status: resp.StatusCode, Body: string(b)}, nil
}

// controlPlatform answers POST /sim/platforms/{appid}/push-ticket,
// /authorize and /unauthorize.
func (s *Server) controlPlatform(w http.ResponseWriter, r *http.Request, rest string) {
	appid, action, ok := strings.Cut(rest, "/")
	if !ok || appid == "" || !slices.Contains([]string{"push-ticket", "authorize", "unauthorize"}, action) {
		writeJSON(w, http.StatusNotFound, controlError{Error: "unknown control path " + r.URL.Path})
		return
	}
	if !methodIs(w, r, http.MethodPost) {
		return
	}
	var res PushResult
	var err error
	switch action {
	case "push-ticket":
		res, err = s.PushTicket(appid)
	default:
		var req struct {
			AuthorizerAppID string `json:"authorizer_appid"`
		}
		if err := readControl(r, &req); err != nil {
			badRequest(w, err)
			return
		}
		if action == "authorize" {
			res, err = s.Authorize(appid, req.AuthorizerAppID)
		} else {
			res, err = s.Unauthorize(appid, req.AuthorizerAppID)
		}
	}
	switch {
	case errors.Is(err, ErrUnknownApp):
		writeJSON(w, http.StatusNotFound, controlError{Error: "unknown component or merchant"})
	case err != nil:
		writeJSON(w, http.StatusBadGateway, map[string]any{"error": err.Error(), "ticket": res.Ticket, "authorization_code": res.AuthorizationCode})
	default:
		writeJSON(w, http.StatusOK, res)
	}
}
