// Package wechat knows the WeChat and WeCom server-API wire protocol: error
// codes, the JSON error shape, and how to find the errcode in an answer.
//
// It does no I/O. Both the proxy and the simulator speak through it, so a code
// or message is defined once.
package wechat

// Error codes used by WeChat and WeCom (and by wxproxy's own answers, which
// reuse WeChat's shape so that SDKs reading only errcode understand them).
const (
	CodeOK          = 0
	CodeSystemError = -1 // "system error": WeChat is busy; also wxproxy's own transport failures

	CodeInvalidCredential  = 40001 // token superseded or unknown; WeCom: bad corpsecret
	CodeInvalidGrantType   = 40002
	CodeInvalidOpenID      = 40003
	CodeInvalidMediaID     = 40007
	CodeInvalidAppID       = 40013 // unknown appid / corpid
	CodeInvalidToken       = 40014 // malformed access_token
	CodeInvalidCode        = 40029 // OAuth / jscode2session code
	CodeCorpSecretMismatch = 40091 // WeCom: secret of another corp
	CodeInvalidArgs        = 40097
	CodeInvalidSecret      = 40125 // wrong AppSecret
	CodeIPNotAllowed       = 40164
	CodeSecretFrozen       = 40243
	CodeTokenMissing       = 41001
	CodeAppIDMissing       = 41002
	CodeSecretMissing      = 41004
	CodeCodeMissing        = 41008
	CodeTokenExpired       = 42001
	CodeRequirePOST        = 43002
	CodeEmptyPostData      = 44002
	CodeDailyQuota         = 45009 // reach max api daily quota limit
	CodeMinuteQuota        = 45011 // api minute-quota reach limit
	CodeDataFormat         = 47001
	CodeUnauthorized       = 48001 // api unauthorized
	CodeClearQuotaLimit    = 48006
	CodeAccountPunished    = 50004
	CodeWeComIPNotTrusted  = 60020
	CodeCgiPathNotFound    = 76021 // openapi/quota/get: no quota known for cgi_path
	CodeAdminConfirm       = 89503

	// Open Platform (third-party platforms).
	CodeComponentTicketExpired = 61005 // component ticket is expired
	CodeComponentTicketInvalid = 61006 // component ticket is invalid (wxproxy: none held)
	CodeRefreshTokenInvalid    = 61023 // refresh_token is invalid: the merchant must authorize again
)

// IsTokenError reports whether code means the access_token used was not
// accepted and a refresh followed by one retry may succeed: 40001 (superseded
// or unknown), 40014 (malformed) and 42001 (expired).
func IsTokenError(code int) bool {
	return code == CodeInvalidCredential || code == CodeInvalidToken || code == CodeTokenExpired
}

// IsConfigError reports whether code, answered by a token endpoint, means the
// credentials or the account are misconfigured: retrying soon cannot help and
// hammering the endpoint risks an IP block, so fetchers back off at the
// maximum. 40001 counts here because the token endpoint answers it for a
// wrong secret (older accounts, and WeCom).
func IsConfigError(code int) bool {
	switch code {
	case CodeInvalidCredential, CodeInvalidAppID, CodeInvalidSecret, CodeIPNotAllowed,
		CodeSecretFrozen, CodeAppIDMissing, CodeSecretMissing, CodeAdminConfirm,
		89501, 89506, 89507, CodeAccountPunished, CodeCorpSecretMismatch, CodeWeComIPNotTrusted:
		return true
	}
	return false
}

// IsQuotaError reports whether code is one of WeChat's quota answers.
func IsQuotaError(code int) bool { return code == CodeDailyQuota || code == CodeMinuteQuota }

// messages holds WeChat's own errmsg text for the codes the simulator and
// the proxy produce.
var messages = map[int]string{
	CodeOK:                 "ok",
	CodeSystemError:        "system error",
	CodeInvalidCredential:  "invalid credential, access_token is invalid or not latest",
	CodeInvalidGrantType:   "invalid grant_type",
	CodeInvalidOpenID:      "invalid openid",
	CodeInvalidMediaID:     "invalid media_id",
	CodeInvalidAppID:       "invalid appid",
	CodeInvalidToken:       "invalid access_token",
	CodeInvalidCode:        "invalid code",
	CodeCorpSecretMismatch: "provider_secret or corpsecret mismatch",
	CodeInvalidArgs:        "invalid args",
	CodeInvalidSecret:      "invalid appsecret",
	CodeIPNotAllowed:       "invalid ip, not in whitelist",
	CodeSecretFrozen:       "appsecret is frozen",
	CodeTokenMissing:       "access_token missing",
	CodeAppIDMissing:       "appid missing",
	CodeSecretMissing:      "appsecret missing",
	CodeCodeMissing:        "missing code",
	CodeTokenExpired:       "access_token expired",
	CodeRequirePOST:        "require POST method",
	CodeEmptyPostData:      "empty post data",
	CodeDailyQuota:         "reach max api daily quota limit",
	CodeMinuteQuota:        "api minute-quota reach limit, must slower, retry next minute",
	CodeDataFormat:         "data format error",
	CodeUnauthorized:       "api unauthorized",
	CodeClearQuotaLimit:    "api forbidden for reaching clear quota limit",
	CodeAccountPunished:    "user limited",
	CodeWeComIPNotTrusted:  "not allow to access from your ip",
	CodeCgiPathNotFound:    "cgi_path not found, please check",
	CodeAdminConfirm:       "waiting for admin confirmation",
}

// Message returns WeChat's errmsg for code, without the " rid: ..." suffix,
// or "unknown error" for a code this package does not know. The map it reads
// is never written, so Message is safe for concurrent use.
func Message(code int) string {
	if m, ok := messages[code]; ok {
		return m
	}
	return "unknown error"
}

// weComMessages holds WeCom's errmsg text where it differs from WeChat's for
// the same code (WeCom speaks of corpid and corpsecret).
var weComMessages = map[int]string{
	CodeInvalidCredential: "invalid credential",
	CodeInvalidAppID:      "invalid corpid",
	CodeAppIDMissing:      "corpid missing",
	CodeSecretMissing:     "corpsecret missing",
}

// WeComMessage returns WeCom's errmsg for code, without the ", hint: ..."
// suffix; for codes whose text WeCom shares with WeChat it returns
// Message(code). WeComMessage is safe for concurrent use.
func WeComMessage(code int) string {
	if m, ok := weComMessages[code]; ok {
		return m
	}
	return Message(code)
}
