package wechatsim

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"time"

	"github.com/wxproxy/wxproxy/wechat"
)

// contentType is what WeChat sends with every JSON answer, success or error.
const contentType = "application/json; encoding=utf-8"

// style selects how an errmsg ends: WeChat's " rid: ..." or WeCom's
// ", hint: [...], from ip: ..., more info at ...".
type style uint8

const (
	styleWeChat style = iota
	styleWeCom
)

func styleOf(a *appState) style {
	if a != nil && (a.cfg.kind == KindWeCom || a.cfg.kind == KindSuite || a.cfg.kind == KindProvider) {
		return styleWeCom
	}
	return styleWeChat
}

// message returns the errmsg text of code in the style sty, without suffix.
func message(sty style, code int) string {
	if m, ok := ridMessages[code]; ok {
		return m
	}
	if m, ok := suiteMessages[code]; ok {
		return m
	}
	if sty == styleWeCom {
		return wechat.WeComMessage(code)
	}
	return wechat.Message(code)
}

// errmsg builds the errmsg of code as the platform would at now for the
// call w: WeChat's ends with the call's rid.
func errmsg(sty style, code int, now time.Time, w *call) string {
	if sty == styleWeCom {
		ip, _, err := net.SplitHostPort(w.r.RemoteAddr)
		if err != nil {
			ip = w.r.RemoteAddr
		}
		return fmt.Sprintf("%s, hint: [%d_%d_%016x%016x], from ip: %s, more info at https://open.work.weixin.qq.com/devtool/query?e=%d",
			message(sty, code), now.Unix(), rand.IntN(100), rand.Uint64(), rand.Uint64(), ip, code)
	}
	return message(sty, code) + " rid: " + w.rid.String()
}

// fail answers errcode code in the style sty and counts it.
func (st *state) fail(w *call, sty style, code int) {
	st.failStatus(w, sty, code, http.StatusOK)
}

// failStatus is fail with an HTTP status other than WeChat's usual 200.
func (st *state) failStatus(w *call, sty style, code, status int) {
	if code != 0 {
		st.stats.errcodes.add(code, 1)
	}
	writeJSON(w, status, wechat.Response{ErrCode: code, ErrMsg: errmsg(sty, code, st.now(), w)})
}

// writeJSON answers v as JSON with WeChat's content type.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		// Only the simulator's own types reach here; they always marshal.
		panic(fmt.Sprintf("wechatsim: marshal %T: %v", v, err))
	}
	h := w.Header()
	h["Content-Type"] = []string{contentType}
	w.WriteHeader(status)
	_, _ = w.Write(b)
}
