package token

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/wxproxy/wxproxy/failover"
	"github.com/wxproxy/wxproxy/wechat"
)

// maxTokenAnswer bounds how much of a token endpoint's answer is read.
const maxTokenAnswer = 64 << 10

// HTTPFetcher is the Source of app access tokens: it fetches them from a
// WeChat or WeCom token endpoint in its Mode. It keeps no state and does
// not retry; the Cache does. Its fields must not change after first use;
// it is then safe for concurrent use. Errors never contain the secret: URLs
// in transport errors are redacted.
type HTTPFetcher struct {
	Mode     Mode
	Upstream string // base URL, e.g. https://api.weixin.qq.com
	AppID    string // corpid for WeCom
	Secret   string // corpsecret for WeCom
	Client   *http.Client
	Now      func() time.Time // default time.Now
	// Failover, if set, replaces Upstream: each fetch goes to the first of
	// its upstreams that is up, and to the next one at once when it could
	// not connect (SPEC §14). A fetch that may have reached WeChat is never
	// sent again. Transport errors, HTTP 5xx and errcode -1 count against
	// the upstream, as the proxy's requests do; the Set is shared with them.
	Failover *failover.Set
	// OnFailover, if set, is told when a fetch moves from one upstream to
	// another (for wxproxy_failovers_total).
	OnFailover func(from, to string)
}

// Fetch gets a token. force asks for a forced refresh and only means
// something in Stable mode.
func (f *HTTPFetcher) Fetch(ctx context.Context, force bool) (Token, error) {
	if f.Failover == nil {
		t, _, err := f.fetch(ctx, f.Upstream, force)
		return t, err
	}
	var t Token
	err := f.Failover.Do(func(base string) (failover.Outcome, error) {
		var o failover.Outcome
		var err error
		t, o, err = f.fetch(ctx, base, force)
		return o, err
	}, f.onFailover)
	return t, err
}

func (f *HTTPFetcher) onFailover(from, to int) {
	if f.OnFailover != nil {
		f.OnFailover(f.Failover.URL(from), f.Failover.URL(to))
	}
}

// fetch gets a token from the upstream at base and says what the call
// showed of that upstream.
func (f *HTTPFetcher) fetch(ctx context.Context, base string, force bool) (Token, failover.Outcome, error) {
	req, err := f.request(ctx, base, force)
	if err != nil {
		return Token{}, failover.Neutral, fmt.Errorf("token: build %s request: %w", f.Mode, err)
	}
	body, o, err := send(ctx, f.Client, req, string(f.Mode)+" token")
	if err != nil {
		return Token{}, o, err
	}
	t, err := parseAnswer(body, f.now())
	if code, ok := wechat.ScanErrcode(body); ok && code == wechat.CodeSystemError {
		return t, failover.Failure, err
	}
	return t, failover.Success, err
}

// send makes one request to a WeChat endpoint with client (nil: a zero
// http.Client) and returns the answer's body, at most maxTokenAnswer bytes,
// and what the call showed of the upstream (for failover). A redirect would
// re-send the credential in the request wherever it points: none is
// followed, whatever client was given; a 3xx, like any status but 200, is a
// failed fetch. Errors name what was fetched and never the URL's
// credentials.
func send(ctx context.Context, c *http.Client, req *http.Request, what string) ([]byte, failover.Outcome, error) {
	var client http.Client
	if c != nil {
		client = *c
	}
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := client.Do(req)
	if err != nil {
		o := failover.Failure
		if ctx.Err() != nil {
			o = failover.Neutral
		}
		return nil, o, fmt.Errorf("token: fetch %s: %w", what, wechat.RedactError(err))
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxTokenAnswer))
	if err != nil {
		return nil, failover.Failure, fmt.Errorf("token: read %s answer: %w", what, wechat.RedactError(err))
	}
	if resp.StatusCode != http.StatusOK {
		o := failover.Success // WeChat answered (a redirect, a 4xx)
		if resp.StatusCode >= 500 {
			o = failover.Failure
		}
		return nil, o, fmt.Errorf("token: fetch %s: upstream HTTP %d", what, resp.StatusCode)
	}
	return body, failover.Success, nil
}

func (f *HTTPFetcher) now() time.Time {
	if f.Now != nil {
		return f.Now()
	}
	return time.Now()
}

func (f *HTTPFetcher) request(ctx context.Context, base string, force bool) (*http.Request, error) {
	base = strings.TrimRight(base, "/")
	switch f.Mode {
	case Stable:
		body, err := json.Marshal(struct {
			GrantType    string `json:"grant_type"`
			AppID        string `json:"appid"`
			Secret       string `json:"secret"`
			ForceRefresh bool   `json:"force_refresh"`
		}{"client_credential", f.AppID, f.Secret, force})
		if err != nil {
			return nil, err
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/cgi-bin/stable_token", bytes.NewReader(body))
		if err != nil {
			return nil, err
		}
		req.Header.Set("Content-Type", "application/json")
		return req, nil
	case Classic:
		q := url.Values{"grant_type": {"client_credential"}, "appid": {f.AppID}, "secret": {f.Secret}}
		return http.NewRequestWithContext(ctx, http.MethodGet, base+"/cgi-bin/token?"+q.Encode(), nil)
	case WeCom:
		q := url.Values{"corpid": {f.AppID}, "corpsecret": {f.Secret}}
		return http.NewRequestWithContext(ctx, http.MethodGet, base+"/cgi-bin/gettoken?"+q.Encode(), nil)
	}
	return nil, fmt.Errorf("unknown mode %q", f.Mode)
}

// parseAnswer turns a token endpoint's answer into a Token. errcode may be
// absent (classic success), 0 (WeCom success), a number or a quoted number.
func parseAnswer(body []byte, now time.Time) (Token, error) {
	if err := answerError(body); err != nil {
		return Token{}, err
	}
	var r struct {
		AccessToken string `json:"access_token"`
		ExpiresIn   int64  `json:"expires_in"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return Token{}, fmt.Errorf("token: decode answer: %w", err)
	}
	if r.AccessToken == "" || r.ExpiresIn <= 0 {
		return Token{}, fmt.Errorf("token: answer has no access_token or expires_in")
	}
	return Token{Value: r.AccessToken, ObtainedAt: now, ExpiresAt: now.Add(time.Duration(r.ExpiresIn) * time.Second)}, nil
}

// answerError returns the *wechat.APIError of an answer whose errcode is
// present and not 0 (wrapped), or nil.
func answerError(body []byte) error {
	code, ok := wechat.ScanErrcode(body)
	if !ok || code == wechat.CodeOK {
		return nil
	}
	var r struct {
		ErrMsg string `json:"errmsg"`
	}
	_ = json.Unmarshal(body, &r) // errmsg is best effort; the code is what matters
	return fmt.Errorf("token: %w", &wechat.APIError{Code: code, Msg: r.ErrMsg})
}
