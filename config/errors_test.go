package config

import (
	"errors"
	"strings"
	"testing"
)

// TestErrors checks every validation rule: each case yields exactly the
// error text in want (one line per error, in file order).
func TestErrors(t *testing.T) {
	tests := []struct {
		name string
		src  string // oneApp is appended when src has no apps key
		want string
	}{
		// Top level.
		{"listen empty", `listen: ""`, `listen: must not be empty`},
		{"listen without port", `listen: localhost`, `listen: invalid address "localhost" (want host:port, e.g. ":8080")`},
		{"listen a bare port", `listen: 8080`, `listen: invalid address "8080" (want host:port, e.g. ":8080")`},
		{"shutdown_timeout syntax", `shutdown_timeout: abc`, `shutdown_timeout: invalid duration "abc"`},
		{"shutdown_timeout missing unit", `shutdown_timeout: 30`, `shutdown_timeout: invalid duration "30" (missing unit, e.g. "30s")`},
		{"shutdown_timeout zero", `shutdown_timeout: 0s`, `shutdown_timeout: must be > 0`},
		{"upstream_timeout negative", `upstream_timeout: -1s`, `upstream_timeout: must be > 0`},
		{"max_body_bytes zero", `max_body_bytes: 0`, `max_body_bytes: must be > 0`},
		{"max_body_bytes unit", `max_body_bytes: 10XB`,
			`max_body_bytes: invalid byte size "10XB" (want bytes, or a number with B, KB, MB, GB, KiB, MiB or GiB)`},
		{"retry_body_bytes negative", `retry_body_bytes: -1`, `retry_body_bytes: must be >= 0`},
		{"retry_body_bytes over max", "max_body_bytes: 1MiB\nretry_body_bytes: 2MiB",
			`retry_body_bytes: must be <= max_body_bytes (1MiB)`},
		{"max_buffered_bytes zero", `max_buffered_bytes: 0`, `max_buffered_bytes: must be > 0`},
		{"read_header_timeout zero", `read_header_timeout: 0s`, `read_header_timeout: must be > 0`},
		{"body_read_timeout negative", `body_read_timeout: -1s`, `body_read_timeout: must be > 0`},
		{"idle_timeout zero", `idle_timeout: 0s`, `idle_timeout: must be > 0`},
		{"max_header_bytes tiny", `max_header_bytes: 100`, `max_header_bytes: must be between 4KiB and 16MiB`},
		{"upstream_proxy scheme", `upstream_proxy: socks5://p:1080`, `upstream_proxy: must be an http:// or https:// URL (got scheme "socks5")`},
		{"upstream_proxy path", `upstream_proxy: http://p:3128/x`, `upstream_proxy: must be scheme://host:port with no path, query or fragment`},
		{"upstream_proxy no host", `upstream_proxy: "http:"`, `upstream_proxy: must name a host, e.g. http://egress.internal:3128`},
		{"upstream_proxy bad URL hides password", `upstream_proxy: "http://u:pw@[::1"`, `upstream_proxy: invalid URL`},
		{"admin.pprof not a bool", `admin: {pprof: maybe}`, `admin.pprof: must be true or false (got "maybe")`},
		{"app named wxproxy", `apps: [{name: wxproxy, appid: wx1, secret: s}]`, `apps[0].name: "wxproxy" is reserved: it is a WeChat API path root or a wxproxy route, and app names are URL path prefixes`},
		{"default_app unknown", `default_app: nope`, `default_app: no app named "nope"`},
		{"duplicate key", "listen: \":1\"\nlisten: \":2\"", `listen: duplicate key`},
		{"not a scalar", `listen: [":1"]`, `listen: must be a single value, not a list`},
		{"not a mapping", `admin: 5`, `admin: must be a mapping, not a single value`},
		{"unterminated reference", `listen: "${PORT"`, `listen: unterminated ${ (missing })`},
		{"bad reference", `listen: "${PORT-80}"`,
			`listen: invalid ${...} reference: want ${NAME} or ${NAME:-default}, NAME made of letters, digits and _`},

		// admin
		{"admin.listen empty", `admin: {listen: ""}`, `admin.listen: must not be empty`},
		{"admin.listen equals listen", "listen: \":9000\"\nadmin: {listen: \"127.0.0.1:9000\"}",
			`admin.listen: must differ from listen (":9000")`},
		{"listen equals default admin.listen", `listen: "127.0.0.1:9090"`,
			`admin.listen: must differ from listen ("127.0.0.1:9090")`},
		{"admin token and token_file", `admin: {token: a, token_file: b}`,
			`admin.token_file: set either token or token_file, not both`},

		// log
		{"log.format", `log: {format: xml}`, `log.format: must be one of json, text (got "xml")`},
		{"log.level", `log: {level: verbose}`, `log.level: must be one of debug, info, warn, error (got "verbose")`},

		// store
		{"store.kind", `store: {kind: mongo}`, `store.kind: must be one of memory, file, redis (got "mongo")`},
		{"file store path", `store: {kind: file, path: ""}`, `store.path: must not be empty with kind: file`},
		{"redis needs url or addrs", `store: {kind: redis}`, `store.redis.url: required with store kind redis (or addrs)`},
		{"redis url from unset variable", `store: {kind: redis, redis: {url: "${REDIS_URL}"}}`,
			`store.redis.url: must not be empty with store kind redis (${REDIS_URL} expanded to ""; is the variable set?)`},
		{"redis url and addrs", `store: {kind: redis, redis: {url: "redis://h:6379", addrs: ["a:6379"]}}`,
			`store.redis.addrs: set either url or addrs, not both`},
		{"redis url scheme", `store: {redis: {url: "http://h:6379"}}`,
			`store.redis.url: scheme must be redis or rediss (got "http")`},
		{"redis url host", `store: {redis: {url: "redis://"}}`,
			`store.redis.url: missing host (want redis://[user:password@]host:port[/db])`},
		{"redis url database", `store: {redis: {url: "rediss://h:6379/x"}}`,
			`store.redis.url: database (the URL path) must be a number >= 0 (got "x")`},
		{"redis url unparsable", `store: {redis: {url: "redis://:pass%zzword@h:6379"}}`,
			`store.redis.url: not a valid URL (percent-encode special characters in the password)`},
		{"redis addrs", `store: {redis: {mode: cluster, addrs: ["h:6379", "h"]}}`,
			`store.redis.addrs[1]: invalid address "h" (want host:port)`},
		{"redis db", `store: {redis: {addrs: ["h:6379"], db: -1}}`, `store.redis.db: must be >= 0`},
		{"redis db with url", `store: {redis: {url: "redis://h:6379", db: 1}}`,
			`store.redis.db: only with addrs; with url the database is the URL path (redis://host:6379/DB)`},
		{"redis master_name with url", `store: {redis: {url: "redis://h:6379", master_name: m}}`,
			`store.redis.url: not with mode: sentinel; list the Sentinels in addrs and name the master in master_name`},
		{"redis mode", `store: {redis: {mode: replicated}}`,
			`store.redis.mode: must be one of standalone, cluster, sentinel (got "replicated")`},
		{"redis standalone with many addrs", `store: {redis: {addrs: ["a:6379", "b:6379"]}}`,
			`store.redis.addrs: mode standalone takes one address (got 2); set mode: cluster for a Redis Cluster, or mode: sentinel with master_name`},
		{"redis master_name with cluster", `store: {redis: {mode: cluster, addrs: ["a:6379"], master_name: m}}`,
			`store.redis.master_name: only with mode: sentinel (mode is cluster)`},
		{"redis sentinel_password with standalone", `store: {redis: {url: "redis://h:6379", sentinel_password: x}}`,
			`store.redis.sentinel_password: only with mode: sentinel (mode is standalone)`},
		{"redis sentinel without master_name", `store: {redis: {mode: sentinel, addrs: ["a:26379"]}}`,
			`store.redis.master_name: required with mode: sentinel`},
		{"redis sentinel with url", `store: {redis: {mode: sentinel, url: "redis://h:6379", master_name: m}}`,
			`store.redis.url: not with mode: sentinel; list the Sentinels in addrs and name the master in master_name`},
		{"redis cluster db", `store: {redis: {mode: cluster, addrs: ["a:6379"], db: 2}}`,
			`store.redis.db: must be 0 with mode: cluster (a Redis Cluster has only database 0)`},
		{"redis cluster url db", `store: {redis: {mode: cluster, url: "redis://a:6379/3"}}`,
			`store.redis.url: database must be 0 with mode: cluster (a Redis Cluster has only database 0)`},
		{"redis tls without rediss", `store: {redis: {url: "redis://h:6379", tls: {server_name: redis.internal}}}`,
			`store.redis.tls.server_name: TLS settings need a rediss:// url (the url is redis://, without TLS)`},
		{"redis tls ca_file missing", `store: {redis: {url: "rediss://h:6379", tls: {ca_file: /nonexistent/ca.pem}}}`,
			`store.redis.tls.ca_file: cannot read "/nonexistent/ca.pem": no such file or directory`},
		{"redis lock_lease", `store: {redis: {lock_lease: 100ms}}`,
			`store.redis.lock_lease: must be between 1s and 1m (it is renewed every third of it)`},
		{"token_wait", "apps: [{name: a, appid: x, secret: y, token_wait: -1s}]",
			`apps[0].token_wait: must be > 0 and <= 1m`},
		{"redis key_prefix", `store: {redis: {key_prefix: ""}}`, `store.redis.key_prefix: must not be empty`},
		{"redis replicas_hint", `store: {redis: {replicas_hint: 0}}`, `store.redis.replicas_hint: must be >= 1`},
		{"redis password and password_file", `store: {redis: {password: a, password_file: b}}`,
			`store.redis.password_file: set either password or password_file, not both`},

		// callers
		{"allow_cidrs empty", `callers: {allow_cidrs: []}`,
			`callers.allow_cidrs: must not be empty; use 0.0.0.0/0 and ::/0 to allow everyone`},
		{"allow_cidrs invalid", `callers: {allow_cidrs: [10.0.0.0/33, nope, "fe80::1%eth0"]}`, strings.Join([]string{
			`callers.allow_cidrs[0]: invalid CIDR "10.0.0.0/33"`,
			`callers.allow_cidrs[1]: invalid IP or CIDR "nope"`,
			`callers.allow_cidrs[2]: invalid IP or CIDR "fe80::1%eth0"`,
		}, "\n")},
		{"allow_cidrs scalar", `callers: {allow_cidrs: 10.0.0.0/8}`, `callers.allow_cidrs: must be a list, not a single value`},
		{"key name missing", `callers: {keys: [{key: k}]}`, `callers.keys[0].name: required`},
		{"key name empty", `callers: {keys: [{name: "", key: k}]}`, `callers.keys[0].name: must not be empty`},
		{"key names unique", `callers: {keys: [{name: a, key: k1}, {name: a, key: k2}]}`,
			`callers.keys[1].name: duplicate of callers.keys[0]`},
		{"key missing", `callers: {keys: [{name: a}]}`, `callers.keys[0].key: required (or key_file)`},
		{"key empty", `callers: {keys: [{name: a, key: "${BILLING_KEY}"}]}`,
			`callers.keys[0].key: must not be empty (${BILLING_KEY} expanded to ""; is the variable set?)`},
		{"keys unique", `callers: {keys: [{name: a, key: k}, {name: b, key: k}]}`,
			`callers.keys[1].key: same key as callers.keys[0]`},
		{"key apps exist", `callers: {keys: [{name: a, key: k, apps: [main, other]}]}`,
			`callers.keys[0].apps[1]: no app named "other"`},
		{"key apps empty", `callers: {keys: [{name: a, key: k, apps: []}]}`,
			`callers.keys[0].apps: must not be empty; omit apps to allow every app`},
		{"key per_minute", `callers: {keys: [{name: a, key: k, per_minute: -1}]}`,
			`callers.keys[0].per_minute: must be >= 0`},
		{"key per_minute integer", `callers: {keys: [{name: a, key: k, per_minute: 1.5}]}`,
			`callers.keys[0].per_minute: must be an integer (got "1.5")`},
		{"key apis empty", `callers: {keys: [{name: a, key: k, apis: []}]}`,
			`callers.keys[0].apis: must not be empty; omit apis to allow every API`},
		{"key apis relative", `callers: {keys: [{name: a, key: k, apis: [/cgi-bin/**, cgi-bin/x]}]}`,
			`callers.keys[0].apis[1]: must start with / (e.g. /cgi-bin/message/**)`},
		{"key apis ** in a segment", `callers: {keys: [{name: a, key: k, apis: ["/cgi-bin/x**"]}]}`,
			`callers.keys[0].apis[0]: "/cgi-bin/x**": ** must be a whole segment (/**)`},
		{"key apis dotdot", `callers: {keys: [{name: a, key: k, apis: ["/cgi-bin/../x"]}]}`,
			`callers.keys[0].apis[0]: "/cgi-bin/../x": . and .. segments are not allowed (paths are matched cleaned)`},
		{"key apis query", `callers: {keys: [{name: a, key: k, apis: ["/cgi-bin/x?y"]}]}`,
			`callers.keys[0].apis[0]: "/cgi-bin/x?y": a path glob holds no query, fragment, escape, backslash, space or control character`},
		{"cert_cn without client CA", `callers: {keys: [{name: a, cert_cn: billing}]}`,
			`callers.keys[0].cert_cn: needs tls.client_ca_file (client certificates are only asked for with it)`},
		{"cert_cn empty", `callers: {keys: [{name: a, key: k, cert_cn: ""}]}`,
			`callers.keys[0].cert_cn: must not be empty`},
		{"tls key without cert", `tls: {key_file: /nonexistent.key}`, `tls.cert_file: required with tls.key_file`},
		{"tls cert without key", `tls: {cert_file: /nonexistent.crt}`, `tls.key_file: required with tls.cert_file`},
		{"tls client CA alone", `tls: {client_ca_file: /nonexistent.pem}`, `tls.client_ca_file: needs tls.cert_file and tls.key_file`},
		{"tls unreadable", `tls: {cert_file: /nonexistent.crt, key_file: /nonexistent.key}`,
			`tls.cert_file: cannot read "/nonexistent.crt": no such file or directory`},

		// apps
		{"no apps", `apps: []`, `apps: at least one app is required`},
		{"apps not a list", `apps: {name: main}`, `apps: must be a list, not a mapping`},
		{"app not a mapping", `apps: [main]`, `apps[0]: must be a mapping, not a single value`},
		{"name missing", "apps:\n  - {appid: wx1, secret: s}", `apps[0].name: required`},
		{"name empty", "apps:\n  - {name: '', appid: wx1, secret: s}", `apps[0].name: must not be empty`},
		{"name upper case", "apps:\n  - {name: Main, appid: wx1, secret: s}",
			`apps[0].name: must match ^[a-z0-9][a-z0-9_-]{0,63}$ (got "Main")`},
		{"name leading dash", "apps:\n  - {name: -a, appid: wx1, secret: s}",
			`apps[0].name: must match ^[a-z0-9][a-z0-9_-]{0,63}$ (got "-a")`},
		{"name too long", "apps:\n  - {name: " + strings.Repeat("a", 65) + ", appid: wx1, secret: s}",
			`apps[0].name: must match ^[a-z0-9][a-z0-9_-]{0,63}$ (got "` + strings.Repeat("a", 65) + `")`},
		{"name reserved", "apps:\n  - {name: cgi-bin, appid: wx1, secret: s}",
			`apps[0].name: "cgi-bin" is reserved: it is a WeChat API path root or a wxproxy route, and app names are URL path prefixes`},
		{"name reserved admin", "apps:\n  - {name: metrics, appid: wx1, secret: s}",
			`apps[0].name: "metrics" is reserved: it is a WeChat API path root or a wxproxy route, and app names are URL path prefixes`},
		{"names unique", "apps:\n  - {name: a, appid: wx1, secret: s}\n  - {name: a, appid: wx2, secret: s}",
			`apps[1].name: duplicate of apps[0]`},
		{"appid missing", "apps:\n  - {name: a, secret: s}", `apps[0].appid: required`},
		{"appid empty", "apps:\n  - {name: a, appid: '${APPID}', secret: s}",
			`apps[0].appid: must not be empty (${APPID} expanded to ""; is the variable set?)`},
		{"appid whitespace", "apps:\n  - {name: a, appid: 'wx1 ', secret: s}", `apps[0].appid: must not contain whitespace`},
		{"appids unique", "apps:\n  - {name: a, appid: wx1, secret: s}\n  - {name: b, kind: miniprogram, appid: wx1, secret: t}",
			`apps[1].appid: already used by apps[0]; two apps with one appid would fight over its token`},
		{"wecom corpid and secret unique", "apps:\n  - {name: a, kind: wecom, appid: ww1, secret: s}\n  - {name: b, kind: wecom, appid: ww1, secret: s}",
			`apps[1].secret: same corpid and secret as apps[0]; one WeCom secret is one token, configure it once`},
		{"secret missing", "apps:\n  - {name: a, appid: wx1}", `apps[0].secret: required (or secret_file)`},
		{"secret empty", "apps:\n  - {name: a, appid: wx1, secret: '${WX_A_SECRET}'}",
			`apps[0].secret: must not be empty (${WX_A_SECRET} expanded to ""; is the variable set?)`},
		{"secret and secret_file", "apps:\n  - {name: a, appid: wx1, secret: s, secret_file: f}",
			`apps[0].secret_file: set either secret or secret_file, not both`},
		{"kind", "apps:\n  - {name: a, kind: mp, appid: wx1, secret: s}",
			`apps[0].kind: must be one of official, miniprogram, wecom (got "mp")`},
		{"token_mode", "apps:\n  - {name: a, appid: wx1, secret: s, token_mode: fast}",
			`apps[0].token_mode: must be one of stable, classic (got "fast")`},
		{"token_mode on wecom", "apps:\n  - {name: a, kind: wecom, appid: ww1, secret: s, token_mode: classic}",
			`apps[0].token_mode: not allowed with kind wecom (WeCom apps always use gettoken)`},
		{"ticket of wecom on official", "apps:\n  - {name: a, appid: wx1, secret: s, tickets: [jsapi, agent_config]}",
			`apps[0].tickets[1]: must be one of jsapi, wx_card for kind official and miniprogram (got "agent_config")`},
		{"ticket of official on wecom", "apps:\n  - {name: a, kind: wecom, appid: ww1, secret: s, tickets: [jsapi]}",
			`apps[0].tickets[0]: must be one of corp_jsapi, agent_config for kind wecom (got "jsapi")`},
		{"ticket duplicate", "apps:\n  - {name: a, appid: wx1, secret: s, tickets: [jsapi, jsapi]}",
			`apps[0].tickets[1]: duplicate ticket "jsapi"`},
		{"tickets not a list", "apps:\n  - {name: a, appid: wx1, secret: s, tickets: jsapi}",
			`apps[0].tickets: must be a list, not a single value`},
		{"agent_config without agent_id", "apps:\n  - {name: a, kind: wecom, appid: ww1, secret: s, tickets: [corp_jsapi, agent_config]}",
			`apps[0].agent_id: required with ticket agent_config (the agentid wx.agentConfig is called with)`},
		{"agent_id on official", "apps:\n  - {name: a, appid: wx1, secret: s, agent_id: 1000002}",
			`apps[0].agent_id: only with kind wecom`},
		{"agent_id zero", "apps:\n  - {name: a, kind: wecom, appid: ww1, secret: s, agent_id: 0}",
			`apps[0].agent_id: must be > 0 (the AgentId shown on the app's page in the WeCom admin console)`},
		{"agent_id not a number", "apps:\n  - {name: a, kind: wecom, appid: ww1, secret: s, agent_id: abc}",
			`apps[0].agent_id: must be an integer (got "abc")`},
		{"upstream scheme", "apps:\n  - {name: a, appid: wx1, secret: s, upstream: 'ftp://h'}",
			`apps[0].upstream: must be an absolute http:// or https:// URL (got "ftp://h")`},
		{"upstream relative", "apps:\n  - {name: a, appid: wx1, secret: s, upstream: '/wechat'}",
			`apps[0].upstream: must be an absolute http:// or https:// URL (got "/wechat")`},
		{"upstream query", "apps:\n  - {name: a, appid: wx1, secret: s, upstream: 'https://h/?a=1'}",
			`apps[0].upstream: must not have a query (got "https://h/?a=1")`},
		{"upstream fragment", "apps:\n  - {name: a, appid: wx1, secret: s, upstream: 'https://h/#x'}",
			`apps[0].upstream: must not have a fragment (got "https://h/#x")`},
		{"upstream credentials", "apps:\n  - {name: a, appid: wx1, secret: s, upstream: 'https://u:pw@h'}",
			`apps[0].upstream: must not contain credentials`},
		{"refresh_before zero", "apps:\n  - {name: a, appid: wx1, secret: s, refresh_before: 0s}",
			`apps[0].refresh_before: must be > 0 and <= 1h (tokens live 2h)`},
		{"refresh_before too long", "apps:\n  - {name: a, appid: wx1, secret: s, refresh_before: 61m}",
			`apps[0].refresh_before: must be > 0 and <= 1h (tokens live 2h)`},

		// apps[].quotas
		{"api limit negative (the SPEC's example)", `
apps:
  - {name: a, appid: wx1, secret: s}
  - name: b
    appid: wx2
    secret: s
    quotas:
      apis:
        /cgi-bin/x: {per_minute: -1}
`, `apps[1].quotas.apis./cgi-bin/x.per_minute: must be >= 0`},
		{"api path", "apps:\n  - {name: a, appid: wx1, secret: s, quotas: {apis: {cgi-bin/x: {per_day: 1}}}}",
			`apps[0].quotas.apis.cgi-bin/x: API paths must start with /`},
		{"api limit not a mapping", "apps:\n  - {name: a, appid: wx1, secret: s, quotas: {apis: {/x: 600}}}",
			`apps[0].quotas.apis./x: must be a mapping, not a single value`},
		{"default limits negative", "apps:\n  - {name: a, appid: wx1, secret: s, quotas: {default: {per_minute: -1, per_day: -1, burst: -1}}}",
			strings.Join([]string{
				`apps[0].quotas.default.per_minute: must be >= 0`,
				`apps[0].quotas.default.per_day: must be >= 0`,
				`apps[0].quotas.default.burst: must be >= 0`,
			}, "\n")},
		{"token_fetch_per_day", "apps:\n  - {name: a, appid: wx1, secret: s, quotas: {token_fetch_per_day: -1}}",
			`apps[0].quotas.token_fetch_per_day: must be >= 0`},
		{"on_limit", "apps:\n  - {name: a, appid: wx1, secret: s, quotas: {on_limit: queue}}",
			`apps[0].quotas.on_limit: must be one of reject, wait (got "queue")`},
		{"max_wait", "apps:\n  - {name: a, appid: wx1, secret: s, quotas: {max_wait: -1s}}",
			`apps[0].quotas.max_wait: must be >= 0`},
		{"sync_from_wechat too often", "apps:\n  - {name: a, appid: wx1, secret: s, quotas: {sync_from_wechat: 10s}}",
			`apps[0].quotas.sync_from_wechat: must be 0 (off) or at least 1m (quota/get is itself limited)`},
		{"failover not a URL", "apps:\n  - {name: a, appid: wx1, secret: s, failover: [api2.weixin.qq.com]}",
			`apps[0].failover[0]: must be an absolute http:// or https:// URL (got "api2.weixin.qq.com")`},
		{"failover duplicate", "apps:\n  - {name: a, appid: wx1, secret: s, failover: [https://api.weixin.qq.com/]}",
			`apps[0].failover[0]: duplicate of apps[0].upstream`},
		{"failover empty", "apps:\n  - {name: a, appid: wx1, secret: s, failover: []}",
			`apps[0].failover: must not be empty; omit failover for none`},
		{"reset_timezone unknown", "apps:\n  - {name: a, appid: wx1, secret: s, quotas: {reset_timezone: Mars/Olympus}}",
			`apps[0].quotas.reset_timezone: unknown time zone "Mars/Olympus" (want an IANA name such as Asia/Shanghai or UTC)`},
		{"reset_timezone empty", "apps:\n  - {name: a, appid: wx1, secret: s, quotas: {reset_timezone: ''}}",
			`apps[0].quotas.reset_timezone: must not be empty`},
		{"respect_upstream", "apps:\n  - {name: a, appid: wx1, secret: s, quotas: {respect_upstream: yes}}",
			`apps[0].quotas.respect_upstream: must be true or false (got "yes")`},

		// apps[].breaker
		{"consecutive_failures", "apps:\n  - {name: a, appid: wx1, secret: s, breaker: {consecutive_failures: 0}}",
			`apps[0].breaker.consecutive_failures: must be >= 1`},
		{"consecutive_failures too large", "apps:\n  - {name: a, appid: wx1, secret: s, breaker: {consecutive_failures: 4294967296}}",
			`apps[0].breaker.consecutive_failures: must be <= 4294967295`},
		{"failure_ratio zero", "apps:\n  - {name: a, appid: wx1, secret: s, breaker: {failure_ratio: 0}}",
			`apps[0].breaker.failure_ratio: must be > 0 and <= 1`},
		{"failure_ratio over one", "apps:\n  - {name: a, appid: wx1, secret: s, breaker: {failure_ratio: 1.5}}",
			`apps[0].breaker.failure_ratio: must be > 0 and <= 1`},
		{"failure_ratio number", "apps:\n  - {name: a, appid: wx1, secret: s, breaker: {failure_ratio: half}}",
			`apps[0].breaker.failure_ratio: must be a number (got "half")`},
		{"min_requests", "apps:\n  - {name: a, appid: wx1, secret: s, breaker: {min_requests: 0}}",
			`apps[0].breaker.min_requests: must be >= 1`},
		{"interval", "apps:\n  - {name: a, appid: wx1, secret: s, breaker: {interval: -1s}}",
			`apps[0].breaker.interval: must be >= 0`},
		{"open_timeout", "apps:\n  - {name: a, appid: wx1, secret: s, breaker: {open_timeout: 0s}}",
			`apps[0].breaker.open_timeout: must be > 0`},
		{"half_open_requests", "apps:\n  - {name: a, appid: wx1, secret: s, breaker: {half_open_requests: 0}}",
			`apps[0].breaker.half_open_requests: must be >= 1`},

		// Unknown keys at every depth.
		{"unknown top-level key", `lissen: ":8080"`, `lissen: unknown key`},
		{"unknown admin key", `admin: {tokn: x}`, `admin.tokn: unknown key`},
		{"unknown redis key", `store: {redis: {cluster: true}}`, `store.redis.cluster: unknown key`},
		{"unknown caller key", `callers: {keys: [{name: a, key: k, rate: 1}]}`, `callers.keys[0].rate: unknown key`},
		{"unknown app key", "apps:\n  - {name: a, appid: wx1, secret: s, foo: 1}", `apps[0].foo: unknown key`},
		{"unknown app key with hint", "apps:\n  - {name: a, kind: wecom, appid: ww1, secret: s, corpsecret: x}",
			`apps[0].corpsecret: unknown key (use secret or secret_file)`},
		{"unknown quotas key", "apps:\n  - {name: a, appid: wx1, secret: s, quotas: {per_minute: 1}}",
			`apps[0].quotas.per_minute: unknown key`},
		{"unknown limit key", "apps:\n  - {name: a, appid: wx1, secret: s, quotas: {apis: {/x: {per_hour: 1}}}}",
			`apps[0].quotas.apis./x.per_hour: unknown key`},
		{"unknown breaker key", "apps:\n  - {name: a, appid: wx1, secret: s, breaker: {timeout: 1s}}",
			`apps[0].breaker.timeout: unknown key`},
		{"keys are not expanded", "${X}: 1", `${X}: unknown key`},
		{"complex key", "admin:\n  ? [a]\n  : 1", `admin: keys must be plain strings, not a list`},
		{"merge of a single value", "admin: {<<: 5}", `admin.<<: must be a mapping or a list of mappings`},
		{"merged unknown key", "x: &x {tokn: 1}\nadmin: {<<: *x}", "x: unknown key\nadmin.tokn: unknown key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parse(t, tt.src, nil)
			if err == nil {
				t.Fatalf("Parse(%q) = %+v, nil; want error\n%s", tt.src, c, tt.want)
			}
			if got := err.Error(); got != tt.want {
				t.Errorf("Parse(%q) error =\n%s\nwant\n%s", tt.src, got, tt.want)
			}
			if c != nil {
				t.Errorf("Parse returned a Config with an error")
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Errorf("error %T is not an *Error", err)
			}
		})
	}
}

