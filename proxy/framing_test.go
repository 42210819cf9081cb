package proxy_test

import (
	"bufio"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/wxproxy/wxproxy/internal/testpki"
)

// The caller port left net/http for fasthttp. These are the heads and
// framings net/http refused that a proxy must refuse too, lest wxproxy and
// a proxy in front of it disagree on where a request ends (request
// smuggling) or what it says. Each is answered 400 (431 for an oversized
// head) in WeChat's shape through the error funnel, reaches no upstream,
// and closes the connection, so nothing after it on the wire is read as a
// request.
func TestSmugglingRefused(t *testing.T) {
	t.Run("http", func(t *testing.T) { testSmugglingRefused(t, nil) })
	// The same hardening holds on the caller port over TLS (tls:).
	ca := testpki.NewCA(t, "test CA")
	leaf := ca.Server(t)
	t.Run("tls", func(t *testing.T) {
		testSmugglingRefused(t, &tls.Config{Certificates: []tls.Certificate{leaf.TLS}, NextProtos: []string{"http/1.1"}, MinVersion: tls.VersionTLS12},
			&tls.Config{RootCAs: ca.Pool(), MinVersion: tls.VersionTLS12})
	})
}

// testSmugglingRefused runs the cases over plain TCP, or over TLS when
// server and client configurations are given.
func testSmugglingRefused(t *testing.T, server *tls.Config, client ...*tls.Config) {
	e := newEnv(t, envOptions{tls: server})
	before := e.sim.Stats().APICalls["/cgi-bin/x"]
	const tail = "GET /cgi-bin/x?smuggled=1 HTTP/1.1\r\nHost: w\r\n\r\n"
	tests := []struct {
		name, req string
		status    int
	}{
		{"CL and TE", "POST /cgi-bin/x HTTP/1.1\r\nHost: w\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + tail, 400},
		{"TE and CL", "POST /cgi-bin/x HTTP/1.1\r\nHost: w\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n" + tail, 400},
		{"duplicate CL", "POST /cgi-bin/x HTTP/1.1\r\nHost: w\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\nabcd" + tail, 400},
		{"conflicting CL", "POST /cgi-bin/x HTTP/1.1\r\nHost: w\r\nContent-Length: 4\r\nContent-Length: 40\r\n\r\nabcd" + tail, 400},
		{"CL list", "POST /cgi-bin/x HTTP/1.1\r\nHost: w\r\nContent-Length: 4, 4\r\n\r\nabcd" + tail, 400},
		{"signed CL", "POST /cgi-bin/x HTTP/1.1\r\nHost: w\r\nContent-Length: +4\r\n\r\nabcd" + tail, 400},
		{"TE not chunked", "POST /cgi-bin/x HTTP/1.1\r\nHost: w\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n" + tail, 400},
		{"TE xchunked", "POST /cgi-bin/x HTTP/1.1\r\nHost: w\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n" + tail, 400},
		{"TE twice", "POST /cgi-bin/x HTTP/1.1\r\nHost: w\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + tail, 400},
		{"TE in HTTP/1.0", "POST /cgi-bin/x HTTP/1.0\r\nHost: w\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + tail, 400},
		{"space before colon", "POST /cgi-bin/x HTTP/1.1\r\nHost: w\r\nContent-Length : 4\r\n\r\nabcd" + tail, 400},
		{"obs-fold", "GET /cgi-bin/x HTTP/1.1\r\nHost: w\r\nX-A: 1\r\n Transfer-Encoding: chunked\r\n\r\n" + tail, 400},
		{"obs-fold tab", "GET /cgi-bin/x HTTP/1.1\r\nHost: w\r\nX-A: 1\r\n\tx\r\n\r\n" + tail, 400},
		{"bad chunk size", "POST /cgi-bin/x HTTP/1.1\r\nHost: w\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabcd\r\n0\r\n\r\n" + tail, 400},
		{"chunk size overflow", "POST /cgi-bin/x HTTP/1.1\r\nHost: w\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\nabcd\r\n0\r\n\r\n" + tail, 400},
		{"chunk without CRLF", "POST /cgi-bin/x HTTP/1.1\r\nHost: w\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcdXX0\r\n\r\n" + tail, 400},
		{"no Host", "GET /cgi-bin/x HTTP/1.1\r\n\r\n" + tail, 400},
		{"two Hosts", "GET /cgi-bin/x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n" + tail, 400},
		{"NUL in header", "GET /cgi-bin/x HTTP/1.1\r\nHost: w\r\nX-A: a\x00b\r\n\r\n" + tail, 400},
		{"absolute-form", "GET http://evil.example/cgi-bin/x HTTP/1.1\r\nHost: w\r\n\r\n" + tail, 400},
		{"authority-form", "CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n" + tail, 400},
		{"asterisk-form", "OPTIONS * HTTP/1.1\r\nHost: w\r\n\r\n" + tail, 400},
		{"oversized head", "GET /cgi-bin/x HTTP/1.1\r\nHost: w\r\nX-Big: " + strings.Repeat("a", 70<<10) + "\r\n\r\n" + tail, 431},
	}
	u, _ := url.Parse(e.url)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var conn net.Conn
			var err error
			if server != nil {
				conn, err = tls.Dial("tcp", u.Host, client[0])
			} else {
				conn, err = net.Dial("tcp", u.Host)
			}
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
			go io.WriteString(conn, tt.req) //nolint:errcheck // the server may close before it is all written
			br := bufio.NewReader(conn)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("no answer: %v", err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.status || resp.Header.Get("X-WXProxy-Error") != "bad_request" || !strings.Contains(string(body), `"errcode":47001`) {
				t.Errorf("got %d %q %s; want %d bad_request 47001", resp.StatusCode, resp.Header.Get("X-WXProxy-Error"), body, tt.status)
			}
			// Nothing after the refused request is served from this connection.
			if resp2, err := http.ReadResponse(br, nil); err == nil {
				resp2.Body.Close()
				t.Errorf("a second answer (%d) on the connection: what followed was read as a request", resp2.StatusCode)
			}
		})
	}
	if after := e.sim.Stats().APICalls["/cgi-bin/x"]; after != before {
		t.Errorf("WeChat saw %d calls for refused requests", after-before)
	}
}

// The head must arrive within read_header_timeout: a caller that sends its
// request line and then trickles headers is cut off.
func TestSlowHeadCut(t *testing.T) {
	e := newEnv(t, envOptions{headerTimeout: 300 * time.Millisecond})
	u, _ := url.Parse(e.url)
	conn, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, _ = io.WriteString(conn, "GET /cgi-bin/x HTTP/1.1\r\nHost: w\r\n")
	_ = conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	start := time.Now()
	_, err = io.ReadAll(conn)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("slow head still connected after %v (read_header_timeout 300 ms)", time.Since(start))
	}
}
