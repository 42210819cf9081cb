package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpproxy"

	"github.com/wxproxy/wxproxy/wechat"
)

// TransportOptions configures the upstream client (NewClient) and the
// token fetches' transport (NewTransport).
type TransportOptions struct {
	// Timeout bounds the wait for WeChat's answer headers (a long media
	// download is not cut off). Default 10 s.
	Timeout time.Duration
	// Proxy, if set, is the HTTP proxy (http://host:port) all upstream
	// traffic goes through: CONNECT for https upstreams, absolute-form
	// requests for http ones. Proxy environment variables (HTTP_PROXY,
	// ...) are never used: an egress route is a decision, not an accident
	// of the environment.
	Proxy string
	// Dial, if set, opens every upstream connection of NewClient instead
	// of a TCP dial to the upstream (or the proxy); for tests.
	Dial func(addr string) (net.Conn, error)
}

func (o *TransportOptions) proxyURL() (*url.URL, error) {
	if o.Proxy == "" {
		return nil, nil
	}
	u, err := url.Parse(o.Proxy)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, errors.New("proxy: upstream_proxy must be an http:// or https:// URL with a host")
	}
	return u, nil
}

// NewTransport returns a net/http transport for the token fetches (rare
// calls that stay on net/http): keep-alive, no redirects followed (no
// http.RoundTripper follows them), no proxy from the environment.
func NewTransport(o TransportOptions) (*http.Transport, error) {
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	t := &http.Transport{
		Proxy:                  nil, // explicit: no HTTP_PROXY from the environment
		DialContext:            (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		ForceAttemptHTTP2:      true,
		MaxIdleConns:           64,
		MaxIdleConnsPerHost:    16,
		IdleConnTimeout:        90 * time.Second,
		TLSHandshakeTimeout:    5 * time.Second,
		ResponseHeaderTimeout:  o.Timeout,
		MaxResponseHeaderBytes: 64 << 10,
	}
	u, err := o.proxyURL()
	if err != nil {
		return nil, err
	}
	if u != nil {
		t.Proxy = http.ProxyURL(u)
	}
	return t, nil
}

// Client is the upstream client of the caller port: one
// fasthttp.HostClient (a keep-alive pool) per upstream origin, made on
// first use. It never follows redirects, never asks for a compressed
// answer, and streams answer bodies. Client is safe for concurrent use.
type Client struct {
	opts  TransportOptions
	proxy *url.URL

	mu    sync.Mutex
	hosts map[string]*upstream
}

// NewClient returns an upstream client.
func NewClient(o TransportOptions) (*Client, error) {
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	u, err := o.proxyURL()
	if err != nil {
		return nil, err
	}
	return &Client{opts: o, proxy: u, hosts: map[string]*upstream{}}, nil
}

// upstream is one upstream origin and its connection pool.
type upstream struct {
	hc       *fasthttp.HostClient
	scheme   string
	host     string // Host header and URI host
	base     string // the upstream URL's path, without a trailing "/"
	absolute bool   // an http upstream through upstream_proxy: absolute-form targets
}

func (c *Client) upstream(u *url.URL) (*upstream, error) {
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return nil, errors.New("upstream must be an http:// or https:// URL with a host")
	}
	key := u.Scheme + "://" + u.Host
	c.mu.Lock()
	defer c.mu.Unlock()
	if up := c.hosts[key]; up != nil {
		return &upstream{hc: up.hc, scheme: up.scheme, host: up.host, base: strings.TrimSuffix(u.Path, "/"), absolute: up.absolute}, nil
	}
	tls := u.Scheme == "https"
	addr := u.Host
	if u.Port() == "" {
		if tls {
			addr += ":443"
		} else {
			addr += ":80"
		}
	}
	up := &upstream{scheme: u.Scheme, host: u.Host, base: strings.TrimSuffix(u.Path, "/")}
	dial := c.opts.Dial
	switch {
	case dial != nil:
	case c.proxy != nil && tls:
		dial = fasthttpproxy.FasthttpHTTPDialerTimeout(c.proxy.String(), 5*time.Second)
	case c.proxy != nil:
		// A plain-http upstream is asked through the proxy in
		// absolute-form, as an HTTP proxy expects.
		up.absolute = true
		proxyAddr := c.proxy.Host
		if c.proxy.Port() == "" {
			proxyAddr += ":80"
		}
		dial = func(string) (net.Conn, error) { return fasthttp.DialTimeout(proxyAddr, 5*time.Second) }
	default:
		dial = func(addr string) (net.Conn, error) { return fasthttp.DialTimeout(addr, 5*time.Second) }
	}
	up.hc = &fasthttp.HostClient{
		Addr:  addr,
		IsTLS: tls,
		Dial: func(addr string) (net.Conn, error) {
			conn, err := dial(addr)
			if err != nil {
				return nil, err
			}
			uc := &upConn{Conn: conn}
			uc.addr = connAddr{Addr: conn.LocalAddr(), c: uc}
			return uc, nil
		},
		MaxConns:            1024,
		MaxIdleConnDuration: 60 * time.Second,
		// ReadTimeout bounds the answer's headers, counted from the end of
		// the request: time the caller spends sending its body is not
		// WeChat's. inspect re-arms it for the errcode peek and then lifts
		// it, so a long media answer streams without a bound.
		ReadTimeout:               c.opts.Timeout,
		StreamResponseBody:        true,
		DisablePathNormalizing:    true, // the path is cleaned and escaped by the proxy
		NoDefaultUserAgentHeader:  true,
		MaxIdemponentCallAttempts: 2,
		RetryIfErr:                retryStale,
		MaxResponseBodySize:       0,
		ReadBufferSize:            64 << 10, // bounds the answer's headers
		SecureErrorLogMessage:     true,
	}
	c.hosts[key] = up
	return up, nil
}

