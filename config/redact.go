package config

import (
	"fmt"
	"io"
	"net/url"
	"strconv"

	"gopkg.in/yaml.v3"
)

// WriteRedacted writes the effective configuration (defaults applied) to w as
// YAML that Parse reads back. Every app secret, caller key, admin token and
// Redis password (also inside store.redis.url) is replaced by Redacted; an
// empty one stays "" so an operator sees it is unset. Literal $ signs are
// written as $$, so parsing the output yields the same values again.
func (c *Config) WriteRedacted(w io.Writer) error {
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	if err := enc.Encode(c.redacted()); err != nil {
		return fmt.Errorf("config: write: %w", err)
	}
	return enc.Close()
}

// The out* types give WriteRedacted its key names and order, and hold every
// value as the text the file format uses.
type (
	outConfig struct {
		Listen          string     `yaml:"listen"`
		ShutdownTimeout string     `yaml:"shutdown_timeout"`
		UpstreamTimeout string     `yaml:"upstream_timeout"`
		MaxBodyBytes    any        `yaml:"max_body_bytes"` // int64 or "10MiB"
		RetryBodyBytes  any        `yaml:"retry_body_bytes"`
		MaxBuffered     any        `yaml:"max_buffered_bytes"`
		ReadHeader      string     `yaml:"read_header_timeout"`
		BodyRead        string     `yaml:"body_read_timeout"`
		Idle            string     `yaml:"idle_timeout"`
		MaxHeaderBytes  any        `yaml:"max_header_bytes"`
		UpstreamProxy   string     `yaml:"upstream_proxy"`
		Admin           outAdmin   `yaml:"admin"`
		Log             outLog     `yaml:"log"`
		Store           outStore   `yaml:"store"`
		Callers         outCallers `yaml:"callers"`
		DefaultApp      string     `yaml:"default_app"`
		Apps            []outApp   `yaml:"apps"`
	}
	outAdmin struct {
		Listen string `yaml:"listen"`
		Token  string `yaml:"token"`
		PProf  bool   `yaml:"pprof"`
	}
	outLog struct {
		Format string `yaml:"format"`
		Level  string `yaml:"level"`
	}
	outStore struct {
		Kind  string   `yaml:"kind"`
		Path  string   `yaml:"path"`
		Redis outRedis `yaml:"redis"`
	}
	outRedis struct {
		URL          string   `yaml:"url,omitempty"`
		Addrs        []string `yaml:"addrs,omitempty,flow"`
		MasterName   string   `yaml:"master_name,omitempty"`
		Username     string   `yaml:"username,omitempty"`
		Password     string   `yaml:"password"`
		DB           int      `yaml:"db,omitempty"`
		KeyPrefix    string   `yaml:"key_prefix"`
		ReplicasHint int      `yaml:"replicas_hint"`
	}
	outCallers struct {
		AllowCIDRs []string    `yaml:"allow_cidrs,flow"`
		Keys       []outCaller `yaml:"keys,omitempty"`
	}
	outCaller struct {
		Name      string   `yaml:"name"`
		Key       string   `yaml:"key"`
		Apps      []string `yaml:"apps,omitempty,flow"`
		PerMinute int      `yaml:"per_minute"`
	}
	outApp struct {
		Name          string     `yaml:"name"`
		Kind          string     `yaml:"kind"`
		AppID         string     `yaml:"appid"`
		Secret        string     `yaml:"secret"`
		TokenMode     string     `yaml:"token_mode,omitempty"`
		Upstream      string     `yaml:"upstream"`
		RefreshBefore string     `yaml:"refresh_before"`
		Quotas        outQuotas  `yaml:"quotas"`
		Breaker       outBreaker `yaml:"breaker"`
	}
	outQuotas struct {
		ResetTimezone    string              `yaml:"reset_timezone"`
		TokenFetchPerDay int                 `yaml:"token_fetch_per_day"`
		Default          outLimit            `yaml:"default"`
		APIs             map[string]outLimit `yaml:"apis,omitempty"`
		OnLimit          string              `yaml:"on_limit"`
		MaxWait          string              `yaml:"max_wait"`
		RespectUpstream  bool                `yaml:"respect_upstream"`
	}
	outLimit struct {
		PerMinute int `yaml:"per_minute"`
		PerDay    int `yaml:"per_day"`
		Burst     int `yaml:"burst"`
	}
	outBreaker struct {
		ConsecutiveFailures uint32  `yaml:"consecutive_failures"`
		FailureRatio        float64 `yaml:"failure_ratio"`
		MinRequests         uint32  `yaml:"min_requests"`
		Interval            string  `yaml:"interval"`
		OpenTimeout         string  `yaml:"open_timeout"`
		HalfOpenRequests    uint32  `yaml:"half_open_requests"`
	}
)

