// Package config reads, validates and prints wxproxy's YAML configuration.
//
// Load and Parse return a fully populated *Config: every default is applied,
// every value checked, every secret read. A file that fails any check yields
// no Config but one error per problem, each naming its key path
// ("apps[1].quotas.apis./cgi-bin/x.per_minute: must be >= 0"), so an operator
// fixes them all in one round.
//
// Config values are plain data. Nothing in this package starts, dials or
// watches anything; reloading means calling Load again and, with ReloadDiff,
// telling the operator which changes wait for a restart.
package config

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	// Quota days reset in a named time zone (Asia/Shanghai by default); the
	// embedded database makes that work in a scratch container.
	_ "time/tzdata"
)

// App kinds.
const (
	KindOfficial    = "official"    // Official Account (公众号)
	KindMiniProgram = "miniprogram" // Mini Program (小程序)
	KindWeCom       = "wecom"       // WeCom (企业微信) application: appid is the corpid
)

// Token modes of official and miniprogram apps. WeCom apps have no token mode:
// they always use /cgi-bin/gettoken.
const (
	TokenModeStable  = "stable"  // POST /cgi-bin/stable_token
	TokenModeClassic = "classic" // GET /cgi-bin/token
)

// Ticket types (SPEC §11).
const (
	TicketJSAPI       = "jsapi"        // official, miniprogram: the JS-SDK ticket
	TicketWxCard      = "wx_card"      // official, miniprogram: the card api_ticket
	TicketCorpJSAPI   = "corp_jsapi"   // wecom: the corp's JS-SDK ticket (get_jsapi_ticket)
	TicketAgentConfig = "agent_config" // wecom: the agent's ticket (wx.agentConfig); needs agent_id
)

// Store kinds.
const (
	StoreMemory = "memory" // in-process; tokens are fetched again after a restart
	StoreFile   = "file"   // one JSON file, for a single replica that survives restarts
	StoreRedis  = "redis"  // shared by a fleet of replicas
)

// Behaviours when a local quota is exhausted.
const (
	OnLimitReject = "reject" // answer 429 at once
	OnLimitWait   = "wait"   // wait up to max_wait for the limit to allow the request
)

// Log formats and levels.
const (
	LogFormatJSON = "json"
	LogFormatText = "text"

	LogLevelDebug = "debug"
	LogLevelInfo  = "info"
	LogLevelWarn  = "warn"
	LogLevelError = "error"
)

// Redacted replaces every secret in the output of WriteRedacted.
const Redacted = "<redacted>"

// Config is wxproxy's configuration, with defaults applied. It is plain data:
// safe for concurrent reads, never modified by this package after Parse
// returns it.
//
// Config holds secrets in the clear (app secrets, caller keys, the admin
// token, the Redis password). Print it with WriteRedacted, never with %v or
// a logger.
type Config struct {
	Listen          string        // caller-facing address
	ShutdownTimeout time.Duration // bound on draining in-flight requests at shutdown
	UpstreamTimeout time.Duration // bound on one upstream round trip
	MaxBodyBytes    int64         // larger request bodies are answered 413
	RetryBodyBytes  int64         // bodies up to this size are buffered so a token retry can replay them
	// MaxBufferedBytes bounds all request bodies buffered at once; past it
	// a body streams and cannot be replayed.
	MaxBufferedBytes  int64
	ReadHeaderTimeout time.Duration // a caller must send its request headers within this
	BodyReadTimeout   time.Duration // ... and its body within this (slow senders get 408)
	IdleTimeout       time.Duration // idle keep-alive connections are closed after this
	MaxHeaderBytes    int64         // request headers larger than this are refused (431)
	// UpstreamProxy, when set, is the HTTP proxy (http://host:port) all
	// upstream traffic goes through; proxy environment variables are never
	// used.
	UpstreamProxy string
	TLS           TLS // caller-port TLS; zero = plain HTTP
	Admin         Admin
	Log           Log
	Store         Store
	Callers       Callers
	DefaultApp    string // app of requests that name none; "" = none (they get 404)
	Apps          []App  // at least one unless there are platforms; names are unique
	// Platforms are third-party platforms (SPEC §12); their names share
	// the app namespace.
	Platforms []Platform
	Callbacks Callbacks // the push listener; Listen is set when Platforms is not empty
}

// TLS configures TLS on the caller port (SPEC §14). Paths are absolute or
// relative to the configuration file's directory; the files are read again
// on reload and when they change. The zero TLS means plain HTTP.
type TLS struct {
	CertFile string // PEM certificate chain; set together with KeyFile
	KeyFile  string // PEM private key
	// ClientCAFile, when set, makes callers present a client certificate
	// signed by one of its PEM certificates.
	ClientCAFile string
}

