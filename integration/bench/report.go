package main

// The results file (Markdown) and the summary printed at the end of a run.

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/productstream/productstream/config"
)

// goal is one target of issue 6 and what this run measured for it.
type goal struct {
	name     string
	figure   string  // what was measured, formatted
	baseline string  // its baseline, formatted
	ratio    float64 // figure / baseline; NaN: not measured
	want     float64
	atMost   bool   // the ratio must be at most want (else at least)
	failed   string // the result when the measurement failed
}

func (g goal) wantText() string {
	if math.IsNaN(g.want) {
		return "—"
	}
	if g.atMost {
		return "≤ " + ratioText(g.want)
	}
	return "≥ " + ratioText(g.want)
}

func (g goal) verdict() string {
	switch {
	case g.failed != "":
		return g.failed
	case math.IsNaN(g.ratio) || math.IsInf(g.ratio, 0):
		return "not measured"
	case g.atMost && g.ratio <= g.want, !g.atMost && g.ratio >= g.want:
		return "**pass**"
	default:
		return "**miss**"
	}
}

func ratioText(r float64) string {
	if math.IsNaN(r) || math.IsInf(r, 0) {
		return "—"
	}
	return strconv.FormatFloat(r, 'f', 2, 64)
}

func div(a, b float64) float64 {
	if b == 0 {
		return math.NaN()
	}
	return a / b
}

// goals are the targets of issue 6 with this run's figures.
func goals(r *results) []goal {
	ec, bc, b1 := r.closed[srvEdge], r.closed[srvB2], r.closed[srvB1]
	eo, bo := r.open[srvEdge], r.open[srvB2]
	b3rate := r.b3.rate()
	b3consume := 0.0
	if r.b3consume != nil && r.b3consume.Seconds > 0 {
		b3consume = float64(r.b3consume.Records) / r.b3consume.Seconds
	}
	return []goal{
		{name: "Ingest throughput ≥ 0.8 × B2 (1 KB, closed loop)", figure: rateText(ec.rps()) + " req/s", baseline: rateText(bc.rps()) + " req/s",
			ratio: div(ec.rps(), bc.rps()), want: 0.8},
		{name: "Ingest throughput ≥ 0.35 × B1 (1 KB, closed loop)", figure: rateText(ec.rps()) + " req/s", baseline: rateText(b1.rps()) + " req/s",
			ratio: div(ec.rps(), b1.rps()), want: 0.35},
		{name: fmt.Sprintf("Ingest p99 at half of its maximum (%s req/s) ≤ 1.5 × B2's p99 at the same rate", rateText(r.openRate)),
			figure: durText(eo.pct(0.99)), baseline: durText(bo.pct(0.99)),
			ratio: div(float64(eo.pct(0.99)), float64(bo.pct(0.99))), want: 1.5, atMost: true},
		{name: "Processor throughput, transactions off ≥ 0.6 × B3", figure: rateText(r.alo.rate()) + " changes/s", baseline: rateText(b3rate) + " records/s",
			ratio: div(r.alo.rate(), b3rate), want: 0.6},
		{name: "Processor throughput, transactions on ≥ 0.4 × B3", figure: rateText(r.eos.rate()) + " changes/s", baseline: rateText(b3rate) + " records/s",
			ratio: div(r.eos.rate(), b3rate), want: 0.4},
		{name: "Restore of the compacted products topic ≥ 0.7 × B3's consume rate", figure: rateText(r.restore.rate()) + " records/s", baseline: rateText(b3consume) + " records/s",
			ratio: div(r.restore.rate(), b3consume), want: 0.7},
		coalescerGoal(r.coalescer),
	}
}

// coalescerTarget is the coalescer's budget per pending key, in bytes.
const coalescerTarget = 512

// coalescerGoal is the coalescer memory target; c is nil when it was not
// measured (-coalescer-memory=false).
func coalescerGoal(c *coalescerResult) goal {
	g := goal{name: "Coalescer memory ≤ 512 B per pending key (1,000,000 keys)", figure: "not measured (-coalescer-memory=false)",
		baseline: "—", ratio: math.NaN(), want: math.NaN()}
	switch {
	case c == nil:
	case c.err != "":
		g.figure = "measurement failed: " + strings.ReplaceAll(c.err, "|", `\|`)
		g.failed = "measurement failed"
	default:
		g.figure = strconv.FormatFloat(c.bytes, 'f', 0, 64) + " B per pending key"
		g.baseline = strconv.Itoa(coalescerTarget) + " B (target)"
		g.ratio, g.want, g.atMost = c.bytes/coalescerTarget, 1, true
	}
	return g
}

