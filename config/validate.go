package config

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"math"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
)

// Defaults of the keys that have one; see docs/configuration.md.
const (
	defaultListen         = ":8080"
	defaultAdminListen    = "127.0.0.1:9090"
	defaultStorePath      = "./wxproxy-tokens.json"
	defaultKeyPrefix      = "wxproxy:"
	defaultUpstream       = "https://api.weixin.qq.com"
	defaultWeComUpstream  = "https://qyapi.weixin.qq.com"
	defaultResetTimezone  = "Asia/Shanghai"
	defaultTokenFetches   = 2000
	defaultLockLease      = 3 * time.Second
	defaultTokenWait      = 5 * time.Second
	maxTokenWait          = time.Minute
	maxRefreshBefore      = time.Hour
	allowEveryoneHint     = "use 0.0.0.0/0 and ::/0 to allow everyone"
	reservedAppNameReason = "it is a WeChat API path root or a wxproxy route, and app names are URL path prefixes"
)

// defaultAllowCIDRs are loopback and the private networks of RFC 1918.
func defaultAllowCIDRs() []netip.Prefix {
	return []netip.Prefix{
		netip.MustParsePrefix("127.0.0.0/8"),
		netip.MustParsePrefix("::1/128"),
		netip.MustParsePrefix("10.0.0.0/8"),
		netip.MustParsePrefix("172.16.0.0/12"),
		netip.MustParsePrefix("192.168.0.0/16"),
	}
}

// config returns the Config that f describes, defaults applied, and records
// an error for every value that is out of range or contradicts another.
//
// Defaults are always valid, so a check on a Config field can only fail for
// a value the file gave; a value check rejected is replaced by its default,
// which keeps the checks that compare it with others quiet.
func (d *decoder) config(f *file) *Config {
	c := &Config{
		Listen:            f.Listen.or(defaultListen),
		ShutdownTimeout:   f.ShutdownTimeout.or(15 * time.Second),
		UpstreamTimeout:   f.UpstreamTimeout.or(10 * time.Second),
		MaxBodyBytes:      f.MaxBodyBytes.or(10 * mib),
		RetryBodyBytes:    f.RetryBodyBytes.or(2 * mib),
		MaxBufferedBytes:  f.MaxBufferedBytes.or(256 * mib),
		ReadHeaderTimeout: f.ReadHeaderTimeout.or(10 * time.Second),
		BodyReadTimeout:   f.BodyReadTimeout.or(30 * time.Second),
		IdleTimeout:       f.IdleTimeout.or(120 * time.Second),
		MaxHeaderBytes:    f.MaxHeaderBytes.or(64 * kib),
		UpstreamProxy:     f.UpstreamProxy.v,
		Admin: Admin{
			Listen: f.Admin.Listen.or(defaultAdminListen),
			Token:  d.secret("admin", "token", f.Admin.Token, f.Admin.TokenFile, false),
			PProf:  f.Admin.PProf.v,
		},
		Log: Log{
			Format: d.enum("log.format", f.Log.Format, LogFormatJSON, LogFormatJSON, LogFormatText),
			Level:  d.enum("log.level", f.Log.Level, LogLevelInfo, LogLevelDebug, LogLevelInfo, LogLevelWarn, LogLevelError),
		},
		Store: d.store(&f.Store),
	}

	listenOK := d.addr("listen", f.Listen)
	for _, t := range []struct {
		key string
		v   time.Duration
	}{
		{"shutdown_timeout", c.ShutdownTimeout}, {"upstream_timeout", c.UpstreamTimeout},
		{"read_header_timeout", c.ReadHeaderTimeout}, {"body_read_timeout", c.BodyReadTimeout}, {"idle_timeout", c.IdleTimeout},
	} {
		if t.v <= 0 {
			d.errorf(t.key, "must be > 0")
		}
	}
	maxOK := c.MaxBodyBytes > 0
	if !maxOK {
		d.errorf("max_body_bytes", "must be > 0")
	}
	switch {
	case !f.RetryBodyBytes.set:
		if maxOK {
			c.RetryBodyBytes = min(c.RetryBodyBytes, c.MaxBodyBytes) // the default follows a small max_body_bytes down
		}
	case c.RetryBodyBytes < 0:
		d.errorf("retry_body_bytes", "must be >= 0")
	case maxOK && c.RetryBodyBytes > c.MaxBodyBytes:
		d.errorf("retry_body_bytes", "must be <= max_body_bytes (%s)", formatSize(c.MaxBodyBytes))
	}
	if c.MaxBufferedBytes <= 0 {
		d.errorf("max_buffered_bytes", "must be > 0")
	}
	if c.MaxHeaderBytes < 4*kib || c.MaxHeaderBytes > 16*mib {
		d.errorf("max_header_bytes", "must be between 4KiB and 16MiB")
	}
	if c.UpstreamProxy != "" {
		if err := checkProxyURL(c.UpstreamProxy); err != nil {
			d.errorf("upstream_proxy", "%v", err)
		}
	}
	if d.addr("admin.listen", f.Admin.Listen) && listenOK && sameListener(c.Listen, c.Admin.Listen) {
		d.errorf("admin.listen", "must differ from listen (%q)", c.Listen)
	}

	if len(f.Apps) == 0 && len(f.Platforms) == 0 {
		d.errorf("apps", "at least one app is required")
	}
	for i := range f.Apps {
		c.Apps = append(c.Apps, d.app(index("apps", i), &f.Apps[i], c.Apps))
	}
	c.TLS = d.tls(&f.TLS)
	for i := range f.Platforms {
		c.Platforms = append(c.Platforms, d.platform(index("platforms", i), &f.Platforms[i], c.Apps, c.Platforms))
	}
	c.Callbacks = d.callbacks(&f.Callbacks, c)
	c.Callers = d.callers(&f.Callers, c)

	switch c.DefaultApp = f.DefaultApp.v; {
	case f.DefaultApp.set:
		if _, ok := c.App(c.DefaultApp); !ok && c.DefaultApp != "" {
			d.errorf("default_app", "no app named %q", c.DefaultApp)
		}
	case !d.has("default_app") && len(c.Apps) == 1:
		c.DefaultApp = c.Apps[0].Name
	}
	return c
}

