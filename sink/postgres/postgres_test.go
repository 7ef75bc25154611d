package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/productstream/productstream/config"
	"github.com/productstream/productstream/sink"
	"github.com/productstream/productstream/sink/sinktest"
)

func TestConformance(t *testing.T) {
	dsn := sinktest.StartBackend(t, "postgres")
	sinktest.Run(t, sinktest.Backend{
		Addr: hostPort(t, dsn),
		Open: func(t *testing.T, addr, target string) sink.Sink {
			return open(t, withHost(t, dsn, addr), target)
		},
		Held: func(t *testing.T, s sink.Sink, key string) (sink.Held, bool) {
			return heldDirect(t, dsn, s.(*Sink), key)
		},
		Poison: func(t *testing.T, _ sink.Sink, rec sink.Record) sink.Record {
			// jsonb refuses the NUL character (SQLSTATE 22P05).
			rec.Doc = json.RawMessage(`{"fields":{"title":"bad\u0000"}}`)
			return rec
		},
	})
}

// open returns a sink on table, dropping everything of table when the test
// ends.
func open(t *testing.T, dsn, table string) *Sink {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := New(ctx, config.SinkPostgres{DSN: dsn, Table: table}, testLogger(t))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	dropAfter(t, table)
	return s
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), nil))
}

// dropAfter removes table's generations, view and metadata row when the
// test ends, so the shared instance does not fill up.
func dropAfter(t *testing.T, table string) {
	dsn := sinktest.StartBackend(t, "postgres")
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Errorf("cleanup: %v", err)
			return
		}
		defer conn.Close(ctx)
		rows, _ := conn.Query(ctx, `SELECT tablename FROM pg_tables WHERE schemaname = current_schema()
			AND (tablename = $1 OR tablename LIKE $2)`, table, strings.ReplaceAll(table, "_", `\_`)+`\_g%`)
		tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Errorf("cleanup: %v", err)
			return
		}
		stmts := []string{"DROP VIEW IF EXISTS " + ident(table+"_live")}
		for _, tb := range tables {
			stmts = append(stmts, "DROP TABLE IF EXISTS "+ident(tb))
		}
		for _, st := range stmts {
			if _, err := conn.Exec(ctx, st); err != nil {
				t.Errorf("cleanup: %s: %v", st, err)
			}
		}
		if _, err := conn.Exec(ctx, "DELETE FROM "+ident(metaTable)+" WHERE name = $1", table); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
}

// hostPort is the host:port dsn points at.
func hostPort(t *testing.T, dsn string) string {
	t.Helper()
	cfg, err := pgconn.ParseConfig(dsn)
	if err != nil {
		t.Fatalf("parse backend dsn: %v", err)
	}
	return net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port)))
}

// withHost is dsn (a URL) pointing at addr instead.
func withHost(t *testing.T, dsn, addr string) string {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil || u.Scheme == "" {
		t.Fatalf("the backend dsn is not a URL")
	}
	u.Host = addr
	return u.String()
}

