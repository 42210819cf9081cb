package proxy_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/wxproxy/wxproxy/proxy"
	"github.com/wxproxy/wxproxy/token"
)

// staticTokens is a TokenSource holding one valid token.
type staticTokens struct{ t *token.Token }

func (s staticTokens) Current() *token.Token                                    { return s.t }
func (s staticTokens) Get(context.Context) (*token.Token, error)                { return s.t, nil }
func (s staticTokens) Invalidate(context.Context, string) (*token.Token, error) { return s.t, nil }

const okBody = `{"errcode":0,"errmsg":"ok","echo":{"appid":"wx1111111111111111"}}`

// cannedTransport answers every request without a network: what remains
// is the proxy's own cost.
type cannedTransport struct{}

func (cannedTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil {
		io.Copy(io.Discard, r.Body)
		r.Body.Close()
	}
	return &http.Response{
		StatusCode: 200, ProtoMajor: 1, ProtoMinor: 1,
		Header:        http.Header{"Content-Type": {"application/json; encoding=utf-8"}},
		Body:          io.NopCloser(strings.NewReader(okBody)),
		ContentLength: int64(len(okBody)),
		Request:       r,
	}, nil
}

func benchProxy(b *testing.B, transport http.RoundTripper, upstream string) *proxy.Proxy {
	b.Helper()
	return benchProxyLog(b, transport, upstream, false)
}

func benchProxyLog(b *testing.B, transport http.RoundTripper, upstream string, logging bool) *proxy.Proxy {
	b.Helper()
	level := slog.LevelWarn // access lines are Info
	if logging {
		level = slog.LevelInfo
	}
	logger := slog.New(slog.NewJSONHandler(io.Discard, &slog.HandlerOptions{Level: level}))
	up, _ := url.Parse(upstream)
	tok := &token.Token{Value: strings.Repeat("T", 136), ObtainedAt: time.Now(), ExpiresAt: time.Now().Add(time.Hour)}
	p, err := proxy.New(proxy.Options{
		Apps:       []*proxy.App{{Name: "main", Kind: proxy.KindOfficial, AppID: "wx1111111111111111", Secret: "s", Upstream: up, Tokens: staticTokens{tok}}},
		Transport:  transport,
		DefaultApp: "main",
		Logger:     logger,
	})
	if err != nil {
		b.Fatal(err)
	}
	return p
}

// reusedTransport answers from one response it resets each time, so the
// benchmark counts no allocations of its own. Not for concurrent use.
type reusedTransport struct {
	resp http.Response
	body strings.Reader
}

func (t *reusedTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	t.body.Reset(okBody)
	t.resp = http.Response{StatusCode: 200, ProtoMajor: 1, ProtoMinor: 1, Header: t.resp.Header,
		Body: io.NopCloser(&t.body), ContentLength: int64(len(okBody)), Request: r}
	return &t.resp, nil
}

// reusedWriter is a ResponseWriter reused across iterations.
type reusedWriter struct {
	h    http.Header
	code int
}

func (w *reusedWriter) Header() http.Header         { return w.h }
func (w *reusedWriter) WriteHeader(code int)        { w.code = code }
func (w *reusedWriter) Write(p []byte) (int, error) { return len(p), nil }

// BenchmarkProxyHandler: one request through the whole proxy (routing,
// injection, ReverseProxy, retry transport, errcode scan, response copy)
// with an allocation-free upstream and writer: every allocation counted is
// the proxy's (including httputil.ReverseProxy's own).
func BenchmarkProxyHandler(b *testing.B) {
	for _, logging := range []bool{false, true} {
		name := "access-log-off"
		if logging {
			name = "access-log-on"
		}
		b.Run(name, func(b *testing.B) {
			tr := &reusedTransport{resp: http.Response{Header: http.Header{"Content-Type": {"application/json; encoding=utf-8"}}}}
			p := benchProxyLog(b, tr, "http://upstream.invalid", logging)
			req := httptest.NewRequest("GET", "/cgi-bin/user/info?openid=o1&lang=zh_CN", nil)
			req.RemoteAddr = "127.0.0.1:1234"
			w := &reusedWriter{h: http.Header{}}
			b.ReportAllocs()
			for b.Loop() {
				clear(w.h)
				p.ServeHTTP(w, req)
				if w.code != 200 {
					b.Fatal(w.code)
				}
			}
		})
	}
}

// BenchmarkProxyPOST: the same with a JSON body (buffered for replay).
func BenchmarkProxyPOST(b *testing.B) {
	p := benchProxy(b, cannedTransport{}, "http://upstream.invalid")
	body := []byte(`{"touser":"o1","msgtype":"text","text":{"content":"hello"}}`)
	b.ReportAllocs()
	for b.Loop() {
		req := httptest.NewRequest("POST", "/cgi-bin/message/custom/send", bytes.NewReader(body))
		w := httptest.NewRecorder()
		p.ServeHTTP(w, req)
		if w.Code != 200 {
			b.Fatal(w.Code)
		}
	}
}

// BenchmarkProxyEndToEnd: a client → proxy → upstream, all over loopback
// HTTP with httptest servers; allocations of all three are counted.
func BenchmarkProxyEndToEnd(b *testing.B) {
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json; encoding=utf-8")
		io.WriteString(w, okBody)
	}))
	defer upstream.Close()
	tr, err := proxy.NewTransport(proxy.TransportOptions{Timeout: 10 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	p := benchProxy(b, tr, upstream.URL)
	front := httptest.NewServer(p)
	defer front.Close()
	client := front.Client()
	url := front.URL + "/cgi-bin/user/info?openid=o1"
	b.ReportAllocs()
	for b.Loop() {
		resp, err := client.Get(url)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}
