package wxcrypt

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"strconv"
)

// ErrEnvelope means a push body is not WeChat's encrypted XML envelope.
var ErrEnvelope = errors.New("wxcrypt: not an encrypted message envelope")

// Envelope is the outer XML of an encrypted push: the Encrypt text and
// whichever addressee field the sender filled (AppId for Open Platform
// system pushes, ToUserName for messages and WeCom).
type Envelope struct {
	ToUserName string `xml:"ToUserName"`
	AppID      string `xml:"AppId"`
	Encrypt    string `xml:"Encrypt"`
	AgentID    string `xml:"AgentID"`
}

// ParseEnvelope reads the envelope of an encrypted push. The caller bounds
// the body's size. encoding/xml expands no external entities, so a hostile
// body cannot make it read files or the network.
func ParseEnvelope(body []byte) (Envelope, error) {
	var e Envelope
	d := xml.NewDecoder(bytes.NewReader(body))
	d.Strict = true
	if err := d.Decode(&e); err != nil {
		return Envelope{}, fmt.Errorf("%w: %w", ErrEnvelope, err)
	}
	if e.Encrypt == "" {
		return Envelope{}, fmt.Errorf("%w: no Encrypt element", ErrEnvelope)
	}
	return e, nil
}

// Open verifies msg_signature over the envelope's Encrypt text and returns
// the decrypted message. The signature is checked before anything is
// decrypted. Errors: ErrEnvelope, ErrSignature, ErrDecrypt, ErrReceiveID.
func (c *Crypter) Open(signature, timestamp, nonce string, body []byte, accept ...string) ([]byte, error) {
	env, err := ParseEnvelope(body)
	if err != nil {
		return nil, err
	}
	if err := c.Verify(signature, timestamp, nonce, env.Encrypt); err != nil {
		return nil, err
	}
	msg, _, err := c.Decrypt(env.Encrypt, accept...)
	return msg, err
}

// VerifyURL answers WeCom's URL verification (GET with echostr, already
// URL-decoded): it checks the signature over echostr and returns the
// decrypted echo to send back verbatim.
func (c *Crypter) VerifyURL(signature, timestamp, nonce, echostr string, accept ...string) ([]byte, error) {
	if err := c.Verify(signature, timestamp, nonce, echostr); err != nil {
		return nil, err
	}
	msg, _, err := c.Decrypt(echostr, accept...)
	return msg, err
}

// Seal encrypts msg for receiveID and returns the reply envelope
// (Encrypt, MsgSignature, TimeStamp, Nonce) WeChat's samples produce, plus
// the signature to put in a push's msg_signature query parameter.
func (c *Crypter) Seal(msg []byte, receiveID, timestamp, nonce string) (body []byte, signature string, err error) {
	enc, err := c.Encrypt(msg, receiveID)
	if err != nil {
		return nil, "", err
	}
	signature = c.Sign(timestamp, nonce, enc)
	var b bytes.Buffer
	b.WriteString("<xml><ToUserName><![CDATA[")
	b.WriteString(cdata(receiveID))
	b.WriteString("]]></ToUserName><AppId><![CDATA[")
	b.WriteString(cdata(receiveID))
	b.WriteString("]]></AppId><Encrypt><![CDATA[")
	b.WriteString(enc)
	b.WriteString("]]></Encrypt><MsgSignature><![CDATA[")
	b.WriteString(signature)
	b.WriteString("]]></MsgSignature><TimeStamp>")
	if _, err := strconv.ParseInt(timestamp, 10, 64); err != nil {
		return nil, "", errors.New("wxcrypt: timestamp must be decimal")
	}
	b.WriteString(timestamp)
	b.WriteString("</TimeStamp><Nonce><![CDATA[")
	b.WriteString(cdata(nonce))
	b.WriteString("]]></Nonce></xml>")
	return b.Bytes(), signature, nil
}

// cdata makes s safe inside a CDATA section.
func cdata(s string) string {
	return string(bytes.ReplaceAll([]byte(s), []byte("]]>"), []byte("]]]]><![CDATA[>")))
}
