package redis

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/productstream/productstream/sink"
)

// writeScript applies one record if it is newer than what its hash holds.
// KEYS[1] is the hash; ARGV are version, deleted ("1"/"0"), state,
// updated_at and the generation written. It returns 1 when it wrote, 0 when
// the hash already holds the version (an applied no-op) and -1 when it
// holds a higher one (stale). Versions are compared as decimal strings, so
// every int64 compares exactly (Lua's numbers are doubles). A hash whose
// generation field names another generation is that generation's record
// (a key spelt alike in both, see the package doc) and is refused; a hash
// without one, written before hashes carried their generation, is taken
// over.
const writeScript = `
local function cmp(a, b)
  local na, nb = a:sub(1, 1) == '-', b:sub(1, 1) == '-'
  if na ~= nb then
    if na then return -1 end
    return 1
  end
  local r
  if #a ~= #b then
    r = (#a < #b) and -1 or 1
  elseif a == b then
    return 0
  else
    r = (a < b) and -1 or 1
  end
  if na then return -r end
  return r
end

local fields = redis.call('HMGET', KEYS[1], 'version', 'generation')
local held, gen = fields[1], fields[2]
if held then
  if held ~= '0' and not string.match(held, '^%-?[1-9]%d*$') then
    return redis.error_reply('FOREIGN the hash holds no decimal version')
  end
  if gen and gen ~= ARGV[5] then
    return redis.error_reply('FOREIGN the hash is generation ' .. gen .. "'s")
  end
  local c = cmp(held, ARGV[1])
  if c == 0 then return 0 end
  if c > 0 then return -1 end
elseif redis.call('EXISTS', KEYS[1]) == 1 then
  return redis.error_reply('FOREIGN the hash holds no version')
end
redis.call('HSET', KEYS[1], 'version', ARGV[1], 'deleted', ARGV[2], 'state', ARGV[3], 'updated_at', ARGV[4],
  'generation', ARGV[5])
return 1
`

// The write script's answers.
const (
	wrote = 1
	equal = 0
	stale = -1
)

// updatedAtLayout is RFC 3339 with milliseconds.
const updatedAtLayout = "2006-01-02T15:04:05.000Z07:00"

// Write applies batch to the live generation and, while one is being built,
// to that one too (a Sink from At: to its generation only), in one pipeline
// of script calls per batch. The Result of a record written to two
// generations is the live one's, unless either failed.
func (s *Sink) Write(ctx context.Context, batch []sink.Record) ([]sink.Result, error) {
	if len(batch) == 0 {
		return nil, nil
	}
	// The records are read here, before await: once Write returns, the
	// caller may reuse batch while the network part still runs.
	results := make([]sink.Result, len(batch))
	var writes []write
	for i, r := range batch {
		if !r.Deleted && !json.Valid(r.Doc) {
			results[i] = sink.Result{Outcome: sink.Failed,
				Err: sink.Permanent(fmt.Errorf("redis sink: %s version %d: %w", r.Key, r.Version, ErrInvalidDoc))}
			continue
		}
		writes = append(writes, write{record: i, key: r.Key, args: scriptArgs(r)})
	}
	return await(ctx, func(ctx context.Context) ([]sink.Result, error) {
		return s.apply(ctx, writes, results)
	})
}

// write is one record ready to send.
type write struct {
	record int // its index in the batch
	key    string
	args   []any
}

// apply makes writes in every generation Write goes to and fills in their
// results.
func (s *Sink) apply(ctx context.Context, writes []write, results []sink.Result) ([]sink.Result, error) {
	if len(writes) == 0 {
		return results, nil
	}
	gens, err := s.writeGenerations(ctx)
	if err != nil {
		return nil, err
	}
	calls := make([]call, 0, len(writes)*len(gens))
	for _, w := range writes {
		for g, n := range gens {
			args := append(w.args[:len(w.args):len(w.args)], strconv.Itoa(n))
			calls = append(calls, call{record: w.record, primary: g == 0, key: s.genPrefix(n) + w.key, args: args})
		}
	}
	if err := s.run(ctx, calls); err != nil {
		return nil, err
	}
	for _, c := range calls {
		res := &results[c.record]
		switch {
		case res.Outcome == sink.Failed:
		case c.err != nil:
			*res = sink.Result{Outcome: sink.Failed, Err: c.err}
		case c.primary:
			*res = sink.Result{Outcome: c.outcome}
		}
	}
	return results, nil
}

// call is one script call: one record in one generation.
type call struct {
	record  int
	primary bool // to the live generation (a Sink from At: its own)
	key     string
	args    []any

	outcome sink.Outcome
	err     error // a permanent one
}

// scriptArgs are the write script's arguments for r but the last, the
// generation, which apply adds for each generation written.
func scriptArgs(r sink.Record) []any {
	deleted, state := "0", string(r.Doc)
	if r.Deleted {
		deleted, state = "1", ""
	}
	return []any{strconv.FormatInt(r.Version, 10), deleted, state, r.UpdatedAt.UTC().Format(updatedAtLayout)}
}

