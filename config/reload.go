package config

import (
	"fmt"
	"reflect"
)

// ReloadDiff returns the key paths of the settings that differ between c (the
// running configuration) and next but that a reload does not apply,
// top-level settings first, then the apps; nil when a reload applies every change. A reload applies
// apps[].quotas, apps[].breaker, callers and the tls files (a new
// certificate, key or client CA; turning TLS on or off waits); anything else (listen addresses,
// timeouts, body limits, admin, log, store, default_app, and an app's
// identity, secret, token mode and upstream) takes effect at the next restart.
// Adding, removing or renaming an app is reported as "apps".
//
// The paths index next's apps; secrets are named, never shown.
func (c *Config) ReloadDiff(next *Config) []string {
	var keys []string
	diff := func(key string, a, b any) {
		if !reflect.DeepEqual(a, b) {
			keys = append(keys, key)
		}
	}
	diff("listen", c.Listen, next.Listen)
	diff("shutdown_timeout", c.ShutdownTimeout, next.ShutdownTimeout)
	diff("upstream_timeout", c.UpstreamTimeout, next.UpstreamTimeout)
	diff("max_body_bytes", c.MaxBodyBytes, next.MaxBodyBytes)
	diff("retry_body_bytes", c.RetryBodyBytes, next.RetryBodyBytes)
	diff("max_buffered_bytes", c.MaxBufferedBytes, next.MaxBufferedBytes)
	diff("read_header_timeout", c.ReadHeaderTimeout, next.ReadHeaderTimeout)
	diff("body_read_timeout", c.BodyReadTimeout, next.BodyReadTimeout)
	diff("idle_timeout", c.IdleTimeout, next.IdleTimeout)
	diff("max_header_bytes", c.MaxHeaderBytes, next.MaxHeaderBytes)
	diff("upstream_proxy", c.UpstreamProxy, next.UpstreamProxy)
	diff("tls", c.TLS.Enabled(), next.TLS.Enabled()) // the files themselves are re-read on reload
	diff("admin.listen", c.Admin.Listen, next.Admin.Listen)
	diff("admin.token", c.Admin.Token, next.Admin.Token)
	diff("admin.pprof", c.Admin.PProf, next.Admin.PProf)
	diff("log.format", c.Log.Format, next.Log.Format)
	diff("log.level", c.Log.Level, next.Log.Level)
	diff("store.kind", c.Store.Kind, next.Store.Kind)
	diff("store.path", c.Store.Path, next.Store.Path)
	diff("store.redis", c.Store.Redis, next.Store.Redis)
	diff("default_app", c.DefaultApp, next.DefaultApp)
	diff("callbacks", c.Callbacks, next.Callbacks)
	diff("platforms", c.Platforms, next.Platforms)

	if !sameAppNames(c.Apps, next.Apps) {
		return append(keys, "apps")
	}
	for i, n := range next.Apps {
		a, _ := c.App(n.Name)
		p := fmt.Sprintf("apps[%d].", i)
		diff(p+"kind", a.Kind, n.Kind)
		diff(p+"appid", a.AppID, n.AppID)
		diff(p+"secret", a.Secret, n.Secret)
		diff(p+"token_mode", a.TokenMode, n.TokenMode)
		diff(p+"upstream", a.Upstream, n.Upstream)
		diff(p+"failover", a.Failover, n.Failover)
		diff(p+"refresh_before", a.RefreshBefore, n.RefreshBefore)
		diff(p+"token_wait", a.TokenWait, n.TokenWait)
		diff(p+"tickets", a.Tickets, n.Tickets)
		diff(p+"agent_id", a.AgentID, n.AgentID)
	}
	return keys
}

// sameAppNames reports whether a and b configure the same set of app names,
// in any order.
func sameAppNames(a, b []App) bool {
	if len(a) != len(b) {
		return false
	}
	names := make(map[string]bool, len(a))
	for _, x := range a {
		names[x.Name] = true
	}
	for _, x := range b {
		if !names[x.Name] {
			return false
		}
	}
	return true
}
