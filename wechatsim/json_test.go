package wechatsim

import (
	"encoding/json"
	"testing"
)

// FuzzAppendString checks the hand-written JSON string encoder of the echo
// answer against encoding/json: both must decode to the same string.
func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "plain", `q"uote`, `back\slash`, "ctl\x00\x01\x1f\n\r\t", "中文", "bad\xffutf8", "\u2028<&>"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var got, want string
		if err := json.Unmarshal(appendString(nil, s), &got); err != nil {
			t.Fatalf("appendString(%q) = %s: not JSON: %v", s, appendString(nil, s), err)
		}
		std, _ := json.Marshal(s)
		if err := json.Unmarshal(std, &want); err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("appendString(%q) decodes to %q, encoding/json to %q", s, got, want)
		}
	})
}
