package wxcrypt_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/wxproxy/wxproxy/wxcrypt"
)

// Official WeCom sample (WECHAT.md "Message encryption", S25).
const (
	wcToken  = "QDG6eK"
	wcKey    = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"
	wcCorpID = "wx5823bf96d3bd56c7"
	wcPost   = "RypEvHKD8QQKFhvQ6QleEB4J58tiPdvo+rtK1I9qca6aM/wvqnLSV5zEPeusUiX5L5X/0lWfrf0QADHHhGd3QczcdCUpj911L3vg3W/sYYvuJTs3TUUkSUXxaccAS0qhxchrRYt66wiSpGLYL42aM6A8dTT+6k4aSknmPj48kzJs8qLjvd4Xgpue06DOdnLxAUHzM6+kDZ+HMZfJYuR+LtwGc2hgf5gsijff0ekUNXZiqATP7PF5mZxZ3Izoun1s4zG4LUMnvw2r+KqCKIw+3IQH03v+BCA9nMELNqbSf6tiWSrXJB3LAVGUcallcrw8V2t9EL4EhzJWrQUax5wLVMNS0+rUPA3k22Ncx4XXZS9o0MBH27Bo6BpNelZpS+/uh9KsNlY6bHCmJU9p8g7m3fVKn28H3KDYA5Pl/T8Z1ptDAVe0lXdQ2YoyyH2uyPIGHBZZIs2pDBS8R07+qN+E7Q=="
	wcEcho   = "P9nAzCzyDtyTWESHep1vC5X9xho/qYX3Zpb4yKa9SKld1DsH3Iyt3tP3zNdtp+4RPcs8TgAE7OaBO+FZXvnaqQ=="
)

// wechatpy's deterministic vectors (tests/test_crypto.py).
const (
	wpToken  = "123456"
	wpKey    = "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR"
	wpCorpID = "wx49f0ab532d5d035a"
	wpReply  = "<xml>\n<MsgType><![CDATA[text]]></MsgType>\n<Content><![CDATA[test]]></Content>\n<FromUserName><![CDATA[wx49f0ab532d5d035a]]></FromUserName>\n<ToUserName><![CDATA[messense]]></ToUserName>\n<AgentID>1</AgentID>\n<CreateTime>1411525903</CreateTime>\n</xml>"
	wpEnc    = "9s4gMv99m88kKTh/H8IdkOiMg6bisoy3ypwy9H4hvSPe9nsGaqyw5hhSjdYbcrKk+j3nba4HMOTzHrluLBYqxgNcBqGsL8GqxlhZgURnAtObvesEl5nZ+uBE8bviY0LWke8Zy9V/QYKxNV2FqllNXcfmstttyIkMKCCmVbCFM2JTF5wY0nFhHZSjPUL2Q1qvSUCUld+/WIXrx0oyKQmpB6o8NRrrNrsDf03oxI1p9FxUgMnwKKZeOA/uu+2IEvEBtb7muXsVbwbgX05UPPJvFurDXafG0RQyPR+mf1nDnAtQmmNOuiR5MIkdQ39xn1vWwi1O5oazPoQJz0nTYjxxEE8kv3kFxtAGVRe3ypD3WeK2XeFYFMNMpatF9XiKzHo3"
	wpEcho   = "4ByGGj+sVCYcvGeQYhaKIk1o0pQRNbRjxybjTGblXrBaXlTXeOo1+bXFXDQQb1o6co6Yh9Bv41n7hOchLF6p+Q=="
)

