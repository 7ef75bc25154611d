package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/productstream/productstream/config"
	"github.com/productstream/productstream/sink"
)

// ErrNotAChange surfaces, wrapped in a permanent error, in the Result of a
// History.Write record whose Doc is not a change carrying an event_id (a
// tombstone, a value of another schema).
var ErrNotAChange = errors.New("not a change with an event_id")

// historySuffix names a sink's history table: <table>_history.
const historySuffix = "_history"

// createHistory is the DDL of a history table; %s is its quoted name.
const createHistory = `CREATE TABLE IF NOT EXISTS %s (
	event_id    text PRIMARY KEY,
	key         text NOT NULL,
	namespace   text NOT NULL,
	product_id  text NOT NULL,
	version     bigint NOT NULL,
	deleted     boolean NOT NULL,
	event_type  text,
	source      text,
	received_at timestamptz,
	occurred_at timestamptz,
	fields      jsonb,
	change      jsonb
)`

// createHistoryIndex indexes a history table (second %s) by key and
// version, for a product's history in order and for Held; the first %s is
// the index's name.
const createHistoryIndex = `CREATE INDEX IF NOT EXISTS %s ON %s (key, version)`

// History writes a changes topic to the append-only table <table>_history:
// one row per change, keyed by its event_id, what analytics query for a
// product's price history. Nothing is ever updated or removed: a change
// whose event_id the table already holds (a provider's redelivery, a
// repeated batch) is ignored.
//
// It takes the batches of a runner in history mode (sink.Config.History):
// every record of the topic, several of one key among them, each with its
// offset as its Version and the change, as schemas.Serde.DecodeJSON renders
// it, as its Doc (kept for a change that deletes too). It implements
// sink.Sink and sink.Reader; it keeps no generations, so a rebuild refuses
// it (sink.ErrNoGenerations).
type History struct {
	pool  *pgxpool.Pool
	table string // <table>_history
	log   *slog.Logger
}

// NewHistory connects to cfg.DSN and creates the table cfg.Table+"_history"
// and its (key, version) index if they are missing. It is safe to call from
// several processes at once.
func NewHistory(ctx context.Context, cfg config.SinkPostgres, log *slog.Logger) (*History, error) {
	index := historySuffix + "_key_version"
	if cfg.Table == "" || len(cfg.Table)+len(index) > maxIdent {
		return nil, fmt.Errorf("postgres sink: table %q must be 1 to %d bytes long", cfg.Table, maxIdent-len(index))
	}
	pool, user, err := openPool(ctx, cfg)
	if err != nil {
		return nil, err
	}
	h := &History{pool: pool, table: cfg.Table + historySuffix, log: log}
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", lockKey(h.table)); err != nil {
			return fmt.Errorf("locking: %w", err)
		}
		if _, err := tx.Exec(ctx, fmt.Sprintf(createHistory, ident(h.table))); err != nil {
			return fmt.Errorf("creating %s: %w", h.table, err)
		}
		if _, err := tx.Exec(ctx, fmt.Sprintf(createHistoryIndex, ident(cfg.Table+index), ident(h.table))); err != nil {
			return fmt.Errorf("indexing %s: %w", h.table, err)
		}
		return nil
	})
	if err != nil {
		pool.Close()
		return nil, connectError(h.table, user, err)
	}
	log.Info("postgres history sink ready", "table", h.table)
	return h, nil
}

// Close closes the connection pool.
func (h *History) Close() error {
	h.pool.Close()
	return nil
}

// change is a record with what the history table's columns take from its
// change.
type change struct {
	rec        sink.Record
	eventID    string
	eventType  *string
	source     *string
	receivedAt *int64 // milliseconds since the epoch
	occurredAt *int64
}

// changeOf reads the columns of rec's change. The timestamps are left as
// milliseconds for the database to convert, so one out of its range is
// refused as data, like any other.
func changeOf(rec sink.Record) (change, error) {
	if rec.Doc == nil {
		return change{}, fmt.Errorf("%w: the record has no value", ErrNotAChange)
	}
	var doc struct {
		EventID    *string `json:"event_id"`
		EventType  *string `json:"event_type"`
		Source     *string `json:"source"`
		ReceivedAt *int64  `json:"received_at"`
		OccurredAt *int64  `json:"occurred_at"`
	}
	if err := json.Unmarshal(rec.Doc, &doc); err != nil {
		return change{}, fmt.Errorf("%w: %w", ErrNotAChange, err)
	}
	if doc.EventID == nil || *doc.EventID == "" {
		return change{}, fmt.Errorf("%w: the event_id is missing", ErrNotAChange)
	}
	return change{rec: rec, eventID: *doc.EventID, eventType: doc.EventType, source: doc.Source,
		receivedAt: doc.ReceivedAt, occurredAt: doc.OccurredAt}, nil
}

