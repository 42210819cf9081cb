package main

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/wxproxy/wxproxy/token"
)

// adminRoutes is the admin port (SPEC §8). Nothing here ever shows a token
// or a secret: tokens appear as fingerprints.
func (s *server) adminRoutes() http.Handler {
	r := chi.NewRouter()
	r.Get("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok"))
	})
	r.Get("/readyz", s.readyz)
	r.Handle("/metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{Registry: s.reg}))
	r.Get("/admin/apps", s.adminApps)
	r.Get("/admin/breakers", s.adminBreakers)
	r.Get("/admin/quotas", s.adminQuotas)
	// Go's profiler, for finding where CPU and memory go under load: only
	// when configured, and behind the bearer token like every admin action.
	if s.config0().Admin.PProf {
		r.With(s.requireAdminToken).Mount("/debug", middleware.Profiler())
	}
	r.Group(func(r chi.Router) {
		r.Use(s.requireAdminToken)
		r.Post("/admin/apps/{app}/refresh", s.adminRefresh)
		r.Post("/admin/reload", s.adminReload)
	})
	return r
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":"could not encode the answer"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// requireAdminToken guards every POST (and the profiler):
// Authorization: Bearer <admin.token>, compared in constant time. Without a
// configured token every such request is refused.
func (s *server) requireAdminToken(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		want := s.config().Admin.Token
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

// readyz is ready when every app holds a valid token.
func (s *server) readyz(w http.ResponseWriter, _ *http.Request) {
	reasons := []string{}
	now := time.Now()
	for _, a := range s.apps {
		if !a.cache.Current().Valid(now) {
			reason := "app " + a.cfg.Name + ": no valid access_token"
			if err := a.cache.Status().LastError; err != nil {
				reason += " (last fetch: " + s.proxy.Scrub(err.Error()) + ")"
			}
			reasons = append(reasons, reason)
		}
	}
	if len(reasons) > 0 {
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"ready": false, "reasons": reasons})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"ready": true})
}

type tokenInfo struct {
	Present     bool       `json:"present"`
	Fingerprint string     `json:"fingerprint,omitempty"`
	ObtainedAt  *time.Time `json:"obtained_at,omitempty"`
	ExpiresAt   *time.Time `json:"expires_at,omitempty"`
	TTLSeconds  int64      `json:"ttl_seconds"`
	Refreshes   int64      `json:"refreshes"`
	LastError   string     `json:"last_error,omitempty"`
}

// describeToken shows a token by fingerprint; scrub cleans its last error.
func describeToken(st token.Status, now time.Time, scrub func(string) string) tokenInfo {
	ti := tokenInfo{Refreshes: st.Refreshes}
	if t := st.Token; t.Valid(now) {
		ti.Present, ti.Fingerprint = true, token.Fingerprint(t.Value)
		ti.ObtainedAt, ti.ExpiresAt = &t.ObtainedAt, &t.ExpiresAt
		ti.TTLSeconds = int64(t.ExpiresAt.Sub(now).Seconds())
	}
	if st.LastError != nil {
		ti.LastError = scrub(st.LastError.Error())
	}
	return ti
}

func (s *server) adminApps(w http.ResponseWriter, _ *http.Request) {
	type appInfo struct {
		Name      string    `json:"name"`
		Kind      string    `json:"kind"`
		AppID     string    `json:"appid"`
		TokenMode string    `json:"token_mode"`
		Token     tokenInfo `json:"token"`
		Breaker   string    `json:"breaker"`
		Ready     bool      `json:"ready"`
	}
	now := time.Now()
	out := make([]appInfo, 0, len(s.apps))
	for _, a := range s.apps {
		ti := describeToken(a.cache.Status(), now, s.proxy.Scrub)
		out = append(out, appInfo{Name: a.cfg.Name, Kind: a.cfg.Kind, AppID: a.cfg.AppID, TokenMode: string(tokenMode(a.cfg)),
			Token: ti, Breaker: a.breaker.State().State, Ready: ti.Present})
	}
	writeJSON(w, http.StatusOK, out)
}

