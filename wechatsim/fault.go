package wechatsim

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wxproxy/wxproxy/wechat"
)

// Fault is a failure injected into the WeChat calls whose path matches; the
// control paths under /sim/ are never faulted. Effects combine in this order:
// Latency delays, then Drop closes the connection without an answer, else a
// Status other than 0 and 200 answers that HTTP status with a JSON error body
// (errcode Errcode, or -1), else a non-zero Errcode answers HTTP 200 with that
// errcode; Latency alone delays the normal answer. A Fault is a plain value.
type Fault struct {
	Path        string        // exact request path, or "*" for every WeChat endpoint
	Status      int           // HTTP status to answer; 0 or 200 = none
	Errcode     int           // errcode to answer; 0 = none
	Latency     time.Duration // real-time delay before the effect or the answer
	Drop        bool          // close the connection without answering
	Count       int           // calls that get the fault; 0 = every call until cleared
	Probability float64       // chance in [0, 1] that a matching call gets it; see AddFault
}

// faultJSON is the wire form of Fault in the control API.
type faultJSON struct {
	Path        string   `json:"path"`
	Status      int      `json:"status"`
	Errcode     int      `json:"errcode"`
	Latency     string   `json:"latency,omitempty"`
	Drop        bool     `json:"drop"`
	Count       int      `json:"count"`
	Probability *float64 `json:"probability,omitempty"`
	Left        *int64   `json:"left,omitempty"` // answers only: applications remaining when count > 0
}

func (f Fault) wire() faultJSON {
	p := f.Probability
	j := faultJSON{Path: f.Path, Status: f.Status, Errcode: f.Errcode, Drop: f.Drop, Count: f.Count, Probability: &p}
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
	f := Fault{Path: j.Path, Status: j.Status, Errcode: j.Errcode, Drop: j.Drop, Count: j.Count, Probability: 1}
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
	case f.Latency < 0:
		return errors.New("fault: latency: must be >= 0")
	case f.Count < 0:
		return errors.New("fault: count: must be >= 0")
	case f.Probability < 0 || f.Probability > 1 || f.Probability != f.Probability:
		return errors.New("fault: probability: must be within [0, 1]")
	case !f.Drop && f.Latency == 0 && f.Errcode == 0 && (f.Status == 0 || f.Status == http.StatusOK):
		return errors.New("fault: no effect: set status, errcode, latency or drop")
	}
	return nil
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

// match returns the first fault that applies to a call of path, consuming
// one of its count; a fault that loses its probability roll or has used up
// its count lets the next one be considered.
func (fl *faultList) match(path string) *fault {
	p := fl.list.Load()
	if p == nil {
		return nil
	}
	for _, f := range *p {
		if f.Path != "*" && f.Path != path {
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
func (s *Server) applyFault(st *state, f *fault, w http.ResponseWriter, r *http.Request) bool {
	if f.Latency > 0 && !sleep(r, f.Latency) {
		return true
	}
	sty := styleWeChat
	if r.URL.Path == PathGetToken {
		sty = styleWeCom
	}
	switch {
	case f.Drop:
		if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
			_ = conn.Close()
			return true
		}
		// Not hijackable (HTTP/2): abort the stream instead.
		panic(http.ErrAbortHandler)
	case f.Status != 0 && f.Status != http.StatusOK:
		code := f.Errcode
		if code == 0 {
			code = wechat.CodeSystemError
		}
		st.failStatus(w, r, sty, code, f.Status)
		return true
	case f.Errcode != 0:
		st.fail(w, r, sty, f.Errcode)
		return true
	}
	return false
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
