package wechatsim

import (
	"io"
	"math/rand/v2"
	"net/http"
	"time"
)

// call is one WeChat call being answered. Handlers write their answer to it
// as to the http.ResponseWriter it wraps, read the request body through
// body, and set app to the app the call belongs to; ServeHTTP then records
// it under rid for rid/get. Calls are pooled: nothing may keep one after
// ServeHTTP returns.
type call struct {
	http.ResponseWriter
	r     *http.Request
	rid   ridKey
	start time.Time // simulator clock on arrival
	app   *appState // the app the call is recorded for; nil = none (unknown appid, no token)
	quiet bool      // not recorded: dropped, abandoned or redirected, so no rid was ever shown
	eof   bool      // the request body has been read to its end
	in    []byte    // the request body as read, up to maxRidField
	out   []byte    // the answer as written, up to maxRidField
}

func newCall() any { return &call{in: make([]byte, 0, 512), out: make([]byte, 0, 1024)} }

// begin readies a pooled c for r, answered through w, arriving at now.
func (c *call) begin(w http.ResponseWriter, r *http.Request, now time.Time) {
	v := rand.Uint64()
	c.ResponseWriter, c.r, c.start = w, r, now
	c.rid = ridKey{unix: now.Unix(), a: uint32(v >> 32), b: uint32(v)}
	c.app, c.quiet, c.eof = nil, false, false
	c.in, c.out = c.in[:0], c.out[:0]
}

// end drops what c refers to, so the pool keeps no request alive.
func (c *call) end() { c.ResponseWriter, c.r, c.app = nil, nil, nil }

// Write answers p and keeps a copy of its start for the record.
func (c *call) Write(p []byte) (int, error) {
	c.out = appendCapped(c.out, p)
	return c.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController reach the connection (the drop fault).
func (c *call) Unwrap() http.ResponseWriter { return c.ResponseWriter }

// body returns the request body; what handlers read of it is recorded.
func (c *call) body() io.Reader { return (*callBody)(c) }

// callBody is the request body of a call, read through the call.
type callBody call

func (b *callBody) Read(p []byte) (int, error) {
	n, err := b.r.Body.Read(p)
	b.in = appendCapped(b.in, p[:n])
	if err == io.EOF {
		b.eof = true
	}
	return n, err
}

// drain reads, for the record, the part of a request body up to
// maxRidField that no handler read: WeChat records the body of a call it
// answered without looking at it too.
func (c *call) drain() {
	if c.eof || len(c.in) >= maxRidField {
		return
	}
	var buf [4 << 10]byte
	body := c.body()
	for len(c.in) < maxRidField {
		if _, err := body.Read(buf[:]); err != nil {
			return
		}
	}
}

// appendCapped appends to b as much of p as keeps b within maxRidField.
func appendCapped(b, p []byte) []byte {
	if room := maxRidField - len(b); len(p) > room {
		p = p[:max(room, 0)]
	}
	return append(b, p...)
}