// addr checks the listen address at path and reports whether the address in
// effect (the default when the key is absent) is usable.
func (d *decoder) addr(path string, l str) bool {
	switch {
	case !l.set:
		return !d.has(path)
	case l.v == "":
		d.errorf(path, "must not be empty%s", d.hint(path))
		return false
	}
	if _, port, err := net.SplitHostPort(l.v); err != nil || port == "" {
		d.errorf(path, "invalid address %q (want host:port, e.g. \":8080\")", l.v)
		return false
	}
	return true
}

// sameListener reports whether listening on a and b would clash: the same
// fixed port on the same or an unspecified host.
func sameListener(a, b string) bool {
	ha, pa, _ := net.SplitHostPort(a)
	hb, pb, _ := net.SplitHostPort(b)
	if pa != pb || pa == "0" {
		return false
	}
	unspecified := func(h string) bool { return h == "" || h == "0.0.0.0" || h == "::" }
	return ha == hb || unspecified(ha) || unspecified(hb)
}

// enum returns l's value, which must be one of allowed, or def.
func (d *decoder) enum(path string, l str, def string, allowed ...string) string {
	if !l.set {
		return def
	}
	if !slices.Contains(allowed, l.v) {
		d.errorf(path, "must be one of %s (got %q)", strings.Join(allowed, ", "), l.v)
		return def
	}
	return l.v
}

// count returns l's value as a uint32 of at least 1, or def.
func (d *decoder) count(path string, l integer, def uint32) uint32 {
	switch {
	case !l.set:
		return def
	case l.v < 1:
		d.errorf(path, "must be >= 1")
		return def
	case l.v > math.MaxUint32:
		d.errorf(path, "must be <= %d", uint32(math.MaxUint32))
		return def
	}
	return uint32(l.v)
}

// nonNegative returns l's value, which must be >= 0.
func (d *decoder) nonNegative(path string, l integer, def int) int {
	n := l.or(def)
	if n < 0 {
		d.errorf(path, "must be >= 0")
	}
	return n
}

