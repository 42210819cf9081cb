package proxy

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strconv"
	"time"

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
	KindBodyTimeout      Kind = "body_timeout" // answered as bad_request with 408
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

// answer is how each Kind is sent: HTTP status, errcode, header value.
type answer struct {
	status  int
	errcode int
	header  string
}

var answers = map[Kind]answer{
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
}

// callersFault reports whether e is the caller's own doing (a bad or slow
// body), which must never count against WeChat.
func (e *Error) callersFault() bool {
	return e.Kind == KindBadRequest || e.Kind == KindBodyTimeout || e.Kind == KindBodyTooLarge
}

// classify turns any error met while serving a request into an *Error.
// It is the one place where causes map to what callers see.
func classify(err error) *Error {
	var pe *Error
	if errors.As(err, &pe) {
		return pe
	}
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return &Error{Kind: KindBodyTooLarge, Msg: "request body is larger than max_body_bytes (" + strconv.FormatInt(mbe.Limit, 10) + " bytes)", Err: err}
	}
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		return &Error{Kind: KindUpstreamTimeout, Msg: "WeChat did not answer within upstream_timeout; retry later", Err: err}
	}
	return &Error{Kind: KindUpstream, Msg: "WeChat is unreachable; retry later", Err: err}
}

// writeError sends e to the caller in WeChat's JSON shape.
func writeError(w http.ResponseWriter, e *Error) {
	a, ok := answers[e.Kind]
	if !ok {
		a = answers[KindUpstream]
	}
	h := w.Header()
	h.Set("Content-Type", jsonContentType)
	h.Set(headerError, a.header)
	if e.RetryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(int((e.RetryAfter+time.Second-1)/time.Second)))
	}
	w.WriteHeader(a.status)
	writeJSON(w, struct {
		ErrCode int    `json:"errcode"`
		ErrMsg  string `json:"errmsg"`
	}{a.errcode, "wxproxy: " + e.Msg})
}
