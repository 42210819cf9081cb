package proxy

import (
	"net/url"
	"strings"
)

// The credentials go FIRST in the forwarded query: WeChat's rid/get (and
// any log that keeps only the start of a URL) echoes a query cut at some
// length, and a credential at the end could be cut part way, where the
// scrubber, which matches whole credentials, cannot see it. At the start,
// only a cut within its first bytes could split it.

// injectToken returns rawQuery with every access_token parameter removed
// and the app's token in front; the other parameters keep their order and
// their exact encoding.
func injectToken(rawQuery, token string) string {
	var b strings.Builder
	b.Grow(len(rawQuery) + len(token) + len("access_token=&"))
	b.WriteString("access_token=")
	b.WriteString(url.QueryEscape(token))
	writeWithout(&b, rawQuery, "access_token", "")
	return b.String()
}

// setCredentials returns rawQuery with appid and secret set to the app's,
// in front.
func setCredentials(rawQuery, appid, secret string) string {
	var b strings.Builder
	b.WriteString("appid=")
	b.WriteString(url.QueryEscape(appid))
	b.WriteString("&secret=")
	b.WriteString(url.QueryEscape(secret))
	writeWithout(&b, rawQuery, "appid", "secret")
	return b.String()
}

// writeWithout appends the parameters of rawQuery to b (after a "&" when b
// is not empty), skipping those named drop1 or drop2 (compared after
// unescaping the name).
func writeWithout(b *strings.Builder, rawQuery, drop1, drop2 string) {
	for rawQuery != "" {
		var part string
		part, rawQuery, _ = strings.Cut(rawQuery, "&")
		if part == "" {
			continue
		}
		if name := paramName(part); name == drop1 || (drop2 != "" && name == drop2) {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('&')
		}
		b.WriteString(part)
	}
}

func paramName(part string) string {
	name, _, _ := strings.Cut(part, "=")
	if strings.ContainsAny(name, "%+") {
		if n, err := url.QueryUnescape(name); err == nil {
			return n
		}
	}
	return name
}

// queryValue returns the first value of key in rawQuery without building a
// url.Values map.
func queryValue(rawQuery, key string) string {
	for rawQuery != "" {
		var part string
		part, rawQuery, _ = strings.Cut(rawQuery, "&")
		name, value, _ := strings.Cut(part, "=")
		if name != key {
			continue
		}
		if v, err := url.QueryUnescape(value); err == nil {
			return v
		}
		return value
	}
	return ""
}
