package wechat

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
)

// PostJSON POSTs body as JSON to rawURL with client and decodes the
// answer into out (if not nil), reading at most limit bytes of it. It
// never follows a redirect (that would re-send a secret or token in the
// URL or body elsewhere). An errcode other than 0 is an *APIError. Errors
// never contain the URL's query or anything else that may hold a
// credential; callers prefix them with what they called.
func PostJSON(ctx context.Context, client *http.Client, rawURL string, body, out any, limit int64) error {
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, rawURL, bytes.NewReader(b))
	if err != nil {
		return RedactError(err)
	}
	req.Header.Set("Content-Type", "application/json")
	c := *client
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := c.Do(req)
	if err != nil {
		return RedactError(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, limit))
	if err != nil {
		return fmt.Errorf("read answer: %w", RedactError(err))
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("upstream HTTP %d", resp.StatusCode)
	}
	if code, ok := ScanErrcode(data); ok && code != CodeOK {
		var r Response
		_ = json.Unmarshal(data, &r)
		return &APIError{Code: code, Msg: r.ErrMsg}
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("decode answer: %w", err)
		}
	}
	return nil
}
