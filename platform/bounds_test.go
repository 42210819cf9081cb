package platform

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/wxproxy/wxproxy/wxcrypt"
)

func newTestPlatform(tb testing.TB) *Platform {
	tb.Helper()
	crypt, _ := wxcrypt.New(wxcrypt.Options{Token: "tok", AESKey: "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"})
	p, err := New(Options{Name: "acme", ComponentAppID: "wxc", Secret: "s", Crypter: crypt, Upstream: "http://127.0.0.1:1"})
	if err != nil {
		tb.Fatal(err)
	}
	return p
}

// Unknown appids named by callers are remembered in a bounded map, and a
// remembered one costs no store lookup.
func TestMissesBounded(t *testing.T) {
	p := newTestPlatform(t)
	for i := range 3 * maxMisses {
		if _, err := p.Merchant(context.Background(), fmt.Sprintf("wxunknown%d", i)); err != ErrUnknownMerchant {
			t.Fatal(err)
		}
	}
	if n := len(p.misses); n > maxMisses {
		t.Errorf("misses = %d, want <= %d", n, maxMisses)
	}
	if _, err := p.Merchant(context.Background(), string(make([]byte, 65))); err != ErrUnknownMerchant {
		t.Errorf("over-long appid: %v", err)
	}
}

// Authorization codes remembered are bounded.
func TestCodesBounded(t *testing.T) {
	p := newTestPlatform(t)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	for i := range usedCodes + 10 {
		_, _ = p.exchange(ctx, fmt.Sprintf("code%d", i), 0) // fails: no ticket
	}
	if n := len(p.codes); n > usedCodes {
		t.Errorf("codes = %d, want <= %d", n, usedCodes)
	}
}

// FuzzPush feeds arbitrary decrypted pushes, correctly signed and
// encrypted: nothing panics, and nothing but a well-formed ticket push
// changes the ticket.
func FuzzPush(f *testing.F) {
	f.Add([]byte("<xml><AppId>wxc</AppId><CreateTime>1</CreateTime><InfoType>component_verify_ticket</InfoType><ComponentVerifyTicket>t</ComponentVerifyTicket></xml>"))
	f.Add([]byte("<xml><InfoType>unauthorized</InfoType><AuthorizerAppid>wx1</AuthorizerAppid></xml>"))
	f.Add([]byte("<xml><InfoType>authorized</InfoType></xml>"))
	f.Add([]byte("<xml><AppId>other</AppId><InfoType>component_verify_ticket</InfoType></xml>"))
	f.Add([]byte("<xml><CreateTime>x</CreateTime></xml>"))
	p := newTestPlatform(f)
	crypt, _ := wxcrypt.New(wxcrypt.Options{Token: "tok", AESKey: "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"})
	f.Fuzz(func(t *testing.T, msg []byte) {
		if len(msg) > 4096 {
			return
		}
		body, sig, err := crypt.Seal(msg, "wxc", "1", "2")
		if err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		q := map[string][]string{"msg_signature": {sig}, "timestamp": {"1"}, "nonce": {"2"}}
		_ = p.HandlePush(ctx, q, body)
	})
}