func newCrypter(t testing.TB, opts wxcrypt.Options) *wxcrypt.Crypter {
	t.Helper()
	c, err := wxcrypt.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestOfficialURLVerification(t *testing.T) {
	c := newCrypter(t, wxcrypt.Options{Token: wcToken, AESKey: wcKey})
	if got, want := c.Sign("1409659589", "263014780", wcEcho), "5c45ff5e21c57e6ad56bac8758b79b1d9ac89fd3"; got != want {
		t.Errorf("Sign = %s, want %s", got, want)
	}
	msg, err := c.VerifyURL("5c45ff5e21c57e6ad56bac8758b79b1d9ac89fd3", "1409659589", "263014780", wcEcho, wcCorpID)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(msg), "1616140317555161061"; got != want {
		t.Errorf("echo = %q, want %q", got, want)
	}
}

func TestOfficialPost(t *testing.T) {
	c := newCrypter(t, wxcrypt.Options{Token: wcToken, AESKey: wcKey})
	if got, want := c.Sign("1409659813", "1372623149", wcPost), "477715d11cdb4164915debcba66cb864d751f3e6"; got != want {
		t.Errorf("Sign = %s, want %s", got, want)
	}
	body := []byte("<xml><ToUserName><![CDATA[wx5823bf96d3bd56c7]]></ToUserName><Encrypt><![CDATA[" + wcPost + "]]></Encrypt><AgentID><![CDATA[218]]></AgentID></xml>")
	msg, err := c.Open("477715d11cdb4164915debcba66cb864d751f3e6", "1409659813", "1372623149", body, wcCorpID)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := len(msg), 284; got != want {
		t.Errorf("len(msg) = %d, want %d", got, want)
	}
	for _, s := range []string{"<Content><![CDATA[hello]]></Content>", "<MsgId>4561255354251345929</MsgId>", "<AgentID>218</AgentID>", "mycreate"} {
		if !bytes.Contains(msg, []byte(s)) {
			t.Errorf("msg lacks %s: %s", s, msg)
		}
	}
	// 20 + 284 + 18 = 322 bytes framed: 30 bytes of padding to 352, which
	// only a 32-byte block gives (16 would give 14).
	if _, err := c.Open("477715d11cdb4164915debcba66cb864d751f3e6", "1409659813", "1372623149", body, "wxother"); !errors.Is(err, wxcrypt.ErrReceiveID) {
		t.Errorf("wrong receive id: err = %v, want ErrReceiveID", err)
	}
}

func TestWechatpyDeterministicEncrypt(t *testing.T) {
	c := newCrypter(t, wxcrypt.Options{Token: wpToken, AESKey: wpKey, Rand: strings.NewReader("1234567890123456")})
	body, sig, err := c.Seal([]byte(wpReply), wpCorpID, "1411525903", "461056294")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := sig, "407518b7649e86ef23978113f92d27afa9296533"; got != want {
		t.Errorf("signature = %s, want %s", got, want)
	}
	if !bytes.Contains(body, []byte("<Encrypt><![CDATA["+wpEnc+"]]></Encrypt>")) {
		t.Errorf("envelope = %s, want Encrypt %s", body, wpEnc)
	}
	// And back.
	msg, err := newCrypter(t, wxcrypt.Options{Token: wpToken, AESKey: wpKey}).Open(sig, "1411525903", "461056294", body, wpCorpID)
	if err != nil || string(msg) != wpReply {
		t.Errorf("Open = %q, %v; want the reply", msg, err)
	}
	// wechatpy's URL check vector; a changed nonce fails.
	if _, err := c.VerifyURL("dd6b9c95b495b3f7e2901bfbc76c664930ffdb96", "1411443780", "437374425", wpEcho, wpCorpID); err != nil {
		t.Errorf("VerifyURL: %v", err)
	}
	if _, err := c.VerifyURL("dd6b9c95b495b3f7e2901bfbc76c664930ffdb96", "1411443780", "437374424", wpEcho, wpCorpID); !errors.Is(err, wxcrypt.ErrSignature) {
		t.Errorf("VerifyURL with another nonce: err = %v, want ErrSignature", err)
	}
}

func TestPreviousKey(t *testing.T) {
	old := newCrypter(t, wxcrypt.Options{Token: "tok", AESKey: wpKey})
	enc, err := old.Encrypt([]byte("ticket"), "wxc")
	if err != nil {
		t.Fatal(err)
	}
	rotated := newCrypter(t, wxcrypt.Options{Token: "tok", AESKey: wcKey, PreviousKey: wpKey})
	if msg, id, err := rotated.Decrypt(enc, "wxc"); err != nil || string(msg) != "ticket" || id != "wxc" {
		t.Errorf("Decrypt with the previous key = %q, %q, %v", msg, id, err)
	}
	without := newCrypter(t, wxcrypt.Options{Token: "tok", AESKey: wcKey})
	if _, _, err := without.Decrypt(enc, "wxc"); !errors.Is(err, wxcrypt.ErrDecrypt) {
		t.Errorf("Decrypt without the previous key: err = %v, want ErrDecrypt", err)
	}
}

func TestBadInput(t *testing.T) {
	c := newCrypter(t, wxcrypt.Options{Token: wcToken, AESKey: wcKey})
	for _, tc := range []struct {
		name string
		enc  string
		want error
	}{
		{"empty", "", wxcrypt.ErrDecrypt},
		{"not base64", "!!!", wxcrypt.ErrDecrypt},
		{"not a block multiple", "AAAA", wxcrypt.ErrDecrypt},
		{"garbage blocks", strings.Repeat("A", 64), wxcrypt.ErrDecrypt},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, err := c.Decrypt(tc.enc); !errors.Is(err, tc.want) {
				t.Errorf("Decrypt(%q) err = %v, want %v", tc.enc, err, tc.want)
			}
		})
	}
	for _, key := range []string{"", "short", strings.Repeat("a", 42) + "!", strings.Repeat("a", 44)} {
		if _, err := wxcrypt.New(wxcrypt.Options{Token: "t", AESKey: key}); !errors.Is(err, wxcrypt.ErrKey) {
			t.Errorf("New(key %q) err = %v, want ErrKey", key, err)
		}
	}
	if _, err := wxcrypt.New(wxcrypt.Options{Token: "t", AESKey: wcKey, PreviousKey: "bad"}); err == nil || !strings.Contains(err.Error(), "previous_encoding_aes_key") {
		t.Errorf("bad previous key: err = %v", err)
	}
	for _, body := range []string{"", "<xml>", "<xml></xml>", "not xml", "<!DOCTYPE x [<!ENTITY e SYSTEM \"file:///etc/passwd\">]><xml><Encrypt>&e;</Encrypt></xml>"} {
		if _, err := c.Open("x", "1", "2", []byte(body)); err == nil {
			t.Errorf("Open(%q) succeeded", body)
		}
	}
	if err := c.Verify("", "1409659813", "1372623149", wcPost); !errors.Is(err, wxcrypt.ErrSignature) {
		t.Errorf("empty signature: %v", err)
	}
	if err := c.Verify("477715D11CDB4164915DEBCBA66CB864D751F3E6", "1409659813", "1372623149", wcPost); err != nil {
		t.Errorf("upper-case signature: %v", err)
	}
}

func TestRoundTripSizes(t *testing.T) {
	c := newCrypter(t, wxcrypt.Options{Token: "t", AESKey: wcKey})
	for n := range 70 {
		msg := bytes.Repeat([]byte{'x'}, n)
		enc, err := c.Encrypt(msg, "wxid")
		if err != nil {
			t.Fatal(err)
		}
		got, id, err := c.Decrypt(enc, "wxid")
		if err != nil || !bytes.Equal(got, msg) || id != "wxid" {
			t.Fatalf("n=%d: %q %q %v", n, got, id, err)
		}
	}
}