// secret returns the secret that section gives inline under key or in the
// file named under key_file. With required, a missing or empty secret is an
// error; an empty file always is. Errors never contain the secret.
func (d *decoder) secret(section, key string, inline, file str, required bool) string {
	path, filePath := join(section, key), join(section, key+"_file")
	switch {
	case d.has(path) && d.has(filePath):
		d.errorf(filePath, "set either %s or %s_file, not both", key, key)
	case d.has(filePath):
		if file.v == "" {
			d.errorf(filePath, "must not be empty%s", d.hint(filePath))
			return ""
		}
		s, err := readSecretFile(d.baseDir, file.v)
		if err != nil {
			d.errorf(filePath, "%v", err)
		}
		return s
	case d.has(path):
		if inline.v == "" && required {
			d.errorf(path, "must not be empty%s", d.hint(path))
		}
		return inline.v
	case required:
		d.errorf(path, "required (or %s_file)", key)
	}
	return ""
}

// secretPath returns the path of whichever of key and key_file section
// holds, for errors about a secret.
func (d *decoder) secretPath(section, key string) string {
	if d.has(join(section, key+"_file")) {
		return join(section, key+"_file")
	}
	return join(section, key)
}

// maxSecretFile bounds what readSecretFile reads: a secret is short, and a
// wrong path (a log, a device) should fail rather than fill memory.
const maxSecretFile = 64 << 10

// readSecretFile returns the content of the file at path (relative to
// baseDir), without trailing whitespace. Errors name the file, never its
// content.
func readSecretFile(baseDir, path string) (string, error) {
	if !filepath.IsAbs(path) {
		path = filepath.Join(baseDir, path)
	}
	fail := func(err error) (string, error) {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return "", fmt.Errorf("cannot read %q: %v", path, err)
	}
	f, err := os.Open(path)
	if err != nil {
		return fail(err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSecretFile+1))
	if err != nil {
		return fail(err)
	}
	if len(b) > maxSecretFile {
		return "", fmt.Errorf("file %q is larger than 64KiB; is it the right file?", path)
	}
	s := strings.TrimRight(string(b), " \t\r\n")
	if s == "" {
		return "", fmt.Errorf("file %q is empty", path)
	}
	return s, nil
}

// checkProxyURL returns what is wrong with an upstream_proxy URL, or nil.
func checkProxyURL(s string) error {
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return errors.New("invalid URL") // the parse error would repeat the URL, password included
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Errorf("must be an http:// or https:// URL (got scheme %q)", u.Scheme)
	case u.Host == "" || u.Opaque != "":
		return errors.New("must name a host, e.g. http://egress.internal:3128")
	case u.Path != "" && u.Path != "/", u.RawQuery != "", u.Fragment != "":
		return errors.New("must be scheme://host:port with no path, query or fragment")
	}
	return nil
}

func (d *decoder) store(f *storeFile) Store {
	fr := &f.Redis
	const p = "store.redis"
	s := Store{
		Kind: d.enum("store.kind", f.Kind, StoreMemory, StoreMemory, StoreFile, StoreRedis),
		Path: f.Path.or(defaultStorePath),
		Redis: Redis{
			URL:              fr.URL.v,
			MasterName:       fr.MasterName.v,
			Username:         fr.Username.v,
			Password:         d.secret(p, "password", fr.Password, fr.PasswordFile, false),
			SentinelUsername: fr.SentinelUsername.v,
			SentinelPassword: d.secret(p, "sentinel_password", fr.SentinelPassword, fr.SentinelPasswordFile, false),
			TLSCAFile:        fr.TLS.CAFile.v,
			TLSServerName:    fr.TLS.ServerName.v,
			DB:               fr.DB.v,
			KeyPrefix:        fr.KeyPrefix.or(defaultKeyPrefix),
			ReplicasHint:     fr.ReplicasHint.or(1),
			LockLease:        fr.LockLease.or(defaultLockLease),
		},
	}
	if s.Kind == StoreFile && s.Path == "" {
		d.errorf("store.path", "must not be empty with kind: file%s", d.hint("store.path"))
	}

	r := &s.Redis
	// Without mode, master_name means Sentinel (as before mode existed);
	// anything else is a single server. A Cluster is never guessed.
	defMode := RedisStandalone
	if r.MasterName != "" {
		defMode = RedisSentinel
	}
	r.Mode = d.enum(p+".mode", fr.Mode, defMode, RedisStandalone, RedisCluster, RedisSentinel)
	if r.URL != "" {
		if err := checkRedisURL(r.URL); err != nil {
			d.errorf(p+".url", "%v", err)
		}
		r.TLS = strings.HasPrefix(r.URL, "rediss://")
	}
	for i, a := range fr.Addrs {
		ap := index(p+".addrs", i)
		if d.bad[ap] {
			continue
		}
		if _, port, err := net.SplitHostPort(a.v); err != nil || port == "" {
			d.errorf(ap, "invalid address %q (want host:port)", a.v)
		}
		r.Addrs = append(r.Addrs, a.v)
	}
	if r.DB < 0 {
		d.errorf(p+".db", "must be >= 0")
	}
	if r.KeyPrefix == "" {
		d.errorf(p+".key_prefix", "must not be empty%s", d.hint(p+".key_prefix"))
	}
	if r.ReplicasHint < 1 {
		d.errorf(p+".replicas_hint", "must be >= 1")
	}
	if r.LockLease < time.Second || r.LockLease > time.Minute {
		d.errorf(p+".lock_lease", "must be between 1s and 1m (it is renewed every third of it)")
	}
	switch {
	case r.URL != "" && len(r.Addrs) > 0:
		d.errorf(p+".addrs", "set either url or addrs, not both")
	case r.URL != "" && fr.DB.set:
		d.errorf(p+".db", "only with addrs; with url the database is the URL path (redis://host:6379/DB)")
	case s.Kind == StoreRedis && r.URL == "" && len(r.Addrs) == 0 && !d.has(p+".url") && !d.has(p+".addrs"):
		d.errorf(p+".url", "required with store kind redis (or addrs)")
	case s.Kind == StoreRedis && r.URL == "" && len(r.Addrs) == 0:
		key := p + ".url"
		if d.has(p + ".addrs") {
			key = p + ".addrs"
		}
		d.errorf(key, "must not be empty with store kind redis%s", d.hint(key))
	}
	d.redisMode(r)
	d.redisTLS(r)
	return s
}

