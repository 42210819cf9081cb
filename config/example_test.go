package config_test

import (
	"fmt"
	"log"
	"os"

	"github.com/wxproxy/wxproxy/config"
)

func ExampleLoad() {
	// In main, pass os.Getenv; here a map stands in for the environment.
	env := map[string]string{"WX_MAIN_SECRET": "0123456789abcdef0123456789abcdef"}
	cfg, err := config.Load("../configs/minimal.yaml", func(k string) string { return env[k] })
	if err != nil {
		log.Fatal(err) // one line per problem, each naming its key
	}
	app, _ := cfg.App(cfg.DefaultApp)
	fmt.Println(cfg.Listen, cfg.Admin.Listen, cfg.Store.Kind)
	fmt.Println(app.Name, app.Kind, app.TokenMode, app.Upstream, app.RefreshBefore)
	// Output:
	// :8080 127.0.0.1:9090 memory
	// main official stable https://api.weixin.qq.com 10m0s
}

func ExampleParse_errors() {
	_, err := config.Parse([]byte(`
store:
  kind: mongo
apps:
  - name: main
    appid: wx0123456789abcdef
    secret: ${WX_MAIN_SECRET}
    quotas:
      apis:
        /cgi-bin/message/custom/send: { per_minute: -1 }
      on_limt: wait
`), nil, "") // nil: an empty environment
	fmt.Println(err)
	// Output:
	// store.kind: must be one of memory, file, redis (got "mongo")
	// apps[0].secret: must not be empty (${WX_MAIN_SECRET} expanded to ""; is the variable set?)
	// apps[0].quotas.apis./cgi-bin/message/custom/send.per_minute: must be >= 0
	// apps[0].quotas.on_limt: unknown key
}

func ExampleConfig_WriteRedacted() {
	cfg, err := config.Parse([]byte(`
admin: {token: "t0ps3cret"}
apps: [{name: main, appid: wx0123456789abcdef, secret: "s3cret"}]
`), nil, "")
	if err != nil {
		log.Fatal(err)
	}
	if err := cfg.WriteRedacted(os.Stdout); err != nil {
		log.Fatal(err)
	}
	// Output:
	// listen: :8080
	// shutdown_timeout: 15s
	// upstream_timeout: 10s
	// max_body_bytes: 10MiB
	// retry_body_bytes: 2MiB
	// max_buffered_bytes: 256MiB
	// read_header_timeout: 10s
	// body_read_timeout: 30s
	// idle_timeout: 2m
	// max_header_bytes: 64KiB
	// upstream_proxy: ""
	// admin:
	//   listen: 127.0.0.1:9090
	//   token: <redacted>
	//   pprof: false
	// log:
	//   format: json
	//   level: info
	// store:
	//   kind: memory
	//   path: ./wxproxy-tokens.json
	//   redis:
	//     mode: standalone
	//     password: ""
	//     key_prefix: 'wxproxy:'
	//     replicas_hint: 1
	//     lock_lease: 3s
	// callers:
	//   allow_cidrs: [127.0.0.0/8, '::1/128', 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16]
	// default_app: main
	// apps:
	//   - name: main
	//     kind: official
	//     appid: wx0123456789abcdef
	//     secret: <redacted>
	//     token_mode: stable
	//     upstream: https://api.weixin.qq.com
	//     refresh_before: 10m
	//     token_wait: 5s
	//     quotas:
	//       reset_timezone: Asia/Shanghai
	//       token_fetch_per_day: 2000
	//       default: {per_minute: 0, per_day: 0, burst: 0}
	//       on_limit: reject
	//       max_wait: 2s
	//       respect_upstream: true
	//     breaker:
	//       consecutive_failures: 5
	//       failure_ratio: 0.5
	//       min_requests: 20
	//       interval: 10s
	//       open_timeout: 30s
	//       half_open_requests: 1
}

func ExampleConfig_ReloadDiff() {
	parse := func(src string) *config.Config {
		cfg, err := config.Parse([]byte(src), nil, "")
		if err != nil {
			log.Fatal(err)
		}
		return cfg
	}
	running := parse(`apps: [{name: main, appid: wx1, secret: s, quotas: {default: {per_minute: 60}}}]`)
	next := parse(`
listen: ":8081"
apps: [{name: main, appid: wx1, secret: s, quotas: {default: {per_minute: 120}}}]
`)
	for _, key := range running.ReloadDiff(next) {
		fmt.Printf("change to %s needs a restart\n", key)
	}
	// Output:
	// change to listen needs a restart
}
