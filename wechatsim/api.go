package wechatsim

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"hash"
	"io"
	"maps"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/wxproxy/wxproxy/wechat"
)

// apiHandler answers an API call whose app token has been accepted and
// counted against its quota; q is the parsed query.
type apiHandler func(st *state, w *call, r *http.Request, q url.Values, tok *record, now time.Time)

// withToken checks the access_token of an API call (41001, 40014, 40001,
// 42001; users' OAuth tokens and suite tokens are not app tokens, nor are
// provider tokens outside /cgi-bin/service/: 40001), applies the path's
// configured quota, then runs h. Errors take the style of the token's app,
// and the call is recorded for that app when the token is one it was given.
func (s *Server) withToken(st *state, w *call, r *http.Request, h apiHandler) {
	q := r.URL.Query()
	now := st.now()
	tok, code := st.lookup(q.Get("access_token"), now.UnixNano())
	if code == 0 && (tok.kind == kindUser || tok.kind == kindSuite || (tok.kind == kindProvider && !strings.HasPrefix(r.URL.Path, pathServicePrefix))) {
		// Users' OAuth tokens and suite tokens are no app tokens; a
		// provider token is one only for provider APIs.
		code = wechat.CodeInvalidCredential
	}
	var a *appState
	if tok != nil {
		a = tok.app
		w.app = a
	}
	if code == 0 {
		code = s.takeQuota(a, r.URL.Path, now.UnixNano())
	}
	if code != 0 {
		st.fail(w, styleOf(a), code)
		return
	}
	h(st, w, r, q, tok, now)
}

// business answers any path the simulator does not model with an echo of
// the call:
//
//	{"errcode":0,"errmsg":"ok","rid":"...","echo":{"appid","method","path","query","body_sha256","body_len","request_id"}}
//
// where rid is the call's rid, as errmsg would end with on failure.
// It is the benchmark's hot path, so the answer is encoded by hand into a
// pooled buffer rather than through reflection.
func (s *Server) business(st *state, w *call, r *http.Request, q url.Values, tok *record, _ time.Time) {
	b := s.bufs.Get().(*businessBuf)
	defer s.bufs.Put(b)
	b.hash.Reset()
	n, err := io.CopyBuffer(b.hash, w.body(), b.copy[:])
	if err != nil {
		// The caller is gone or sent a broken body; there is nobody to answer.
		return
	}
	id := r.Header.Get("X-Request-Id")
	if id != "" {
		st.stats.seeRequestID(id)
	}
	out := append(b.out[:0], `{"errcode":0,"errmsg":"ok","rid":"`...)
	out = w.rid.append(out)
	out = append(out, `","echo":{"appid":`...)
	out = appendString(out, tok.app.cfg.id)
	if c := tok.app.cfg.component; c != "" {
		out = append(out, `,"component_appid":`...)
		out = appendString(out, c)
	}
	if su := tok.app.cfg.suite; su != "" {
		out = append(out, `,"suite_id":`...)
		out = appendString(out, su)
	}
	out = append(out, `,"method":`...)
	out = appendString(out, r.Method)
	out = append(out, `,"path":`...)
	out = appendString(out, r.URL.Path)
	out = append(out, `,"query":{`...)
	delete(q, "access_token")
	for i, k := range slices.Sorted(maps.Keys(q)) {
		if i > 0 {
			out = append(out, ',')
		}
		out = appendString(out, k)
		out = append(out, ":["...)
		for j, v := range q[k] {
			if j > 0 {
				out = append(out, ',')
			}
			out = appendString(out, v)
		}
		out = append(out, ']')
	}
	out = append(out, `},"body_sha256":"`...)
	out = hex.AppendEncode(out, b.hash.Sum(b.sum[:0]))
	out = append(out, `","body_len":`...)
	out = strconv.AppendInt(out, n, 10)
	out = append(out, `,"request_id":`...)
	out = appendString(out, id)
	out = append(out, "}}"...)
	b.out = out
	w.Header()["Content-Type"] = []string{contentType}
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(out)
}

// businessBuf is the per-call scratch space of business, pooled.
type businessBuf struct {
	hash hash.Hash
	sum  [sha256.Size]byte
	copy [16 << 10]byte
	out  []byte
}

func newBusinessBuf() any { return &businessBuf{hash: sha256.New(), out: make([]byte, 0, 512)} }

