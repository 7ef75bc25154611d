package integration

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/productstream/productstream/config"
	"github.com/productstream/productstream/schemas"
	"github.com/productstream/productstream/sink/sinktest"
)

// Rebuild while live (docs/sinks.md): `dev` runs a PostgreSQL and an
// OpenSearch sink holding 100 products. While a sender keeps changing every
// even product's price and readers keep reading what readers see (the view
// <table>_live; the filtered alias <index>, refreshed every 100ms),
// `productstream sink rebuild` builds generation 2 of each sink in turn from
// the start of products and switches to it. It proves that:
//   - a reader never sees a partial, empty or doubled generation: every
//     count taken before, during and after both switches (count(*) of the
//     view, _count through the alias) is exactly 100, as no product is ever
//     deleted and there are no others, and no read fails;
//   - a reader of the view never sees a product go back to an older
//     version across the switch: the new generation already holds every
//     write readers saw on the old one, so the running sink wrote the
//     changes the rebuild did not read to both. Without this check a write
//     lost on the new generation would go unseen, as the sender rewrites
//     half the products after the switch. The same is read through the
//     alias (by a realtime _mget: what the generation holds, however
//     recently it was refreshed): the running sink writes each batch to
//     both generations in one request, so no switch falls between them;
//   - the rebuild exits 0, prints progress while it reads and says
//     generation 2 is live, and the switch is done when it exits: the
//     generations row says live 2 with nothing building and the view selects
//     from <table>_g2; the alias is on <index>-g2 alone;
//   - once the sender stopped and the sinks caught up (their groups
//     committed the end of products), generation 2 holds every product at
//     exactly the version and price on products, and nothing else.
//
// Only half the products change after the first round: the other half
// reach the new generation through the rebuild alone, just before the
// switch, so a switch to a generation not yet searchable would show up in
// the counts.
func TestSinkRebuildWhileLive(t *testing.T) {
	start := time.Now()
	osURL := sinktest.StartBackend(t, "opensearch")
	pgDSN := sinktest.StartBackend(t, "postgres")
	run := runID()
	index, table := "it-rebuild-"+run, "it_rebuild_"+run
	// Cleanups run last registered first: generation 2's table goes after
	// the view that selects from it.
	cleanupPostgresGeneration(t, pgDSN, table, 2)
	cleanupPostgres(t, pgDSN, table)
	cleanupOpenSearch(t, osURL, index)

	dir := t.TempDir()
	cfg := writeFile(t, dir, "config.yaml", fmt.Sprintf(`
sources:
  - name: %s
    provider: lisa
    id: %s
    secrets: [%q]
    api_keys: [%q]
processor:
  quiet_period: 100ms
  max_delay: 1s
sinks:
  - name: db
    type: postgres
    batch: {linger: 50ms}
    postgres: {dsn: %q, table: %q}
  - name: search
    type: opensearch
    batch: {linger: 50ms}
    opensearch: {urls: [%q], index: %q}
`, config.DemoSource, config.DemoID, config.DemoSecret, config.DemoAPIKey, pgDSN, table, osURL, index))
	dev := startDev(t, filepath.Join(dir, "data"), "--config", cfg)
	serde := newSerde(t, dev.registry)
	t.Logf("dev up after %v: PostgreSQL table %s, OpenSearch alias %s", since(start), table, index)

	// Round r gives every product a new price, never ending in 0 (so the
	// exact decimal string is the one sent).
	const products = 100
	keys := make([]string, products)
	for p := range products {
		keys[p] = config.DemoSource + ":" + fmt.Sprintf("p%03d", p)
	}
	// After round 0 only the even products change: the odd ones reach the
	// new generation through the rebuild alone, just before the switch.
	changes := func(p, r int) bool { return r == 0 || p%2 == 0 }
	price := func(p, r int) string {
		if !changes(p, r) {
			r = 0
		}
		return fmt.Sprintf("%d.%d1", p+1, r)
	}
	sendRound := func(r int) error {
		var wg sync.WaitGroup
		var failed atomic.Pointer[error]
		for w := range 4 {
			wg.Go(func() {
				for p := w; p < products; p += 4 {
					if !changes(p, r) {
						continue
					}
					body := fmt.Sprintf(`{"productId":"p%03d","price":%s,"title":"item %d","round":%d}`, p, price(p, r), p, r)
					if err := notifyDemo(dev, []byte(body)); err != nil {
						failed.CompareAndSwap(nil, &err)
						return
					}
				}
			})
		}
		wg.Wait()
		if err := failed.Load(); err != nil {
			return *err
		}
		return nil
	}
	lastPrices := func(r int) map[string]string {
		out := make(map[string]string, products)
		for p, key := range keys {
			out[key] = price(p, r)
		}
		return out
	}
	if err := sendRound(0); err != nil {
		t.Fatal(err)
	}
	sinks := []rebuildSink{
		{name: "db", group: config.DefaultTopicPrefix + "sink.db", read: pgGenerationReader(pgDSN, table, 1)},
		{name: "search", group: config.DefaultTopicPrefix + "sink.search", read: openSearchReader(osURL, index)},
	}
	want := waitRebuildSinks(t, dev.kafka, serde, lastPrices(0), sinks, false, 45*time.Second)
	t.Logf("both sinks hold the %d products after %v", len(want), since(start))

	// The readers, from now until after both switches.
	rctx, stopReaders := context.WithCancel(context.Background())
	var readersDone sync.WaitGroup
	defer func() { stopReaders(); readersDone.Wait() }()
	view := table + "_live"
	pgCount := &countWatch{name: "PostgreSQL view " + view, want: products}
	osCount := &countWatch{name: "OpenSearch alias " + index, want: products}
	pgVersions := newVersionWatch("PostgreSQL view " + view)
	osVersions := newVersionWatch("OpenSearch alias " + index)
	readersDone.Go(func() { countPostgresView(rctx, pgDSN, view, pgCount) })
	readersDone.Go(func() { countOpenSearchAlias(rctx, osURL, index, osCount) })
	readersDone.Go(func() { refreshOpenSearchAlias(rctx, osURL, index, 100*time.Millisecond, osCount) })
	readersDone.Go(func() { versionsPostgresView(rctx, pgDSN, table, pgVersions) })
	readersDone.Go(func() { versionsOpenSearchAlias(rctx, osURL, index, keys, osVersions) })

	// The sender: a round of price changes for every product, a quiet
	// period apart, until told to stop.
	var (
		rounds     atomic.Int32
		stopSender = make(chan struct{})
		senderDone = make(chan error, 1)
		stopOnce   sync.Once
	)
	go func() {
		for r := 1; ; r++ {
			select {
			case <-stopSender:
				senderDone <- nil
				return
			default:
			}
			if err := sendRound(r); err != nil {
				senderDone <- fmt.Errorf("round %d: %w", r, err)
				return
			}
			rounds.Store(int32(r))
			time.Sleep(150 * time.Millisecond)
		}
	}()
	stopSending := func() {
		stopOnce.Do(func() {
			close(stopSender)
			if err := <-senderDone; err != nil {
				t.Errorf("sender: %v", err)
			}
		})
	}
	defer stopSending()
	for rounds.Load() < 1 { // the sinks are being written when the rebuild begins
		time.Sleep(10 * time.Millisecond)
	}

	for _, name := range []string{"db", "search"} {
		r0, pg0, os0 := rounds.Load(), pgCount.samples.Load(), osCount.samples.Load()
		out := runSinkRebuild(t, dev, cfg, name)
		t.Logf("sink rebuild %s: exit 0 at %s after %v, %d rounds of price changes sent and %d PostgreSQL and %d OpenSearch counts taken meanwhile; stdout %q; progress %q",
			name, time.Now().Format("15:04:05.000"), out.took.Round(time.Millisecond), rounds.Load()-r0,
			pgCount.samples.Load()-pg0, osCount.samples.Load()-os0, strings.TrimSpace(out.stdout), out.progress)
		// The switch is done when the rebuild exits.
		if name == "db" {
			requirePostgresLive(t, pgDSN, table, 2)
		} else {
			requireOpenSearchLive(t, osURL, index, 2)
		}
	}
	// The sender and the readers go on past the running sinks' next look at
	// the generations (every 2s), when they stop writing generation 1.
	time.Sleep(2500 * time.Millisecond)
	stopSending()
	stopReaders()
	readersDone.Wait()
	sent := int(rounds.Load())
	t.Logf("sender and readers stopped after round %d (%d notifications), at %v", sent, (sent+1)*products, since(start))
	for _, w := range []*countWatch{pgCount, osCount} {
		t.Log(w)
		if err := w.check(); err != nil {
			t.Error(err)
		}
	}
	t.Log(pgVersions)
	if err := pgVersions.check("generation 1", "generation 2"); err != nil {
		t.Error(err)
	}
	if back := pgVersions.wentBack(); back != "" {
		t.Error(back)
	}
	t.Log(osVersions)
	if err := osVersions.check(index+"-g1", index+"-g2"); err != nil {
		t.Error(err)
	}
	if back := osVersions.wentBack(); back != "" {
		t.Error(back)
	}

	// Caught up: generation 2 of each sink holds products exactly.
	sinks[0].read = pgGenerationReader(pgDSN, table, 2)
	want = waitRebuildSinks(t, dev.kafka, serde, lastPrices(sent), sinks, true, 30*time.Second)
	t.Logf("both sinks caught up: generation 2 holds the %d products at their version and price on products, after %v", len(want), since(start))
	requirePostgresLive(t, pgDSN, table, 2)
	requireOpenSearchLive(t, osURL, index, 2)
	for _, name := range []string{"db", "search"} {
		requireEmptyDLQ(t, dev.kafka, name)
	}
	t.Logf("done after %v", since(start))
}