// retryStale allows one retry of a GET or HEAD whose pooled connection
// the upstream had closed before answering anything (as net/http retries
// a request on a dead keep-alive connection). A timeout, or anything else
// after which WeChat may have acted, is never retried.
func retryStale(req *fasthttp.Request, attempts int, err error) (bool, bool) {
	stale := errors.Is(err, io.EOF) || errors.Is(err, fasthttp.ErrConnectionClosed)
	return false, stale && attempts < 2 && (req.Header.IsGet() || req.Header.IsHead())
}

// upConn is an upstream connection that can be found again from an answer
// (Response.LocalAddr returns its connAddr), so the read deadline of the
// errcode peek can be armed and lifted on it.
type upConn struct {
	net.Conn
	addr connAddr
}

func (c *upConn) LocalAddr() net.Addr { return &c.addr }

type connAddr struct {
	net.Addr
	c *upConn
}

// setReadDeadline sets the read deadline of the connection resp arrived on.
func setReadDeadline(resp *fasthttp.Response, t time.Time) {
	if ca, ok := resp.LocalAddr().(*connAddr); ok {
		_ = ca.c.SetReadDeadline(t)
	}
}

// attempt makes one upstream call through the app's breaker, inspects the
// answer's errcode, and reports the outcome to the breaker, the quotas and
// the metrics. Transport errors, HTTP 5xx and errcode -1 are failures;
// business errcodes and everything the caller did are not.
func (p *Proxy) attempt(r *request) (*answer, error) {
	app := r.app
	var done func(error)
	if app.Breaker != nil {
		// A half-open breaker lets a few probes through. One whose body
		// still streams from the caller could hold a probe for as long as
		// the caller likes, keeping the breaker from closing for everyone:
		// only requests whose body is in hand may probe.
		if !r.body.replay && app.Breaker.halfOpen() {
			return nil, &Error{Kind: KindCircuitOpen, Msg: "WeChat is recovering for app " + app.Name + "; large uploads wait until it has, retry after Retry-After seconds", RetryAfter: time.Second}
		}
		var err error
		if done, err = app.Breaker.Allow(); err != nil {
			return nil, &Error{Kind: KindCircuitOpen, Msg: "WeChat is failing for app " + app.Name + "; calls are paused, retry after Retry-After seconds", RetryAfter: app.Breaker.RetryAfter(), Err: err}
		}
	}
	req := fasthttp.AcquireRequest()
	p.buildRequest(r, req)
	resp := fasthttp.AcquireResponse()
	start := time.Now()
	err := app.up.hc.Do(req, resp)
	fasthttp.ReleaseRequest(req)
	var ans *answer
	if err == nil {
		// The peek's deadline starts with the answer's headers.
		ans, err = p.inspect(r, resp)
	}
	if p.metrics != nil {
		p.metrics.observeUpstream(app.Name, time.Since(start))
	}
	if err != nil {
		fasthttp.ReleaseResponse(resp)
		if cf := r.callerFault(); cf != nil {
			err = cf // the caller's body failed, not WeChat
		} else if !errors.Is(err, errPeekTimeout) {
			err = upstreamError(err)
		}
	}
	if done != nil {
		var pe *Error
		switch {
		case errors.As(err, &pe) && pe.callersFault():
			done(context.Canceled) // a bad body from the caller; says nothing about WeChat
		case err != nil, ans.resp.StatusCode() >= 500, r.hasCode && r.errcode == wechat.CodeSystemError:
			done(errFailure)
		default:
			done(nil)
		}
		app.Breaker.Settle()
	}
	if err != nil {
		return nil, err
	}
	if r.hasCode && r.errcode != wechat.CodeOK {
		if p.metrics != nil {
			p.metrics.observeErrcode(app.Name, r.path, r.errcode)
		}
		if app.Quotas != nil && wechat.IsQuotaError(r.errcode) {
			if oerr := app.Quotas.Observe(context.Background(), r.path, r.errcode); oerr != nil {
				p.log.Warn("quota store failed", "app", app.Name, "err", oerr)
			}
		}
	}
	return ans, nil
}

// upstreamError names a failed round trip for the funnel: 504 for a
// timeout, else 502.
func upstreamError(err error) error {
	var te interface{ Timeout() bool }
	if errors.As(err, &te) && te.Timeout() {
		return &Error{Kind: KindUpstreamTimeout, Msg: "WeChat did not answer within upstream_timeout; retry later", Err: err}
	}
	return &Error{Kind: KindUpstream, Msg: "WeChat is unreachable; retry later", Err: err}
}
