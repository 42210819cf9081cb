// Package admin is wxproxy's admin port (SPEC §8): health and readiness,
// Prometheus metrics, the admin API (apps, breakers, quotas, refresh,
// reload) and, when enabled, Go's profiler. It never shows a token or a
// secret: tokens appear as fingerprints, and every error text passes the
// scrubber the proxy uses for answers.
//
// The admin port is for operators; it is never served on the caller port.
package admin

import (
	"cmp"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/wxproxy/wxproxy/failover"
	"github.com/wxproxy/wxproxy/fleet"
	"github.com/wxproxy/wxproxy/proxy"
	"github.com/wxproxy/wxproxy/ratelimit"
	"github.com/wxproxy/wxproxy/token"
)

// Tokens is what the admin API needs of an app's token holder;
// *token.Cache implements it.
type Tokens interface {
	Status() token.Status
	Refresh(ctx context.Context) (*token.Token, error)
}

// Quotas is what the admin API needs of an app's limiter;
// *ratelimit.Limiter implements it.
type Quotas interface {
	Usage(ctx context.Context) ([]ratelimit.Usage, error)
}

// Tickets is what the admin API needs of an app's ticket holder;
// *token.Tickets implements it.
type Tickets interface {
	Statuses() []token.TicketStatus
	Refresh(ctx context.Context, typ token.TicketType) (*token.Token, error)
}

var (
	_ Tokens  = (*token.Cache)(nil)
	_ Quotas  = (*ratelimit.Limiter)(nil)
	_ Tickets = (*token.Tickets)(nil)
)

// App is one app as the admin port shows it.
type App struct {
	Name, Kind, AppID, TokenMode string
	Tokens                       Tokens
	Breaker                      *proxy.Breaker // nil = none
	Quotas                       Quotas         // nil = none
	Tickets                      Tickets        // nil = none held (status shows an empty list)
	// Upstreams, if set, describes the app's upstream and failover list
	// (SPEC §14), in order.
	Upstreams func() []failover.State
}

// RecentErrors is the ring of the last wxproxy errors; *ErrorLog
// implements it.
type RecentErrors interface {
	Recent() ([]ErrorEntry, int64)
}

var _ RecentErrors = (*ErrorLog)(nil)

// Fleet is the shared view of every replica's breakers; *proxy.BreakerFleet
// implements it.
type Fleet interface {
	Publish(ctx context.Context, local []proxy.BreakerInfo)
	Breakers(ctx context.Context) ([]proxy.BreakerInfo, error)
}

var _ Fleet = (*proxy.BreakerFleet)(nil)

// QuotaSettings are the quota settings of an app in force, for display.
type QuotaSettings struct {
	ResetTimezone string
	OnLimit       string
}

// Options configures the admin handler. Apps and Token are required.
type Options struct {
	Apps      []App
	Platforms []Platform // third-party platforms (SPEC §12)
	Suites    []Suite    // WeCom suites (SPEC §13); listed with the platforms
	Replica   string     // this process, on breaker entries
	Fleet     Fleet      // nil: /admin/breakers shows this replica only
	// Replicas lists the live replicas of the fleet; nil: /admin/replicas
	// shows this replica only (Self).
	Replicas func(ctx context.Context) ([]fleet.Replica, error)
	Self     fleet.Replica // this replica
	// Token returns the bearer token in force (it may change on reload);
	// "" refuses every POST.
	Token    func() string
	PProf    bool                                 // serve /debug/pprof/* behind the token
	Gatherer prometheus.Gatherer                  // for /metrics; nil = no /metrics
	Quota    func(app string) QuotaSettings       // nil = empty
	Reload   func() (restart []string, err error) // nil = reload refused
	Scrub    func(string) string                  // cleans error texts; nil = identity
	Errors   RecentErrors                         // for /admin/status; nil = none recorded
	Log      *slog.Logger                         // default: discard
	Now      func() time.Time                     // default time.Now
}

type handler struct{ o Options }