// dbConn is a connection of the test's own to the backend.
func dbConn(t *testing.T) *pgx.Conn {
	t.Helper()
	dsn := sinktest.StartBackend(t, "postgres")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

// heldDirect reads what s's live generation (or s's own, for a Sink from
// At) holds for key, over a connection of its own.
func heldDirect(t *testing.T, dsn string, s *Sink, key string) (sink.Held, bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer conn.Close(ctx)
	n := s.fixed
	if n == 0 {
		if err := conn.QueryRow(ctx, "SELECT live FROM "+ident(metaTable)+" WHERE name = $1", s.table).Scan(&n); err != nil {
			t.Fatalf("reading the live generation: %v", err)
		}
	}
	return heldIn(t, conn, s.genTable(n), key)
}

// heldIn reads key's row in table.
func heldIn(t *testing.T, conn *pgx.Conn, table, key string) (sink.Held, bool) {
	t.Helper()
	var (
		h     sink.Held
		state *string
	)
	err := conn.QueryRow(context.Background(), "SELECT version, deleted, state::text FROM "+ident(table)+" WHERE key = $1", key).
		Scan(&h.Version, &h.Deleted, &state)
	if errors.Is(err, pgx.ErrNoRows) {
		return sink.Held{}, false
	}
	if err != nil {
		t.Fatalf("reading %s in %s: %v", key, table, err)
	}
	if h.Deleted && state != nil {
		t.Fatalf("%s in %s: a deleted marker holds a state: %s", key, table, *state)
	}
	if state != nil {
		h.Doc = json.RawMessage(*state)
	}
	return h, true
}

// uniqueTable is a table name no other test (or test run) uses.
func uniqueTable(t *testing.T) string {
	name := strings.ToLower(strings.NewReplacer("/", "_", "-", "_").Replace(t.Name()))
	if len(name) > 30 {
		name = name[len(name)-30:]
	}
	return fmt.Sprintf("t%d_%s", time.Now().UnixNano()%1e9, name)
}

func write(t *testing.T, s sink.Sink, recs ...sink.Record) []sink.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := s.Write(ctx, recs)
	if err != nil {
		t.Fatalf("Write: %v", err)
	}
	if len(res) != len(recs) {
		t.Fatalf("Write returned %d results for %d records", len(res), len(recs))
	}
	return res
}

func expectOutcomes(t *testing.T, res []sink.Result, want ...sink.Outcome) {
	t.Helper()
	for i, r := range res {
		if r.Outcome != want[i] {
			t.Errorf("record %d: outcome %v (err %v), want %v", i, r.Outcome, r.Err, want[i])
		}
	}
}

func expectGenerations(t *testing.T, s *Sink, live, building int) {
	t.Helper()
	l, b, err := s.Generations(context.Background())
	if err != nil {
		t.Fatalf("Generations: %v", err)
	}
	if l != live || b != building {
		t.Fatalf("Generations = live %d, building %d; want %d, %d", l, b, live, building)
	}
}

func count(t *testing.T, conn *pgx.Conn, relation string) int {
	t.Helper()
	var n int
	if err := conn.QueryRow(context.Background(), "SELECT count(*) FROM "+ident(relation)).Scan(&n); err != nil {
		t.Fatalf("count %s: %v", relation, err)
	}
	return n
}

func exists(t *testing.T, conn *pgx.Conn, relation string) bool {
	t.Helper()
	var ok bool
	if err := conn.QueryRow(context.Background(), "SELECT to_regclass($1) IS NOT NULL", ident(relation)).Scan(&ok); err != nil {
		t.Fatalf("to_regclass %s: %v", relation, err)
	}
	return ok
}

// New creates the table, view and metadata row, and several processes
// calling it at once on a fresh table all succeed, creating them once.
func TestNewCreatesTableAndViewIdempotently(t *testing.T) {
	dsn := sinktest.StartBackend(t, "postgres")
	table := uniqueTable(t)
	dropAfter(t, table)
	conn := dbConn(t)

	var wg sync.WaitGroup
	errs := make(chan error, 6)
	for range 6 {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			s, err := New(ctx, config.SinkPostgres{DSN: dsn, Table: table}, testLogger(t))
			if err == nil {
				err = s.Close()
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent New: %v", err)
		}
	}
	if !exists(t, conn, table) || !exists(t, conn, table+"_live") {
		t.Fatalf("New did not create the table %s and the view %s_live", table, table)
	}
	rows, _ := conn.Query(context.Background(), `SELECT column_name || ' ' || data_type || ' ' || is_nullable
		FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position`, table)
	cols, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"key text NO", "namespace text NO", "product_id text NO", "version bigint NO",
		"deleted boolean NO", "state jsonb YES", "updated_at timestamp with time zone NO"}
	if strings.Join(cols, ", ") != strings.Join(want, ", ") {
		t.Fatalf("columns %v, want %v", cols, want)
	}

	s := open(t, dsn, table)
	expectGenerations(t, s, 1, 0)
	write(t, s, sinktest.Product("1", 3, "1.00"), sinktest.Deleted("2", 4))
	// Another New keeps what the table holds.
	s2 := open(t, dsn, table)
	expectGenerations(t, s2, 1, 0)
	if n := count(t, conn, table); n != 2 {
		t.Fatalf("after a second New the table holds %d rows, want 2", n)
	}
	if n := count(t, conn, table+"_live"); n != 1 {
		t.Fatalf("the view shows %d rows, want 1 (the deleted marker hidden)", n)
	}
	var metaRows int
	if err := conn.QueryRow(context.Background(), "SELECT count(*) FROM "+ident(metaTable)+" WHERE name = $1", table).Scan(&metaRows); err != nil || metaRows != 1 {
		t.Fatalf("metadata rows for %s: %d (%v), want 1", table, metaRows, err)
	}
}

