package config

import (
	"fmt"
	"strings"
	"time"
	"unicode"

	"github.com/wxproxy/wxproxy/wxcrypt"
)

// Platform kinds.
const (
	// KindOpenPlatform is a WeChat Open Platform third-party platform
	// (第三方平台): one component app acting for many merchants.
	KindOpenPlatform = "open_platform"
	// KindWeComSuite is a WeCom service provider's suite (服务商第三方应用,
	// SPEC §13): one suite installed by many corps.
	KindWeComSuite = "wecom_suite"
)

// The get_permanent_code APIs a suite may use.
const (
	PermanentCodeV1 = "v1" // /cgi-bin/service/get_permanent_code: also returns the corp's first token
	PermanentCodeV2 = "v2" // /cgi-bin/service/v2/get_permanent_code: WeCom's recommended, faster one
)

// Defaults of the platform keys.
const (
	defaultAuthorizerIdle = 24 * time.Hour
	defaultCallbackBody   = 64 * kib
)

// Platform is one third-party platform (SPEC §12). Its name shares the
// namespace of app names: /{name}/... calls its component APIs and
// /{name}@{authorizer_appid}/... calls APIs on behalf of a merchant.
//
// A WeCom suite (Kind KindWeComSuite) uses SuiteID instead of
// ComponentAppID: /{name}/... calls suite and provider APIs and
// /{name}@{corpid}/... calls APIs as an installing corp.
type Platform struct {
	Name string
	Kind string // KindOpenPlatform or KindWeComSuite
	// ComponentAppID is the component app's appid; it is also the receive
	// id of its encrypted pushes. Open Platform only.
	ComponentAppID string
	// SuiteID is the suite's id (WeCom suites only); the receive id of
	// its pushes.
	SuiteID string
	// ProviderCorpID is the service provider's corpid (WeCom suites,
	// optional): the receive id of URL checks, and with ProviderSecret it
	// buys the provider token.
	ProviderCorpID string
	ProviderSecret string
	// PermanentCodeAPI is the get_permanent_code API a suite uses:
	// PermanentCodeV1 (default) or PermanentCodeV2.
	PermanentCodeAPI string
	Secret           string // component_appsecret, or the suite_secret
	// Token is the message verification token of the push URL.
	Token string
	// EncodingAESKey (43 characters) decrypts pushes; PreviousEncodingAESKey,
	// when set, is tried when decryption with it fails.
	EncodingAESKey         string
	PreviousEncodingAESKey string
	Upstream               string // base URL without a trailing slash
	RefreshBefore          time.Duration
	// AuthorizerIdle: merchants not called for this long are refreshed on
	// demand only, not proactively.
	AuthorizerIdle time.Duration
	Quotas         Quotas // counted per merchant
	Breaker        Breaker
}

// Callbacks configures the listener that receives WeChat's pushes. It is
// the one listener meant to face the internet.
type Callbacks struct {
	Listen            string        // "" = no callback listener
	MaxBodyBytes      int64         // larger push bodies are refused (413)
	ReadHeaderTimeout time.Duration // a sender must send its headers within this
	ReadTimeout       time.Duration // ... and the whole request within this
}

// Platform returns the platform named name.
func (c *Config) Platform(name string) (*Platform, bool) {
	for i := range c.Platforms {
		if c.Platforms[i].Name == name {
			return &c.Platforms[i], true
		}
	}
	return nil, false
}

// idOK reports whether id is usable as an appid, suite id or corpid: not
// empty, no whitespace, no @ or / (they would break routing).
func idOK(id string) bool {
	return id != "" && !strings.ContainsFunc(id, unicode.IsSpace) && !strings.ContainsAny(id, "@/")
}

func (d *decoder) callbacks(f *callbacksFile, c *Config) Callbacks {
	cb := Callbacks{
		Listen:            f.Listen.v,
		MaxBodyBytes:      f.MaxBodyBytes.or(defaultCallbackBody),
		ReadHeaderTimeout: f.ReadHeaderTimeout.or(5 * time.Second),
		ReadTimeout:       f.ReadTimeout.or(10 * time.Second),
	}
	if d.addr("callbacks.listen", f.Listen) && f.Listen.set {
		for _, o := range []struct{ key, addr string }{{"listen", c.Listen}, {"admin.listen", c.Admin.Listen}} {
			if sameListener(cb.Listen, o.addr) {
				d.errorf("callbacks.listen", "must differ from %s (%q)", o.key, o.addr)
			}
		}
	}
	if cb.MaxBodyBytes <= 0 || cb.MaxBodyBytes > mib {
		d.errorf("callbacks.max_body_bytes", "must be > 0 and <= 1MiB (WeChat's pushes are a few KB)")
	}
	if cb.ReadHeaderTimeout <= 0 {
		d.errorf("callbacks.read_header_timeout", "must be > 0")
	}
	if cb.ReadTimeout <= 0 {
		d.errorf("callbacks.read_timeout", "must be > 0")
	}
	if len(c.Platforms) > 0 && cb.Listen == "" && !d.has("callbacks.listen") {
		d.errorf("callbacks.listen", "required with platforms (WeChat pushes the component_verify_ticket or suite_ticket there)")
	}
	return cb
}

