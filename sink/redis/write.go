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

// writeScript applies a chunk of records, each if it is newer than what its
// hash holds. KEYS are the hashes; ARGV holds five values per key, in the
// order of KEYS: version, deleted ("1"/"0"), state, updated_at and the
// generation written. It answers one value per key: 1 when it wrote, 0
// when the hash already holds the version (an applied no-op), -1 when it
// holds a higher one (stale), or an error reply when the key is not this
// sink's to write: WRONGTYPE for a value that is not a hash, FOREIGN for a
// hash this sink did not write. Its commands go through redis.pcall, so a
// WRONGTYPE answers for its key only; any other error (OOM, READONLY, ...)
// ends the call with that error, and the batch is tried again (writes
// before it in the chunk are safe to repeat).
//
// Versions are compared as decimal strings, so every int64 compares
// exactly (Lua's numbers are doubles). The held version's shape (canonical
// decimal) is checked only when it differs from the record's: one equal
// to the record's, which Go formatted, has it. A hash whose generation
// field names another generation is that generation's record (a key spelt
// alike in both, see the package doc) and is refused; a hash without one,
// written before hashes carried their generation, is taken over. HMGET
// alone tells a value that is not a hash (WRONGTYPE) and a hash with a
// version or a generation from a new key; only when it finds neither, as
// for a new key but also for a hash of someone else's, does EXISTS tell
// which.
const writeScript = `
if #ARGV ~= 5 * #KEYS then
  return redis.error_reply('ERR the write script takes 5 arguments per key, got ' .. #ARGV .. ' for ' .. #KEYS)
end

-- above tells whether the decimal a is greater than the decimal b, given
-- both canonical (no sign but '-', no leading zero) and different: by sign,
-- then by length, then digit by digit.
local function above(a, b)
  local na, nb = a:byte(1) == 45, b:byte(1) == 45 -- '-'
  if na ~= nb then return nb end
  local r
  if #a ~= #b then r = #a > #b else r = a > b end
  if na then return not r end
  return r
end

local answers = {}
for i = 1, #KEYS do
  local key, n = KEYS[i], 5 * i
  local version, generation = ARGV[n - 4], ARGV[n]
  local fields = redis.pcall('HMGET', key, 'version', 'generation')
  if fields.err then
    if not string.find(fields.err, 'WRONGTYPE', 1, true) then return fields end
    answers[i] = fields
  else
    local held, gen = fields[1], fields[2]
    local answer
    if gen and gen ~= generation then
      answer = redis.error_reply('FOREIGN the hash is generation ' .. gen .. "'s")
    elseif held then
      if held == version then
        answer = 0
      elseif held ~= '0' and not string.match(held, '^%-?[1-9]%d*$') then
        answer = redis.error_reply('FOREIGN the hash holds no decimal version')
      elseif above(held, version) then
        answer = -1
      end
    elseif gen or redis.call('EXISTS', key) == 1 then
      answer = redis.error_reply('FOREIGN the hash holds no version')
    end
    if answer == nil then
      answer = redis.pcall('HSET', key, 'version', version, 'deleted', ARGV[n - 3], 'state', ARGV[n - 2],
        'updated_at', ARGV[n - 1], 'generation', generation)
      if type(answer) == 'table' then return answer end
      answer = 1
    end
    answers[i] = answer
  end
end
return answers
`

// chunkKeys is the most keys one call of the write script is given; a
// batch is one pipeline of such calls. Each script call costs Redis a
// fixed amount besides its keys' work (dispatching it, setting up the Lua
// call, its KEYS and ARGV tables and its answer), which 200 keys make
// small, while Redis, which runs one script at a time, is held by one call
// only for about a millisecond (200 writes of a few kilobytes each).
const chunkKeys = 200

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
// of script calls per batch, each call for up to chunkKeys keys. The Result
// of a record written to two generations is the live one's, unless either
// failed.
func (s *Sink) Write(ctx context.Context, batch []sink.Record) ([]sink.Result, error) {
	if len(batch) == 0 {
		return nil, nil
	}
	// The records are read here, before await: once Write returns, the
	// caller may reuse batch while the network part still runs.
	results := make([]sink.Result, len(batch))
	var writes []write
	for i, r := range batch {
		if !r.Deleted && len(r.Doc) == 0 {
			results[i] = sink.Result{Outcome: sink.Failed,
				Err: sink.Permanent(fmt.Errorf("redis sink: %s version %d: %w", r.Key, r.Version, ErrInvalidDoc))}
			continue
		}
		writes = append(writes, newWrite(i, r))
	}
	return await(ctx, func(ctx context.Context) ([]sink.Result, error) {
		return s.apply(ctx, writes, results)
	})
}

// write is one record ready to send: the write script's values for it but
// the generation, which apply adds for each generation written.
type write struct {
	record int // its index in the batch
	key    string

	version, deleted, state, updatedAt string
}