// redisMode checks the combinations that r.Mode rules out.
func (d *decoder) redisMode(r *Redis) {
	const p = "store.redis"
	sentinelOnly := func() {
		for _, k := range []string{"master_name", "sentinel_username", "sentinel_password", "sentinel_password_file"} {
			if d.has(p + "." + k) {
				d.errorf(p+"."+k, "only with mode: sentinel (mode is %s)", r.Mode)
			}
		}
	}
	switch r.Mode {
	case RedisStandalone:
		sentinelOnly()
		if len(r.Addrs) > 1 {
			d.errorf(p+".addrs", "mode standalone takes one address (got %d); set mode: cluster for a Redis Cluster, or mode: sentinel with master_name", len(r.Addrs))
		}
	case RedisCluster:
		sentinelOnly()
		if r.DB != 0 {
			d.errorf(p+".db", "must be 0 with mode: cluster (a Redis Cluster has only database 0)")
		}
		if db := redisURLDB(r.URL); db != 0 {
			d.errorf(p+".url", "database must be 0 with mode: cluster (a Redis Cluster has only database 0)")
		}
	case RedisSentinel:
		if d.has(p + ".url") {
			d.errorf(p+".url", "not with mode: sentinel; list the Sentinels in addrs and name the master in master_name")
		}
		if r.MasterName == "" {
			d.errorf(p+".master_name", "required with mode: sentinel%s", d.hint(p+".master_name"))
		}
	}
}

// redisTLS checks the tls section: it turns TLS on for addrs, and needs
// rediss:// with a url.
func (d *decoder) redisTLS(r *Redis) {
	const p = "store.redis.tls"
	if r.TLSCAFile == "" && r.TLSServerName == "" {
		if d.has(p+".ca_file") && !d.bad[p+".ca_file"] {
			d.errorf(p+".ca_file", "must not be empty%s", d.hint(p+".ca_file"))
		}
		return
	}
	if r.URL != "" && !r.TLS {
		key := p + ".ca_file"
		if r.TLSCAFile == "" {
			key = p + ".server_name"
		}
		d.errorf(key, "TLS settings need a rediss:// url (the url is redis://, without TLS)")
		return
	}
	r.TLS = true
	if r.TLSCAFile != "" {
		if !filepath.IsAbs(r.TLSCAFile) && d.baseDir != "" {
			r.TLSCAFile = filepath.Join(d.baseDir, r.TLSCAFile) // like secret files: relative to the config
		}
		if _, err := LoadRedisCA(r.TLSCAFile, ""); err != nil {
			d.errorf(p+".ca_file", "%v", err)
		}
	}
}