// New returns the admin port's handler.
func New(o Options) http.Handler {
	if o.Scrub == nil {
		o.Scrub = func(s string) string { return s }
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Token == nil {
		o.Token = func() string { return "" }
	}
	h := &handler{o: o}
	r := chi.NewRouter()
	r.Use(middleware.GetHead) // HEAD where GET is served (the console's URL, probes)
	r.Get("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok"))
	})
	r.Get("/readyz", h.readyz)
	if o.Gatherer != nil {
		r.Handle("/metrics", promhttp.HandlerFor(o.Gatherer, promhttp.HandlerOpts{}))
	}
	r.Get("/admin/apps", h.apps)
	r.Get("/admin/breakers", h.breakers)
	r.Get("/admin/quotas", h.quotas)
	r.Get("/admin/replicas", h.replicas)
	h.platformRoutes(r)
	r.Get("/admin/status", h.status)
	// The status console (SPEC §15): a page and its two assets, all
	// embedded, under a strict Content-Security-Policy.
	r.Get("/", h.console)
	r.Get("/console.js", h.consoleAsset)
	r.Get("/console.css", h.consoleAsset)
	// Go's profiler, for finding where CPU and memory go under load: only
	// when configured, and behind the bearer token like every admin action
	// (a heap profile holds memory contents).
	if o.PProf {
		r.With(h.requireToken).Mount("/debug", middleware.Profiler())
	}
	r.Group(func(r chi.Router) {
		r.Use(h.requireToken)
		r.Post("/admin/apps/{app}/refresh", h.refresh)
		r.Post("/admin/reload", h.reload)
	})
	return r
}

// writeJSON writes v as compact JSON.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":"could not encode the answer"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// requireToken guards every POST and the profiler:
// Authorization: Bearer <token>, compared in constant time. Without a
// configured token every such request is refused.
func (h *handler) requireToken(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		want := h.o.Token()
		if want == "" {
			writeJSON(w, http.StatusForbidden, map[string]string{"error": "admin POSTs are disabled: set admin.token"})
			return
		}
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(want)) != 1 {
			writeJSON(w, http.StatusForbidden, map[string]string{"error": "missing or wrong bearer token"})
			return
		}
		next.ServeHTTP(w, r)
	})
}

// readyz is ready when every app holds a valid token and every ticket it
// is configured to hold.
func (h *handler) readyz(w http.ResponseWriter, _ *http.Request) {
	reasons := []string{}
	now := h.o.Now()
	for _, a := range h.o.Apps {
		if st := a.Tokens.Status(); !st.Token.Valid(now) {
			reasons = append(reasons, h.notReady("app "+a.Name+": no valid access_token", st))
		}
		for _, ts := range heldTickets(a) {
			if !ts.Token.Valid(now) {
				reasons = append(reasons, h.notReady("app "+a.Name+": no valid "+string(ts.Type)+" ticket", ts.Status))
			}
		}
	}
	for _, p := range h.o.Platforms {
		if err := p.Ready(); err != nil {
			reasons = append(reasons, h.o.Scrub(err.Error()))
		}
	}
	for _, s := range h.o.Suites {
		if err := s.Ready(); err != nil {
			reasons = append(reasons, h.o.Scrub(err.Error()))
		}
	}
	if len(reasons) > 0 {
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"ready": false, "reasons": reasons})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"ready": true})
}

// notReady is a readiness reason, with the scrubbed last fetch error.
func (h *handler) notReady(reason string, st token.Status) string {
	if st.LastError != nil {
		reason += " (last fetch: " + h.o.Scrub(st.LastError.Error()) + ")"
	}
	return reason
}

// heldTickets returns the statuses of the tickets a is configured to hold.
func heldTickets(a App) []token.TicketStatus {
	if a.Tickets == nil {
		return nil
	}
	var out []token.TicketStatus
	for _, ts := range a.Tickets.Statuses() {
		if ts.Held {
			out = append(out, ts)
		}
	}
	return out
}

// TicketInfo describes a ticket by type and fingerprint. Held says it is
// configured (held from the start); other tickets are held since a caller
// first asked for them.
type TicketInfo struct {
	Type string `json:"type"`
	Held bool   `json:"held"`
	TokenInfo
}

