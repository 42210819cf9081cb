package config

import (
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
	s := Store{
		Kind: d.enum("store.kind", f.Kind, StoreMemory, StoreMemory, StoreFile, StoreRedis),
		Path: f.Path.or(defaultStorePath),
		Redis: Redis{
			URL:          fr.URL.v,
			MasterName:   fr.MasterName.v,
			Username:     fr.Username.v,
			Password:     d.secret("store.redis", "password", fr.Password, fr.PasswordFile, false),
			DB:           fr.DB.v,
			KeyPrefix:    fr.KeyPrefix.or(defaultKeyPrefix),
			ReplicasHint: fr.ReplicasHint.or(1),
		},
	}
	if s.Kind == StoreFile && s.Path == "" {
		d.errorf("store.path", "must not be empty with kind: file%s", d.hint("store.path"))
	}

	const p = "store.redis"
	r := &s.Redis
	if r.URL != "" {
		if err := checkRedisURL(r.URL); err != nil {
			d.errorf(p+".url", "%v", err)
		}
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
	switch {
	case r.URL != "" && len(r.Addrs) > 0:
		d.errorf(p+".addrs", "set either url or addrs, not both")
	case r.URL != "" && r.MasterName != "":
		d.errorf(p+".master_name", "only with addrs (the sentinels)")
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
	return s
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
		k.Key = d.secret(kp, "key", fk.Key, fk.KeyFile, true)
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
			if _, found := c.App(a.v); !found {
				d.errorf(ap, "no app named %q", a.v)
			}
			k.Apps = append(k.Apps, a.v)
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
	if a.RefreshBefore <= 0 || a.RefreshBefore > maxRefreshBefore {
		d.errorf(p+".refresh_before", "must be > 0 and <= 1h (tokens live 2h)")
	}
	a.Quotas = d.quotas(p+".quotas", &f.Quotas)
	a.Breaker = d.breaker(p+".breaker", &f.Breaker)
	return a
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
