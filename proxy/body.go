package proxy

import (
	"bytes"
	"io"
	"net/http"
	"strconv"
)

// prepareBody bounds the request body by max_body_bytes and buffers it when
// it fits in retry_body_bytes, so that a token retry can replay it byte for
// byte. A larger body streams to WeChat and is not replayed.
func (p *Proxy) prepareBody(w http.ResponseWriter, r *http.Request, c *call) error {
	if r.ContentLength > p.maxBody {
		return &Error{Kind: KindBodyTooLarge, Msg: "request body is larger than max_body_bytes (" + strconv.FormatInt(p.maxBody, 10) + " bytes)"}
	}
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
		c.replay = true
		return nil
	}
	r.Body = http.MaxBytesReader(w, r.Body, p.maxBody)
	if r.ContentLength > p.retryBody {
		return nil // streams; too large to replay
	}
	size := r.ContentLength
	if size < 0 { // unknown length: read up to the replay limit and see
		size = p.retryBody + 1
	}
	buf := make([]byte, size)
	n, err := io.ReadFull(r.Body, buf)
	switch {
	case err == nil && r.ContentLength >= 0:
	case err == io.EOF || err == io.ErrUnexpectedEOF:
		if r.ContentLength >= 0 {
			return &Error{Kind: KindBadRequest, Msg: "request body is shorter than its Content-Length", Err: err}
		}
	case err != nil:
		return err
	default: // unknown length and more than retry_body_bytes: stream the rest
		r.Body = readCloser{io.MultiReader(bytes.NewReader(buf[:n]), r.Body), r.Body}
		return nil
	}
	c.body, c.replay = buf[:n], true
	return nil
}

type readCloser struct {
	io.Reader
	io.Closer
}
