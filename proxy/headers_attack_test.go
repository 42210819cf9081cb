package proxy

import "testing"

// A caller's forwarding headers would tell WeChat a client address of the
// caller's choosing (and name internal hosts); none of them is forwarded,
// in any spelling, and ordinary headers still are.
func TestAttackForwardingHeadersNotForwarded(t *testing.T) {
	for _, k := range []string{"Forwarded", "forwarded", "FORWARDED", "X-Forwarded-For", "x-forwarded-host", "X-Forwarded-Proto", "X-WXProxy-Key", "Host", "Proxy-Authorization"} {
		if !skipRequestHeader([]byte(k)) {
			t.Errorf("%s would be forwarded to WeChat", k)
		}
	}
	for _, k := range []string{"Content-Type", "User-Agent", "Accept", "Forwarded-Not", "X-Custom"} {
		if skipRequestHeader([]byte(k)) {
			t.Errorf("%s would be dropped; only forwarding and hop-by-hop headers are", k)
		}
	}
}
