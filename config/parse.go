package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"

	"gopkg.in/yaml.v3"
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

// Parse parses a configuration from data. getenv resolves ${VAR} references;
// nil means an empty environment. Relative secret file paths are relative to
// baseDir ("" = the working directory).
//
// On failure the error is an errors.Join of *Error values, one per problem in
// the order they appear in data, or a single error for a YAML syntax error.
func Parse(data []byte, getenv func(string) string, baseDir string) (*Config, error) {
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	root, err := parseYAML(data)
	if err != nil {
		return nil, err
	}
	d := &decoder{getenv: getenv, baseDir: baseDir, locs: map[string]*time.Location{}}
	c := d.config(root)
	if err := d.err(); err != nil {
		return nil, err
	}
	return c, nil
}

// parseYAML returns the root node of the single document in data, or nil for
// an empty document.
func parseYAML(data []byte) (*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		return nil, fmt.Errorf("config: %w", err) // "yaml: line 3: ..."
	}
	var next yaml.Node
	switch err := dec.Decode(&next); {
	case err == nil:
		return nil, fmt.Errorf("config: line %d: a second YAML document; the file must hold exactly one", next.Line)
	case !errors.Is(err, io.EOF):
		return nil, fmt.Errorf("config: %w", err)
	}
	if doc.Kind == yaml.DocumentNode && len(doc.Content) > 0 {
		return doc.Content[0], nil
	}
	return nil, nil
}

