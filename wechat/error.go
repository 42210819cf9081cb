package wechat

import "fmt"

// APIError is an answer from WeChat that carried a non-zero errcode.
// Its Error text holds the code and WeChat's message, which never contains a
// token or a secret.
type APIError struct {
	Code int
	Msg  string
}

func (e *APIError) Error() string { return fmt.Sprintf("wechat: errcode %d: %s", e.Code, e.Msg) }

// Response is the envelope every WeChat JSON answer shares. Errcode is absent
// (zero) on the classic token endpoint's success answer.
type Response struct {
	ErrCode int    `json:"errcode"`
	ErrMsg  string `json:"errmsg"`
}

// Err returns nil for errcode 0 and an *APIError otherwise.
func (r Response) Err() error {
	if r.ErrCode == CodeOK {
		return nil
	}
	return &APIError{Code: r.ErrCode, Msg: r.ErrMsg}
}

// TokenResponse is the answer of /cgi-bin/token, /cgi-bin/stable_token and
// WeCom's /cgi-bin/gettoken.
type TokenResponse struct {
	Response
	AccessToken string `json:"access_token,omitempty"`
	ExpiresIn   int64  `json:"expires_in,omitempty"`
}
