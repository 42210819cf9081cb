package proxy

import (
	"bytes"
	"io"
	"strconv"
	"sync"
	"time"

	"github.com/wxproxy/wxproxy/scrub"
	"github.com/wxproxy/wxproxy/wechat"
)

// keepTokens is how many recent tokens of one app stay in the scrub set:
// the current one and those superseded but possibly still live (WeChat
// keeps a replaced token working for 5 minutes).
const keepTokens = 8

// held is every credential the proxy must never let out, with what
// replaces it in answers: a token becomes a placeholder of its own app
// (so an SDK that reads it back can still use it), a secret becomes "***".
// It is safe for concurrent use.
type held struct {
	set *scrub.Set

	mu     sync.Mutex
	recent map[string][]string // app → its last tokens, oldest first
}

// secretMask replaces secrets in answers.
const secretMask = "***"

func newHeld(apps []*App) *held {
	h := &held{set: scrub.NewSet(), recent: make(map[string][]string, len(apps))}
	for _, a := range apps {
		h.set.Add(a.Secret, secretMask)
	}
	return h
}

// HoldToken registers value as a live token of app, so that it is
// replaced by a placeholder wherever it appears in an answer. The token
// holder calls it for every token it installs. Only the last few tokens of
// an app are kept.
func (p *Proxy) HoldToken(app, value string) {
	a := p.apps[app]
	if a == nil || value == "" {
		return
	}
	p.holdToken(app, value, a.Placeholder(), keepTokens)
}

// holdToken keeps value, replaced by placeholder, among the last keep
// tokens of app name.
func (p *Proxy) holdToken(app, value, placeholder string, keep int) {
	h := p.held
	h.mu.Lock()
	defer h.mu.Unlock()
	r := h.recent[app]
	for _, v := range r {
		if v == value {
			return
		}
	}
	if !h.set.Add(value, placeholder) {
		// Longer than scrub.MaxLen: no WeChat token is. Say so rather
		// than hold it silently unscrubbed.
		p.log.Error("token cannot be scrubbed from answers (over 1024 bytes); report this", "app", app)
	}
	if r = append(r, value); len(r) > keep {
		h.set.Remove(r[0])
		r = r[1:]
	}
	h.recent[app] = r
}

// Scrub returns s with every held credential replaced: for text that
// wxproxy shows anywhere (admin answers, log lines of upstream errors).
func (p *Proxy) Scrub(s string) string {
	out, _ := p.held.set.ReplaceString(s)
	return out
}

// sendAnswer is the last stage of a forwarded request: every header
// value and every non-binary answer body is scanned, every held credential
// is replaced, and the answer is sent. Binary media pass unchanged. An
// answer whose body is encoded in a way wxproxy cannot read is refused,
// since it could not be scanned. Trailers never pass (fasthttp's client
// reads and drops them), nor do 1xx answers (it skips them). It reports
// whether the answer streams: its access line is then written when the
// stream ends.
func (p *Proxy) sendAnswer(r *request, a *answer) (streaming bool, err error) {
	resp, out := a.resp, &r.ctx.Response
	for _, ce := range resp.Header.PeekAll("Content-Encoding") {
		// Any encoding but identity would hide the bytes from the scrubber
		// (no Accept-Encoding is sent, and fasthttp's client decodes
		// nothing), so every value must be identity.
		if !bytes.EqualFold(bytes.TrimSpace(ce), []byte("identity")) {
			a.close()
			return false, &Error{Kind: KindUpstream, Msg: "WeChat answered in an encoding wxproxy cannot inspect (" + strconv.Quote(string(ce)) + ")"}
		}
	}
	set := p.held.set
	out.SetStatusCode(resp.StatusCode())
	conn := resp.Header.Peek("Connection")
	for k, v := range resp.Header.All() {
		if skipAnswerHeader(k) || (len(conn) > 0 && listsToken(conn, k)) {
			continue
		}
		if _, n := set.Scrub(k); n > 0 {
			r.scrubbed = true // a credential as a header name: drop it
			continue
		}
		if sv, n := set.Scrub(v); n > 0 {
			v, r.scrubbed = sv, true
		}
		out.Header.AddBytesKV(k, v)
	}
	if r.retried {
		out.Header.Set(headerRetried, "1")
	}
	switch {
	case a.rest == nil && a.peek == nil && binaryAnswer(&resp.Header):
		out.SetBody(a.whole)
		a.close()
		return false, nil
	case binaryAnswer(&resp.Header):
		out.SetBodyStream(&answerStream{p: p, r: r, a: a, src: a.rest}, resp.Header.ContentLength())
		return true, nil
	case a.rest == nil:
		// The whole answer is in hand: scrub it at once and keep an exact
		// Content-Length.
		b, n := set.Scrub(a.whole)
		if n > 0 {
			r.scrubbed = true
		}
		out.SetBody(b)
		a.close()
		return false, nil
	}
	// A longer answer streams through the scrubber; its length can change,
	// so it goes out chunked.
	sr := set.NewReader(io.MultiReader(&prefix{b: a.whole}, a.rest))
	out.SetBodyStream(&answerStream{p: p, r: r, a: a, src: sr, scrub: sr}, -1)
	return true, nil
}

// skipAnswerHeader reports whether an answer header is not passed on:
// hop-by-hop headers, the framing (the server sets its own) and trailers.
func skipAnswerHeader(k []byte) bool {
	switch {
	case len(k) == 0:
		return true
	case bytes.EqualFold(k, []byte("Content-Length")), bytes.EqualFold(k, []byte("Transfer-Encoding")),
		bytes.EqualFold(k, []byte("Connection")), bytes.EqualFold(k, []byte("Keep-Alive")),
		bytes.EqualFold(k, []byte("Proxy-Connection")), bytes.EqualFold(k, []byte("Proxy-Authenticate")),
		bytes.EqualFold(k, []byte("TE")), bytes.EqualFold(k, []byte("Trailer")), bytes.EqualFold(k, []byte("Upgrade")):
		return true
	}
	return false
}

// answerStream is a streamed answer body as the caller port sends it. The
// server closes it when the answer has been sent or the caller has gone;
// Close then releases the upstream answer and writes the access line.
type answerStream struct {
	p     *Proxy
	r     *request
	a     *answer
	src   io.Reader
	scrub *scrub.Reader // nil for media
	err   error
	armed bool // a write deadline is set on the caller's connection
}

func (s *answerStream) Read(b []byte) (int, error) {
	// A progress deadline on the caller's connection: fasthttp writes what
	// this returns, and a caller that stops reading for body_read_timeout
	// fails that write, which closes this stream and frees the upstream
	// connection it holds.
	if d := s.p.bodyTimeout; d > 0 {
		_ = s.r.ctx.Conn().SetWriteDeadline(time.Now().Add(d))
		s.armed = true
	}
	n, err := s.src.Read(b)
	if s.scrub != nil && s.scrub.Replaced() > 0 {
		s.r.scrubbed = true
	}
	if err != nil && err != io.EOF && s.err == nil {
		s.err = err
	}
	return n, err
}

func (s *answerStream) Close() error {
	if s.armed {
		_ = s.r.ctx.Conn().SetWriteDeadline(time.Time{})
	}
	if s.err != nil {
		s.r.copyErr = true
		s.p.log.Warn("answer body copy failed", "app", s.r.app.Name, "request_id", s.r.reqID, "err", wechat.RedactError(s.err).Error())
	}
	if s.scrub != nil {
		s.scrub.Close()
	}
	s.a.close()
	s.p.finish(s.r)
	return nil
}
