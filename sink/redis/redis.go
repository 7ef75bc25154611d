// Package redis is the sink that keeps one Redis hash per record key.
//
// # Layout
//
// With the key prefix P (sinks[].redis.key_prefix, default "product:"),
// generation 1 keeps record key K in the hash P+K and generation N > 1 in
// the hash P+"g"+N+":"+K. Every hash has the fields
//
//	version     the record's version, in decimal
//	deleted     "1" for a deleted marker, "0" otherwise
//	state       the record's value as JSON ("" when deleted)
//	updated_at  when the processor produced it, RFC 3339 with milliseconds
//	generation  the generation the hash belongs to, in decimal
//
// The pointer hash P+"@generations" says which generation readers see:
//
//	live         the live generation's number
//	live_prefix  the prefix readers put before a record key
//	building     the generation being built, 0 when none
//
// A reader reads live_prefix, then the hash live_prefix+K, and treats a
// hash with deleted = "1" as absent. Switching generations rewrites the
// pointer in one script, so a reader sees either the old live_prefix or
// the new one, and both generations are complete at that moment.
//
// Generation 1 shares its prefix with the others, so a key's name does not
// say its generation: generation 1's namespace "g2" (key P+"g2:7" for id 7)
// is spelt under generation 2's prefix P+"g2:". The generation field does
// say it, and Drop goes by it: dropping a generation deletes only the
// hashes whose generation field is that generation's, checked and unlinked
// in one script per key. Any namespace may be used. Should a record key of
// one generation spell exactly another's hash (namespace "g2", id "ns:7" in
// generation 1 and key "ns:7" in generation 2), the hash stays with the
// generation that wrote it first, and the other's record fails with
// ErrForeignValue. Hashes written before they carried a generation field
// are taken by Drop(1) unless their key is shaped like another
// generation's (P+"g"+N+":"...), and by no other Drop.
//
// Two sinks whose prefixes nest (one a prefix of the other) must not share
// a database: dropping one's generation 1 would take the other's.
//
// # Writes
//
// Records are applied by a Lua script, one call per chunk of up to 200
// keys, the calls of a batch in one pipeline. For each key the script
// compares the version held (exactly, as decimal strings) and writes all
// five fields only when the record's is higher. A call touches all its
// chunk's keys, which Redis Cluster allows a script only when they hash to
// one slot: the sink runs against a single Redis server, the one at addr,
// or a cluster only with keys of one slot, which it does not arrange. A
// key holding something this sink did not write (a string, a hash without
// a decimal version) or another generation's hash fails its record with a
// permanent error; the rest of the batch, the rest of its chunk included,
// applies. When Redis has lost the script (a restart, SCRIPT FLUSH, even
// between two calls of a batch) the sink loads it again and makes the
// calls that found it missing once more.
package redis

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/productstream/productstream/config"
	"github.com/productstream/productstream/sink"
)

// Errors the sink returns.
var (
	// ErrInvalidDoc is wrapped (as permanent) in the Result of a record that
	// is not deleted but has no Doc; Write refuses it before sending
	// anything. A Doc is stored as it is: it is JSON by sink.Record's
	// contract, and checking 2 KB of it again per record cost a fifth of
	// the sink's throughput.
	ErrInvalidDoc = errors.New("record has no value")
	// ErrForeignValue is wrapped (as permanent) in the Result of a record
	// whose key holds a value this sink did not write: not a hash (Redis's
	// WRONGTYPE), a hash without a decimal version, or another generation's
	// hash (see the package doc). Held returns it too.
	ErrForeignValue = errors.New("key holds a value this sink did not write")
	// ErrNoPointer is returned by Write, Held and the generation methods when
	// the pointer hash <key_prefix>@generations is missing (someone deleted
	// it after New created it).
	ErrNoPointer = errors.New("the generations pointer is missing")
	// ErrLiveGeneration is returned by Begin and Drop given the live
	// generation.
	ErrLiveGeneration = errors.New("generation is live")
	// ErrBuilding is returned by Begin while another generation is being
	// built: Switch to it or Drop it first.
	ErrBuilding = errors.New("another generation is being built")
	// ErrBadGeneration is returned by Begin, Switch and Drop given a
	// generation number below 1.
	ErrBadGeneration = errors.New("generation numbers start at 1")
)

// Timeouts of the client. Every call also passes the caller's context, whose
// deadline go-redis honours; Write also returns as soon as its context is
// canceled.
const (
	dialTimeout = 5 * time.Second
	ioTimeout   = 5 * time.Second
)

// Sink writes records to Redis hashes; see the package doc for the layout.
// It implements sink.Sink, sink.Reader and sink.Generations. A Sink is safe
// for concurrent use.
type Sink struct {
	*shared
	// fixed is set for a Sink from At: it writes and reads generation gen
	// only. The Sink from New follows the pointer.
	fixed bool
	gen   int
}

// shared is what the Sink from New and those from At have in common.
type shared struct {
	client  *redis.Client
	prefix  string // the key prefix
	pointer string // the pointer hash's key
	log     *slog.Logger
	scripts scripts
}

var (
	_ sink.Sink        = (*Sink)(nil)
	_ sink.Reader      = (*Sink)(nil)
	_ sink.Generations = (*Sink)(nil)
)