func (c *Config) redacted() outConfig {
	e := escapeDollars
	o := outConfig{
		Listen:          e(c.Listen),
		ShutdownTimeout: formatDuration(c.ShutdownTimeout),
		UpstreamTimeout: formatDuration(c.UpstreamTimeout),
		MaxBodyBytes:    sizeValue(c.MaxBodyBytes),
		RetryBodyBytes:  sizeValue(c.RetryBodyBytes),
		MaxBuffered:     sizeValue(c.MaxBufferedBytes),
		ReadHeader:      formatDuration(c.ReadHeaderTimeout),
		BodyRead:        formatDuration(c.BodyReadTimeout),
		Idle:            formatDuration(c.IdleTimeout),
		MaxHeaderBytes:  sizeValue(c.MaxHeaderBytes),
		UpstreamProxy:   e(redactURL(c.UpstreamProxy)),
		Admin:           outAdmin{Listen: e(c.Admin.Listen), Token: redact(c.Admin.Token), PProf: c.Admin.PProf},
		Log:             outLog{Format: c.Log.Format, Level: c.Log.Level},
		Store: outStore{
			Kind: c.Store.Kind,
			Path: e(c.Store.Path),
			Redis: outRedis{
				URL:          e(redactURL(c.Store.Redis.URL)),
				MasterName:   e(c.Store.Redis.MasterName),
				Username:     e(c.Store.Redis.Username),
				Password:     redact(c.Store.Redis.Password),
				DB:           c.Store.Redis.DB,
				KeyPrefix:    e(c.Store.Redis.KeyPrefix),
				ReplicasHint: c.Store.Redis.ReplicasHint,
			},
		},
		DefaultApp: e(c.DefaultApp),
	}
	for _, a := range c.Store.Redis.Addrs {
		o.Store.Redis.Addrs = append(o.Store.Redis.Addrs, e(a))
	}
	for _, p := range c.Callers.AllowCIDRs {
		o.Callers.AllowCIDRs = append(o.Callers.AllowCIDRs, p.String())
	}
	for _, k := range c.Callers.Keys {
		ok := outCaller{Name: e(k.Name), Key: redact(k.Key), PerMinute: k.PerMinute}
		for _, a := range k.Apps {
			ok.Apps = append(ok.Apps, e(a))
		}
		o.Callers.Keys = append(o.Callers.Keys, ok)
	}
	for _, a := range c.Apps {
		q, b := a.Quotas, a.Breaker
		o.Apps = append(o.Apps, outApp{
			Name:          e(a.Name),
			Kind:          a.Kind,
			AppID:         e(a.AppID),
			Secret:        redact(a.Secret),
			TokenMode:     a.TokenMode,
			Upstream:      e(a.Upstream),
			RefreshBefore: formatDuration(a.RefreshBefore),
			Quotas: outQuotas{
				ResetTimezone:    e(q.ResetTimezone),
				TokenFetchPerDay: q.TokenFetchPerDay,
				Default:          outLimit(q.Default),
				APIs:             outLimits(q.APIs),
				OnLimit:          q.OnLimit,
				MaxWait:          formatDuration(q.MaxWait),
				RespectUpstream:  q.RespectUpstream,
			},
			Breaker: outBreaker{
				ConsecutiveFailures: b.ConsecutiveFailures,
				FailureRatio:        b.FailureRatio,
				MinRequests:         b.MinRequests,
				Interval:            formatDuration(b.Interval),
				OpenTimeout:         formatDuration(b.OpenTimeout),
				HalfOpenRequests:    b.HalfOpenRequests,
			},
		})
	}
	return o
}

// MarshalYAML writes a limit on one line: { per_minute: 600, per_day: 0, burst: 0 }.
func (l outLimit) MarshalYAML() (any, error) {
	var n yaml.Node
	if err := n.Encode(struct {
		PerMinute int `yaml:"per_minute"`
		PerDay    int `yaml:"per_day"`
		Burst     int `yaml:"burst"`
	}(l)); err != nil {
		return nil, err
	}
	n.Style = yaml.FlowStyle
	return &n, nil
}

// outLimits converts the APIs of Quotas; the encoder sorts them by path.
func outLimits(apis map[string]Limit) map[string]outLimit {
	o := make(map[string]outLimit, len(apis))
	for api, l := range apis {
		o[api] = outLimit(l)
	}
	return o
}

// sizeValue returns n as formatSize prints it, as a number when it has no
// unit (so the YAML encoder does not quote it).
func sizeValue(n int64) any {
	if s := formatSize(n); s != strconv.FormatInt(n, 10) {
		return s
	}
	return n
}

// redact hides a secret but shows that an empty one is unset.
func redact(secret string) string {
	if secret == "" {
		return ""
	}
	return Redacted
}

// redactURL replaces the password of a URL by Redacted (percent-encoded, so
// the result still parses). A URL that does not parse is hidden entirely:
// where the password starts is then unknown.
func redactURL(s string) string {
	if s == "" {
		return ""
	}
	u, err := url.Parse(s)
	if err != nil {
		return Redacted
	}
	if _, has := u.User.Password(); has {
		u.User = url.UserPassword(u.User.Username(), Redacted)
	}
	return u.String()
}