// Names that only work quoted (upper case, '-') are quoted everywhere.
func TestTableNameIsQuoted(t *testing.T) {
	dsn := sinktest.StartBackend(t, "postgres")
	table := fmt.Sprintf("T%d-Mixed Case", time.Now().UnixNano()%1e9)
	s := open(t, dsn, table)
	rec := sinktest.Product("1", 1, "1.00")
	expectOutcomes(t, write(t, s, rec), sink.Applied)
	ctx := context.Background()
	if err := s.Begin(ctx, 2); err != nil {
		t.Fatalf("Begin: %v", err)
	}
	write(t, s, sinktest.Product("1", 2, "2.00"))
	if err := s.Switch(ctx, 2); err != nil {
		t.Fatalf("Switch: %v", err)
	}
	if err := s.Drop(ctx, 1); err != nil {
		t.Fatalf("Drop: %v", err)
	}
	h, ok, err := s.Held(ctx, "ns:1")
	if err != nil || !ok || h.Version != 2 {
		t.Fatalf("Held = %+v, %v, %v; want version 2", h, ok, err)
	}
	if n := count(t, dbConn(t), table+"_live"); n != 1 {
		t.Fatalf("the view shows %d rows, want 1", n)
	}
}

// An equal version is Applied and changes nothing: the first write of a
// version wins.
func TestEqualVersionIsAppliedWithoutChange(t *testing.T) {
	dsn := sinktest.StartBackend(t, "postgres")
	s := open(t, dsn, uniqueTable(t))
	first := sinktest.Product("1", 7, "1.00")
	expectOutcomes(t, write(t, s, first), sink.Applied)
	same := sinktest.Product("1", 7, "99.00")
	expectOutcomes(t, write(t, s, same), sink.Applied)
	h, ok := heldDirect(t, dsn, s, "ns:1")
	if !ok || h.Version != 7 || !sinktest.SameJSON(h.Doc, first.Doc) {
		t.Fatalf("held %+v (doc %s), want version 7 with the first doc %s", h, h.Doc, first.Doc)
	}
	// The same for a deleted marker.
	expectOutcomes(t, write(t, s, sinktest.Deleted("1", 8)), sink.Applied)
	expectOutcomes(t, write(t, s, sinktest.Deleted("1", 8)), sink.Applied)
	expectOutcomes(t, write(t, s, sinktest.Product("1", 8, "2.00")), sink.Applied)
	if h, _ := heldDirect(t, dsn, s, "ns:1"); h.Version != 8 || !h.Deleted {
		t.Fatalf("held %+v, want the deleted marker at version 8", h)
	}
}