func TestErrorsAllReportedInFileOrder(t *testing.T) {
	src := `listen: localhost
shutdown_timeout: soon
admin:
  token: ${WXPROXY_ADMIN_TOKEN
callers:
  keys:
    - name: billing
      key: ${BILLING_KEY}
      apps: [main, nope]
apps:
  - name: main
    appid: wx1
    secret: s3cret
    colour: blue
    quotas:
      apis:
        /cgi-bin/x: { per_minute: -5 }
  - name: main
    kind: wecom
    appid: ww1
store:
  kind: mongo
`
	want := []struct {
		line int
		text string
	}{
		{1, `listen: invalid address "localhost" (want host:port, e.g. ":8080")`},
		{2, `shutdown_timeout: invalid duration "soon"`},
		{4, `admin.token: unterminated ${ (missing })`},
		{8, `callers.keys[0].key: must not be empty (${BILLING_KEY} expanded to ""; is the variable set?)`},
		{9, `callers.keys[0].apps[1]: no app named "nope"`},
		{14, `apps[0].colour: unknown key`},
		{17, `apps[0].quotas.apis./cgi-bin/x.per_minute: must be >= 0`},
		{18, `apps[1].secret: required (or secret_file)`},
		{18, `apps[1].name: duplicate of apps[0]`},
		{22, `store.kind: must be one of memory, file, redis (got "mongo")`},
	}
	_, err := Parse([]byte(src), nil, "")
	if err == nil {
		t.Fatal("Parse: nil error")
	}
	var lines []string
	for _, w := range want {
		lines = append(lines, w.text)
	}
	if got, want := err.Error(), strings.Join(lines, "\n"); got != want {
		t.Errorf("Parse error =\n%s\nwant\n%s", got, want)
	}
	joined, ok := err.(interface{ Unwrap() []error })
	if !ok {
		t.Fatalf("error %T does not unwrap to a list", err)
	}
	for i, e := range joined.Unwrap() {
		var ce *Error
		if !errors.As(e, &ce) || i >= len(want) {
			t.Errorf("error %d: %v is not an expected *Error", i, e)
			continue
		}
		if got, want := ce.Line, want[i].line; got != want {
			t.Errorf("error %d (%s): Line = %d, want %d", i, ce, got, want)
		}
	}
}