func since(t time.Time) time.Duration { return time.Since(t).Round(time.Millisecond) }

// rebuildSink is a sink of the rebuild test: its name, its consumer group,
// and how to read what its live generation holds.
type rebuildSink struct {
	name, group string
	read        backendReader
}

// waitRebuildSinks waits until products holds every key of lastPrice at
// that price and no other key, then until every sink holds exactly what
// products holds (and nothing else) and, when committed is set, its group
// committed the end of products; it returns products. It fails the test
// with what differs when that takes longer than timeout.
func waitRebuildSinks(t *testing.T, brokers string, serde *schemas.Serde, lastPrice map[string]string, sinks []rebuildSink, committed bool, timeout time.Duration) map[string]product {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(timeout)
	var want map[string]product
	for {
		want = readProducts(t, brokers, serde)
		var behind []string
		for key, price := range lastPrice {
			if p, ok := want[key]; !ok || p.deleted || p.price != price {
				behind = append(behind, fmt.Sprintf("%s (%v, want price %s)", key, p, price))
			}
		}
		if len(behind) == 0 && len(want) == len(lastPrice) {
			break
		}
		if time.Now().After(deadline) {
			slices.Sort(behind)
			t.Fatalf("products did not converge within %v (%d keys): %v", timeout, len(want), behind)
		}
		time.Sleep(200 * time.Millisecond)
	}
	for {
		var problems []string
		var end productsEnd
		if committed {
			end = readProductsEnd(t, brokers)
		}
		for _, s := range sinks {
			got, extra, err := s.read(ctx, want)
			if err != nil {
				problems = append(problems, fmt.Sprintf("%s: %v", s.name, err))
				continue
			}
			for _, k := range extra {
				problems = append(problems, fmt.Sprintf("%s holds a key that is not on products: %s", s.name, k))
			}
			for _, key := range slices.Sorted(mapKeys(want)) {
				if !got[key].matches(want[key]) {
					problems = append(problems, fmt.Sprintf("%s: %s: products %v; the sink %v", s.name, key, want[key], got[key]))
				}
			}
			if committed {
				problems = append(problems, end.notCommitted(t, brokers, s.group)...)
			}
		}
		if len(problems) == 0 {
			return want
		}
		if time.Now().After(deadline) {
			if len(problems) > 40 {
				problems = append(problems[:40], fmt.Sprintf("... and %d more", len(problems)-40))
			}
			t.Fatalf("the sinks did not converge within %v:\n%s", timeout, strings.Join(problems, "\n"))
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// productsEnd is where each partition of products ends: its last record
// and its end offset (a transaction marker may follow the last record).
type productsEnd struct {
	last map[int32]int64
	ends kadm.ListedOffsets
}

// readProductsEnd reads where products ends now.
func readProductsEnd(t *testing.T, brokers string) productsEnd {
	t.Helper()
	e := productsEnd{last: map[int32]int64{}}
	for _, r := range readAll(t, brokers, devTopics.Products) {
		e.last[r.Partition] = max(e.last[r.Partition], r.Offset)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	e.ends, err = kadm.NewClient(cl).ListEndOffsets(context.Background(), devTopics.Products)
	if err == nil {
		err = e.ends.Error()
	}
	if err != nil {
		t.Fatalf("end offsets of %s: %v", devTopics.Products, err)
	}
	return e
}

// notCommitted lists the partitions of products where group has not
// committed the end: past the partition's last record, never past its end
// offset.
func (e productsEnd) notCommitted(t *testing.T, brokers, group string) []string {
	t.Helper()
	committed := committedOffsets(t, brokers, group, devTopics.Products)
	var out []string
	e.ends.Each(func(o kadm.ListedOffset) {
		last, hasData := e.last[o.Partition]
		c, ok := committed[o.Partition]
		switch {
		case !hasData:
		case !ok || c <= last:
			out = append(out, fmt.Sprintf("%s: partition %d: committed %d (ok=%v), last record at %d, end offset %d", group, o.Partition, c, ok, last, o.Offset))
		case c > o.Offset:
			out = append(out, fmt.Sprintf("%s: partition %d: committed %d past the end offset %d", group, o.Partition, c, o.Offset))
		}
	})
	return out
}

// rebuildRun is what one `productstream sink rebuild` printed.
type rebuildRun struct {
	stdout, stderr string
	progress       []string // the progress lines of stderr
	took           time.Duration
}

// runSinkRebuild runs `productstream sink rebuild name` against dev and
// wants it to exit 0 within a minute, saying generation 2 is live after at
// least one progress line.
func runSinkRebuild(t *testing.T, dev *devProc, cfg, name string) rebuildRun {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, "sink", "rebuild", name, "--config", cfg, "--brokers", dev.kafka, "--registry", dev.registry)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	began := time.Now()
	err := cmd.Run()
	out := rebuildRun{stdout: stdout.String(), stderr: stderr.String(), took: time.Since(began)}
	if err != nil {
		t.Fatalf("sink rebuild %s: %v after %v\nstdout:\n%s\nstderr:\n%s", name, err, out.took.Round(time.Millisecond), out.stdout, out.stderr)
	}
	prefix := "rebuild " + name + " generation 2: "
	for line := range strings.Lines(out.stderr) {
		if strings.HasPrefix(line, prefix) {
			out.progress = append(out.progress, strings.TrimSpace(line))
		}
	}
	if w := "rebuilt " + name + ": generation 2 is live"; !strings.Contains(out.stdout, w) {
		t.Errorf("sink rebuild %s printed no %q\nstdout:\n%s\nstderr:\n%s", name, w, out.stdout, out.stderr)
	}
	if len(out.progress) == 0 {
		t.Errorf("sink rebuild %s printed no progress line (%q...) on stderr:\n%s", name, prefix, out.stderr)
	}
	return out
}

// requirePostgresLive fails the test unless generation n of the
// PostgreSQL sink is live with nothing being built, and the view selects
// from its table, showing the rows its table holds but the deleted markers.
func requirePostgresLive(t *testing.T, dsn, table string, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var live, building int
	if err := conn.QueryRow(ctx, "SELECT live, building FROM productstream_sink_generations WHERE name = $1", table).Scan(&live, &building); err != nil {
		t.Fatalf("the generations of %s: %v", table, err)
	}
	view, gen := table+"_live", pgGenTable(table, n)
	var def string
	if err := conn.QueryRow(ctx, "SELECT pg_get_viewdef($1::regclass)", pgx.Identifier{view}.Sanitize()).Scan(&def); err != nil {
		t.Fatalf("the definition of %s: %v", view, err)
	}
	var inView, inGen int
	err = conn.QueryRow(ctx, "SELECT (SELECT count(*) FROM "+pgx.Identifier{view}.Sanitize()+"), (SELECT count(*) FROM "+
		pgx.Identifier{gen}.Sanitize()+" WHERE NOT deleted)").Scan(&inView, &inGen)
	if err != nil {
		t.Fatalf("counting %s and %s: %v", view, gen, err)
	}
	if live != n || building != 0 || viewSource(def) != gen {
		t.Errorf("PostgreSQL: want generation %d live (the view on %s), nothing building; productstream_sink_generations says live=%d building=%d, and %s is:\n%s",
			n, gen, live, building, view, def)
	}
	if inView != inGen {
		t.Errorf("PostgreSQL: %s shows %d rows, %s holds %d not deleted", view, inView, gen, inGen)
	}
}

// viewSource is the relation a view definition (pg_get_viewdef) selects
// from: the word after FROM, unquoted.
func viewSource(def string) string {
	f := strings.Fields(def)
	i := slices.Index(f, "FROM")
	if i < 0 || i+1 >= len(f) {
		return ""
	}
	return strings.Trim(f[i+1], `";`)
}

// requireOpenSearchLive fails the test unless the alias is on generation
// n's index alone, with a filter.
func requireOpenSearchLive(t *testing.T, base, alias string, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var aliases map[string]struct {
		Aliases map[string]struct {
			Filter map[string]any `json:"filter"`
		} `json:"aliases"`
	}
	if err := osJSON(ctx, http.MethodGet, base+"/_alias/"+alias, nil, &aliases); err != nil {
		t.Fatal(err)
	}
	gen := fmt.Sprintf("%s-g%d", alias, n)
	if len(aliases) != 1 || aliases[gen].Aliases[alias].Filter == nil {
		t.Errorf("OpenSearch: want the alias %s on %s alone, filtered; it is on %v", alias, gen, aliases)
	}
}

// pgGenTable is the table of generation n of a PostgreSQL sink.
func pgGenTable(table string, n int) string {
	if n == 1 {
		return table
	}
	return fmt.Sprintf("%s_g%d", table, n)
}

// pgGenerationReader reads generation n of the PostgreSQL sink whose table
// is table: every row of the generation's table (deleted markers
// included), visible when the view <table>_live shows its key, both read in
// one snapshot.
func pgGenerationReader(dsn, table string, n int) backendReader {
	return func(ctx context.Context, want map[string]product) (map[string]held, []string, error) {
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			return nil, nil, err
		}
		defer conn.Close(ctx)
		tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
		if err != nil {
			return nil, nil, err
		}
		defer func() { _ = tx.Rollback(ctx) }()
		rows, err := tx.Query(ctx, "SELECT key FROM "+pgx.Identifier{table + "_live"}.Sanitize())
		if err != nil {
			return nil, nil, err
		}
		keys, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return nil, nil, err
		}
		visible := map[string]bool{}
		for _, k := range keys {
			visible[k] = true
		}
		got := map[string]held{}
		var extra []string
		rows, err = tx.Query(ctx, "SELECT key, version, deleted, state->'fields'->>'price' FROM "+pgx.Identifier{pgGenTable(table, n)}.Sanitize())
		if err != nil {
			return nil, nil, err
		}
		var (
			key     string
			version int64
			deleted bool
			price   *string
		)
		_, err = pgx.ForEachRow(rows, []any{&key, &version, &deleted, &price}, func() error {
			h := held{found: true, version: version, deleted: deleted, visible: visible[key]}
			if price != nil {
				h.price = *price
			}
			if _, ok := want[key]; !ok {
				extra = append(extra, key)
			}
			got[key] = h
			return nil
		})
		if err != nil {
			return nil, nil, err
		}
		for k := range visible {
			if _, ok := got[k]; !ok {
				extra = append(extra, fmt.Sprintf("%s (in the view only: it does not select from generation %d)", k, n))
			}
		}
		return got, extra, nil
	}
}

// cleanupPostgresGeneration drops generation n's table when the test
// passed. Register it before cleanupPostgres, so that it runs after the
// view is dropped.
func cleanupPostgresGeneration(t *testing.T, dsn, table string, n int) {
	t.Cleanup(func() {
		if t.Failed() {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Logf("cleanup: %v", err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP TABLE IF EXISTS "+pgx.Identifier{pgGenTable(table, n)}.Sanitize()); err != nil {
			t.Logf("cleanup: %v", err)
		}
	})
}

// stamp is the wall clock time, for the diagnostics of the readers.
func stamp() string { return time.Now().Format("15:04:05.000") }

// countWatch is what count readers saw: the lowest and highest count, the
// counts that were not the one wanted and the failed reads (the first few
// of each, with when).
type countWatch struct {
	name    string
	want    int
	samples atomic.Int64

	mu         sync.Mutex
	min, max   int
	odd, errs  []string
	oddN, errN int
}

func (w *countWatch) observe(n int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.samples.Add(1) == 1 {
		w.min, w.max = n, n
	}
	w.min, w.max = min(w.min, n), max(w.max, n)
	if n != w.want {
		w.oddN++
		if len(w.odd) < 20 {
			w.odd = append(w.odd, fmt.Sprintf("%d at %s", n, stamp()))
		}
	}
}

func (w *countWatch) fail(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.errN++
	if len(w.errs) < 20 {
		w.errs = append(w.errs, fmt.Sprintf("%s: %v", stamp(), err))
	}
}

// check returns an error unless counts were taken, all of them the one
// wanted, and no read failed.
func (w *countWatch) check() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	var problems []string
	if w.samples.Load() == 0 {
		problems = append(problems, "no count taken")
	} else if w.min != w.want || w.max != w.want {
		problems = append(problems, fmt.Sprintf("counts from %d to %d, want %d always; %d counts differ, the first: %v", w.min, w.max, w.want, w.oddN, w.odd))
	}
	if w.errN > 0 {
		problems = append(problems, fmt.Sprintf("%d reads failed, the first: %v", w.errN, w.errs))
	}
	if len(problems) > 0 {
		return fmt.Errorf("count readers of %s: %s", w.name, strings.Join(problems, "; "))
	}
	return nil
}

func (w *countWatch) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return fmt.Sprintf("count readers of %s: %d counts, min %d, max %d, %d failed reads", w.name, w.samples.Load(), w.min, w.max, w.errN)
}

