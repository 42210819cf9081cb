package proxy

import (
	"bufio"
	"context"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/wxproxy/wxproxy/token"
)

type benchTokens struct{ t *token.Token }

func (s benchTokens) Current() *token.Token                                    { return s.t }
func (s benchTokens) Get(context.Context) (*token.Token, error)                { return s.t, nil }
func (s benchTokens) Invalidate(context.Context, string) (*token.Token, error) { return s.t, nil }

// stageEnv is a proxy and a request as the wire would have given it, for
// the per-stage benchmarks.
func stageEnv(b *testing.B) (*Proxy, *request) {
	b.Helper()
	up, _ := url.Parse("http://upstream.invalid")
	tok := &token.Token{Value: strings.Repeat("T", 136), ObtainedAt: time.Now(), ExpiresAt: time.Now().Add(time.Hour)}
	p, err := New(Options{Apps: []*App{{Name: "main", AppID: "wx1111111111111111", Secret: "s", Upstream: up, Tokens: benchTokens{tok}}},
		DefaultApp: "main", Access: Access{Keys: []CallerKey{{Name: "k", Key: "caller-key-0123456789"}}}})
	if err != nil {
		b.Fatal(err)
	}
	p.HoldToken("main", tok.Value)
	var ctx fasthttp.RequestCtx
	var req fasthttp.Request
	raw := "GET /main/cgi-bin/user/info?openid=o1&lang=zh_CN HTTP/1.1\r\nHost: wxproxy\r\nUser-Agent: sdk/1.0\r\nX-WXProxy-Key: caller-key-0123456789\r\nAccept: */*\r\n\r\n"
	if err := req.Read(bufio.NewReader(strings.NewReader(raw))); err != nil {
		b.Fatal(err)
	}
	ctx.Init(&req, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}, nil)
	return p, &request{ctx: &ctx, token: tok.Value}
}

// BenchmarkStage runs each stage of the request path alone.
func BenchmarkStage(b *testing.B) {
	p, r := stageEnv(b)
	h := &r.ctx.Request.Header
	b.Run("hygiene", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := checkFraming(h); err != nil {
				b.Fatal(err)
			}
			if _, err := cleanTarget(h); err != nil {
				b.Fatal(err)
			}
		}
	})
	t, _ := cleanTarget(h)
	b.Run("access", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := p.access.Load().admit(r.ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("route", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			r.path, r.api = t.path, apiKey(t.path)
			if app, err := p.route(r.ctx, r); err != nil || app == nil {
				b.Fatal(err)
			}
		}
	})
	r.app, r.query = p.apps["main"], t.query
	r.body.replay = true
	b.Run("inject", func(b *testing.B) {
		req := fasthttp.AcquireRequest()
		b.ReportAllocs()
		for b.Loop() {
			req.Reset()
			p.buildRequest(r, req, r.app.up)
		}
	})
	resp := fasthttp.AcquireResponse()
	resp.Header.SetContentType(jsonContentType)
	body := []byte(`{"errcode":0,"errmsg":"ok","echo":{"appid":"wx1111111111111111"}}`)
	resp.SetBody(body)
	b.Run("inspect", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := p.inspect(r, resp); err != nil || !r.hasCode {
				b.Fatal(err)
			}
		}
	})
	// scrub includes copying a canned answer, which sendAnswer releases.
	b.Run("scrub", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			r.ctx.Response.Reset()
			up := fasthttp.AcquireResponse()
			resp.CopyTo(up)
			if _, err := p.sendAnswer(r, &answer{resp: up, whole: up.Body()}); err != nil {
				b.Fatal(err)
			}
		}
	})
}
