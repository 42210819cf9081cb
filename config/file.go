package config

import (
	"errors"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// The file types mirror the YAML file key for key: Parse decodes into them
// and WriteRedacted encodes from them, so both directions share one schema.
// Every setting is a val (decode.go) that remembers whether the file set it;
// the defaults and checks live in validate.go. The omitempty and flow tags
// only shape WriteRedacted's output.
type (
	file struct {
		Listen            str            `yaml:"listen"`
		ShutdownTimeout   duration       `yaml:"shutdown_timeout"`
		UpstreamTimeout   duration       `yaml:"upstream_timeout"`
		MaxBodyBytes      size           `yaml:"max_body_bytes"`
		RetryBodyBytes    size           `yaml:"retry_body_bytes"`
		MaxBufferedBytes  size           `yaml:"max_buffered_bytes"`
		ReadHeaderTimeout duration       `yaml:"read_header_timeout"`
		BodyReadTimeout   duration       `yaml:"body_read_timeout"`
		IdleTimeout       duration       `yaml:"idle_timeout"`
		MaxHeaderBytes    size           `yaml:"max_header_bytes"`
		UpstreamProxy     str            `yaml:"upstream_proxy"`
		TLS               tlsFile        `yaml:"tls,omitempty"`
		Admin             adminFile      `yaml:"admin"`
		Log               logFile        `yaml:"log"`
		Store             storeFile      `yaml:"store"`
		Callers           callersFile    `yaml:"callers"`
		DefaultApp        str            `yaml:"default_app"`
		Apps              []appFile      `yaml:"apps"`
		Platforms         []platformFile `yaml:"platforms,omitempty"`
		Callbacks         callbacksFile  `yaml:"callbacks,omitempty"`
	}
	platformFile struct {
		Name                       str         `yaml:"name"`
		Kind                       str         `yaml:"kind"`
		ComponentAppID             str         `yaml:"component_appid,omitempty"`
		SuiteID                    str         `yaml:"suite_id,omitempty"`
		Secret                     str         `yaml:"secret"`
		SecretFile                 str         `yaml:"secret_file,omitempty"`
		Token                      str         `yaml:"token"`
		TokenFile                  str         `yaml:"token_file,omitempty"`
		EncodingAESKey             str         `yaml:"encoding_aes_key"`
		EncodingAESKeyFile         str         `yaml:"encoding_aes_key_file,omitempty"`
		PreviousEncodingAESKey     str         `yaml:"previous_encoding_aes_key,omitempty"`
		PreviousEncodingAESKeyFile str         `yaml:"previous_encoding_aes_key_file,omitempty"`
		ProviderCorpID             str         `yaml:"provider_corpid,omitempty"`
		ProviderSecret             str         `yaml:"provider_secret,omitempty"`
		ProviderSecretFile         str         `yaml:"provider_secret_file,omitempty"`
		PermanentCodeAPI           str         `yaml:"permanent_code_api,omitempty"`
		Upstream                   str         `yaml:"upstream"`
		RefreshBefore              duration    `yaml:"refresh_before"`
		AuthorizerIdle             duration    `yaml:"authorizer_idle"`
		Quotas                     quotasFile  `yaml:"quotas"`
		Breaker                    breakerFile `yaml:"breaker"`
	}
	callbacksFile struct {
		Listen            str      `yaml:"listen"`
		MaxBodyBytes      size     `yaml:"max_body_bytes"`
		ReadHeaderTimeout duration `yaml:"read_header_timeout"`
		ReadTimeout       duration `yaml:"read_timeout"`
	}
	tlsFile struct {
		CertFile     str `yaml:"cert_file,omitempty"`
		KeyFile      str `yaml:"key_file,omitempty"`
		ClientCAFile str `yaml:"client_ca_file,omitempty"`
	}
	adminFile struct {
		Listen    str     `yaml:"listen"`
		Token     str     `yaml:"token"`
		TokenFile str     `yaml:"token_file,omitempty"`
		PProf     boolean `yaml:"pprof"`
	}
	logFile struct {
		Format str `yaml:"format"`
		Level  str `yaml:"level"`
	}
	storeFile struct {
		Kind  str       `yaml:"kind"`
		Path  str       `yaml:"path"`
		Redis redisFile `yaml:"redis"`
	}
	redisFile struct {
		Mode                 str          `yaml:"mode"`
		URL                  str          `yaml:"url,omitempty"`
		Addrs                []str        `yaml:"addrs,omitempty,flow"`
		MasterName           str          `yaml:"master_name,omitempty"`
		Username             str          `yaml:"username,omitempty"`
		Password             str          `yaml:"password"`
		PasswordFile         str          `yaml:"password_file,omitempty"`
		SentinelUsername     str          `yaml:"sentinel_username,omitempty"`
		SentinelPassword     str          `yaml:"sentinel_password,omitempty"`
		SentinelPasswordFile str          `yaml:"sentinel_password_file,omitempty"`
		TLS                  redisTLSFile `yaml:"tls,omitempty"`
		DB                   integer      `yaml:"db,omitempty"`
		KeyPrefix            str          `yaml:"key_prefix"`
		ReplicasHint         integer      `yaml:"replicas_hint"`
		LockLease            duration     `yaml:"lock_lease"`
	}
	redisTLSFile struct {
		CAFile     str `yaml:"ca_file,omitempty"`
		ServerName str `yaml:"server_name,omitempty"`
	}
	callersFile struct {
		AllowCIDRs []str           `yaml:"allow_cidrs,flow"`
		Keys       []callerKeyFile `yaml:"keys,omitempty"`
	}
	callerKeyFile struct {
		Name      str     `yaml:"name"`
		Key       str     `yaml:"key"`
		KeyFile   str     `yaml:"key_file,omitempty"`
		Apps      []str   `yaml:"apps,omitempty,flow"`
		APIs      []str   `yaml:"apis,omitempty,flow"`
		CertCN    str     `yaml:"cert_cn,omitempty"`
		PerMinute integer `yaml:"per_minute"`
	}
	appFile struct {
		Name          str         `yaml:"name"`
		Kind          str         `yaml:"kind"`
		AppID         str         `yaml:"appid"`
		Secret        str         `yaml:"secret"`
		SecretFile    str         `yaml:"secret_file,omitempty"`
		TokenMode     str         `yaml:"token_mode,omitempty"`
		Upstream      str         `yaml:"upstream"`
		Failover      []str       `yaml:"failover,omitempty,flow"`
		RefreshBefore duration    `yaml:"refresh_before"`
		TokenWait     duration    `yaml:"token_wait"`
		Tickets       []str       `yaml:"tickets,omitempty,flow"`
		AgentID       integer     `yaml:"agent_id,omitempty"`
		Quotas        quotasFile  `yaml:"quotas"`
		Breaker       breakerFile `yaml:"breaker"`
	}
	quotasFile struct {
		ResetTimezone    str                   `yaml:"reset_timezone"`
		TokenFetchPerDay integer               `yaml:"token_fetch_per_day"`
		Default          limitFile             `yaml:"default"`
		APIs             map[apiPath]limitFile `yaml:"apis,omitempty"`
		OnLimit          str                   `yaml:"on_limit"`
		MaxWait          duration              `yaml:"max_wait"`
		RespectUpstream  boolean               `yaml:"respect_upstream"`
		SyncFromWeChat   duration              `yaml:"sync_from_wechat,omitempty"`
	}
	limitFile struct {
		PerMinute integer `yaml:"per_minute"`
		PerDay    integer `yaml:"per_day"`
		Burst     integer `yaml:"burst"`
	}
	breakerFile struct {
		ConsecutiveFailures integer  `yaml:"consecutive_failures"`
		FailureRatio        number   `yaml:"failure_ratio"`
		MinRequests         integer  `yaml:"min_requests"`
		Interval            duration `yaml:"interval"`
		OpenTimeout         duration `yaml:"open_timeout"`
		HalfOpenRequests    integer  `yaml:"half_open_requests"`
	}
)

// The leaf types of the file: each is a val of the Go type it decodes to.
type (
	str      = val[string]
	integer  = val[int]
	boolean  = val[bool]
	number   = val[float64] // finite
	size     = val[int64]   // a byte size: 1048576, 10MiB, 512KB
	duration = val[time.Duration]
)

// apiPath is a key of quotas.apis, "/cgi-bin/message/custom/send". Like
// every key it is not expanded.
type apiPath string

func (p *apiPath) parse(s string) error {
	if !strings.HasPrefix(s, "/") {
		return errors.New("API paths must start with /")
	}
	*p = apiPath(s)
	return nil
}

// MarshalYAML writes a limit on one line: {per_minute: 600, per_day: 0, burst: 0}.
func (l limitFile) MarshalYAML() (any, error) {
	type plain limitFile // without this method
	var n yaml.Node
	if err := n.Encode(plain(l)); err != nil {
		return nil, err
	}
	n.Style = yaml.FlowStyle
	return &n, nil
}