// insertHistorySQL is the one statement that writes a batch to a history
// table. Rows are inserted in event_id order, so two writers of one table
// (a partition's old and new owner during a rebalance) lock event ids in
// the same order and do not deadlock; of two changes of one event_id in a
// batch, the first is kept.
func insertHistorySQL(table string) string {
	return `INSERT INTO ` + ident(table) + ` (event_id, key, namespace, product_id, version, deleted,
	event_type, source, received_at, occurred_at, fields, change)
SELECT i.event_id, i.key, i.namespace, i.product_id, i.version, i.deleted, i.event_type, i.source,
	timestamptz 'epoch' + i.received_ms * interval '1 millisecond',
	timestamptz 'epoch' + i.occurred_ms * interval '1 millisecond',
	jsonb_strip_nulls(c.doc -> 'fields'), c.doc
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::boolean[],
		$7::text[], $8::text[], $9::bigint[], $10::bigint[], $11::text[])
	WITH ORDINALITY AS i(event_id, key, namespace, product_id, version, deleted,
		event_type, source, received_ms, occurred_ms, change, ord)
	CROSS JOIN LATERAL (SELECT i.change::jsonb AS doc) AS c
ORDER BY i.event_id, i.ord
ON CONFLICT (event_id) DO NOTHING`
}

// Write inserts the changes of batch into the history table in one
// statement (INSERT ... SELECT FROM unnest(...) ON CONFLICT (event_id) DO
// NOTHING). Every change inserted or already held (the same event_id: a
// redelivery, a repeated batch) is Applied; the first write of an event_id
// wins.
//
// A record that is not a change with an event_id is Failed with a permanent
// ErrNotAChange. A statement the database refuses for a record's data (a
// \u0000 jsonb rejects, a timestamp out of range) is written again one
// record per statement, as Sink.Write does: the refused records are Failed
// with a permanent error and the others applied. Anything else fails the
// whole batch with the returned error, and repeating it is harmless.
func (h *History) Write(ctx context.Context, batch []sink.Record) ([]sink.Result, error) {
	res := make([]sink.Result, len(batch))
	changes := make([]change, 0, len(batch))
	at := make([]int, 0, len(batch)) // the batch index of each of changes
	for i, rec := range batch {
		c, err := changeOf(rec)
		if err != nil {
			res[i] = sink.Result{Outcome: sink.Failed,
				Err: sink.Permanent(fmt.Errorf("postgres sink %q: record %q at version %d: %w", h.table, rec.Key, rec.Version, err))}
			continue
		}
		changes, at = append(changes, c), append(at, i)
	}
	if len(changes) == 0 {
		return res, nil
	}
	written, err := narrowed(ctx, h.log, h.table, changes, func(c change) string { return c.rec.Key }, h.insert)
	if err != nil {
		return nil, err
	}
	for j, r := range written {
		res[at[j]] = r
	}
	return res, nil
}

// insert writes changes in one statement; all are Applied when it succeeds.
func (h *History) insert(ctx context.Context, changes []change) ([]sink.Result, error) {
	n := len(changes)
	var (
		ids, keys, namespaces, products = make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		versions                        = make([]int64, n)
		deleted                         = make([]bool, n)
		types, sources                  = make([]*string, n), make([]*string, n)
		received, occurred              = make([]*int64, n), make([]*int64, n)
		docs                            = make([]string, n)
	)
	for i, c := range changes {
		ids[i], keys[i], namespaces[i], products[i] = c.eventID, c.rec.Key, c.rec.Namespace, c.rec.ID
		versions[i], deleted[i] = c.rec.Version, c.rec.Deleted
		types[i], sources[i], received[i], occurred[i] = c.eventType, c.source, c.receivedAt, c.occurredAt
		docs[i] = string(c.rec.Doc)
	}
	if _, err := h.pool.Exec(ctx, insertHistorySQL(h.table),
		ids, keys, namespaces, products, versions, deleted, types, sources, received, occurred, docs); err != nil {
		return nil, err
	}
	res := make([]sink.Result, n)
	for i := range res {
		res[i] = sink.Result{Outcome: sink.Applied}
	}
	return res, nil
}

// Held returns key's latest change in the history (the highest version):
// its version, whether it deletes, and the change itself unless it does.
func (h *History) Held(ctx context.Context, key string) (sink.Held, bool, error) {
	var (
		held sink.Held
		doc  *string
	)
	err := h.pool.QueryRow(ctx, "SELECT version, deleted, change::text FROM "+ident(h.table)+
		" WHERE key = $1 ORDER BY version DESC LIMIT 1", key).Scan(&held.Version, &held.Deleted, &doc)
	if errors.Is(err, pgx.ErrNoRows) {
		return sink.Held{}, false, nil
	}
	if err != nil {
		return sink.Held{}, false, fmt.Errorf("postgres sink %q: reading %q: %w", h.table, key, err)
	}
	if doc != nil && !held.Deleted {
		held.Doc = json.RawMessage(*doc)
	}
	return held, true, nil
}
