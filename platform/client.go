package platform

import (
	"context"
	"fmt"
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
	u := p.upstream + path
	if tok != "" {
		u += "?component_access_token=" + url.QueryEscape(tok)
	}
	if err := wechat.PostJSON(ctx, p.client, u, body, out, maxAnswer); err != nil {
		return fmt.Errorf("platform: %s: %w", path, err)
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