// TokenInfo describes a token without showing it.
type TokenInfo struct {
	Present     bool       `json:"present"`
	Fingerprint string     `json:"fingerprint,omitempty"`
	ObtainedAt  *time.Time `json:"obtained_at,omitempty"`
	ExpiresAt   *time.Time `json:"expires_at,omitempty"`
	TTLSeconds  int64      `json:"ttl_seconds"`
	Refreshes   int64      `json:"refreshes"`
	LastError   string     `json:"last_error,omitempty"`
}

// describe shows a token by fingerprint; its last error is scrubbed.
func (h *handler) describe(st token.Status, now time.Time) TokenInfo {
	ti := TokenInfo{Refreshes: st.Refreshes}
	if t := st.Token; t.Valid(now) {
		ti.Present, ti.Fingerprint = true, token.Fingerprint(t.Value)
		ti.ObtainedAt, ti.ExpiresAt = &t.ObtainedAt, &t.ExpiresAt
		ti.TTLSeconds = int64(t.ExpiresAt.Sub(now).Seconds())
	}
	if st.LastError != nil {
		ti.LastError = h.o.Scrub(st.LastError.Error())
	}
	return ti
}

func (h *handler) apps(w http.ResponseWriter, _ *http.Request) {
	type appInfo struct {
		Name      string           `json:"name"`
		Kind      string           `json:"kind"`
		AppID     string           `json:"appid"`
		TokenMode string           `json:"token_mode"`
		Token     TokenInfo        `json:"token"`
		Tickets   []TicketInfo     `json:"tickets"`
		Breaker   string           `json:"breaker"`
		Upstreams []failover.State `json:"upstreams,omitempty"`
		Ready     bool             `json:"ready"`
	}
	now := h.o.Now()
	out := make([]appInfo, 0, len(h.o.Apps))
	for _, a := range h.o.Apps {
		ti := h.describe(a.Tokens.Status(), now)
		brk := "closed"
		if a.Breaker != nil {
			brk = a.Breaker.State().State
		}
		info := appInfo{Name: a.Name, Kind: a.Kind, AppID: a.AppID, TokenMode: a.TokenMode,
			Token: ti, Tickets: []TicketInfo{}, Breaker: brk, Ready: ti.Present}
		if a.Tickets != nil {
			for _, ts := range a.Tickets.Statuses() {
				tk := TicketInfo{Type: string(ts.Type), Held: ts.Held, TokenInfo: h.describe(ts.Status, now)}
				info.Tickets = append(info.Tickets, tk)
				info.Ready = info.Ready && (!ts.Held || tk.Present)
			}
		}
		if a.Upstreams != nil {
			info.Upstreams = a.Upstreams()
		}
		out = append(out, info)
	}
	writeJSON(w, http.StatusOK, out)
}

// LocalBreakers describes this replica's breakers.
func (h *handler) localBreakers() []proxy.BreakerInfo {
	out := make([]proxy.BreakerInfo, 0, len(h.o.Apps))
	for _, a := range h.o.Apps {
		if a.Breaker != nil {
			out = append(out, a.Breaker.Info(h.o.Replica))
		}
	}
	return out
}

// breakers lists every replica's breakers with a fleet, else this one's.
func (h *handler) breakers(w http.ResponseWriter, r *http.Request) {
	all, _ := h.fleetBreakers(r.Context())
	writeJSON(w, http.StatusOK, all)
}

// LocalBreakers returns this replica's breaker states, for the fleet
// publisher.
func LocalBreakers(apps []App, replica string) []proxy.BreakerInfo {
	return (&handler{o: Options{Apps: apps, Replica: replica}}).localBreakers()
}

// replicas lists the fleet's live replicas, else this one.
func (h *handler) replicas(w http.ResponseWriter, r *http.Request) {
	self := h.o.Self
	if self.Replica == "" {
		self.Replica = h.o.Replica
	}
	self.Seen = h.o.Now()
	if h.o.Replicas == nil {
		writeJSON(w, http.StatusOK, []fleet.Replica{self})
		return
	}
	all, err := h.o.Replicas(r.Context())
	if err != nil {
		h.o.Log.Warn("fleet replica view unavailable; showing this replica only", "err", err)
		writeJSON(w, http.StatusOK, []fleet.Replica{self})
		return
	}
	writeJSON(w, http.StatusOK, all)
}

