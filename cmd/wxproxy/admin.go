package main

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"
)

func (s *server) adminRoutes() http.Handler {
	r := chi.NewRouter()
	r.Get("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok"))
	})
	r.Get("/readyz", s.readyz)
	return r
}

// readyz is ready when every app holds a valid token.
func (s *server) readyz(w http.ResponseWriter, _ *http.Request) {
	reasons := []string{}
	now := time.Now()
	for _, a := range s.apps {
		if !a.cache.Current().Valid(now) {
			reasons = append(reasons, "app "+a.cfg.Name+": no valid access_token")
		}
	}
	w.Header().Set("Content-Type", "application/json")
	if len(reasons) > 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
		_ = json.NewEncoder(w).Encode(map[string]any{"ready": false, "reasons": reasons})
		return
	}
	_ = json.NewEncoder(w).Encode(map[string]any{"ready": true})
}
