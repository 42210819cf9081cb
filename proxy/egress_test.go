package proxy_test

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"

	"github.com/wxproxy/wxproxy/proxy"
	"github.com/wxproxy/wxproxy/token"
	"github.com/wxproxy/wxproxy/wechatsim"
)

// forwardProxy is an HTTP forward proxy on loopback: CONNECT tunnels and
// absolute-form requests. It records what it was asked for.
type forwardProxy struct {
	*httptest.Server
	mu       sync.Mutex
	connects []string // CONNECT authorities
	plain    []string // absolute-form targets
}

func startForwardProxy(tb testing.TB) *forwardProxy {
	tb.Helper()
	fp := &forwardProxy{}
	fp.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodConnect {
			host, _, _ := net.SplitHostPort(r.Host)
			if host != "127.0.0.1" {
				http.Error(w, "loopback only", http.StatusForbidden)
				return
			}
			fp.mu.Lock()
			fp.connects = append(fp.connects, r.Host)
			fp.mu.Unlock()
			up, err := net.Dial("tcp", r.Host)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadGateway)
				return
			}
			conn, brw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				up.Close()
				return
			}
			_, _ = conn.Write([]byte("HTTP/1.1 200 Connection established\r\n\r\n"))
			go func() { _, _ = io.Copy(up, brw); up.Close() }()
			_, _ = io.Copy(conn, up)
			conn.Close()
			return
		}
		fp.mu.Lock()
		fp.plain = append(fp.plain, r.URL.String())
		fp.mu.Unlock()
		out, _ := http.NewRequestWithContext(r.Context(), r.Method, r.URL.String(), r.Body)
		out.Header = r.Header.Clone()
		resp, err := http.DefaultTransport.RoundTrip(out)
		if err != nil {
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		_, _ = io.Copy(w, resp.Body)
	}))
	tb.Cleanup(fp.Close)
	return fp
}

func (fp *forwardProxy) seen() (connects, plain int) {
	fp.mu.Lock()
	defer fp.mu.Unlock()
	return len(fp.connects), len(fp.plain)
}

// TestEgressProxyCONNECT: with upstream_proxy and an https upstream, both
// the token fetch and the data plane tunnel through the proxy (CONNECT);
// nothing reaches the upstream directly.
func TestEgressProxyCONNECT(t *testing.T) {
	sim, err := wechatsim.New(wechatsim.Options{Apps: []wechatsim.App{{AppID: mainAppID, Secret: mainSecret}}})
	if err != nil {
		t.Fatal(err)
	}
	var direct sync.Map // remote addresses that reached the upstream
	up := httptest.NewUnstartedServer(sim)
	up.Config.ConnState = func(c net.Conn, s http.ConnState) {
		if s == http.StateNew {
			direct.Store(c.RemoteAddr().String(), true)
		}
	}
	up.StartTLS()
	defer up.Close()
	roots := x509.NewCertPool()
	roots.AddCert(up.Certificate())
	fp := startForwardProxy(t)
	opts := proxy.TransportOptions{Proxy: fp.URL, TLS: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}}
	client, err := proxy.NewClient(opts)
	if err != nil {
		t.Fatal(err)
	}
	transport, err := proxy.NewTransport(opts)
	if err != nil {
		t.Fatal(err)
	}
	cache, err := token.New(token.Options{App: "main", Mode: token.Stable, OnInstall: func(string) {},
		Fetcher: &token.HTTPFetcher{Mode: token.Stable, Upstream: up.URL, AppID: mainAppID, Secret: mainSecret,
			Client: &http.Client{Transport: transport}}})
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(up.URL)
	p, err := proxy.New(proxy.Options{Apps: []*proxy.App{{Name: "main", Kind: proxy.KindOfficial, AppID: mainAppID, Secret: mainSecret,
		Upstream: u, Tokens: cache}}, DefaultApp: "main", Transport: client})
	if err != nil {
		t.Fatal(err)
	}
	base := serve(t, p)
	resp, err := http.Post(base+"/cgi-bin/message/custom/send", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || sim.Stats().APICalls["/cgi-bin/message/custom/send"] != 1 {
		t.Fatalf("through the egress proxy: HTTP %d %s", resp.StatusCode, b)
	}
	connects, plain := fp.seen()
	if connects < 2 || plain != 0 {
		t.Errorf("proxy saw %d CONNECTs and %d plain requests; want one tunnel for the token fetch and one for the data plane", connects, plain)
	}
	// Every connection the upstream accepted came from the proxy's
	// tunnels (they dial from loopback too, so count them instead).
	n := 0
	direct.Range(func(any, any) bool { n++; return true })
	if n != connects {
		t.Errorf("upstream accepted %d connections, the proxy tunnelled %d: something bypassed upstream_proxy", n, connects)
	}
}
