package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/wxproxy/wxproxy/wechat"
)

// Kind classifies an error wxproxy answers itself. It is sent to callers
// in the X-WXProxy-Error header and is a metrics outcome.
type Kind string

// The kinds of SPEC §5.
const (
	KindRateLimited      Kind = "rate_limited"
	KindQuotaExhausted   Kind = "quota_exhausted"
	KindCircuitOpen      Kind = "circuit_open"
	KindTokenUnavailable Kind = "token_unavailable"
	KindUpstream         Kind = "upstream_error"
	KindUpstreamTimeout  Kind = "upstream_timeout" // answered as upstream_error with 504
	KindUnknownApp       Kind = "unknown_app"
	KindForbidden        Kind = "forbidden"
	KindBlockedPath      Kind = "blocked_path"
	KindBodyTooLarge     Kind = "body_too_large"
	KindBadRequest       Kind = "bad_request"
	KindBodyTimeout      Kind = "body_timeout"     // answered as bad_request with 408
	KindHeaderTooLarge   Kind = "header_too_large" // answered as bad_request with 431
	KindUpstreamBusy     Kind = "upstream_busy"    // answered as upstream_error with 503: wxproxy's own connections, not WeChat

	KindAuthorizerUnauthorized Kind = "authorizer_unauthorized" // a merchant must authorize its platform again (§12)
	KindTicketMissing          Kind = "ticket_missing"          // a platform has no valid component_verify_ticket (§12)
)

// Error is an error wxproxy answers itself, in WeChat's JSON shape. Msg is
// shown to the caller and must never hold a token or a secret; Err is the
// cause, for the log only.
type Error struct {
	Kind       Kind
	Msg        string
	RetryAfter time.Duration
	Err        error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return string(e.Kind) + ": " + e.Msg + ": " + e.Err.Error()
	}
	return string(e.Kind) + ": " + e.Msg
}

func (e *Error) Unwrap() error { return e.Err }

// errAnswer is how each Kind is sent: HTTP status, errcode, header value.
type errAnswer struct {
	status  int
	errcode int
	header  string
}

var answers = map[Kind]errAnswer{
	KindRateLimited:      {http.StatusTooManyRequests, wechat.CodeMinuteQuota, "rate_limited"},
	KindQuotaExhausted:   {http.StatusTooManyRequests, wechat.CodeDailyQuota, "quota_exhausted"},
	KindCircuitOpen:      {http.StatusServiceUnavailable, wechat.CodeSystemError, "circuit_open"},
	KindTokenUnavailable: {http.StatusServiceUnavailable, wechat.CodeSystemError, "token_unavailable"},
	KindUpstream:         {http.StatusBadGateway, wechat.CodeSystemError, "upstream_error"},
	KindUpstreamTimeout:  {http.StatusGatewayTimeout, wechat.CodeSystemError, "upstream_error"},
	KindUnknownApp:       {http.StatusNotFound, wechat.CodeInvalidAppID, "unknown_app"},
	KindForbidden:        {http.StatusForbidden, wechat.CodeUnauthorized, "forbidden"},
	KindBlockedPath:      {http.StatusForbidden, wechat.CodeUnauthorized, "blocked_path"},
	KindBodyTooLarge:     {http.StatusRequestEntityTooLarge, wechat.CodeEmptyPostData, "body_too_large"},
	KindBadRequest:       {http.StatusBadRequest, wechat.CodeDataFormat, "bad_request"},
	KindBodyTimeout:      {http.StatusRequestTimeout, wechat.CodeDataFormat, "bad_request"},
	KindHeaderTooLarge:   {http.StatusRequestHeaderFieldsTooLarge, wechat.CodeDataFormat, "bad_request"},
	KindUpstreamBusy:     {http.StatusServiceUnavailable, wechat.CodeSystemError, "upstream_error"},

	KindAuthorizerUnauthorized: {http.StatusServiceUnavailable, wechat.CodeRefreshTokenInvalid, "authorizer_unauthorized"},
	KindTicketMissing:          {http.StatusServiceUnavailable, wechat.CodeComponentTicketInvalid, "ticket_missing"},
}