// AppQuotas is an app's quota settings and usage, as /admin/quotas and
// /admin/status show them.
type AppQuotas struct {
	App           string            `json:"app"`
	ResetTimezone string            `json:"reset_timezone"`
	OnLimit       string            `json:"on_limit"`
	APIs          []ratelimit.Usage `json:"apis"`
	Error         string            `json:"error,omitempty"` // status only: this app's usage could not be read
}

// quotaReport reads every app's quota usage. With partial, an app whose
// usage cannot be read is listed with its error and the others still are;
// without, the first error ends the report.
func (h *handler) quotaReport(ctx context.Context, partial bool) ([]AppQuotas, error) {
	out := make([]AppQuotas, 0, len(h.o.Apps))
	var firstErr error
	for _, a := range h.o.Apps {
		q := AppQuotas{App: a.Name, APIs: []ratelimit.Usage{}}
		if h.o.Quota != nil {
			s := h.o.Quota(a.Name)
			q.ResetTimezone, q.OnLimit = s.ResetTimezone, s.OnLimit
		}
		if a.Quotas != nil {
			usage, err := a.Quotas.Usage(ctx)
			switch {
			case err != nil && !partial:
				return nil, err
			case err != nil:
				firstErr = cmp.Or(firstErr, err)
				q.Error = "quota store: " + h.o.Scrub(err.Error())
			default:
				q.APIs = usage
			}
		}
		out = append(out, q)
	}
	return out, firstErr
}

func (h *handler) quotas(w http.ResponseWriter, r *http.Request) {
	out, err := h.quotaReport(r.Context(), false)
	if err != nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "quota store: " + h.o.Scrub(err.Error())})
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// refresh refreshes an app's token, or with what=ticket:TYPE one of its
// tickets.
func (h *handler) refresh(w http.ResponseWriter, r *http.Request) {
	name := chi.URLParam(r, "app")
	what := r.URL.Query().Get("what")
	for _, a := range h.o.Apps {
		if a.Name != name {
			continue
		}
		var tok *token.Token
		var err error
		switch typ, isTicket := strings.CutPrefix(what, "ticket:"); {
		case what == "" || what == "token":
			what = "token"
			tok, err = a.Tokens.Refresh(r.Context())
		case isTicket && a.Tickets != nil && slices.Contains(token.TicketTypes(a.Kind == proxy.KindWeCom), token.TicketType(typ)):
			tok, err = a.Tickets.Refresh(r.Context(), token.TicketType(typ))
		default:
			writeJSON(w, http.StatusBadRequest, map[string]any{"app": name, "refreshed": false,
				"error": "what must be token or ticket:TYPE, TYPE one of " + ticketTypes(a)})
			return
		}
		switch {
		case errors.Is(err, token.ErrForceBudget), errors.Is(err, token.ErrFetchBudget):
			writeJSON(w, http.StatusTooManyRequests, map[string]any{"app": name, "what": what, "refreshed": false, "error": h.o.Scrub(err.Error())})
		case err != nil:
			writeJSON(w, http.StatusBadGateway, map[string]any{"app": name, "what": what, "refreshed": false, "error": h.o.Scrub(err.Error())})
		default:
			writeJSON(w, http.StatusOK, map[string]any{"app": name, "what": what, "refreshed": true,
				"fingerprint": token.Fingerprint(tok.Value), "expires_at": tok.ExpiresAt})
		}
		return
	}
	writeJSON(w, http.StatusNotFound, map[string]any{"error": "no app named " + name})
}

// ticketTypes lists the ticket types of a's kind, for errors.
func ticketTypes(a App) string {
	var names []string
	for _, t := range token.TicketTypes(a.Kind == proxy.KindWeCom) {
		names = append(names, string(t))
	}
	return strings.Join(names, ", ")
}

func (h *handler) reload(w http.ResponseWriter, _ *http.Request) {
	if h.o.Reload == nil {
		writeJSON(w, http.StatusBadRequest, map[string]any{"reloaded": false, "errors": []string{"nothing to reload: this server was not started from a file"}})
		return
	}
	restart, err := h.o.Reload()
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]any{"reloaded": false, "errors": strings.Split(err.Error(), "\n")})
		return
	}
	if restart == nil {
		restart = []string{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"reloaded": true, "needs_restart": restart})
}