// platform checks the platform at path p; apps and prev are the names
// already taken.
func (d *decoder) platform(p string, f *platformFile, apps []App, prev []Platform) Platform {
	pl := Platform{
		Name:           f.Name.v,
		Kind:           d.enum(p+".kind", f.Kind, KindOpenPlatform, KindOpenPlatform, KindWeComSuite),
		ComponentAppID: f.ComponentAppID.v,
		SuiteID:        f.SuiteID.v,
		ProviderCorpID: f.ProviderCorpID.v,
		Upstream:       defaultUpstream,
		RefreshBefore:  f.RefreshBefore.or(10 * time.Minute),
		AuthorizerIdle: f.AuthorizerIdle.or(defaultAuthorizerIdle),
	}
	if !d.has(p + ".kind") {
		d.errorf(p+".kind", "required (open_platform or wecom_suite)")
	}
	if pl.Kind == KindWeComSuite {
		pl.Upstream = defaultWeComUpstream
	}
	switch {
	case !d.has(p + ".name"):
		d.errorf(p+".name", "required")
	case pl.Name == "":
		d.errorf(p+".name", "must not be empty%s", d.hint(p+".name"))
	default:
		if msg := checkAppName(pl.Name); msg != "" {
			d.errorf(p+".name", "%s", msg)
		}
		for i, a := range apps {
			if a.Name == pl.Name {
				d.errorf(p+".name", "already the name of apps[%d]; apps and platforms share one namespace", i)
			}
		}
		for i, q := range prev {
			if q.Name == pl.Name {
				d.errorf(p+".name", "duplicate of platforms[%d]", i)
			}
		}
	}
	if pl.Kind == KindWeComSuite {
		d.suite(p, f, &pl, prev)
	} else {
		d.component(p, f, &pl, prev)
	}
	pl.Secret = d.secret(p, "secret", f.Secret, f.SecretFile, true)
	pl.Token = d.secret(p, "token", f.Token, f.TokenFile, true)
	pl.EncodingAESKey = d.secret(p, "encoding_aes_key", f.EncodingAESKey, f.EncodingAESKeyFile, true)
	pl.PreviousEncodingAESKey = d.secret(p, "previous_encoding_aes_key", f.PreviousEncodingAESKey, f.PreviousEncodingAESKeyFile, false)
	if pl.EncodingAESKey != "" {
		if _, err := wxcrypt.DecodeKey(pl.EncodingAESKey); err != nil {
			d.errorf(d.secretPath(p, "encoding_aes_key"), "must be the 43-character EncodingAESKey of WeChat's console (letters and digits)")
		}
	}
	if pl.PreviousEncodingAESKey != "" {
		if _, err := wxcrypt.DecodeKey(pl.PreviousEncodingAESKey); err != nil {
			d.errorf(d.secretPath(p, "previous_encoding_aes_key"), "must be a 43-character EncodingAESKey (letters and digits)")
		}
	}
	if f.Upstream.set {
		if err := checkUpstream(f.Upstream.v); err != nil {
			d.errorf(p+".upstream", "%v", err)
		}
		pl.Upstream = strings.TrimRight(f.Upstream.v, "/")
	}
	if pl.RefreshBefore <= 0 || pl.RefreshBefore > maxRefreshBefore {
		d.errorf(p+".refresh_before", "must be > 0 and <= 1h (tokens live 2h)")
	}
	if pl.AuthorizerIdle <= 0 {
		d.errorf(p+".authorizer_idle", "must be > 0")
	}
	pl.Quotas = d.quotas(p+".quotas", &f.Quotas)
	pl.Breaker = d.breaker(p+".breaker", &f.Breaker)
	return pl
}

// keyAppProblem says what is wrong with name in callers.keys[].apps, or
// "": it names an app, a platform (its component and all its merchants),
// or one merchant of a platform as {platform}@{authorizer_appid}.
func (c *Config) keyAppProblem(name string) string {
	if _, found := c.App(name); found {
		return ""
	}
	pname, appid, merchant := strings.Cut(name, "@")
	if _, found := c.Platform(pname); !found {
		switch {
		case merchant:
			return fmt.Sprintf("no platform named %q", pname)
		case len(c.Platforms) > 0:
			return fmt.Sprintf("no app or platform named %q", name)
		}
		return fmt.Sprintf("no app named %q", name)
	}
	if merchant && (appid == "" || len(appid) > 64 || strings.ContainsFunc(appid, unicode.IsSpace) || strings.ContainsAny(appid, "@/")) {
		return fmt.Sprintf("%q: want {platform}@{authorizer_appid}", name)
	}
	return ""
}
