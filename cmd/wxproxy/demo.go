package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/wxproxy/wxproxy/config"
	"github.com/wxproxy/wxproxy/server"
	"github.com/wxproxy/wxproxy/wechatsim"
)

// The demo account lives only in the in-process simulator.
const (
	demoAppID  = "wx0123456789abcdef"
	demoSecret = "demo-secret-not-real"
)

// demo runs the proxy against an in-process WeChat simulator with one demo
// app and prints commands to try. It needs no credentials and no Redis.
func demo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:8080", "caller-facing address")
	admin := fs.String("admin", "127.0.0.1:9090", "admin address")
	if err := fs.Parse(args); err != nil {
		return errReported
	}

	sim, err := wechatsim.New(wechatsim.Options{Apps: []wechatsim.App{{AppID: demoAppID, Secret: demoSecret, Kind: wechatsim.KindOfficial}}})
	if err != nil {
		return err
	}
	simL, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("demo: simulator: %w", err)
	}
	simSrv := &http.Server{Handler: sim, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = simSrv.Serve(simL) }()
	defer simSrv.Close()
	simURL := "http://" + simL.Addr().String()

	yaml := fmt.Sprintf(`
listen: %q
admin: {listen: %q, token: demo-admin-token}
log: {format: text, level: info}
apps:
  - name: demo
    kind: official
    appid: %s
    secret: %s
    upstream: %s
    tickets: [jsapi]
`, *listen, *admin, demoAppID, demoSecret, simURL)
	cfg, err := config.Parse([]byte(yaml), func(string) string { return "" }, ".")
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	srv, err := server.New(cfg, newLogger(cfg.Log, stderr))
	if err != nil {
		return err
	}
	err = srv.Run(ctx, func(caller, adm net.Addr) {
		printDemo(stdout, caller.String(), adm.String(), simURL)
	})
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

func printDemo(w io.Writer, caller, admin, sim string) {
	fmt.Fprintf(w, `
wxproxy demo is running.
  caller port  http://%[1]s   (point your WeChat SDK's base URL here)
  admin port   http://%[2]s
  console      http://%[2]s/   (status page: token, breaker, quotas, recent errors; admin token: demo-admin-token)
  simulator    %[3]s   (stands in for api.weixin.qq.com; app "demo", appid %[4]s)

Try these — note that no access_token and no secret are sent:

  # a business API: wxproxy appends the token; the simulator echoes what it got
  curl -s 'http://%[1]s/cgi-bin/user/info?openid=o_demo_user'

  # a POST with a JSON body, naming the app by path prefix
  curl -s -X POST 'http://%[1]s/demo/cgi-bin/message/custom/send' \
       -H 'Content-Type: application/json' \
       -d '{"touser":"o_demo_user","msgtype":"text","text":{"content":"hello"}}'

  # what an SDK does: ask for a token. wxproxy answers with a placeholder,
  # so no SDK can ever invalidate the shared token
  curl -s 'http://%[1]s/cgi-bin/token?grant_type=client_credential&appid=%[4]s&secret=anything'

  # a JS-SDK page's wx.config, signed with the jsapi ticket wxproxy holds
  curl -s 'http://%[1]s/wxproxy/jssdk/config?url=https%%3A%%2F%%2Fshop.example.com%%2Fitem%%3Fid%%3D7'

  # WeChat kills the token; the next call is refreshed and retried once (X-WXProxy-Retried: 1)
  curl -s -X POST '%[3]s/sim/apps/%[4]s/invalidate'
  curl -si 'http://%[1]s/cgi-bin/user/info?openid=o_demo_user'

  # health, and how many tokens the simulator handed out
  curl -s 'http://%[2]s/readyz'
  curl -s '%[3]s/sim/stats'

Stop with Ctrl-C.
`, caller, admin, sim, demoAppID)
}
