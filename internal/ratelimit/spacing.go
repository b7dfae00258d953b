package ratelimit

import (
	"context"
	"errors"
	"time"

	"github.com/redis/go-redis/v9"
)

// errUnshared is Space's answer when there is nothing to share through: no Redis, or Redis down.
var errUnshared = errors.New("no shared store: each replica spaces alone")

// spaceScript admits an event of KEYS[1] when none was admitted within the last ARGV[1] milliseconds by any replica,
// and otherwise returns the milliseconds left. Redis keeps the time (PX), so the replicas' clocks do not matter. A
// key without an expiry, which no replica writes, is taken as expired.
var spaceScript = redis.NewScript(`
if redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then return 0 end
local left = redis.call('PTTL', KEYS[1])
if left > 0 then return left end
redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
return 0
`)

// Space admits an event named key when no replica sharing the gate's Redis admitted one within interval, and
// otherwise returns the time left. Without Redis, or while it does not answer, it returns an error: the caller's
// own spacing then decides alone.
func (g *Gate) Space(ctx context.Context, key string, interval time.Duration) (time.Duration, error) {
	if g.tally.store == nil || interval <= 0 {
		return 0, errUnshared
	}
	return g.tally.store.space(ctx, key, interval)
}

func (s *redisStore) space(ctx context.Context, key string, interval time.Duration) (time.Duration, error) {
	if !s.up.Load() {
		return 0, errUnshared
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	s.calls.Inc()
	// The braces make the key a Redis Cluster hash tag; the caller's key holds none.
	left, err := spaceScript.Run(ctx, s.client, []string{s.prefix + ":space:{" + key + "}"}, max(interval.Milliseconds(), 1)).Int64()
	if err != nil {
		// Redis down or slow takes the replica's sharing down; a call Redis refused, or a client gone, does not.
		if !refusedCall(err) && (ctx.Err() == nil || errors.Is(ctx.Err(), context.DeadlineExceeded)) {
			s.failed(err)
		}
		return 0, err
	}
	return time.Duration(left) * time.Millisecond, nil
}