func newWrite(i int, r sink.Record) write {
	deleted, state := "0", string(r.Doc)
	if r.Deleted {
		deleted, state = "1", ""
	}
	return write{record: i, key: r.Key, version: strconv.FormatInt(r.Version, 10), deleted: deleted, state: state,
		updatedAt: r.UpdatedAt.UTC().Format(updatedAtLayout)}
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
	genArgs := make([]string, len(gens))
	for g, n := range gens {
		genArgs[g] = strconv.Itoa(n)
	}
	calls := make([]call, 0, len(writes)*len(gens))
	for i := range writes {
		for g, n := range gens {
			calls = append(calls, call{w: &writes[i], primary: g == 0, key: s.genPrefix(n) + writes[i].key, gen: genArgs[g]})
		}
	}
	chunks := make([]chunk, 0, (len(calls)+chunkKeys-1)/chunkKeys)
	for start := 0; start < len(calls); start += chunkKeys {
		chunks = append(chunks, newChunk(calls[start:min(start+chunkKeys, len(calls))]))
	}
	if err := s.run(ctx, chunks); err != nil {
		return nil, err
	}
	for _, c := range calls {
		res := &results[c.w.record]
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

// call is one key of a script call: one record in one generation.
type call struct {
	w       *write
	primary bool // to the live generation (a Sink from At: its own)
	key     string
	gen     string // the generation written, in decimal

	outcome sink.Outcome
	err     error // a permanent one
}

// chunk is one script call: up to chunkKeys consecutive calls of a batch.
type chunk struct {
	calls []call
	keys  []string
	args  []any // five per key
}

func newChunk(calls []call) chunk {
	ch := chunk{calls: calls, keys: make([]string, len(calls)), args: make([]any, 0, 5*len(calls))}
	for i, c := range calls {
		ch.keys[i] = c.key
		ch.args = append(ch.args, c.w.version, c.w.deleted, c.w.state, c.w.updatedAt, c.gen)
	}
	return ch
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

// run makes every script call in one pipeline, loading the script again
// and making again the calls that found it missing (Redis restarted or
// SCRIPT FLUSH, perhaps between two calls of the pipeline). It returns an
// error when the batch as a whole failed.
func (s *Sink) run(ctx context.Context, chunks []chunk) error {
	pending := make([]*chunk, len(chunks))
	for i := range chunks {
		pending[i] = &chunks[i]
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

// pipeline makes the chunks' script calls in one pipeline and returns the
// chunks whose call found no script.
func (s *Sink) pipeline(ctx context.Context, chunks []*chunk) ([]*chunk, error) {
	pipe := s.client.Pipeline()
	cmds := make([]*redis.Cmd, len(chunks))
	for i, ch := range chunks {
		cmds[i] = pipe.EvalSha(ctx, s.scripts.write.Hash(), ch.keys, ch.args...)
	}
	// Exec's error is one of the commands'; each is looked at below.
	_, _ = pipe.Exec(ctx)
	var again []*chunk
	for i, ch := range chunks {
		answers, err := cmds[i].Slice()
		switch classify(err) {
		case answered:
			if err := ch.settle(answers); err != nil {
				return nil, err
			}
		case noScript:
			again = append(again, ch)
		default:
			// The script answers a key's refusal in that key's answer, so
			// an error of the whole call (even one that names WRONGTYPE) is
			// not about one record: the batch failed.
			return nil, fmt.Errorf("redis sink: writing %d keys: %w", len(ch.keys), err)
		}
	}
	return again, nil
}

// settle records the script's answer for each of the chunk's calls.
func (ch *chunk) settle(answers []any) error {
	if len(answers) != len(ch.calls) {
		return fmt.Errorf("redis sink: the write script answered %d values for %d keys", len(answers), len(ch.calls))
	}
	for i := range ch.calls {
		c := &ch.calls[i]
		switch a := answers[i].(type) {
		case int64:
			var err error
			if c.outcome, err = outcomeOf(a); err != nil {
				return fmt.Errorf("redis sink: %s: %w", c.key, err)
			}
		case error:
			if classify(a) != refused {
				return fmt.Errorf("redis sink: %s: the write script answered %w", c.key, a)
			}
			c.outcome, c.err = sink.Failed, sink.Permanent(fmt.Errorf("redis sink: %s: %w: %w", c.key, ErrForeignValue, a))
		default:
			return fmt.Errorf("redis sink: %s: the write script answered %v (%T)", c.key, a, a)
		}
	}
	return nil
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

// verdict is what an error from a script call, or for one of its keys,
// means for the records.
type verdict uint8

const (
	answered  verdict = iota // no error: the script's answer says what became of the record
	noScript                 // the script is not loaded: load it, call again
	refused                  // the key holds a value not ours: permanent for this record
	transient                // the batch failed (network, LOADING, BUSY, READONLY, ...)
)

// classify sorts a script call's error, or the error the write script
// answers for one of its keys. Everything that is not about the one key
// (connection errors, timeouts, LOADING, BUSY, TRYAGAIN, CLUSTERDOWN,
// MASTERDOWN, READONLY, OOM, and any error not known here) is transient:
// the runner retries the batch, which is safe to repeat.
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
