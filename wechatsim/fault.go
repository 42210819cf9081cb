package wechatsim

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wxproxy/wxproxy/wechat"
)

// Fault is a failure injected into the WeChat calls whose path matches; the
// control paths under /sim/ are never faulted. Effects combine in this order:
// Latency delays, then Drop closes the connection without an answer, else a
// Redirect answers 302 (or Status, when it is a redirect status) with that
// Location and a short HTML body, else a Status other than 0 and 200 answers
// that HTTP status with a JSON error body (errcode Errcode, or -1), else a
// non-zero Errcode answers HTTP 200 with that errcode; Latency alone delays
// the normal answer. Answers with an errcode are recorded for rid/get like
// any other; redirects and drops are not. A Fault is a plain value.
type Fault struct {
	Path        string        // exact request path, or "*" for every WeChat endpoint
	Status      int           // HTTP status to answer; 0 or 200 = none
	Errcode     int           // errcode to answer; 0 = none
	Latency     time.Duration // real-time delay before the effect or the answer
	Drop        bool          // close the connection without answering
	Redirect    string        // answer a redirect to this URL; "" = none
	Count       int           // calls that get the fault; 0 = every call until cleared
	Probability float64       // chance in [0, 1] that a matching call gets it; see AddFault
	// Listener, if set, limits the fault to calls on that listener
	// (0-based, see Server.Listener); nil = every listener.
	Listener *int
}

// faultJSON is the wire form of Fault in the control API.
type faultJSON struct {
	Path        string   `json:"path"`
	Status      int      `json:"status"`
	Errcode     int      `json:"errcode"`
	Latency     string   `json:"latency,omitempty"`
	Drop        bool     `json:"drop"`
	Redirect    string   `json:"redirect,omitempty"`
	Count       int      `json:"count"`
	Probability *float64 `json:"probability,omitempty"`
	Listener    *int     `json:"listener,omitempty"`
	Left        *int64   `json:"left,omitempty"` // answers only: applications remaining when count > 0
}

func (f Fault) wire() faultJSON {
	p := f.Probability
	j := faultJSON{Path: f.Path, Status: f.Status, Errcode: f.Errcode, Drop: f.Drop, Redirect: f.Redirect, Count: f.Count, Probability: &p, Listener: f.Listener}
	if f.Latency > 0 {
		j.Latency = f.Latency.String()
	}
	return j
}

// parseFault reads the JSON body of POST /sim/faults; an absent probability
// means 1.
func parseFault(body []byte) (Fault, error) {
	var j faultJSON
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&j); err != nil {
		return Fault{}, fmt.Errorf("fault: %w", err)
	}
	f := Fault{Path: j.Path, Status: j.Status, Errcode: j.Errcode, Drop: j.Drop, Redirect: j.Redirect, Count: j.Count, Probability: 1, Listener: j.Listener}
	if j.Probability != nil {
		f.Probability = *j.Probability
	}
	if j.Latency != "" {
		d, err := time.ParseDuration(j.Latency)
		if err != nil {
			return Fault{}, fmt.Errorf("fault: latency: %w", err)
		}
		f.Latency = d
	}
	return f, f.validate()
}

func (f Fault) validate() error {
	switch {
	case f.Path != "*" && !strings.HasPrefix(f.Path, "/"):
		return errors.New(`fault: path: want "*" or a path starting with /`)
	case f.Path == "/sim" || strings.HasPrefix(f.Path, "/sim/"):
		return errors.New("fault: path: the control API cannot be faulted")
	case f.Status != 0 && (f.Status < 200 || f.Status > 599):
		return fmt.Errorf("fault: status: %d is not an HTTP status from 200 to 599", f.Status)
	case f.Redirect != "" && f.Status != 0 && !isRedirect(f.Status):
		return fmt.Errorf("fault: status: %d is not a redirect status (301, 302, 303, 307 or 308) for redirect", f.Status)
	case f.Redirect != "" && !validRedirect(f.Redirect):
		return errors.New("fault: redirect: want an absolute http or https URL, or a path starting with /")
	case f.Latency < 0:
		return errors.New("fault: latency: must be >= 0")
	case f.Count < 0:
		return errors.New("fault: count: must be >= 0")
	case f.Listener != nil && *f.Listener < 0:
		return errors.New("fault: listener: must be >= 0")
	case f.Probability < 0 || f.Probability > 1 || f.Probability != f.Probability:
		return errors.New("fault: probability: must be within [0, 1]")
	case !f.Drop && f.Redirect == "" && f.Latency == 0 && f.Errcode == 0 && (f.Status == 0 || f.Status == http.StatusOK):
		return errors.New("fault: no effect: set status, errcode, latency, drop or redirect")
	}
	return nil
}

func isRedirect(status int) bool {
	switch status {
	case http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther,
		http.StatusTemporaryRedirect, http.StatusPermanentRedirect:
		return true
	}
	return false
}