// writeGenerations returns the generations a Write goes to, the live one
// first.
func (s *Sink) writeGenerations(ctx context.Context) ([]int, error) {
	if s.fixed {
		if s.gen < 1 {
			return nil, fmt.Errorf("redis sink: at %d: %w", s.gen, ErrBadGeneration)
		}
		return []int{s.gen}, nil
	}
	live, building, err := s.Generations(ctx)
	if err != nil {
		return nil, err
	}
	if building != 0 && building != live {
		return []int{live, building}, nil
	}
	return []int{live}, nil
}

// run makes every call in one pipeline, reloading the script and running
// again the calls that found it missing (Redis restarted or SCRIPT FLUSH).
// It returns an error when the batch as a whole failed.
func (s *Sink) run(ctx context.Context, calls []call) error {
	pending := make([]*call, len(calls))
	for i := range calls {
		pending[i] = &calls[i]
	}
	for attempt := 0; len(pending) > 0; attempt++ {
		if attempt > 0 {
			if attempt > 1 {
				return fmt.Errorf("redis sink: the write script is still missing after reloading it: %w", redis.ErrNoScript)
			}
			s.log.Warn("redis lost the write script (restarted or flushed?), reloading it", "calls", len(pending))
			if err := s.scripts.write.Load(ctx, s.client).Err(); err != nil {
				return fmt.Errorf("redis sink: reloading the write script: %w", err)
			}
		}
		var err error
		if pending, err = s.pipeline(ctx, pending); err != nil {
			return err
		}
	}
	return nil
}

// pipeline makes calls in one pipeline and returns those that found no
// script.
func (s *Sink) pipeline(ctx context.Context, calls []*call) ([]*call, error) {
	pipe := s.client.Pipeline()
	cmds := make([]*redis.Cmd, len(calls))
	for i, c := range calls {
		cmds[i] = pipe.EvalSha(ctx, s.scripts.write.Hash(), []string{c.key}, c.args...)
	}
	// Exec's error is one of the commands'; each is looked at below.
	_, _ = pipe.Exec(ctx)
	var again []*call
	for i, c := range calls {
		code, err := cmds[i].Int64()
		switch classify(err) {
		case answered:
			if c.outcome, err = outcomeOf(code); err != nil {
				return nil, fmt.Errorf("redis sink: %s: %w", c.key, err)
			}
		case noScript:
			again = append(again, c)
		case refused:
			c.outcome, c.err = sink.Failed, sink.Permanent(fmt.Errorf("redis sink: %s: %w: %w", c.key, ErrForeignValue, err))
		default:
			return nil, fmt.Errorf("redis sink: writing %d keys: %w", len(calls), err)
		}
	}
	return again, nil
}

func outcomeOf(code int64) (sink.Outcome, error) {
	switch code {
	case wrote, equal:
		return sink.Applied, nil
	case stale:
		return sink.Stale, nil
	}
	return 0, fmt.Errorf("the write script answered %d", code)
}

// verdict is what an error from a script call means for its record.
type verdict uint8

const (
	answered  verdict = iota // no error: the script's answer says what became of the record
	noScript                 // the script is not loaded: load it, call again
	refused                  // the key holds a value not ours: permanent for this record
	transient                // the batch failed (network, LOADING, BUSY, READONLY, ...)
)

// classify sorts a script call's error. Everything that is not about the
// one record's key (connection errors, timeouts, LOADING, BUSY, TRYAGAIN,
// CLUSTERDOWN, MASTERDOWN, READONLY, OOM, and any error not known here) is
// transient: the runner retries the batch, which is safe to repeat.
func classify(err error) verdict {
	var rerr redis.Error
	switch {
	case err == nil:
		return answered
	case !errors.As(err, &rerr):
		return transient
	case redis.HasErrorPrefix(err, "NOSCRIPT"):
		return noScript
	// Redis before 7 wraps errors raised inside a script in its own text,
	// so the codes are looked for anywhere in it.
	case isWrongType(err), strings.Contains(err.Error(), "FOREIGN "):
		return refused
	}
	return transient
}

func isWrongType(err error) bool {
	var rerr redis.Error
	return errors.As(err, &rerr) && strings.Contains(err.Error(), "WRONGTYPE")
}

// await calls f and returns its answer, or ctx's error as soon as ctx ends:
// go-redis bounds a call by its context's deadline and its own timeouts,
// but does not stop one when its context is canceled. f goes on until
// those timeouts end it; its answer is then dropped.
func await[T any](ctx context.Context, f func(context.Context) (T, error)) (T, error) {
	type answer struct {
		v   T
		err error
	}
	done := make(chan answer, 1)
	go func() {
		v, err := f(ctx)
		done <- answer{v, err}
	}()
	select {
	case a := <-done:
		return a.v, a.err
	case <-ctx.Done():
		var zero T
		return zero, fmt.Errorf("redis sink: %w", context.Cause(ctx))
	}
}
