package redistest

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/wxproxy/wxproxy/internal/testpki"
)

// TLSServer is a redis-server that speaks only TLS, with a certificate for
// 127.0.0.1 and ServerName, signed by a CA made for the test.
type TLSServer struct {
	*Server
	CAFile     string // PEM of the CA
	ServerName string // a DNS name in the certificate (not resolvable)
}

// TLSServerName is the DNS name in a TLSServer's certificate.
const TLSServerName = "redis.wxproxy.test"

// StartTLS starts a TLS-only redis-server (Debian's redis-server is built
// with TLS). URL is rediss://127.0.0.1:PORT/0.
func StartTLS(tb testing.TB) *TLSServer {
	tb.Helper()
	need(tb)
	dir := tb.TempDir()
	caPEM, certPEM, keyPEM := makeCerts(tb)
	files := map[string][]byte{"ca.pem": caPEM, "cert.pem": certPEM, "key.pem": keyPEM}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			tb.Fatal(err)
		}
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	port := freePort(tb)
	s := &Server{port: port, dir: dir, own: true, tls: &tls.Config{RootCAs: pool, ServerName: TLSServerName}}
	s.Addr = "127.0.0.1:" + strconv.Itoa(port)
	s.URL = "rediss://" + s.Addr + "/0"
	s.args = []string{"--port", "0", "--tls-port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--tls-cert-file", filepath.Join(dir, "cert.pem"), "--tls-key-file", filepath.Join(dir, "key.pem"),
		"--tls-ca-cert-file", filepath.Join(dir, "ca.pem"), "--tls-auth-clients", "no",
		"--save", "", "--appendonly", "no", "--dir", dir, "--loglevel", "warning"}
	s.args = append(s.args, noScan...)
	if err := s.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(s.Stop)
	return &TLSServer{Server: s, CAFile: filepath.Join(dir, "ca.pem"), ServerName: TLSServerName}
}

// makeCerts returns a fresh CA and a server certificate it signed, for
// 127.0.0.1 and TLSServerName, as PEM.
func makeCerts(tb testing.TB) (caPEM, certPEM, keyPEM []byte) {
	tb.Helper()
	ca := testpki.NewCA(tb, "wxproxy test CA")
	leaf := ca.Server(tb, TLSServerName)
	return ca.PEM, leaf.CertPEM, leaf.KeyPEM
}