// A batch of 1000 records, applied in one statement, gets the right
// outcome for each: new keys, stale, equal and newer versions, deletes.
func TestBatchOf1000MixedOutcomes(t *testing.T) {
	dsn := sinktest.StartBackend(t, "postgres")
	s := open(t, dsn, uniqueTable(t))
	var before []sink.Record
	for i := range 500 {
		before = append(before, sinktest.Product(strconv.Itoa(i), 10, "1.00"))
	}
	write(t, s, before...)

	batch := make([]sink.Record, 1000)
	want := make([]sink.Outcome, 1000)
	for i := range batch {
		id := strconv.Itoa(i)
		switch {
		case i < 200: // older than held
			batch[i], want[i] = sinktest.Product(id, 5, "2.00"), sink.Stale
		case i < 350: // equal to held
			batch[i], want[i] = sinktest.Product(id, 10, "3.00"), sink.Applied
		case i < 450: // newer than held
			batch[i], want[i] = sinktest.Product(id, 11, "4.00"), sink.Applied
		case i < 500: // newer delete
			batch[i], want[i] = sinktest.Deleted(id, 12), sink.Applied
		case i < 900: // new key
			batch[i], want[i] = sinktest.Product(id, 1, "5.00"), sink.Applied
		default: // delete of a new key
			batch[i], want[i] = sinktest.Deleted(id, 1), sink.Applied
		}
	}
	start := time.Now()
	res := write(t, s, batch...)
	t.Logf("1000 records written in %v", time.Since(start))
	expectOutcomes(t, res, want...)

	conn := dbConn(t)
	for i, rec := range batch {
		h, ok := heldIn(t, conn, s.table, rec.Key)
		expect := rec
		if i < 350 {
			expect = before[i] // stale and equal versions change nothing
		}
		if !ok || h.Version != expect.Version || h.Deleted != expect.Deleted ||
			(!h.Deleted && !sinktest.SameJSON(h.Doc, expect.Doc)) {
			t.Fatalf("%s: held %+v (doc %s), want version %d deleted=%v doc %s", rec.Key, h, h.Doc, expect.Version, expect.Deleted, expect.Doc)
		}
	}
	// Not deleted: the 200 stale and 150 equal ones, 100 newer, 400 new.
	if n := count(t, conn, s.table+"_live"); n != 850 {
		t.Fatalf("the view shows %d rows, want 850", n)
	}
}

// Records the database refuses fail alone, with a permanent error carrying
// the SQLSTATE; the rest of the batch is applied.
func TestRefusedRecordsAreIsolated(t *testing.T) {
	dsn := sinktest.StartBackend(t, "postgres")
	s := open(t, dsn, uniqueTable(t))
	nul := sinktest.Product("nul", 1, "1.00")
	nul.Doc = json.RawMessage(`{"fields":{"title":"bad\u0000"}}`)
	invalid := sinktest.Product("invalid", 1, "1.00")
	invalid.Doc = json.RawMessage(`{"fields":`)
	nulKey := sinktest.Product("a\x00b", 1, "1.00")
	// Too long for the primary key's index even compressed.
	random := make([]byte, 8000)
	_, _ = rand.Read(random)
	long := sinktest.Product(hex.EncodeToString(random), 1, "1.00")
	good := []sink.Record{sinktest.Product("1", 1, "1.00"), sinktest.Deleted("2", 2), sinktest.Product("3", 3, "3.00")}
	batch := []sink.Record{good[0], nul, invalid, good[1], nulKey, long, good[2]}
	res := write(t, s, batch...)
	expectOutcomes(t, res, sink.Applied, sink.Failed, sink.Failed, sink.Applied, sink.Failed, sink.Failed, sink.Applied)
	for i, class := range map[int]string{1: "22", 2: "22", 4: "22", 5: "54"} {
		var pgErr *pgconn.PgError
		if !sink.IsPermanent(res[i].Err) || !errors.As(res[i].Err, &pgErr) || pgErr.Code[:2] != class {
			t.Errorf("record %d: error %v, want a permanent SQLSTATE class %s error", i, res[i].Err, class)
		}
	}
	for _, rec := range good {
		if h, ok := heldDirect(t, dsn, s, rec.Key); !ok || h.Version != rec.Version {
			t.Errorf("%s: held %+v, %v; want version %d", rec.Key, h, ok, rec.Version)
		}
	}
	if n := count(t, dbConn(t), s.table); n != len(good) {
		t.Fatalf("the table holds %d rows, want %d", n, len(good))
	}
	// A batch of the poison alone fails it alone too.
	expectOutcomes(t, write(t, s, nul), sink.Failed)
}