// appendString appends s as a JSON string. Invalid UTF-8 becomes U+FFFD, as
// encoding/json does.
func appendString(b []byte, s string) []byte {
	const hexDigits = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			i++
			continue
		}
		if c < utf8.RuneSelf {
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i++
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

type quotaAnswer struct {
	wechat.Response
	Quota struct {
		DailyLimit int `json:"daily_limit"`
		Used       int `json:"used"`
		Remain     int `json:"remain"`
	} `json:"quota"`
	RateLimit struct {
		CallCount     int `json:"call_count"`
		RefreshSecond int `json:"refresh_second"`
	} `json:"rate_limit"`
}

// quotaGet answers POST /cgi-bin/openapi/quota/get for the token's app. Only
// paths with a quota (configured, or the token endpoints' defaults) are
// known; others answer 76021. A limit of 0 means unlimited.
func (s *Server) quotaGet(st *state, w *call, r *http.Request, _ url.Values, tok *record, now time.Time) {
	var req struct {
		CgiPath string `json:"cgi_path"`
	}
	if !readJSON(w.body(), &req) {
		st.fail(w, styleOf(tok.app), wechat.CodeDataFormat)
		return
	}
	q, ok := s.quotas[req.CgiPath]
	if !ok {
		st.fail(w, styleOf(tok.app), wechat.CodeCgiPathNotFound)
		return
	}
	_, used := tok.app.counters.get(req.CgiPath).used(now.UnixNano())
	var ans quotaAnswer
	ans.ErrMsg = "ok"
	ans.Quota.DailyLimit, ans.Quota.Used = q.PerDay, used
	ans.Quota.Remain = max(0, q.PerDay-used)
	if q.PerMinute > 0 {
		ans.RateLimit.CallCount, ans.RateLimit.RefreshSecond = q.PerMinute, 60
	}
	writeJSON(w, http.StatusOK, ans)
}

// clearQuotaPerMonth is WeChat's budget of POST /cgi-bin/clear_quota.
const clearQuotaPerMonth = 10

// clearQuota answers POST /cgi-bin/clear_quota: it resets every quota counter
// of the app (APIs and token endpoints; not the forced-refresh budget), 10
// times per calendar month, then answers 48006.
func (s *Server) clearQuota(st *state, w *call, r *http.Request, _ url.Values, tok *record, now time.Time) {
	var req struct {
		AppID string `json:"appid"`
	}
	a := tok.app
	code := 0
	switch {
	case !readJSON(w.body(), &req):
		code = wechat.CodeDataFormat
	case req.AppID == "":
		code = wechat.CodeAppIDMissing
	case req.AppID != a.cfg.id:
		code = wechat.CodeInvalidAppID
	}
	if code == 0 {
		month := shanghaiMonth(now.UnixNano())
		a.mu.Lock()
		if a.clearMonth != month {
			a.clearMonth, a.clearN = month, 0
		}
		if a.clearN >= clearQuotaPerMonth {
			code = wechat.CodeClearQuotaLimit
		} else {
			a.clearN++
		}
		a.mu.Unlock()
	}
	if code != 0 {
		st.fail(w, styleOf(a), code)
		return
	}
	a.counters.reset()
	writeJSON(w, http.StatusOK, wechat.Response{ErrMsg: "ok"})
}

// readJSON decodes a small JSON body into v and reports success.
func readJSON(r io.Reader, v any) bool {
	body, err := io.ReadAll(io.LimitReader(r, maxControlBody))
	return err == nil && json.Unmarshal(body, v) == nil
}

// Media sizes: media_id "size-N" asks for exactly N bytes.
const (
	defaultMediaSize = 4 << 10
	maxMediaSize     = 256 << 20
)

// jpegHeader starts every media body, so content sniffers see a JPEG.
const jpegHeader = "\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"

// mediaGet answers GET /cgi-bin/media/get with image/jpeg bytes that depend
// only on media_id, streamed without holding them in memory.
func (s *Server) mediaGet(st *state, w *call, r *http.Request, q url.Values, tok *record, _ time.Time) {
	id := q.Get("media_id")
	size := int64(defaultMediaSize)
	if n, ok := strings.CutPrefix(id, "size-"); ok {
		v, err := strconv.ParseInt(n, 10, 64)
		if err != nil || v < 0 || v > maxMediaSize {
			id = ""
		}
		size = v
	}
	if id == "" {
		st.fail(w, styleOf(tok.app), wechat.CodeInvalidMediaID)
		return
	}
	seed := sha256.Sum256([]byte(id))
	body := io.MultiReader(strings.NewReader(jpegHeader), rand.NewChaCha8(seed))
	h := w.Header()
	h["Content-Type"] = []string{"image/jpeg"}
	h["Content-disposition"] = []string{`attachment; filename="` + id + `.jpg"`}
	h["Cache-Control"] = []string{"no-cache, must-revalidate"}
	h["Content-Length"] = []string{strconv.FormatInt(size, 10)}
	w.WriteHeader(http.StatusOK)
	_, _ = io.CopyN(w, body, size)
}

// userID derives a stable, openid-shaped identifier from its parts.
func userID(parts ...string) string {
	sum := sha256.Sum256([]byte(strings.Join(parts, "\x00")))
	return "o" + base64.RawURLEncoding.EncodeToString(sum[:])[:27]
}

type sessionAnswer struct {
	OpenID     string `json:"openid"`
	SessionKey string `json:"session_key"`
	UnionID    string `json:"unionid"`
}

// codeCall checks an appid+secret+code call (jscode2session, oauth2): the
// errcodes of the classic token endpoint, 40002 for a grant_type other than
// authorization_code (absent is accepted), 41008 for a missing code, then
// the path's configured quota. It returns the app, or nil after answering.
func (s *Server) codeCall(st *state, w *call, r *http.Request, q url.Values, codeParam string) *appState {
	appid := q.Get("appid")
	a := st.wechatApp(appid)
	w.app = a
	code := checkCredentials(a, appid, q.Get("secret"))
	if gt := q.Get("grant_type"); gt != "" && gt != "authorization_code" {
		code = wechat.CodeInvalidGrantType
	}
	if code == 0 && q.Get(codeParam) == "" {
		code = wechat.CodeCodeMissing
	}
	if code == 0 {
		code = s.takeQuota(a, r.URL.Path, st.now().UnixNano())
	}
	if code != 0 {
		st.fail(w, styleWeChat, code)
		return nil
	}
	return a
}

// jsCode2Session answers GET /sns/jscode2session with a session derived from
// appid and js_code.
func (s *Server) jsCode2Session(st *state, w *call, r *http.Request) {
	q := r.URL.Query()
	a := s.codeCall(st, w, r, q, "js_code")
	if a == nil {
		return
	}
	code := q.Get("js_code")
	key := sha256.Sum256([]byte("session_key\x00" + a.cfg.id + "\x00" + code))
	writeJSON(w, http.StatusOK, sessionAnswer{
		OpenID:     userID("openid", a.cfg.id, code),
		SessionKey: base64.StdEncoding.EncodeToString(key[:16]),
		UnionID:    userID("unionid", code),
	})
}

type oauthAnswer struct {
	AccessToken  string `json:"access_token"`
	ExpiresIn    int64  `json:"expires_in"`
	RefreshToken string `json:"refresh_token"`
	OpenID       string `json:"openid"`
	Scope        string `json:"scope"`
}

// oauthToken answers GET /sns/oauth2/access_token with a new user OAuth
// token, accepted only by /sns/userinfo and /sns/auth.
func (s *Server) oauthToken(st *state, w *call, r *http.Request) {
	q := r.URL.Query()
	a := s.codeCall(st, w, r, q, "code")
	if a == nil {
		return
	}
	now := st.now().UnixNano()
	openid := userID("openid", a.cfg.id, q.Get("code"))
	a.mu.Lock()
	tok := st.mint(a, kindUser, now, s.ttl, openid)
	a.mu.Unlock()
	writeJSON(w, http.StatusOK, oauthAnswer{
		AccessToken:  tok.token,
		ExpiresIn:    int64(s.ttl / time.Second),
		RefreshToken: tokenPrefix + randomString(tokenRandBytes),
		OpenID:       openid,
		Scope:        "snsapi_userinfo",
	})
}

type userInfoAnswer struct {
	OpenID   string `json:"openid"`
	Nickname string `json:"nickname"`
}

// oauthUser answers /sns/userinfo and /sns/auth, which take a user's OAuth
// token (an app token answers 40001) and an optional matching openid (40003).
func (s *Server) oauthUser(st *state, w *call, r *http.Request) {
	q := r.URL.Query()
	now := st.now().UnixNano()
	tok, code := st.lookup(q.Get("access_token"), now)
	if tok != nil {
		w.app = tok.app
	}
	if code == 0 && tok.kind != kindUser {
		code = wechat.CodeInvalidCredential
	}
	if openid := q.Get("openid"); code == 0 && openid != "" && openid != tok.openid {
		code = wechat.CodeInvalidOpenID
	}
	if code == 0 {
		code = s.takeQuota(tok.app, r.URL.Path, now)
	}
	if code != 0 {
		st.fail(w, styleWeChat, code)
		return
	}
	if r.URL.Path == "/sns/auth" {
		writeJSON(w, http.StatusOK, wechat.Response{ErrMsg: "ok"})
		return
	}
	writeJSON(w, http.StatusOK, userInfoAnswer{OpenID: tok.openid, Nickname: "sim-user"})
}
