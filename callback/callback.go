// Package callback is the listener that receives WeChat's pushes to
// third-party platforms (SPEC §12, §13): POST /callback/{platform} with an
// encrypted message, and GET /callback/{platform} for URL verification.
// It is the one listener of wxproxy meant to face the internet, so it
// serves nothing else (every other request is 404), bounds headers, body
// and time, and never echoes what it was sent.
//
// It knows HTTP only: each platform kind supplies a Receiver that
// verifies, decrypts and applies its pushes, so a WeCom suite is another
// Receiver, not a change here.
package callback

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Errors a Receiver returns to choose the answer; anything else is 503 so
// that WeChat pushes again.
var (
	// ErrSignature: the signature does not match (401). Nothing changed.
	ErrSignature = errors.New("callback: signature mismatch")
	// ErrBadPush: the push cannot be read (400). Nothing changed.
	ErrBadPush = errors.New("callback: malformed push")
)

// Receiver verifies and applies the pushes of one platform. HandlePush
// gets the query and the body (at most Options.MaxBody bytes) of a POST;
// VerifyURL answers a GET URL check with the text to send back. Both are
// called concurrently.
type Receiver interface {
	HandlePush(ctx context.Context, q url.Values, body []byte) error
	VerifyURL(ctx context.Context, q url.Values) ([]byte, error)
}

// Options configures a Server.
type Options struct {
	Receivers         map[string]Receiver // by platform name
	MaxBody           int64               // default 64 KiB
	ReadHeaderTimeout time.Duration       // default 5 s
	ReadTimeout       time.Duration       // the whole request; default 10 s
	// HandleTimeout bounds applying one push; default 30 s. WeChat waits
	// 5 s and pushes again, but an authorization code is single-use, so
	// its exchange (a component token fetch, then api_query_auth) is
	// given time to finish after WeChat stopped waiting.
	HandleTimeout time.Duration
	// MaxConns bounds the connections held at once (HTTPServer closes
	// the ones over it as they arrive); default 1024. WeChat pushes a few
	// a minute per platform.
	MaxConns int
	Logger   *slog.Logger
	// OnPush, if set, counts every push by platform and result
	// ("ok", "bad_signature", "bad_request", "error", "too_large").
	OnPush func(platform, result string)
}

// Server is the callback listener's handler and its http.Server settings.
// It is safe for concurrent use.
type Server struct {
	opts Options
	log  *slog.Logger

	// Refused pushes are logged at most once a minute per platform and
	// reason: sending them costs strangers nothing.
	refusedMu sync.Mutex
	refused   map[string]*refusals // bounded: receivers × 2 reasons
}

// refusals is the log state of one platform and reason.
type refusals struct {
	logged     time.Time // last line written
	suppressed int       // refused since, not logged
}

// refusedLogEvery is how often refused pushes of one platform and reason
// are logged.
const refusedLogEvery = time.Minute

