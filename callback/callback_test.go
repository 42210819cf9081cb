package callback_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/wxproxy/wxproxy/callback"
)

// fake is a Receiver whose answers are func fields.
type fake struct {
	push   func(q url.Values, body []byte) error
	verify func(q url.Values) ([]byte, error)
}

func (f fake) HandlePush(_ context.Context, q url.Values, body []byte) error { return f.push(q, body) }
func (f fake) VerifyURL(_ context.Context, q url.Values) ([]byte, error)     { return f.verify(q) }

func TestServer(t *testing.T) {
	var results []string
	rcv := fake{
		push: func(q url.Values, body []byte) error {
			switch q.Get("case") {
			case "sig":
				return callback.ErrSignature
			case "bad":
				return callback.ErrBadPush
			case "fail":
				return errors.New("store down: secret-ish detail")
			}
			return nil
		},
		verify: func(q url.Values) ([]byte, error) {
			if q.Get("echostr") == "" {
				return nil, callback.ErrSignature
			}
			return []byte(q.Get("echostr")), nil
		},
	}
	srv := httptest.NewServer(callback.New(callback.Options{Receivers: map[string]callback.Receiver{"acme": rcv}, MaxBody: 100,
		OnPush: func(p, r string) { results = append(results, p+":"+r) }}))
	defer srv.Close()
	for _, tc := range []struct {
		method, path, body string
		status             int
		answer             string
	}{
		{"POST", "/callback/acme", "<xml/>", 200, "success"},
		{"POST", "/callback/acme?case=sig", "<xml/>", 401, ""},
		{"POST", "/callback/acme?case=bad", "<xml/>", 400, ""},
		{"POST", "/callback/acme?case=fail", "<xml/>", 503, ""},
		{"POST", "/callback/acme", strings.Repeat("x", 101), 413, ""},
		{"GET", "/callback/acme?echostr=hi", "", 200, "hi"},
		{"GET", "/callback/acme", "", 401, ""},
		{"GET", "/callback/other", "", 404, ""},
		{"GET", "/callback/acme/x", "", 404, ""},
		{"GET", "/callback/%61cme", "", 404, ""},
		{"GET", "/", "", 404, ""},
		{"GET", "/metrics", "", 404, ""},
		{"DELETE", "/callback/acme", "", 405, ""},
	} {
		req, _ := http.NewRequest(tc.method, srv.URL+tc.path, strings.NewReader(tc.body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status || (tc.answer != "" && string(b) != tc.answer) {
			t.Errorf("%s %s: %d %q, want %d %q", tc.method, tc.path, resp.StatusCode, b, tc.status, tc.answer)
		}
		if strings.Contains(string(b), "secret-ish") {
			t.Errorf("%s %s: the answer shows the error's detail", tc.method, tc.path)
		}
	}
	if got := strings.Join(results[:5], ","); got != "acme:ok,acme:bad_signature,acme:bad_request,acme:error,acme:too_large" {
		t.Errorf("counted %s", got)
	}
}
