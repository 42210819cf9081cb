package proxy

import (
	"bytes"
	"net/url"
	"strings"

	"github.com/valyala/fasthttp"
)

// buildRequest builds the upstream request from parts wxproxy decided on,
// never from the caller's URL: scheme and host are the app's upstream, the
// path is the cleaned one, the query has no fragment and carries the
// credentials first. Of the caller's headers, hop-by-hop ones (and those
// its Connection header names), X-WXProxy-*, X-Forwarded-*, Forwarded, Host,
// Accept-Encoding (the answer must come back in a form the scrubber can
// read), Range and If-Range (a range of an answer could cut a credential
// part way) and Expect are not forwarded.
func (p *Proxy) buildRequest(r *request, req *fasthttp.Request, up *upstream) {
	in := &r.ctx.Request.Header
	req.Header.SetMethodBytes(in.Method())
	conn := in.Peek("Connection")
	for k, v := range in.All() {
		if skipRequestHeader(k) || (len(conn) > 0 && listsToken(conn, k)) {
			continue
		}
		req.Header.AddBytesKV(k, v)
	}
	req.Header.Set(headerReqID, r.reqID)
	var query string
	switch r.mode {
	case modeInject:
		if r.param != "" {
			query = injectTokenAs(r.query, r.param, r.token)
		} else {
			query = injectToken(r.query, r.token)
		}
	case modeCredentials:
		query = setCredentials(r.query, r.app.AppID, r.app.Secret)
	default:
		query = r.query
	}
	u := req.URI()
	u.DisablePathNormalizing = true
	u.SetScheme("http") // on the wire: TLS, if any, is below fasthttp (see Client)
	u.SetHost(up.host)
	path := make([]byte, 0, 64)
	if up.absolute {
		path = append(append(append(path, up.scheme...), "://"...), up.host...)
	}
	path = append(path, up.base...)
	path = appendEscapedPath(path, r.path)
	u.SetPathBytes(path)
	u.SetQueryString(query)
	if r.body.replay {
		if len(r.body.bytes) > 0 || r.body.cb.armed {
			req.SetBodyRaw(r.body.bytes)
		}
	} else {
		req.SetBodyStream(r.body.stream, r.body.size)
	}
}

// skipRequestHeader reports whether a caller's header is never forwarded.
func skipRequestHeader(k []byte) bool {
	if len(k) == 0 {
		return true
	}
	switch k[0] | 0x20 {
	case 'a':
		return bytes.EqualFold(k, []byte("Accept-Encoding"))
	case 'c':
		return bytes.EqualFold(k, []byte("Connection")) || bytes.EqualFold(k, []byte("Content-Length"))
	case 'e':
		return bytes.EqualFold(k, []byte("Expect"))
	case 'f':
		return bytes.EqualFold(k, []byte("Forwarded"))
	case 'h':
		return bytes.EqualFold(k, []byte("Host"))
	case 'i':
		return bytes.EqualFold(k, []byte("If-Range"))
	case 'k':
		return bytes.EqualFold(k, []byte("Keep-Alive"))
	case 'p':
		return bytes.EqualFold(k, []byte("Proxy-Connection")) || bytes.EqualFold(k, []byte("Proxy-Authorization")) || bytes.EqualFold(k, []byte("Proxy-Authenticate"))
	case 'r':
		return bytes.EqualFold(k, []byte("Range"))
	case 't':
		return bytes.EqualFold(k, []byte("TE")) || bytes.EqualFold(k, []byte("Trailer")) || bytes.EqualFold(k, []byte("Transfer-Encoding"))
	case 'u':
		return bytes.EqualFold(k, []byte("Upgrade"))
	case 'x':
		return hasPrefixFoldBytes(k, "X-Wxproxy-") || hasPrefixFoldBytes(k, "X-Forwarded-") || bytes.EqualFold(k, []byte(headerReqID))
	}
	return false
}

func hasPrefixFoldBytes(k []byte, prefix string) bool {
	return len(k) >= len(prefix) && bytes.EqualFold(k[:len(prefix)], []byte(prefix))
}

// listsToken reports whether the comma-separated list (a Connection
// header) names k.
func listsToken(list, k []byte) bool {
	for len(list) > 0 {
		var item []byte
		if i := bytes.IndexByte(list, ','); i >= 0 {
			item, list = list[:i], list[i+1:]
		} else {
			item, list = list, nil
		}
		if bytes.EqualFold(bytes.TrimSpace(item), k) {
			return true
		}
	}
	return false
}

// appendEscapedPath appends the cleaned, unescaped path p in its escaped
// form, as url.URL.EscapedPath would; a plain path is appended as is.
func appendEscapedPath(dst []byte, p string) []byte {
	for i := 0; i < len(p); i++ {
		c := p[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-._~/!$&'()*+,=:@", c) >= 0) {
			return append(dst, (&url.URL{Path: p}).EscapedPath()...)
		}
	}
	return append(dst, p...)
}

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

// injectTokenAs is injectToken for a platform's component, suite or
// provider: the token goes under param, and every token parameter the
// caller sent (access_token, component_access_token, suite_access_token,
// provider_access_token) is removed.
func injectTokenAs(rawQuery, param, token string) string {
	var b strings.Builder
	b.Grow(len(rawQuery) + len(token) + len(param) + 2)
	b.WriteString(param)
	b.WriteByte('=')
	b.WriteString(url.QueryEscape(token))
	for rawQuery != "" {
		var part string
		part, rawQuery, _ = strings.Cut(rawQuery, "&")
		if part == "" {
			continue
		}
		switch paramName(part) {
		case "access_token", "component_access_token", "suite_access_token", "provider_access_token":
			continue
		}
		b.WriteByte('&')
		b.WriteString(part)
	}
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
