package wechat_test

import (
	"testing"

	"github.com/wxproxy/wxproxy/wechat"
)

func TestJSSDKSignature(t *testing.T) {
	const ticket = "sM4AOVdWfPE4DxkXGEs8VMCPGGVi4C3VM0P37wVUCFvkVAy_90u5h9nbSlYy3-Sl-HhTdfl2fzFy1AOcHKP7qg"
	tests := []struct {
		name, url, want string
	}{
		// The official vector (WECHAT.md, Tickets).
		{"official vector", "http://mp.weixin.qq.com?params=value", "0f9de62fce790f9a083d5c99e95740ceb90c27ed"},
		{"fragment removed", "http://mp.weixin.qq.com?params=value#/page?x=1", "0f9de62fce790f9a083d5c99e95740ceb90c27ed"},
		{"empty fragment removed", "http://mp.weixin.qq.com?params=value#", "0f9de62fce790f9a083d5c99e95740ceb90c27ed"},
		{"other url differs", "http://mp.weixin.qq.com?params=other", ""},
	}
	for _, tt := range tests {
		got := wechat.JSSDKSignature(ticket, "Wm3WZYTPz0wzccnW", 1414587457, tt.url)
		if tt.want == "" {
			if got == "0f9de62fce790f9a083d5c99e95740ceb90c27ed" {
				t.Errorf("%s: signature equals the vector's", tt.name)
			}
			continue
		}
		if got != tt.want {
			t.Errorf("%s: JSSDKSignature = %s, want %s", tt.name, got, tt.want)
		}
	}
}
