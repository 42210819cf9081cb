package platform

import (
	"time"

	"github.com/wxproxy/wxproxy/token"
)

// PutRecordLazy stores r without writing the file (test setup at scale).
func (f *FileStore) PutRecordLazy(r Record, platform string) {
	_ = f.do(true, true, func(s *state) error { s.putRecord(platform, r); return nil })
}

// TokenFor is a token valid for two hours from now.
func TokenFor(v string, now time.Time) token.Token {
	return token.Token{Value: v, ObtainedAt: now, ExpiresAt: now.Add(2 * time.Hour)}
}