// New connects to the Redis at cfg.Addr, loads the write script and creates
// the pointer hash for generation 1 if there is none. It fails when Redis
// cannot be reached or refuses the credentials.
func New(ctx context.Context, cfg config.SinkRedis, log *slog.Logger) (*Sink, error) {
	if cfg.Addr == "" {
		return nil, errors.New("redis sink: addr is required")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	prefix := cfg.KeyPrefix
	if prefix == "" {
		prefix = config.DefaultRedisKeyPrefix
	}
	client := redis.NewClient(&redis.Options{
		Addr:     cfg.Addr,
		Username: cfg.Username,
		Password: cfg.Password,
		DB:       cfg.DB,
		// One try per dial and one retry per command (a pooled connection
		// the server closed): the runner retries a failed batch itself, with
		// backoff, so go-redis must not hold Write up with retries of its own.
		DialTimeout:           dialTimeout,
		DialerRetries:         1,
		ReadTimeout:           ioTimeout,
		WriteTimeout:          ioTimeout,
		MaxRetries:            1,
		ContextTimeoutEnabled: true,
	})
	s := &Sink{shared: &shared{
		client:  client,
		prefix:  prefix,
		pointer: prefix + "@generations",
		log:     log.With("backend", "redis", "key_prefix", prefix),
		scripts: newScripts(),
	}}
	if err := s.prepare(ctx, cfg); err != nil {
		_ = client.Close()
		return nil, err
	}
	return s, nil
}

// prepare checks the connection, loads the write script and creates the
// pointer hash if need be.
func (s *Sink) prepare(ctx context.Context, cfg config.SinkRedis) error {
	if err := s.client.Ping(ctx).Err(); err != nil {
		if redis.IsAuthError(err) || redis.HasErrorPrefix(err, "WRONGPASS") {
			// The server's answer names no password; neither do we.
			return fmt.Errorf("redis sink: authentication failed at %s as user %q: %w", cfg.Addr, userName(cfg.Username), err)
		}
		return fmt.Errorf("redis sink: cannot reach %s: %w", cfg.Addr, err)
	}
	if err := s.scripts.write.Load(ctx, s.client).Err(); err != nil {
		return fmt.Errorf("redis sink: loading the write script at %s: %w", cfg.Addr, err)
	}
	created, err := s.scripts.init.Run(ctx, s.client, []string{s.pointer}, s.genPrefix(1)).Int()
	if err != nil {
		return fmt.Errorf("redis sink: creating the generations pointer %q: %w", s.pointer, err)
	}
	live, building, err := s.Generations(ctx)
	if err != nil {
		return err
	}
	s.log.Info("redis sink ready", "addr", cfg.Addr, "db", cfg.DB, "created", created == 1, "live", live, "building", building)
	return nil
}

func userName(u string) string {
	if u == "" {
		return "default"
	}
	return u
}

// Close closes the connections of a Sink from New; closing a Sink from At
// does nothing.
func (s *Sink) Close() error {
	if s.fixed {
		return nil
	}
	if err := s.client.Close(); err != nil && !errors.Is(err, redis.ErrClosed) {
		return fmt.Errorf("redis sink: close: %w", err)
	}
	return nil
}

// Held reads what the live generation (for a Sink from At: its generation)
// holds for key. A key holding something this sink did not write is an
// error wrapping ErrForeignValue.
func (s *Sink) Held(ctx context.Context, key string) (sink.Held, bool, error) {
	prefix, err := s.readPrefix(ctx)
	if err != nil {
		return sink.Held{}, false, err
	}
	fields, err := s.client.HGetAll(ctx, prefix+key).Result()
	if err != nil {
		if isWrongType(err) {
			return sink.Held{}, false, fmt.Errorf("redis sink: %q: %w: %w", prefix+key, ErrForeignValue, err)
		}
		return sink.Held{}, false, fmt.Errorf("redis sink: reading %q: %w", prefix+key, err)
	}
	if len(fields) == 0 {
		return sink.Held{}, false, nil
	}
	h, err := parseHash(fields)
	if err != nil {
		return sink.Held{}, false, fmt.Errorf("redis sink: %q: %w: %w", prefix+key, ErrForeignValue, err)
	}
	return h, true, nil
}

// parseHash reads the fields of a record's hash.
func parseHash(fields map[string]string) (sink.Held, error) {
	v, err := strconv.ParseInt(fields["version"], 10, 64)
	if err != nil {
		return sink.Held{}, fmt.Errorf("version %q is not a decimal integer", fields["version"])
	}
	h := sink.Held{Version: v}
	switch fields["deleted"] {
	case "1":
		h.Deleted = true
	case "0":
		h.Doc = []byte(fields["state"])
	default:
		return sink.Held{}, fmt.Errorf("deleted is %q, not 1 or 0", fields["deleted"])
	}
	return h, nil
}

// readPrefix returns the prefix of the generation Held reads.
func (s *Sink) readPrefix(ctx context.Context) (string, error) {
	if s.fixed {
		if s.gen < 1 {
			return "", fmt.Errorf("redis sink: at %d: %w", s.gen, ErrBadGeneration)
		}
		return s.genPrefix(s.gen), nil
	}
	p, err := s.client.HGet(ctx, s.pointer, "live_prefix").Result()
	if errors.Is(err, redis.Nil) {
		return "", fmt.Errorf("redis sink: %q: %w", s.pointer, ErrNoPointer)
	}
	if err != nil {
		return "", fmt.Errorf("redis sink: reading %q: %w", s.pointer, err)
	}
	return p, nil
}