// countPostgresView counts the rows of view until ctx ends, on one
// connection (connected again after a failure).
func countPostgresView(ctx context.Context, dsn, view string, w *countWatch) {
	query := "SELECT count(*) FROM " + pgx.Identifier{view}.Sanitize()
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			_ = conn.Close(context.Background())
		}
	}()
	for ctx.Err() == nil {
		if conn == nil || conn.IsClosed() {
			var err error
			if conn, err = pgx.Connect(ctx, dsn); err != nil {
				conn = nil
				if ctx.Err() == nil {
					w.fail(err)
					time.Sleep(50 * time.Millisecond)
				}
				continue
			}
		}
		var n int
		if err := conn.QueryRow(ctx, query).Scan(&n); err != nil {
			if ctx.Err() == nil {
				w.fail(err)
			}
			continue
		}
		w.observe(n)
	}
}

// countOpenSearchAlias counts the documents through alias until ctx ends.
func countOpenSearchAlias(ctx context.Context, base, alias string, w *countWatch) {
	for ctx.Err() == nil {
		var count struct {
			Count int `json:"count"`
		}
		if err := osJSON(ctx, http.MethodGet, base+"/"+alias+"/_count", nil, &count); err != nil {
			if ctx.Err() == nil {
				w.fail(err)
			}
			continue
		}
		w.observe(count.Count)
	}
}

