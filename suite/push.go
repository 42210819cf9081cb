package suite

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"

	"github.com/wxproxy/wxproxy/callback"
	"github.com/wxproxy/wxproxy/platform"
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

var _ callback.Receiver = (*Suite)(nil)

// receiveIDs are the receive ids the suite's callback URL accepts: the
// suite id (指令回调 pushes) and the provider corpid (URL checks, and
// create_auth was seen addressed to it).
func (s *Suite) receiveIDs() []string {
	if s.opts.ProviderCorpID != "" {
		return []string{s.opts.SuiteID, s.opts.ProviderCorpID}
	}
	return []string{s.opts.SuiteID}
}

// VerifyURL answers WeCom's GET URL check: msg_signature over token,
// timestamp, nonce and the encrypted echostr; the answer is the
// decrypted echo alone.
func (s *Suite) VerifyURL(_ context.Context, q url.Values) ([]byte, error) {
	echo := q.Get("echostr")
	if echo == "" || len(echo) > 1024 {
		return nil, fmt.Errorf("%w: no echostr", ErrBadPush)
	}
	// WeCom's echostr is base64, which has no spaces: a space is a "+"
	// that was sent unescaped and decoded as a query space.
	echo = strings.ReplaceAll(echo, " ", "+")
	out, err := s.opts.Crypter.VerifyURL(q.Get("msg_signature"), q.Get("timestamp"), q.Get("nonce"), echo, s.receiveIDs()...)
	if errors.Is(err, wxcrypt.ErrSignature) {
		return nil, ErrSignature
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadPush, err)
	}
	return out, nil
}

// push is the decrypted XML of a suite's 指令回调 push.
type push struct {
	SuiteID    string `xml:"SuiteId"`
	InfoType   string `xml:"InfoType"`
	TimeStamp  int64  `xml:"TimeStamp"`
	Ticket     string `xml:"SuiteTicket"`
	AuthCode   string `xml:"AuthCode"`
	AuthCorpID string `xml:"AuthCorpId"`
}

// HandlePush verifies, decrypts and applies one push to the suite's
// callback URL. Duplicates and late pushes are harmless: the newest
// ticket wins, an auth code is exchanged once, and a cancel_auth older
// than the corp's last install is ignored. It returns ErrSignature or
// ErrBadPush (nothing changed), an error for a failure WeCom should
// retry, or nil (answer "success").
func (s *Suite) HandlePush(ctx context.Context, q url.Values, body []byte) error {
	plain, err := s.opts.Crypter.Open(q.Get("msg_signature"), q.Get("timestamp"), q.Get("nonce"), body, s.receiveIDs()...)
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
	if m.SuiteID != "" && m.SuiteID != s.opts.SuiteID {
		return fmt.Errorf("%w: SuiteId is not this suite's", ErrBadPush)
	}
	switch m.InfoType {
	case "suite_ticket":
		return s.onTicket(ctx, m)
	case "create_auth", "reset_permanent_code":
		if m.AuthCode == "" || len(m.AuthCode) > 1024 {
			return fmt.Errorf("%w: %s without a usable AuthCode", ErrBadPush, m.InfoType)
		}
		in, err := s.exchange(ctx, m.AuthCode, m.TimeStamp)
		if err != nil {
			return err
		}
		s.log.Info("corp installed the suite", "corpid", in.CorpID, "event", m.InfoType)
		return nil
	case "change_auth":
		if m.AuthCorpID == "" {
			return fmt.Errorf("%w: change_auth without AuthCorpId", ErrBadPush)
		}
		s.log.Info("corp changed the suite's authorization", "corpid", truncate(m.AuthCorpID, 64))
		return nil
	case "cancel_auth":
		if m.AuthCorpID == "" {
			return fmt.Errorf("%w: cancel_auth without AuthCorpId", ErrBadPush)
		}
		return s.onCancel(ctx, m)
	}
	s.log.Info("push ignored", "info_type", truncate(m.InfoType, 64))
	return nil
}

func truncate(v string, n int) string {
	if len(v) > n {
		return v[:n]
	}
	return v
}

