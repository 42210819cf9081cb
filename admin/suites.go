package admin

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/wxproxy/wxproxy/platform"
	"github.com/wxproxy/wxproxy/suite"
	"github.com/wxproxy/wxproxy/token"
)

// Suite is what the admin API needs of a WeCom suite (SPEC §13);
// *suite.Suite implements it. It shares the /admin/platforms routes with
// the Open Platform: its corps are its authorizers.
type Suite interface {
	Name() string
	SuiteID() string
	ProviderCorpID() string
	Component() *token.Cache // the suite_access_token
	Provider() *token.Cache  // nil without a provider secret
	Ticket() *platform.Ticket
	Ready() error
	Stats() platform.Stats
	Corps(state string, offset, limit int) ([]suite.CorpInfo, int)
	Import(ctx context.Context, corpid, permanentCode string) (suite.CorpInfo, error)
}

var _ Suite = (*suite.Suite)(nil)

// KindWeComSuite is the kind the admin API shows for a suite.
const KindWeComSuite = "wecom_suite"

func (h *handler) suiteNamed(name string) Suite {
	for _, s := range h.o.Suites {
		if s.Name() == name {
			return s
		}
	}
	return nil
}

// suiteRoute serves a /admin/platforms/{p}/... request when p is a
// suite; it reports whether it did.
func (h *handler) suiteRoute(w http.ResponseWriter, r *http.Request, what string) bool {
	s := h.suiteNamed(chi.URLParam(r, "p"))
	if s == nil {
		return false
	}
	switch what {
	case "list":
		h.suiteCorps(w, r, s)
	case "import":
		h.importCorp(w, r, s)
	case "refresh":
		tok, err := s.Component().Refresh(r.Context())
		if err != nil {
			writeJSON(w, http.StatusBadGateway, map[string]any{"platform": s.Name(), "refreshed": false, "error": h.o.Scrub(err.Error())})
			return true
		}
		writeJSON(w, http.StatusOK, map[string]any{"platform": s.Name(), "refreshed": true, "fingerprint": token.Fingerprint(tok.Value), "expires_at": tok.ExpiresAt})
	default:
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": what + " is for Open Platform platforms; " + s.Name() + " is a WeCom suite (WeCom pushes its suite_ticket every 10 minutes; the provider console can push one by hand)"})
	}
	return true
}

// suiteInfo is a suite as GET /admin/platforms shows it.
func (h *handler) suiteInfo(s Suite, now time.Time) map[string]any {
	type ticketInfo struct {
		Present     bool       `json:"present"`
		Fingerprint string     `json:"fingerprint,omitempty"`
		ReceivedAt  *time.Time `json:"received_at,omitempty"`
		ExpiresAt   *time.Time `json:"expires_at,omitempty"`
		TTLSeconds  int64      `json:"ttl_seconds"`
	}
	var ti ticketInfo
	if t := s.Ticket(); t.Valid(now) {
		ti = ticketInfo{Present: true, Fingerprint: token.Fingerprint(t.Value), ReceivedAt: &t.ReceivedAt,
			ExpiresAt: &t.ExpiresAt, TTLSeconds: int64(t.ExpiresAt.Sub(now).Seconds())}
	}
	st := s.Stats()
	in := map[string]any{
		"name": s.Name(), "kind": KindWeComSuite, "suite_id": s.SuiteID(), "ticket": ti,
		"suite_token": h.describe(s.Component().Status(), now),
		"authorizers": map[string]int{platform.StateOK: st.OK, platform.StateRefreshing: st.Refreshing, platform.StateUnauthorized: st.Unauthorized},
		"ready":       true,
	}
	if id := s.ProviderCorpID(); id != "" {
		in["provider_corpid"] = id
	}
	if p := s.Provider(); p != nil {
		in["provider_token"] = h.describe(p.Status(), now)
	}
	if err := s.Ready(); err != nil {
		in["ready"], in["reason"] = false, h.o.Scrub(err.Error())
	}
	return in
}

// suiteCorps lists a suite's corps, paged like merchants.
func (h *handler) suiteCorps(w http.ResponseWriter, r *http.Request, s Suite) {
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
	list, total := s.Corps(state, offset, limit)
	writeJSON(w, http.StatusOK, map[string]any{"platform": s.Name(), "kind": KindWeComSuite, "total": total, "offset": offset, "limit": limit, "authorizers": list})
}

// importCorp adds a corp from an existing system:
// {"corpid","permanent_code"}. The code is checked with a fetch; the
// answer shows its fingerprint only.
func (h *handler) importCorp(w http.ResponseWriter, r *http.Request, s Suite) {
	var req struct {
		CorpID        string `json:"corpid"`
		PermanentCode string `json:"permanent_code"`
	}
	dec := json.NewDecoder(io.LimitReader(r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil || req.CorpID == "" || req.PermanentCode == "" {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": `want {"corpid":"…","permanent_code":"…"}`})
		return
	}
	info, err := s.Import(r.Context(), req.CorpID, req.PermanentCode)
	h.writeImport(w, info.CorpID != "", info, err)
}
