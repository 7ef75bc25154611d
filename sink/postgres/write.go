package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/productstream/productstream/sink"
)

// maxAttempts bounds how often one Write is aimed again because the
// generations changed under it.
const maxAttempts = 3

// upsertSQL is the one statement that writes a batch to table and says
// what became of each record: prev reads the versions held before the
// statement (all its parts see the same snapshot), written the keys the
// upsert inserted or updated. Rows are inserted in key order, so writers of
// one table (the live sink and a rebuild) lock keys in the same order and do
// not deadlock.
func upsertSQL(table string) string {
	t := ident(table)
	return `WITH input AS (
	SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::boolean[], $6::text[], $7::timestamptz[])
		WITH ORDINALITY AS i(key, namespace, product_id, version, deleted, state, updated_at, ord)
), prev AS (
	SELECT t.key, t.version FROM ` + t + ` AS t JOIN input ON input.key = t.key
), written AS (
	INSERT INTO ` + t + ` AS t (key, namespace, product_id, version, deleted, state, updated_at)
	SELECT key, namespace, product_id, version, deleted, state::jsonb, updated_at FROM input ORDER BY key
	ON CONFLICT (key) DO UPDATE SET namespace = EXCLUDED.namespace, product_id = EXCLUDED.product_id,
		version = EXCLUDED.version, deleted = EXCLUDED.deleted, state = EXCLUDED.state, updated_at = EXCLUDED.updated_at
	WHERE t.version < EXCLUDED.version
	RETURNING t.key
)
SELECT input.ord, written.key IS NOT NULL, prev.version
FROM input LEFT JOIN written ON written.key = input.key LEFT JOIN prev ON prev.key = input.key`
}

// columns is a batch as the upsert's parameter arrays.
type columns struct {
	keys, namespaces, ids []string
	versions              []int64
	deleted               []bool
	states                []*string // nil: a deleted marker
	updated               []time.Time
}

func columnsOf(recs []sink.Record) *columns {
	c := &columns{
		keys: make([]string, len(recs)), namespaces: make([]string, len(recs)), ids: make([]string, len(recs)),
		versions: make([]int64, len(recs)), deleted: make([]bool, len(recs)),
		states: make([]*string, len(recs)), updated: make([]time.Time, len(recs)),
	}
	now := time.Now()
	for i, r := range recs {
		c.keys[i], c.namespaces[i], c.ids[i] = r.Key, r.Namespace, r.ID
		c.versions[i], c.deleted[i], c.updated[i] = r.Version, r.Deleted, r.UpdatedAt
		if !r.Deleted {
			doc := string(r.Doc)
			c.states[i] = &doc
		}
		if r.UpdatedAt.IsZero() {
			c.updated[i] = now
		}
	}
	return c
}

func (c *columns) args() []any {
	return []any{c.keys, c.namespaces, c.ids, c.versions, c.deleted, c.states, c.updated}
}

// Write upserts batch into the live generation and the one being built, if
// any (a Sink returned by At: into its generation only), in one round trip.
// A record is Applied when written or when its version was already held,
// Stale when a higher one was.
//
// A statement the database refuses for a record's data (SQLSTATE classes
// 21, 22, 23, 54: a \u0000 or invalid JSON that jsonb rejects, a key too
// long for the index) is written again one record per statement: the
// refused records are Failed with a permanent error and the others applied.
// Anything else (connection failures, timeouts, classes 08, 40, 53, 57, 58
// such as too many connections or a shutdown) fails the whole batch with
// the returned error, and repeating the batch is harmless.
func (s *Sink) Write(ctx context.Context, batch []sink.Record) ([]sink.Result, error) {
	return narrowed(ctx, s.log, s.table, batch, func(r sink.Record) string { return r.Key }, s.apply)
}

