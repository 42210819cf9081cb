package admin_test

import (
	"fmt"
	"io"
	"net/http/httptest"

	"github.com/wxproxy/wxproxy/admin"
	"github.com/wxproxy/wxproxy/token"
)

// The admin handler over one app whose token fetch fails: /readyz says
// why, without the secret.
func ExampleNew() {
	h := admin.New(admin.Options{
		Apps:  []admin.App{{Name: "main", Tokens: &fakeTokens{status: token.Status{}}}},
		Token: func() string { return "admin-token" },
	})
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "/readyz", nil))
	b, _ := io.ReadAll(w.Body)
	fmt.Println(w.Code, string(b))
	// Output:
	// 503 {"ready":false,"reasons":["app main: no valid access_token"]}
}
