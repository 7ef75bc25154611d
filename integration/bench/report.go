package main

// The results file (Markdown) and the summary printed at the end of a run.

import (
	"fmt"
	"math"
	"runtime"
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

// ratioText is the ratio as the targets table shows it: two decimals,
// three when two would show the target itself for a ratio that misses it.
func (g goal) ratioText() string {
	t := ratioText(g.ratio)
	if !math.IsNaN(g.want) && t == ratioText(g.want) && g.ratio != g.want {
		return strconv.FormatFloat(g.ratio, 'f', 3, 64)
	}
	return t
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

// cpuPerChangeBefore is the CPU per change, in µs, that issue 15 quotes
// for the profiled processor run named name, and asks to cut by a third;
// false for another run.
func cpuPerChangeBefore(name string) (float64, bool) {
	switch name {
	case "processor, transactions off":
		return 18, true
	case "processor, transactions on":
		return 23, true
	}
	return 0, false
}

// goals are the targets of issue 6, of the sinks issue and of issue 15
// with this run's figures.
func goals(r *results) []goal {
	ec, bc, b1 := r.closed[srvEdge], r.closed[srvB2], r.closed[srvB1]
	eo, bo := r.open[srvEdge], r.open[srvB2]
	b3rate := r.b3.rate()
	b3consume := 0.0
	if r.b3consume != nil && r.b3consume.Seconds > 0 {
		b3consume = float64(r.b3consume.Records) / r.b3consume.Seconds
	}
	gs := []goal{
		{name: "Ingest throughput ≥ 0.9 × B2 (1 KB, closed loop)", figure: rateText(ec.rps()) + " req/s", baseline: rateText(bc.rps()) + " req/s",
			ratio: div(ec.rps(), bc.rps()), want: 0.9},
		{name: "Ingest throughput ≥ 0.35 × B1 (1 KB, closed loop)", figure: rateText(ec.rps()) + " req/s", baseline: rateText(b1.rps()) + " req/s",
			ratio: div(ec.rps(), b1.rps()), want: 0.35},
		{name: fmt.Sprintf("Ingest p99 at half of its maximum (%s req/s) ≤ 1.2 × B2's p99 at the same rate", rateText(r.openRate)),
			figure: durText(eo.pct(0.99)), baseline: durText(bo.pct(0.99)),
			ratio: div(float64(eo.pct(0.99)), float64(bo.pct(0.99))), want: 1.2, atMost: true},
		{name: "Processor throughput, transactions off ≥ 0.6 × B3", figure: rateText(r.alo.rate()) + " changes/s", baseline: rateText(b3rate) + " records/s",
			ratio: div(r.alo.rate(), b3rate), want: 0.6},
		{name: "Processor throughput, transactions on ≥ 0.4 × B3", figure: rateText(r.eos.rate()) + " changes/s", baseline: rateText(b3rate) + " records/s",
			ratio: div(r.eos.rate(), b3rate), want: 0.4},
		{name: "Restore of the compacted products topic ≥ 0.7 × B3's consume rate", figure: rateText(r.restore.rate()) + " records/s", baseline: rateText(b3consume) + " records/s",
			ratio: div(r.restore.rate(), b3consume), want: 0.7},
		coalescerGoal(r.coalescer),
	}
	// The sinks issue: every sink at least 0.8 × its bare write.
	var sinks []goal
	if r.o.sections["sinks"] {
		for _, kind := range r.o.sinkKinds {
			g := goal{name: fmt.Sprintf("Sink throughput, %s ≥ %s × %s (the bare write)", kind, ratioText(sinkTarget), baselineName(kind)),
				figure: "—", baseline: "—", ratio: math.NaN(), want: sinkTarget}
			if s := r.sinkResult(kind); s != nil {
				g.figure, g.baseline, g.ratio = rateText(s.sink.median())+" records/s (median round)", rateText(s.base.median())+" records/s", s.ratio()
			}
			sinks = append(sinks, g)
		}
	}
	gs = append(gs, sinks...)
	// Issue 15: CPU per change a third below the figures it quotes, in
	// both modes (the profiled runs' sampled CPU).
	for _, p := range r.profiles {
		was, ok := cpuPerChangeBefore(p.name)
		if !ok {
			continue
		}
		us := p.total / float64(max(p.changes, 1)) * 1e6
		gs = append(gs, goal{name: fmt.Sprintf("CPU per change, %s ≤ ⅔ × %.0f µs (issue 15's figure)", p.name, was),
			figure: fmt.Sprintf("%.1f µs", us), baseline: fmt.Sprintf("%.0f µs", was), ratio: us / was, want: 2.0 / 3, atMost: true})
	}
	// Issue 15: freshness to every sink at the first rate, and start-up.
	if r.o.sections["sinkfresh"] && len(r.o.sinkFreshRates) > 0 {
		rate := r.o.sinkFreshRates[0]
		var f *sinkFreshResult
		if len(r.sinkFresh) > 0 {
			f = r.sinkFresh[0]
		}
		for _, kind := range r.o.sinkKinds {
			g := goal{name: fmt.Sprintf("Freshness to %s at %s req/s: p99 ≤ %s (202 to visible to its readers)", kind, rateText(rate), durText(freshTarget)),
				figure: "—", baseline: durText(freshTarget) + " (target)", ratio: math.NaN(), want: 1, atMost: true}
			if s := f.sink(kind); s != nil {
				p99 := quantile(s.visible, 0.99)
				g.figure = "p99 " + durText(p99)
				g.ratio = div(float64(p99), float64(freshTarget))
				if len(s.visible) < f.accepted {
					g.failed = fmt.Sprintf("%d of %d products never visible", f.accepted-len(s.visible), f.accepted)
				}
			}
			gs = append(gs, g)
		}
	}
	if r.o.sections["startup"] {
		g := goal{name: fmt.Sprintf("Start-up of `productstream process` to consuming every partition: p50 ≤ %s", durText(startupTarget)),
			figure: "—", baseline: durText(startupTarget) + " (target)", ratio: math.NaN(), want: 1, atMost: true}
		if s := r.startup; s != nil && len(s.launches) > 0 {
			p50 := quantile(s.consuming(), 0.5)
			g.figure = fmt.Sprintf("p50 %s (%d launches)", durText(p50), len(s.launches))
			g.ratio = div(float64(p50), float64(startupTarget))
		}
		gs = append(gs, g)
	}
	return gs
}

// sinkResult returns kind's result, nil when not measured.
func (r *results) sinkResult(kind string) *sinkResult {
	for _, s := range r.sinks {
		if s.kind == kind {
			return s
		}
	}
	return nil
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

	b.WriteString("## Targets\n\n")
	b.WriteString("Issue 6 (processor, restore, coalescer), the sinks issue (each sink beside its bare write) and issue 15 (ingest beside B2, CPU per change, freshness to every sink, start-up).\n\n")
	var rows [][]string
	for _, g := range goals(r) {
		rows = append(rows, []string{g.name, g.figure, g.baseline, g.ratioText(), g.wantText(), g.verdict()})
	}
	table(&b, []string{"target", "productstream", "baseline", "ratio", "target ratio", "result"}, rows)

	b.WriteString("## Machine\n\n")
	rows = rows[:0]
	for _, kv := range r.machine {
		rows = append(rows, []string{kv[0], kv[1]})
	}
	for _, kind := range []string{"opensearch", "postgres", "redis", "webhook"} {
		if bi, ok := r.backends[kind]; ok {
			rows = append(rows, []string{kind + " backend", bi.name + " at " + bi.where})
		}
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
		{"garbage collector", fmt.Sprintf("the edge: the ingest role's defaults (`runtime.gc_percent` %d, `runtime.memory_limit_bytes` %d); the processor, B1, B2 and B3: Go's (100, no limit)",
			config.DefaultIngestGCPercent, config.DefaultIngestMemoryLimitBytes)},
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
		{"processor", fmt.Sprintf("quiet_period %s, max_delay %s, commit_interval %s (exactly once); B3 and each mode run %d times, in alternating order (B3, off, on, on, off, B3, ...), each on its own copy of the input, and summed", o.quietPeriod, o.maxDelay, o.commitInterval, max(1, o.procRounds))},
		{"freshness run", fmt.Sprintf("%s at %s req/s, one request per product, quiet_period %s, exactly once", o.freshDuration, rateText(o.freshRate), o.quietPeriod)},
	}
	if in := r.input; in != nil {
		settings = append(settings, []string{"processor input", fmt.Sprintf("%s changes per run: %s changes the edge wrote during this run with a value of at most %d bytes (the 1 KB bodies; of %s it wrote, at most %s used), copied %d× in order onto the same partitions; %.0f bytes per value on average",
			thousands(in.n), thousands(in.small), o.procMaxValue, thousands(in.edgeRecords), thousands(int64(o.procMaxChanges)), in.rounds, float64(in.valueBytes)/float64(max(in.n, 1)))})
	}
	settings = append(settings, restoreSetting(r))
	if o.sections["sinks"] || o.sections["sinkfresh"] {
		settings = append(settings, sinkSettings(r)...)
	}
	if o.sections["startup"] {
		settings = append(settings, []string{"start-up", fmt.Sprintf("%d launches of `productstream process` (exactly once, one member, %d partitions; after one more launch that creates the topics), each stopped with SIGTERM before the next; then two takeovers after a SIGKILL", o.startupLaunches, o.parts)})
	}
	settings = append(settings, []string{"connections to Kafka and the registry", r.security})
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
	if len(r.sinks) > 0 {
		renderSinks(&b, r)
	}
	if len(r.sinkFresh) > 0 {
		renderSinkFresh(&b, r)
	}
	if r.startup != nil {
		renderStartup(&b, r)
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

	if len(r.ingestProfiles) > 0 {
		b.WriteString("## Where the edge's CPU goes\n\n")
		fmt.Fprintf(b, "One more closed-loop phase of %s (1 KB) against B2 and then the edge, after the measured ones, each server alone; the harness took back-to-back 1 s CPU profiles of the server through its profile endpoint (`ops.listen` for the edge, `-pprof` for B2) and merged them with `go tool pprof`. CPU per request is the samples over the requests answered 202 in the phase. A sample counts in every area its stack passes through, so the shares can add up to more than 100 %%. What the edge does beyond B2: it parses and normalizes the body into a change (JSON), encodes it in Avro, checks each source's limits and refusal budget, and records the delivery (metrics, and a record on the deliveries topic, batched apart from the answer).\n\n", ingestProfileDuration)
		renderProfileTable(b, r.ingestProfiles, edgeProfileAreas, "request")
	}
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
	if si := r.sinkIn; si != nil && si.load.errors() > 0 {
		errRows = append(errRows, errorRow(srvEdge, "sinks input", si.load))
	}
	for _, f := range r.sinkFresh {
		phase := "freshness to the sinks at " + rateText(f.rate) + " req/s"
		if f.load.errors() > 0 {
			errRows = append(errRows, errorRow(srvEdge, phase, f.load))
		}
		for _, s := range f.sinks {
			if len(s.visible) < f.accepted {
				errRows = append(errRows, []string{srvEdge + " + processor + " + s.kind + " sink", phase, fmt.Sprintf("%d accepted products were not visible within the wait", f.accepted-len(s.visible)), ""})
			}
		}
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
	if r.o.sections["sinks"] {
		notes = append(notes, "Sinks: B4-<kind> is the sinks' baseline, a plain franz-go consumer doing the bare write (integration/bench/bare.go); the sinks and their baselines run in the harness process, one at a time, while no other role runs. The backends (started by integration/backends/backends.sh) may serve other clients during the run; their CPU figures then include that work.")
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
		fmt.Fprintf(&b, "%-8s %-90s ratio %-5s (want %s)\n", strings.Trim(g.verdict(), "*"), g.name, g.ratioText(), g.wantText())
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
	for _, s := range r.sinks {
		fmt.Fprintf(&b, "sink %-10s %8s records/s vs %s %8s records/s (median rounds): %s (all rounds: %s)\n", s.kind, rateText(s.sink.median()), baselineName(s.kind), rateText(s.base.median()), ratioText(s.ratio()), ratioText(s.totalRatio()))
	}
	for _, f := range r.sinkFresh {
		for _, s := range f.sinks {
			fmt.Fprintf(&b, "freshness to %-10s at %5s req/s: visible p50 %s p95 %s p99 %s max %s (%d of %d products; on products p50 %s, written p50 %s)\n", s.kind, rateText(f.rate),
				durText(quantile(s.visible, 0.5)), durText(quantile(s.visible, 0.95)), durText(quantile(s.visible, 0.99)), durText(quantile(s.visible, 1)), len(s.visible), f.accepted,
				durText(quantile(f.onKafka, 0.5)), durText(quantile(s.written, 0.5)))
		}
	}
	if s := r.startup; s != nil {
		c := s.consuming()
		fmt.Fprintf(&b, "start-up to consuming: p50 %s max %s (%d launches); takeover after SIGKILL: dynamic %s, static restarted %s\n",
			durText(quantile(c, 0.5)), durText(quantile(c, 1)), len(c), durText(s.dynamic.took), durText(s.static.took))
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
	renderProfileTable(b, r.profiles, profileAreas, "change")
	b.WriteString("Before the work of issue 15, its profile put the processor at about 18 µs per change with transactions off and 23 µs with them on: goavro's decoding 33 %, merging and rendering 24 %, franz-go 16 %, the garbage collector 7 %, and, with transactions on, the pending changelog's `encoding/json` about 9 %.\n\n")
}

// renderProfileTable writes the share of each area in each profile, and
// the top of each; unit names what a profile's changes count.
func renderProfileTable(b *strings.Builder, profiles []*profileResult, areas []profileArea, unit string) {
	head := []string{"area"}
	for _, p := range profiles {
		head = append(head, p.name)
	}
	rows := [][]string{}
	row := []string{"CPU sampled (µs per " + unit + ")"}
	for _, p := range profiles {
		row = append(row, fmt.Sprintf("%.2f s (%.1f µs)", p.total, p.total/float64(max(p.changes, 1))*1e6))
	}
	rows = append(rows, row)
	for i, a := range areas {
		row := []string{a.label}
		for _, p := range profiles {
			row = append(row, fmt.Sprintf("%.0f %%", 100*p.areas[i].share))
		}
		rows = append(rows, row)
	}
	table(b, head, rows)
	for _, p := range profiles {
		fmt.Fprintf(b, "<details><summary>%s: <code>go tool pprof -top</code></summary>\n\n```text\n%s\n```\n\n</details>\n\n", p.name, p.top)
	}
}

// sinkWriters say what each sink and each baseline does per batch.
var sinkWriters = map[string][2]string{
	"opensearch": {"one `_bulk` request of the documents with `version_type=external_gte`, every item's answer checked (applied, stale, dead letter, retry)",
		"one plain `_bulk` index request of the same documents (no version), into an index with the sink's settings and mappings; fails on `errors: true`"},
	"postgres": {"one `INSERT ... SELECT FROM unnest(...) ON CONFLICT (key) DO UPDATE ... WHERE version < EXCLUDED.version` that also returns each record's outcome (rows sorted by key)",
		"one `INSERT ... SELECT FROM unnest(...) ON CONFLICT (key) DO UPDATE` without the version guard, into a table of the same columns"},
	"redis": {"one pipeline of `EVALSHA` calls, one per 200 keys: a Lua script compares each version held and `HSET`s the fields where newer",
		"one pipeline of `HSET`s of the same five fields (version, deleted, state, updated_at, generation)"},
	"webhook": {"one signed POST per record (Standard Webhooks headers, an in-memory last-delivered version per key), -webhook-concurrency at once, the batch waited for",
		"one unsigned POST per record of the same body, -webhook-concurrency at once, the batch waited for"},
}

// sinkSettings are the Settings rows of the sinks section.
func sinkSettings(r *results) [][]string {
	o := r.o
	in := "products sent once each"
	if si := r.sinkIn; si != nil {
		in = fmt.Sprintf("%s products (%s accepted), each sent once with a %s body through an edge and a transactional processor (quiet_period %s) on a prefix of their own, as fast as the edge answers; the processor wrote %s state records to `products` (%.0f bytes per value on average) in %s",
			thousands(int64(si.sent)), thousands(int64(si.accepted)), sizeLabel(o.size), o.quietPeriod, thousands(si.records), float64(si.valueBytes)/float64(max(si.records, 1)), si.took.Round(100*time.Millisecond))
	}
	return [][]string{
		{"sinks input", in + " (`-sink-records`)"},
		{"sinks", fmt.Sprintf("each of %s runs %d times beside its baseline, in alternating order (baseline, sink, sink, baseline, ...), each run into a fresh index, table or key prefix (dropped after it) with a fresh consumer group; batch.max_records %d, batch.linger %s, batch.max_bytes %s, webhook concurrency %d",
			strings.Join(o.sinkKinds, ", "), max(1, o.sinkRounds), o.sinkBatch, o.sinkLinger, thousands(config.DefaultSinkBatchBytes)+" bytes", o.webhookConcurrency)},
		{"freshness to the sinks", fmt.Sprintf("%s at each of %s req/s, one request per product, after a warm-up of %s at the same rate whose products are not measured (`-warmup`), quiet_period %s, max_delay %s, exactly once, with one sink of each of %s running (batch.linger %s, batch.max_records %d); OpenSearch, PostgreSQL and Redis asked every %s",
			o.sinkFreshDuration, ratesText(o.sinkFreshRates), o.warmup, o.quietPeriod, o.maxDelay, strings.Join(o.sinkKinds, ", "), o.sinkFreshLinger, o.sinkBatch, o.sinkFreshPoll)},
	}
}

// ratesText is "200 and 2,000".
func ratesText(rates []float64) string {
	t := make([]string, len(rates))
	for i, r := range rates {
		t[i] = rateText(r)
	}
	if len(t) < 2 {
		return strings.Join(t, "")
	}
	return strings.Join(t[:len(t)-1], ", ") + " and " + t[len(t)-1]
}

// renderSinks writes the sinks' throughput beside their bare writes, and
// where the CPU of those below their target goes.
func renderSinks(b *strings.Builder, r *results) {
	b.WriteString("## Sinks: throughput vs the bare write\n\n")
	var rows [][]string
	for _, s := range r.sinks {
		bi := r.backends[s.kind]
		for i, run := range []*sinkRun{s.base, s.sink} {
			name, ratio, total, retries := baselineName(s.kind), "1.00", "1.00", "—"
			if i == 1 {
				name, ratio, total, retries = "`productstream sink` ("+s.kind+")", "**"+goal{ratio: s.ratio(), want: sinkTarget}.ratioText()+"**", ratioText(s.totalRatio()), thousands(run.retries)
			}
			backend := cpuText(run.per1k(run.backendCPU), bi.cpu != nil)
			each := make([]string, len(run.perRound))
			for i, v := range run.perRound {
				each[i] = rateText(v)
			}
			rows = append(rows, []string{name, fmt.Sprintf("%s (%.0f)", thousands(run.batches), run.meanBatch()), strings.Join(each, " / "),
				rateText(run.median()), ratio, fmt.Sprintf("%s in %s: %s", thousands(run.records), durText(run.elapsed), rateText(run.rate())), total, retries,
				cpuText(run.per1k(run.cpu), true), backend, cpuText(run.per1k(run.kafkaCPU), r.kafkaCPU)})
		}
	}
	table(b, []string{"writer", "writes (mean records)", "records/s, each round", "median round", "× baseline", "all rounds: records in time: records/s", "× baseline", "retries", "CPU s / 1k records: harness", "backend", "Kafka"}, rows)
	b.WriteString("What each writes per batch:\n\n")
	for _, s := range r.sinks {
		w := sinkWriters[s.kind]
		fmt.Fprintf(b, "- **%s**: the sink does %s; %s does %s.\n", s.kind, w[0], baselineName(s.kind), w[1])
	}
	b.WriteString("\nThe sink runs in the harness process as `productstream sink` runs it: a `sink.Runner` (decode with `schemas.Serde.DecodeJSON` and a version per record, highest version per key, write with retries, dead letters, commit) over the real writer of `sink/<kind>`, built from its configuration (`New`), with its metrics. The baseline is a plain franz-go consumer in the harness process that does what a user would write: poll (what one poll returns, at most the batch size), decode the values the same way, do the bare write of the batch, commit. Both read the same products topic, read_committed, in a consumer group of their own, and are timed alike: from the group's assignment until its committed offsets reach the end of the topic (polled every " + commitPoll.String() + "), in rounds run in the order baseline, sink, sink, baseline, ... The target is checked on the median round of each (a burst of other work on the machine during one round moves it little); the totals over all rounds are beside it. After each run the harness checks that the backend holds every record (the receiver: got one request per record), then drops what the run wrote. CPU is the harness process's (getrusage: the sink or the baseline, and for webhooks the receiver too), the backend's (its processes' /proc times: the OpenSearch JVM, Redis, the PostgreSQL postmaster with its children, which serve other clients of the server too) and Kafka's, per 1,000 records.\n\n")
	if s := r.sinkResult("opensearch"); s != nil {
		fmt.Fprintf(b, "OpenSearch's own indexing time for the run's index (index stats, `index_time_in_millis` of the primaries: the time its indexing threads spent on these documents, other clients' indexes excluded): %s ms per 1,000 documents for the sink, %s for %s.\n\n",
			strconv.FormatFloat(s.sink.per1k(s.sink.osIndexing)*1000, 'f', 1, 64), strconv.FormatFloat(s.base.per1k(s.base.osIndexing)*1000, 'f', 1, 64), baselineName("opensearch"))
	}
	fmt.Fprintf(b, "The machine's load average (1, 5, 15 min) was %s before these runs and %s after them; with %d cores, a load above that means other work (other tenants of the machine, or other clients of the backends) took CPU from the runs, and the rounds' spread shows how much the figures moved.\n\n",
		r.sinkLoad[0], r.sinkLoad[1], runtime.NumCPU())
	for _, kind := range []string{"opensearch", "postgres", "redis", "webhook"} {
		if bi, ok := r.backends[kind]; ok && bi.cpu == nil && bi.note != "" && r.sinkResult(kind) != nil {
			fmt.Fprintf(b, "The %s backend's CPU is not measured: %s.\n\n", kind, bi.note)
		}
	}
	var profiled []*profileResult
	for _, s := range r.sinks {
		profiled = append(profiled, s.profiles...)
	}
	if len(profiled) > 0 {
		b.WriteString("## Where a sink's time goes\n\n")
		b.WriteString("For each sink below its target, one more run of the sink and of its baseline, after the measured ones, each with the harness process CPU-profiled (`runtime/pprof`) from the assignment to the last commit, summarized with `go tool pprof`. Both run in the harness process, so a profile holds the writer, the consumer and, for webhooks, the receiver; the backend's own CPU is in the table above. A sample counts in every area its stack passes through, so the shares can add up to more than 100 %.\n\n")
		renderProfileTable(b, profiled, sinkProfileAreas, "record")
	}
}

// sinkReaders say, per sink, what "visible" is.
var sinkReaders = map[string]string{
	"opensearch": "the first search of the sink's alias (an `ids` query, the alias's filter applied) that returns it: OpenSearch makes a document searchable at the index's next refresh (`index.refresh_interval`, %s)",
	"postgres":   "the first `SELECT key FROM <table>_live WHERE key = ANY(...)` that returns it (the sink's upsert commits on its own, so a row is visible once its write is answered)",
	"redis":      "the first pipelined `HGET <prefix><key> version` that finds the hash",
	"webhook":    "the arrival of its first request at the receiver, a loopback net/http server in the harness (before the sink's write, which waits for every request of the batch, is answered)",
}

// renderSinkFresh writes the freshness runs to the sinks.
func renderSinkFresh(b *strings.Builder, r *results) {
	o := r.o
	b.WriteString("## Freshness to the sinks\n\n")
	row := func(f *sinkFreshResult, label string, d []time.Duration) []string {
		return []string{label, fmt.Sprintf("%s of %s", thousands(int64(len(d))), thousands(int64(f.accepted))),
			durText(quantile(d, 0.5)), durText(quantile(d, 0.95)), durText(quantile(d, 0.99)), durText(quantile(d, 1))}
	}
	// The headline: visible, per sink and rate.
	var rows [][]string
	for _, f := range r.sinkFresh {
		for _, s := range f.sinks {
			rows = append(rows, []string{s.kind, rateText(f.rate) + " (" + rateText(f.load.rps()) + " answered 202 per second)",
				durText(quantile(s.visible, 0.5)), durText(quantile(s.visible, 0.95)), "**" + durText(quantile(s.visible, 0.99)) + "**", durText(quantile(s.visible, 1))})
		}
	}
	b.WriteString("From the 202 to the product visible to a reader of the sink:\n\n")
	table(b, []string{"sink", "req/s offered", "p50", "p95", "p99", "max"}, rows)
	for _, f := range r.sinkFresh {
		fmt.Fprintf(b, "### Where the time goes at %s req/s\n\n", rateText(f.rate))
		rows := [][]string{
			row(f, "the state record produced (its timestamp on `products`): the edge's write, the quiet period (debounce) and the processor's work", f.produced),
			row(f, "the state record on `products` at a read_committed consumer (what the sinks read): the transaction committed", f.onKafka),
		}
		for _, s := range f.sinks {
			rows = append(rows,
				row(f, s.kind+": written (the answer to the sink's write that applied it)", s.written),
				row(f, "**"+s.kind+": visible to its readers**", s.visible),
				row(f, "*"+s.kind+": from the state record on `products` to visible (per product: the sink's share: linger, batch, write, backend refresh)*", s.kafkaToVisible))
		}
		table(b, []string{"from the 202 to", "products", "p50", "p95", "p99", "max"}, rows)
		var polls []string
		for _, s := range f.sinks {
			if s.kind == "webhook" {
				continue
			}
			p := fmt.Sprintf("%s %s", s.kind, thousands(int64(s.polls)))
			if s.pollErrs > 0 {
				p += fmt.Sprintf(" (%d failed, first: %s)", s.pollErrs, strings.ReplaceAll(s.firstPollErr, "|", `\|`))
			}
			polls = append(polls, p)
		}
		fmt.Fprintf(b, "Offered %s req/s for %s: %s accepted (%s req/s). Probes answered: %s.\n\n", rateText(f.rate), o.sinkFreshDuration,
			thousands(int64(f.accepted)), rateText(f.load.rps()), strings.Join(polls, ", "))
	}
	fmt.Fprintf(b, "An edge, a transactional processor (quiet_period %s, max_delay %s) and one sink of each kind (in the harness process, as `productstream sink` runs it: a `sink.Runner` over the real writer, each in a consumer group of its own, batch.linger %s) run together on a topic prefix of their own, one run per rate; every request is a new product. The sinks share the machine with the edge, the processor, Kafka, the backends and the load generator, so at the higher rate they also compete for its %d cores. \"Written\" is when the sink's write that applied the product was answered, noted by a thin wrapper around the sink's writer (the runner still sees a `sink.Generations` where the sink is one, and writes through `At`). \"Visible\" is what a reader of the sink sees:\n\n",
		o.quietPeriod, o.maxDelay, o.sinkFreshLinger, runtime.NumCPU())
	refresh := "unset in the sink's configuration: OpenSearch's default, 1 s"
	if o.sinkFreshRefresh > 0 {
		refresh = "the sink's `refresh_interval`, " + o.sinkFreshRefresh.String() + " (-sink-fresh-os-refresh)"
	}
	for _, kind := range o.sinkKinds {
		text := sinkReaders[kind]
		if kind == "opensearch" {
			text = fmt.Sprintf(text, refresh)
		}
		fmt.Fprintf(b, "- **%s**: %s.\n", kind, text)
	}
	fmt.Fprintf(b, "\nOpenSearch, PostgreSQL and Redis are asked every %s for the products accepted and not yet seen (at most %d per request, several requests when more are pending), and a product's time is the arrival of the first answer that found it: up to one interval plus the request's own time late.\n\n", o.sinkFreshPoll, maxPollIDs)
}

// renderStartup writes the start-up and takeover section.
func renderStartup(b *strings.Builder, r *results) {
	s, o := r.startup, r.o
	b.WriteString("## Start-up and takeover of the processor\n\n")
	var rows [][]string
	var listening, ready []time.Duration
	for i, l := range s.launches {
		rows = append(rows, []string{strconv.Itoa(i + 1), durText(l.listening), durText(l.ready), durText(l.consuming)})
		listening, ready = append(listening, l.listening), append(ready, l.ready)
	}
	slices.Sort(listening)
	slices.Sort(ready)
	c := s.consuming()
	rows = append(rows, []string{"**p50**", durText(quantile(listening, 0.5)), durText(quantile(ready, 0.5)), "**" + durText(quantile(c, 0.5)) + "**"},
		[]string{"**max**", durText(quantile(listening, 1)), durText(quantile(ready, 1)), durText(quantile(c, 1))})
	if f := s.first; f != nil {
		rows = append(rows, []string{"*first launch (creates the topics; not in p50 and max)*", durText(f.listening), durText(f.ready), durText(f.consuming)})
	}
	table(b, []string{"launch", "ops listener answers", "/readyz 200", "consuming every partition"}, rows)
	delay := "unknown (it could not be read)"
	if s.rebalanceDelay != "" {
		delay = s.rebalanceDelay + " ms"
	}
	fmt.Fprintf(b, "Each launch starts the built `productstream process` (exactly once, ops.listen set) in the same one-member group on the same topics, each stopped with SIGTERM (a dynamic member leaves the group on close) before the next, so every launch is a restart into an empty group. Times run from just before the harness started the process; the harness polls its ops listener every %s: `/healthz` answering, `/readyz` answering 200 (the member owns a partition and Kafka and the registry answer), and `%s` reaching %d (a partition counts once it is restored and processed). The broker's `group.initial.rebalance.delay.ms` (how long a new or empty group waits before its first assignment) is %s; Kafka's default is 3000 ms, which would add that much to every figure here.\n\n",
		statusPoll, assignedMetric, o.parts, delay)
	rows = rows[:0]
	for _, t := range []*takeover{s.dynamic, s.static} {
		if t == nil {
			continue
		}
		session := "the default session timeout (45 s)"
		if o.sessionTimeout > 0 {
			session = "`processor.session_timeout` " + o.sessionTimeout.String() + " (-takeover-session-timeout)"
		}
		how := "dynamic members (no `processor.instance_id`), " + session + ": the survivor owns every partition"
		if t.name == "static" {
			how = "static members (`processor.instance_id` set), the killed one started again at once with its id: every partition owned again, the restarted member owning some"
		}
		rows = append(rows, []string{how, strconv.Itoa(t.killed), "**" + durText(t.took) + "**", strconv.Itoa(max(t.survivorMax, 0))})
	}
	table(b, []string{"takeover after SIGKILL of one of two members", "partitions it owned", "SIGKILL to every partition owned again", "most partitions the survivor owned"}, rows)
	b.WriteString("Two members share a new group on the same topics; once each owns some partitions, the first is killed with SIGKILL (no leave, no commit) while no load runs. A dynamic member's partitions go to the survivor only once the group's session timeout (`processor.session_timeout`, default 45 s) has passed without a heartbeat, then the survivor restores them. A static member restarted with the same `processor.instance_id` takes its own place back in the group without waiting for the session timeout and restores its partitions.\n\n")
}
