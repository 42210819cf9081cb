package proxy

import (
	"bytes"
	"io"
	"time"
)

// WeChat's authorization-management APIs (api_get_authorizer_list,
// api_get_authorizer_info) answer merchants' refresh tokens, and rid/get
// echoes such answers again inside response_body. The scrubber replaces
// only the credentials wxproxy holds, and a merchant authorized while
// wxproxy was down (or before it was deployed) has a refresh token
// wxproxy does not hold. So every answer to a platform's component app has
// the value of each JSON member whose name ends in "refresh_token"
// replaced by refreshPlaceholder, whether it is held or not, plain or
// JSON-escaped inside a string. /sns/* answers are not masked: the
// refresh_token of a web page's OAuth on behalf of a merchant
// (/sns/oauth2/component/*) is the user's, which the caller needs, and
// rid/get does not serve /sns/* calls (76022).

// maxMaskedAnswer bounds the part of a component answer read to mask it;
// a longer answer is refused (a page of 500 merchants is about 60 KiB).
const maxMaskedAnswer = 1 << 20

// maskComponentAnswer masks the refresh tokens of a component answer
// (see above). A textual answer longer than the errcode peek is read whole
// first, within upstream_timeout and maxMaskedAnswer, into a buffer taken
// from max_buffered_bytes; the caller releases it (held) once the answer
// is sent. An answer that does not fit is refused, never sent unmasked.
func (p *Proxy) maskComponentAnswer(r *request, a *answer, mask func([]byte) ([]byte, int)) (held *heldBody, err error) {
	if binaryAnswer(&a.resp.Header) {
		return nil, nil
	}
	whole := a.whole
	if a.rest != nil {
		setReadDeadline(a.resp, p.now().Add(p.upTimeout))
		held, err = p.buffers.read(io.MultiReader(bytes.NewReader(whole), a.rest), maxMaskedAnswer)
		setReadDeadline(a.resp, time.Time{})
		if err != nil || held.streamRest {
			p.buffers.release(held)
			a.close()
			if err == nil {
				return nil, &Error{Kind: KindUpstream, Msg: "WeChat's answer to a platform API is too large for wxproxy to inspect now (over 1 MiB, or max_buffered_bytes in use); retry later"}
			}
			return nil, upstreamError(err)
		}
		whole, a.rest = held.b, nil
	}
	if masked, n := mask(whole); n > 0 {
		whole, r.scrubbed = masked, true
	}
	a.whole = whole
	return held, nil
}

var refreshName = []byte("refresh_token")

// maskRefreshTokens returns b with the string value of every JSON member
// whose name ends in "refresh_token" replaced by refreshPlaceholder, and
// how many it replaced. It finds members both in JSON ("name": "v") and in
// JSON escaped inside a JSON string (\"name\":\"v\"). b is not changed.
func maskRefreshTokens(b []byte) ([]byte, int) {
	return maskMembers(b, refreshName, refreshPlaceholder)
}

var permanentCodeName = []byte("permanent_code")

// maskPermanentCodes is maskRefreshTokens for members whose name ends in
// "permanent_code", replaced by permanentCodePlaceholder: a suite's or
// provider's answer is masked so, since a permanent code of a corp
// wxproxy does not hold (an API spelling wxproxy does not answer itself,
// such as a future get_permanent_code version) cannot be scrubbed.
func maskPermanentCodes(b []byte) ([]byte, int) {
	return maskMembers(b, permanentCodeName, permanentCodePlaceholder)
}

// maskMembers replaces the string value of every JSON member whose name
// ends in name by placeholder (see maskRefreshTokens).
func maskMembers(b, name []byte, placeholder string) ([]byte, int) {
	var out []byte
	n, done := 0, 0 // done: b[:done] is in out (or unchanged)
	for i := 0; ; {
		j := bytes.Index(b[i:], name)
		if j < 0 {
			break
		}
		i += j + len(name)
		start, end, ok := memberValue(b, i)
		if !ok {
			continue
		}
		if string(b[start:end]) != placeholder {
			out = append(append(out, b[done:start]...), placeholder...)
			done = end
			n++
		}
		i = end
	}
	if n == 0 {
		return b, 0
	}
	return append(out, b[done:]...), n
}

// memberValue reads what follows a member name's last letter at b[i:]:
// its closing quote, a colon and a string value, all either plain JSON or
// JSON escaped inside a string. It returns the bounds of the value's
// characters.
func memberValue(b []byte, i int) (start, end int, ok bool) {
	quote := func(i int) (int, bool) { // the position after a quote of the same escaping
		if i < len(b) && b[i] == '"' {
			return i + 1, true
		}
		if i+1 < len(b) && b[i] == '\\' && b[i+1] == '"' {
			return i + 2, true
		}
		return i, false
	}
	space := func(i int) int {
		for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\r' || b[i] == '\n') {
			i++
		}
		return i
	}
	escaped := i < len(b) && b[i] == '\\'
	if i, ok = quote(i); !ok {
		return 0, 0, false
	}
	if i = space(i); i >= len(b) || b[i] != ':' {
		return 0, 0, false
	}
	i = space(i + 1)
	if (i < len(b) && b[i] == '\\') != escaped {
		return 0, 0, false
	}
	if start, ok = quote(i); !ok {
		return 0, 0, false
	}
	for end = start; end < len(b); end++ {
		switch {
		case !escaped && b[end] == '\\':
			end++ // an escaped character of the value
		case !escaped && b[end] == '"':
			return start, end, true
		case escaped && b[end] == '\\' && end+1 < len(b) && b[end+1] == '"':
			return start, end, true
		case escaped && b[end] == '\\':
			end++ // \\ inside the escaped JSON
		}
	}
	return 0, 0, false // unterminated: leave it to the scrubber
}
