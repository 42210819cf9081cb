package admin

import (
	"cmp"
	"context"
	"net/http"
	"slices"
	"time"

	"github.com/wxproxy/wxproxy/platform"
	"github.com/wxproxy/wxproxy/proxy"
	"github.com/wxproxy/wxproxy/token"
)

// The status document's sections that features built elsewhere fill in.
// Each is a small interface the feature's holder (or a few lines of
// adapter in server/) implements; the admin port describes what they
// return, so fingerprints, TTLs and scrubbing stay in one place and no
// provider can put a credential into an answer. A nil provider leaves its
// section empty. Plugging one in is a field in server.New, for example:
//
//	admin.App{..., Tickets: a.tickets}          // a.tickets has Tickets() []admin.Ticket
//	admin.App{..., Upstreams: a.upstreams}      // Upstreams() []admin.Upstream
//	admin.Options{..., Platforms: s.platforms}  // Platforms(ctx) ([]admin.Platform, error)

// Ticket is one held ticket (jsapi, wx_card, corp_jsapi, agent_config) and
// the status of its holder.
type Ticket struct {
	Type   string
	Status token.Status
}

// Status is the document GET /admin/status answers: everything the
// console (SPEC §15) shows. In Redis mode breakers and replicas come from
// the fleet registry and quotas and tokens from the shared store, so any
// replica shows the fleet; errors are the answering replica's own.
type Status struct {
	GeneratedAt time.Time        `json:"generated_at"`
	Replica     string           `json:"replica"` // the replica that answered
	Fleet       bool             `json:"fleet"`   // breakers and replicas are fleet-wide (Redis mode)
	Replicas    []ReplicaStatus  `json:"replicas"`
	Apps        []AppStatus      `json:"apps"`
	Quotas      []AppQuotas      `json:"quotas"`
	Platforms   []PlatformStatus `json:"platforms"`
	Errors      []ErrorEntry     `json:"errors"`       // newest first
	ErrorsTotal int64            `json:"errors_total"` // recorded since this replica started
	Warnings    []string         `json:"warnings"`     // parts that could not be read (the rest is still shown)
}

// ReplicaStatus is one replica of the fleet and its breakers by state.
type ReplicaStatus struct {
	Name     string         `json:"name"`
	Self     bool           `json:"self"`
	Breakers map[string]int `json:"breakers"` // closed, half-open, open → apps
}

// AppStatus is one app in the status document.
type AppStatus struct {
	Name      string           `json:"name"`
	Kind      string           `json:"kind"`
	AppID     string           `json:"appid"`
	TokenMode string           `json:"token_mode"`
	Ready     bool             `json:"ready"`
	Token     TokenInfo        `json:"token"`
	Tickets   []TicketInfo     `json:"tickets"`
	Upstreams []UpstreamStatus `json:"upstreams"`
	Breaker   AppBreaker       `json:"breaker"`
}

// UpstreamStatus is an upstream as the status document shows it.
type UpstreamStatus struct {
	URL    string     `json:"url"`
	State  string     `json:"state"` // up, down
	Since  *time.Time `json:"since,omitempty"`
	Active bool       `json:"active"`
}

// AppBreaker is an app's breaker across the fleet: the worst state any
// replica reports (open > half-open > closed) and since when, with every
// replica's entry.
type AppBreaker struct {
	State    string              `json:"state"`
	Since    *time.Time          `json:"since,omitempty"`
	Replicas []proxy.BreakerInfo `json:"replicas"`
}

// PlatformStatus is a platform as the status document shows it.
type PlatformStatus struct {
	Name        string         `json:"name"`
	Kind        string         `json:"kind"`
	AppID       string         `json:"appid,omitempty"`
	Ready       bool           `json:"ready"`
	Reasons     []string       `json:"reasons,omitempty"`
	Token       TokenInfo      `json:"token"`
	Authorizers map[string]int `json:"authorizers"`
}

// severity orders breaker states for the fleet summary.
func severity(state string) int {
	switch state {
	case "open":
		return 2
	case "half-open":
		return 1
	}
	return 0
}

// status answers GET /admin/status.
func (h *handler) status(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, h.buildStatus(r.Context()))
}