// onTicket keeps a pushed suite_ticket (newest wins, durably) and, when
// the suite token is missing, has it fetched at once.
func (s *Suite) onTicket(ctx context.Context, m push) error {
	if m.Ticket == "" || len(m.Ticket) > 1024 {
		return fmt.Errorf("%w: suite_ticket without a usable ticket", ErrBadPush)
	}
	now := s.now()
	t := platform.PushedTicket(m.Ticket, m.TimeStamp, now, s.opts.TicketTTL) // 30 minutes from when WeCom made it
	if !t.Valid(now) {
		s.log.Info("expired suite_ticket push ignored")
		return nil
	}
	stored, err := s.store.SaveTicket(ctx, s.opts.Name, t)
	if err != nil {
		s.storeError("save_ticket", err)
		stored = t
	}
	if s.adoptTicket(stored) {
		s.log.Info("suite_ticket received", "fingerprint", token.Fingerprint(stored.Value))
	}
	if !s.suiteTok.Current().Valid(now) {
		select {
		case s.kick <- struct{}{}:
		default:
		}
	}
	return nil
}

// onCancel drops a corp that uninstalled the suite, unless the push is
// older than its last install (a late push after a reinstall).
func (s *Suite) onCancel(ctx context.Context, m push) error {
	corpid := m.AuthCorpID
	if c := s.lookup(corpid); c != nil && m.TimeStamp > 0 && m.TimeStamp < c.authorizedAt.Load() {
		s.log.Info("late cancel_auth push ignored", "corpid", corpid)
		return nil
	}
	if r, err := s.store.Record(ctx, s.opts.Name, corpid); err == nil && m.TimeStamp > 0 && m.TimeStamp < r.AuthorizedAt {
		s.log.Info("late cancel_auth push ignored", "corpid", corpid)
		return nil
	}
	if err := s.store.DeleteRecord(ctx, s.opts.Name, corpid); err != nil {
		s.storeError("delete_corp", err)
		return err // WeCom retries the push
	}
	s.drop(corpid)
	s.log.Info("corp uninstalled the suite; dropped", "corpid", truncate(corpid, 64))
	return nil
}

// usedCode is an auth code exchanged recently and what it gave.
type usedCode struct {
	code string
	in   Installation
	done chan struct{}
}

// Installation is what get_permanent_code told of a corp, without its
// credentials (held by the suite): Answer is WeCom's answer with
// access_token and permanent_code removed.
type Installation struct {
	CorpID   string
	HasToken bool // WeCom's answer carried the corp's first token (v1)
	Answer   map[string]json.RawMessage
}

// ExchangeCode exchanges an auth code once, whoever asks first: the
// create_auth push and an SDK's get_permanent_code both name it, and
// WeCom accepts it only once. The second asker gets the first one's
// result.
func (s *Suite) ExchangeCode(ctx context.Context, code string) (Installation, error) {
	return s.exchange(ctx, code, 0)
}

func (s *Suite) exchange(ctx context.Context, code string, ts int64) (Installation, error) {
	s.codeMu.Lock()
	for _, u := range s.codes {
		if u.code == code {
			s.codeMu.Unlock()
			select {
			case <-u.done:
			case <-ctx.Done():
				return Installation{}, ctx.Err()
			}
			if u.in.CorpID != "" {
				return u.in, nil
			}
			return s.exchange(ctx, code, ts) // the first exchange failed: try again
		}
	}
	u := &usedCode{code: code, done: make(chan struct{})}
	if s.codes = append(s.codes, u); len(s.codes) > usedCodes {
		s.codes = s.codes[1:]
	}
	s.codeMu.Unlock()
	in, err := s.PermanentCode(ctx, code, ts)
	s.codeMu.Lock()
	if err != nil {
		if i := slices.Index(s.codes, u); i >= 0 {
			s.codes = slices.Delete(s.codes, i, i+1)
		}
	} else {
		u.in = in
	}
	s.codeMu.Unlock()
	close(u.done)
	return in, err
}

