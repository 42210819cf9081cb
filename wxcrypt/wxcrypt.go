// Package wxcrypt is WeChat's message encryption (WXBizMsgCrypt), used by
// the Open Platform's pushes to a third-party platform and by WeCom's
// callbacks: a SHA-1 signature over the sorted token, timestamp, nonce and
// ciphertext, and AES-256-CBC (IV = the key's first 16 bytes, PKCS#7
// padding to 32-byte blocks) over random(16) ‖ uint32 len ‖ msg ‖ receive id.
//
// A Crypter holds one message token, the current EncodingAESKey and
// optionally the previous one (tried when decryption with the current key
// fails, as WeChat keeps using it for a while after it is changed). The
// receive id is not fixed: callers pass the set they accept, because one
// WeCom suite receives pushes addressed to its suite id and to its provider
// corpid. It does no I/O and knows no transport or XML envelope beyond the
// helpers in envelope.go.
package wxcrypt

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha1"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
)

// Errors a caller branches on. They never contain key material or
// plaintext.
var (
	ErrSignature = errors.New("wxcrypt: signature mismatch")      // -40001
	ErrKey       = errors.New("wxcrypt: invalid EncodingAESKey")  // -40004
	ErrReceiveID = errors.New("wxcrypt: receive id not accepted") // -40005
	ErrDecrypt   = errors.New("wxcrypt: cannot decrypt")          // -40007, -40008, -40010
)

// blockSize is WeChat's PKCS#7 block: 32, not AES's 16.
const blockSize = 32

// MaxMessage bounds a decrypted message; WeChat's pushes are a few KB.
const MaxMessage = 1 << 20

// Crypter encrypts, decrypts and signs WeChat messages for one message
// token and key pair. It is immutable and safe for concurrent use.
type Crypter struct {
	token string
	keys  []cipher.Block // current first, then the previous
	ivs   [][]byte
	rand  io.Reader
}

// Options configures a Crypter.
type Options struct {
	Token       string // the message verification token (Token in WeChat's console)
	AESKey      string // the current EncodingAESKey: 43 characters
	PreviousKey string // optional: the EncodingAESKey before the last change
	// Rand is the source of the 16 random bytes of each encrypted message;
	// default crypto/rand. Tests pass a fixed reader to reproduce vectors.
	Rand io.Reader
}

// New returns a Crypter, or ErrKey (wrapped, naming which key) when a key
// is not 43 characters of base64 that decode to 32 bytes.
func New(opts Options) (*Crypter, error) {
	if opts.Token == "" {
		return nil, errors.New("wxcrypt: empty token")
	}
	c := &Crypter{token: opts.Token, rand: opts.Rand}
	if c.rand == nil {
		c.rand = rand.Reader
	}
	for i, k := range []string{opts.AESKey, opts.PreviousKey} {
		if i == 1 && k == "" {
			break
		}
		raw, err := DecodeKey(k)
		if err != nil {
			which := "encoding_aes_key"
			if i == 1 {
				which = "previous_encoding_aes_key"
			}
			return nil, fmt.Errorf("%s: %w", which, err)
		}
		b, _ := aes.NewCipher(raw) // 32 bytes: never fails
		c.keys = append(c.keys, b)
		c.ivs = append(c.ivs, raw[:16])
	}
	return c, nil
}

// DecodeKey returns the 32-byte AES key of an EncodingAESKey, or ErrKey.
func DecodeKey(key string) ([]byte, error) {
	if len(key) != 43 {
		return nil, fmt.Errorf("%w: must be 43 characters, got %d", ErrKey, len(key))
	}
	for i := 0; i < len(key); i++ {
		c := key[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9') {
			return nil, fmt.Errorf("%w: must contain only letters and digits", ErrKey)
		}
	}
	// 43 alphanumerics and "=" always decode to 32 bytes (the last
	// character's stray bits are ignored, as WeChat's samples do).
	raw, err := base64.StdEncoding.DecodeString(key + "=")
	if err != nil || len(raw) != 32 {
		return nil, fmt.Errorf("%w: not base64", ErrKey)
	}
	return raw, nil
}

