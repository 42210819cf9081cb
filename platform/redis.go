package platform

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// RedisStore keeps platform state in Redis for a fleet. Every key of a
// platform carries the platform's hash tag, so each command and script
// touches one slot (Redis Cluster); nothing uses SCAN or KEYS:
//
//	{prefix}platform:{name}:ticket       the newest ticket (JSON), no expiry
//	{prefix}platform:{name}:authorizers  HASH appid → record (JSON), no expiry
//	{prefix}platform:{name}:events       pub/sub: appid of a changed record
//
// Tickets and refresh tokens never expire in Redis: losing a refresh token
// costs a merchant's re-authorization. (Run Redis with persistence.)
// Component and merchant tokens live in the token.RedisStore beside it.
type RedisStore struct {
	rdb    redis.UniversalClient
	prefix string
}

var _ Store = (*RedisStore)(nil)

// NewRedisStore returns a store whose keys start with prefix.
func NewRedisStore(rdb redis.UniversalClient, prefix string) *RedisStore {
	return &RedisStore{rdb: rdb, prefix: prefix}
}

func (s *RedisStore) key(platform, what string) string {
	return s.prefix + "platform:{" + platform + "}:" + what
}

// Events is the pub/sub channel on which record changes of platform are
// announced (the payload is the merchant's appid).
func (s *RedisStore) Events(platform string) string { return s.key(platform, "events") }

// saveTicketScript stores ARGV[2] (a ticket's JSON) unless the stored
// ticket was made later than ARGV[1] (create_time) or is the same ticket
// (ARGV[3]), and returns what is stored.
var saveTicketScript = redis.NewScript(`
local cur = redis.call("GET", KEYS[1])
if cur then
	local ok, t = pcall(cjson.decode, cur)
	if ok and type(t) == "table" and tonumber(t["create_time"]) then
		local made = tonumber(t["create_time"])
		if made > tonumber(ARGV[1]) or (made == tonumber(ARGV[1]) and t["value"] == ARGV[3]) then
			return cur
		end
	end
end
redis.call("SET", KEYS[1], ARGV[2])
return ARGV[2]`)

// SaveTicket keeps t unless a ticket pushed at the same time or later is
// stored (atomic: the newest wins across replicas).
func (s *RedisStore) SaveTicket(ctx context.Context, platform string, t Ticket) (Ticket, error) {
	b, err := json.Marshal(t)
	if err != nil {
		return Ticket{}, err
	}
	out, err := saveTicketScript.Run(ctx, s.rdb, []string{s.key(platform, "ticket")}, t.CreateTime, b, t.Value).Text()
	if err != nil {
		return Ticket{}, fmt.Errorf("platform: redis save ticket: %w", err)
	}
	var stored Ticket
	if err := json.Unmarshal([]byte(out), &stored); err != nil {
		return Ticket{}, fmt.Errorf("platform: redis save ticket: decode: %w", err)
	}
	return stored, nil
}

// LoadTicket returns the stored ticket or ErrNotFound.
func (s *RedisStore) LoadTicket(ctx context.Context, platform string) (Ticket, error) {
	b, err := s.rdb.Get(ctx, s.key(platform, "ticket")).Bytes()
	if errors.Is(err, redis.Nil) {
		return Ticket{}, ErrNotFound
	}
	if err != nil {
		return Ticket{}, fmt.Errorf("platform: redis load ticket: %w", err)
	}
	var t Ticket
	if err := json.Unmarshal(b, &t); err != nil {
		return Ticket{}, fmt.Errorf("platform: redis load ticket: decode: %w", err)
	}
	return t, nil
}

// PutRecord stores r and announces it.
func (s *RedisStore) PutRecord(ctx context.Context, platform string, r Record) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if err := s.rdb.HSet(ctx, s.key(platform, "authorizers"), r.AppID, b).Err(); err != nil {
		return fmt.Errorf("platform: redis put authorizer: %w", err)
	}
	s.rdb.Publish(ctx, s.Events(platform), r.AppID) // best effort: peers re-read periodically
	return nil
}

// DeleteRecord drops a merchant and announces it.
func (s *RedisStore) DeleteRecord(ctx context.Context, platform, appid string) error {
	if err := s.rdb.HDel(ctx, s.key(platform, "authorizers"), appid).Err(); err != nil {
		return fmt.Errorf("platform: redis delete authorizer: %w", err)
	}
	s.rdb.Publish(ctx, s.Events(platform), appid)
	return nil
}

// Record returns one merchant's record or ErrNotFound.
func (s *RedisStore) Record(ctx context.Context, platform, appid string) (Record, error) {
	b, err := s.rdb.HGet(ctx, s.key(platform, "authorizers"), appid).Bytes()
	if errors.Is(err, redis.Nil) {
		return Record{}, ErrNotFound
	}
	if err != nil {
		return Record{}, fmt.Errorf("platform: redis authorizer: %w", err)
	}
	var r Record
	if err := json.Unmarshal(b, &r); err != nil {
		return Record{}, fmt.Errorf("platform: redis authorizer: decode: %w", err)
	}
	return r, nil
}

// Records returns every merchant of platform (one HGETALL).
func (s *RedisStore) Records(ctx context.Context, platform string) ([]Record, error) {
	m, err := s.rdb.HGetAll(ctx, s.key(platform, "authorizers")).Result()
	if err != nil {
		return nil, fmt.Errorf("platform: redis authorizers: %w", err)
	}
	out := make([]Record, 0, len(m))
	for appid, v := range m {
		var r Record
		if err := json.Unmarshal([]byte(v), &r); err != nil || r.AppID != appid {
			continue // a damaged entry is skipped, not fatal
		}
		out = append(out, r)
	}
	return out, nil
}

// Watch announces the appids of changed records of platform until ctx
// ends, then closes the channel. Announcements may be dropped.
func (s *RedisStore) Watch(ctx context.Context, platform string) <-chan string {
	out := make(chan string, 64)
	sub := s.rdb.Subscribe(ctx, s.Events(platform))
	go func() {
		defer close(out)
		defer sub.Close()
		ch := sub.Channel()
		for {
			select {
			case <-ctx.Done():
				return
			case m, ok := <-ch:
				if !ok {
					return
				}
				select {
				case out <- m.Payload:
				default: // the periodic re-read catches up
				}
			}
		}
	}()
	return out
}
