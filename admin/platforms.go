package admin

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/wxproxy/wxproxy/platform"
	"github.com/wxproxy/wxproxy/token"
)

// Platform is what the admin API needs of a third-party platform;
// *platform.Platform implements it.
type Platform interface {
	Name() string
	ComponentAppID() string
	Component() *token.Cache
	Ticket() *platform.Ticket
	Ready() error
	Stats() platform.Stats
	Authorizers(state string, offset, limit int) ([]platform.AuthorizerInfo, int)
	Import(ctx context.Context, appid, refreshToken string) (platform.AuthorizerInfo, error)
	Recover(ctx context.Context) (listed, changed int, err error)
	StartPush(ctx context.Context) error
}

var _ Platform = (*platform.Platform)(nil)

// maxListLimit bounds one page of GET /admin/platforms/{p}/authorizers.
const maxListLimit = 500

func (h *handler) platformRoutes(r chi.Router) {
	r.Get("/admin/platforms", h.platforms)
	r.Get("/admin/platforms/{p}/authorizers", h.authorizers)
	r.Group(func(r chi.Router) {
		r.Use(h.requireToken)
		r.Post("/admin/platforms/{p}/authorizers", h.importAuthorizer)
		r.Post("/admin/platforms/{p}/recover", h.recoverAuthorizers)
		r.Post("/admin/platforms/{p}/start-push", h.startPush)
		r.Post("/admin/platforms/{p}/refresh", h.refreshComponent)
	})
}

func (h *handler) platform(w http.ResponseWriter, r *http.Request) Platform {
	name := chi.URLParam(r, "p")
	for _, p := range h.o.Platforms {
		if p.Name() == name {
			return p
		}
	}
	writeJSON(w, http.StatusNotFound, map[string]string{"error": "no platform named " + name})
	return nil
}

// platforms lists each platform: its ticket and component token by
// fingerprint and TTL, and its merchants counted by state.
func (h *handler) platforms(w http.ResponseWriter, _ *http.Request) {
	type ticketInfo struct {
		Present     bool       `json:"present"`
		Fingerprint string     `json:"fingerprint,omitempty"`
		ReceivedAt  *time.Time `json:"received_at,omitempty"`
		ExpiresAt   *time.Time `json:"expires_at,omitempty"`
		TTLSeconds  int64      `json:"ttl_seconds"`
	}
	type info struct {
		Name           string         `json:"name"`
		Kind           string         `json:"kind"`
		ComponentAppID string         `json:"component_appid"`
		Ticket         ticketInfo     `json:"ticket"`
		Token          TokenInfo      `json:"component_token"`
		Authorizers    map[string]int `json:"authorizers"`
		Ready          bool           `json:"ready"`
		Reason         string         `json:"reason,omitempty"`
	}
	now := h.o.Now()
	out := make([]any, 0, len(h.o.Platforms)+len(h.o.Suites))
	for _, p := range h.o.Platforms {
		in := info{Name: p.Name(), Kind: "open_platform", ComponentAppID: p.ComponentAppID(),
			Token: h.describe(p.Component().Status(), now), Ready: true}
		if t := p.Ticket(); t.Valid(now) {
			in.Ticket = ticketInfo{Present: true, Fingerprint: token.Fingerprint(t.Value), ReceivedAt: &t.ReceivedAt,
				ExpiresAt: &t.ExpiresAt, TTLSeconds: int64(t.ExpiresAt.Sub(now).Seconds())}
		}
		s := p.Stats()
		in.Authorizers = map[string]int{platform.StateOK: s.OK, platform.StateRefreshing: s.Refreshing, platform.StateUnauthorized: s.Unauthorized}
		if err := p.Ready(); err != nil {
			in.Ready, in.Reason = false, h.o.Scrub(err.Error())
		}
		out = append(out, in)
	}
	for _, s := range h.o.Suites {
		out = append(out, h.suiteInfo(s, now))
	}
	writeJSON(w, http.StatusOK, out)
}