// LoadRedisCA reads the PEM CA bundle at path (relative to baseDir) into a
// pool. Errors name the file, never its content.
func LoadRedisCA(path, baseDir string) (*x509.CertPool, error) {
	if !filepath.IsAbs(path) && baseDir != "" {
		path = filepath.Join(baseDir, path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, fmt.Errorf("cannot read %q: %v", path, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("file %q holds no PEM certificate", path)
	}
	return pool, nil
}

// redisURLDB returns the database of a Redis URL, 0 if it names none or
// cannot be read (checkRedisURL reports that).
func redisURLDB(s string) int {
	u, err := url.Parse(s)
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(strings.Trim(u.Path, "/"))
	return n
}

// checkRedisURL validates a Redis URL without ever quoting it: it may hold a
// password.
func checkRedisURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return errors.New("not a valid URL (percent-encode special characters in the password)")
	}
	if u.Scheme != "redis" && u.Scheme != "rediss" {
		return fmt.Errorf("scheme must be redis or rediss (got %q)", u.Scheme)
	}
	if u.Host == "" {
		return errors.New("missing host (want redis://[user:password@]host:port[/db])")
	}
	if db := strings.Trim(u.Path, "/"); db != "" {
		if n, err := strconv.Atoi(db); err != nil || n < 0 {
			return fmt.Errorf("database (the URL path) must be a number >= 0 (got %q)", db)
		}
	}
	return nil
}

// callers checks the callers section; c supplies the apps keys may name.
func (d *decoder) callers(f *callersFile, c *Config) Callers {
	const p = "callers"
	cs := Callers{AllowCIDRs: defaultAllowCIDRs()}
	if len(f.AllowCIDRs) > 0 {
		cs.AllowCIDRs = nil
	} else if f.AllowCIDRs != nil {
		d.errorf(p+".allow_cidrs", "must not be empty; %s", allowEveryoneHint)
	}
	for i, it := range f.AllowCIDRs {
		ip := index(p+".allow_cidrs", i)
		if d.bad[ip] {
			continue
		}
		prefix, err := parsePrefix(it.v)
		if err != nil {
			d.errorf(ip, "%v", err)
			continue
		}
		cs.AllowCIDRs = append(cs.AllowCIDRs, prefix)
	}

	names := map[string]string{} // name → path of its first use
	keys := map[string]string{}  // key → path of its first use
	cns := map[string]string{}   // cert_cn → path of its first use
	for i, fk := range f.Keys {
		kp := index(p+".keys", i)
		k := CallerKey{Name: fk.Name.v, PerMinute: d.nonNegative(kp+".per_minute", fk.PerMinute, 0)}
		switch first := names[k.Name]; {
		case !d.has(kp + ".name"):
			d.errorf(kp+".name", "required")
		case k.Name == "":
			d.errorf(kp+".name", "must not be empty%s", d.hint(kp+".name"))
		case first != "":
			d.errorf(kp+".name", "duplicate of %s", first)
		default:
			names[k.Name] = kp
		}
		k.CertCN = fk.CertCN.v
		if d.has(kp + ".cert_cn") {
			switch first := cns[k.CertCN]; {
			case k.CertCN == "":
				d.errorf(kp+".cert_cn", "must not be empty%s", d.hint(kp+".cert_cn"))
			case c.TLS.ClientCAFile == "":
				d.errorf(kp+".cert_cn", "needs tls.client_ca_file (client certificates are only asked for with it)")
			case first != "":
				d.errorf(kp+".cert_cn", "duplicate of %s", first)
			default:
				cns[k.CertCN] = kp
			}
		}
		// A key that names a certificate CN may go without a key value.
		k.Key = d.secret(kp, "key", fk.Key, fk.KeyFile, !d.has(kp+".cert_cn"))
		switch first, dup := keys[k.Key]; {
		case k.Key == "":
		case dup:
			d.errorf(d.secretPath(kp, "key"), "same key as %s", first)
		default:
			keys[k.Key] = kp
		}
		if fk.Apps != nil {
			if len(fk.Apps) == 0 {
				d.errorf(kp+".apps", "must not be empty; omit apps to allow every app")
			}
			k.Apps = []string{}
		}
		for j, a := range fk.Apps {
			ap := index(kp+".apps", j)
			if d.bad[ap] {
				continue
			}
			if msg := c.keyAppProblem(a.v); msg != "" {
				d.errorf(ap, "%s", msg)
			}
			k.Apps = append(k.Apps, a.v)
		}
		if fk.APIs != nil {
			if len(fk.APIs) == 0 {
				d.errorf(kp+".apis", "must not be empty; omit apis to allow every API")
			}
			k.APIs = []string{}
		}
		for j, a := range fk.APIs {
			ap := index(kp+".apis", j)
			if d.bad[ap] {
				continue
			}
			if err := CheckAPIGlob(a.v); err != nil {
				d.errorf(ap, "%v", err)
			}
			k.APIs = append(k.APIs, a.v)
		}
		cs.Keys = append(cs.Keys, k)
	}
	return cs
}

