package suite

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
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
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	u := s.upstream + path
	if tok != "" {
		u += "?" + param + "=" + url.QueryEscape(tok)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("suite: %s: %w", path, wechat.RedactError(err))
	}
	req.Header.Set("Content-Type", "application/json")
	client := *s.client
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("suite: %s: %w", path, wechat.RedactError(err))
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return fmt.Errorf("suite: %s: read answer: %w", path, wechat.RedactError(err))
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("suite: %s: upstream HTTP %d", path, resp.StatusCode)
	}
	if code, ok := wechat.ScanErrcode(data); ok && code != wechat.CodeOK {
		var r wechat.Response
		_ = json.Unmarshal(data, &r)
		return fmt.Errorf("suite: %s: %w", path, &wechat.APIError{Code: code, Msg: r.ErrMsg})
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("suite: %s: decode answer: %w", path, err)
		}
	}
	return nil
}
