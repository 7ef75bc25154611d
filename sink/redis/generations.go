package redis

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/productstream/productstream/sink"
)

// The pointer scripts. Each touches the pointer hash only (KEYS[1]) and
// answers an error reply whose first word names the refusal: NOPOINTER,
// LIVE or BUILDING.
const (
	// initScript creates the pointer for generation 1 unless there is one;
	// ARGV[1] is generation 1's prefix. It returns 1 when it created it.
	initScript = `
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'live', '1', 'live_prefix', ARGV[1], 'building', '0')
return 1
`
	// beginScript marks generation ARGV[1] as being built.
	beginScript = `
local live = redis.call('HGET', KEYS[1], 'live')
if not live then return redis.error_reply('NOPOINTER the generations pointer is missing') end
if live == ARGV[1] then return redis.error_reply('LIVE generation ' .. live .. ' is live') end
local building = redis.call('HGET', KEYS[1], 'building')
if building and building ~= '0' and building ~= ARGV[1] then
  return redis.error_reply('BUILDING generation ' .. building .. ' is being built')
end
redis.call('HSET', KEYS[1], 'building', ARGV[1])
return 1
`
	// switchScript makes generation ARGV[1], with prefix ARGV[2], the live
	// one and clears the building mark if it was that generation's. It
	// returns the generation that was live.
	switchScript = `
local live = redis.call('HGET', KEYS[1], 'live')
if not live then return redis.error_reply('NOPOINTER the generations pointer is missing') end
local building = redis.call('HGET', KEYS[1], 'building') or '0'
if building == ARGV[1] then building = '0' end
redis.call('HSET', KEYS[1], 'live', ARGV[1], 'live_prefix', ARGV[2], 'building', building)
return live
`
	// dropScript refuses to drop the live generation ARGV[1] and clears the
	// building mark if it was that generation's, so writers stop writing it.
	dropScript = `
local live = redis.call('HGET', KEYS[1], 'live')
if not live then return redis.error_reply('NOPOINTER the generations pointer is missing') end
if live == ARGV[1] then return redis.error_reply('LIVE generation ' .. live .. ' is live') end
if redis.call('HGET', KEYS[1], 'building') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'building', '0')
end
return 1
`
)

// unlinkScript unlinks KEYS[1] if it is a record hash of generation
// ARGV[1]: its generation field says so or, when ARGV[2] is "1", it has
// none (written before hashes carried their generation) but a version. It
// returns 1 when it unlinked the key, 0 when it left it (gone already, or
// not that generation's), and checks and unlinks in one step, so no write
// between the two can be lost.
const unlinkScript = `
if redis.call('TYPE', KEYS[1]).ok ~= 'hash' then return 0 end
local fields = redis.call('HMGET', KEYS[1], 'generation', 'version')
if fields[1] then
  if fields[1] ~= ARGV[1] then return 0 end
elseif ARGV[2] ~= '1' or not fields[2] then
  return 0
end
redis.call('UNLINK', KEYS[1])
return 1
`

// scripts are the sink's Lua scripts, each with its SHA-1.
type scripts struct {
	write, init, begin, switchTo, drop, unlink *redis.Script
}

func newScripts() scripts {
	return scripts{
		write:    redis.NewScript(writeScript),
		init:     redis.NewScript(initScript),
		begin:    redis.NewScript(beginScript),
		switchTo: redis.NewScript(switchScript),
		drop:     redis.NewScript(dropScript),
		unlink:   redis.NewScript(unlinkScript),
	}
}

// scanCount is how many keys Drop asks SCAN for at once, and so about how
// many it checks and unlinks in one pipeline.
const scanCount = 1000

// genPrefix is the prefix of generation n's keys.
func (s *shared) genPrefix(n int) string {
	if n == 1 {
		return s.prefix
	}
	return s.prefix + "g" + strconv.Itoa(n) + ":"
}

