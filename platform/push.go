package platform

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"net/url"
	"slices"

	"github.com/wxproxy/wxproxy/callback"
	"github.com/wxproxy/wxproxy/token"
	"github.com/wxproxy/wxproxy/wechat"
	"github.com/wxproxy/wxproxy/wxcrypt"
)

// Push errors are the callback listener's: a bad signature (401) and a
// push that cannot be read (400) change nothing.
var (
	ErrSignature = callback.ErrSignature
	ErrBadPush   = callback.ErrBadPush
)

var _ callback.Receiver = (*Platform)(nil)

// VerifyURL answers a GET to the callback URL: with msg_signature and an
// encrypted echostr (WeCom style) the decrypted echo; with a plain
// signature over token, timestamp and nonce (Official Account style) the
// echostr itself.
func (p *Platform) VerifyURL(_ context.Context, q url.Values) ([]byte, error) {
	echo := q.Get("echostr")
	if echo == "" || len(echo) > 1024 {
		return nil, fmt.Errorf("%w: no echostr", ErrBadPush)
	}
	if sig := q.Get("msg_signature"); sig != "" {
		out, err := p.opts.Crypter.VerifyURL(sig, q.Get("timestamp"), q.Get("nonce"), echo, p.appid)
		if errors.Is(err, wxcrypt.ErrSignature) {
			return nil, ErrSignature
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrBadPush, err)
		}
		return out, nil
	}
	if err := p.opts.Crypter.VerifyPlain(q.Get("signature"), q.Get("timestamp"), q.Get("nonce")); err != nil {
		return nil, ErrSignature
	}
	return []byte(echo), nil
}

// push is the decrypted XML of an Open Platform system push.
type push struct {
	AppID             string `xml:"AppId"`
	CreateTime        int64  `xml:"CreateTime"`
	InfoType          string `xml:"InfoType"`
	Ticket            string `xml:"ComponentVerifyTicket"`
	AuthorizerAppID   string `xml:"AuthorizerAppid"`
	AuthorizationCode string `xml:"AuthorizationCode"`
}