// New returns a Server for opts.
func New(opts Options) *Server {
	if opts.MaxBody <= 0 {
		opts.MaxBody = 64 << 10
	}
	if opts.ReadHeaderTimeout <= 0 {
		opts.ReadHeaderTimeout = 5 * time.Second
	}
	if opts.ReadTimeout <= 0 {
		opts.ReadTimeout = 10 * time.Second
	}
	if opts.HandleTimeout <= 0 {
		opts.HandleTimeout = 30 * time.Second
	}
	if opts.MaxConns <= 0 {
		opts.MaxConns = 1024
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{opts: opts, log: log, refused: map[string]*refusals{}}
}

// HTTPServer returns an http.Server for the listener: strict header and
// read timeouts, small headers, short keep-alives, and at most
// Options.MaxConns connections at once (one over it is closed as it
// arrives).
func (s *Server) HTTPServer() *http.Server {
	var conns atomic.Int64
	return &http.Server{
		ConnState: func(c net.Conn, st http.ConnState) {
			switch st {
			case http.StateNew:
				if conns.Add(1) > int64(s.opts.MaxConns) {
					_ = c.Close()
				}
			case http.StateClosed, http.StateHijacked:
				conns.Add(-1)
			}
		},
		Handler:           s,
		ReadHeaderTimeout: s.opts.ReadHeaderTimeout,
		ReadTimeout:       s.opts.ReadTimeout,
		WriteTimeout:      s.opts.ReadTimeout + s.opts.HandleTimeout,
		IdleTimeout:       30 * time.Second,
		MaxHeaderBytes:    8 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
}

func (s *Server) count(platform, result string) {
	if s.opts.OnPush != nil {
		s.opts.OnPush(platform, result)
	}
}

// ServeHTTP serves POST and GET /callback/{platform}; anything else is 404.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	// The URL check echoes text no signature covers: never as markup.
	w.Header().Set("X-Content-Type-Options", "nosniff")
	name, ok := strings.CutPrefix(r.URL.Path, "/callback/")
	rcv := s.opts.Receivers[name]
	if !ok || rcv == nil || r.URL.RawPath != "" && r.URL.RawPath != r.URL.Path {
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	q := r.URL.Query()
	// A push is applied to its end even if the sender goes away (an
	// authorization code is single-use), but never longer than
	// HandleTimeout: WithoutCancel drops the deadline too, so it is set
	// after.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), s.opts.HandleTimeout)
	defer cancel()
	switch r.Method {
	case http.MethodGet:
		out, err := rcv.VerifyURL(ctx, q)
		if err != nil {
			s.fail(w, name, err)
			return
		}
		s.count(name, "ok")
		_, _ = w.Write(out)
	case http.MethodPost:
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.opts.MaxBody))
		if err != nil {
			var tooBig *http.MaxBytesError
			if errors.As(err, &tooBig) {
				s.count(name, "too_large")
				http.Error(w, "too large", http.StatusRequestEntityTooLarge)
				return
			}
			s.count(name, "bad_request")
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		if err := rcv.HandlePush(ctx, q, body); err != nil {
			s.fail(w, name, err)
			return
		}
		s.count(name, "ok")
		_, _ = io.WriteString(w, "success")
	default:
		w.Header().Set("Allow", "GET, POST")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	}
}

// fail answers a refused push; the details go to the log only.
func (s *Server) fail(w http.ResponseWriter, name string, err error) {
	switch {
	case errors.Is(err, ErrSignature):
		s.count(name, "bad_signature")
		if n, ok := s.logRefused(name, "bad_signature"); ok {
			s.log.Warn("push refused: bad signature", "platform", name, "refused_since_last_line", n)
		}
		http.Error(w, "unauthorized", http.StatusUnauthorized)
	case errors.Is(err, ErrBadPush):
		s.count(name, "bad_request")
		if n, ok := s.logRefused(name, "bad_request"); ok {
			s.log.Warn("push refused: malformed", "platform", name, "err", err, "refused_since_last_line", n)
		}
		http.Error(w, "bad request", http.StatusBadRequest)
	default:
		s.count(name, "error")
		s.log.Error("push failed; WeChat will push again", "platform", name, "err", err)
		http.Error(w, "try again", http.StatusServiceUnavailable)
	}
}

// logRefused reports whether a refused push of the platform name for
// reason may be logged now, and how many were refused since the last line
// (this one included).
func (s *Server) logRefused(name, reason string) (int, bool) {
	s.refusedMu.Lock()
	defer s.refusedMu.Unlock()
	r := s.refused[name+"\x00"+reason]
	if r == nil {
		r = &refusals{}
		s.refused[name+"\x00"+reason] = r // name is a configured platform's
	}
	r.suppressed++
	if now := time.Now(); r.logged.IsZero() || now.Sub(r.logged) >= refusedLogEvery {
		n := r.suppressed
		r.logged, r.suppressed = now, 0
		return n, true
	}
	return 0, false
}
