package wechatsim

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// controlError is the body of every failed control call.
type controlError struct {
	Error string `json:"error"`
}

// serveControl answers the /sim/ control API. It is not part of WeChat: no
// latency, no faults, plain JSON errors with meaningful HTTP statuses.
func (s *Server) serveControl(st *state, w http.ResponseWriter, r *http.Request) {
	path := r.URL.Path
	if appid, ok := strings.CutPrefix(path, "/sim/apps/"); ok {
		if appid, ok = strings.CutSuffix(appid, "/invalidate"); ok && appid != "" && !strings.Contains(appid, "/") {
			if methodIs(w, r, http.MethodPost) {
				s.controlInvalidate(w, appid)
			}
			return
		}
	}
	if rest, ok := strings.CutPrefix(path, "/sim/platforms/"); ok {
		s.controlPlatform(w, r, rest)
		return
	}
	if rest, ok := strings.CutPrefix(path, "/sim/suites/"); ok {
		s.controlSuite(w, r, rest)
		return
	}
	switch path {
	case "/sim/clock":
		switch r.Method {
		case http.MethodGet:
			writeClock(w, st.now())
		case http.MethodPost:
			s.controlAdvance(w, r)
		default:
			methodIs(w, r, http.MethodGet, http.MethodPost)
		}
	case "/sim/faults":
		switch r.Method {
		case http.MethodGet:
			writeJSON(w, http.StatusOK, st.faults.all())
		case http.MethodPost:
			s.controlAddFault(st, w, r)
		case http.MethodDelete:
			writeJSON(w, http.StatusOK, map[string]int{"cleared": st.faults.clear()})
		default:
			methodIs(w, r, http.MethodGet, http.MethodPost, http.MethodDelete)
		}
	case "/sim/stats":
		if methodIs(w, r, http.MethodGet) {
			writeJSON(w, http.StatusOK, st.snapshot())
		}
	case "/sim/rids":
		if methodIs(w, r, http.MethodGet) {
			controlRids(st, w, r)
		}
	case "/sim/tokens":
		if methodIs(w, r, http.MethodGet) {
			writeJSON(w, http.StatusOK, st.liveTokens())
		}
	case "/sim/tickets":
		if methodIs(w, r, http.MethodGet) {
			writeJSON(w, http.StatusOK, st.liveTickets())
		}
	case "/sim/reset":
		if methodIs(w, r, http.MethodPost) {
			s.Reset()
			writeJSON(w, http.StatusOK, map[string]bool{"reset": true})
		}
	default:
		writeJSON(w, http.StatusNotFound, controlError{Error: "unknown control path " + path})
	}
}

// methodIs answers 405 unless r uses one of methods.
func methodIs(w http.ResponseWriter, r *http.Request, methods ...string) bool {
	for _, m := range methods {
		if r.Method == m {
			return true
		}
	}
	allow := strings.Join(methods, ", ")
	w.Header().Set("Allow", allow)
	writeJSON(w, http.StatusMethodNotAllowed, controlError{Error: "method " + r.Method + " not allowed; use " + allow})
	return false
}

func writeClock(w http.ResponseWriter, now time.Time) {
	writeJSON(w, http.StatusOK, map[string]string{"now": now.UTC().Format(time.RFC3339Nano)})
}

// readControl decodes a control body strictly: unknown fields are errors.
func readControl(r *http.Request, v any) error {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxControlBody))
	if err != nil {
		return fmt.Errorf("read body: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("body: %w", err)
	}
	return nil
}

func badRequest(w http.ResponseWriter, err error) {
	writeJSON(w, http.StatusBadRequest, controlError{Error: err.Error()})
}

// controlAdvance answers POST /sim/clock {"advance":"2h"}.
func (s *Server) controlAdvance(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Advance *string `json:"advance"`
	}
	if err := readControl(r, &req); err != nil {
		badRequest(w, err)
		return
	}
	if req.Advance == nil {
		badRequest(w, errors.New(`advance: required, e.g. {"advance":"2h"}`))
		return
	}
	d, err := time.ParseDuration(*req.Advance)
	if err != nil {
		badRequest(w, fmt.Errorf("advance: %w", err))
		return
	}
	if err := s.Advance(d); err != nil {
		badRequest(w, fmt.Errorf("advance: %w", err))
		return
	}
	writeClock(w, s.Now())
}

// controlInvalidate answers POST /sim/apps/{appid}/invalidate.
func (s *Server) controlInvalidate(w http.ResponseWriter, appid string) {
	n, err := s.Invalidate(appid)
	if err != nil {
		writeJSON(w, http.StatusNotFound, controlError{Error: fmt.Sprintf("unknown appid %q", appid)})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"appid": appid, "invalidated": n})
}

// defaultRidsLimit is how many rids GET /sim/rids lists without a limit.
const defaultRidsLimit = 100

// controlRids answers GET /sim/rids?appid=&path=&limit=, the newest rids
// first, as Server.Rids does.
func controlRids(st *state, w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit := defaultRidsLimit
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			badRequest(w, fmt.Errorf("limit: %q is not a positive integer", v))
			return
		}
		limit = n
	}
	writeJSON(w, http.StatusOK, map[string][]string{"rids": st.rids(q.Get("appid"), q.Get("path"), limit)})
}

// controlAddFault answers POST /sim/faults with the fault as added.
func (s *Server) controlAddFault(st *state, w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxControlBody))
	if err != nil {
		badRequest(w, err)
		return
	}
	f, err := parseFault(body)
	if err != nil {
		badRequest(w, err)
		return
	}
	st.faults.add(f)
	writeJSON(w, http.StatusOK, f.wire())
}