// A record whose key another writer holds uncommitted at the time of the
// upsert's snapshot still gets the right outcome once that writer commits.
func TestConcurrentWriterOfTheSameKeys(t *testing.T) {
	dsn := sinktest.StartBackend(t, "postgres")
	s := open(t, dsn, uniqueTable(t))
	ctx := context.Background()
	other := dbConn(t)
	tx, err := other.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	ins := "INSERT INTO " + ident(s.table) + ` (key, namespace, product_id, version, deleted, state, updated_at)
		VALUES ($1, 'ns', $2, $3, false, '{}', now())`
	for _, r := range []struct {
		id      string
		version int64
	}{{"1", 5}, {"2", 7}} {
		if _, err := tx.Exec(ctx, ins, "ns:"+r.id, r.id, r.version); err != nil {
			t.Fatal(err)
		}
	}
	type answer struct {
		res []sink.Result
		err error
	}
	done := make(chan answer, 1)
	go func() {
		res, err := s.Write(ctx, []sink.Record{sinktest.Product("1", 5, "1.00"), sinktest.Product("2", 6, "1.00"), sinktest.Product("3", 1, "1.00")})
		done <- answer{res, err}
	}()
	// Wait until the upsert waits for the other transaction.
	monitor := dbConn(t)
	deadline := time.Now().Add(20 * time.Second)
	for {
		var waiting int
		err := monitor.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%' || $1 || '%'`, s.table).Scan(&waiting)
		if err != nil {
			t.Fatal(err)
		}
		if waiting > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the write never waited for the other transaction")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	a := <-done
	if a.err != nil {
		t.Fatalf("Write: %v", a.err)
	}
	expectOutcomes(t, a.res, sink.Applied, sink.Stale, sink.Applied)
	if h, _ := heldDirect(t, dsn, s, "ns:2"); h.Version != 7 {
		t.Fatalf("ns:2 holds version %d, want the other writer's 7", h.Version)
	}
}

// Begin, At, Switch and Drop, and what each refuses.
func TestGenerations(t *testing.T) {
	dsn := sinktest.StartBackend(t, "postgres")
	s := open(t, dsn, uniqueTable(t))
	conn := dbConn(t)
	ctx := context.Background()
	g1, g2 := s.genTable(1), s.genTable(2)
	expectGenerations(t, s, 1, 0)
	write(t, s, sinktest.Product("a", 1, "1.00"))

	if err := s.Begin(ctx, 2); err != nil {
		t.Fatalf("Begin(2): %v", err)
	}
	expectGenerations(t, s, 1, 2)
	if n := count(t, conn, g2); n != 0 {
		t.Fatalf("generation 2 begins with %d rows", n)
	}
	if err := s.Begin(ctx, 1); !errors.Is(err, ErrLiveGeneration) {
		t.Fatalf("Begin(live) = %v, want ErrLiveGeneration", err)
	}
	if err := s.Begin(ctx, 3); !errors.Is(err, ErrBuilding) {
		t.Fatalf("Begin(3) while 2 is built = %v, want ErrBuilding", err)
	}
	if err := s.Begin(ctx, 0); !errors.Is(err, ErrBadGeneration) {
		t.Fatalf("Begin(0) = %v, want ErrBadGeneration", err)
	}

	// The sink writes to the live generation and the one being built.
	b := sinktest.Product("b", 2, "2.00")
	write(t, s, b)
	for _, table := range []string{g1, g2} {
		if h, ok := heldIn(t, conn, table, b.Key); !ok || h.Version != 2 {
			t.Fatalf("%s holds %+v, %v for %s; want version 2", table, h, ok, b.Key)
		}
	}
	// At(2) writes to generation 2 alone.
	at2 := s.At(2)
	c := sinktest.Product("c", 3, "3.00")
	expectOutcomes(t, write(t, at2, c, sinktest.Product("b", 1, "0.50")), sink.Applied, sink.Stale)
	if _, ok := heldIn(t, conn, g1, c.Key); ok {
		t.Fatal("At(2) wrote to generation 1")
	}
	if h, ok, err := at2.(sink.Reader).Held(ctx, c.Key); err != nil || !ok || h.Version != 3 {
		t.Fatalf("At(2).Held = %+v, %v, %v; want version 3", h, ok, err)
	}
	if _, ok, err := s.Held(ctx, c.Key); err != nil || ok {
		t.Fatalf("Held of a key only generation 2 holds, while 1 is live = %v, %v; want not found", ok, err)
	}
	// Closing At's sink closes nothing.
	if err := at2.Close(); err != nil {
		t.Fatal(err)
	}
	write(t, s, sinktest.Product("d", 4, "4.00"))
	write(t, at2, sinktest.Product("e", 5, "5.00"))
	// Beginning the generation being built again keeps what it holds.
	if err := s.Begin(ctx, 2); err != nil {
		t.Fatalf("Begin(2) again: %v", err)
	}
	if n := count(t, conn, g2); n != 4 {
		t.Fatalf("generation 2 holds %d rows after beginning it again, want 4", n)
	}

	if err := s.Drop(ctx, 1); !errors.Is(err, ErrLiveGeneration) {
		t.Fatalf("Drop(live) = %v, want ErrLiveGeneration", err)
	}
	if err := s.Switch(ctx, 5); !errors.Is(err, ErrNoGeneration) {
		t.Fatalf("Switch to a generation never begun = %v, want ErrNoGeneration", err)
	}
	if err := s.Switch(ctx, 2); err != nil {
		t.Fatalf("Switch(2): %v", err)
	}
	expectGenerations(t, s, 2, 0)
	if n := count(t, conn, s.viewName()); n != 4 {
		t.Fatalf("the view shows %d rows after the switch, want generation 2's 4", n)
	}
	if h, ok, err := s.Held(ctx, c.Key); err != nil || !ok || h.Version != 3 {
		t.Fatalf("Held after the switch = %+v, %v, %v; want generation 2's version 3", h, ok, err)
	}
	// Generation 1 is no longer written.
	f := sinktest.Product("f", 6, "6.00")
	write(t, s, f)
	if _, ok := heldIn(t, conn, g1, f.Key); ok {
		t.Fatal("the sink still writes to generation 1 after the switch")
	}
	if err := s.Drop(ctx, 2); !errors.Is(err, ErrLiveGeneration) {
		t.Fatalf("Drop(live) = %v, want ErrLiveGeneration", err)
	}
	if !exists(t, conn, g2) {
		t.Fatal("a refused Drop dropped the live generation")
	}
	if err := s.Drop(ctx, 1); err != nil {
		t.Fatalf("Drop(1): %v", err)
	}
	if exists(t, conn, g1) {
		t.Fatal("Drop(1) left generation 1's table")
	}
	if err := s.Drop(ctx, 1); err != nil {
		t.Fatalf("Drop of a dropped generation: %v", err)
	}
	// Dropping the generation being built clears the mark.
	if err := s.Begin(ctx, 3); err != nil {
		t.Fatalf("Begin(3): %v", err)
	}
	if err := s.Drop(ctx, 3); err != nil {
		t.Fatalf("Drop(3): %v", err)
	}
	expectGenerations(t, s, 2, 0)
	// Generation 1's number can be built again, from empty.
	if err := s.Begin(ctx, 1); err != nil {
		t.Fatalf("Begin(1) after dropping it: %v", err)
	}
	if n := count(t, conn, g1); n != 0 {
		t.Fatalf("generation 1 begins again with %d rows", n)
	}
	// The sink's statements prepared for the old generation 1 table work
	// on the new one.
	g := sinktest.Product("g", 7, "7.00")
	expectOutcomes(t, write(t, s, g), sink.Applied)
	if h, ok := heldIn(t, conn, g1, g.Key); !ok || h.Version != 7 {
		t.Fatalf("the new generation 1 holds %+v, %v; want version 7", h, ok)
	}
}

// A process learns of another's Begin, Switch and Drop at its next Write,
// with no delay: Begin makes every writer write to the new generation.
func TestOtherProcessesFollowTheGenerations(t *testing.T) {
	dsn := sinktest.StartBackend(t, "postgres")
	table := uniqueTable(t)
	admin, writer := open(t, dsn, table), open(t, dsn, table)
	conn := dbConn(t)
	ctx := context.Background()
	write(t, writer, sinktest.Product("a", 1, "1.00")) // writer has read generation 1 as live

	if err := admin.Begin(ctx, 2); err != nil {
		t.Fatal(err)
	}
	b := sinktest.Product("b", 2, "2.00")
	expectOutcomes(t, write(t, writer, b), sink.Applied)
	if _, ok := heldIn(t, conn, admin.genTable(2), b.Key); !ok {
		t.Fatal("the writer's first Write after another process's Begin missed the new generation")
	}

	if err := admin.Switch(ctx, 2); err != nil {
		t.Fatal(err)
	}
	if err := admin.Drop(ctx, 1); err != nil {
		t.Fatal(err)
	}
	// The writer still aims at generations 1 and 2; 1 is gone.
	c := sinktest.Product("c", 3, "3.00")
	expectOutcomes(t, write(t, writer, c), sink.Applied)
	if h, ok := heldIn(t, conn, admin.genTable(2), c.Key); !ok || h.Version != 3 {
		t.Fatalf("generation 2 holds %+v, %v; want version 3", h, ok)
	}
	if l, b := writer.cached().live, writer.cached().building; l != 2 || b != 0 {
		t.Fatalf("the writer aims at live %d building %d, want 2, 0", l, b)
	}
	// A sink fixed on a dropped generation says so.
	_, err := admin.At(1).Write(ctx, []sink.Record{sinktest.Product("d", 1, "1.00")})
	if !errors.Is(err, ErrNoGeneration) || sink.IsPermanent(err) {
		t.Fatalf("Write to a dropped generation = %v, want ErrNoGeneration", err)
	}
}

// Readers of the view see the old generation whole or the new one whole,
// never a mix or an empty catalog, while Switch runs.
func TestSwitchIsAtomicForReaders(t *testing.T) {
	dsn := sinktest.StartBackend(t, "postgres")
	s := open(t, dsn, uniqueTable(t))
	ctx := context.Background()
	var old, fresh []sink.Record
	for i := range 500 {
		old = append(old, sinktest.Product(strconv.Itoa(i), 1, "1.00"))
	}
	write(t, s, old...)
	if err := s.Begin(ctx, 2); err != nil {
		t.Fatal(err)
	}
	for i := range 1000 {
		fresh = append(fresh, sinktest.Product("n"+strconv.Itoa(i), 1, "1.00"))
	}
	write(t, s.At(2), fresh...)

	const readers = 3
	var (
		wg     sync.WaitGroup
		stop   = make(chan struct{})
		mu     sync.Mutex
		counts = map[int]int{}
		errs   []error
	)
	ready := make(chan struct{}, readers)
	for range readers {
		conn := dbConn(t)
		wg.Go(func() {
			signaled := false
			for {
				select {
				case <-stop:
					return
				default:
				}
				var n int
				err := conn.QueryRow(ctx, "SELECT count(*) FROM "+ident(s.viewName())).Scan(&n)
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
				}
				counts[n]++
				mu.Unlock()
				if err != nil {
					return
				}
				if !signaled {
					ready <- struct{}{}
					signaled = true
				}
			}
		})
	}
	for range readers {
		<-ready
	}
	time.Sleep(50 * time.Millisecond)
	if err := s.Switch(ctx, 2); err != nil {
		t.Fatalf("Switch: %v", err)
	}
	// Let the readers see the new generation for a while.
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		after := counts[1000]
		mu.Unlock()
		if after >= 20 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("a reader failed: %v", errs[0])
	}
	for n, times := range counts {
		if n != 500 && n != 1000 {
			t.Errorf("a reader saw %d rows %d times: neither generation whole", n, times)
		}
	}
	if counts[500] == 0 || counts[1000] == 0 {
		t.Fatalf("the readers saw counts %v: want reads of both generations", counts)
	}
	t.Logf("reads of the view: %v", counts)
}

