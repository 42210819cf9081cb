package proxy

import (
	"bytes"
	"context"
	"crypto/tls"
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

	"github.com/wxproxy/wxproxy/failover"
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
	// TLS, if set, is the base TLS configuration of https upstreams (for
	// example a test CA in RootCAs), for NewClient and NewTransport;
	// default: the system roots.
	TLS *tls.Config
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
	dialer := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	t := &http.Transport{
		Proxy: nil, // explicit: no HTTP_PROXY from the environment
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := dialer.DialContext(ctx, network, addr)
			if err != nil {
				return nil, &failover.DialError{Err: err} // nothing sent: a fetch may fail over
			}
			return c, nil
		},
		ForceAttemptHTTP2:      true,
		MaxIdleConns:           64,
		MaxIdleConnsPerHost:    16,
		IdleConnTimeout:        90 * time.Second,
		TLSHandshakeTimeout:    5 * time.Second,
		ResponseHeaderTimeout:  o.Timeout,
		MaxResponseHeaderBytes: 64 << 10,
	}
	if o.TLS != nil {
		t.TLSClientConfig = o.TLS.Clone()
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
	useTLS := u.Scheme == "https"
	addr := u.Host
	if u.Port() == "" {
		if useTLS {
			addr += ":443"
		} else {
			addr += ":80"
		}
	}
	up := &upstream{scheme: u.Scheme, host: u.Host, base: strings.TrimSuffix(u.Path, "/")}
	dial := c.opts.Dial
	switch {
	case dial != nil:
	case c.proxy != nil && useTLS:
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
		Addr: addr,
		// TLS is done in Dial, below fasthttp, so that upConn sees the
		// answer's head in plain text (see rawHead).
		IsTLS: false,
		Dial: func(addr string) (net.Conn, error) {
			conn, err := dial(addr)
			if err != nil {
				// Nothing of the request was sent: failover may try the
				// next upstream whatever the method.
				return nil, &failover.DialError{Err: err}
			}
			if useTLS {
				cfg := &tls.Config{MinVersion: tls.VersionTLS12}
				if c.opts.TLS != nil {
					cfg = c.opts.TLS.Clone()
				}
				cfg.ServerName = u.Hostname()
				tc := tls.Client(conn, cfg)
				_ = tc.SetDeadline(time.Now().Add(5 * time.Second))
				if err := tc.Handshake(); err != nil {
					conn.Close()
					return nil, &failover.DialError{Err: err}
				}
				_ = tc.SetDeadline(time.Time{})
				conn = tc
			}
			uc := &upConn{Conn: conn}
			uc.addr = connAddr{Addr: conn.LocalAddr(), c: uc}
			return uc, nil
		},
		MaxConns: maxUpstreamConns,
		// A request finding every connection busy waits this long for one,
		// then gets 503 upstream_busy (never a breaker failure).
		MaxConnWaitTimeout:  c.opts.Timeout,
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

// maxUpstreamConns bounds the connections to one upstream, and
// maxStreamingUploads how many of them requests whose body still streams
// from the caller may hold at once: a caller trickling many large uploads
// can take at most a quarter of the pool, never all of it.
const (
	maxUpstreamConns    = 1024
	maxStreamingUploads = maxUpstreamConns / 4
)

var errUpstreamBusy = &Error{Kind: KindUpstreamBusy, Msg: "wxproxy's connections to WeChat are all busy; retry after Retry-After seconds", RetryAfter: time.Second}

// retryStale allows one retry of a GET or HEAD whose pooled connection
// the upstream had closed before answering anything (as net/http retries
// a request on a dead keep-alive connection). A timeout, or anything else
// after which WeChat may have acted, is never retried.
func retryStale(req *fasthttp.Request, attempts int, err error) (bool, bool) {
	stale := errors.Is(err, io.EOF) || errors.Is(err, fasthttp.ErrConnectionClosed)
	// A body that streams from the caller cannot be sent twice.
	return false, stale && attempts < 2 && (req.Header.IsGet() || req.Header.IsHead()) && !req.IsBodyStream()
}

// upConn is an upstream connection that can be found again from an answer
// (Response.LocalAddr returns its connAddr), so the read deadline of the
// errcode peek can be lifted on it, and that keeps the raw head of the
// answer being read: fasthttp keeps only the last of repeated
// Content-Type and Content-Encoding lines, which the scrubber's decisions
// rest on (see checkRawHead).
type upConn struct {
	net.Conn
	addr connAddr

	head     []byte // the raw head of the current answer, up to maxRawHead
	headDone bool   // head holds the whole head (or maxRawHead bytes)
	wrote    bool   // a request was written since the last read
}

const maxRawHead = 64 << 10

// Write marks the start of an exchange: the next bytes read begin an
// answer (fasthttp's HostClient never pipelines).
func (c *upConn) Write(b []byte) (int, error) {
	c.wrote = true
	return c.Conn.Write(b)
}

func (c *upConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if c.wrote {
		c.wrote, c.head, c.headDone = false, c.head[:0], false
	}
	if !c.headDone && n > 0 {
		from := max(0, len(c.head)-3)
		c.head = append(c.head, b[:min(n, maxRawHead-len(c.head))]...)
		if bytes.Contains(c.head[from:], []byte("\r\n\r\n")) || len(c.head) >= maxRawHead {
			c.headDone = true
		}
	}
	return n, err
}

// checkRawHead refuses an answer whose raw head repeats Content-Type or
// Content-Encoding, or has an empty Content-Encoding: fasthttp keeps only
// the last such line, so the one the proxy reads may not be the one a
// caller's client acts on (media passes unscanned; an encoding hides bytes
// from the scrubber).
func checkRawHead(resp *fasthttp.Response) error {
	ca, ok := resp.LocalAddr().(*connAddr)
	if !ok {
		return nil
	}
	head := ca.c.head
	if i := bytes.Index(head, []byte("\r\n\r\n")); i >= 0 {
		head = head[:i]
	}
	ct, ce := 0, 0
	for line := range bytes.SplitSeq(head, []byte("\n")) {
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		switch {
		case bytes.EqualFold(bytes.TrimSpace(name), []byte("Content-Type")):
			ct++
		case bytes.EqualFold(bytes.TrimSpace(name), []byte("Content-Encoding")):
			ce++
			if len(bytes.TrimSpace(value)) == 0 {
				ce += 2
			}
		}
	}
	if ct > 1 || ce > 1 {
		return &Error{Kind: KindUpstream, Msg: "WeChat's answer repeats Content-Type or Content-Encoding; wxproxy cannot tell what it is"}
	}
	return nil
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
// business errcodes and everything the caller did are not. With failover
// upstreams the call goes to the first one that is up (exchangeFailover),
// and the app's breaker counts a failure only when none is left up.
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
	var (
		ans *answer
		err error
	)
	if app.failover == nil {
		ans, err = p.exchange(r, app.up)
	} else {
		ans, err = p.exchangeFailover(r)
	}
	if done != nil {
		switch o := outcome(r, ans, err); {
		case o == failover.Success:
			done(nil)
		case o == failover.Failure && (app.failover == nil || !app.failover.AnyUp()):
			done(errFailure)
		default:
			// A bad body from the caller says nothing about WeChat; with
			// failover, neither does one upstream's failure while another
			// is up.
			done(context.Canceled)
		}
		app.Breaker.Settle()
	}
	if err != nil {
		return nil, err
	}
	if r.hasCode && r.errcode != wechat.CodeOK {
		if p.metrics != nil {
			p.metrics.observeErrcode(app.Name, r.api, r.errcode)
		}
		if app.Quotas != nil && wechat.IsQuotaError(r.errcode) {
			if oerr := app.Quotas.Observe(context.Background(), r.api, r.errcode); oerr != nil {
				p.log.Warn("quota store failed", "app", app.Name, "err", oerr)
			}
		}
	}
	return ans, nil
}

// outcome classifies one exchange as the breakers count it.
func outcome(r *request, ans *answer, err error) failover.Outcome {
	var pe *Error
	switch {
	case errors.As(err, &pe) && (pe.callersFault() || pe.Kind == KindUpstreamBusy):
		return failover.Neutral
	case err != nil, ans.resp.StatusCode() >= 500, r.hasCode && r.errcode == wechat.CodeSystemError:
		return failover.Failure
	}
	return failover.Success
}

var errAllDown = &Error{Kind: KindCircuitOpen, Msg: "every upstream of this app is down; retry after Retry-After seconds", RetryAfter: time.Second}

// exchangeFailover sends the request to the first upstream that is up. A
// request that could not connect (nothing was sent) goes at once to the
// next upstream, whatever its method; one that may have reached WeChat is
// never sent again.
func (p *Proxy) exchangeFailover(r *request) (*answer, error) {
	set, prev := r.app.failover, 0
	var last error
	for from := 0; ; {
		i, probe, ok := set.Next(from)
		if !ok {
			if last != nil {
				return nil, last
			}
			return nil, errAllDown
		}
		if i != prev && p.metrics != nil {
			p.metrics.Failover(r.app.Name, set.URL(prev), set.URL(i))
		}
		r.hasCode = false
		ans, err := p.exchange(r, r.app.ups[i])
		set.Report(i, probe, outcome(r, ans, err))
		if err == nil || !failover.NotSent(err) {
			return ans, err
		}
		last, prev, from = err, i, i+1
	}
}

// exchange makes one round trip to up and inspects the answer. Its errors
// are the funnel's: the caller's body fault, a busy pool, a timeout or an
// unreachable upstream (which still satisfies failover.NotSent when the
// connection was never made).
func (p *Proxy) exchange(r *request, up *upstream) (*answer, error) {
	req := fasthttp.AcquireRequest()
	if !r.body.replay {
		select {
		case p.uploads <- struct{}{}:
		default:
			fasthttp.ReleaseRequest(req)
			return nil, errUpstreamBusy
		}
	}
	p.buildRequest(r, req, up)
	resp := fasthttp.AcquireResponse()
	start := time.Now()
	err := up.hc.Do(req, resp)
	fasthttp.ReleaseRequest(req)
	if !r.body.replay {
		<-p.uploads // the body has been sent
	}
	if errors.Is(err, fasthttp.ErrNoFreeConns) {
		err = errUpstreamBusy
	}
	var ans *answer
	if err == nil {
		err = checkRawHead(resp)
	}
	if err == nil {
		ans, err = p.inspect(r, resp)
	}
	if p.metrics != nil {
		p.metrics.observeUpstream(r.app.Name, time.Since(start))
	}
	if err != nil {
		fasthttp.ReleaseResponse(resp)
		if cf := r.callerFault(); cf != nil {
			err = cf // the caller's body failed, not WeChat
		} else if !errors.Is(err, errPeekTimeout) && !errors.Is(err, errUpstreamBusy) {
			err = upstreamError(err)
		}
	}
	return ans, err
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
