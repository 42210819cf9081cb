package proxy_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"

	"github.com/wxproxy/wxproxy/proxy"
	"github.com/wxproxy/wxproxy/token"
)

// staticTokens is a TokenSource holding one valid token.
type staticTokens struct{ t *token.Token }

func (s staticTokens) Current() *token.Token                                    { return s.t }
func (s staticTokens) Get(context.Context) (*token.Token, error)                { return s.t, nil }
func (s staticTokens) Invalidate(context.Context, string) (*token.Token, error) { return s.t, nil }

const okBody = `{"errcode":0,"errmsg":"ok","echo":{"appid":"wx1111111111111111"}}`

func benchProxyLog(b *testing.B, client *proxy.Client, upstream string, logging bool) *proxy.Proxy {
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
		Transport:  client,
		DefaultApp: "main",
		Logger:     logger,
	})
	if err != nil {
		b.Fatal(err)
	}
	return p
}

// memUpstream is a fasthttp upstream on an in-memory listener answering
// okBody, and a client that dials it: no sockets, no syscalls.
func memUpstream(b *testing.B) *proxy.Client {
	b.Helper()
	ln := fasthttputil.NewInmemoryListener()
	body := []byte(okBody)
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("application/json; encoding=utf-8")
		ctx.SetBody(body)
	}, NoDefaultServerHeader: true, NoDefaultDate: true}
	go srv.Serve(ln) //nolint:errcheck
	b.Cleanup(func() { _ = srv.Shutdown() })
	c, err := proxy.NewClient(proxy.TransportOptions{Dial: func(string) (net.Conn, error) { return ln.Dial() }})
	if err != nil {
		b.Fatal(err)
	}
	return c
}

// BenchmarkProxyHandler: one request through the whole proxy handler (all
// the stages, the upstream round trip over an in-memory connection, the
// answer written into a reused RequestCtx). The in-memory upstream server
// runs in the same process, so its allocations are counted too (fasthttp
// allocates none per request once warm).
func BenchmarkProxyHandler(b *testing.B) {
	for _, logging := range []bool{false, true} {
		name := "access-log-off"
		if logging {
			name = "access-log-on"
		}
		b.Run(name, func(b *testing.B) {
			p := benchProxyLog(b, memUpstream(b), "http://upstream.invalid", logging)
			h := p.Handler()
			var req fasthttp.Request
			req.Header.SetMethod("GET")
			req.SetRequestURI("/cgi-bin/user/info?openid=o1&lang=zh_CN")
			req.Header.SetHost("wxproxy")
			var ctx fasthttp.RequestCtx
			ctx.Init(&req, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1234}, nil)
			b.ReportAllocs()
			for b.Loop() {
				ctx.Response.Reset()
				h(&ctx)
				if ctx.Response.StatusCode() != 200 {
					b.Fatal(ctx.Response.StatusCode(), string(ctx.Response.Body()))
				}
			}
		})
	}
}

// BenchmarkProxyPOST: the same with a JSON body (buffered for replay).
func BenchmarkProxyPOST(b *testing.B) {
	p := benchProxyLog(b, memUpstream(b), "http://upstream.invalid", false)
	h := p.Handler()
	body := []byte(`{"touser":"o1","msgtype":"text","text":{"content":"hello"}}`)
	var req fasthttp.Request
	req.Header.SetMethod("POST")
	req.SetRequestURI("/cgi-bin/message/custom/send")
	req.Header.SetHost("wxproxy")
	req.SetBody(body)
	var ctx fasthttp.RequestCtx
	ctx.Init(&req, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1234}, nil)
	b.ReportAllocs()
	for b.Loop() {
		ctx.Response.Reset()
		h(&ctx)
		if ctx.Response.StatusCode() != 200 {
			b.Fatal(ctx.Response.StatusCode())
		}
	}
}

// BenchmarkProxyEndToEnd: a client → proxy → upstream, all over loopback
// HTTP; the client and the upstream are the same net/http ones as before
// the engine moved to fasthttp, so the numbers compare. Allocations of all
// three are counted.
func BenchmarkProxyEndToEnd(b *testing.B) {
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json; encoding=utf-8")
		io.WriteString(w, okBody)
	}))
	defer upstream.Close()
	client, err := proxy.NewClient(proxy.TransportOptions{Timeout: 10 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	p := benchProxyLog(b, client, upstream.URL, false)
	front := serve(b, p)
	url := front + "/cgi-bin/user/info?openid=o1"
	hc := &http.Client{}
	b.ReportAllocs()
	for b.Loop() {
		resp, err := hc.Get(url)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}