// Generations returns the live generation and the one being built (0:
// none), as the pointer hash says.
func (s *Sink) Generations(ctx context.Context) (live, building int, err error) {
	vals, err := s.client.HMGet(ctx, s.pointer, "live", "building").Result()
	if err != nil {
		return 0, 0, fmt.Errorf("redis sink: reading %q: %w", s.pointer, err)
	}
	if vals[0] == nil {
		return 0, 0, fmt.Errorf("redis sink: %q: %w", s.pointer, ErrNoPointer)
	}
	live, err = pointerInt(vals[0])
	if err != nil || live < 1 {
		return 0, 0, fmt.Errorf("redis sink: %q holds live = %v: not a generation", s.pointer, vals[0])
	}
	if vals[1] != nil {
		if building, err = pointerInt(vals[1]); err != nil || building < 0 {
			return 0, 0, fmt.Errorf("redis sink: %q holds building = %v: not a generation", s.pointer, vals[1])
		}
	}
	return live, building, nil
}

func pointerInt(v any) (int, error) {
	str, isString := v.(string)
	if !isString {
		return 0, fmt.Errorf("%v is not a string", v)
	}
	return strconv.Atoi(str)
}

// Begin records generation n as being built: from then on the Sink from
// New writes every batch to it as well as to the live one. Generation n
// needs no creating: its hashes appear as they are written. Begin refuses
// the live generation (ErrLiveGeneration) and a second generation while
// one is being built (ErrBuilding); beginning the one being built again is
// a no-op.
func (s *Sink) Begin(ctx context.Context, n int) error {
	if n < 1 {
		return fmt.Errorf("redis sink: begin %d: %w", n, ErrBadGeneration)
	}
	if err := s.scripts.begin.Run(ctx, s.client, []string{s.pointer}, strconv.Itoa(n)).Err(); err != nil {
		return fmt.Errorf("redis sink: begin generation %d: %w", n, pointerError(err))
	}
	s.log.Info("building a generation", "generation", n, "prefix", s.genPrefix(n))
	return nil
}

// At returns a Sink that writes to and reads from generation n only,
// sharing this Sink's connections; its Close does nothing.
func (s *Sink) At(n int) sink.Sink {
	return &Sink{shared: s.shared, gen: n, fixed: true}
}

// Switch makes generation n the live one: one script rewrites live,
// live_prefix and building together, so no reader sees half of it. The
// building mark is cleared when it was n's.
func (s *Sink) Switch(ctx context.Context, n int) error {
	if n < 1 {
		return fmt.Errorf("redis sink: switch to %d: %w", n, ErrBadGeneration)
	}
	was, err := s.scripts.switchTo.Run(ctx, s.client, []string{s.pointer}, strconv.Itoa(n), s.genPrefix(n)).Text()
	if err != nil {
		return fmt.Errorf("redis sink: switch to generation %d: %w", n, pointerError(err))
	}
	s.log.Info("switched generations", "from", was, "to", n, "live_prefix", s.genPrefix(n))
	return nil
}

// Drop deletes every record hash of generation n and clears the building
// mark if it was n's. It refuses the live generation with
// ErrLiveGeneration; dropping a generation that holds nothing (one dropped
// already, by this or another process) does nothing and returns nil.
//
// It SCANs for n's prefix and, page by page, runs one script per key (all
// of a page in one pipeline) that unlinks the key only if it is a hash
// whose generation field is n. Keys of other generations spelt under n's
// prefix (generation 1's under namespace "g2" when n is 2, every other
// generation's when n is 1), the pointer and values this sink did not
// write are left alone. A hash without a generation field, written before
// hashes carried one, is taken by Drop(1) unless its key is shaped like
// another generation's, and by no other Drop, so none of another
// generation's can be lost.
func (s *Sink) Drop(ctx context.Context, n int) error {
	if n < 1 {
		return fmt.Errorf("redis sink: drop %d: %w", n, ErrBadGeneration)
	}
	if err := s.scripts.drop.Run(ctx, s.client, []string{s.pointer}, strconv.Itoa(n)).Err(); err != nil {
		return fmt.Errorf("redis sink: drop generation %d: %w", n, pointerError(err))
	}
	if err := s.scripts.unlink.Load(ctx, s.client).Err(); err != nil {
		return fmt.Errorf("redis sink: drop generation %d: loading the unlink script: %w", n, err)
	}
	prefix := s.genPrefix(n)
	match := escapeGlob(prefix) + "*"
	var cursor uint64
	dropped, kept := 0, 0
	for {
		keys, next, err := s.client.Scan(ctx, cursor, match, scanCount).Result()
		if err != nil {
			return fmt.Errorf("redis sink: drop generation %d: scanning %q: %w", n, match, err)
		}
		unlinked, err := s.unlinkPage(ctx, n, keys)
		if err != nil {
			return fmt.Errorf("redis sink: drop generation %d: %w", n, err)
		}
		dropped += unlinked
		kept += len(keys) - unlinked
		if cursor = next; cursor == 0 {
			break
		}
	}
	s.log.Info("dropped a generation", "generation", n, "prefix", prefix, "keys", dropped, "others_kept", kept)
	return nil
}