// callersFault reports whether e is the caller's own doing (a bad or slow
// body), which must never count against WeChat.
func (e *Error) callersFault() bool {
	return e.Kind == KindBadRequest || e.Kind == KindBodyTimeout || e.Kind == KindBodyTooLarge || e.Kind == KindHeaderTooLarge ||
		e.Kind == KindUpstreamBusy // wxproxy's own pool, not WeChat: never a breaker failure
}

// classify turns any error met while serving a request into an *Error.
// It is the one place where causes map to what callers see.
func classify(err error) *Error {
	var pe *Error
	if errors.As(err, &pe) {
		return pe
	}
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		return &Error{Kind: KindUpstreamTimeout, Msg: "WeChat did not answer within upstream_timeout; retry later", Err: err}
	}
	return &Error{Kind: KindUpstream, Msg: "WeChat is unreachable; retry later", Err: err}
}

// fail answers err: the one funnel through which every wxproxy error
// reaches a caller.
func (p *Proxy) fail(r *request, err error) {
	if cf := r.callerFault(); cf != nil {
		err = cf // the caller's body broke the upstream call: the caller's error
	}
	e := classify(wechat.RedactError(err))
	r.err = e
	if (r.body.cb.armed && !r.body.cb.eof) || e.callersFault() {
		// The body was not read to its end, or the request was malformed:
		// do not drain it or read on for keep-alive; whatever follows on
		// the connection is not trusted to start a request. Close it after
		// this answer.
		r.ctx.SetConnectionClose()
	}
	writeError(&r.ctx.Response, e)
}

// parseError is the caller port's error handler: what fasthttp refuses
// before the proxy's handler runs (a malformed head, a head over
// max_header_bytes, a body too slow to start, a bad target) is answered
// through the same funnel, in WeChat's shape, and logged.
func (p *Proxy) parseError(ctx *fasthttp.RequestCtx, err error) {
	r := &request{ctx: ctx, start: p.now(), reqID: p.ids.next()}
	var e *Error
	var te interface{ Timeout() bool }
	switch {
	case errors.As(err, &te) && te.Timeout():
		e = &Error{Kind: KindBodyTimeout, Msg: "request did not arrive within read_header_timeout or body_read_timeout", Err: err}
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		e = &Error{Kind: KindBodyTooLarge, Msg: "request body is larger than max_body_bytes", Err: err}
	case isSmallBuffer(err):
		e = &Error{Kind: KindHeaderTooLarge, Msg: "request headers are larger than max_header_bytes", Err: err}
	default:
		// fasthttp's parse errors may quote the request target or a
		// header value (a secret in an SDK's token request): only the
		// category is kept.
		e = &Error{Kind: KindBadRequest, Msg: "malformed request", Err: errMalformed}
	}
	r.err = e
	ctx.Response.Reset()
	writeError(&ctx.Response, e)
	p.finish(r)
}

// errMalformed stands for a parse error whose text is not logged.
var errMalformed = errors.New("malformed request (details withheld: they may quote the request)")

func isSmallBuffer(err error) bool {
	var sb *fasthttp.ErrSmallBuffer
	return errors.As(err, &sb)
}

// writeJSON writes v as compact JSON with no trailing newline: some SDKs
// fail to parse anything else.
func writeJSON(w io.Writer, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		return // only plain structs of strings and numbers are written
	}
	_, _ = w.Write(b)
}

// writeError sends e to the caller in WeChat's JSON shape.
func writeError(resp *fasthttp.Response, e *Error) {
	a, ok := answers[e.Kind]
	if !ok {
		a = answers[KindUpstream]
	}
	resp.ResetBody()
	h := &resp.Header
	h.SetContentType(jsonContentType)
	h.Set(headerError, a.header)
	if e.RetryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(int((e.RetryAfter+time.Second-1)/time.Second)))
	}
	resp.SetStatusCode(a.status)
	writeJSON(resp.BodyWriter(), struct {
		ErrCode int    `json:"errcode"`
		ErrMsg  string `json:"errmsg"`
	}{a.errcode, "wxproxy: " + e.Msg})
}