// refreshOpenSearchAlias refreshes the index behind alias every period
// until ctx ends, so that the counts follow the writes; a failed refresh is
// a failed read of w.
func refreshOpenSearchAlias(ctx context.Context, base, alias string, period time.Duration, w *countWatch) {
	tick := time.NewTicker(period)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if err := osJSON(ctx, http.MethodPost, base+"/"+alias+"/_refresh", nil, nil); err != nil && ctx.Err() == nil {
			w.fail(fmt.Errorf("refresh: %w", err))
		}
	}
}

// versionWatch is what version readers saw: per key the highest version
// read, every read that found a key at a lower one after it, the
// generations read from in turn and the failed reads (the first few of
// each, with when).
type versionWatch struct {
	name    string
	samples atomic.Int64

	mu          sync.Mutex
	highest     map[string]int64
	back        []string
	backN       int
	from        string   // the generation read last
	froms       []string // the generations read from, in turn, with since when
	errs        []string
	errN        int
	fromSeen    map[string]bool
	keysPerRead map[int]int // how many reads found how many keys
}

func newVersionWatch(name string) *versionWatch {
	return &versionWatch{name: name, highest: map[string]int64{}, fromSeen: map[string]bool{}, keysPerRead: map[int]int{}}
}

// observe takes one read: every visible key's version, read from
// generation from.
func (w *versionWatch) observe(versions map[string]int64, from string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.samples.Add(1)
	w.keysPerRead[len(versions)]++
	if from != w.from {
		w.froms = append(w.froms, stamp()+" "+from)
		w.from = from
		w.fromSeen[from] = true
	}
	var back []string
	for k, v := range versions {
		if hi, ok := w.highest[k]; ok && v < hi {
			back = append(back, fmt.Sprintf("%s %d after %d", k, v, hi))
			continue
		}
		w.highest[k] = v
	}
	if len(back) > 0 {
		w.backN++
		if len(w.back) < 20 {
			slices.Sort(back)
			w.back = append(w.back, fmt.Sprintf("%s from %s: %d keys back, e.g. %s", stamp(), from, len(back), back[0]))
		}
	}
}

