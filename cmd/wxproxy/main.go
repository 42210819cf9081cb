// Command wxproxy is a reverse proxy for the WeChat and WeCom server APIs:
// callers send requests with no access_token and no secret; wxproxy holds the
// token, injects it, and refreshes and retries once when WeChat rejects it.
//
//	wxproxy serve [-config FILE]     run the proxy
//	wxproxy demo  [-listen ADDR] [-admin ADDR]
//	wxproxy check [-config FILE]     validate and print the effective config
//	wxproxy version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, errReported) {
			fmt.Fprintln(os.Stderr, "wxproxy:", err)
		}
		os.Exit(1)
	}
}

// errReported means the error was already printed in full.
var errReported = errors.New("reported")

const usage = `usage:
  wxproxy serve [-config FILE]   run the proxy (FILE default: $WXPROXY_CONFIG, else configs/wxproxy.yaml)
  wxproxy demo  [-listen ADDR] [-admin ADDR]
                                 proxy + in-process WeChat simulator + a demo app
  wxproxy check [-config FILE]   validate; print the effective config, secrets redacted
  wxproxy version`

// run is the whole program; main only supplies the process's environment.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprintln(stderr, usage)
		return errReported
	}
	switch cmd, rest := args[0], args[1:]; cmd {
	case "serve":
		path, err := configFlag("serve", rest, getenv, stderr)
		if err != nil {
			return err
		}
		return serve(ctx, path, getenv, stderr)
	case "check":
		path, err := configFlag("check", rest, getenv, stderr)
		if err != nil {
			return err
		}
		return check(path, getenv, stdout, stderr)
	case "demo":
		return demo(ctx, rest, stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, version())
		return nil
	case "-h", "-help", "--help", "help":
		fmt.Fprintln(stdout, usage)
		return nil
	default:
		fmt.Fprintf(stderr, "wxproxy: unknown command %q\n%s\n", cmd, usage)
		return errReported
	}
}

func configFlag(name string, args []string, getenv func(string) string, stderr io.Writer) (string, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	def := getenv("WXPROXY_CONFIG")
	if def == "" {
		def = "configs/wxproxy.yaml"
	}
	path := fs.String("config", def, "configuration file")
	if err := fs.Parse(args); err != nil {
		return "", errReported
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "wxproxy %s: unexpected argument %q\n", name, fs.Arg(0))
		return "", errReported
	}
	return *path, nil
}

// version describes the build from the module and VCS data Go embeds.
func version() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "wxproxy (unknown build)"
	}
	v := "wxproxy " + info.Main.Version + " " + info.GoVersion
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision", "vcs.time", "vcs.modified":
			v += " " + s.Key + "=" + s.Value
		}
	}
	return v
}
