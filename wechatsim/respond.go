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
	if a != nil && a.cfg.kind == KindWeCom {
		return styleWeCom
	}
	return styleWeChat
}

// errmsg builds the errmsg of code as the platform would at now for a client
// at r.RemoteAddr.
func errmsg(sty style, code int, now time.Time, r *http.Request) string {
	if sty == styleWeCom {
		ip, _, err := net.SplitHostPort(r.RemoteAddr)
		if err != nil {
			ip = r.RemoteAddr
		}
		return fmt.Sprintf("%s, hint: [%d_%d_%016x%016x], from ip: %s, more info at https://open.work.weixin.qq.com/devtool/query?e=%d",
			wechat.WeComMessage(code), now.Unix(), rand.IntN(100), rand.Uint64(), rand.Uint64(), ip, code)
	}
	return fmt.Sprintf("%s rid: %x-%08x-%08x", wechat.Message(code), now.Unix(), rand.Uint32(), rand.Uint32())
}

// fail answers errcode code in the style sty and counts it.
func (st *state) fail(w http.ResponseWriter, r *http.Request, sty style, code int) {
	st.failStatus(w, r, sty, code, http.StatusOK)
}

// failStatus is fail with an HTTP status other than WeChat's usual 200.
func (st *state) failStatus(w http.ResponseWriter, r *http.Request, sty style, code, status int) {
	if code != 0 {
		st.stats.errcodes.add(code, 1)
	}
	writeJSON(w, status, wechat.Response{ErrCode: code, ErrMsg: errmsg(sty, code, st.now(), r)})
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
