package config

import (
	"fmt"
	"io"
	"net/url"

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

// redacted returns c in the file types, secrets redacted.
func (c *Config) redacted() *file {
	r := c.Store.Redis
	f := &file{
		Listen:            some(c.Listen),
		ShutdownTimeout:   some(c.ShutdownTimeout),
		UpstreamTimeout:   some(c.UpstreamTimeout),
		MaxBodyBytes:      some(c.MaxBodyBytes),
		RetryBodyBytes:    some(c.RetryBodyBytes),
		MaxBufferedBytes:  some(c.MaxBufferedBytes),
		ReadHeaderTimeout: some(c.ReadHeaderTimeout),
		BodyReadTimeout:   some(c.BodyReadTimeout),
		IdleTimeout:       some(c.IdleTimeout),
		MaxHeaderBytes:    some(c.MaxHeaderBytes),
		UpstreamProxy:     some(redactURL(c.UpstreamProxy)),
		TLS:               tlsFile{CertFile: nonZero(c.TLS.CertFile), KeyFile: nonZero(c.TLS.KeyFile), ClientCAFile: nonZero(c.TLS.ClientCAFile)},
		Admin:             adminFile{Listen: some(c.Admin.Listen), Token: redact(c.Admin.Token), PProf: some(c.Admin.PProf)},
		Log:               logFile{Format: some(c.Log.Format), Level: some(c.Log.Level)},
		Store: storeFile{Kind: some(c.Store.Kind), Path: some(c.Store.Path), Redis: redisFile{
			Mode:             some(r.Mode),
			URL:              nonZero(redactURL(r.URL)),
			Addrs:            strs(r.Addrs),
			MasterName:       nonZero(r.MasterName),
			Username:         nonZero(r.Username),
			Password:         redact(r.Password),
			SentinelUsername: nonZero(r.SentinelUsername),
			SentinelPassword: nonZero(string(redact(r.SentinelPassword).v)),
			TLS:              redisTLSFile{CAFile: nonZero(r.TLSCAFile), ServerName: nonZero(r.TLSServerName)},
			DB:               nonZero(r.DB),
			KeyPrefix:        some(r.KeyPrefix),
			ReplicasHint:     some(r.ReplicasHint),
			LockLease:        some(r.LockLease),
		}},
		DefaultApp: some(c.DefaultApp),
	}
	for _, p := range c.Callers.AllowCIDRs {
		f.Callers.AllowCIDRs = append(f.Callers.AllowCIDRs, some(p.String()))
	}
	for _, k := range c.Callers.Keys {
		f.Callers.Keys = append(f.Callers.Keys, callerKeyFile{
			Name: some(k.Name), Key: redact(k.Key), Apps: strs(k.Apps), APIs: strs(k.APIs), CertCN: nonZero(k.CertCN), PerMinute: some(k.PerMinute)})
	}
	for _, a := range c.Apps {
		fa := appFile{
			Name:          some(a.Name),
			Kind:          some(a.Kind),
			AppID:         some(a.AppID),
			Secret:        redact(a.Secret),
			TokenMode:     nonZero(a.TokenMode),
			Upstream:      some(a.Upstream),
			Failover:      strs(a.Failover),
			RefreshBefore: some(a.RefreshBefore),
			TokenWait:     some(a.TokenWait),
			Tickets:       strs(a.Tickets),
			AgentID:       nonZero(int(a.AgentID)),
			Quotas:        quotasOut(a.Quotas),
			Breaker:       breakerOut(a.Breaker),
		}
		f.Apps = append(f.Apps, fa)
	}
	for _, p := range c.Platforms {
		f.Platforms = append(f.Platforms, platformFile{
			Name:                   some(p.Name),
			Kind:                   some(p.Kind),
			ComponentAppID:         nonZero(p.ComponentAppID),
			SuiteID:                nonZero(p.SuiteID),
			ProviderCorpID:         nonZero(p.ProviderCorpID),
			ProviderSecret:         nonZero(redactNonEmpty(p.ProviderSecret)),
			PermanentCodeAPI:       nonZero(p.PermanentCodeAPI),
			Secret:                 redact(p.Secret),
			Token:                  redact(p.Token),
			EncodingAESKey:         redact(p.EncodingAESKey),
			PreviousEncodingAESKey: nonZero(redactNonEmpty(p.PreviousEncodingAESKey)),
			Upstream:               some(p.Upstream),
			RefreshBefore:          some(p.RefreshBefore),
			AuthorizerIdle:         some(p.AuthorizerIdle),
			Quotas:                 quotasOut(p.Quotas),
			Breaker:                breakerOut(p.Breaker),
		})
	}
	if c.Callbacks.Listen != "" || len(c.Platforms) > 0 {
		f.Callbacks = callbacksFile{
			Listen:            some(c.Callbacks.Listen),
			MaxBodyBytes:      some(c.Callbacks.MaxBodyBytes),
			ReadHeaderTimeout: some(c.Callbacks.ReadHeaderTimeout),
			ReadTimeout:       some(c.Callbacks.ReadTimeout),
		}
	}
	return f
}

// redactNonEmpty hides a set secret; an unset one stays "".
func redactNonEmpty(secret string) string {
	if secret == "" {
		return ""
	}
	return Redacted
}

func quotasOut(q Quotas) quotasFile {
	out := quotasFile{
		ResetTimezone:    some(q.ResetTimezone),
		TokenFetchPerDay: some(q.TokenFetchPerDay),
		Default:          limitOut(q.Default),
		APIs:             map[apiPath]limitFile{},
		OnLimit:          some(q.OnLimit),
		MaxWait:          some(q.MaxWait),
		RespectUpstream:  some(q.RespectUpstream),
		SyncFromWeChat:   nonZero(q.SyncFromWeChat),
	}
	for api, l := range q.APIs {
		out.APIs[apiPath(api)] = limitOut(l) // the encoder sorts them by path
	}
	return out
}

func breakerOut(b Breaker) breakerFile {
	return breakerFile{
		ConsecutiveFailures: some(int(b.ConsecutiveFailures)),
		FailureRatio:        some(b.FailureRatio),
		MinRequests:         some(int(b.MinRequests)),
		Interval:            some(b.Interval),
		OpenTimeout:         some(b.OpenTimeout),
		HalfOpenRequests:    some(int(b.HalfOpenRequests)),
	}
}

func limitOut(l Limit) limitFile {
	return limitFile{PerMinute: some(l.PerMinute), PerDay: some(l.PerDay), Burst: some(l.Burst)}
}

// strs returns ss as vals; nil stays nil.
func strs(ss []string) []str {
	var out []str
	for _, s := range ss {
		out = append(out, some(s))
	}
	return out
}

// redact hides a secret but shows that an empty one is unset.
func redact(secret string) str {
	if secret == "" {
		return some("")
	}
	return some(Redacted)
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
