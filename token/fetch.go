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
}

// Fetch gets a token. force asks for a forced refresh and only means
// something in Stable mode.
func (f *HTTPFetcher) Fetch(ctx context.Context, force bool) (Token, error) {
	req, err := f.request(ctx, force)
	if err != nil {
		return Token{}, fmt.Errorf("token: build %s request: %w", f.Mode, err)
	}
	body, err := send(f.Client, req, string(f.Mode)+" token")
	if err != nil {
		return Token{}, err
	}
	return parseAnswer(body, f.now())
}

// send makes one request to a WeChat endpoint with client (nil: a zero
// http.Client) and returns the answer's body, at most maxTokenAnswer bytes.
// A redirect would re-send the credential in the request wherever it
// points: none is followed, whatever client was given; a 3xx, like any
// status but 200, is a failed fetch. Errors name what was fetched and never
// the URL's credentials.
func send(c *http.Client, req *http.Request, what string) ([]byte, error) {
	var client http.Client
	if c != nil {
		client = *c
	}
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("token: fetch %s: %w", what, wechat.RedactError(err))
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxTokenAnswer))
	if err != nil {
		return nil, fmt.Errorf("token: read %s answer: %w", what, wechat.RedactError(err))
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("token: fetch %s: upstream HTTP %d", what, resp.StatusCode)
	}
	return body, nil
}

func (f *HTTPFetcher) now() time.Time {
	if f.Now != nil {
		return f.Now()
	}
	return time.Now()
}

func (f *HTTPFetcher) request(ctx context.Context, force bool) (*http.Request, error) {
	base := strings.TrimRight(f.Upstream, "/")
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