func (w *versionWatch) fail(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.errN++
	if len(w.errs) < 20 {
		w.errs = append(w.errs, fmt.Sprintf("%s: %v", stamp(), err))
	}
}

// check returns an error unless the readers read from the old generation
// and then from the fresh one, and no read failed.
func (w *versionWatch) check(old, fresh string) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	var problems []string
	if !w.fromSeen[old] || !w.fromSeen[fresh] || w.from != fresh {
		problems = append(problems, fmt.Sprintf("want reads from %s, then from %s; read from %v", old, fresh, w.froms))
	}
	if w.errN > 0 {
		problems = append(problems, fmt.Sprintf("%d reads failed, the first: %v", w.errN, w.errs))
	}
	if len(problems) > 0 {
		return fmt.Errorf("version readers of %s: %s", w.name, strings.Join(problems, "; "))
	}
	return nil
}

// wentBack says which reads found keys at a lower version than an earlier
// read; "" when none did.
func (w *versionWatch) wentBack() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.backN == 0 {
		return ""
	}
	return fmt.Sprintf("version readers of %s: %d reads found keys at a lower version than an earlier read: %v", w.name, w.backN, w.back)
}

func (w *versionWatch) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return fmt.Sprintf("version readers of %s: %d reads (keys found: %v), %d found keys gone back, %d failed; read from %v",
		w.name, w.samples.Load(), w.keysPerRead, w.backN, w.errN, w.froms)
}