func rateText(v float64) string {
	switch {
	case math.IsNaN(v):
		return "—"
	case v >= 100:
		return thousands(int64(math.Round(v)))
	default:
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
}

// thousands formats n with commas: 12,345.
func thousands(n int64) string {
	s := strconv.FormatInt(n, 10)
	if n < 0 {
		return "-" + thousands(-n)
	}
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

func durText(d time.Duration) string {
	switch {
	case d <= 0:
		return "—"
	case d < time.Millisecond:
		return strconv.FormatFloat(float64(d)/float64(time.Microsecond), 'f', 0, 64) + " µs"
	case d < time.Second:
		return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 2, 64) + " ms"
	default:
		return strconv.FormatFloat(d.Seconds(), 'f', 2, 64) + " s"
	}
}

func cpuText(v float64, ok bool) string {
	if !ok || math.IsNaN(v) {
		return "—"
	}
	return strconv.FormatFloat(v, 'f', 3, 64)
}

// table writes a Markdown table.
func table(b *strings.Builder, head []string, rows [][]string) {
	b.WriteString("| " + strings.Join(head, " | ") + " |\n|")
	for range head {
		b.WriteString("---|")
	}
	b.WriteString("\n")
	for _, r := range rows {
		b.WriteString("| " + strings.Join(r, " | ") + " |\n")
	}
	b.WriteString("\n")
}

// loadRows renders one row per server of a load phase.
func loadRows(r *results, phase map[string]*loadResult, open bool) [][]string {
	var rows [][]string
	for _, name := range servers {
		l := phase[name]
		if l == nil {
			continue
		}
		srv, _ := l.cpuPer1000("server")
		kafka, kok := l.cpuPer1000("kafka")
		harness, hok := l.cpuPer1000("harness")
		row := []string{name}
		if open {
			row = append(row, rateText(l.rate))
		}
		row = append(row, rateText(l.rps()), durText(l.pct(0.50)), durText(l.pct(0.95)), durText(l.pct(0.99)), durText(l.max()),
			thousands(int64(l.errors())), cpuText(srv, true), cpuText(kafka, kok && r.kafkaCPU), cpuText(harness, hok))
		rows = append(rows, row)
	}
	return rows
}

var loadHead = []string{"server", "req/s (202)", "p50", "p95", "p99", "max", "not 202", "CPU s / 1k req: server", "Kafka", "harness"}

// renderMarkdown renders RESULTS.md.
func renderMarkdown(r *results) string {
	var b strings.Builder
	o := r.o
	b.WriteString("# productstream benchmark results\n\n")
	b.WriteString("<!-- Generated by integration/bench: do not edit by hand. Rerun the command below instead. -->\n")
	b.WriteString("*Generated by `integration/bench`; do not edit by hand.*\n\n")
	fmt.Fprintf(&b, "Run `%s`, started %s, took %s. Every figure below comes from this one run, on one broker, with the same request bodies; compare the ratios, not the absolute numbers (the machine is shared and noisy).\n\n",
		r.runID, r.started.UTC().Format("2006-01-02 15:04 MST"), r.elapsed.Round(time.Second))
	b.WriteString("```sh\n" + o.command + "\n```\n\n")

	b.WriteString("## Targets (issue 6)\n\n")
	var rows [][]string
	for _, g := range goals(r) {
		rows = append(rows, []string{g.name, g.figure, g.baseline, ratioText(g.ratio), g.wantText(), g.verdict()})
	}
	table(&b, []string{"target", "productstream", "baseline", "ratio", "target ratio", "result"}, rows)

	b.WriteString("## Machine\n\n")
	rows = rows[:0]
	for _, kv := range r.machine {
		rows = append(rows, []string{kv[0], kv[1]})
	}
	table(&b, []string{"", ""}, rows)

	b.WriteString("## Settings\n\n")
	mixed := workload{mix: o.mix}
	bin := "built from this tree (`go build ./cmd/productstream`)"
	if o.bin != "" {
		bin = "the prebuilt binary `" + o.bin + "` (-bin)"
	}
	settings := [][]string{
		{"productstream", bin},
		{"rounds", fmt.Sprintf("every ingest phase is split into %d rounds that rotate through the three servers (all running at once), and each server's rounds are merged", max(1, o.rounds))},
		{"warm-up per server", o.warmup.String()},
		{"closed loop, 1 KB (maximum throughput)", o.duration.String() + " per server, " + strconv.Itoa(o.concurrency) + " keep-alive connections"},
		{"open loop, 1 KB", o.openDuration.String() + " per server at " + rateText(r.openRate) + " req/s (half of the edge's maximum), " + strconv.Itoa(o.concurrency) + " senders"},
		{"closed loop, mixed bodies", o.mixedDuration.String() + " per server, bodies " + mixed.label()},
		{"request", "LiSA `POST " + lisaPath + "`, `Authorization: ApiKey`, `X-Hmac-Signature` (hex HMAC-SHA256), JSON with productId, price, currency, title, updatedAt, seq and a description padding the body to its size"},
		{"products", fmt.Sprintf("%s ids, Zipf s=%g (math/rand/v2), seed %d", thousands(int64(o.keys)), o.zipfS, o.seed)},
		{"partitions", strconv.Itoa(int(o.parts)) + " for every topic"},
		{"body limit", thousands(int64(maxBodyOf(o))) + " bytes on every server (`max_body_bytes`)"},
		{"B2 producer", "acks=all, idempotent, murmur2 key partitioning, linger " + o.b2Linger.String() + ", " + config.DefaultCompression + " batches (the edge's settings; B3, the processor inputs and the restore input are written " + config.DefaultCompression + " too)"},
		{"processor", fmt.Sprintf("quiet_period %s, max_delay %s; B3 and each mode run %d times, in alternating order (B3, off, on, on, off, B3, ...), each on its own copy of the input, and summed", o.quietPeriod, o.maxDelay, max(1, o.procRounds))},
		{"freshness run", fmt.Sprintf("%s at %s req/s, one request per product, quiet_period %s, exactly once", o.freshDuration, rateText(o.freshRate), o.quietPeriod)},
	}
	if in := r.input; in != nil {
		settings = append(settings, []string{"processor input", fmt.Sprintf("%s changes per run: %s changes the edge wrote during this run with a value of at most %d bytes (the 1 KB bodies; of %s it wrote, at most %s used), copied %d× in order onto the same partitions; %.0f bytes per value on average",
			thousands(in.n), thousands(in.small), o.procMaxValue, thousands(in.edgeRecords), thousands(int64(o.procMaxChanges)), in.rounds, float64(in.valueBytes)/float64(max(in.n, 1)))})
	}
	settings = append(settings, restoreSetting(r))
	table(&b, []string{"setting", "value"}, settings)

	if len(r.closed) > 0 {
		renderIngest(&b, r)
	}
	if r.b3 != nil {
		renderProcessor(&b, r)
	}
	if r.fresh != nil {
		renderFresh(&b, r)
	}
	renderErrors(&b, r)
	renderNotes(&b, r)
	return b.String()
}

func renderIngest(b *strings.Builder, r *results) {
	mixed := workload{mix: r.o.mix}
	b.WriteString("## Ingest: maximum throughput (closed loop, 1 KB)\n\n")
	table(b, loadHead, loadRows(r, r.closed, false))
	fmt.Fprintf(b, "edge / B2 = **%s**, edge / B1 = **%s** (accepted req/s).\n\n",
		ratioText(div(r.closed[srvEdge].rps(), r.closed[srvB2].rps())), ratioText(div(r.closed[srvEdge].rps(), r.closed[srvB1].rps())))

	fmt.Fprintf(b, "## Ingest: latency at half of the edge's maximum (open loop, 1 KB, %s req/s)\n\n", rateText(r.openRate))
	openHead := slices.Insert(slices.Clone(loadHead), 1, "offered req/s")
	table(b, openHead, loadRows(r, r.open, true))
	fmt.Fprintf(b, "edge p99 / B2 p99 = **%s**. Latency is measured from each request's intended send time, so queueing behind a slow answer counts.\n\n",
		ratioText(div(float64(r.open[srvEdge].pct(0.99)), float64(r.open[srvB2].pct(0.99)))))

	fmt.Fprintf(b, "## Ingest: mixed bodies (closed loop, %s)\n\n", mixed.label())
	table(b, loadHead, loadRows(r, r.mixed, false))
	fmt.Fprintf(b, "edge / B2 = **%s**, edge / B1 = **%s** (accepted req/s).\n\n",
		ratioText(div(r.mixed[srvEdge].rps(), r.mixed[srvB2].rps())), ratioText(div(r.mixed[srvEdge].rps(), r.mixed[srvB1].rps())))
}

func renderProcessor(b *strings.Builder, r *results) {
	b.WriteString("## Processor\n\n")
	var rows [][]string
	b3 := r.b3.rate()
	for _, p := range []*procResult{r.b3, r.alo, r.eos} {
		if p == nil {
			continue
		}
		updates, ratio, emitted := "—", "—", "—"
		if p != r.b3 {
			updates, ratio, emitted = thousands(p.updates), strconv.FormatFloat(p.coalesce(), 'f', 2, 64), durText(p.meanEmitted())
		}
		kafka := math.NaN()
		if p.changes > 0 {
			kafka = p.kafkaCPU / float64(p.changes) * 1000
		}
		rows = append(rows, []string{procLabel(r, p), thousands(p.changes), durText(p.elapsed), rateText(p.rate()), ratioText(div(p.rate(), b3)),
			updates, ratio, emitted, cpuText(p.cpuPer1000(), true), cpuText(kafka, r.kafkaCPU)})
	}
	table(b, []string{"run", "changes (all rounds)", "time", "changes/s", "× B3", "updates", "changes per update", "every update written after (mean)", "CPU s / 1k changes: process", "Kafka"}, rows)
	b.WriteString("Time runs from the moment every partition is assigned (after the restore, for the processor; the assignment callback, for B3) until the group's committed offsets reach the end of the input (polled every " +
		r.o.pollEvery.String() + "). \"Every update written after\" is the latest timestamp on `updates` once their change counts add up to the input, from the same start. Kafka's CPU for B3 covers the whole B3 process, start-up included.\n\n")

	renderProfiles(b, r)

	b.WriteString("## Restore\n\n")
	rows = rows[:0]
	if c := r.b3consume; c != nil {
		rows = append(rows, []string{"B3: plain franz-go consumer, read_committed, products from start to end", thousands(c.Records), durText(seconds(c.Seconds)), rateText(float64(c.Records) / c.Seconds), "1.00"})
	}
	if rr := r.restore; rr != nil {
		b3c := 0.0
		if r.b3consume != nil && r.b3consume.Seconds > 0 {
			b3c = float64(r.b3consume.Records) / r.b3consume.Seconds
		}
		rows = append(rows, []string{fmt.Sprintf("processor restore on assignment (new group, exactly once; %d log line(s), logged %s records/s)", rr.lines, rateText(rr.logged)),
			thousands(rr.records), durText(rr.took), rateText(rr.rate()), ratioText(div(rr.rate(), b3c))})
	}
	table(b, []string{"reader", "records", "time", "records/s", "× B3"}, rows)
	if in := r.restoreIn; in != nil {
		fmt.Fprintf(b, "The products topic is built for the restore, under a topic prefix of its own: the %s committed state records of the first transactional processor run (one per update) copied %d× until it held at least %s records (`-restore-records`), %s in all. Each copy keeps its record's value, partition and `version` header (so the restore keeps the value encoded, as it would a real catalog's) and has a key of its own (`<key>#<copy>`), so that the ratio reflects records/s over a catalog of that size rather than the fixed costs of a client and its offsets. The topic is created compacted, like every state topic. ",
			thousands(in.source), in.copies, thousands(int64(r.o.restoreRecords)), thousands(in.records))
	}
	b.WriteString("The restore's time is the `took` of its \"partitions assigned\" log line: client start, stable offsets, then products, the other (empty) state topics and the (empty) pending changelog read to their ends, each state kept as it is read (encoded, with its version). B3's time also runs from its client's creation.\n\n")

}

// restoreSetting is the Settings row of the restore's input.
func restoreSetting(r *results) []string {
	text := fmt.Sprintf("a products topic of its own holding at least %s records (`-restore-records`): the first transactional processor run's committed state records, copied with a unique key per copy (`<key>#<copy>`), onto the same partitions, with the same values and `version` headers",
		thousands(int64(r.o.restoreRecords)))
	if in := r.restoreIn; in != nil {
		text += fmt.Sprintf("; this run: %s records, %s state records copied %d×, %.0f bytes per value on average",
			thousands(in.records), thousands(in.source), in.copies, float64(in.valueBytes)/float64(max(in.records, 1)))
	}
	return []string{"restore input", text}
}

func renderFresh(b *strings.Builder, r *results) {
	f, o := r.fresh, r.o
	b.WriteString("## End-to-end freshness (202 to the product's first update)\n\n")
	table(b, []string{"from the 202 to", "offered req/s", "accepted", "updates seen", "p50", "p95", "p99", "max"},
		[][]string{
			{"the update's arrival at a read_committed consumer", rateText(f.load.rate), thousands(int64(f.accepted)), thousands(int64(f.seen)),
				durText(quantile(f.lat, 0.5)), durText(quantile(f.lat, 0.95)), durText(quantile(f.lat, 0.99)), durText(quantile(f.lat, 1))},
			{"the update record's timestamp (when the processor produced it)", "", "", "",
				durText(quantile(f.produced, 0.5)), durText(quantile(f.produced, 0.95)), durText(quantile(f.produced, 0.99)), durText(quantile(f.produced, 1))},
		})
	fmt.Fprintf(b, "The edge and a transactional processor (quiet_period %s, max_delay %s) run together; every request is a new product, and freshness is the time from its 202 to the arrival of its update at a read_committed consumer. The quiet period is the floor.\n\n", o.quietPeriod, o.maxDelay)
}

func renderErrors(b *strings.Builder, r *results) {
	b.WriteString("## Errors\n\n")
	var errRows [][]string
	for _, ph := range []struct {
		name string
		m    map[string]*loadResult
	}{{"closed 1 KB", r.closed}, {"open 1 KB", r.open}, {"mixed", r.mixed}} {
		for _, name := range servers {
			if l := ph.m[name]; l != nil && l.errors() > 0 {
				errRows = append(errRows, errorRow(name, ph.name, l))
			}
		}
	}
	if f := r.fresh; f != nil && f.load.errors() > 0 {
		errRows = append(errRows, errorRow(srvEdge, "freshness", f.load))
	}
	if r.fresh != nil && r.fresh.seen < r.fresh.accepted {
		errRows = append(errRows, []string{srvEdge + " + processor", "freshness", fmt.Sprintf("%d accepted products had no update within the wait", r.fresh.accepted-r.fresh.seen), ""})
	}
	if len(errRows) == 0 {
		b.WriteString("Every request was answered 202.\n\n")
	} else {
		table(b, []string{"server", "phase", "answers other than 202", "first transport error"}, errRows)
	}
}

func renderNotes(b *strings.Builder, r *results) {
	b.WriteString("## How it is measured\n\n")
	notes := []string{
		"Every server is a separate process: the edge is `productstream ingest` built from this tree; B1 and B2 are this harness re-executed with `-serve b1|b2`; B3 is `-serve b3-passthrough` and `-serve b3-consume`; the processor is `productstream process`.",
		"B1 reads the body under `http.MaxBytesReader` and answers 202. B2 reads it the same way, checks the API key and the hex HMAC-SHA256 (`hmac.Equal`), takes `productId` with a minimal `encoding/json` decode into a one-field struct for the record key `bench:<productId>` (so it partitions by product like the edge), `ProduceSync`s the raw bytes to its own topic and answers 202.",
		"B3 passthrough: a consumer group reads the processor's input from the start and produces every record on with acks=all and the processor's producer settings (linger 5ms, murmur2), committing after each acknowledged batch, until all are through.",
		"Closed loop: each connection sends its next request when the previous one is answered; req/s counts 202s over the time from the first send to the last answer. Open loop: request i is due at start + i/rate; its latency runs from that due time when it is sent late (no coordinated omission), else from its send.",
		"Latency percentiles are exact (every latency kept and sorted, nearest rank).",
		"Coalescer memory: after the last phase (so its compile and its million-key heap disturb no timed phase), the harness runs `go test -run '^" + coalescerTest + "$' -count=1 -v ./processor/`, which adds 1,000,000 pending keys to a coalescer and logs the growth of the live heap per key, key strings excluded (they belong to the state); the ratio is that figure over the 512 B target.",
		"CPU: utime+stime of each process from /proc/<pid>/stat (all threads, 10 ms ticks) before and after each phase; the harness (load generator) through getrusage. The load generator shares the machine with the servers and Kafka.",
	}
	if r.kafkaCPU {
		notes = append(notes, "Kafka's CPU is its JVM's, found through realbroker.sh's state dir; the schema registry is not counted (the roles only use it at start and for decoding new schema ids).")
	} else {
		notes = append(notes, "Kafka's CPU is not measured: "+r.rbNote+".")
	}
	for _, n := range notes {
		b.WriteString("- " + n + "\n")
	}
}

func maxBodyOf(o *options) int {
	h := harness{o: o}
	return h.maxBody()
}

func procLabel(r *results, p *procResult) string {
	switch p {
	case r.b3:
		return "B3 passthrough (franz-go consume, produce acks=all, commit)"
	case r.alo:
		return "processor, transactions off (at least once)"
	case r.eos:
		return "processor, transactions on (exactly once)"
	}
	return p.name
}

func errorRow(server, phase string, l *loadResult) []string {
	codes := make([]int, 0, len(l.status))
	for c := range l.status {
		if c != 202 {
			codes = append(codes, c)
		}
	}
	slices.Sort(codes)
	parts := make([]string, 0, len(codes)+1)
	for _, c := range codes {
		parts = append(parts, fmt.Sprintf("%d × %s", c, thousands(int64(l.status[c]))))
	}
	if l.netErrs > 0 {
		parts = append(parts, fmt.Sprintf("no answer × %s", thousands(int64(l.netErrs))))
	}
	return []string{server, phase, strings.Join(parts, ", "), l.firstErr}
}

// summary is what the harness prints when it is done.
func summary(r *results) string {
	var b strings.Builder
	fmt.Fprintf(&b, "productstream bench %s (%s)\n\n", r.runID, r.elapsed.Round(time.Second))
	for _, g := range goals(r) {
		fmt.Fprintf(&b, "%-8s %-90s ratio %-5s (want %s)\n", strings.Trim(g.verdict(), "*"), g.name, ratioText(g.ratio), g.wantText())
	}
	b.WriteString("\n")
	for _, name := range servers {
		c, o, m := r.closed[name], r.open[name], r.mixed[name]
		if c == nil || o == nil || m == nil {
			continue
		}
		fmt.Fprintf(&b, "%-5s closed 1 KB %8s req/s p99 %-10s | open %s req/s p99 %-10s | mixed %8s req/s p99 %s\n", name,
			rateText(c.rps()), durText(c.pct(0.99)), rateText(o.rate), durText(o.pct(0.99)), rateText(m.rps()), durText(m.pct(0.99)))
	}
	if r.b3 != nil {
		fmt.Fprintf(&b, "processor: B3 %s records/s, transactions off %s changes/s, on %s changes/s; %.2f changes per update\n",
			rateText(r.b3.rate()), rateText(r.alo.rate()), rateText(r.eos.rate()), r.eos.coalesce())
	}
	if r.b3consume != nil && r.b3consume.Seconds > 0 {
		fmt.Fprintf(&b, "restore: %s records/s vs B3 consume %s records/s (%s records)\n", rateText(r.restore.rate()), rateText(float64(r.b3consume.Records)/r.b3consume.Seconds),
			thousands(r.b3consume.Records))
	}
	if f := r.fresh; f != nil {
		fmt.Fprintf(&b, "freshness: p50 %s p99 %s (%d of %d products; produced after p50 %s p99 %s)\n", durText(quantile(f.lat, 0.5)), durText(quantile(f.lat, 0.99)), f.seen, f.accepted,
			durText(quantile(f.produced, 0.5)), durText(quantile(f.produced, 0.99)))
	}
	return b.String()
}

// renderProfiles writes where the processor's CPU went in the profiled runs.
func renderProfiles(b *strings.Builder, r *results) {
	if len(r.profiles) == 0 {
		return
	}
	b.WriteString("## Where the processor's CPU goes\n\n")
	b.WriteString("An extra run of the processor in each mode, after the measured ones and over another copy of the same input, with `ops.listen` set; the harness took back-to-back 1 s CPU profiles through it for the whole run and merged them with `go tool pprof`. A sample counts in every area its stack passes through, so the shares can add up to more than 100 %.\n\n")
	head := []string{"area"}
	for _, p := range r.profiles {
		head = append(head, p.name)
	}
	rows := [][]string{}
	row := []string{"CPU sampled (µs per change)"}
	for _, p := range r.profiles {
		row = append(row, fmt.Sprintf("%.2f s (%.1f µs)", p.total, p.total/float64(max(p.changes, 1))*1e6))
	}
	rows = append(rows, row)
	for i, a := range profileAreas {
		row := []string{a[0]}
		for _, p := range r.profiles {
			row = append(row, fmt.Sprintf("%.0f %%", 100*p.areas[i].share))
		}
		rows = append(rows, row)
	}
	table(b, head, rows)
	for _, p := range r.profiles {
		fmt.Fprintf(b, "<details><summary>%s: <code>go tool pprof -top</code></summary>\n\n```text\n%s\n```\n\n</details>\n\n", p.name, p.top)
	}
}
