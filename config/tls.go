package config

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
)

// maxPEMFile bounds what LoadTLS reads of each file.
const maxPEMFile = 1 << 20

// TLSFiles is what LoadTLS read: the caller port's certificate and, with
// ClientCAFile, the pool client certificates must chain to.
type TLSFiles struct {
	Cert     tls.Certificate
	ClientCA *x509.CertPool // nil without ClientCAFile
}

// LoadTLS reads and checks the files t names. Errors are *Error values
// naming the key of the file at fault, never the key material.
func LoadTLS(t TLS) (*TLSFiles, error) {
	certPEM, err := readPEM(t.CertFile)
	if err != nil {
		return nil, &Error{Key: "tls.cert_file", Msg: err.Error()}
	}
	keyPEM, err := readPEM(t.KeyFile)
	if err != nil {
		return nil, &Error{Key: "tls.key_file", Msg: err.Error()}
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		// crypto/tls's messages name the problem (no certificate, key
		// mismatch) without quoting the key.
		return nil, &Error{Key: "tls.key_file", Msg: "does not form a pair with tls.cert_file: " + err.Error()}
	}
	out := &TLSFiles{Cert: cert}
	if t.ClientCAFile != "" {
		caPEM, err := readPEM(t.ClientCAFile)
		if err != nil {
			return nil, &Error{Key: "tls.client_ca_file", Msg: err.Error()}
		}
		out.ClientCA = x509.NewCertPool()
		if !out.ClientCA.AppendCertsFromPEM(caPEM) {
			return nil, &Error{Key: "tls.client_ca_file", Msg: fmt.Sprintf("file %q holds no PEM certificate", t.ClientCAFile)}
		}
	}
	return out, nil
}

func readPEM(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, fmt.Errorf("cannot read %q: %v", path, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxPEMFile+1))
	if err != nil {
		return nil, fmt.Errorf("cannot read %q: %v", path, err)
	}
	if len(b) > maxPEMFile {
		return nil, fmt.Errorf("file %q is larger than 1MiB; is it the right file?", path)
	}
	return b, nil
}

// CheckAPIGlob returns what is wrong with an API path glob of
// callers.keys[].apis, or nil. A glob is an absolute path whose segments
// are literal or hold "*" (any characters within the segment); a segment
// that is exactly "**" matches any number of segments.
func CheckAPIGlob(g string) error {
	if !strings.HasPrefix(g, "/") {
		return errors.New("must start with / (e.g. /cgi-bin/message/**)")
	}
	if strings.ContainsAny(g, "?#\\%") || strings.ContainsFunc(g, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return fmt.Errorf("%q: a path glob holds no query, fragment, escape, backslash, space or control character", g)
	}
	for seg := range strings.SplitSeq(strings.TrimSuffix(g[1:], "/"), "/") {
		switch {
		case seg == "" && g != "/":
			return fmt.Errorf("%q: empty segment", g)
		case seg == "." || seg == "..":
			return fmt.Errorf("%q: . and .. segments are not allowed (paths are matched cleaned)", g)
		case strings.Contains(seg, "**") && seg != "**":
			return fmt.Errorf("%q: ** must be a whole segment (/**)", g)
		}
	}
	return nil
}