func (d *decoder) config(root *yaml.Node) *Config {
	c := &Config{
		Listen:            defaultListen,
		ShutdownTimeout:   15 * time.Second,
		UpstreamTimeout:   10 * time.Second,
		MaxBodyBytes:      10 * mib,
		RetryBodyBytes:    2 * mib,
		MaxBufferedBytes:  256 * mib,
		ReadHeaderTimeout: 10 * time.Second,
		BodyReadTimeout:   30 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		Admin:             Admin{Listen: defaultAdminListen},
		Log:               Log{Format: LogFormatJSON, Level: LogLevelInfo},
		Store: Store{Kind: StoreMemory, Path: defaultStorePath,
			Redis: Redis{KeyPrefix: defaultKeyPrefix, ReplicasHint: 1}},
		Callers: Callers{AllowCIDRs: defaultAllowCIDRs()},
	}
	m := d.mapping("", root, root)

	listenOK := !m.has("listen")
	if m.str("listen", &c.Listen) {
		listenOK = checkAddr(m, "listen", c.Listen)
	}
	if m.duration("shutdown_timeout", &c.ShutdownTimeout) && c.ShutdownTimeout <= 0 {
		m.errorf("shutdown_timeout", "must be > 0")
	}
	if m.duration("upstream_timeout", &c.UpstreamTimeout) && c.UpstreamTimeout <= 0 {
		m.errorf("upstream_timeout", "must be > 0")
	}
	maxOK := true
	if m.size("max_body_bytes", &c.MaxBodyBytes) && c.MaxBodyBytes <= 0 {
		m.errorf("max_body_bytes", "must be > 0")
		maxOK = false
	}
	if m.size("retry_body_bytes", &c.RetryBodyBytes) {
		switch {
		case c.RetryBodyBytes < 0:
			m.errorf("retry_body_bytes", "must be >= 0")
		case maxOK && c.RetryBodyBytes > c.MaxBodyBytes:
			m.errorf("retry_body_bytes", "must be <= max_body_bytes (%s)", formatSize(c.MaxBodyBytes))
		}
	} else if maxOK && c.RetryBodyBytes > c.MaxBodyBytes {
		c.RetryBodyBytes = c.MaxBodyBytes // the default follows a small max_body_bytes down
	}
	if m.size("max_buffered_bytes", &c.MaxBufferedBytes) && c.MaxBufferedBytes <= 0 {
		m.errorf("max_buffered_bytes", "must be > 0")
	}
	for _, t := range []struct {
		key string
		dst *time.Duration
	}{{"read_header_timeout", &c.ReadHeaderTimeout}, {"body_read_timeout", &c.BodyReadTimeout}, {"idle_timeout", &c.IdleTimeout}} {
		if m.duration(t.key, t.dst) && *t.dst <= 0 {
			m.errorf(t.key, "must be > 0")
		}
	}
	if m.size("max_header_bytes", &c.MaxHeaderBytes) && (c.MaxHeaderBytes < 4<<10 || c.MaxHeaderBytes > 16*mib) {
		m.errorf("max_header_bytes", "must be between 4KiB and 16MiB")
	}
	if m.str("upstream_proxy", &c.UpstreamProxy) && c.UpstreamProxy != "" {
		if err := checkProxyURL(c.UpstreamProxy); err != nil {
			m.errorf("upstream_proxy", "%v", err)
		}
	}

	am := m.sub("admin")
	adminOK := !am.has("listen")
	if am.str("listen", &c.Admin.Listen) {
		adminOK = checkAddr(am, "listen", c.Admin.Listen)
	}
	if listenOK && adminOK && sameListener(c.Listen, c.Admin.Listen) {
		am.errorf("listen", "must differ from listen (%q)", c.Listen)
	}
	am.secret("token", "token_file", &c.Admin.Token, false)
	am.boolean("pprof", &c.Admin.PProf)
	am.done()

	lm := m.sub("log")
	lm.enum("format", &c.Log.Format, LogFormatJSON, LogFormatText)
	lm.enum("level", &c.Log.Level, LogLevelDebug, LogLevelInfo, LogLevelWarn, LogLevelError)
	lm.done()

	d.store(m.sub("store"), &c.Store)

	c.Apps = d.apps(m)
	d.callers(m.sub("callers"), &c.Callers, c)

	if m.str("default_app", &c.DefaultApp) {
		if _, ok := c.App(c.DefaultApp); !ok && c.DefaultApp != "" {
			m.errorf("default_app", "no app named %q", c.DefaultApp)
		}
	} else if !m.has("default_app") && len(c.Apps) == 1 {
		c.DefaultApp = c.Apps[0].Name
	}
	m.done()
	return c
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

// checkAddr reports whether the listen address under key is usable.
func checkAddr(m *mapping, key, addr string) bool {
	if addr == "" {
		m.errorf(key, "must not be empty%s", m.emptyHint(key))
		return false
	}
	if _, port, err := net.SplitHostPort(addr); err != nil || port == "" {
		m.errorf(key, "invalid address %q (want host:port, e.g. \":8080\")", addr)
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

func (d *decoder) store(m *mapping, s *Store) {
	m.enum("kind", &s.Kind, StoreMemory, StoreFile, StoreRedis)
	m.str("path", &s.Path)
	if s.Kind == StoreFile && s.Path == "" {
		m.errorf("path", "must not be empty with kind: file%s", m.emptyHint("path"))
	}

	rm, r := m.sub("redis"), &s.Redis
	if rm.str("url", &r.URL) && r.URL != "" {
		if err := checkRedisURL(r.URL); err != nil {
			rm.errorf("url", "%v", err)
		}
	}
	if items, ok := rm.list("addrs"); ok {
		for i, it := range items {
			p := index(rm.key("addrs"), i)
			a, ok := d.scalar(p, it)
			if !ok {
				continue
			}
			if _, port, err := net.SplitHostPort(a); err != nil || port == "" {
				d.add(p, it, fmt.Sprintf("invalid address %q (want host:port)", a))
			}
			r.Addrs = append(r.Addrs, a)
		}
	}
	rm.str("master_name", &r.MasterName)
	rm.str("username", &r.Username)
	rm.secret("password", "password_file", &r.Password, false)
	dbSet := rm.integer("db", &r.DB)
	if dbSet && r.DB < 0 {
		rm.errorf("db", "must be >= 0")
	}
	if rm.str("key_prefix", &r.KeyPrefix) && r.KeyPrefix == "" {
		rm.errorf("key_prefix", "must not be empty%s", rm.emptyHint("key_prefix"))
	}
	if rm.integer("replicas_hint", &r.ReplicasHint) && r.ReplicasHint < 1 {
		rm.errorf("replicas_hint", "must be >= 1")
	}
	switch {
	case r.URL != "" && len(r.Addrs) > 0:
		rm.errorf("addrs", "set either url or addrs, not both")
	case r.URL != "" && r.MasterName != "":
		rm.errorf("master_name", "only with addrs (the sentinels)")
	case r.URL != "" && dbSet:
		rm.errorf("db", "only with addrs; with url the database is the URL path (redis://host:6379/DB)")
	case s.Kind == StoreRedis && r.URL == "" && len(r.Addrs) == 0 && !rm.has("url") && !rm.has("addrs"):
		rm.errorf("url", "required with store kind redis (or addrs)")
	case s.Kind == StoreRedis && r.URL == "" && len(r.Addrs) == 0:
		key := "url"
		if rm.has("addrs") {
			key = "addrs"
		}
		rm.errorf(key, "must not be empty with store kind redis%s", rm.emptyHint(key))
	}
	rm.done()
	m.done()
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

func (d *decoder) callers(m *mapping, cs *Callers, c *Config) {
	if items, ok := m.list("allow_cidrs"); ok {
		if len(items) == 0 {
			m.errorf("allow_cidrs", "must not be empty; %s", allowEveryoneHint)
		} else {
			cs.AllowCIDRs = nil
		}
		for i, it := range items {
			p := index(m.key("allow_cidrs"), i)
			s, ok := d.scalar(p, it)
			if !ok {
				continue
			}
			prefix, err := parsePrefix(s)
			if err != nil {
				d.add(p, it, err.Error())
				continue
			}
			cs.AllowCIDRs = append(cs.AllowCIDRs, prefix)
		}
	}

	items, _ := m.list("keys")
	names := map[string]string{} // name → path of its first use
	keys := map[string]string{}  // key → path of its first use
	for i, it := range items {
		p := index(m.key("keys"), i)
		km := d.mapping(p, it, it)
		var k CallerKey
		if km.str("name", &k.Name) && k.Name == "" {
			km.errorf("name", "must not be empty%s", km.emptyHint("name"))
		} else if !km.has("name") {
			km.errorf("name", "required")
		} else if first, dup := names[k.Name]; dup {
			km.errorf("name", "duplicate of %s", first)
		} else {
			names[k.Name] = p
		}
		km.secret("key", "key_file", &k.Key, true)
		if k.Key != "" {
			if first, dup := keys[k.Key]; dup {
				km.errorf(keyOrFile(km, "key"), "same key as %s", first)
			} else {
				keys[k.Key] = p
			}
		}
		if apps, ok := km.list("apps"); ok {
			if len(apps) == 0 {
				km.errorf("apps", "must not be empty; omit apps to allow every app")
			}
			k.Apps = []string{}
			for j, an := range apps {
				ap := index(km.key("apps"), j)
				name, ok := d.scalar(ap, an)
				if !ok {
					continue
				}
				if _, found := c.App(name); !found {
					d.add(ap, an, fmt.Sprintf("no app named %q", name))
				}
				k.Apps = append(k.Apps, name)
			}
		}
		km.nonNegative("per_minute", &k.PerMinute)
		km.done()
		cs.Keys = append(cs.Keys, k)
	}
	m.done()
}

// keyOrFile returns whichever of key and key+"_file" m holds, for errors
// about a secret.
func keyOrFile(m *mapping, key string) string {
	if m.has(key + "_file") {
		return key + "_file"
	}
	return key
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

func (d *decoder) apps(m *mapping) []App {
	items, ok := m.list("apps")
	if len(items) == 0 {
		if ok || !m.has("apps") {
			m.errorf("apps", "at least one app is required")
		}
		return nil
	}
	apps := make([]App, 0, len(items))
	for i, it := range items {
		apps = append(apps, d.app(index("apps", i), it, apps))
	}
	return apps
}

// app decodes one app; prev are the apps before it, for uniqueness checks.
func (d *decoder) app(path string, n *yaml.Node, prev []App) App {
	m := d.mapping(path, n, n)
	a := App{Kind: KindOfficial, RefreshBefore: 10 * time.Minute}

	switch {
	case m.str("name", &a.Name):
		if a.Name == "" {
			m.errorf("name", "must not be empty%s", m.emptyHint("name"))
		} else if msg := checkAppName(a.Name); msg != "" {
			m.errorf("name", "%s", msg)
		}
		for i, p := range prev {
			if p.Name == a.Name && a.Name != "" {
				m.errorf("name", "duplicate of apps[%d]", i)
				break
			}
		}
	case !m.has("name"):
		m.errorf("name", "required")
	}

	m.enum("kind", &a.Kind, KindOfficial, KindMiniProgram, KindWeCom)
	wecom := a.Kind == KindWeCom

	switch {
	case m.str("appid", &a.AppID):
		if a.AppID == "" {
			m.errorf("appid", "must not be empty%s", m.emptyHint("appid"))
		} else if strings.ContainsFunc(a.AppID, unicode.IsSpace) {
			m.errorf("appid", "must not contain whitespace")
		}
	case !m.has("appid"):
		m.errorf("appid", "required")
	}

	m.secret("secret", "secret_file", &a.Secret, true)

	if a.AppID != "" && a.Secret != "" {
		for i, p := range prev {
			switch {
			case wecom && p.Kind == KindWeCom && p.AppID == a.AppID && p.Secret == a.Secret:
				m.errorf(keyOrFile(m, "secret"), "same corpid and secret as apps[%d]; one WeCom secret is one token, configure it once", i)
			case !wecom && p.Kind != KindWeCom && p.AppID == a.AppID:
				m.errorf("appid", "already used by apps[%d]; two apps with one appid would fight over its token", i)
			default:
				continue
			}
			break
		}
	}

	if wecom {
		if m.value("token_mode") != nil {
			m.errorf("token_mode", "not allowed with kind wecom (WeCom apps always use gettoken)")
		}
	} else {
		a.TokenMode = TokenModeStable
		m.enum("token_mode", &a.TokenMode, TokenModeStable, TokenModeClassic)
	}

	a.Upstream = defaultUpstream
	if wecom {
		a.Upstream = defaultWeComUpstream
	}
	if m.str("upstream", &a.Upstream) {
		if err := checkUpstream(a.Upstream); err != nil {
			m.errorf("upstream", "%v", err)
		}
		a.Upstream = strings.TrimRight(a.Upstream, "/")
	}

	if m.duration("refresh_before", &a.RefreshBefore) && (a.RefreshBefore <= 0 || a.RefreshBefore > maxRefreshBefore) {
		m.errorf("refresh_before", "must be > 0 and <= 1h (tokens live 2h)")
	}

	a.Quotas = d.quotas(m.sub("quotas"))
	a.Breaker = d.breaker(m.sub("breaker"))
	m.done()
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

func (d *decoder) quotas(m *mapping) Quotas {
	q := Quotas{
		ResetTimezone:    defaultResetTimezone,
		TokenFetchPerDay: defaultTokenFetches,
		APIs:             map[string]Limit{},
		OnLimit:          OnLimitReject,
		MaxWait:          2 * time.Second,
		RespectUpstream:  true,
	}
	if m.str("reset_timezone", &q.ResetTimezone) {
		if q.ResetTimezone == "" {
			m.errorf("reset_timezone", "must not be empty%s", m.emptyHint("reset_timezone"))
		} else if _, err := d.location(q.ResetTimezone); err != nil {
			m.errorf("reset_timezone", "unknown time zone %q (want an IANA name such as Asia/Shanghai or UTC)", q.ResetTimezone)
		}
	}
	q.Location, _ = d.location(q.ResetTimezone)
	m.nonNegative("token_fetch_per_day", &q.TokenFetchPerDay)
	q.Default = d.limit(m.sub("default"))

	am := m.sub("apis")
	for _, api := range am.order {
		if !strings.HasPrefix(api, "/") {
			am.value(api)
			am.errorf(api, "API paths must start with /")
			continue
		}
		q.APIs[api] = d.limit(am.sub(api))
	}
	am.done()

	m.enum("on_limit", &q.OnLimit, OnLimitReject, OnLimitWait)
	if m.duration("max_wait", &q.MaxWait) && q.MaxWait < 0 {
		m.errorf("max_wait", "must be >= 0")
	}
	m.boolean("respect_upstream", &q.RespectUpstream)
	m.done()
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

func (d *decoder) limit(m *mapping) Limit {
	var l Limit
	m.nonNegative("per_minute", &l.PerMinute)
	m.nonNegative("per_day", &l.PerDay)
	m.nonNegative("burst", &l.Burst)
	m.done()
	return l
}

func (d *decoder) breaker(m *mapping) Breaker {
	b := Breaker{
		ConsecutiveFailures: 5,
		FailureRatio:        0.5,
		MinRequests:         20,
		Interval:            10 * time.Second,
		OpenTimeout:         30 * time.Second,
		HalfOpenRequests:    1,
	}
	m.count("consecutive_failures", &b.ConsecutiveFailures, 1)
	if m.float("failure_ratio", &b.FailureRatio) && (b.FailureRatio <= 0 || b.FailureRatio > 1) {
		m.errorf("failure_ratio", "must be > 0 and <= 1")
	}
	m.count("min_requests", &b.MinRequests, 1)
	if m.duration("interval", &b.Interval) && b.Interval < 0 {
		m.errorf("interval", "must be >= 0")
	}
	if m.duration("open_timeout", &b.OpenTimeout) && b.OpenTimeout <= 0 {
		m.errorf("open_timeout", "must be > 0")
	}
	m.count("half_open_requests", &b.HalfOpenRequests, 1)
	m.done()
	return b
}