// validRedirect accepts what a Location header can carry unambiguously: an
// absolute http(s) URL or an absolute path, without control characters.
func validRedirect(s string) bool {
	if strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return false
	}
	u, err := url.Parse(s)
	if err != nil {
		return false
	}
	if u.Scheme == "" {
		return u.Host == "" && strings.HasPrefix(s, "/") && !strings.HasPrefix(s, "//")
	}
	return (u.Scheme == "http" || u.Scheme == "https") && u.Host != ""
}

// fault is an added Fault and what is left of its count.
type fault struct {
	Fault
	left atomic.Int64
}

// faultList is copy-on-write: the hot path does one atomic load and, with no
// faults, nothing else.
type faultList struct {
	mu   sync.Mutex // serialises writers
	list atomic.Pointer[[]*fault]
}

func (fl *faultList) add(f Fault) {
	nf := &fault{Fault: f}
	nf.left.Store(int64(f.Count))
	fl.mu.Lock()
	defer fl.mu.Unlock()
	var next []*fault
	if p := fl.list.Load(); p != nil {
		next = append(next, *p...)
	}
	next = append(next, nf)
	fl.list.Store(&next)
}

func (fl *faultList) clear() int {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	p := fl.list.Swap(nil)
	if p == nil {
		return 0
	}
	return len(*p)
}

func (fl *faultList) all() []faultJSON {
	out := []faultJSON{}
	if p := fl.list.Load(); p != nil {
		for _, f := range *p {
			j := f.wire()
			if f.Count > 0 {
				left := max(0, f.left.Load())
				j.Left = &left
			}
			out = append(out, j)
		}
	}
	return out
}

// match returns the first fault that applies to a call of path on
// listener, consuming one of its count; a fault that loses its probability
// roll or has used up its count lets the next one be considered.
func (fl *faultList) match(path string, listener int) *fault {
	p := fl.list.Load()
	if p == nil {
		return nil
	}
	for _, f := range *p {
		if f.Path != "*" && f.Path != path || f.Listener != nil && *f.Listener != listener {
			continue
		}
		if f.Probability < 1 && rand.Float64() >= f.Probability {
			continue
		}
		if f.Count > 0 && f.left.Add(-1) < 0 {
			continue
		}
		return f
	}
	return nil
}

// applyFault performs f on the call; it reports whether the call has been
// dealt with (answered, dropped or abandoned) or should be answered normally.
func (s *Server) applyFault(st *state, f *fault, w *call, r *http.Request) bool {
	if f.Latency > 0 && !sleep(r, f.Latency) {
		w.quiet = true
		return true
	}
	sty := styleWeChat
	if r.URL.Path == PathGetToken {
		sty = styleWeCom
	}
	switch {
	case f.Drop:
		w.quiet = true
		if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
			_ = conn.Close()
			return true
		}
		// Not hijackable (HTTP/2): abort the stream instead.
		panic(http.ErrAbortHandler)
	case f.Redirect != "":
		w.quiet = true
		status := f.Status
		if status == 0 {
			status = http.StatusFound
		}
		h := w.Header()
		h["Location"] = []string{f.Redirect}
		h["Content-Type"] = []string{"text/html; charset=utf-8"}
		w.WriteHeader(status)
		_, _ = io.WriteString(w, `<a href="`+html.EscapeString(f.Redirect)+`">`+http.StatusText(status)+"</a>.\n")
		return true
	case f.Status != 0 && f.Status != http.StatusOK:
		w.app = st.attribute(w, r)
		code := f.Errcode
		if code == 0 {
			code = wechat.CodeSystemError
		}
		st.failStatus(w, sty, code, f.Status)
		return true
	case f.Errcode != 0:
		w.app = st.attribute(w, r)
		st.fail(w, sty, f.Errcode)
		return true
	}
	return false
}

// attribute names the app a faulted call belongs to, for its record: the
// owner of its access_token, else the app its appid or corpid names (in
// the JSON body for stable_token, as WeChat reads it).
func (st *state) attribute(w *call, r *http.Request) *appState {
	q := r.URL.Query()
	if r.URL.Path == PathStableToken {
		var body struct {
			AppID string `json:"appid"`
		}
		if json.NewDecoder(io.LimitReader(w.body(), 64<<10)).Decode(&body) == nil {
			return st.apps[body.AppID]
		}
		return nil
	}
	if tok := q.Get("access_token"); tok != "" {
		st.mu.RLock()
		rec := st.tokens[tok]
		st.mu.RUnlock()
		if rec != nil {
			return rec.app
		}
		return nil
	}
	for _, k := range []string{"appid", "corpid"} {
		if a := st.apps[q.Get(k)]; a != nil {
			return a
		}
	}
	return nil
}

// AddFault adds f after the faults already present, as POST /sim/faults
// does. A zero Probability means 1 (every matching call): over HTTP, where
// an absent probability means 1, an explicit 0 is kept and the fault never
// fires. AddFault returns an error for an invalid fault.
func (s *Server) AddFault(f Fault) error {
	if f.Probability == 0 {
		f.Probability = 1
	}
	if err := f.validate(); err != nil {
		return fmt.Errorf("wechatsim: %w", err)
	}
	s.st.Load().faults.add(f)
	return nil
}

// ClearFaults removes every fault, as DELETE /sim/faults does.
func (s *Server) ClearFaults() { s.st.Load().faults.clear() }
