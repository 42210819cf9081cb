package wxcrypt_test

import (
	"bytes"
	"testing"

	"github.com/wxproxy/wxproxy/wxcrypt"
)

// FuzzOpen feeds arbitrary envelopes and ciphertexts: nothing panics, and
// whatever decrypts re-encrypts to itself.
func FuzzOpen(f *testing.F) {
	c, err := wxcrypt.New(wxcrypt.Options{Token: wcToken, AESKey: wcKey, PreviousKey: wpKey})
	if err != nil {
		f.Fatal(err)
	}
	f.Add([]byte("<xml><Encrypt><![CDATA["+wcPost+"]]></Encrypt></xml>"), wcPost)
	f.Add([]byte("<xml><Encrypt>AAAA</Encrypt></xml>"), wcEcho)
	f.Add([]byte("<xml><AppId>x</AppId></xml>"), "")
	f.Fuzz(func(t *testing.T, body []byte, enc string) {
		if env, err := wxcrypt.ParseEnvelope(body); err == nil {
			sig := c.Sign("1", "2", env.Encrypt)
			_, _ = c.Open(sig, "1", "2", body)
		}
		msg, id, err := c.Decrypt(enc)
		if err != nil {
			return
		}
		again, err := c.Encrypt(msg, id)
		if err != nil {
			t.Fatal(err)
		}
		back, id2, err := c.Decrypt(again)
		if err != nil || !bytes.Equal(back, msg) || id2 != id {
			t.Fatalf("round trip: %q %q %v", back, id2, err)
		}
	})
}
