package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wxproxy/wxproxy/wechat"
	"github.com/wxproxy/wxproxy/wxcrypt"
)

func noEnv(string) string { return "" }

// startRun runs the command on a free port and returns its base URL and a
// channel with run's result.
func startRun(t *testing.T, ctx context.Context, args ...string) (string, <-chan error) {
	t.Helper()
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := run(ctx, append([]string{"-listen", "127.0.0.1:0"}, args...), noEnv, pw, io.Discard)
		pw.CloseWithError(io.EOF)
		done <- err
	}()
	line, err := bufio.NewReader(pr).ReadString('\n')
	go io.Copy(io.Discard, pr)
	if err != nil {
		t.Fatalf("reading the listening line: %v (run: %v)", err, <-done)
	}
	base, ok := strings.CutPrefix(strings.TrimSpace(line), "wechatsim listening on ")
	if !ok || !strings.HasPrefix(base, "http://127.0.0.1:") {
		t.Fatalf("first line %q, want \"wechatsim listening on http://127.0.0.1:PORT\"", line)
	}
	return base, done
}

func TestRunServesAndStops(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	base, done := startRun(t, ctx, "-app", "wx1:secret1", "-wecom", "ww1:agent", "-token-ttl", "60s")

	resp, err := http.Get(base + "/cgi-bin/token?grant_type=client_credential&appid=wx1&secret=secret1")
	if err != nil {
		t.Fatal(err)
	}
	var tok wechat.TokenResponse
	err = json.NewDecoder(resp.Body).Decode(&tok)
	resp.Body.Close()
	if err != nil || tok.AccessToken == "" || tok.ExpiresIn != 60 {
		t.Fatalf("token answer %+v, err %v; want a token with expires_in 60", tok, err)
	}
	resp, err = http.Post(base+"/cgi-bin/message/custom/send?access_token="+tok.AccessToken, "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if code, ok := wechat.ScanErrcode(body); !ok || code != 0 || !bytes.Contains(body, []byte(`"appid":"wx1"`)) {
		t.Errorf("API answer %s, want errcode 0 from wx1", body)
	}
	resp, err = http.Get(base + "/cgi-bin/gettoken?corpid=ww1&corpsecret=agent")
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if code, _ := wechat.ScanErrcode(body); code != 0 {
		t.Errorf("WeCom token answer %s", body)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("run after cancel = %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return after cancel")
	}
	if _, err := http.Get(base + "/sim/clock"); err == nil {
		t.Error("server still answers after shutdown")
	}
}

func TestRunConfigFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sim.yaml")
	if err := os.WriteFile(path, []byte("apps: [{appid: wxc, secret: sc, kind: miniprogram}]\nlatency: 1ms\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	base, done := startRun(t, ctx, "-config", path, "-app", "wx2:s2")
	for _, appid := range []string{"wxc", "wx2"} {
		resp, err := http.Get(base + "/sim/stats")
		if err != nil {
			t.Fatal(err)
		}
		var st struct {
			TokenFetches map[string]any `json:"token_fetches"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&st)
		resp.Body.Close()
		if _, ok := st.TokenFetches[appid]; !ok {
			t.Errorf("app %s from the config and flags is not configured: %v", appid, st.TokenFetches)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("run = %v", err)
	}
}

func TestRunErrors(t *testing.T) {
	dir := t.TempDir()
	badConfig := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(badConfig, []byte("apps: []\nlatencyy: 1s\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no apps", nil, "no apps configured"},
		{"app without secret", []string{"-app", "wx1"}, `"wx1": want ID:SECRET`},
		{"app with empty secret", []string{"-app", "wx1:"}, `"wx1:": want ID:SECRET`},
		{"wecom without corpid", []string{"-wecom", ":secret"}, `":secret": want ID:SECRET`},
		{"unknown flag", []string{"-nope"}, "flag provided but not defined: -nope"},
		{"bad duration", []string{"-app", "a:b", "-latency", "soon"}, "invalid value"},
		{"negative ttl", []string{"-app", "a:b", "-token-ttl", "-1s"}, "token_ttl"},
		{"negative rid records", []string{"-app", "a:b", "-rid-records", "-5"}, "rid_records"},
		{"stray argument", []string{"-app", "a:b", "serve"}, `unexpected argument "serve"`},
		{"bad config", []string{"-config", badConfig}, "latencyy: unknown key"},
		{"missing config", []string{"-config", filepath.Join(dir, "none.yaml")}, "none.yaml"},
		{"bad listen", []string{"-app", "a:b", "-listen", "256.0.0.1:1"}, "256.0.0.1"},
		{"suite with three parts", []string{"-suite", "ws:sec:tok"}, "suite: want SUITEID:SECRET:TOKEN:AESKEY"},
		{"suite with a bad key", []string{"-suite", "ws:sec:tok:short"}, "suites[0]"},
		{"provider without secret", []string{"-provider", "wwp"}, "provider: want CORPID:SECRET"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout bytes.Buffer
			err := run(context.Background(), tt.args, noEnv, &stdout, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("run(%q) = %v, want an error containing %q", tt.args, err, tt.want)
			}
			if stdout.Len() != 0 {
				t.Errorf("run(%q) printed %q on a failed start", tt.args, stdout.String())
			}
		})
	}
}

func TestRunSuites(t *testing.T) {
	const key = "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR"
	crypt, err := wxcrypt.New(wxcrypt.Options{Token: "tok", AESKey: key})
	if err != nil {
		t.Fatal(err)
	}
	tickets := make(chan string, 16)
	cb := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		q := r.URL.Query()
		msg, err := crypt.Open(q.Get("msg_signature"), q.Get("timestamp"), q.Get("nonce"), body, "wwsuite1")
		if err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		var x struct{ InfoType, SuiteTicket string }
		_ = xml.Unmarshal(msg, &x)
		if x.InfoType == "suite_ticket" {
			select {
			case tickets <- x.SuiteTicket:
			default:
			}
		}
		io.WriteString(w, "success")
	}))
	defer cb.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	base, done := startRun(t, ctx, "-suite", "wwsuite1:ssec:tok:"+key, "-provider", "wwprov1:psec",
		"-callback", cb.URL+"/callback/suiteco", "-ticket-every", "10ms")

	var ticket string
	select {
	case ticket = <-tickets:
	case <-time.After(10 * time.Second):
		t.Fatal("no suite_ticket pushed by -ticket-every within 10 s")
	}
	post := func(path, body string) []byte {
		t.Helper()
		resp, err := http.Post(base+path, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return b
	}
	if b := post("/cgi-bin/service/get_suite_token", `{"suite_id":"wwsuite1","suite_secret":"ssec","suite_ticket":"`+ticket+`"}`); !bytes.Contains(b, []byte(`"suite_access_token":"86_`)) {
		t.Errorf("suite token with the pushed ticket: %s", b)
	}
	if b := post("/cgi-bin/service/get_provider_token", `{"corpid":"wwprov1","provider_secret":"psec"}`); !bytes.Contains(b, []byte(`"provider_access_token":"86_`)) {
		t.Errorf("provider token: %s", b)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("run = %v", err)
	}
}