// Signature is WeChat's msg_signature: sha1 of the sorted, concatenated
// parts (token, timestamp, nonce and, for encrypted messages, the Encrypt
// text), in lower-case hex. With three parts it is the plain signature.
func Signature(parts ...string) string {
	s := slices.Clone(parts)
	slices.Sort(s)
	h := sha1.New()
	for _, p := range s {
		io.WriteString(h, p)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Sign returns the msg_signature of encrypted under this Crypter's token.
func (c *Crypter) Sign(timestamp, nonce, encrypted string) string {
	return Signature(c.token, timestamp, nonce, encrypted)
}

// Verify checks msg_signature in constant time; ErrSignature if it does
// not match. An empty signature never matches.
func (c *Crypter) Verify(signature, timestamp, nonce, encrypted string) error {
	return same(signature, c.Sign(timestamp, nonce, encrypted))
}

// same compares a received signature with the expected one in constant
// time, ignoring the case of its hex digits.
func same(signature, want string) error {
	if len(signature) != len(want) || subtle.ConstantTimeCompare([]byte(strings.ToLower(signature)), []byte(want)) != 1 {
		return ErrSignature
	}
	return nil
}

// VerifyPlain checks the plain signature (sha1 of the sorted token,
// timestamp and nonce) that WeChat adds to every push and URL check;
// ErrSignature if it does not match.
func (c *Crypter) VerifyPlain(signature, timestamp, nonce string) error {
	return same(signature, Signature(c.token, timestamp, nonce))
}

// Decrypt returns the message in encrypted (standard padded base64) and
// the receive id it carried, trying the current key and then the previous
// one. The receive id must be one of accept; with no accept it is not
// checked (callers that accept "" — personal-subject apps — list it).
// Errors are ErrDecrypt or ErrReceiveID.
func (c *Crypter) Decrypt(encrypted string, accept ...string) (msg []byte, receiveID string, err error) {
	ct, err := base64.StdEncoding.DecodeString(encrypted)
	if err != nil || len(ct) == 0 || len(ct)%aes.BlockSize != 0 || len(ct) > MaxMessage+4096 {
		return nil, "", fmt.Errorf("%w: bad ciphertext", ErrDecrypt)
	}
	err = fmt.Errorf("%w: bad padding or framing", ErrDecrypt)
	for i := range c.keys {
		m, id, derr := c.open(i, ct)
		if derr != nil {
			continue
		}
		if len(accept) > 0 && !slices.Contains(accept, id) {
			err = ErrReceiveID
			continue
		}
		return m, id, nil
	}
	return nil, "", err
}

// open decrypts ct with key i and unframes it.
func (c *Crypter) open(i int, ct []byte) ([]byte, string, error) {
	pt := make([]byte, len(ct))
	cipher.NewCBCDecrypter(c.keys[i], c.ivs[i]).CryptBlocks(pt, ct)
	pad := int(pt[len(pt)-1])
	if pad < 1 || pad > blockSize || pad > len(pt) {
		return nil, "", ErrDecrypt
	}
	for _, b := range pt[len(pt)-pad:] {
		if int(b) != pad {
			return nil, "", ErrDecrypt
		}
	}
	pt = pt[:len(pt)-pad]
	if len(pt) < 20 {
		return nil, "", ErrDecrypt
	}
	n := binary.BigEndian.Uint32(pt[16:20])
	if n > MaxMessage || int(n) > len(pt)-20 {
		return nil, "", ErrDecrypt
	}
	msg := pt[20 : 20+n]
	return slices.Clone(msg), string(pt[20+n:]), nil
}

// Encrypt frames msg with receiveID and returns it encrypted with the
// current key, in standard padded base64.
func (c *Crypter) Encrypt(msg []byte, receiveID string) (string, error) {
	return c.encrypt(0, msg, receiveID)
}

func (c *Crypter) encrypt(i int, msg []byte, receiveID string) (string, error) {
	if len(msg) > MaxMessage {
		return "", errors.New("wxcrypt: message too large")
	}
	n := 20 + len(msg) + len(receiveID)
	pad := blockSize - n%blockSize
	pt := make([]byte, n+pad)
	if _, err := io.ReadFull(c.rand, pt[:16]); err != nil {
		return "", fmt.Errorf("wxcrypt: random: %w", err)
	}
	binary.BigEndian.PutUint32(pt[16:20], uint32(len(msg)))
	copy(pt[20:], msg)
	copy(pt[20+len(msg):], receiveID)
	for j := n; j < len(pt); j++ {
		pt[j] = byte(pad)
	}
	cipher.NewCBCEncrypter(c.keys[i], c.ivs[i]).CryptBlocks(pt, pt)
	return base64.StdEncoding.EncodeToString(pt), nil
}
