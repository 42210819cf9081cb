package proxy

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"strings"
)

// placeholderPrefix starts every token this proxy hands to callers. A later
// request carrying one is routed to its app and gets the real token.
const placeholderPrefix = "wxp."

// Placeholders are "wxp.<app>.<nonce‖mac>" where mac authenticates the app
// name and nonce under a key derived from the app's credentials. Every
// replica of a fleet derives the same key, so a placeholder issued by one
// works on all and across restarts; a forged or altered one is not a
// placeholder at all (it is stripped like any caller access_token).
const (
	placeholderNonce = 9
	placeholderMAC   = 12
)

// placeholderKey derives an app's placeholder key from what identifies its
// account; knowing a placeholder reveals nothing of it.
func placeholderKey(name, appid, secret string) []byte {
	m := hmac.New(sha256.New, []byte("wxproxy placeholder key v1"))
	m.Write([]byte(name + "\x00" + appid + "\x00" + secret))
	return m.Sum(nil)
}

// Placeholder mints a new placeholder token for the app. Its random part
// makes every answer differ, as WeChat's tokens do.
func (a *App) Placeholder() string { return mintPlaceholder(a.Name, a.phKey) }

// mintPlaceholder makes a placeholder of the app name whose key is key.
func mintPlaceholder(name string, key []byte) string {
	var raw [placeholderNonce + placeholderMAC]byte
	_, _ = rand.Read(raw[:placeholderNonce]) // crypto/rand.Read never fails
	placeholderMACOf(name, key, raw[:placeholderNonce], raw[placeholderNonce:])
	return placeholderPrefix + name + "." + base64.RawURLEncoding.EncodeToString(raw[:])
}

func (a *App) placeholderMAC(nonce, dst []byte) { placeholderMACOf(a.Name, a.phKey, nonce, dst) }

func placeholderMACOf(name string, key, nonce, dst []byte) {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(name))
	m.Write([]byte{0})
	m.Write(nonce)
	copy(dst, m.Sum(nil))
}

// placeholderApp returns the app a placeholder token was issued for. ok is
// false when tok is not a placeholder at all; app is nil when it looks
// like one but is not genuine (forged, altered, or of an app no longer
// configured).
func (p *Proxy) placeholderApp(tok string) (app *App, ok bool) {
	rest, ok := strings.CutPrefix(tok, placeholderPrefix)
	if !ok {
		return nil, false
	}
	name, enc, _ := strings.Cut(rest, ".")
	if base64.RawURLEncoding.DecodedLen(len(enc)) != placeholderNonce+placeholderMAC {
		return nil, true
	}
	if app, _ = p.lookupApp(name); app == nil {
		return nil, true
	}
	if last := app.lastPH.Load(); last != nil && *last == tok {
		return app, true // SDKs send the same placeholder for hours: skip the MAC
	}
	var raw [placeholderNonce + placeholderMAC]byte
	if _, err := base64.RawURLEncoding.Decode(raw[:], []byte(enc)); err != nil {
		return nil, true
	}
	var want [placeholderMAC]byte
	app.placeholderMAC(raw[:placeholderNonce], want[:])
	if !hmac.Equal(want[:], raw[placeholderNonce:]) {
		return nil, true
	}
	app.lastPH.Store(&tok)
	return app, true
}
