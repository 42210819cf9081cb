package scrub_test

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/wxproxy/wxproxy/scrub"
)

func Example() {
	held := scrub.NewSet()
	held.Add("86_AbCdEfGhIjKlMnOpQrStUvWx", "wxp.main.Zx81") // an access token → its placeholder
	held.Add("0123456789abcdef0123456789abcdef", "***")      // the AppSecret
	held.Add("x", "***")                                     // refused: too short to hide anything
	fmt.Println(held.Len())

	// A header value.
	loc, n := held.ReplaceString("https://example.com/cb?access_token=86_AbCdEfGhIjKlMnOpQrStUvWx")
	fmt.Println(loc, n)

	// An answer body, as it streams.
	body := strings.NewReader(`{"request_url":"access_token=86_AbCdEfGhIjKlMnOpQrStUvWx",` +
		`"request_body":"{\"secret\":\"0123456789abcdef0123456789abcdef\"}"}`)
	r := held.NewReader(body)
	defer r.Close()
	io.Copy(os.Stdout, r)
	fmt.Println()
	fmt.Println(r.Replaced())
	// Output:
	// 2
	// https://example.com/cb?access_token=wxp.main.Zx81 1
	// {"request_url":"access_token=wxp.main.Zx81","request_body":"{\"secret\":\"***\"}"}
	// 2
}