func (h *handler) buildStatus(ctx context.Context) Status {
	now := h.o.Now()
	st := Status{GeneratedAt: now.UTC(), Replica: h.o.Replica, Fleet: h.o.Fleet != nil,
		Replicas: []ReplicaStatus{}, Apps: []AppStatus{}, Platforms: []PlatformStatus{}, Errors: []ErrorEntry{}, Warnings: []string{}}

	breakers, warn := h.fleetBreakers(ctx)
	if warn != "" {
		st.Warnings = append(st.Warnings, warn)
	}
	st.Replicas = replicas(breakers, h.o.Replica)
	byApp := map[string][]proxy.BreakerInfo{}
	for _, bi := range breakers {
		byApp[bi.App] = append(byApp[bi.App], bi)
	}

	for _, a := range h.o.Apps {
		ti := h.describe(a.Tokens.Status(), now)
		as := AppStatus{Name: a.Name, Kind: a.Kind, AppID: a.AppID, TokenMode: a.TokenMode, Ready: ti.Present, Token: ti,
			Tickets: []TicketInfo{}, Upstreams: []UpstreamStatus{}, Breaker: appBreaker(byApp[a.Name])}
		if a.Tickets != nil {
			for _, ts := range a.Tickets.Statuses() {
				tk := TicketInfo{Type: string(ts.Type), Held: ts.Held, TokenInfo: h.describe(ts.Status, now)}
				as.Tickets = append(as.Tickets, tk)
				as.Ready = as.Ready && (!ts.Held || tk.Present)
			}
		}
		if a.Upstreams != nil {
			active := false
			for _, u := range a.Upstreams() {
				us := UpstreamStatus{URL: h.o.Scrub(u.URL), State: u.State}
				if u.State == "up" && !active {
					us.Active, active = true, true
				}
				if !u.Since.IsZero() {
					us.Since = &u.Since
				}
				as.Upstreams = append(as.Upstreams, us)
			}
		}
		st.Apps = append(st.Apps, as)
	}

	var err error
	if st.Quotas, err = h.quotaReport(ctx, true); err != nil {
		st.Warnings = append(st.Warnings, "quotas: "+h.o.Scrub(err.Error()))
	}

	for _, p := range h.o.Platforms {
		ti := h.describe(p.Component().Status(), now)
		s := p.Stats()
		out := PlatformStatus{Name: p.Name(), Kind: "open_platform", AppID: p.ComponentAppID(), Token: ti,
			Authorizers: map[string]int{platform.StateOK: s.OK, platform.StateRefreshing: s.Refreshing, platform.StateUnauthorized: s.Unauthorized},
			Ready:       ti.Present}
		if err := p.Ready(); err != nil {
			out.Ready, out.Reasons = false, []string{h.o.Scrub(err.Error())}
		}
		st.Platforms = append(st.Platforms, out)
	}
	for _, p := range h.o.Suites {
		ti := h.describe(p.Component().Status(), now)
		s := p.Stats()
		out := PlatformStatus{Name: p.Name(), Kind: KindWeComSuite, AppID: p.SuiteID(), Token: ti,
			Authorizers: map[string]int{platform.StateOK: s.OK, platform.StateRefreshing: s.Refreshing, platform.StateUnauthorized: s.Unauthorized},
			Ready:       ti.Present}
		if err := p.Ready(); err != nil {
			out.Ready, out.Reasons = false, []string{h.o.Scrub(err.Error())}
		}
		st.Platforms = append(st.Platforms, out)
	}

	if h.o.Errors != nil {
		st.Errors, st.ErrorsTotal = h.o.Errors.Recent()
		for i := range st.Errors {
			e := &st.Errors[i]
			e.API, e.Message, e.Replica = h.o.Scrub(e.API), h.o.Scrub(e.Message), h.o.Replica
		}
	}
	return st
}

// fleetBreakers returns every replica's breakers in Redis mode (this
// replica's entries fresh), else this replica's; a fleet that cannot be
// read gives this replica's and a warning.
func (h *handler) fleetBreakers(ctx context.Context) ([]proxy.BreakerInfo, string) {
	local := h.localBreakers()
	if h.o.Fleet == nil {
		return local, ""
	}
	h.o.Fleet.Publish(ctx, local)
	all, err := h.o.Fleet.Breakers(ctx)
	if err != nil {
		h.o.Log.Warn("fleet breaker view unavailable; showing this replica only", "err", err)
		return local, "fleet view unavailable; breakers and replicas are this replica's only"
	}
	// Our own entries are the ones we hold, whatever the registry says.
	out := append(slices.DeleteFunc(slices.Clone(all), func(bi proxy.BreakerInfo) bool { return bi.Replica == h.o.Replica }), local...)
	slices.SortFunc(out, func(a, b proxy.BreakerInfo) int {
		return cmp.Or(cmp.Compare(a.App, b.App), cmp.Compare(a.Replica, b.Replica))
	})
	return out, ""
}

// replicas lists the replicas named by breaker entries, self included,
// with their breakers counted by state.
func replicas(breakers []proxy.BreakerInfo, self string) []ReplicaStatus {
	idx := map[string]int{}
	var out []ReplicaStatus
	add := func(name string) *ReplicaStatus {
		i, ok := idx[name]
		if !ok {
			i = len(out)
			idx[name] = i
			out = append(out, ReplicaStatus{Name: name, Self: name == self, Breakers: map[string]int{"closed": 0, "half-open": 0, "open": 0}})
		}
		return &out[i]
	}
	add(self)
	for _, bi := range breakers {
		add(bi.Replica).Breakers[bi.State]++
	}
	slices.SortFunc(out, func(a, b ReplicaStatus) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

// appBreaker summarises an app's breaker entries across replicas.
func appBreaker(entries []proxy.BreakerInfo) AppBreaker {
	ab := AppBreaker{State: "closed", Replicas: []proxy.BreakerInfo{}}
	slices.SortFunc(entries, func(a, b proxy.BreakerInfo) int { return cmp.Compare(a.Replica, b.Replica) })
	var worst *proxy.BreakerInfo
	for i := range entries {
		e := &entries[i]
		ab.Replicas = append(ab.Replicas, *e)
		switch {
		case worst == nil || severity(e.State) > severity(worst.State):
			worst = e
		case severity(e.State) < severity(worst.State):
		case e.State == "closed" && e.Since.After(worst.Since): // closed everywhere since the last to close
			worst = e
		case e.State != "closed" && e.Since.Before(worst.Since): // open since the first to open
			worst = e
		}
	}
	if worst != nil {
		ab.State = worst.State
		since := worst.Since
		ab.Since = &since
	}
	return ab
}
