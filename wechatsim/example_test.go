package wechatsim_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wxproxy/wxproxy/wechat"
	"github.com/wxproxy/wxproxy/wechatsim"
)

func ExampleNew() {
	sim, err := wechatsim.New(wechatsim.Options{
		Apps: []wechatsim.App{{AppID: "wx0123456789abcdef", Secret: "s3cret"}},
	})
	if err != nil {
		panic(err)
	}
	srv := httptest.NewServer(sim)
	defer srv.Close()

	get := func(target string) []byte {
		resp, err := http.Get(srv.URL + target)
		if err != nil {
			panic(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return b
	}
	var tok wechat.TokenResponse
	_ = json.Unmarshal(get("/cgi-bin/token?grant_type=client_credential&appid=wx0123456789abcdef&secret=s3cret"), &tok)
	fmt.Println("expires_in:", tok.ExpiresIn)

	code, _ := wechat.ScanErrcode(get("/cgi-bin/user/info?openid=o1&access_token=" + tok.AccessToken))
	fmt.Println("API call:", code)

	_ = sim.Advance(2 * time.Hour) // no sleeping: move the simulator clock
	code, _ = wechat.ScanErrcode(get("/cgi-bin/user/info?openid=o1&access_token=" + tok.AccessToken))
	fmt.Println("two hours later:", code, wechat.Message(code))
	// Output:
	// expires_in: 7200
	// API call: 0
	// two hours later: 42001 access_token expired
}

// discardWriter is a minimal http.ResponseWriter that keeps nothing.
type discardWriter struct {
	h    http.Header
	code int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *discardWriter) WriteHeader(code int)        { w.code = code }

// BenchmarkBusinessAPI measures the handler's hot path: a business call with
// a valid token, a small JSON body and a request id.
func BenchmarkBusinessAPI(b *testing.B) {
	s := newSim(b, wechatsim.Options{})
	tok := s.classic(appID, appSecret)
	target := "http://sim/cgi-bin/message/custom/send?access_token=" + tok
	const body = `{"touser":"oABC","msgtype":"text","text":{"content":"hello"}}`
	var worker atomic.Int64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		w := &discardWriter{h: make(http.Header)}
		br := strings.NewReader(body)
		r := httptest.NewRequest(http.MethodPost, target, br)
		prefix := "bench-" + strconv.FormatInt(worker.Add(1), 10) + "-"
		for i := 0; pb.Next(); i++ {
			br.Reset(body)
			r.Body = io.NopCloser(br)
			r.Header["X-Request-Id"] = []string{prefix + strconv.Itoa(i)}
			clear(w.h)
			s.ServeHTTP(w, r)
			if w.code != http.StatusOK {
				b.Fatalf("status %d", w.code)
			}
		}
	})
}

// BenchmarkBusinessAPIHTTP measures the same call over loopback HTTP with
// keep-alive connections.
func BenchmarkBusinessAPIHTTP(b *testing.B) {
	s := newSim(b, wechatsim.Options{})
	tok := s.classic(appID, appSecret)
	target := s.url + "/cgi-bin/message/custom/send?access_token=" + tok
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
	b.Cleanup(client.CloseIdleConnections)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := client.Post(target, "application/json", strings.NewReader(`{"touser":"oABC"}`))
			if err != nil {
				b.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	})
}
