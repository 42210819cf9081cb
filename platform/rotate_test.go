package platform_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wxproxy/wxproxy/platform"
	"github.com/wxproxy/wxproxy/token"
)

// rotator stands between the platform and the simulator and plays WeChat
// handing back a new refresh token: api_authorizer_token answers carry
// "rotated-"+the real one, and requests that send it are translated back
// for the simulator, which never rotates.
type rotator struct {
	mu      sync.Mutex
	issued  string // the rotated refresh token handed out last
	usedNew int    // requests that sent a rotated token
}

func (r *rotator) handler(sim string) http.Handler {
	target, _ := url.Parse(sim)
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.ModifyResponse = func(resp *http.Response) error {
		if !strings.HasSuffix(resp.Request.URL.Path, "/api_authorizer_token") {
			return nil
		}
		b, _ := io.ReadAll(resp.Body)
		const field = `"authorizer_refresh_token":"`
		if i := bytes.Index(b, []byte(field)); i >= 0 {
			start := i + len(field)
			end := start + bytes.IndexByte(b[start:], '"')
			rotated := "rotated-" + string(b[start:end])
			r.mu.Lock()
			r.issued = rotated
			r.mu.Unlock()
			b = append(append(append([]byte{}, b[:start]...), rotated...), b[end:]...)
		}
		resp.Body = io.NopCloser(bytes.NewReader(b))
		resp.ContentLength = int64(len(b))
		resp.Header.Set("Content-Length", strconv.Itoa(len(b)))
		return nil
	}
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if strings.HasSuffix(req.URL.Path, "/api_authorizer_token") {
			b, _ := io.ReadAll(req.Body)
			if bytes.Contains(b, []byte(`"rotated-`)) {
				r.mu.Lock()
				r.usedNew++
				r.mu.Unlock()
				b = bytes.ReplaceAll(b, []byte(`"rotated-`), []byte(`"`))
			}
			req.Body = io.NopCloser(bytes.NewReader(b))
			req.ContentLength = int64(len(b))
		}
		rp.ServeHTTP(w, req)
	})
}

// A refresh token WeChat hands back replaces the stored one: the record
// is rewritten durably, the next fetch sends it, and it survives a
// restart.
func TestRefreshTokenReplaced(t *testing.T) {
	e := newEnv(t, 0)
	rot := &rotator{}
	front := httptest.NewServer(rot.handler(e.simU))
	t.Cleanup(front.Close)
	path := filepath.Join(t.TempDir(), "platforms.json")
	fs := platform.NewFileStore(path, 10*time.Millisecond)
	p := e.platform(fs, fs, func(o *platform.Options) { o.Upstream = front.URL })
	e.pushTicket()
	eventually(t, "ready", func() bool { return p.Ready() == nil })
	e.authorize(merchant)
	m, err := p.Merchant(context.Background(), merchant)
	if err != nil {
		t.Fatal(err)
	}
	before := m.Info().RefreshTokenFP
	if _, err := m.Invalidate(context.Background(), m.Current().Value); err != nil {
		t.Fatal(err)
	}
	rot.mu.Lock()
	issued := rot.issued
	rot.mu.Unlock()
	if issued == "" {
		t.Fatal("no api_authorizer_token answer passed the rotator")
	}
	if got := m.Info().RefreshTokenFP; got != token.Fingerprint(issued) || got == before {
		t.Errorf("refresh token fingerprint %s, want the new one %s (was %s)", got, token.Fingerprint(issued), before)
	}
	rec, err := fs.Record(context.Background(), "acme", merchant)
	if err != nil || rec.RefreshToken != issued {
		t.Fatalf("stored refresh token is not the new one: %v", err)
	}
	// The next fetch sends the new refresh token.
	if _, err := m.Invalidate(context.Background(), m.Current().Value); err != nil {
		t.Fatal(err)
	}
	rot.mu.Lock()
	used := rot.usedNew
	rot.mu.Unlock()
	if used == 0 {
		t.Error("the next fetch did not send the new refresh token")
	}
	// A new store over the same file (a restart) holds the new one.
	if err := fs.Flush(); err != nil {
		t.Fatal(err)
	}
	rec, err = platform.NewFileStore(path, 0).Record(context.Background(), "acme", merchant)
	if err != nil || !strings.HasPrefix(rec.RefreshToken, "rotated-") {
		t.Errorf("after a restart the refresh token is not a rotated one: %v", err)
	}
}

// recordCounter counts single-record writes of a file store.
type recordCounter struct {
	*platform.FileStore
	mu   sync.Mutex
	puts int
}

func (c *recordCounter) PutRecord(ctx context.Context, p string, r platform.Record) error {
	c.mu.Lock()
	c.puts++
	c.mu.Unlock()
	return c.FileStore.PutRecord(ctx, p, r)
}

// Recover writes the file store once per page of merchants, not once per
// merchant (which would rewrite a file of megabytes ten thousand times).
func TestRecoverWritesPages(t *testing.T) {
	e := newEnv(t, 0)
	const n = 1200 // three pages
	for i := range n {
		// Nobody receives the pushes yet: WeChat holds the merchants,
		// the platform does not.
		if _, err := e.sim.Authorize(compID, "wxrecover"+strconv.Itoa(100000+i)); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(t.TempDir(), "platforms.json")
	fs := &recordCounter{FileStore: platform.NewFileStore(path, 10*time.Millisecond)}
	p := e.platform(fs, fs.FileStore)
	e.pushTicket()
	eventually(t, "ready", func() bool { return p.Ready() == nil })
	listed, changed, err := p.Recover(context.Background())
	if err != nil || listed != n || changed != n {
		t.Fatalf("Recover = %d listed, %d changed, %v; want %d", listed, changed, err, n)
	}
	if fs.puts != 0 {
		t.Errorf("Recover wrote %d single records; want pages", fs.puts)
	}
	if _, total := p.Authorizers("", 0, 1); total != n {
		t.Errorf("held %d merchants, want %d", total, n)
	}
	recs, err := platform.NewFileStore(path, 0).Records(context.Background(), "acme")
	if err != nil || len(recs) != n {
		t.Errorf("file holds %d records (%v), want %d", len(recs), err, n)
	}
}
