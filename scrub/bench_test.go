package scrub

import (
	"fmt"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

// answer is a 300-byte WeChat answer with no credential in it.
const answer = `{"errcode":0,"errmsg":"ok","request":{"invoke_time":1635156704,"cost_in_ms":30,` +
	`"request_url":"cgi_path=/cgi-bin/openapi/quota/get","request_body":"{\"cgi_path\":` +
	`\"/cgi-bin/message/custom/send\"}","response_body":"{\"errcode\":0,\"errmsg\":\"ok\",` +
	`\"quota\":{\"used\":137}}","client_ip":"113.108.1.1"}}`

// benchSet holds n credentials of the kinds a SaaS holds: access tokens,
// authorizer refresh tokens and secrets.
func benchSet(tb testing.TB, n int) *Set {
	tb.Helper()
	rng := newRand(9)
	s := NewSet()
	for i := range n {
		var v string
		switch i % 3 {
		case 0:
			v = randToken(rng, "86_", 130)
		case 1:
			v = randToken(rng, "refreshtoken@@@", 40)
		default:
			v = randToken(rng, "", 32)
		}
		s.Add(v, fmt.Sprintf("wxp.app%d.%s", i, v[:8]))
	}
	s.Add(tokA, "wxp.main.AbC123")
	return s
}

func BenchmarkReplace(b *testing.B) {
	if len(answer) != 300 {
		b.Fatalf("answer has %d bytes, want 300", len(answer))
	}
	for _, n := range []int{1, 10, 10000} {
		s := benchSet(b, n-1)
		src := []byte(answer)
		dst := make([]byte, 0, 1024)
		b.Run(fmt.Sprintf("none/%d", n), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(src)))
			for b.Loop() {
				if _, k := s.Replace(dst[:0], src); k != 0 {
					b.Fatal("unexpected match")
				}
			}
		})
		withTok := []byte(strings.Replace(answer, "cgi_path=/cgi-bin/openapi/quota/get", "access_token="+tokA, 1))
		b.Run(fmt.Sprintf("one/%d", n), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(withTok)))
			for b.Loop() {
				if _, k := s.Replace(dst[:0], withTok); k != 1 {
					b.Fatal("no match")
				}
			}
		})
	}
}

func BenchmarkReplaceString(b *testing.B) {
	s := benchSet(b, 10000)
	header := "https://mp.weixin.qq.com/cgi-bin/showqrcode?ticket=gQH47joAAAAAAAAAASxodHRwOi8vd2VpeGluLnFxLmNvbS9xL2taZ2Z3TVRtNzJXV1Brb3ZhYmJJAAIEZ23sUwMEmm3sUw=="
	b.ReportAllocs()
	b.SetBytes(int64(len(header)))
	for b.Loop() {
		if _, k := s.ReplaceString(header); k != 0 {
			b.Fatal("unexpected match")
		}
	}
}

// BenchmarkReader streams 1 MiB of text with a credential every 4 KiB.
func BenchmarkReader(b *testing.B) {
	for _, n := range []int{1, 10000} {
		s := benchSet(b, n-1)
		var sb strings.Builder
		for sb.Len() < 1<<20 {
			sb.WriteString(answer)
			if sb.Len()%4096 < 300 {
				sb.WriteString(tokA)
			}
		}
		src := sb.String()
		buf := make([]byte, 32<<10)
		b.Run(fmt.Sprintf("%d", n), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(src)))
			sr := strings.NewReader(src)
			for b.Loop() {
				sr.Reset(src)
				r := s.NewReader(sr)
				for {
					_, err := r.Read(buf)
					if err == io.EOF {
						break
					}
					if err != nil {
						b.Fatal(err)
					}
				}
				r.Close()
			}
		})
	}
}

// BenchmarkAdd adds and removes a value in a Set that holds 10,000.
func BenchmarkAdd(b *testing.B) {
	s := benchSet(b, 10000)
	rng := newRand(10)
	vals := make([]string, 1024)
	for i := range vals {
		vals[i] = randToken(rng, "86_", 130)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		v := vals[i%len(vals)]
		s.Add(v, "wxp.x.y")
		s.Remove(v)
		i++
	}
}

// BenchmarkReaderTrickle streams 60 KB arriving one byte per read, with a
// 1000-byte value held: the cost per byte must not grow with the held-back
// tail.
func BenchmarkReaderTrickle(b *testing.B) {
	s := benchSet(b, 10000)
	s.Add(strings.Repeat("Q", 1000), "***")
	src := strings.Repeat(answer, 200)
	b.ReportAllocs()
	b.SetBytes(int64(len(src)))
	for b.Loop() {
		r := s.NewReader(iotest.OneByteReader(strings.NewReader(src)))
		if _, err := io.Copy(io.Discard, r); err != nil {
			b.Fatal(err)
		}
		r.Close()
	}
}