// Enabled reports whether the caller port serves TLS.
func (t TLS) Enabled() bool { return t.CertFile != "" }

// Admin configures the admin port (/healthz, /readyz, /metrics, /admin/*).
type Admin struct {
	Listen string
	Token  string // bearer token for POST /admin/*; "" means every admin POST is refused
	PProf  bool   // serve /debug/pprof/* (behind the bearer token)
}

// Log configures the process logger.
type Log struct {
	Format string // LogFormatJSON or LogFormatText
	Level  string // LogLevelDebug, LogLevelInfo, LogLevelWarn or LogLevelError
}

// Store configures where tokens, quota counters and the refresh lock live.
type Store struct {
	Kind  string // StoreMemory, StoreFile or StoreRedis
	Path  string // StoreFile: the JSON file, relative to the working directory
	Redis Redis  // StoreRedis
}

// Redis deployment modes (store.redis.mode). The mode is always explicit:
// the client is never chosen from the number of addresses.
const (
	RedisStandalone = "standalone" // one server (url, or one address)
	RedisCluster    = "cluster"    // a Redis Cluster; one seed address is enough
	RedisSentinel   = "sentinel"   // a master found through Sentinels (addrs + master_name)
)

// Redis configures the Redis store. Exactly one of URL and Addrs is set when
// Store.Kind is StoreRedis.
type Redis struct {
	// Mode is RedisStandalone, RedisCluster or RedisSentinel.
	Mode string
	// URL is a redis:// or rediss:// URL (host, port, database, TLS) for a
	// single server or a Cluster seed. It may hold a password; WriteRedacted
	// hides it.
	URL string
	// Addrs lists host:port addresses: the server (standalone), Cluster
	// seeds, or the Sentinels.
	Addrs      []string
	MasterName string // Sentinel master; RedisSentinel only
	// Username and Password, when non-empty, override those of URL.
	Username string
	Password string
	// SentinelUsername and SentinelPassword authenticate to the Sentinels
	// themselves (their requirepass), RedisSentinel only.
	SentinelUsername string
	SentinelPassword string
	// TLS is on with a rediss:// URL or when TLSCAFile or TLSServerName is
	// set. TLSCAFile (PEM) replaces the system roots; TLSServerName
	// overrides the name the certificate is checked against.
	TLS           bool
	TLSCAFile     string // absolute, or relative to the working directory
	TLSServerName string
	DB            int    // database number; only with Addrs (with URL it is the URL's path)
	KeyPrefix     string // prefix of every Redis key; never empty
	// ReplicasHint is the expected number of replicas, used only to split
	// shared quotas into local ones while Redis is unreachable. At least 1.
	ReplicasHint int
	// LockLease is the lifetime of a token's refresh lock; its holder
	// renews it while it lives, so a dead holder blocks refreshes for at
	// most this long.
	LockLease time.Duration
}

// Callers configures who may use the caller port.
type Callers struct {
	// AllowCIDRs lists the networks callers may connect from; never empty.
	// A bare IP in the file becomes a /32 or /128 prefix. Prefixes are masked.
	AllowCIDRs []netip.Prefix
	// Keys, when not empty, makes X-WXProxy-Key mandatory: a caller must send
	// one of these keys. Nil when the file lists none.
	Keys []CallerKey
}

// CallerKey is one caller credential.
type CallerKey struct {
	Name string   // shown in logs and metrics instead of the key
	Key  string   // the secret value of X-WXProxy-Key; unique
	Apps []string // apps this key may use; nil = all apps
	// APIs lists the API paths this key may call, as path globs: "*"
	// matches within one segment, a "**" segment any number of segments.
	// Matched ASCII case-insensitively against the cleaned path without
	// the app prefix. nil = all APIs.
	APIs []string
	// CertCN, when set, lets a caller that presents a client certificate
	// with this subject common name use the key without sending it.
	// Key may then be empty (certificate only).
	CertCN    string
	PerMinute int // per-caller request limit; 0 = none
}

