package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/productstream/productstream/config"
	"github.com/productstream/productstream/schemas"
	"github.com/productstream/productstream/schemas/schemastest"
	"github.com/productstream/productstream/sink"
	"github.com/productstream/productstream/sink/sinktest"
)

// changeSerde is a Serde with the change schema registered, on an
// in-process registry.
func changeSerde(t *testing.T) *schemas.Serde {
	t.Helper()
	return schemastest.Serde(t, map[schemas.Kind][]string{schemas.KindChange: {"changes"}})
}

// changeRecord is c as the runner in history mode hands it to the sink:
// the change rendered as JSON, the offset as the version.
func changeRecord(t *testing.T, serde *schemas.Serde, c schemas.Change, offset int64) sink.Record {
	t.Helper()
	b, err := serde.EncodeChange(&c)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := serde.DecodeJSON(context.Background(), b)
	if err != nil {
		t.Fatal(err)
	}
	return sink.Record{Key: c.Key(), Namespace: c.Namespace, ID: c.ProductID, Version: offset,
		Deleted: c.Deleted, Doc: doc, UpdatedAt: c.ReceivedAt}
}

// priceChange is a change of ns:<id>'s price.
func priceChange(eventID, id, price string, at time.Time) schemas.Change {
	return schemas.Change{EventID: eventID, Source: "shop", Provider: "lisa", Namespace: "ns",
		EventType: "product.updated", ProductID: id, ReceivedAt: at, OccurredAt: at.Add(-time.Second),
		Fields: schemas.Fields{Price: &price}, Raw: `{"price":"` + price + `"}`}
}

