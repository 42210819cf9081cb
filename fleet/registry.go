// Package fleet keeps the views a fleet of replicas shares through Redis —
// which replicas are alive, every replica's breakers — in registries that
// work on every Redis deployment: each registry is one hash under one hash
// tag, so every command and script touches one Cluster slot, and nothing
// scans the keyspace. Replicas refresh their entries with a heartbeat;
// entries not refreshed within the registry's ttl are dropped, by Redis's
// clock, not the replicas'.
package fleet

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// MaxEntries bounds a registry: a heartbeat that would grow it past this
// many live entries is refused. Entries are replicas × apps, so the bound
// is far above any real fleet.
const MaxEntries = 4096

// sep separates a member from an entry's name in a hash field. Members and
// names never contain it (Beat refuses them).
const sep = "\x1f"

// ErrFull means a heartbeat was refused because the registry holds
// MaxEntries live entries.
var ErrFull = errors.New("fleet: registry full")

// Registry is one fleet view: a hash of entries, each owned by one member
// (a replica) and stamped with the time of its last heartbeat. It is safe
// for concurrent use.
type Registry struct {
	rdb redis.UniversalClient
	key string
	ttl time.Duration
}

// NewRegistry returns the registry view under prefix. Entries live ttl
// after their last heartbeat.
func NewRegistry(rdb redis.UniversalClient, prefix, view string, ttl time.Duration) *Registry {
	return &Registry{rdb: rdb, key: prefix + "{fleet}:" + view, ttl: ttl}
}

// Entry is one live entry of a registry.
type Entry struct {
	Member string
	Name   string
	Value  []byte
	Seen   time.Time // its last heartbeat, by Redis's clock
}

// beatScript replaces a member's entries and drops stale ones. KEYS[1]:
// the hash. ARGV: ttl (ms), member, max entries, then name, value pairs.
// A value is stored as "<ms> <value>". It returns -1 when full.
var beatScript = redis.NewScript(`
local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl, member, max = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local mine = member .. "\31"
local all = redis.call("HGETALL", KEYS[1])
local live = 0
for i = 1, #all, 2 do
  local f, v = all[i], all[i + 1]
  local seen = tonumber(string.match(v, "^(%d+) "))
  if string.sub(f, 1, #mine) == mine or seen == nil or now - seen > ttl then
    redis.call("HDEL", KEYS[1], f)
  else
    live = live + 1
  end
end
if live + (#ARGV - 3) / 2 > max then return -1 end
for i = 4, #ARGV, 2 do
  redis.call("HSET", KEYS[1], mine .. ARGV[i], now .. " " .. ARGV[i + 1])
end
redis.call("PEXPIRE", KEYS[1], ttl * 3)
return live`)

// listScript returns the live entries and Redis's time. KEYS[1]: the hash.
// ARGV: ttl (ms). It answers {now, field, value, field, value, ...}.
var listScript = redis.NewScript(`
local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
local out = {tostring(now)}
local all = redis.call("HGETALL", KEYS[1])
for i = 1, #all, 2 do
  local seen = tonumber(string.match(all[i + 1], "^(%d+) "))
  if seen ~= nil and now - seen <= ttl then
    out[#out + 1] = all[i]
    out[#out + 1] = all[i + 1]
  end
end
return out`)

// Beat replaces member's entries with entries (name → value) and stamps
// them now. An empty entries removes member's entries.
func (r *Registry) Beat(ctx context.Context, member string, entries map[string][]byte) error {
	if member == "" || strings.Contains(member, sep) {
		return fmt.Errorf("fleet: invalid member name %q", member)
	}
	args := []any{r.ttl.Milliseconds(), member, MaxEntries}
	names := make([]string, 0, len(entries))
	for name := range entries {
		if strings.Contains(name, sep) {
			return fmt.Errorf("fleet: invalid entry name %q", name)
		}
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		args = append(args, name, entries[name])
	}
	n, err := beatScript.Run(ctx, r.rdb, []string{r.key}, args...).Int()
	if err != nil {
		return fmt.Errorf("fleet: heartbeat: %w", err)
	}
	if n < 0 {
		return ErrFull
	}
	return nil
}

// List returns the live entries, ordered by member and name.
func (r *Registry) List(ctx context.Context) ([]Entry, error) {
	res, err := listScript.Run(ctx, r.rdb, []string{r.key}, r.ttl.Milliseconds()).StringSlice()
	if err != nil {
		return nil, fmt.Errorf("fleet: list: %w", err)
	}
	if len(res) == 0 || len(res)%2 != 1 {
		return nil, fmt.Errorf("fleet: list: malformed answer of %d items", len(res))
	}
	out := make([]Entry, 0, len(res)/2)
	for i := 1; i+1 < len(res); i += 2 {
		member, name, ok := strings.Cut(res[i], sep)
		ms, val, ok2 := strings.Cut(res[i+1], " ")
		seen, err := strconv.ParseInt(ms, 10, 64)
		if !ok || !ok2 || err != nil {
			continue // not written by Beat
		}
		out = append(out, Entry{Member: member, Name: name, Value: []byte(val), Seen: time.UnixMilli(seen)})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Member != out[j].Member {
			return out[i].Member < out[j].Member
		}
		return out[i].Name < out[j].Name
	})
	return out, nil
}
