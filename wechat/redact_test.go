package wechat

import (
	"errors"
	"net/url"
	"strings"
	"testing"
)

func TestRedactURL(t *testing.T) {
	tests := []struct{ in, want string }{
		{"https://api.weixin.qq.com/cgi-bin/token?grant_type=client_credential&appid=wx1&secret=S3CRET",
			"https://api.weixin.qq.com/cgi-bin/token?appid=wx1&grant_type=client_credential&secret=REDACTED"},
		{"http://h/cgi-bin/x?access_token=TOK&a=1", "http://h/cgi-bin/x?a=1&access_token=REDACTED"},
		{"http://h/cgi-bin/gettoken?corpid=c&corpsecret=S", "http://h/cgi-bin/gettoken?corpid=c&corpsecret=REDACTED"},
		{"http://h/path", "http://h/path"},
		{"http://h/p?a=1", "http://h/p?a=1"},
		{"%zz?secret=S", "%zz?REDACTED"},
	}
	for _, tt := range tests {
		if got := RedactURL(tt.in); got != tt.want {
			t.Errorf("RedactURL(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestRedactError(t *testing.T) {
	base := errors.New("connection refused")
	err := &url.Error{Op: "Get", URL: "http://h/cgi-bin/token?secret=S3CRET&appid=wx", Err: base}
	got := RedactError(err)
	if strings.Contains(got.Error(), "S3CRET") {
		t.Errorf("RedactError kept the secret: %v", got)
	}
	if !errors.Is(got, base) {
		t.Errorf("RedactError lost the cause: %v", got)
	}
	plain := errors.New("x")
	if RedactError(plain) != plain {
		t.Error("RedactError changed an error without a URL")
	}
}