// narrowed writes batch with apply in one go. When the database refuses the
// statement for a record's data (isDataError), it writes the batch again one
// record per statement: the refused records are Failed with a permanent
// error naming their key and the others get apply's outcome. Any other
// error fails the whole batch.
func narrowed[T any](ctx context.Context, log *slog.Logger, table string, batch []T, key func(T) string,
	apply func(context.Context, []T) ([]sink.Result, error)) ([]sink.Result, error) {
	if len(batch) == 0 {
		return []sink.Result{}, nil
	}
	res, err := apply(ctx, batch)
	if err == nil {
		return res, nil
	}
	if !isDataError(err) {
		return nil, fmt.Errorf("postgres sink %q: writing %d records: %w", table, len(batch), err)
	}
	if len(batch) > 1 {
		log.Warn("postgres sink: the database refuses a record of the batch; writing the batch one record at a time",
			"table", table, "records", len(batch), "sqlstate", sqlState(err))
	}
	res = make([]sink.Result, len(batch))
	for i := range batch {
		one := err
		if len(batch) > 1 {
			var r []sink.Result
			if r, one = apply(ctx, batch[i:i+1]); one == nil {
				res[i] = r[0]
				continue
			}
		}
		if !isDataError(one) {
			return nil, fmt.Errorf("postgres sink %q: writing record %q alone: %w", table, key(batch[i]), one)
		}
		res[i] = sink.Result{Outcome: sink.Failed,
			Err: sink.Permanent(fmt.Errorf("postgres sink %q: record %q refused: %w", table, key(batch[i]), one))}
	}
	return res, nil
}

// apply writes recs to the generations they are aimed at, aiming again
// while the metadata row read in the write says they changed.
func (s *Sink) apply(ctx context.Context, recs []sink.Record) ([]sink.Result, error) {
	cols := columnsOf(recs)
	for attempt := 1; ; attempt++ {
		aim := generations{live: s.fixed}
		if s.fixed == 0 {
			aim = s.cached()
		}
		seen, outs, err := s.send(ctx, aim, cols)
		switch {
		case err != nil && isUndefinedTable(err) && s.fixed != 0:
			return nil, fmt.Errorf("generation %d: %w: %w", s.fixed, ErrNoGeneration, err)
		case err != nil && isUndefinedTable(err) && attempt < maxAttempts:
			// A generation was dropped since the metadata was last read;
			// the whole write was rolled back.
			if _, _, err := s.Generations(ctx); err != nil {
				return nil, err
			}
			continue
		case err != nil:
			return nil, err
		case seen != aim:
			s.store(seen)
			s.log.Info("postgres sink: the generations changed; writing the batch to them",
				"table", s.table, "live", seen.live, "building", seen.building)
			if attempt < maxAttempts {
				continue
			}
			return nil, errors.New("the generations kept changing during the write")
		}
		return s.results(ctx, aim, cols, outs)
	}
}

// rowOutcome is what the upsert said of one record in one table.
type rowOutcome struct {
	written bool
	prev    *int64 // the version held before, nil: none
}

// send runs the upserts of cols into aim's targets in one pipeline (one
// round trip, one implicit transaction), after reading the metadata row
// when s follows it; seen is that row (aim for a Sink returned by At).
func (s *Sink) send(ctx context.Context, aim generations, cols *columns) (seen generations, outs [][]rowOutcome, err error) {
	b := &pgx.Batch{}
	if s.fixed == 0 {
		// FOR KEY SHARE lets writers run side by side, and makes Begin,
		// Switch and Drop (SELECT ... FOR UPDATE) wait for the writes in
		// flight, and those wait for them.
		b.Queue("SELECT live, building FROM "+ident(metaTable)+" WHERE name = $1 FOR KEY SHARE", s.table)
	}
	targets := aim.targets()
	for _, n := range targets {
		b.Queue(upsertSQL(s.genTable(n)), cols.args()...)
	}
	br := s.pool.SendBatch(ctx, b)
	defer func() {
		if cerr := br.Close(); err == nil && cerr != nil {
			seen, outs, err = generations{}, nil, cerr
		}
	}()
	seen = aim
	if s.fixed == 0 {
		if err := br.QueryRow().Scan(&seen.live, &seen.building); err != nil {
			if errors.Is(err, pgx.ErrNoRows) {
				err = fmt.Errorf("the row of %q in %s is missing", s.table, metaTable)
			}
			return generations{}, nil, err
		}
	}
	outs = make([][]rowOutcome, len(targets))
	for i := range targets {
		if outs[i], err = scanOutcomes(br, len(cols.keys)); err != nil {
			return generations{}, nil, err
		}
	}
	return seen, outs, nil
}