// parsePrefix parses a CIDR prefix or a bare IP (a /32 or /128).
func parsePrefix(s string) (netip.Prefix, error) {
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("invalid IP or CIDR %q", s)
		}
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("invalid CIDR %q", s)
	}
	return p.Masked(), nil
}

// app checks the app at path p; prev are the apps before it, for uniqueness
// checks.
func (d *decoder) app(p string, f *appFile, prev []App) App {
	a := App{
		Name:          f.Name.v,
		Kind:          d.enum(p+".kind", f.Kind, KindOfficial, KindOfficial, KindMiniProgram, KindWeCom),
		AppID:         f.AppID.v,
		RefreshBefore: f.RefreshBefore.or(10 * time.Minute),
		TokenWait:     f.TokenWait.or(defaultTokenWait),
	}
	switch {
	case !d.has(p + ".name"):
		d.errorf(p+".name", "required")
	case a.Name == "":
		d.errorf(p+".name", "must not be empty%s", d.hint(p+".name"))
	default:
		if msg := checkAppName(a.Name); msg != "" {
			d.errorf(p+".name", "%s", msg)
		}
		for i, q := range prev {
			if q.Name == a.Name {
				d.errorf(p+".name", "duplicate of apps[%d]", i)
				break
			}
		}
	}

	switch {
	case !d.has(p + ".appid"):
		d.errorf(p+".appid", "required")
	case a.AppID == "":
		d.errorf(p+".appid", "must not be empty%s", d.hint(p+".appid"))
	case strings.ContainsFunc(a.AppID, unicode.IsSpace):
		d.errorf(p+".appid", "must not contain whitespace")
	}

	a.Secret = d.secret(p, "secret", f.Secret, f.SecretFile, true)
	wecom := a.Kind == KindWeCom
	for i, q := range prev {
		if a.AppID == "" || a.Secret == "" {
			break
		}
		if wecom && q.Kind == KindWeCom && q.AppID == a.AppID && q.Secret == a.Secret {
			d.errorf(d.secretPath(p, "secret"), "same corpid and secret as apps[%d]; one WeCom secret is one token, configure it once", i)
			break
		}
		if !wecom && q.Kind != KindWeCom && q.AppID == a.AppID {
			d.errorf(p+".appid", "already used by apps[%d]; two apps with one appid would fight over its token", i)
			break
		}
	}

	if !wecom {
		a.TokenMode = d.enum(p+".token_mode", f.TokenMode, TokenModeStable, TokenModeStable, TokenModeClassic)
	} else if d.has(p + ".token_mode") {
		d.errorf(p+".token_mode", "not allowed with kind wecom (WeCom apps always use gettoken)")
	}

	a.Upstream = defaultUpstream
	if wecom {
		a.Upstream = defaultWeComUpstream
	}
	if f.Upstream.set {
		if err := checkUpstream(f.Upstream.v); err != nil {
			d.errorf(p+".upstream", "%v", err)
		}
		a.Upstream = strings.TrimRight(f.Upstream.v, "/")
	}
	seen := map[string]string{a.Upstream: p + ".upstream"}
	for i, u := range f.Failover {
		fp := index(p+".failover", i)
		if d.bad[fp] {
			continue
		}
		if err := checkUpstream(u.v); err != nil {
			d.errorf(fp, "%v", err)
			continue
		}
		v := strings.TrimRight(u.v, "/")
		if first, dup := seen[v]; dup {
			d.errorf(fp, "duplicate of %s", first)
			continue
		}
		seen[v] = fp
		a.Failover = append(a.Failover, v)
	}
	if f.Failover != nil && len(f.Failover) == 0 {
		d.errorf(p+".failover", "must not be empty; omit failover for none")
	}
	if a.RefreshBefore <= 0 || a.RefreshBefore > maxRefreshBefore {
		d.errorf(p+".refresh_before", "must be > 0 and <= 1h (tokens live 2h)")
	}
	if a.TokenWait <= 0 || a.TokenWait > maxTokenWait {
		d.errorf(p+".token_wait", "must be > 0 and <= 1m")
	}
	a.Tickets, a.AgentID = d.tickets(p, f, wecom)
	a.Quotas = d.quotas(p+".quotas", &f.Quotas)
	a.Breaker = d.breaker(p+".breaker", &f.Breaker)
	return a
}

