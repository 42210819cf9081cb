package platform

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

// maxAnswer bounds how much of a component API's answer is read
// (api_get_authorizer_list returns up to 500 merchants).
const maxAnswer = 1 << 20

// call POSTs body as JSON to the component API path on the platform's
// upstream, with the component token under component_access_token when
// tok is set, and decodes the answer into out. It never follows a
// redirect (it would re-send the secret or token elsewhere). An errcode
// other than 0 is a *wechat.APIError. Errors never contain a credential.
func (p *Platform) call(ctx context.Context, path, tok string, body, out any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	u := p.upstream + path
	if tok != "" {
		u += "?component_access_token=" + url.QueryEscape(tok)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("platform: %s: %w", path, wechat.RedactError(err))
	}
	req.Header.Set("Content-Type", "application/json")
	client := *p.client
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("platform: %s: %w", path, wechat.RedactError(err))
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return fmt.Errorf("platform: %s: read answer: %w", path, wechat.RedactError(err))
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("platform: %s: upstream HTTP %d", path, resp.StatusCode)
	}
	if code, ok := wechat.ScanErrcode(data); ok && code != wechat.CodeOK {
		var r wechat.Response
		_ = json.Unmarshal(data, &r)
		return fmt.Errorf("platform: %s: %w", path, &wechat.APIError{Code: code, Msg: r.ErrMsg})
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("platform: %s: decode answer: %w", path, err)
		}
	}
	return nil
}

// The component API paths.
const (
	pathComponentToken  = "/cgi-bin/component/api_component_token"
	pathAuthorizerToken = "/cgi-bin/component/api_authorizer_token"
	pathQueryAuth       = "/cgi-bin/component/api_query_auth"
	pathAuthorizerList  = "/cgi-bin/component/api_get_authorizer_list"
	pathStartPush       = "/cgi-bin/component/api_start_push_ticket"
)
