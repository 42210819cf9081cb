package platform

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync"
	"time"

	"github.com/wxproxy/wxproxy/token"
)

// ErrNotFound is returned by a Store that holds nothing under a name.
var ErrNotFound = errors.New("platform: not found")

// Ticket is a component_verify_ticket as WeChat pushed it.
type Ticket struct {
	Value      string    `json:"value"`
	CreateTime int64     `json:"create_time"` // the push's CreateTime (unix seconds): orders tickets
	ReceivedAt time.Time `json:"received_at"`
	ExpiresAt  time.Time `json:"expires_at"`
}

// PushedTicket is the ticket of a push received at now whose sender made
// it at made (unix seconds; 0 = unknown): it lives ttl from when it was
// made, not from when a late push arrived.
func PushedTicket(value string, made int64, now time.Time, ttl time.Duration) Ticket {
	t := Ticket{Value: value, CreateTime: made, ReceivedAt: now, ExpiresAt: now.Add(ttl)}
	if made > 0 {
		if at := time.Unix(made, 0); at.Before(now) {
			t.ExpiresAt = at.Add(ttl)
		}
	}
	return t
}

// Valid reports whether t holds a ticket that has not expired at now.
func (t *Ticket) Valid(now time.Time) bool {
	return t != nil && t.Value != "" && now.Before(t.ExpiresAt)
}

// newerTicket reports whether t should replace cur: the newest push wins
// (by CreateTime; of two different tickets made in the same second, the
// one received last), so a late or duplicated push never replaces a newer
// ticket.
func newerTicket(t, cur *Ticket) bool {
	return cur == nil || t.CreateTime > cur.CreateTime || (t.CreateTime == cur.CreateTime && t.Value != cur.Value && !t.ReceivedAt.Before(cur.ReceivedAt))
}

// Authorizer states.
const (
	StateOK           = "ok"
	StateUnauthorized = "unauthorized" // WeChat answered 61023: the merchant must authorize again
)

// Record is what a Store keeps of one merchant (authorizer): its refresh
// token is the one durable credential that cannot be fetched again
// without the merchant's help.
type Record struct {
	AppID        string    `json:"appid"`
	RefreshToken string    `json:"refresh_token"`
	State        string    `json:"state"`
	UpdatedAt    time.Time `json:"updated_at"`
	// AuthorizedAt is the CreateTime (unix seconds) of the authorization
	// that gave RefreshToken; an unauthorized push older than it is late
	// and ignored.
	AuthorizedAt int64 `json:"authorized_at,omitempty"`
}

// Store keeps a platform's durable state: its newest ticket and its
// merchants' records. Implementations: MemoryStore, FileStore and
// RedisStore; all are safe for concurrent use.
type Store interface {
	// SaveTicket keeps t unless the stored ticket is newer; it returns
	// the ticket stored afterwards.
	SaveTicket(ctx context.Context, platform string, t Ticket) (Ticket, error)
	LoadTicket(ctx context.Context, platform string) (Ticket, error)
	PutRecord(ctx context.Context, platform string, r Record) error
	DeleteRecord(ctx context.Context, platform, appid string) error
	Record(ctx context.Context, platform, appid string) (Record, error)
	Records(ctx context.Context, platform string) ([]Record, error)
}

var (
	_ Store       = (*MemoryStore)(nil)
	_ Store       = (*FileStore)(nil)
	_ token.Store = (*FileStore)(nil)
)

// state is the data of one process-local store.
type state struct {
	Tickets map[string]Ticket            `json:"tickets"`
	Records map[string]map[string]Record `json:"authorizers"` // platform → appid → record
	Tokens  map[string]token.Token       `json:"tokens"`      // component and merchant tokens
}

func newState() *state {
	return &state{Tickets: map[string]Ticket{}, Records: map[string]map[string]Record{}, Tokens: map[string]token.Token{}}
}

func (s *state) saveTicket(platform string, t Ticket) Ticket {
	if cur, ok := s.Tickets[platform]; ok && !newerTicket(&t, &cur) {
		return cur
	}
	s.Tickets[platform] = t
	return t
}

