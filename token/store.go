package token

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
)

// ErrNotFound is returned by a Store that holds no token for a key.
var ErrNotFound = errors.New("token: not found")

// Store keeps tokens across restarts (file) or across replicas (Redis).
// Keys are opaque strings built by the Cache from the app's identity.
type Store interface {
	Load(ctx context.Context, key string) (Token, error)
	Save(ctx context.Context, key string, t Token) error
}

var (
	_ Store = (*MemoryStore)(nil)
	_ Store = (*FileStore)(nil)
)

// MemoryStore keeps tokens in process memory; a restart fetches anew.
// The zero MemoryStore is ready to use and safe for concurrent use.
type MemoryStore struct {
	mu     sync.Mutex
	tokens map[string]Token
}

// Load returns the token saved under key, or ErrNotFound.
func (s *MemoryStore) Load(_ context.Context, key string) (Token, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.tokens[key]
	if !ok {
		return Token{}, ErrNotFound
	}
	return t, nil
}

// Save stores t under key.
func (s *MemoryStore) Save(_ context.Context, key string, t Token) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tokens == nil {
		s.tokens = make(map[string]Token)
	}
	s.tokens[key] = t
	return nil
}

// FileStore keeps tokens in one JSON file, written with mode 0600 and
// replaced atomically (write to a temporary file, fsync, rename), so a crash
// never leaves a half-written file. It is safe for concurrent use within one
// process; it is not a way to share tokens between processes (use Redis).
type FileStore struct {
	path string

	mu     sync.Mutex
	tokens map[string]Token // nil until first read
}

// NewFileStore returns a store backed by the file at path. The file need not
// exist yet; its directory must.
func NewFileStore(path string) *FileStore { return &FileStore{path: path} }

func (s *FileStore) read() error {
	if s.tokens != nil {
		return nil
	}
	data, err := os.ReadFile(s.path)
	if errors.Is(err, fs.ErrNotExist) {
		s.tokens = make(map[string]Token)
		return nil
	}
	if err != nil {
		return fmt.Errorf("token: read store: %w", err)
	}
	tokens := make(map[string]Token)
	if err := json.Unmarshal(data, &tokens); err != nil {
		return fmt.Errorf("token: decode store %s: %w", s.path, err)
	}
	s.tokens = tokens
	return nil
}

// Load returns the token saved under key, or ErrNotFound.
func (s *FileStore) Load(_ context.Context, key string) (Token, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.read(); err != nil {
		return Token{}, err
	}
	t, ok := s.tokens[key]
	if !ok {
		return Token{}, ErrNotFound
	}
	return t, nil
}

// Save stores t under key and rewrites the file.
func (s *FileStore) Save(_ context.Context, key string, t Token) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.read(); err != nil {
		// An unreadable file is replaced rather than left to block every save.
		s.tokens = make(map[string]Token)
	}
	s.tokens[key] = t
	data, err := json.MarshalIndent(s.tokens, "", "  ")
	if err != nil {
		return fmt.Errorf("token: encode store: %w", err)
	}
	return writeFileAtomic(s.path, data)
}

func writeFileAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("token: write store: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after a successful rename
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return fmt.Errorf("token: write store: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("token: write store: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("token: write store: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("token: write store: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("token: write store: %w", err)
	}
	return nil
}
