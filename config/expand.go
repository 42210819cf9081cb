package config

import (
	"errors"
	"strings"
)

// expand replaces ${VAR} and ${VAR:-default} in one scalar value, and $$ by $.
// A $ followed by anything else is kept as it is, so a literal secret such as
// "ab$c" survives. The default is literal text (no nested references) and is
// used when VAR is unset or empty.
//
// Errors never quote s: it may be a secret.
func expand(s string, getenv func(string) string) (string, error) {
	if !strings.Contains(s, "$") {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '{':
			end := strings.IndexByte(s[i+2:], '}')
			if end < 0 {
				return "", errors.New("unterminated ${ (missing })")
			}
			name, def, hasDef := strings.Cut(s[i+2:i+2+end], ":-")
			if !validVarName(name) {
				return "", errors.New("invalid ${...} reference: want ${NAME} or ${NAME:-default}, NAME made of letters, digits and _")
			}
			v := getenv(name)
			if v == "" && hasDef {
				v = def
			}
			b.WriteString(v)
			i += 2 + end
		default:
			b.WriteByte('$')
		}
	}
	return b.String(), nil
}

func validVarName(s string) bool {
	if s == "" || (s[0] >= '0' && s[0] <= '9') {
		return false
	}
	for _, c := range []byte(s) {
		if c != '_' && (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}

// escapeDollars makes s survive expand unchanged.
func escapeDollars(s string) string { return strings.ReplaceAll(s, "$", "$$") }
