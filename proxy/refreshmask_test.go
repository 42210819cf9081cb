package proxy

import (
	"bytes"
	"strings"
	"testing"
)

func TestMaskRefreshTokens(t *testing.T) {
	const p = refreshPlaceholder
	for _, tc := range []struct{ in, want string }{
		{`{"refresh_token":"R1"}`, `{"refresh_token":"` + p + `"}`},
		{`{"authorizer_refresh_token" : "R1","x":1}`, `{"authorizer_refresh_token" : "` + p + `","x":1}`},
		{`[{"refresh_token":"a\"b"},{"refresh_token":"c"}]`, `[{"refresh_token":"` + p + `"},{"refresh_token":"` + p + `"}]`},
		{`{"body":"{\"refresh_token\":\"R1\",\"a\":1}"}`, `{"body":"{\"refresh_token\":\"` + p + `\",\"a\":1}"}`},
		{`{"refresh_token":"` + p + `"}`, `{"refresh_token":"` + p + `"}`},
		// Not a member with a string value: unchanged.
		{`{"refresh_token":1}`, `{"refresh_token":1}`},
		{`{"x":"refresh_token"}`, `{"x":"refresh_token"}`},
		{`{"refresh_tokens":"R1"}`, `{"refresh_tokens":"R1"}`},
		{`{"refresh_token":"R1`, `{"refresh_token":"R1`},
		{`{"refresh_token\":"R1"}`, `{"refresh_token\":"R1"}`},
		{`refresh_token`, `refresh_token`},
		{``, ``},
	} {
		got, n := maskRefreshTokens([]byte(tc.in))
		if string(got) != tc.want {
			t.Errorf("maskRefreshTokens(%s) = %s (%d), want %s", tc.in, got, n, tc.want)
		}
		if (n > 0) != (tc.in != tc.want) {
			t.Errorf("maskRefreshTokens(%s): count %d", tc.in, n)
		}
	}
}

// FuzzMaskRefreshTokens: whatever WeChat answers, masking never panics,
// never touches the input, and a refresh token member it was given in
// plain or escaped JSON is masked.
func FuzzMaskRefreshTokens(f *testing.F) {
	for _, s := range []string{`{"refresh_token":"R"}`, `{"a":"{\"authorizer_refresh_token\":\"R\"}"}`, `"refresh_token\`, `refresh_token":`, `refresh_token" : \"`} {
		f.Add([]byte(s), "SECRETVALUE")
	}
	f.Fuzz(func(t *testing.T, b []byte, secret string) {
		in := bytes.Clone(b)
		out, n := maskRefreshTokens(b)
		if !bytes.Equal(in, b) {
			t.Fatal("input changed")
		}
		if n == 0 && !bytes.Equal(out, b) {
			t.Fatal("output changed without a count")
		}
		again, _ := maskRefreshTokens(out)
		if !bytes.Equal(again, out) {
			t.Fatalf("masking is not idempotent: %q → %q → %q", b, out, again)
		}
		for _, c := range []byte(secret) {
			if c == '"' || c == '\\' || c < 0x20 {
				return
			}
		}
		if secret == "" || secret == refreshPlaceholder || bytes.ContainsAny(b, `"\\`) {
			return // the member below must not be swallowed by a malformed prefix
		}
		for _, doc := range []string{`{"x":` + string(b) + `,"refresh_token":"` + secret + `"}`, `{"r":"{\"authorizer_refresh_token\":\"` + secret + `\"}"}`} {
			out, _ := maskRefreshTokens([]byte(doc))
			if bytes.Contains(out, []byte(`refresh_token":"`+secret+`"`)) || bytes.Contains(out, []byte(`refresh_token\":\"`+secret+`\"`)) {
				t.Fatalf("not masked: %s → %s", doc, out)
			}
		}
	})
}

// BenchmarkMaskRefreshTokens masks a page of 500 merchants, and 1 MiB of
// openers that never close (the scan stays linear).
func BenchmarkMaskRefreshTokens(b *testing.B) {
	page := []byte(`{"total_count":500,"list":[` + strings.Repeat(`{"authorizer_appid":"wx0123456789abcdef","refresh_token":"refreshtoken@@@0123456789abcdefghijklmnopqrstuvwxyzABCDEFG","auth_time":1700000000},`, 499) + `{}]}`)
	hostile := []byte(`{"` + strings.Repeat(`refresh_token\":\"x refresh_token":"`, (1<<20)/36))
	for _, c := range []struct {
		name string
		in   []byte
	}{{"page-of-500", page}, {"hostile-1MiB", hostile}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(c.in)))
			for b.Loop() {
				maskRefreshTokens(c.in)
			}
		})
	}
}
