package server

import (
	"context"
	"crypto/x509"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/wxproxy/wxproxy/config"
	"github.com/wxproxy/wxproxy/internal/testpki"
)

// servedSerial is the serial of the certificate new handshakes get.
func servedSerial(tb testing.TB, c *certs) string {
	tb.Helper()
	cfg, err := c.config().GetConfigForClient(nil)
	if err != nil {
		tb.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(cfg.Certificates[0].Certificate[0])
	if err != nil {
		tb.Fatal(err)
	}
	return leaf.SerialNumber.String()
}

// logLines is a slog handler's output, safe for concurrent writes.
type logLines struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logLines) count(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Count(l.b.String(), s)
}

// TestCertsWatch: changed files are picked up at the next look; files that
// do not load (a half-written key, a key of another certificate) leave the
// last good certificate in force and are reported once; good files again
// are taken. Fake time: the looks cost no waiting.
func TestCertsWatch(t *testing.T) {
	ca := testpki.NewCA(t, "certs test CA")
	dir := t.TempDir()
	first := ca.Server(t)
	certFile, keyFile := first.Write(t, dir, "tls")
	files := config.TLS{CertFile: certFile, KeyFile: keyFile}
	var logs logLines
	c, err := newCerts(files, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if got := servedSerial(t, c); got != first.Serial.String() {
		t.Fatalf("serving %s, want %s", got, first.Serial)
	}
	var last string
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() { c.watch(ctx, certWatchEvery); close(done) }()
		look := func() {
			time.Sleep(certWatchEvery)
			synctest.Wait()
		}

		second := ca.Server(t)
		second.Write(t, dir, "tls")
		look()
		if got := servedSerial(t, c); got != second.Serial.String() {
			t.Fatalf("after the files changed: serving %s, want %s", got, second.Serial)
		}

		// A half-written key, then a key that is not the certificate's.
		if err := os.WriteFile(keyFile, second.KeyPEM[:len(second.KeyPEM)/2], 0o600); err != nil {
			t.Fatal(err)
		}
		look()
		other := ca.Server(t)
		if err := os.WriteFile(keyFile, other.KeyPEM, 0o600); err != nil {
			t.Fatal(err)
		}
		look()
		look()
		if got := servedSerial(t, c); got != second.Serial.String() {
			t.Errorf("bad files: serving %s, want the last good %s", got, second.Serial)
		}
		if n := logs.count("do not load"); n != 1 {
			t.Errorf("bad files reported %d times, want once:\n%s", n, logs.b.String())
		}

		third := ca.Server(t)
		third.Write(t, dir, "tls")
		look()
		if got := servedSerial(t, c); got != third.Serial.String() {
			t.Errorf("good files again: serving %s, want %s", got, third.Serial)
		}
		last = third.Serial.String()
		cancel()
		<-done
	})

	// A reload with files that do not load is refused and changes nothing.
	if err := c.load(config.TLS{CertFile: filepath.Join(dir, "missing.crt"), KeyFile: keyFile}); err == nil {
		t.Error("load of a missing certificate succeeded")
	}
	if got := servedSerial(t, c); got != last || c.files.CertFile != certFile {
		t.Errorf("a failed reload changed the files in force to %+v", c.files)
	}
	for _, secret := range []string{"PRIVATE KEY", "BEGIN"} {
		if strings.Contains(logs.b.String(), secret) {
			t.Errorf("the log shows key material (%q)", secret)
		}
	}
}
