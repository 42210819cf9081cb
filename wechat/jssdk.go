package wechat

import (
	"crypto/sha1"
	"encoding/hex"
	"strconv"
	"strings"
)

// JSSDKSignature returns the signature of a JS-SDK page (wx.config, and
// WeCom's wx.agentConfig with the agent ticket): the lower-case hex sha1 of
// "jsapi_ticket=T&noncestr=N&timestamp=S&url=U", keys in this order, values
// raw (not URL-encoded), and the URL without its #fragment.
func JSSDKSignature(ticket, nonceStr string, timestamp int64, pageURL string) string {
	if i := strings.IndexByte(pageURL, '#'); i >= 0 {
		pageURL = pageURL[:i]
	}
	h := sha1.New()
	for _, part := range []string{"jsapi_ticket=", ticket, "&noncestr=", nonceStr, "&timestamp=", strconv.FormatInt(timestamp, 10), "&url=", pageURL} {
		h.Write([]byte(part))
	}
	return hex.EncodeToString(h.Sum(nil))
}