type breakerInfo struct {
	App     string    `json:"app"`
	Replica string    `json:"replica"`
	State   string    `json:"state"`
	Since   time.Time `json:"since"`
	Counts  struct {
		Requests            uint32 `json:"requests"`
		TotalSuccesses      uint32 `json:"total_successes"`
		TotalFailures       uint32 `json:"total_failures"`
		ConsecutiveFailures uint32 `json:"consecutive_failures"`
	} `json:"counts"`
}

// adminBreakers lists every replica's breakers with Redis, else this one's.
func (s *server) adminBreakers(w http.ResponseWriter, r *http.Request) {
	local := s.localBreakers()
	if s.fleet == nil {
		writeJSON(w, http.StatusOK, local)
		return
	}
	s.fleet.publish(r.Context(), local) // our own entry is always fresh
	all, err := s.fleet.breakers(r.Context())
	if err != nil {
		s.log.Warn("fleet breaker view unavailable; showing this replica only", "err", err)
		writeJSON(w, http.StatusOK, local)
		return
	}
	writeJSON(w, http.StatusOK, all)
}

func (s *server) localBreakers() []breakerInfo {
	out := make([]breakerInfo, 0, len(s.apps))
	for _, a := range s.apps {
		st := a.breaker.State()
		bi := breakerInfo{App: a.cfg.Name, Replica: s.replica, State: st.State, Since: st.Since}
		bi.Counts.Requests, bi.Counts.TotalSuccesses = st.Counts.Requests, st.Counts.TotalSuccesses
		bi.Counts.TotalFailures, bi.Counts.ConsecutiveFailures = st.Counts.TotalFailures, st.Counts.ConsecutiveFailures
		out = append(out, bi)
	}
	return out
}

func (s *server) adminQuotas(w http.ResponseWriter, r *http.Request) {
	type appQuotas struct {
		App           string `json:"app"`
		ResetTimezone string `json:"reset_timezone"`
		OnLimit       string `json:"on_limit"`
		APIs          any    `json:"apis"`
	}
	cfg := s.config()
	out := make([]appQuotas, 0, len(s.apps))
	for i, a := range s.apps {
		usage, err := a.limiter.Usage(r.Context())
		if err != nil {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "quota store: " + err.Error()})
			return
		}
		q := cfg.Apps[i].Quotas
		out = append(out, appQuotas{App: a.cfg.Name, ResetTimezone: q.ResetTimezone, OnLimit: q.OnLimit, APIs: usage})
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *server) adminRefresh(w http.ResponseWriter, r *http.Request) {
	name := chi.URLParam(r, "app")
	for _, a := range s.apps {
		if a.cfg.Name != name {
			continue
		}
		tok, err := a.cache.Refresh(r.Context())
		switch {
		case errors.Is(err, token.ErrForceBudget), errors.Is(err, token.ErrFetchBudget):
			writeJSON(w, http.StatusTooManyRequests, map[string]any{"app": name, "refreshed": false, "error": s.proxy.Scrub(err.Error())})
		case err != nil:
			writeJSON(w, http.StatusBadGateway, map[string]any{"app": name, "refreshed": false, "error": s.proxy.Scrub(err.Error())})
		default:
			writeJSON(w, http.StatusOK, map[string]any{"app": name, "refreshed": true,
				"fingerprint": token.Fingerprint(tok.Value), "expires_at": tok.ExpiresAt})
		}
		return
	}
	writeJSON(w, http.StatusNotFound, map[string]any{"error": "no app named " + name})
}

func (s *server) adminReload(w http.ResponseWriter, _ *http.Request) {
	restart, err := s.reload()
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]any{"reloaded": false, "errors": strings.Split(err.Error(), "\n")})
		return
	}
	if restart == nil {
		restart = []string{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"reloaded": true, "needs_restart": restart})
}
