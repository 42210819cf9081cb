package wechat_test

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/wxproxy/wxproxy/wechat"
)

func TestPostJSON(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/ok", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Content-Type") != "application/json" || r.Method != http.MethodPost {
			t.Errorf("%s with Content-Type %q", r.Method, r.Header.Get("Content-Type"))
		}
		w.Write([]byte(`{"errcode":0,"v":"x"}`))
	})
	mux.HandleFunc("/err", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(`{"errcode":61023,"errmsg":"gone"}`)) })
	mux.HandleFunc("/redirect", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/ok?secret="+r.URL.Query().Get("secret"), http.StatusFound)
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()

	var out struct{ V string }
	if err := wechat.PostJSON(t.Context(), srv.Client(), srv.URL+"/ok", map[string]string{"a": "b"}, &out, 1<<10); err != nil || out.V != "x" {
		t.Fatalf("ok: %v %+v", err, out)
	}
	var ae *wechat.APIError
	if err := wechat.PostJSON(t.Context(), srv.Client(), srv.URL+"/err", nil, nil, 1<<10); !errors.As(err, &ae) || ae.Code != 61023 {
		t.Fatalf("errcode answer: %v, want an APIError 61023", err)
	}
	err := wechat.PostJSON(t.Context(), srv.Client(), srv.URL+"/redirect?secret=s3cr3t", nil, nil, 1<<10)
	if err == nil || !strings.Contains(err.Error(), "upstream HTTP 302") || strings.Contains(err.Error(), "s3cr3t") {
		t.Fatalf("redirect: %v, want an HTTP 302 error (not followed) without the secret", err)
	}
	if err := wechat.PostJSON(t.Context(), srv.Client(), "http://127.0.0.1:1/x?access_token=TOKEN123", nil, nil, 1<<10); err == nil || strings.Contains(err.Error(), "TOKEN123") {
		t.Fatalf("dial error %v: want an error without the token", err)
	}
}
