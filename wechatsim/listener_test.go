package wechatsim_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/wxproxy/wxproxy/wechatsim"
)

// TestListeners shows two listeners share one state (a token minted on
// one works on the other) and a fault can name one listener.
func TestListeners(t *testing.T) {
	s, err := wechatsim.New(wechatsim.Options{Apps: testApps()})
	if err != nil {
		t.Fatal(err)
	}
	l0 := httptest.NewServer(s.Listener(0))
	defer l0.Close()
	l1 := httptest.NewServer(s.Listener(1))
	defer l1.Close()
	call := func(base, method, path, body string) (int, map[string]any) {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var m map[string]any
		_ = json.Unmarshal(b, &m)
		return resp.StatusCode, m
	}
	_, tok := call(l0.URL, "GET", "/cgi-bin/token?grant_type=client_credential&appid="+appID+"&secret="+appSecret, "")
	at, _ := tok["access_token"].(string)
	if at == "" {
		t.Fatalf("no token: %v", tok)
	}
	if _, m := call(l1.URL, "POST", "/cgi-bin/message/custom/send?access_token="+at, "{}"); m["errcode"] != 0.0 {
		t.Fatalf("token of listener 0 on listener 1: %v", m)
	}
	// A fault on listener 1 only.
	if code, m := call(l0.URL, "POST", "/sim/faults", `{"path":"*","status":502,"listener":1}`); code != 200 {
		t.Fatalf("add fault: %d %v", code, m)
	}
	if code, _ := call(l1.URL, "POST", "/cgi-bin/message/custom/send?access_token="+at, "{}"); code != 502 {
		t.Errorf("listener 1 with its fault: HTTP %d, want 502", code)
	}
	if code, m := call(l0.URL, "POST", "/cgi-bin/message/custom/send?access_token="+at, "{}"); code != 200 || m["errcode"] != 0.0 {
		t.Errorf("listener 0 without a fault: HTTP %d %v", code, m)
	}
	if code, _ := call(l0.URL, "POST", "/sim/faults", `{"path":"*","status":502,"listener":-1}`); code != 400 {
		t.Errorf("negative listener: HTTP %d, want 400", code)
	}
	if err := s.AddFault(wechatsim.Fault{Path: "*", Errcode: -1, Listener: new(0)}); err != nil {
		t.Fatal(err)
	}
	if _, m := call(l0.URL, "POST", "/cgi-bin/message/custom/send?access_token="+at, "{}"); m["errcode"] != -1.0 {
		t.Errorf("listener 0 fault by AddFault: %v", m)
	}
}