func TestSyntaxErrors(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want string
	}{
		{"unclosed flow", "listen: \":8080\"\napps: [\n", "config: yaml: line 2: "},
		{"bad indentation", "admin:\n  listen: a\n token: b\n", "config: yaml: line 2: "},
		{"tab indentation", "admin:\n\tlisten: a\n", "config: yaml: line 2: "},
		{"two documents", oneApp + "---\nlisten: \":1\"\n", "config: line 6: a second YAML document; the file must hold exactly one"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.src), nil, "")
			if err == nil || !strings.HasPrefix(err.Error(), tt.want) {
				t.Errorf("Parse(%q) error = %v, want prefix %q", tt.src, err, tt.want)
			}
		})
	}
}

func TestWholeDocumentErrors(t *testing.T) {
	tests := []struct {
		src  string
		want string
	}{
		{"", "apps: at least one app is required"},
		{"# only a comment\n", "apps: at least one app is required"},
		{"---\n", "apps: at least one app is required"},
		{"[1, 2]", "the top level must be a mapping of settings, not a list"},
		{"wxproxy", "the top level must be a mapping of settings, not a single value"},
	}
	for _, tt := range tests {
		_, err := Parse([]byte(tt.src), nil, "")
		if got := errText(err); got != tt.want {
			t.Errorf("Parse(%q) error = %q, want %q", tt.src, got, tt.want)
		}
	}
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// TestErrorsNeverContainSecrets feeds secrets into every place that can fail
// and checks no message quotes them.
func TestErrorsNeverContainSecrets(t *testing.T) {
	secrets := map[string]string{
		"KEY":        "key-SECRET-1",
		"WX_SECRET":  "wx-SECRET-2",
		"WC_SECRET":  "wc-SECRET-3",
		"REDIS_PASS": "redis-SECRET-4",
	}
	src := `
store:
  kind: redis
  redis:
    url: redis://:${REDIS_PASS}%zz@h:6379/0
callers:
  keys:
    - {name: a, key: "${KEY}"}
    - {name: b, key: "${KEY}"}
    - {name: c, key: "${KEY}x${"}
apps:
  - {name: a, appid: wx1, secret: "${WX_SECRET}"}
  - {name: b, appid: wx1, secret: "${WX_SECRET}"}
  - {name: c, kind: wecom, appid: ww1, secret: "${WC_SECRET}"}
  - {name: d, kind: wecom, appid: ww1, secret: "${WC_SECRET}", token_mode: classic}
  - {name: e, appid: "wx 2", secret: "${WX_SECRET}", secret_file: x}
`
	_, err := Parse([]byte(src), mapEnv(secrets), t.TempDir())
	if err == nil {
		t.Fatal("Parse: nil error")
	}
	for name, v := range secrets {
		if strings.Contains(err.Error(), v) || strings.Contains(err.Error(), strings.Split(v, "-")[1]) {
			t.Errorf("error contains ${%s}'s value:\n%v", name, err)
		}
	}
	if got, want := strings.Count(err.Error(), "\n")+1, 8; got != want {
		t.Errorf("got %d errors, want %d:\n%v", got, want, err)
	}
}