// versionsPostgresView reads every key's version through the view of the
// sink whose table is table until ctx ends, and the live generation in the
// same statement (so in the same snapshot: Switch changes both in one
// transaction).
func versionsPostgresView(ctx context.Context, dsn, table string, w *versionWatch) {
	query := "SELECT key, version, (SELECT live FROM productstream_sink_generations WHERE name = $1) FROM " +
		pgx.Identifier{table + "_live"}.Sanitize()
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			_ = conn.Close(context.Background())
		}
	}()
	for ctx.Err() == nil {
		if conn == nil || conn.IsClosed() {
			var err error
			if conn, err = pgx.Connect(ctx, dsn); err != nil {
				conn = nil
				if ctx.Err() == nil {
					w.fail(err)
					time.Sleep(50 * time.Millisecond)
				}
				continue
			}
		}
		rows, err := conn.Query(ctx, query, table)
		if err != nil {
			if ctx.Err() == nil {
				w.fail(err)
			}
			continue
		}
		versions := map[string]int64{}
		var (
			key           string
			version       int64
			live, anyLive int
		)
		_, err = pgx.ForEachRow(rows, []any{&key, &version, &live}, func() error {
			versions[key], anyLive = version, live
			return nil
		})
		if err != nil {
			if ctx.Err() == nil {
				w.fail(err)
			}
			continue
		}
		w.observe(versions, fmt.Sprintf("generation %d", anyLive))
	}
}

// versionsOpenSearchAlias reads the version of every key of keys through
// alias until ctx ends, by a realtime _mget: it sees what the generation
// behind the alias holds, however recently that was refreshed.
func versionsOpenSearchAlias(ctx context.Context, base, alias string, keys []string, w *versionWatch) {
	query := map[string]any{"ids": keys}
	for ctx.Err() == nil {
		var got struct {
			Docs []struct {
				ID     string `json:"_id"`
				Index  string `json:"_index"`
				Found  bool   `json:"found"`
				Source struct {
					Version int64 `json:"version"`
				} `json:"_source"`
			} `json:"docs"`
		}
		if err := osJSON(ctx, http.MethodPost, base+"/"+alias+"/_mget?realtime=true&_source_includes=version", query, &got); err != nil {
			if ctx.Err() == nil {
				w.fail(err)
			}
			continue
		}
		versions := map[string]int64{}
		indexes := map[string]bool{}
		for _, d := range got.Docs {
			if d.Found {
				versions[d.ID] = d.Source.Version
			}
			indexes[d.Index] = true
		}
		w.observe(versions, strings.Join(slices.Sorted(mapKeys(indexes)), "+"))
	}
}