// authorizers lists merchants, paged (offset, limit ≤ 500), optionally of
// one state; fingerprints and TTLs only.
func (h *handler) authorizers(w http.ResponseWriter, r *http.Request) {
	if h.suiteRoute(w, r, "list") {
		return
	}
	p := h.platform(w, r)
	if p == nil {
		return
	}
	q := r.URL.Query()
	state := q.Get("state")
	switch state {
	case "", platform.StateOK, platform.StateRefreshing, platform.StateUnauthorized:
	default:
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "state must be ok, refreshing or unauthorized"})
		return
	}
	offset, err1 := intParam(q.Get("offset"), 0)
	limit, err2 := intParam(q.Get("limit"), 100)
	if err1 != nil || err2 != nil || offset < 0 || limit < 1 || limit > maxListLimit {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "offset must be >= 0 and limit between 1 and 500"})
		return
	}
	list, total := p.Authorizers(state, offset, limit)
	writeJSON(w, http.StatusOK, map[string]any{"platform": p.Name(), "total": total, "offset": offset, "limit": limit, "authorizers": list})
}

func intParam(s string, def int) (int, error) {
	if s == "" {
		return def, nil
	}
	return strconv.Atoi(s)
}

// importAuthorizer adds a merchant from an existing system:
// {"authorizer_appid","refresh_token"}. The refresh token is checked with
// a fetch; the answer shows its fingerprint only.
func (h *handler) importAuthorizer(w http.ResponseWriter, r *http.Request) {
	if h.suiteRoute(w, r, "import") {
		return
	}
	p := h.platform(w, r)
	if p == nil {
		return
	}
	var req struct {
		AppID        string `json:"authorizer_appid"`
		RefreshToken string `json:"refresh_token"`
	}
	dec := json.NewDecoder(io.LimitReader(r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil || req.AppID == "" || req.RefreshToken == "" {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": `want {"authorizer_appid":"…","refresh_token":"…"}`})
		return
	}
	info, err := p.Import(r.Context(), req.AppID, req.RefreshToken)
	h.writeImport(w, info.AppID != "", info, err)
}

// writeImport answers an import of an account (a merchant or a corp):
// 200; 400 when nothing was kept (bad input); 502 when the record was kept
// but its check with WeChat failed. The error is scrubbed.
func (h *handler) writeImport(w http.ResponseWriter, kept bool, info any, err error) {
	if err != nil {
		status := http.StatusBadGateway
		if !kept {
			status = http.StatusBadRequest
		}
		writeJSON(w, status, map[string]any{"imported": kept, "authorizer": info, "error": h.o.Scrub(err.Error())})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"imported": true, "authorizer": info})
}

// recoverAuthorizers reads every refresh token WeChat holds for the
// platform (api_get_authorizer_list).
func (h *handler) recoverAuthorizers(w http.ResponseWriter, r *http.Request) {
	if h.suiteRoute(w, r, "recover") {
		return
	}
	p := h.platform(w, r)
	if p == nil {
		return
	}
	listed, changed, err := p.Recover(r.Context())
	if err != nil {
		writeJSON(w, http.StatusBadGateway, map[string]any{"listed": listed, "changed": changed, "error": h.o.Scrub(err.Error())})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"listed": listed, "changed": changed})
}

// startPush asks WeChat to push a component_verify_ticket now.
func (h *handler) startPush(w http.ResponseWriter, r *http.Request) {
	if h.suiteRoute(w, r, "start-push") {
		return
	}
	p := h.platform(w, r)
	if p == nil {
		return
	}
	if err := p.StartPush(r.Context()); err != nil {
		writeJSON(w, http.StatusBadGateway, map[string]any{"started": false, "error": h.o.Scrub(err.Error())})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"started": true})
}

// refreshComponent replaces the component token.
func (h *handler) refreshComponent(w http.ResponseWriter, r *http.Request) {
	if h.suiteRoute(w, r, "refresh") {
		return
	}
	p := h.platform(w, r)
	if p == nil {
		return
	}
	tok, err := p.Component().Refresh(r.Context())
	if err != nil {
		writeJSON(w, http.StatusBadGateway, map[string]any{"platform": p.Name(), "refreshed": false, "error": h.o.Scrub(err.Error())})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"platform": p.Name(), "refreshed": true, "fingerprint": token.Fingerprint(tok.Value), "expires_at": tok.ExpiresAt})
}