// PermanentCode exchanges an auth code with get_permanent_code (v2 when
// configured), stores the corp's permanent code durably and holds its
// first token when WeCom sent one. ts is the push's TimeStamp (0 = now).
func (s *Suite) PermanentCode(ctx context.Context, code string, ts int64) (Installation, error) {
	path := pathPermanentCode
	if s.opts.PermanentCodeV2 {
		path = pathPermanentCodeV2
	}
	var raw map[string]json.RawMessage
	err := s.withSuite(ctx, func(tok string) error {
		return s.call(ctx, path, "suite_access_token", tok, map[string]string{"auth_code": code}, &raw)
	})
	if err != nil {
		return Installation{}, err
	}
	var ans struct {
		Token     string `json:"access_token"`
		ExpiresIn int64  `json:"expires_in"`
		Code      string `json:"permanent_code"`
		Corp      struct {
			CorpID string `json:"corpid"`
		} `json:"auth_corp_info"`
	}
	b, _ := json.Marshal(raw)   // raw came from JSON: never fails
	_ = json.Unmarshal(b, &ans) // a field of another type stays zero
	corpid := ans.Corp.CorpID
	if !validCorpID(corpid) || ans.Code == "" || len(ans.Code) > 512 {
		return Installation{}, fmt.Errorf("suite: %s answered no corpid or permanent_code", path)
	}
	if ts <= 0 {
		ts = s.now().Unix()
	}
	s.onSecret(ans.Code)
	r := platform.Record{AppID: corpid, RefreshToken: ans.Code, State: platform.StateOK, UpdatedAt: s.now(), AuthorizedAt: ts}
	if err := s.store.PutRecord(ctx, s.opts.Name, r); err != nil {
		s.storeError("save_corp", err)
		return Installation{}, fmt.Errorf("suite: store the corp's permanent code: %w", err)
	}
	c := s.adoptRecord(r)
	if c == nil {
		return Installation{}, errors.New("suite: too many corps")
	}
	in := Installation{CorpID: corpid, Answer: raw}
	if t, err := answerToken(ans.Token, ans.ExpiresIn, s.now()); err == nil {
		c.cache.Install(ctx, t)
		in.HasToken = true
	}
	delete(raw, "access_token")
	delete(raw, "permanent_code")
	return in, nil
}

// Import adds a corp from an existing system with its permanent code and
// checks it by fetching the corp's token. The record is kept even when
// the check fails for another reason than 40084 (WeCom may be down).
func (s *Suite) Import(ctx context.Context, corpid, permanentCode string) (CorpInfo, error) {
	if !validCorpID(corpid) || permanentCode == "" || len(permanentCode) > 512 {
		return CorpInfo{}, errors.New("corpid (at most 64 letters, digits, _ or -) and permanent_code (at most 512 bytes) are required")
	}
	s.onSecret(permanentCode)
	r := platform.Record{AppID: corpid, RefreshToken: permanentCode, State: platform.StateOK, UpdatedAt: s.now(), AuthorizedAt: s.now().Unix()}
	if err := s.store.PutRecord(ctx, s.opts.Name, r); err != nil {
		return CorpInfo{}, fmt.Errorf("suite: store the permanent code: %w", err)
	}
	c := s.adoptRecord(r)
	if c == nil {
		return CorpInfo{}, errors.New("suite: too many corps")
	}
	c.touch()
	_, err := c.cache.Refresh(ctx)
	return c.info(s.now()), err
}

// IsAuthCodeRefused reports whether err is WeCom refusing an auth code
// (used, expired or not one): the caller's mistake, answered in WeCom's
// shape.
func IsAuthCodeRefused(err error) (*wechat.APIError, bool) {
	var api *wechat.APIError
	if errors.As(err, &api) && api.Code != wechat.CodeRefreshTokenInvalid && api.Code != wechat.CodeComponentTicketInvalid {
		return api, true
	}
	return nil, false
}

// validCorpID reports whether s looks like a corpid (or an open corpid):
// 1 to 64 letters, digits, _ or -, so that it can name a route
// (/{p}@{corpid}/...), a store key, a log field and an admin row as is.
func validCorpID(s string) bool {
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