// The server refusing the login is reported as ErrAuthentication, without
// the password. The test instance trusts loopback (any password is
// accepted), so the refusal is of a role that may not log in; SQLSTATE
// class 28 like a wrong password.
func TestLoginRefusedSaysAuthenticationFailedWithoutThePassword(t *testing.T) {
	dsn := sinktest.StartBackend(t, "postgres")
	conn := dbConn(t)
	role := fmt.Sprintf("nologin_%d", time.Now().UnixNano())
	const password = "s3cret-Pa55word"
	ctx := context.Background()
	if _, err := conn.Exec(ctx, "CREATE ROLE "+ident(role)+" NOLOGIN PASSWORD '"+password+"'"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = conn.Exec(context.Background(), "DROP ROLE IF EXISTS "+ident(role)) })
	u, _ := url.Parse(dsn)
	u.User = url.UserPassword(role, password)
	_, err := New(ctx, config.SinkPostgres{DSN: u.String(), Table: uniqueTable(t)}, testLogger(t))
	if !errors.Is(err, ErrAuthentication) {
		t.Fatalf("New as a role that may not log in = %v, want ErrAuthentication", err)
	}
	t.Logf("New: %v", err)
	if strings.Contains(err.Error(), password) {
		t.Fatalf("the error holds the password: %v", err)
	}
	if !strings.Contains(err.Error(), "authentication failed") || !strings.Contains(err.Error(), role) {
		t.Fatalf("the error %q does not say whose authentication failed", err)
	}
}