// tickets checks the tickets and agent_id of the app at path p.
func (d *decoder) tickets(p string, f *appFile, wecom bool) ([]string, int64) {
	allowed := []string{TicketJSAPI, TicketWxCard}
	if wecom {
		allowed = []string{TicketCorpJSAPI, TicketAgentConfig}
	}
	var out []string
	for i, t := range f.Tickets {
		tp := index(p+".tickets", i)
		switch {
		case d.bad[tp]:
		case !slices.Contains(allowed, t.v):
			d.errorf(tp, "must be one of %s for kind %s (got %q)", strings.Join(allowed, ", "), map[bool]string{true: KindWeCom, false: "official and miniprogram"}[wecom], t.v)
		case slices.Contains(out, t.v):
			d.errorf(tp, "duplicate ticket %q", t.v)
		default:
			out = append(out, t.v)
		}
	}
	agent := int64(f.AgentID.v)
	switch {
	case f.AgentID.set && !wecom:
		d.errorf(p+".agent_id", "only with kind wecom")
	case f.AgentID.set && agent <= 0:
		d.errorf(p+".agent_id", "must be > 0 (the AgentId shown on the app's page in the WeCom admin console)")
	case !f.AgentID.set && slices.Contains(out, TicketAgentConfig):
		d.errorf(p+".agent_id", "required with ticket agent_config (the agentid wx.agentConfig is called with)")
	}
	return out, agent
}

// checkAppName returns what is wrong with an app name, or "".
func checkAppName(s string) string {
	valid := s != "" && len(s) <= 64 && isLowerAlnum(s[0])
	for i := 1; valid && i < len(s); i++ {
		valid = isLowerAlnum(s[i]) || s[i] == '_' || s[i] == '-'
	}
	if !valid {
		return fmt.Sprintf("must match ^[a-z0-9][a-z0-9_-]{0,63}$ (got %q)", s)
	}
	switch s {
	case "cgi-bin", "sns", "wxa", "wxaapi", "datacube", "card", "merchant", "customservice",
		"shop", "product", "semantic", "union", "tcb", "wxopen", "channels", "sim",
		"admin", "healthz", "readyz", "metrics", "wxproxy", "debug", "callback":
		return fmt.Sprintf("%q is reserved: %s", s, reservedAppNameReason)
	}
	return ""
}

func isLowerAlnum(c byte) bool { return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' }

// checkUpstream validates an app's upstream base URL.
func checkUpstream(s string) error {
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return errors.New("not a valid URL")
	case u.User != nil:
		return errors.New("must not contain credentials")
	case u.Scheme != "http" && u.Scheme != "https", u.Host == "", u.Opaque != "":
		return fmt.Errorf("must be an absolute http:// or https:// URL (got %q)", s)
	case u.RawQuery != "" || u.ForceQuery:
		return fmt.Errorf("must not have a query (got %q)", s)
	case u.Fragment != "":
		return fmt.Errorf("must not have a fragment (got %q)", s)
	}
	return nil
}