// openHistory returns a history sink on table, dropping its table when the
// test ends.
func openHistory(t *testing.T, dsn, table string) *History {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	h, err := NewHistory(ctx, config.SinkPostgres{DSN: dsn, Table: table}, testLogger(t))
	if err != nil {
		t.Fatalf("NewHistory: %v", err)
	}
	t.Cleanup(func() { _ = h.Close() })
	conn := dbConn(t)
	t.Cleanup(func() {
		if _, err := conn.Exec(context.Background(), "DROP TABLE IF EXISTS "+ident(table+historySuffix)); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return h
}

// historyRow is one row of a history table, as the test reads it.
type historyRow struct {
	EventID, Key, Namespace, ProductID string
	Version                            int64
	Deleted                            bool
	EventType, Source                  *string
	ReceivedAt, OccurredAt             *time.Time
	Fields, Change                     *string
}

// historyRows reads every row of key in table, by version.
func historyRows(t *testing.T, conn *pgx.Conn, table, key string) []historyRow {
	t.Helper()
	rows, err := conn.Query(context.Background(), `SELECT event_id, key, namespace, product_id, version, deleted,
		event_type, source, received_at, occurred_at, fields::text, change::text
		FROM `+ident(table)+` WHERE key = $1 ORDER BY version`, key)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowToStructByPos[historyRow])
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// The history keeps every change of a key, in order, once per event id:
// a duplicate in the batch, in a later batch or a repeated batch is
// Applied and ignored; Held is the key's latest change.
func TestHistoryKeepsEveryChangeOncePerEventID(t *testing.T) {
	dsn := sinktest.StartBackend(t, "postgres")
	serde := changeSerde(t)
	table := uniqueTable(t)
	conn := dbConn(t)
	ctx := context.Background()

	// Several processes creating the table at once all succeed.
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Go(func() {
			h, err := NewHistory(ctx, config.SinkPostgres{DSN: dsn, Table: table}, testLogger(t))
			if err == nil {
				err = h.Close()
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent NewHistory: %v", err)
		}
	}
	h := openHistory(t, dsn, table)
	hist := table + historySuffix
	rows, _ := conn.Query(ctx, `SELECT column_name || ' ' || data_type || ' ' || is_nullable
		FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position`, hist)
	cols, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	want := "event_id text NO, key text NO, namespace text NO, product_id text NO, version bigint NO, deleted boolean NO, " +
		"event_type text YES, source text YES, received_at timestamp with time zone YES, occurred_at timestamp with time zone YES, " +
		"fields jsonb YES, change jsonb YES"
	if got := strings.Join(cols, ", "); got != want {
		t.Fatalf("columns\n %s\nwant\n %s", got, want)
	}
	var indexDef string
	if err := conn.QueryRow(ctx, "SELECT indexdef FROM pg_indexes WHERE tablename = $1 AND indexname = $2",
		hist, hist+"_key_version").Scan(&indexDef); err != nil || !strings.HasSuffix(indexDef, "(key, version)") {
		t.Fatalf("index on (key, version): %q, %v", indexDef, err)
	}
	if _, ok := any(h).(sink.Generations); ok {
		t.Fatal("a history sink claims generations")
	}

	at := time.UnixMilli(1_700_000_000_123).UTC()
	a1 := changeRecord(t, serde, priceChange("e1", "a", "1.00", at), 10)
	a2 := changeRecord(t, serde, priceChange("e2", "a", "2.00", at.Add(time.Minute)), 11)
	b1 := changeRecord(t, serde, priceChange("e3", "b", "5.00", at), 12)
	a1again := changeRecord(t, serde, priceChange("e1", "a", "1.00", at), 13) // redelivered
	a3 := changeRecord(t, serde, priceChange("e4", "a", "3.00", at.Add(2*time.Minute)), 14)
	batch := []sink.Record{a1, a2, b1, a1again, a3}
	expectOutcomes(t, write(t, h, batch...), sink.Applied, sink.Applied, sink.Applied, sink.Applied, sink.Applied)
	// Repeating the batch (a retry, a crash before the commit) adds nothing.
	expectOutcomes(t, write(t, h, batch...), sink.Applied, sink.Applied, sink.Applied, sink.Applied, sink.Applied)
	del := changeRecord(t, serde, schemas.Change{EventID: "e5", Source: "shop", Provider: "lisa", Namespace: "ns",
		EventType: "product.deleted", ProductID: "a", Deleted: true, ReceivedAt: at.Add(3 * time.Minute)}, 20)
	expectOutcomes(t, write(t, h, a2, del), sink.Applied, sink.Applied)

	got := historyRows(t, conn, hist, "ns:a")
	var ids []string
	for _, r := range got {
		ids = append(ids, r.EventID)
	}
	if strings.Join(ids, " ") != "e1 e2 e4 e5" {
		t.Fatalf("ns:a's history is %v, want e1 e2 e4 e5 in order", ids)
	}
	first := got[0]
	if first.Version != 10 || first.Deleted || first.Namespace != "ns" || first.ProductID != "a" ||
		*first.EventType != "product.updated" || *first.Source != "shop" ||
		!first.ReceivedAt.Equal(at) || !first.OccurredAt.Equal(at.Add(-time.Second)) {
		t.Errorf("the first change's row: %+v", first)
	}
	if !sinktest.SameJSON(json.RawMessage(*first.Fields), json.RawMessage(`{"price":"1.00"}`)) {
		t.Errorf("fields %s, want the price alone (nulls removed)", *first.Fields)
	}
	if !sinktest.SameJSON(json.RawMessage(*first.Change), a1.Doc) {
		t.Errorf("change %s, want the whole change %s", *first.Change, a1.Doc)
	}
	last := got[3]
	if !last.Deleted || last.Version != 20 || last.OccurredAt != nil || *last.Fields != "{}" || last.Change == nil {
		t.Errorf("the delete's row: %+v", last)
	}
	if n := count(t, conn, hist); n != 5 {
		t.Fatalf("the history holds %d rows, want 5 (4 of ns:a, 1 of ns:b)", n)
	}

	held, ok, err := h.Held(ctx, "ns:a")
	if err != nil || !ok || held.Version != 20 || !held.Deleted || held.Doc != nil {
		t.Fatalf("Held(ns:a) = %+v, %v, %v; want the delete at version 20", held, ok, err)
	}
	held, ok, err = h.Held(ctx, "ns:b")
	if err != nil || !ok || held.Version != 12 || held.Deleted || !sinktest.SameJSON(held.Doc, b1.Doc) {
		t.Fatalf("Held(ns:b) = %+v, %v, %v; want version 12 with its change", held, ok, err)
	}
	if _, ok, err := h.Held(ctx, "ns:none"); ok || err != nil {
		t.Fatalf("Held of a key never written = %v, %v; want not found", ok, err)
	}
}

// Records that are no change, and changes the database refuses, fail alone
// with a permanent error; the rest of the batch is written.
func TestHistoryRefusedRecordsArePermanent(t *testing.T) {
	dsn := sinktest.StartBackend(t, "postgres")
	serde := changeSerde(t)
	h := openHistory(t, dsn, uniqueTable(t))
	at := time.UnixMilli(1_700_000_000_000)
	good1 := changeRecord(t, serde, priceChange("g1", "1", "1.00", at), 1)
	good2 := changeRecord(t, serde, priceChange("g2", "2", "2.00", at), 2)
	nul := changeRecord(t, serde, priceChange("nul", "3", "3.00", at), 3)
	nul.Doc = json.RawMessage(strings.Replace(string(nul.Doc), `"raw":"`, `"raw":"bad\u0000`, 1))
	far := changeRecord(t, serde, priceChange("far", "4", "4.00", at), 4)
	far.Doc = json.RawMessage(strings.Replace(string(far.Doc), `"received_at":1700000000000`, `"received_at":9000000000000000000`, 1))
	noID := changeRecord(t, serde, priceChange("", "5", "5.00", at), 5)
	tombstone := sink.Record{Key: "ns:6", Namespace: "ns", ID: "6", Version: 6, Deleted: true}
	notJSON := good1
	notJSON.Key, notJSON.Doc = "ns:7", json.RawMessage(`{"event_id":`)

	batch := []sink.Record{good1, nul, noID, far, tombstone, notJSON, good2}
	res := write(t, h, batch...)
	expectOutcomes(t, res, sink.Applied, sink.Failed, sink.Failed, sink.Failed, sink.Failed, sink.Failed, sink.Applied)
	for i, code := range map[int]string{1: "22P05", 3: "22008"} {
		var pgErr *pgconn.PgError
		if !sink.IsPermanent(res[i].Err) || !errors.As(res[i].Err, &pgErr) || pgErr.Code != code {
			t.Errorf("record %d: error %v, want a permanent SQLSTATE %s", i, res[i].Err, code)
		}
	}
	for _, i := range []int{2, 4, 5} {
		if !sink.IsPermanent(res[i].Err) || !errors.Is(res[i].Err, ErrNotAChange) {
			t.Errorf("record %d: error %v, want a permanent ErrNotAChange", i, res[i].Err)
		}
	}
	conn := dbConn(t)
	if n := count(t, conn, h.table); n != 2 {
		t.Fatalf("the history holds %d rows, want the 2 good changes", n)
	}
	// A batch of the poison alone fails it alone too.
	expectOutcomes(t, write(t, h, nul), sink.Failed)
}
