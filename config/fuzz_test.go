package config

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// FuzzParse checks that Parse never panics, answers the same twice, fails
// only with *Error values or one YAML syntax error, and that any config it
// accepts survives WriteRedacted: the output, with the secrets put back as
// ${R<n>} references (as checkRedacted does), parses to the same config,
// URL passwords aside (they stay redacted).
func FuzzParse(f *testing.F) {
	getenv := mapEnv(map[string]string{"PORT": "8081", "SIZE": "10MiB", "EMPTY": "", "DOLLAR": "$x", "SECRET": "s3cret"})
	f.Fuzz(func(t *testing.T, data []byte) {
		if bytes.Contains(data, []byte("_file")) || bytes.Contains(data, []byte("redacted")) {
			t.Skip() // secret files have their own tests; a literal <redacted> would confuse the round trip
		}
		c, err := Parse(data, getenv, "")
		if _, again := Parse(data, getenv, ""); errText(again) != errText(err) {
			t.Fatalf("Parse(%q) is not deterministic:\n%v\nthen\n%v", data, err, again)
		}
		if err != nil {
			var e *Error
			if c != nil || strings.Contains(err.Error(), "internal error") ||
				!errors.As(err, &e) && !strings.HasPrefix(err.Error(), "config: ") {
				t.Fatalf("Parse(%q) = %v, %v", data, c, err)
			}
			return
		}

		var b strings.Builder
		if err := c.WriteRedacted(&b); err != nil {
			t.Fatalf("WriteRedacted: %v", err)
		}
		out := b.String()
		secrets, _ := secretsInOutputOrder(c)
		env := map[string]string{}
		for i, s := range secrets {
			ref := fmt.Sprintf("R%d", i)
			env[ref] = s
			out = strings.Replace(out, Redacted, "${"+ref+"}", 1)
		}
		again, err := Parse([]byte(out), mapEnv(env), "")
		if err != nil {
			t.Fatalf("Parse(WriteRedacted output):\n%v\ninput:\n%s\noutput:\n%s", err, data, b.String())
		}
		want := comparable(c)
		want.UpstreamProxy = redactURL(c.UpstreamProxy)
		want.Store.Redis.URL = redactURL(c.Store.Redis.URL)
		if got := comparable(again); !reflect.DeepEqual(got, want) {
			t.Fatalf("round trip changed the config:\n got %+v\nwant %+v\ninput:\n%s\noutput:\n%s", got, want, data, b.String())
		}
	})
}
