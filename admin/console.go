package admin

import (
	"embed"
	"net/http"
	"path"
)

// The status console (SPEC §15) is three embedded files: the page, its
// script and its style sheet. They are served from this origin only, so
// the page runs under a policy that allows no inline script or style, no
// other origin and no framing; the script renders every value with
// textContent, never as markup.
//
//go:embed console/index.html console/console.js console/console.css
var consoleFiles embed.FS

// consoleCSP is the console's Content-Security-Policy: nothing but this
// origin's script, style and JSON; data: images only for the favicon.
const consoleCSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; " +
	"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// consoleTypes are the content types of the embedded files.
var consoleTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
}

// console serves the page at GET /.
func (h *handler) console(w http.ResponseWriter, r *http.Request) {
	serveConsoleFile(w, "console/index.html")
}

// consoleAsset serves /console.js and /console.css.
func (h *handler) consoleAsset(w http.ResponseWriter, r *http.Request) {
	serveConsoleFile(w, "console"+r.URL.Path)
}

func serveConsoleFile(w http.ResponseWriter, name string) {
	b, err := consoleFiles.ReadFile(name)
	if err != nil {
		http.NotFound(w, nil)
		return
	}
	hd := w.Header()
	hd.Set("Content-Type", consoleTypes[path.Ext(name)])
	hd.Set("Content-Security-Policy", consoleCSP)
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("X-Frame-Options", "DENY")
	hd.Set("Referrer-Policy", "no-referrer")
	hd.Set("Cross-Origin-Opener-Policy", "same-origin")
	hd.Set("Cross-Origin-Resource-Policy", "same-origin")
	// Served from the binary: a new version must not meet an old script.
	hd.Set("Cache-Control", "no-cache")
	_, _ = w.Write(b)
}