// An unknown database, an unreachable server and a DSN that does not parse
// fail New with a clear error that holds no password.
func TestNewFailsClearly(t *testing.T) {
	dsn := sinktest.StartBackend(t, "postgres")
	const password = "s3cret-Pa55word"
	u, _ := url.Parse(dsn)
	u.User = url.UserPassword(u.User.Username(), password)
	noDB := *u
	noDB.Path = fmt.Sprintf("/nosuchdb_%d", time.Now().UnixNano())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	_ = ln.Close()
	noServer := *u
	noServer.Host = closed
	for _, tc := range []struct {
		name, dsn, want string
	}{
		{"UnknownDatabase", noDB.String(), "does not exist"},
		{"Unreachable", noServer.String(), "connect"},
		{"Unparsable", "postgres://user:" + password + "@127.0.0.1:notaport/db", "does not parse"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			s, err := New(ctx, config.SinkPostgres{DSN: tc.dsn, Table: uniqueTable(t)}, testLogger(t))
			if err == nil {
				_ = s.Close()
				t.Fatal("New succeeded")
			}
			t.Logf("New: %v", err)
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not say %q", err, tc.want)
			}
			if strings.Contains(err.Error(), password) {
				t.Fatalf("the error holds the password: %v", err)
			}
			if errors.Is(err, ErrAuthentication) {
				t.Fatalf("%v is reported as an authentication failure", err)
			}
		})
	}
}

