package token_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/wxproxy/wxproxy/token"
)

// A token endpoint that redirects must not make the fetcher re-send the
// secret elsewhere: every mode, with the default client and a given one.
func TestFetchNeverFollowsRedirects(t *testing.T) {
	var stolen atomic.Int64
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		stolen.Add(1)
		_, _ = w.Write([]byte(`{"access_token":"x","expires_in":7200}`))
	}))
	defer evil.Close()
	for _, status := range []int{http.StatusFound, http.StatusTemporaryRedirect, http.StatusPermanentRedirect} {
		up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, evil.URL+r.URL.RequestURI(), status)
		}))
		for _, mode := range []token.Mode{token.Stable, token.Classic, token.WeCom} {
			for _, client := range []*http.Client{nil, {}, up.Client()} {
				f := &token.HTTPFetcher{Mode: mode, Upstream: up.URL, AppID: "wx1", Secret: "topsecret-value", Client: client}
				_, err := f.Fetch(context.Background(), false)
				if err == nil {
					t.Errorf("%d %s: Fetch succeeded through a redirect", status, mode)
				} else if strings.Contains(err.Error(), "topsecret") {
					t.Errorf("%d %s: error shows the secret: %v", status, mode, err)
				}
			}
		}
		up.Close()
	}
	if n := stolen.Load(); n != 0 {
		t.Errorf("the redirect target got %d requests; want 0", n)
	}
}
