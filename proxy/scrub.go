package proxy

import (
	"bytes"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/wxproxy/wxproxy/scrub"
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
	h := p.held
	h.mu.Lock()
	defer h.mu.Unlock()
	r := h.recent[app]
	for _, v := range r {
		if v == value {
			return
		}
	}
	if !h.set.Add(value, a.Placeholder()) {
		// Longer than scrub.MaxLen: no WeChat token is. Say so rather
		// than hold it silently unscrubbed.
		p.log.Error("token cannot be scrubbed from answers (over 1024 bytes); report this", "app", app)
	}
	if r = append(r, value); len(r) > keepTokens {
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

// scrubAnswer is the last stage of a forwarded request
// (ReverseProxy.ModifyResponse): every header value and every non-binary
// answer body is scanned as it streams, and every held credential is
// replaced. Binary media pass unchanged. An answer whose body is encoded in
// a way wxproxy cannot read is refused, since it could not be scanned.
func (p *Proxy) scrubAnswer(resp *http.Response) error {
	c := callFrom(resp.Request.Context())
	set := p.held.set
	for k, vs := range resp.Header {
		for i, v := range vs {
			if out, n := set.ReplaceString(v); n > 0 {
				vs[i], c.scrubbed = out, true
			}
		}
		if _, n := set.ReplaceString(k); n > 0 {
			delete(resp.Header, k) // a credential as a header name: drop it
			c.scrubbed = true
		}
	}
	// Trailers arrive after the body, past the scrubber; WeChat sends
	// none, so none pass. The transport fills resp.Trailer when the body
	// ends, so it is cleared again there (trailerGuard, scrubBody).
	resp.Trailer = nil
	resp.Header.Del("Trailer")
	for _, ce := range resp.Header.Values("Content-Encoding") {
		// Any encoding but identity would hide the bytes from the scrubber
		// (Go's transport decodes the gzip it asked for itself and then
		// removes the header), so every value must be identity.
		if !strings.EqualFold(strings.TrimSpace(ce), "identity") {
			resp.Body.Close()
			return &Error{Kind: KindUpstream, Msg: "WeChat answered in an encoding wxproxy cannot inspect (" + strconv.Quote(ce) + ")"}
		}
	}
	if binaryAnswer(resp.Header) {
		resp.Body = &trailerGuard{ReadCloser: resp.Body, resp: resp}
		return nil
	}
	if pb, ok := resp.Body.(*peekBody); ok && pb.rest == nil {
		// The whole answer is in the peek buffer: scrub it at once and
		// keep an exact Content-Length.
		out, n := set.Scrub(pb.buf[:pb.n])
		if n == 0 {
			return nil
		}
		c.scrubbed = true
		pb.Close()
		resp.Body = io.NopCloser(bytes.NewReader(out))
		resp.ContentLength = int64(len(out))
		resp.Header.Set("Content-Length", strconv.Itoa(len(out)))
		return nil
	}
	// A longer answer streams through the scrubber; its length can change,
	// so it goes out chunked.
	resp.Body = &scrubBody{r: set.NewReader(resp.Body), body: resp.Body, c: c, resp: resp}
	resp.ContentLength = -1
	resp.Header.Del("Content-Length")
	return nil
}

// scrubBody is an answer body read through the scrubber.
type scrubBody struct {
	r    *scrub.Reader
	body io.ReadCloser
	c    *call
	resp *http.Response
}

func (b *scrubBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if b.r.Replaced() > 0 {
		b.c.scrubbed = true
	}
	if err != nil {
		b.resp.Trailer = nil // filled by the transport at the body's end
	}
	return n, err
}

// trailerGuard passes a binary answer body unchanged and drops the
// trailers the transport fills in at its end.
type trailerGuard struct {
	io.ReadCloser
	resp *http.Response
}

func (g *trailerGuard) Read(p []byte) (int, error) {
	n, err := g.ReadCloser.Read(p)
	if err != nil {
		g.resp.Trailer = nil
	}
	return n, err
}

func (b *scrubBody) Close() error {
	b.r.Close()
	return b.body.Close()
}

// binaryAnswer reports whether an answer is media that passes unchanged:
// exactly one Content-Type, and that one binary.
func binaryAnswer(h http.Header) bool {
	ct := h["Content-Type"]
	return len(ct) == 1 && binary(ct[0])
}

// binary reports whether an answer of this Content-Type is media that
// passes unchanged: images, audio, video and octet-streams. Everything
// else, including answers with no type and SVG (which is XML text), is
// scanned.
func binary(contentType string) bool {
	mt, _, _ := strings.Cut(contentType, ";")
	mt = strings.TrimSpace(mt)
	if strings.EqualFold(mt, "image/svg+xml") {
		return false
	}
	for _, p := range [...]string{"image/", "audio/", "video/"} {
		if len(mt) >= len(p) && strings.EqualFold(mt[:len(p)], p) {
			return true
		}
	}
	return strings.EqualFold(mt, "application/octet-stream")
}