// App is one WeChat Official Account, Mini Program or WeCom application.
type App struct {
	Name      string // URL path prefix and X-WXProxy-App value
	Kind      string // KindOfficial, KindMiniProgram or KindWeCom
	AppID     string // appid; the corpid for KindWeCom
	Secret    string // AppSecret; the corpsecret for KindWeCom
	TokenMode string // TokenModeStable or TokenModeClassic; "" for KindWeCom
	// Upstream is the base URL of the WeChat API, without a trailing slash.
	Upstream string
	// Failover lists more base URLs (api2.weixin.qq.com, ...), tried in
	// order when the ones before are down. nil = none.
	Failover []string
	// RefreshBefore starts a proactive refresh when the token has less than
	// this left. In (0, 1h].
	RefreshBefore time.Duration
	// TokenWait is how long a request whose token WeChat rejected waits for
	// the refresh (here or, on Redis, on another replica) before the token
	// error goes back to the caller. In (0, 1m].
	TokenWait time.Duration
	// Tickets lists the tickets held for the app from the start (SPEC §11):
	// TicketJSAPI and TicketWxCard for WeChat apps, TicketCorpJSAPI and
	// TicketAgentConfig for WeCom. Other tickets of the kind are held on
	// first demand. No duplicates; nil when none are listed.
	Tickets []string
	// AgentID is the WeCom agent whose secret this is (wx.agentConfig's
	// agentid); 0 = not given. Required for TicketAgentConfig.
	AgentID int64
	Quotas  Quotas
	Breaker Breaker
}

// Quotas configures an app's local rate limits. A reload applies them.
type Quotas struct {
	ResetTimezone string         // IANA name of the zone whose midnight starts a new quota day
	Location      *time.Location // ResetTimezone, loaded; never nil
	// TokenFetchPerDay caps token fetches per quota day (classic mode and
	// WeCom); 0 = no local cap.
	TokenFetchPerDay int
	// Default applies to every API without its own entry in APIs.
	Default Limit
	// APIs maps an API path ("/cgi-bin/message/custom/send") to its limit,
	// which replaces Default as a whole. Never nil.
	APIs            map[string]Limit
	OnLimit         string        // OnLimitReject or OnLimitWait
	MaxWait         time.Duration // with OnLimitWait: longest wait before rejecting
	RespectUpstream bool          // remember upstream 45009/45011 and answer locally until the reset
	// SyncFromWeChat is how often WeChat's own quota figures are read
	// (/cgi-bin/openapi/quota/get) for the configured APIs; 0 = never.
	SyncFromWeChat time.Duration
}

// Limit is a request limit; a zero field means no limit of that kind.
type Limit struct {
	PerMinute int
	PerDay    int // per quota day, see Quotas.ResetTimezone
	// Burst is how many requests may pass at once above steady per-minute
	// pacing; 0 lets the rate limiter use its default.
	Burst int
}

// Breaker configures an app's circuit breaker (gobreaker semantics). A reload
// applies it.
type Breaker struct {
	// ConsecutiveFailures trips the breaker after that many failures in a row.
	ConsecutiveFailures uint32
	// FailureRatio trips the breaker when, within Interval, at least
	// MinRequests requests were seen and this fraction of them failed.
	FailureRatio float64
	MinRequests  uint32
	// Interval is the closed-state window after which counts are cleared;
	// 0 = never cleared.
	Interval         time.Duration
	OpenTimeout      time.Duration // how long the breaker stays open before probing
	HalfOpenRequests uint32        // probes allowed while half-open
}

// App returns the app named name.
func (c *Config) App(name string) (*App, bool) {
	for i := range c.Apps {
		if c.Apps[i].Name == name {
			return &c.Apps[i], true
		}
	}
	return nil, false
}

// Load reads and parses the configuration file at path. Relative secret_file,
// key_file, token_file and password_file paths are relative to the file's
// directory. getenv resolves ${VAR} references (pass os.Getenv); nil means an
// empty environment.
//
// On failure the error is an errors.Join of *Error values, one per problem,
// or a single error for an unreadable file or a YAML syntax error.
func Load(path string, getenv func(string) string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(data, getenv, filepath.Dir(path))
}

// Error is one problem in a configuration file. Load and Parse return them
// joined with errors.Join; errors.As finds the first, and the joined error's
// Unwrap() []error lists them all.
type Error struct {
	Key  string // key path, e.g. "apps[1].quotas.apis./cgi-bin/x.per_minute"; "" = the whole file
	Line int    // 1-based line of the offending key or value; 0 when unknown
	Msg  string // what is wrong; never contains a secret

	column int // orders errors on one line
	phase  int // orders errors at one spot; see phaseKeys
}

// Error returns "key: msg".
func (e *Error) Error() string {
	if e.Key == "" {
		return e.Msg
	}
	return e.Key + ": " + e.Msg
}