// scanOutcomes reads one upsert's answer: a row per record, by ordinal.
func scanOutcomes(br pgx.BatchResults, n int) ([]rowOutcome, error) {
	rows, err := br.Query()
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	outs := make([]rowOutcome, n)
	seen := 0
	for rows.Next() {
		var (
			ord int64
			o   rowOutcome
		)
		if err := rows.Scan(&ord, &o.written, &o.prev); err != nil {
			return nil, err
		}
		if ord < 1 || ord > int64(n) {
			return nil, fmt.Errorf("the upsert answered for record %d of %d", ord, n)
		}
		outs[ord-1] = o
		seen++
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if seen != n {
		return nil, fmt.Errorf("the upsert answered for %d records of %d", seen, n)
	}
	return outs, nil
}

// results turns the upserts' answers into one Result per record: the live
// target's outcome, unless a target failed.
//
// A record that was not written although the snapshot held no version of
// it, or a lower one, met a concurrent writer of the same key (the live sink
// and a rebuild both write the generation being built): the version held
// now says whether it is equal (Applied) or higher (Stale).
func (s *Sink) results(ctx context.Context, aim generations, cols *columns, outs [][]rowOutcome) ([]sink.Result, error) {
	res := make([]sink.Result, len(cols.keys))
	for t, n := range aim.targets() {
		var raced []int
		for i, o := range outs[t] {
			switch {
			case o.written || (o.prev != nil && *o.prev == cols.versions[i]):
				s.merge(&res[i], t, sink.Result{Outcome: sink.Applied})
			case o.prev != nil && *o.prev > cols.versions[i]:
				s.merge(&res[i], t, sink.Result{Outcome: sink.Stale})
			default:
				raced = append(raced, i)
			}
		}
		if len(raced) == 0 {
			continue
		}
		held, err := s.versions(ctx, n, cols, raced)
		if err != nil {
			return nil, err
		}
		for _, i := range raced {
			v, ok := held[cols.keys[i]]
			switch {
			case ok && v == cols.versions[i]:
				s.merge(&res[i], t, sink.Result{Outcome: sink.Applied})
			case ok && v > cols.versions[i]:
				s.merge(&res[i], t, sink.Result{Outcome: sink.Stale})
			default:
				// Not written, yet nothing as new is held: someone removed
				// the row meanwhile. Retrying the record settles it.
				s.merge(&res[i], t, sink.Result{Outcome: sink.Failed,
					Err: fmt.Errorf("postgres sink %q: generation %d holds no version as new as %d of %q after the write", s.table, n, cols.versions[i], cols.keys[i])})
			}
		}
	}
	return res, nil
}

// merge records target t's result r for a record: the first target's
// (the live one) counts unless a later one failed.
func (s *Sink) merge(into *sink.Result, t int, r sink.Result) {
	if t == 0 || (r.Outcome == sink.Failed && into.Outcome != sink.Failed) {
		*into = r
	}
}

// versions reads the versions generation n holds now for the keys of cols
// at idx.
func (s *Sink) versions(ctx context.Context, n int, cols *columns, idx []int) (map[string]int64, error) {
	keys := make([]string, len(idx))
	for j, i := range idx {
		keys[j] = cols.keys[i]
	}
	rows, err := s.pool.Query(ctx, "SELECT key, version FROM "+ident(s.genTable(n))+" WHERE key = ANY($1)", keys)
	if err != nil {
		return nil, fmt.Errorf("reading back %d versions: %w", len(keys), err)
	}
	held := make(map[string]int64, len(keys))
	var (
		k string
		v int64
	)
	_, err = pgx.ForEachRow(rows, []any{&k, &v}, func() error {
		held[k] = v
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading back %d versions: %w", len(keys), err)
	}
	return held, nil
}

// isDataError reports whether err is the database refusing a record's data
// (SQLSTATE classes 21 cardinality, 22 data exception, 23 integrity
// constraint, 54 program limit such as an index row too large): the same
// record will always be refused.
func isDataError(err error) bool {
	switch sqlClass(err) {
	case "21", "22", "23", "54":
		return true
	}
	return false
}

// isUndefinedTable reports whether err is a missing table (a generation
// dropped meanwhile).
func isUndefinedTable(err error) bool { return sqlState(err) == "42P01" }

// sqlState is err's SQLSTATE, "" when err does not come from the server.
func sqlState(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}

// sqlClass is the class (first two characters) of err's SQLSTATE.
func sqlClass(err error) string {
	if c := sqlState(err); len(c) == 5 {
		return c[:2]
	}
	return ""
}
