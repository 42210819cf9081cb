package server

import (
	"context"
	"crypto/tls"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wxproxy/wxproxy/config"
)

// certWatchEvery is how often the TLS files are checked for changes.
const certWatchEvery = 2 * time.Second

// certs serves the caller port's TLS configuration (SPEC §14): the
// certificate, key and client CA are re-read on reload and when the files
// change, and every new handshake gets the latest ones through
// GetConfigForClient. Connections already open keep theirs: a rotation
// drops none. A set of files that fails to load leaves the last good one in
// force. certs is safe for concurrent use.
type certs struct {
	log *slog.Logger

	mu    sync.Mutex // serialises loads
	files config.TLS
	stamp [3]fileStamp

	cur atomic.Pointer[tls.Config]
}

// fileStamp is what tells that a file changed: size, modification time and
// the file itself (a replaced symlink target, as Kubernetes mounts do it).
type fileStamp struct {
	size int64
	mod  time.Time
	fi   os.FileInfo
}

func (a fileStamp) same(b fileStamp) bool {
	return a.size == b.size && a.mod.Equal(b.mod) && (a.fi == nil) == (b.fi == nil) && (a.fi == nil || os.SameFile(a.fi, b.fi))
}

// newCerts loads the files of t.
func newCerts(t config.TLS, log *slog.Logger) (*certs, error) {
	c := &certs{log: log}
	if err := c.load(t); err != nil {
		return nil, err
	}
	return c, nil
}

// load reads the files of t and, if they are good, puts them in force.
func (c *certs) load(t config.TLS) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	stamp := stamps(t)
	f, err := config.LoadTLS(t)
	if err != nil {
		return err
	}
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{f.Cert},
		NextProtos:   []string{"http/1.1"}, // the caller port speaks HTTP/1.1
	}
	if f.ClientCA != nil {
		cfg.ClientCAs, cfg.ClientAuth = f.ClientCA, tls.RequireAndVerifyClientCert
	}
	c.files, c.stamp = t, stamp
	c.cur.Store(cfg)
	return nil
}

func stamps(t config.TLS) [3]fileStamp {
	var out [3]fileStamp
	for i, p := range []string{t.CertFile, t.KeyFile, t.ClientCAFile} {
		if p == "" {
			continue
		}
		if fi, err := os.Stat(p); err == nil {
			out[i] = fileStamp{size: fi.Size(), mod: fi.ModTime(), fi: fi}
		}
	}
	return out
}

// changed reports whether a file differs from what was loaded.
func (c *certs) changed() (config.TLS, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := stamps(c.files)
	for i := range now {
		if !now[i].same(c.stamp[i]) {
			return c.files, true
		}
	}
	return c.files, false
}

// watch re-reads the files when they change, until ctx ends. A file caught
// half-written fails to load and is tried again at the next look.
func (c *certs) watch(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	var failing bool
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		files, ok := c.changed()
		if !ok {
			continue
		}
		if err := c.load(files); err != nil {
			if !failing {
				c.log.Error("tls: changed files do not load; the previous certificate stays", "err", err)
			}
			failing = true
			continue
		}
		failing = false
		c.log.Info("tls: certificate reloaded after the files changed")
	}
}

// config is the listener's TLS configuration: each handshake asks for the
// one in force.
func (c *certs) config() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"http/1.1"},
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return c.cur.Load(), nil
		},
	}
}
