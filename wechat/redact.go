package wechat

import (
	"errors"
	"net/url"
	"strings"
)

// secretParams are the query parameters that carry credentials on WeChat
// URLs: the app token, AppSecret, WeCom corpsecret, OAuth codes, and the
// platform tokens (component, suite, provider, authorizer).
var secretParams = [...]string{"access_token", "secret", "corpsecret", "appsecret", "code", "js_code", "refresh_token",
	"component_access_token", "suite_access_token", "provider_access_token", "authorizer_access_token"}

// IsSecretParam reports whether the query parameter name carries a
// credential and must never be logged.
func IsSecretParam(name string) bool {
	for _, p := range secretParams {
		if strings.EqualFold(name, p) {
			return true
		}
	}
	return false
}

// RedactURL returns rawURL with the value of every credential parameter
// replaced by "REDACTED". A string that does not parse is cut at its '?'.
func RedactURL(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		if i := strings.IndexByte(rawURL, '?'); i >= 0 {
			return rawURL[:i] + "?REDACTED"
		}
		return rawURL
	}
	if u.RawQuery == "" {
		return rawURL
	}
	q := u.Query()
	changed := false
	for k := range q {
		if IsSecretParam(k) {
			q[k] = []string{"REDACTED"}
			changed = true
		}
	}
	if changed {
		u.RawQuery = q.Encode()
	}
	u.User = nil
	return u.String()
}

// RedactError returns err with the URL of any *url.Error in it scrubbed by
// RedactURL, because net/http's errors print the full request URL, which
// for WeChat holds access_token= and secret=. Other errors are returned
// unchanged.
func RedactError(err error) error {
	var ue *url.Error
	if !errors.As(err, &ue) {
		return err
	}
	return &url.Error{Op: ue.Op, URL: RedactURL(ue.URL), Err: ue.Err}
}