func (s *state) loadTicket(platform string) (Ticket, error) {
	t, ok := s.Tickets[platform]
	if !ok {
		return Ticket{}, ErrNotFound
	}
	return t, nil
}

func (s *state) putRecord(platform string, r Record) {
	m := s.Records[platform]
	if m == nil {
		m = map[string]Record{}
		s.Records[platform] = m
	}
	m[r.AppID] = r
}

func (s *state) record(platform, appid string) (Record, error) {
	r, ok := s.Records[platform][appid]
	if !ok {
		return Record{}, ErrNotFound
	}
	return r, nil
}

func (s *state) records(platform string) []Record {
	out := make([]Record, 0, len(s.Records[platform]))
	for _, r := range s.Records[platform] {
		out = append(out, r)
	}
	return out
}

// MemoryStore keeps platform state in process memory; a restart loses it
// (and every merchant must then be imported or recovered). The zero
// MemoryStore is ready to use.
type MemoryStore struct {
	mu sync.Mutex
	s  *state
}

func (m *MemoryStore) st() *state {
	if m.s == nil {
		m.s = newState()
	}
	return m.s
}

// SaveTicket keeps t unless a newer ticket is stored.
func (m *MemoryStore) SaveTicket(_ context.Context, platform string, t Ticket) (Ticket, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.st().saveTicket(platform, t), nil
}

// LoadTicket returns the stored ticket or ErrNotFound.
func (m *MemoryStore) LoadTicket(_ context.Context, platform string) (Ticket, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.st().loadTicket(platform)
}

// PutRecord stores r.
func (m *MemoryStore) PutRecord(_ context.Context, platform string, r Record) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.st().putRecord(platform, r)
	return nil
}

// DeleteRecord drops a merchant.
func (m *MemoryStore) DeleteRecord(_ context.Context, platform, appid string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.st().Records[platform], appid)
	return nil
}

// Record returns one merchant's record or ErrNotFound.
func (m *MemoryStore) Record(_ context.Context, platform, appid string) (Record, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.st().record(platform, appid)
}

// Records returns every merchant of platform, in no order.
func (m *MemoryStore) Records(_ context.Context, platform string) ([]Record, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.st().records(platform), nil
}

// FileStore keeps every platform's state — tickets, merchant records and
// the component and merchant tokens — in one JSON file (mode 0600,
// replaced atomically). Refresh tokens and tickets are written before the
// call that changed them returns; token saves, which are frequent with
// thousands of merchants and cheap to lose (a lost token is fetched
// again), are coalesced into at most one write per FlushEvery. Call Close
// to write what is pending. It is one process's store, not a fleet's.
type FileStore struct {
	path  string
	every time.Duration

	mu      sync.Mutex
	s       *state
	dirty   bool
	timer   *time.Timer
	writeMu sync.Mutex // orders writes of the file
}

// NewFileStore returns a store backed by the file at path; its directory
// must exist. flushEvery bounds how long a token save may stay unwritten
// (default 1 s).
func NewFileStore(path string, flushEvery time.Duration) *FileStore {
	if flushEvery <= 0 {
		flushEvery = time.Second
	}
	return &FileStore{path: path, every: flushEvery}
}

// load reads the file once; f.mu is held.
func (f *FileStore) load() error {
	if f.s != nil {
		return nil
	}
	data, err := os.ReadFile(f.path)
	if errors.Is(err, fs.ErrNotExist) {
		f.s = newState()
		return nil
	}
	if err != nil {
		return fmt.Errorf("platform: read store: %w", err)
	}
	s := newState()
	if err := json.Unmarshal(data, s); err != nil {
		return fmt.Errorf("platform: decode store %s: %w", f.path, err)
	}
	if s.Tickets == nil {
		s.Tickets = map[string]Ticket{}
	}
	if s.Records == nil {
		s.Records = map[string]map[string]Record{}
	}
	if s.Tokens == nil {
		s.Tokens = map[string]token.Token{}
	}
	f.s = s
	return nil
}