// unlinkPage runs the unlink script on each of keys, in one pipeline,
// loading the script again and running again the calls that found it
// missing (Redis restarted or SCRIPT FLUSH). It returns how many keys it
// unlinked.
func (s *Sink) unlinkPage(ctx context.Context, n int, keys []string) (int, error) {
	gen := strconv.Itoa(n)
	unlinked := 0
	for attempt := 0; len(keys) > 0; attempt++ {
		if attempt > 0 {
			if attempt > 1 {
				return unlinked, fmt.Errorf("the unlink script is still missing after reloading it: %w", redis.ErrNoScript)
			}
			s.log.Warn("redis lost the unlink script (restarted or flushed?), reloading it", "calls", len(keys))
			if err := s.scripts.unlink.Load(ctx, s.client).Err(); err != nil {
				return unlinked, fmt.Errorf("reloading the unlink script: %w", err)
			}
		}
		pipe := s.client.Pipeline()
		cmds := make([]*redis.Cmd, len(keys))
		for i, k := range keys {
			// Only Drop(1) may take a hash without a generation field, and
			// then only one whose key no other generation spells.
			unmarked := "0"
			if n == 1 && s.shapedLikeGeneration1(k) {
				unmarked = "1"
			}
			cmds[i] = pipe.EvalSha(ctx, s.scripts.unlink.Hash(), []string{k}, gen, unmarked)
		}
		// Exec's error is one of the commands'; each is looked at below.
		_, _ = pipe.Exec(ctx)
		var again []string
		for i, k := range keys {
			got, err := cmds[i].Int()
			switch classify(err) {
			case answered:
				unlinked += got
			case noScript:
				again = append(again, k)
			default:
				return unlinked, fmt.Errorf("unlinking %q: %w", k, err)
			}
		}
		keys = again
	}
	return unlinked, nil
}

// shapedLikeGeneration1 reports whether key, which starts with the key
// prefix, is spelt like a key of generation 1 only: it is neither the
// pointer nor shaped like a key of generation N > 1 (prefix, "g", N, ":").
// Drop(1) uses it for hashes that carry no generation field.
func (s *shared) shapedLikeGeneration1(key string) bool {
	if key == s.pointer {
		return false
	}
	rest, found := strings.CutPrefix(key, s.prefix)
	if !found {
		return false
	}
	num, _, hasColon := strings.Cut(strings.TrimPrefix(rest, "g"), ":")
	if !strings.HasPrefix(rest, "g") || !hasColon {
		return true
	}
	n, err := strconv.Atoi(num)
	return err != nil || n < 2 || strconv.Itoa(n) != num
}

// escapeGlob escapes the characters SCAN MATCH reads as a pattern, so s
// matches only itself.
func escapeGlob(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '*', '?', '[', ']', '\\':
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// pointerError maps a pointer script's refusal to this package's error.
func pointerError(err error) error {
	var rerr redis.Error
	if !errors.As(err, &rerr) {
		return err
	}
	msg := err.Error()
	for _, m := range []struct {
		code string
		err  error
	}{{"NOPOINTER", ErrNoPointer}, {"LIVE ", ErrLiveGeneration}, {"BUILDING ", ErrBuilding}} {
		if strings.Contains(msg, m.code) {
			return fmt.Errorf("%w (%w)", m.err, err)
		}
	}
	return err
}
