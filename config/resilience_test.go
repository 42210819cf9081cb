package config

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/wxproxy/wxproxy/internal/testpki"
)

// TestResilienceKeys parses the keys of SPEC §14: relative TLS paths are
// resolved against the file's directory, a cert_cn key needs no key value,
// and the printed configuration parses back to the same values.
func TestResilienceKeys(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.NewCA(t, "callers CA")
	ca.Server(t).Write(t, dir, "tls")
	if err := os.WriteFile(filepath.Join(dir, "ca.pem"), ca.PEM, 0o600); err != nil {
		t.Fatal(err)
	}
	src := `
tls: {cert_file: tls.crt, key_file: tls.key, client_ca_file: ca.pem}
upstream_proxy: http://egress.internal:3128
callers:
  keys:
    - {name: billing, cert_cn: billing-svc, apis: ["/cgi-bin/message/**", /cgi-bin/token]}
    - {name: ops, key: k}
apps:
  - name: main
    appid: wx1
    secret: s
    failover: [https://api2.weixin.qq.com/, https://sh.api.weixin.qq.com]
    quotas: {sync_from_wechat: 10m}
`
	c, err := Parse([]byte(src), nil, dir)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := c.TLS.CertFile, filepath.Join(dir, "tls.crt"); got != want {
		t.Errorf("tls.cert_file = %q, want %q", got, want)
	}
	k := c.Callers.Keys[0]
	if k.Key != "" || k.CertCN != "billing-svc" || !slices.Equal(k.APIs, []string{"/cgi-bin/message/**", "/cgi-bin/token"}) {
		t.Errorf("keys[0] = %+v", k)
	}
	a := c.Apps[0]
	if !slices.Equal(a.Failover, []string{"https://api2.weixin.qq.com", "https://sh.api.weixin.qq.com"}) {
		t.Errorf("failover = %v", a.Failover)
	}
	if a.Quotas.SyncFromWeChat != 10*time.Minute {
		t.Errorf("sync_from_wechat = %v", a.Quotas.SyncFromWeChat)
	}
	var buf bytes.Buffer
	if err := c.WriteRedacted(&buf); err != nil {
		t.Fatal(err)
	}
	back, err := Parse(bytes.ReplaceAll(buf.Bytes(), []byte(Redacted), []byte("x")), nil, dir)
	if err != nil {
		t.Fatalf("printed config does not parse: %v\n%s", err, buf.String())
	}
	if !slices.Equal(back.Apps[0].Failover, a.Failover) || back.TLS != c.TLS || back.Apps[0].Quotas.SyncFromWeChat != a.Quotas.SyncFromWeChat ||
		back.Callers.Keys[0].CertCN != k.CertCN || !slices.Equal(back.Callers.Keys[0].APIs, k.APIs) {
		t.Errorf("round trip changed values:\n%s", buf.String())
	}
	// A new failover list needs a restart; TLS files are re-read on
	// reload, but turning TLS off is not.
	next := *c
	next.Apps = slices.Clone(c.Apps)
	next.Apps[0].Failover = nil
	next.TLS = TLS{}
	if got := c.ReloadDiff(&next); !slices.Equal(got, []string{"tls", "apps[0].failover"}) {
		t.Errorf("ReloadDiff = %v", got)
	}
	// A key file that does not match the certificate is refused with the
	// key path.
	other := ca.Server(t)
	if err := os.WriteFile(filepath.Join(dir, "tls.key"), other.KeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Parse([]byte(src), nil, dir); err == nil || !bytes.HasPrefix([]byte(err.Error()), []byte("tls.key_file: does not form a pair")) {
		t.Errorf("mismatched key: %v", err)
	}
}