// Which server errors are a record's fault (written again one by one, then
// dead-lettered) and which fail the batch to be retried.
func TestDataErrorClasses(t *testing.T) {
	for _, tc := range []struct {
		code string
		data bool
	}{
		{"22P05", true},  // jsonb: unsupported Unicode escape (\u0000)
		{"22P02", true},  // invalid JSON text
		{"22021", true},  // invalid byte sequence (a NUL byte in text)
		{"23505", true},  // unique violation
		{"54000", true},  // index row too large
		{"21000", true},  // ON CONFLICT affecting a row twice
		{"08006", false}, // connection failure
		{"40001", false}, // serialization failure
		{"40P01", false}, // deadlock
		{"53300", false}, // too many connections
		{"57014", false}, // statement timeout / canceled
		{"57P01", false}, // admin shutdown
		{"58030", false}, // I/O error
		{"42P01", false}, // undefined table
	} {
		err := fmt.Errorf("wrapped: %w", &pgconn.PgError{Code: tc.code})
		if got := isDataError(err); got != tc.data {
			t.Errorf("isDataError(%s) = %v, want %v", tc.code, got, tc.data)
		}
	}
	if isDataError(context.DeadlineExceeded) || isDataError(errors.New("connection reset")) {
		t.Error("a client-side error is taken for a data error")
	}
}