// do runs fn on the loaded state; with write, the file is written before
// do returns (durable changes) or, with lazy, within FlushEvery.
func (f *FileStore) do(write, lazy bool, fn func(*state) error) error {
	f.mu.Lock()
	if err := f.load(); err != nil {
		f.mu.Unlock()
		return err
	}
	if err := fn(f.s); err != nil {
		f.mu.Unlock()
		return err
	}
	if !write {
		f.mu.Unlock()
		return nil
	}
	f.dirty = true
	if lazy {
		if f.timer == nil {
			f.timer = time.AfterFunc(f.every, func() { _ = f.Flush() })
		}
		f.mu.Unlock()
		return nil
	}
	f.mu.Unlock()
	return f.Flush()
}

// Flush writes pending changes now.
func (f *FileStore) Flush() error {
	f.writeMu.Lock()
	defer f.writeMu.Unlock()
	f.mu.Lock()
	if f.timer != nil {
		f.timer.Stop()
		f.timer = nil
	}
	if !f.dirty {
		f.mu.Unlock()
		return nil
	}
	data, err := json.Marshal(f.s)
	f.dirty = false
	f.mu.Unlock()
	if err != nil {
		return fmt.Errorf("platform: encode store: %w", err)
	}
	if err := token.WriteFileAtomic(f.path, data); err != nil {
		f.mu.Lock()
		f.dirty = true
		f.mu.Unlock()
		return err
	}
	return nil
}

// Close writes what is pending.
func (f *FileStore) Close() error { return f.Flush() }

// SaveTicket keeps t unless a newer ticket is stored; written at once.
func (f *FileStore) SaveTicket(_ context.Context, platform string, t Ticket) (Ticket, error) {
	var out Ticket
	err := f.do(true, false, func(s *state) error { out = s.saveTicket(platform, t); return nil })
	return out, err
}

// LoadTicket returns the stored ticket or ErrNotFound.
func (f *FileStore) LoadTicket(_ context.Context, platform string) (Ticket, error) {
	var out Ticket
	err := f.do(false, false, func(s *state) (err error) { out, err = s.loadTicket(platform); return err })
	return out, err
}

// PutRecord stores r; written at once.
func (f *FileStore) PutRecord(_ context.Context, platform string, r Record) error {
	return f.do(true, false, func(s *state) error { s.putRecord(platform, r); return nil })
}

// PutRecords stores rs in one write of the file.
func (f *FileStore) PutRecords(_ context.Context, platform string, rs []Record) error {
	return f.do(true, false, func(s *state) error {
		for _, r := range rs {
			s.putRecord(platform, r)
		}
		return nil
	})
}

// DeleteRecord drops a merchant and its token; written at once.
func (f *FileStore) DeleteRecord(_ context.Context, platform, appid string) error {
	return f.do(true, false, func(s *state) error {
		delete(s.Records[platform], appid)
		delete(s.Tokens, MerchantKey(platform, appid))
		return nil
	})
}

// Record returns one merchant's record or ErrNotFound.
func (f *FileStore) Record(_ context.Context, platform, appid string) (Record, error) {
	var out Record
	err := f.do(false, false, func(s *state) (err error) { out, err = s.record(platform, appid); return err })
	return out, err
}

// Records returns every merchant of platform.
func (f *FileStore) Records(_ context.Context, platform string) ([]Record, error) {
	var out []Record
	err := f.do(false, false, func(s *state) error { out = s.records(platform); return nil })
	return out, err
}

// Load returns a token (token.Store).
func (f *FileStore) Load(_ context.Context, key string) (token.Token, error) {
	var out token.Token
	err := f.do(false, false, func(s *state) error {
		t, ok := s.Tokens[key]
		if !ok {
			return token.ErrNotFound
		}
		out = t
		return nil
	})
	return out, err
}

// Save stores a token (token.Store), written within FlushEvery.
func (f *FileStore) Save(_ context.Context, key string, t token.Token) error {
	return f.do(true, true, func(s *state) error { s.Tokens[key] = t; return nil })
}

// MerchantKey is the store key of a merchant's token.
func MerchantKey(platform, appid string) string { return platform + "@" + appid }

// ComponentKey is the store key of a platform's component token.
func ComponentKey(platform, componentAppID string) string {
	return "component:" + platform + ":" + componentAppID
}