func (d *decoder) quotas(p string, f *quotasFile) Quotas {
	q := Quotas{
		ResetTimezone:    f.ResetTimezone.or(defaultResetTimezone),
		TokenFetchPerDay: d.nonNegative(p+".token_fetch_per_day", f.TokenFetchPerDay, defaultTokenFetches),
		Default:          d.limit(p+".default", &f.Default),
		APIs:             map[string]Limit{},
		OnLimit:          d.enum(p+".on_limit", f.OnLimit, OnLimitReject, OnLimitReject, OnLimitWait),
		MaxWait:          f.MaxWait.or(2 * time.Second),
		RespectUpstream:  f.RespectUpstream.or(true),
	}
	if q.ResetTimezone == "" {
		d.errorf(p+".reset_timezone", "must not be empty%s", d.hint(p+".reset_timezone"))
	} else if _, err := d.location(q.ResetTimezone); err != nil {
		d.errorf(p+".reset_timezone", "unknown time zone %q (want an IANA name such as Asia/Shanghai or UTC)", q.ResetTimezone)
	}
	q.Location, _ = d.location(q.ResetTimezone)
	for _, api := range slices.Sorted(maps.Keys(f.APIs)) { // errors at one aliased limit come out in a fixed order
		l := f.APIs[api]
		q.APIs[string(api)] = d.limit(join(p+".apis", string(api)), &l)
	}
	if q.MaxWait < 0 {
		d.errorf(p+".max_wait", "must be >= 0")
	}
	q.SyncFromWeChat = f.SyncFromWeChat.v
	if q.SyncFromWeChat < 0 || (q.SyncFromWeChat > 0 && q.SyncFromWeChat < time.Minute) {
		d.errorf(p+".sync_from_wechat", "must be 0 (off) or at least 1m (quota/get is itself limited)")
	}
	return q
}

// location loads a time zone once per Parse. It never returns a nil
// location, so an invalid name leaves a usable (UTC) one in the Config that
// is about to be discarded anyway.
func (d *decoder) location(name string) (*time.Location, error) {
	if loc, ok := d.locs[name]; ok {
		return loc, nil
	}
	if name == "" {
		return time.UTC, errors.New("empty time zone")
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return time.UTC, err
	}
	d.locs[name] = loc
	return loc, nil
}

func (d *decoder) limit(p string, f *limitFile) Limit {
	return Limit{
		PerMinute: d.nonNegative(p+".per_minute", f.PerMinute, 0),
		PerDay:    d.nonNegative(p+".per_day", f.PerDay, 0),
		Burst:     d.nonNegative(p+".burst", f.Burst, 0),
	}
}

func (d *decoder) breaker(p string, f *breakerFile) Breaker {
	b := Breaker{
		ConsecutiveFailures: d.count(p+".consecutive_failures", f.ConsecutiveFailures, 5),
		FailureRatio:        f.FailureRatio.or(0.5),
		MinRequests:         d.count(p+".min_requests", f.MinRequests, 20),
		Interval:            f.Interval.or(10 * time.Second),
		OpenTimeout:         f.OpenTimeout.or(30 * time.Second),
		HalfOpenRequests:    d.count(p+".half_open_requests", f.HalfOpenRequests, 1),
	}
	if b.FailureRatio <= 0 || b.FailureRatio > 1 {
		d.errorf(p+".failure_ratio", "must be > 0 and <= 1")
	}
	if b.Interval < 0 {
		d.errorf(p+".interval", "must be >= 0")
	}
	if b.OpenTimeout <= 0 {
		d.errorf(p+".open_timeout", "must be > 0")
	}
	return b
}

// tls checks the caller-port TLS section: both files or neither, each
// readable, the pair matching, the client CA holding certificates.
func (d *decoder) tls(f *tlsFile) TLS {
	const p = "tls"
	t := TLS{CertFile: d.path(f.CertFile), KeyFile: d.path(f.KeyFile), ClientCAFile: d.path(f.ClientCAFile)}
	switch {
	case t.CertFile == "" && t.KeyFile == "":
		if t.ClientCAFile != "" {
			d.errorf(p+".client_ca_file", "needs tls.cert_file and tls.key_file")
		}
		return TLS{}
	case t.CertFile == "":
		d.errorf(p+".cert_file", "required with tls.key_file")
		return TLS{}
	case t.KeyFile == "":
		d.errorf(p+".key_file", "required with tls.cert_file")
		return TLS{}
	}
	if _, err := LoadTLS(t); err != nil {
		var ke *Error
		if errors.As(err, &ke) {
			d.errorf(ke.Key, "%s", ke.Msg)
		} else {
			d.errorf(p, "%v", err)
		}
	}
	return t
}

// path resolves a file path of the configuration against its directory.
func (d *decoder) path(v str) string {
	if v.v == "" || filepath.IsAbs(v.v) {
		return v.v
	}
	return filepath.Join(d.baseDir, v.v)
}
