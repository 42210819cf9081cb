package wechat

import (
	"encoding/json"
	"testing"
)

func TestScanErrcode(t *testing.T) {
	tests := []struct {
		name   string
		body   string
		code   int
		wantOK bool
	}{
		{"ok", `{"errcode":0,"errmsg":"ok"}`, 0, true},
		{"token error", `{"errcode":40001,"errmsg":"invalid credential rid: 1"}`, 40001, true},
		{"negative", `{"errcode":-1,"errmsg":"system error"}`, -1, true},
		{"spaces", " {\n \"errcode\" : 42001 }", 42001, true},
		{"string value", `{"errcode":"45009","errmsg":"x"}`, 45009, true},
		{"late key", `{"a":{"errcode":1},"list":[{"errcode":2}],"errcode":3}`, 3, true},
		{"nested only", `{"a":{"errcode":40001}}`, 0, false},
		{"inside string", `{"msg":"\"errcode\":40001","x":1}`, 0, false},
		{"escaped quote key", `{"err\"code":5,"errcode":6}`, 6, true},
		{"value equals key name", `{"k":"errcode","errcode":7}`, 7, true},
		{"token answer", `{"access_token":"abc","expires_in":7200}`, 0, false},
		{"not json", `GIF89a`, 0, false},
		{"array", `[{"errcode":1}]`, 0, false},
		{"truncated", `{"errcode":`, 0, false},
		{"bad number", `{"errcode":abc}`, 0, false},
		{"unclosed string", `{"errcode`, 0, false},
		{"empty", ``, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, ok := ScanErrcode([]byte(tt.body))
			if code != tt.code || ok != tt.wantOK {
				t.Errorf("ScanErrcode(%q) = %d, %v; want %d, %v", tt.body, code, ok, tt.code, tt.wantOK)
			}
		})
	}
}

// FuzzScanErrcode checks that the scanner never panics and agrees with
// encoding/json on every object that the standard decoder accepts.
func FuzzScanErrcode(f *testing.F) {
	for _, s := range []string{`{"errcode":40001}`, `{"a":[1,{"errcode":2}],"errcode":"3"}`, `{}`, `x`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		code, ok := ScanErrcode(body)
		var v map[string]json.RawMessage
		if json.Unmarshal(body, &v) != nil {
			return
		}
		raw, has := v["errcode"]
		var n int
		if has && json.Unmarshal(raw, &n) == nil && n < 1<<40 && n > -(1<<40) {
			if !ok || code != n {
				t.Fatalf("ScanErrcode(%q) = %d, %v; encoding/json says %d", body, code, ok, n)
			}
		}
	})
}

func TestClassifiers(t *testing.T) {
	for _, c := range []int{40001, 40014, 42001} {
		if !IsTokenError(c) {
			t.Errorf("IsTokenError(%d) = false", c)
		}
	}
	for _, c := range []int{0, -1, 41001, 45009} {
		if IsTokenError(c) {
			t.Errorf("IsTokenError(%d) = true", c)
		}
	}
	for _, c := range []int{40125, 40013, 40164, 40243, 41002, 41004, 89503, 50004, 40001} {
		if !IsConfigError(c) {
			t.Errorf("IsConfigError(%d) = false", c)
		}
	}
	if IsConfigError(-1) || IsConfigError(45009) {
		t.Error("IsConfigError counts a transient code")
	}
	if got, want := Message(40014), "invalid access_token"; got != want {
		t.Errorf("Message(40014) = %q, want %q", got, want)
	}
}

func BenchmarkScanErrcode(b *testing.B) {
	body := []byte(`{"errcode":0,"errmsg":"ok","echo":{"appid":"wx0123456789abcdef","method":"POST","path":"/cgi-bin/message/custom/send","query":{"a":["1"]},"body_sha256":"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","body_len":0,"request_id":"r1"}}`)
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if _, ok := ScanErrcode(body); !ok {
			b.Fatal("no errcode")
		}
	}
}

func TestWeComMessage(t *testing.T) {
	tests := []struct {
		code int
		want string
	}{
		{CodeInvalidAppID, "invalid corpid"},
		{CodeSecretMissing, "corpsecret missing"},
		{CodeInvalidCredential, "invalid credential"},
		{CodeTokenExpired, Message(CodeTokenExpired)}, // shared text falls back to WeChat's
		{123456, "unknown error"},
	}
	for _, tt := range tests {
		if got := WeComMessage(tt.code); got != tt.want {
			t.Errorf("WeComMessage(%d) = %q, want %q", tt.code, got, tt.want)
		}
	}
}