// HandlePush verifies, decrypts and applies one push to the platform's
// callback URL (query: timestamp, nonce, msg_signature; body: the
// encrypted XML envelope). Duplicates and late pushes are harmless: the
// newest ticket wins, an authorization code is exchanged once, and an
// unauthorized push older than the merchant's last authorization is
// ignored. It returns ErrSignature or ErrBadPush (nothing changed), an
// error for a failure WeChat should retry, or nil (answer "success").
func (p *Platform) HandlePush(ctx context.Context, q url.Values, body []byte) error {
	plain, err := p.opts.Crypter.Open(q.Get("msg_signature"), q.Get("timestamp"), q.Get("nonce"), body, p.appid)
	switch {
	case errors.Is(err, wxcrypt.ErrSignature):
		return ErrSignature
	case err != nil:
		return fmt.Errorf("%w: %w", ErrBadPush, err)
	}
	var m push
	d := xml.NewDecoder(bytes.NewReader(plain))
	d.Strict = true
	if err := d.Decode(&m); err != nil {
		return fmt.Errorf("%w: decrypted XML: %w", ErrBadPush, err)
	}
	if m.AppID != "" && m.AppID != p.appid {
		return fmt.Errorf("%w: AppId is not this platform's component", ErrBadPush)
	}
	switch m.InfoType {
	case "component_verify_ticket":
		return p.onTicket(ctx, m)
	case "authorized", "updateauthorized":
		if m.AuthorizerAppID == "" || m.AuthorizationCode == "" {
			return fmt.Errorf("%w: %s without AuthorizerAppid or AuthorizationCode", ErrBadPush, m.InfoType)
		}
		if _, err := p.exchange(ctx, m.AuthorizationCode, m.CreateTime); err != nil {
			return err
		}
		p.log.Info("merchant authorized", "authorizer", m.AuthorizerAppID, "event", m.InfoType)
		return nil
	case "unauthorized":
		if m.AuthorizerAppID == "" {
			return fmt.Errorf("%w: unauthorized without AuthorizerAppid", ErrBadPush)
		}
		return p.onUnauthorized(ctx, m)
	}
	p.log.Info("push ignored", "info_type", truncate(m.InfoType, 64))
	return nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// onTicket keeps a pushed ticket (newest wins, durably) and, when the
// component token is missing, has it fetched at once.
func (p *Platform) onTicket(ctx context.Context, m push) error {
	if m.Ticket == "" || len(m.Ticket) > 1024 {
		return fmt.Errorf("%w: component_verify_ticket without a usable ticket", ErrBadPush)
	}
	now := p.now()
	t := PushedTicket(m.Ticket, m.CreateTime, now, p.opts.TicketTTL) // 12 h from when WeChat made it
	if !t.Valid(now) {
		p.log.Info("expired ticket push ignored")
		return nil
	}
	stored, err := p.store.SaveTicket(ctx, p.name, t)
	if err != nil {
		// Keep it in memory at least; WeChat pushes again in 10 minutes.
		p.storeError("save_ticket", err)
		stored = t
	}
	if p.adoptTicket(stored) {
		p.log.Info("component_verify_ticket received", "fingerprint", token.Fingerprint(stored.Value))
	}
	if !p.component.Current().Valid(now) {
		select {
		case p.kick <- struct{}{}:
		default:
		}
	}
	return nil
}

// onUnauthorized drops a merchant, unless the push is older than its
// last authorization (a late push after a re-authorization).
func (p *Platform) onUnauthorized(ctx context.Context, m push) error {
	if cur := p.lookup(m.AuthorizerAppID); cur != nil && m.CreateTime > 0 && m.CreateTime < cur.authorizedAt.Load() {
		p.log.Info("late unauthorized push ignored", "authorizer", m.AuthorizerAppID)
		return nil
	}
	if r, err := p.store.Record(ctx, p.name, m.AuthorizerAppID); err == nil && m.CreateTime > 0 && m.CreateTime < r.AuthorizedAt {
		p.log.Info("late unauthorized push ignored", "authorizer", m.AuthorizerAppID)
		return nil
	}
	if err := p.store.DeleteRecord(ctx, p.name, m.AuthorizerAppID); err != nil {
		p.storeError("delete_authorizer", err)
		return err // WeChat retries the push
	}
	p.drop(m.AuthorizerAppID)
	p.log.Info("merchant unauthorized the platform; dropped", "authorizer", m.AuthorizerAppID)
	return nil
}

// usedCode is an authorization code exchanged recently and what it gave.
type usedCode struct {
	code    string
	auth    Authorization
	refused error         // WeChat's final refusal of the code (see codeRefused), else nil
	done    chan struct{} // closed when the exchange ended; auth and refused are then set (AppID "" = failed)
}

// codeRefused reports whether err is WeChat's final refusal of an
// authorization code (61009 invalid or used, 61010 expired): asking again
// cannot succeed, so it is remembered like a success and a replayed push
// costs no second exchange.
func codeRefused(err error) bool {
	var api *wechat.APIError
	return errors.As(err, &api) && (api.Code == 61009 || api.Code == 61010)
}

// ExchangeCode exchanges an authorization code once, whoever asks first:
// the authorization push and an SDK's api_query_auth (with the code its
// redirect carried) both name it, and WeChat accepts it only once. The
// second asker gets the first one's result.
func (p *Platform) ExchangeCode(ctx context.Context, code string) (Authorization, error) {
	return p.exchange(ctx, code, 0)
}

func (p *Platform) exchange(ctx context.Context, code string, createTime int64) (Authorization, error) {
	p.codeMu.Lock()
	for _, u := range p.codes {
		if u.code == code {
			p.codeMu.Unlock()
			select {
			case <-u.done:
			case <-ctx.Done():
				return Authorization{}, ctx.Err()
			}
			if u.auth.AppID != "" {
				return u.auth, nil
			}
			if u.refused != nil {
				return Authorization{}, u.refused
			}
			return p.exchange(ctx, code, createTime) // the first exchange failed: try again
		}
	}
	u := &usedCode{code: code, done: make(chan struct{})}
	if p.codes = append(p.codes, u); len(p.codes) > usedCodes {
		p.codes = p.codes[1:]
	}
	p.codeMu.Unlock()
	auth, err := p.QueryAuth(ctx, code, createTime)
	p.codeMu.Lock()
	switch {
	case codeRefused(err):
		u.refused = err // read by waiters only after done is closed
	case err != nil:
		if i := slices.Index(p.codes, u); i >= 0 {
			p.codes = slices.Delete(p.codes, i, i+1)
		}
	default:
		u.auth = auth // read by waiters only after done is closed
	}
	p.codeMu.Unlock()
	close(u.done)
	return auth, err
}

// Authorization is what api_query_auth told of a merchant, without its
// credentials (those are held by the platform).
type Authorization struct {
	AppID     string
	ExpiresIn int64
	FuncInfo  json.RawMessage // as WeChat sent it
}

// QueryAuth exchanges an authorization code with api_query_auth, stores
// the merchant's refresh token durably and holds its first token.
// createTime is the authorization push's CreateTime (0 = now).
func (p *Platform) QueryAuth(ctx context.Context, code string, createTime int64) (Authorization, error) {
	var ans struct {
		Info struct {
			AppID     string          `json:"authorizer_appid"`
			Token     string          `json:"authorizer_access_token"`
			ExpiresIn int64           `json:"expires_in"`
			Refresh   string          `json:"authorizer_refresh_token"`
			FuncInfo  json.RawMessage `json:"func_info"`
		} `json:"authorization_info"`
	}
	err := p.withComponent(ctx, func(tok string) error {
		return p.call(ctx, pathQueryAuth, tok, map[string]string{"component_appid": p.appid, "authorization_code": code}, &ans)
	})
	if err != nil {
		return Authorization{}, err
	}
	info := ans.Info
	if info.AppID == "" || len(info.AppID) > 64 {
		return Authorization{}, errors.New("platform: api_query_auth answered no authorizer_appid")
	}
	if info.Refresh == "" {
		// Accounts without API permission get no tokens.
		p.log.Warn("api_query_auth returned no refresh token; the merchant granted no API permission", "authorizer", info.AppID)
		return Authorization{AppID: info.AppID, FuncInfo: info.FuncInfo}, nil
	}
	if createTime <= 0 {
		createTime = p.now().Unix()
	}
	p.onSecret(info.Refresh)
	r := Record{AppID: info.AppID, RefreshToken: info.Refresh, State: StateOK, UpdatedAt: p.now(), AuthorizedAt: createTime}
	if err := p.store.PutRecord(ctx, p.name, r); err != nil {
		p.storeError("save_authorizer", err)
		return Authorization{}, fmt.Errorf("platform: store the merchant's refresh token: %w", err)
	}
	m := p.adoptRecord(r)
	if m == nil {
		return Authorization{}, errors.New("platform: too many merchants")
	}
	if t, err := answerToken(info.Token, info.ExpiresIn, p.now()); err == nil {
		m.cache.Install(ctx, t)
	}
	return Authorization{AppID: info.AppID, ExpiresIn: info.ExpiresIn, FuncInfo: info.FuncInfo}, nil
}

// Import adds a merchant from an existing system with its refresh token
// and checks it by fetching the merchant's token. The record is kept even
// when the check fails for another reason than 61023 (WeChat may be down).
func (p *Platform) Import(ctx context.Context, appid, refreshToken string) (AuthorizerInfo, error) {
	if !validAppID(appid) || refreshToken == "" || len(refreshToken) > 512 {
		return AuthorizerInfo{}, errors.New("authorizer_appid (at most 64 letters, digits, _ or -) and refresh_token (at most 512 bytes) are required")
	}
	p.onSecret(refreshToken)
	r := Record{AppID: appid, RefreshToken: refreshToken, State: StateOK, UpdatedAt: p.now(), AuthorizedAt: p.now().Unix()}
	if err := p.store.PutRecord(ctx, p.name, r); err != nil {
		return AuthorizerInfo{}, fmt.Errorf("platform: store the refresh token: %w", err)
	}
	m := p.adoptRecord(r)
	if m == nil {
		return AuthorizerInfo{}, errors.New("platform: too many merchants")
	}
	m.touch()
	_, err := m.cache.Refresh(ctx)
	return m.info(p.now()), err
}

// validAppID reports whether s can be an appid: 1 to 64 ASCII letters,
// digits, "_" or "-". It becomes a route segment, a store key and a log
// field, so nothing else is taken from an operator's import.
func validAppID(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// Recover reads every merchant's refresh token from WeChat
// (api_get_authorizer_list, 500 a page) and stores those that differ
// from what is held; it returns how many merchants WeChat listed and how
// many were added or changed.
func (p *Platform) Recover(ctx context.Context) (listed, changed int, err error) {
	const page = 500
	for offset := 0; ; offset += page {
		var ans struct {
			Total int `json:"total_count"`
			List  []struct {
				AppID   string `json:"authorizer_appid"`
				Refresh string `json:"refresh_token"`
				Time    int64  `json:"auth_time"`
			} `json:"list"`
		}
		err := p.withComponent(ctx, func(tok string) error {
			return p.call(ctx, pathAuthorizerList, tok, map[string]any{"component_appid": p.appid, "offset": offset, "count": page}, &ans)
		})
		if err != nil {
			return listed, changed, err
		}
		var batch []Record
		for _, a := range ans.List {
			if a.AppID == "" || len(a.AppID) > 64 || a.Refresh == "" {
				continue
			}
			listed++
			if m := p.lookup(a.AppID); m != nil && !m.unauthorized.Load() {
				if rt := m.refresh.Load(); rt != nil && *rt == a.Refresh {
					continue
				}
			}
			p.onSecret(a.Refresh)
			batch = append(batch, Record{AppID: a.AppID, RefreshToken: a.Refresh, State: StateOK, UpdatedAt: p.now(), AuthorizedAt: a.Time})
		}
		// Durable first, then held: a page is one write where the store
		// can batch (the file store would rewrite its file per record).
		if err := p.putRecords(ctx, batch); err != nil {
			return listed, changed, fmt.Errorf("platform: store a refresh token: %w", err)
		}
		for _, r := range batch {
			p.adoptRecord(r)
		}
		changed += len(batch)
		if len(ans.List) < page || offset+page >= ans.Total || offset >= maxRecords {
			return listed, changed, nil
		}
	}
}

// recordBatcher is a Store that writes many records at once.
type recordBatcher interface {
	PutRecords(ctx context.Context, platform string, rs []Record) error
}

// putRecords stores rs: in one write if the store can, else one by one.
func (p *Platform) putRecords(ctx context.Context, rs []Record) error {
	if len(rs) == 0 {
		return nil
	}
	if b, ok := p.store.(recordBatcher); ok {
		return b.PutRecords(ctx, p.name, rs)
	}
	for _, r := range rs {
		if err := p.store.PutRecord(ctx, p.name, r); err != nil {
			return err
		}
	}
	return nil
}

// StartPush asks WeChat to (re)start pushing component_verify_tickets
// (api_start_push_ticket; the secret goes in the body, no token).
func (p *Platform) StartPush(ctx context.Context) error {
	return p.call(ctx, pathStartPush, "", map[string]string{"component_appid": p.appid, "component_secret": p.secret}, nil)
}
