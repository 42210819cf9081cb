package suite

import (
	"context"
	"fmt"
	"net/url"

	"github.com/wxproxy/wxproxy/wechat"
)

// maxAnswer bounds how much of a suite API's answer is read.
const maxAnswer = 1 << 20

// The suite and provider API paths (WECHAT.md "WeCom third-party").
const (
	pathSuiteToken      = "/cgi-bin/service/get_suite_token"
	pathCorpToken       = "/cgi-bin/service/get_corp_token"
	pathProviderToken   = "/cgi-bin/service/get_provider_token"
	pathPermanentCode   = "/cgi-bin/service/get_permanent_code"
	pathPermanentCodeV2 = "/cgi-bin/service/v2/get_permanent_code"
)

// WeCom's errcodes of the suite chain.
const (
	codeSuiteTokenExpired = 42009 // suite_access_token expired
	codeSuiteTokenInvalid = 40082 // invalid suite_token or provider_token
	codeSuiteTicket       = 40085 // invalid suite_ticket (expired, or another suite's)
	codePermanentCode     = 40084 // invalid permanent_code: cancelled, or another provider's
	codeAuthCode          = 40078 // invalid auth_code (reused, or not an auth code)
)

// isSuiteTokenError reports whether code says the suite token used is no
// good: refresh it and retry once.
func isSuiteTokenError(code int) bool {
	return code == codeSuiteTokenExpired || code == codeSuiteTokenInvalid || wechat.IsTokenError(code)
}

// call POSTs body as JSON to path on the suite's upstream, with tok under
// param when tok is set, and decodes the answer into out (raw, if out is
// *json.RawMessage). It never follows a redirect (it would re-send the
// secret or token elsewhere). An errcode other than 0 is a
// *wechat.APIError; errors never contain a credential.
func (s *Suite) call(ctx context.Context, path, param, tok string, body, out any) error {
	u := s.upstream + path
	if tok != "" {
		u += "?" + param + "=" + url.QueryEscape(tok)
	}
	if err := wechat.PostJSON(ctx, s.client, u, body, out, maxAnswer); err != nil {
		return fmt.Errorf("suite: %s: %w", path, err)
	}
	return nil
}
