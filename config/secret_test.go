package config

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeFile writes content to dir/name, creating directories.
func writeFile(tb testing.TB, dir, name, content string) string {
	tb.Helper()
	path := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		tb.Fatal(err)
	}
	return path
}

func TestSecretFiles(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "secrets/main", "main-secret\n")
	writeFile(t, dir, "secrets/key", "caller-key \t\r\n\n")
	writeFile(t, dir, "secrets/redis", "redis pass") // inner space is kept
	abs := writeFile(t, t.TempDir(), "admin", "admin-token")
	cfg := writeFile(t, dir, "conf/wxproxy.yaml", `
admin:
  token_file: `+abs+`
store:
  redis:
    password_file: ../secrets/redis
callers:
  keys:
    - {name: a, key_file: ../secrets/key}
apps:
  - name: main
    appid: wx1
    secret_file: ${SECRETS_DIR:-../secrets}/main
`)
	c, err := Load(cfg, nil)
	if err != nil {
		t.Fatalf("Load:\n%v", err)
	}
	tests := []struct {
		name, got, want string
	}{
		{"relative to the config file, trimmed", c.Apps[0].Secret, "main-secret"},
		{"trailing whitespace trimmed", c.Callers.Keys[0].Key, "caller-key"},
		{"absolute path", c.Admin.Token, "admin-token"},
		{"inner whitespace kept", c.Store.Redis.Password, "redis pass"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s: got %q, want %q", tt.name, tt.got, tt.want)
		}
	}
}

func TestSecretFileErrors(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "empty", " \n\n")
	big := "BIGSECRET" + strings.Repeat("x", maxSecretFile)
	writeFile(t, dir, "big", big)
	if err := os.Mkdir(filepath.Join(dir, "adir"), 0o755); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, file, want string
	}{
		{"missing", "nope", `apps[0].secret_file: cannot read "` + filepath.Join(dir, "nope") + `": no such file or directory`},
		{"empty", "empty", `apps[0].secret_file: file "` + filepath.Join(dir, "empty") + `" is empty`},
		{"directory", "adir", `apps[0].secret_file: cannot read "` + filepath.Join(dir, "adir") + `": is a directory`},
		{"too big", "big", `apps[0].secret_file: file "` + filepath.Join(dir, "big") + `" is larger than 64KiB; is it the right file?`},
		{"empty path", "''", `apps[0].secret_file: must not be empty`},
		{"path from an unset variable", "'${SECRET_PATH}'", `apps[0].secret_file: must not be empty (${SECRET_PATH} expanded to ""; is the variable set?)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := "apps:\n  - {name: a, appid: wx1, secret_file: " + tt.file + "}\n"
			_, err := Parse([]byte(src), mapEnv(map[string]string{"OTHER": "other-secret"}), dir)
			if got := errText(err); got != tt.want {
				t.Errorf("error =\n%s\nwant\n%s", got, tt.want)
			}
			if strings.Contains(errText(err), "BIGSECRET") || strings.Contains(errText(err), "other-secret") {
				t.Errorf("error leaks content: %v", err)
			}
		})
	}
}

func TestLoadMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nope.yaml")
	_, err := Load(path, nil)
	if got, want := errText(err), "config: open "+path+": no such file or directory"; got != want {
		t.Errorf("Load error = %q, want %q", got, want)
	}
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load error %v does not wrap fs.ErrNotExist", err)
	}
}

func TestKeyFilesMustDiffer(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "k1", "same-key\n")
	writeFile(t, dir, "k2", "same-key")
	src := "callers: {keys: [{name: a, key_file: k1}, {name: b, key_file: k2}]}\n" + oneApp
	_, err := Parse([]byte(src), nil, dir)
	if got, want := errText(err), "callers.keys[1].key_file: same key as callers.keys[0]"; got != want {
		t.Errorf("error = %q, want %q", got, want)
	}
}
