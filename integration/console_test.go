package integration

import (
	"cmp"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/productstream/productstream/schemas"
	"github.com/productstream/productstream/topics"
)

// The console's browser tests drive a real headless Chromium against
// `productstream dev` (and the console role) and assert on the DOM the
// browser built: what an operator sees, after the page's own refreshes.
const (
	// envChromium names the browser binary (default defaultChromium).
	envChromium     = "PRODUCTSTREAM_CHROMIUM"
	defaultChromium = "/usr/bin/chromium"
	// envArtifacts is where screenshots go, under console/ (default: the
	// temporary directory's productstream-artifacts).
	envArtifacts = "PRODUCTSTREAM_ARTIFACTS"
	// envConsoleScreenshot, when set, names the file that gets a 1280x800
	// screenshot of the Deliveries page.
	envConsoleScreenshot = "PRODUCTSTREAM_CONSOLE_SCREENSHOT"
)

// browser is one headless Chromium tab on a console, for one test.
type browser struct {
	t     *testing.T
	ctx   context.Context
	base  string // the console's base URL
	shots string // the directory of this test's screenshots
	n     int    // screenshots taken
}

// newBrowser starts a headless Chromium with a fresh profile, pointed at
// the console at base; it is stopped when the test ends.
func newBrowser(t *testing.T, base string) *browser {
	t.Helper()
	if base == "" {
		t.Fatal("no console URL: the process printed no console address")
	}
	path := cmp.Or(os.Getenv(envChromium), defaultChromium)
	if fi, err := os.Stat(path); err != nil || fi.IsDir() {
		t.Fatalf("the console tests need a Chromium and there is none at %s (%v): apt-get install chromium, or set %s to a Chromium or Chrome binary",
			path, err, envChromium)
	}
	out := &lockedWriter{w: &strings.Builder{}}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 800),
		chromedp.CombinedOutput(out),
	)
	ctx, cancel := chromedp.NewContext(allocCtx)
	t.Cleanup(func() {
		cancel()
		cancelAlloc() // waits for the browser to exit, before its profile is removed
		if t.Failed() {
			t.Logf("browser output:\n%s", out.w)
		}
	})
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start %s: %v", path, err)
	}
	name := strings.NewReplacer("/", "-", " ", "_").Replace(t.Name())
	dir := filepath.Join(cmp.Or(os.Getenv(envArtifacts), filepath.Join(os.TempDir(), "productstream-artifacts")), "console", name)
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return &browser{t: t, ctx: ctx, base: strings.TrimSuffix(base, "/"), shots: dir}
}

// run runs one browser action, bounded in time; it fails the test on error.
func run[T any](b *browser, what string, a chromedp.Action[T]) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		b.t.Fatalf("browser: %s: %v", what, err)
	}
	return v
}

// eval evaluates js in the page and decodes its value into T.
func eval[T any](b *browser, js string) T {
	b.t.Helper()
	return run(b, "evaluate "+firstLine(js), chromedp.Evaluate[T](js))
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " ..."
	}
	return s
}

// open navigates to path on the console and fails the test unless the
// answer is 200 with the console's Content-Security-Policy.
func (b *browser) open(path string) {
	b.t.Helper()
	if !b.tryOpen(path) {
		b.t.FailNow()
	}
}

// tryOpen navigates to path on the console and checks the answer: 200
// with the console's Content-Security-Policy. It reports whether it was.
func (b *browser) tryOpen(path string) bool {
	b.t.Helper()
	resp := run(b, "open "+path, chromedp.NavigateResponse(b.base+path))
	csp := header(resp.Headers, "Content-Security-Policy")
	if !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "default-src 'self'") || strings.Contains(csp, "unsafe-inline") {
		b.t.Errorf("GET %s: Content-Security-Policy %q, want scripts from the console only, no inline code", path, csp)
		return false
	}
	if resp.Status != http.StatusOK {
		text := eval[string](b, `document.body?.innerText ?? ''`)
		b.t.Errorf("GET %s: status %d, want 200; the page says %q", path, resp.Status, strings.TrimSpace(text))
		return false
	}
	return true
}

// reload reloads the page and waits for it to load.
func (b *browser) reload() {
	b.t.Helper()
	run(b, "reload", chromedp.Reload())
}

func header(h network.Headers, name string) string {
	for k, v := range h {
		if strings.EqualFold(k, name) {
			return fmt.Sprint(v)
		}
	}
	return ""
}

// shot saves a full-page PNG of the page as it is now.
func (b *browser) shot(name string) {
	b.t.Helper()
	png := run(b, "screenshot "+name, chromedp.FullScreenshot(100))
	b.n++
	path := filepath.Join(b.shots, fmt.Sprintf("%02d-%s.png", b.n, name))
	if err := os.WriteFile(path, png, 0o644); err != nil {
		b.t.Fatal(err)
	}
	b.t.Logf("screenshot: %s", path)
}

// viewportShot saves a PNG of the page's first width x height pixels.
func (b *browser) viewportShot(path string, width, height int64) {
	b.t.Helper()
	run(b, "viewport", chromedp.EmulateViewport(width, height))
	png := run(b, "screenshot", chromedp.CaptureScreenshot())
	run(b, "reset viewport", chromedp.ResetViewport())
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		b.t.Fatal(err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		b.t.Fatal(err)
	}
	b.t.Logf("screenshot (%dx%d): %s", width, height, path)
}

// waitFor polls check every 100ms until it reports done, for at most
// timeout; check's text says what it saw, for the failure.
func waitFor(t *testing.T, what string, timeout time.Duration, check func() (done bool, saw string)) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		done, saw := check()
		if done {
			return time.Since(start)
		}
		if time.Since(start) > timeout {
			t.Fatalf("%s: not within %s; last saw %s", what, timeout, saw)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// safety checks that nothing a sender wrote ran or became markup: no
// pwned global, no injected element, no image of ours, one script (htmx).
func (b *browser) safety(where string) {
	b.t.Helper()
	type state struct {
		Pwned    string   `json:"pwned"`
		Injected bool     `json:"injected"`
		Images   int      `json:"images"`
		Scripts  []string `json:"scripts"`
	}
	s := eval[state](b, `({
		pwned: typeof window.pwned,
		injected: !!document.getElementById('injected'),
		images: document.querySelectorAll('img').length,
		scripts: Array.from(document.scripts).map(s => s.getAttribute('src') || 'inline: ' + s.textContent),
	})`)
	if s.Pwned != "undefined" {
		b.t.Errorf("%s: window.pwned is %s: a sender's script ran", where, s.Pwned)
	}
	if s.Injected {
		b.t.Errorf("%s: an element #injected exists: a sender's markup was rendered as HTML", where)
	}
	if s.Images != 0 {
		b.t.Errorf("%s: %d img elements, want none: a sender's markup was rendered as HTML", where, s.Images)
	}
	if len(s.Scripts) != 1 || s.Scripts[0] != "/static/htmx.min.js" {
		b.t.Errorf("%s: scripts %q, want only /static/htmx.min.js", where, s.Scripts)
	}
}

// deliveryRow is one row of the Deliveries page, as the browser shows it.
type deliveryRow struct {
	Time       string       `json:"time"`
	Source     string       `json:"source"`
	Status     string       `json:"status"`
	Outcome    string       `json:"outcome"`
	Reason     string       `json:"reason"`
	DeliveryID string       `json:"deliveryID"`
	Instance   string       `json:"instance"`
	Written    []writtenRef `json:"written"`
}

type writtenRef struct {
	Key       string `json:"key"`
	Topic     string `json:"topic"`
	Partition string `json:"partition"`
	Offset    string `json:"offset"`
	EventID   string `json:"eventID"`
}

const deliveryRowsJS = `Array.from(document.querySelectorAll('#deliveries tr.delivery')).map(tr => ({
	time: tr.querySelector('time')?.getAttribute('datetime') ?? '',
	source: tr.cells[1].textContent.trim(),
	status: tr.querySelector('td.status').textContent.trim(),
	outcome: tr.querySelector('td.outcome').textContent.trim(),
	reason: tr.querySelector('td.reason').textContent.trim(),
	deliveryID: tr.cells[7].textContent,
	instance: tr.cells[9].textContent.trim(),
	written: Array.from(tr.querySelectorAll('td.written > div')).map(d => ({
		key: d.querySelector('a').textContent,
		topic: d.querySelector('span.topic').textContent,
		partition: d.querySelector('span.partition').textContent,
		offset: d.querySelector('span.offset').textContent,
		eventID: (d.querySelector('span.muted')?.textContent ?? '').replace(/^event /, ''),
	})),
}))`

func (b *browser) deliveryRows() []deliveryRow {
	b.t.Helper()
	return eval[[]deliveryRow](b, deliveryRowsJS)
}

// find returns the first row (newest first) that match selects.
func find(rows []deliveryRow, match func(deliveryRow) bool) (deliveryRow, bool) {
	for _, r := range rows {
		if match(r) {
			return r, true
		}
	}
	return deliveryRow{}, false
}

func writes(key string) func(deliveryRow) bool {
	return func(r deliveryRow) bool { return len(r.Written) > 0 && r.Written[0].Key == key }
}

// lisaHeaders are a LiSA delivery's headers with the given signature.
func lisaHeaders(sig string) http.Header {
	h := http.Header{}
	h.Set("Authorization", "ApiKey k1")
	h.Set("Content-Type", "application/json")
	h.Set("X-Hmac-Signature", sig)
	return h
}

// mustPost posts body and fails unless the answer is want.
func mustPost(t *testing.T, url string, h http.Header, body []byte, want int) {
	t.Helper()
	status, err := post(url, h, body)
	if err != nil || status != want {
		t.Fatalf("POST %s: %d %v, want %d", url, status, err, want)
	}
}

// position finds key's record on topic: its partition and offset.
func position(t *testing.T, brokers, topic, key string) (int32, int64) {
	t.Helper()
	var found []*kgo.Record
	for _, r := range readAll(t, brokers, topic) {
		if string(r.Key) == key {
			found = append(found, r)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%s holds %d records of %s, want 1", topic, len(found), key)
	}
	return found[0].Partition, found[0].Offset
}

// instanceOf is how an ingest process names itself in the delivery log.
func instanceOf(t *testing.T, pid int) string {
	t.Helper()
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%s:%d", host, pid)
}

// A refused and an accepted delivery appear on the Deliveries page by
// themselves (its 2 s refresh): the refusal with its reason and no record,
// the acceptance with the partition and offset its record really has; then
// every page of the console renders, each screenshotted.
func TestConsoleShowsDeliveriesAndRefusals(t *testing.T) {
	dir := t.TempDir()
	cfg := writeConfig(t, dir)
	dev := startDev(t, filepath.Join(dir, "data"), "--config", cfg)
	b := newBrowser(t, dev.console)

	b.open("/deliveries")
	if rows := b.deliveryRows(); len(rows) != 0 {
		t.Fatalf("a fresh dev shows %d deliveries: %+v", len(rows), rows)
	}
	b.shot("deliveries-empty")

	id := fmt.Sprintf("console-%d", time.Now().UnixNano())
	key := "shop-eu:" + id
	good := []byte(fmt.Sprintf(`{"productId":%q,"price":12.5,"title":"Console shoe"}`, id))
	goodHeaders := signHeaders(t, cfg, good)
	forged := []byte(`{"productId":"forged","price":0.01}`)
	mustPost(t, dev.ingest+"/webhooks/lisa-main", lisaHeaders(hmacHex("not-the-secret", forged)), forged, http.StatusUnauthorized)
	refusedAt := time.Now()
	mustPost(t, dev.ingest+"/webhooks/lisa-main", goodHeaders, good, http.StatusAccepted)
	acceptedAt := time.Now()

	// Watch the page as it is, without reloading: it must refresh itself.
	var refusal, accepted deliveryRow
	var refusalAfter, acceptedAfter time.Duration
	isRefusal := func(r deliveryRow) bool { return r.Outcome == "refused" && r.Reason == "bad_signature" }
	const generous = 15 * time.Second
	for refusalAfter == 0 || acceptedAfter == 0 {
		rows := b.deliveryRows()
		if r, ok := find(rows, isRefusal); ok && refusalAfter == 0 {
			refusal, refusalAfter = r, time.Since(refusedAt)
		}
		if r, ok := find(rows, writes(key)); ok && acceptedAfter == 0 {
			accepted, acceptedAfter = r, time.Since(acceptedAt)
		}
		if time.Since(acceptedAt) > generous {
			b.shot("deliveries-missing")
			b.reload()
			rows = b.deliveryRows()
			_, refusalThere := find(rows, isRefusal)
			_, acceptedThere := find(rows, writes(key))
			t.Fatalf("within %s of the answers the page showed the refusal: %t, the acceptance: %t; after a reload: %t, %t (rows %+v)",
				generous, refusalAfter > 0, acceptedAfter > 0, refusalThere, acceptedThere, rows)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("appeared on the Deliveries page without a reload: the refusal %s after its 401, the acceptance %s after its 202 (wanted within 2 s)",
		refusalAfter.Round(time.Millisecond), acceptedAfter.Round(time.Millisecond))
	for what, d := range map[string]time.Duration{"refusal": refusalAfter, "acceptance": acceptedAfter} {
		if d > 2*time.Second+500*time.Millisecond {
			t.Logf("NOTE: the %s took %s to appear, over the 2 s the console aims for", what, d.Round(time.Millisecond))
		}
	}

	instance := instanceOf(t, dev.cmd.Process.Pid)
	if refusal.Status != "401" || refusal.Source != "lisa-main" || len(refusal.Written) != 0 || refusal.Instance != instance || refusal.DeliveryID != "" {
		t.Errorf("the refusal's row: %+v; want status 401, source lisa-main, nothing written, no delivery id, instance %s", refusal, instance)
	}
	if accepted.Status != "202" || accepted.Outcome != "accepted" || accepted.Reason != "" || accepted.Source != "lisa-main" || accepted.Instance != instance || len(accepted.Written) != 1 {
		t.Fatalf("the acceptance's row: %+v; want status 202, outcome accepted, source lisa-main, instance %s, one record written", accepted, instance)
	}
	partition, offset := position(t, dev.kafka, "productstream.changes", key)
	w := accepted.Written[0]
	if w.Topic != "productstream.changes" || w.Partition != strconv.Itoa(int(partition)) || w.Offset != strconv.FormatInt(offset, 10) {
		t.Errorf("the page says %s was written to %s / %s / %s; it is on productstream.changes / %d / %d", key, w.Topic, w.Partition, w.Offset, partition, offset)
	}
	if w.EventID == "" {
		t.Errorf("the acceptance's row shows no event id: %+v", w)
	}
	for _, r := range []deliveryRow{refusal, accepted} {
		if at, err := time.Parse(time.RFC3339Nano, r.Time); err != nil || at.Before(refusedAt.Add(-time.Minute)) || at.After(acceptedAt) {
			t.Errorf("row time %q (%v): not the time of the request", r.Time, err)
		}
	}
	b.shot("deliveries")
	if path := os.Getenv(envConsoleScreenshot); path != "" {
		b.viewportShot(path, 1280, 800)
	}

	// The filters narrow the page to the refusals.
	b.open("/deliveries?outcome=refused&reason=bad_signature")
	if rows := b.deliveryRows(); len(rows) != 1 || !isRefusal(rows[0]) {
		t.Errorf("filtered on bad_signature refusals the page shows %+v", rows)
	}
	b.shot("deliveries-refused")

	// Every page renders, titled, with its place in the navigation marked.
	pages := []struct {
		path, title string
		check       string // JS, true when the page shows what it must
	}{
		{"/", "Overview", `document.querySelectorAll('section.cards a.card').length === 6`},
		{"/sources", "Sources", `(() => {
			const tr = document.querySelector('#sources tr.source[data-source="lisa-main"]');
			return !!tr && tr.cells[1].textContent.trim() === '1' && tr.cells[3].textContent.trim() === '1' &&
				tr.cells[4].textContent.trim() === 'bad_signature 1';
		})()`},
		{"/deliveries", "Deliveries and refusals", `document.querySelectorAll('#deliveries tr.delivery').length === 2`},
		{"/products?key=" + url.QueryEscape(key), "Product timeline", `document.getElementById('key')?.textContent === ` + strconv.Quote(key) +
			` && document.querySelectorAll('#changes tr.change').length === 1`},
		{"/processor", "Processor", `document.querySelector('#content code')?.textContent === 'productstream-processor' &&
			document.querySelectorAll('#partitions tr.partition').length > 0`},
		{"/dead-letters", "Dead letters", `!!document.querySelector('section.dlq[data-topic="productstream.dlq"]')`},
		{"/sinks", "Sinks", `document.querySelector('#sinks tbody').textContent.includes('No sinks configured.')`},
	}
	for _, p := range pages {
		if !b.tryOpen(p.path) {
			b.shot("page-failed")
			continue
		}
		type seen struct {
			H1, Current string
			Errors      int
			OK          bool
		}
		var s seen
		waitFor(t, p.path+" shows its content", 15*time.Second, func() (bool, string) {
			s = eval[seen](b, `({
				h1: document.querySelector('h1')?.textContent ?? '',
				current: document.querySelector('nav a[aria-current="page"]')?.getAttribute('href') ?? '',
				errors: document.querySelectorAll('.error').length,
				ok: `+p.check+`,
			})`)
			return s.OK, fmt.Sprintf("%+v", s)
		})
		wantNav := strings.SplitN(p.path, "?", 2)[0]
		if s.H1 != p.title || s.Current != wantNav || s.Errors != 0 {
			t.Errorf("%s: title %q, current navigation %q, %d errors; want %q, %q, none", p.path, s.H1, s.Current, s.Errors, p.title, wantNav)
		}
		b.shot("page-" + cmp.Or(strings.Trim(strings.NewReplacer("/", "-", "?", "-", "=", "-", "%3A", "-").Replace(wantNav), "-"), "overview"))
	}
}

// timelineView is the Product timeline page, as the browser shows it.
type timelineView struct {
	Key     string `json:"key"`
	Changes []struct {
		Offset string `json:"offset"`
		JSON   string `json:"json"`
	} `json:"changes"`
	State *struct {
		Version string `json:"version"`
		JSON    string `json:"json"`
	} `json:"state"`
	Updates []struct {
		Offset  string `json:"offset"`
		Version string `json:"version"`
		Count   string `json:"count"`
		JSON    string `json:"json"`
	} `json:"updates"`
}

const timelineJS = `(() => {
	const state = document.querySelector('#state dd.version');
	return {
		key: document.getElementById('key')?.textContent ?? '',
		changes: Array.from(document.querySelectorAll('#changes tr.change')).map(tr => ({
			offset: tr.cells[1].textContent.trim(),
			json: tr.querySelector('pre.json')?.textContent ?? '',
		})),
		state: state ? {
			version: state.textContent.trim(),
			json: document.querySelector('#state pre.json')?.textContent ?? '',
		} : null,
		updates: Array.from(document.querySelectorAll('#updates tr.update')).map(tr => ({
			offset: tr.cells[1].textContent.trim(),
			version: tr.querySelector('td.version').textContent.trim(),
			count: tr.cells[3].textContent.trim(),
			json: tr.querySelector('pre.json')?.textContent ?? '',
		})),
	};
})()`

// readTimeline reloads the product's page until it shows its change, its
// state and an update (the processor writes them after the quiet period).
func (b *browser) readTimeline(key string, timeout time.Duration) timelineView {
	b.t.Helper()
	b.open("/products?key=" + url.QueryEscape(key))
	var v timelineView
	took := waitFor(b.t, "the timeline of "+key+" shows its change, state and update", timeout, func() (bool, string) {
		v = eval[timelineView](b, timelineJS)
		if len(v.Changes) > 0 && v.State != nil && len(v.Updates) > 0 {
			return true, ""
		}
		time.Sleep(400 * time.Millisecond)
		b.reload()
		return false, fmt.Sprintf("%+v", v)
	})
	b.t.Logf("the timeline of %s showed change, state and update %s after it was first opened", key, took.Round(time.Millisecond))
	return v
}

// A product's timeline shows the change ingest wrote (at its real offset),
// the state merged from it with the price sent, and, after the quiet
// period, the update standing for it.
func TestConsoleProductTimeline(t *testing.T) {
	dir := t.TempDir()
	cfg := writeConfig(t, dir)
	dev := startDev(t, filepath.Join(dir, "data"), "--config", cfg)
	b := newBrowser(t, dev.console)

	id := fmt.Sprintf("timeline-%d", time.Now().UnixNano())
	key := "shop-eu:" + id
	body := []byte(fmt.Sprintf(`{"productId":%q,"price":12.34,"title":"Timeline boot"}`, id))
	mustPost(t, dev.ingest+"/webhooks/lisa-main", signHeaders(t, cfg, body), body, http.StatusAccepted)
	_, offset := position(t, dev.kafka, "productstream.changes", key)
	want := strconv.FormatInt(offset, 10)

	v := b.readTimeline(key, 30*time.Second)
	b.shot("timeline")
	if v.Key != key {
		t.Errorf("the page names key %q, want %q", v.Key, key)
	}
	if len(v.Changes) != 1 || v.Changes[0].Offset != want || !strings.Contains(v.Changes[0].JSON, "Timeline boot") {
		t.Errorf("changes: %+v; want one, at offset %s, its JSON shown", v.Changes, want)
	}
	if v.State.Version != want || !strings.Contains(v.State.JSON, `"12.34"`) || !strings.Contains(v.State.JSON, "Timeline boot") {
		t.Errorf("state: version %s, JSON %s; want version %s (the change's offset) and the price \"12.34\" as sent", v.State.Version, v.State.JSON, want)
	}
	if len(v.Updates) != 1 || v.Updates[0].Version != want || v.Updates[0].Count != "1" || !strings.Contains(v.Updates[0].JSON, `"12.34"`) {
		t.Errorf("updates: %+v; want one, of version %s, standing for 1 change, with the price", v.Updates, want)
	}
}

// processorView is the Processor page, as the browser shows it.
type processorView struct {
	Group      string `json:"group"`
	LagRecords string `json:"lagRecords"`
	Partitions []struct {
		Partition  string  `json:"partition"`
		Owned      bool    `json:"owned"`
		Committed  string  `json:"committed"`
		LagRecords string  `json:"lagRecords"`
		LagText    string  `json:"lagText"`
		LagSeconds float64 `json:"lagSeconds"`
	} `json:"partitions"`
	Processes [][]string `json:"processes"`
}

const processorJS = `({
	group: document.querySelector('#content code')?.textContent ?? '',
	lagRecords: document.getElementById('lag-records')?.textContent.trim() ?? '',
	partitions: Array.from(document.querySelectorAll('#partitions tr.partition')).map(tr => ({
		partition: tr.dataset.partition,
		owned: !!tr.cells[1].querySelector('code'),
		committed: tr.cells[2].textContent.trim(),
		lagRecords: tr.querySelector('td.lag-records').textContent.trim(),
		lagText: tr.querySelector('td.lag-seconds').textContent.trim(),
		lagSeconds: parseFloat(tr.querySelector('td.lag-seconds').dataset.seconds),
	})),
	processes: Array.from(document.querySelectorAll('#processes tbody tr')).map(tr => Array.from(tr.cells).map(c => c.textContent.trim())),
})`

// committed is the group's committed offset on each partition, -1 for
// none.
func (v processorView) committed() map[int32]int64 {
	out := map[int32]int64{}
	for _, p := range v.Partitions {
		n, err := strconv.Atoi(p.Partition)
		if err != nil {
			continue
		}
		out[int32(n)] = -1
		if c, err := strconv.ParseInt(p.Committed, 10, 64); err == nil {
			out[int32(n)] = c
		}
	}
	return out
}

// caughtUp says the page shows no lag (0 records, "0 s" on every
// partition, each owned by a member) and a group that has consumed every
// committed record: its offset is past each partition's last one (next
// holds the offset after it).
func (v processorView) caughtUp(next map[int32]int64) bool {
	if v.LagRecords != "0" || len(v.Partitions) == 0 {
		return false
	}
	committed := v.committed()
	for p, n := range next {
		if committed[p] < n {
			return false
		}
	}
	for _, p := range v.Partitions {
		if !p.Owned || p.LagText != "0 s" || p.LagRecords != "0" {
			return false
		}
	}
	return true
}

// nextOffsets are, per partition of topic, the offset after its last
// committed record.
func nextOffsets(t *testing.T, brokers, topic string) map[int32]int64 {
	t.Helper()
	next := map[int32]int64{}
	for _, r := range readAll(t, brokers, topic) {
		next[r.Partition] = max(next[r.Partition], r.Offset+1)
	}
	return next
}

// writeTransactional writes a change for key to topic in an aborted
// transaction, then one in a committed transaction: the partition then
// holds an aborted record and two transaction markers, which no
// read_committed consumer ever reads. It returns the committed record's
// offset and the partition's end offset.
func writeTransactional(t *testing.T, dev *devProc, topic, id string) (int32, int64, int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	serde := newSerde(t, dev.registry)
	if err := serde.Register(ctx, topics.For("productstream.").ByKind()); err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(dev.kafka), kgo.TransactionalID("console-test-writer"),
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var rec *kgo.Record
	for _, commit := range []kgo.TransactionEndTry{kgo.TryAbort, kgo.TryCommit} {
		ch := schemas.Change{EventID: fmt.Sprintf("txn-%s-%t", id, commit), Source: "lisa-main", Provider: "lisa", Namespace: "shop-eu",
			EventType: "product.updated", Resource: "product", ProductID: id, ReceivedAt: time.Now(), Raw: fmt.Sprintf(`{"productId":%q}`, id)}
		v, err := serde.EncodeChange(&ch)
		if err != nil {
			t.Fatal(err)
		}
		if err := cl.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		rec = &kgo.Record{Topic: topic, Key: []byte(ch.Key()), Value: v}
		if err := cl.ProduceSync(ctx, rec).FirstErr(); err != nil {
			t.Fatal(err)
		}
		if err := cl.EndTransaction(ctx, commit); err != nil {
			t.Fatal(err)
		}
	}
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	end, _ := ends.Lookup(topic, rec.Partition)
	return rec.Partition, rec.Offset, end.Offset
}

// The Processor page of the console role measures a group's lag: 0 once
// the process role has consumed everything (transaction markers and
// aborted records are not lag), exactly the changes written while it was
// stopped, with their age, and 0 again once it resumed.
func TestConsoleProcessorLag(t *testing.T) {
	dir := t.TempDir()
	cfg := writeConfig(t, dir)
	dev := startDev(t, filepath.Join(dir, "data"), "--config", cfg)

	const group = "console-lag-test"
	services := fmt.Sprintf("kafka:\n  brokers: [%q]\nschema_registry:\n  url: %q\n", dev.kafka, dev.registry)
	opsAddr, consoleAddr := freeAddr(t), freeAddr(t)
	processCfg := filepath.Join(dir, "process.yaml")
	consoleCfg := filepath.Join(dir, "console.yaml")
	for path, text := range map[string]string{
		processCfg: services + fmt.Sprintf("ops:\n  listen: %q\nprocessor:\n  group: %q\n  quiet_period: 1s\n  max_delay: 3s\n", opsAddr, group),
		consoleCfg: services + fmt.Sprintf("console:\n  listen: %q\n  scrape: [%q]\nprocessor:\n  group: %q\n", consoleAddr, "http://"+opsAddr+"/metrics", group),
	} {
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	proc := startRole(t, "process", processCfg)
	// Runs before startRole's SIGTERM: a stopped process would not stop.
	t.Cleanup(func() { _ = proc.Process.Signal(syscall.SIGCONT) })
	startRole(t, "console", consoleCfg)
	base := "http://" + consoleAddr
	waitFor(t, "the console role answers", 60*time.Second, func() (bool, string) {
		resp, err := httpClient.Get(base + "/api/processor")
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, resp.Status
	})

	const changes = "productstream.changes"
	send := func(n int, tag string) {
		for i := range n {
			body := []byte(fmt.Sprintf(`{"productId":"lag-%s-%d","price":%d}`, tag, i, i+1))
			mustPost(t, dev.ingest+"/webhooks/lisa-main", lisaHeaders(hmacHex("s1", body)), body, http.StatusAccepted)
		}
	}
	b := newBrowser(t, base)
	send(5, "warm")
	txnPartition, txnOffset, txnEnd := writeTransactional(t, dev, changes, "lag-txn")
	next := nextOffsets(t, dev.kafka, changes)
	if next[txnPartition] != txnOffset+1 || txnEnd != txnOffset+2 {
		t.Fatalf("partition %d: the committed transactional change at %d, the last record read ends at %d, the partition at %d; want a marker after it",
			txnPartition, txnOffset, next[txnPartition], txnEnd)
	}
	b.open("/processor")
	var v processorView
	read := func() processorView { v = eval[processorView](b, processorJS); return v }
	took := waitFor(t, "the process role caught up", 45*time.Second, func() (bool, string) {
		return read().caughtUp(next), fmt.Sprintf("%+v", v)
	})
	t.Logf("caught up on 6 changes %s after the page opened; partition %d, holding an aborted record and 2 markers, shows committed %d, last stable %d, lag 0",
		took.Round(time.Millisecond), txnPartition, v.committed()[txnPartition], txnEnd)
	if v.Group != group {
		t.Errorf("the page shows group %q, want %q", v.Group, group)
	}
	scrape := "http://" + opsAddr + "/metrics"
	waitFor(t, "the process role's counters, scraped", 30*time.Second, func() (bool, string) {
		for _, p := range read().Processes {
			if len(p) == 8 && p[0] == scrape && p[1] == strconv.Itoa(len(v.Partitions)) {
				return true, ""
			}
		}
		return false, fmt.Sprintf("%q", v.Processes)
	})
	b.shot("processor-caught-up")
	before := v.committed()

	if err := proc.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	const burst = 50
	send(burst, "burst")
	stoppedAt := time.Now()
	took = waitFor(t, "the page shows the burst as lag", 30*time.Second, func() (bool, string) {
		read()
		if v.LagRecords != strconv.Itoa(burst) || time.Since(stoppedAt) < 2*time.Second {
			return false, fmt.Sprintf("%+v", v)
		}
		for _, p := range v.Partitions {
			if p.LagSeconds > 0 && p.LagText != "0 s" {
				return true, ""
			}
		}
		return false, fmt.Sprintf("%+v", v)
	})
	t.Logf("lag of %d records shown %s after the burst was acknowledged", burst, took.Round(time.Millisecond))
	var sum int64
	for _, p := range v.Partitions {
		n, err := strconv.ParseInt(p.LagRecords, 10, 64)
		if err != nil {
			t.Fatalf("partition %s lag %q: %v", p.Partition, p.LagRecords, err)
		}
		if n > 0 && p.LagSeconds <= 0 || n == 0 && p.LagSeconds != 0 {
			t.Errorf("partition %s: %d records behind but %g s", p.Partition, n, p.LagSeconds)
		}
		sum += n
	}
	if sum != burst {
		t.Errorf("partitions lag %d records in all, want %d", sum, burst)
	}
	if after := v.committed(); !maps.Equal(after, before) {
		t.Errorf("the stopped group's offsets moved: %v, then %v", before, after)
	}
	b.shot("processor-lagging")

	if err := proc.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	next = nextOffsets(t, dev.kafka, changes)
	took = waitFor(t, "the lag returns to 0", 45*time.Second, func() (bool, string) {
		return read().caughtUp(next), fmt.Sprintf("%+v", v)
	})
	t.Logf("back to 0 lag %s after the process role resumed", took.Round(time.Millisecond))
	b.shot("processor-recovered")
}

// hostileConfig is testConfig with a Standard Webhooks source, whose
// sender chooses the delivery id.
const hostileConfig = `
sources:
  - name: lisa-main
    provider: lisa
    id: plugin-42
    namespace: shop-eu
    secrets: ["s1", "s0"]
    api_keys: ["k1"]
  - name: sw-main
    provider: standardwebhooks
    namespace: vendor
    secrets: ["whsec_` + swKeyBase64 + `"]
    options:
      payload:
        id_pointer: /id
processor:
  quiet_period: 1s
  max_delay: 3s
`

// swKeyBase64 is sw-main's key, base64: "console-test-key".
const swKeyBase64 = "Y29uc29sZS10ZXN0LWtleQ=="

// replicaSources are the sources of the tests that run several ingest
// replicas: a Standard Webhooks source (sw-main, swKeyBase64) and a LiSA
// source (lisa-main, secret s1, API key k1).
const replicaSources = `sources:
  - name: sw-main
    provider: standardwebhooks
    namespace: vendor
    secrets: ["whsec_` + swKeyBase64 + `"]
    options:
      payload:
        id_pointer: /id
  - name: lisa-main
    provider: lisa
    id: plugin-42
    namespace: shop-eu
    secrets: ["s1"]
    api_keys: ["k1"]
`

// swHeaders signs body as a Standard Webhooks sender does, with id.
func swHeaders(t *testing.T, id string, body []byte) http.Header {
	t.Helper()
	key, err := base64.StdEncoding.DecodeString(swKeyBase64)
	if err != nil {
		t.Fatal(err)
	}
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	m := hmac.New(sha256.New, key)
	m.Write([]byte(id + "." + ts + "."))
	m.Write(body)
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	h.Set("Webhook-Id", id)
	h.Set("Webhook-Timestamp", ts)
	h.Set("Webhook-Signature", "v1,"+base64.StdEncoding.EncodeToString(m.Sum(nil)))
	return h
}

// What senders choose (bodies, headers, paths, delivery ids, product ids
// and fields) is shown as text on every page, never run or rendered as
// markup, and every page carries the Content-Security-Policy.
func TestConsoleEscapesHostileInput(t *testing.T) {
	const (
		script   = `<script>window.pwned=1</script>`
		img      = `<img src=x onerror="window.pwned=2">`
		title    = `<script>window.pwned=3</script><b id="injected">x</b>`
		swID     = `<img src=x onerror="window['pwned']=4"><b id="injected">id</b>` // no '.': the id is refused with one
		swProdID = `<img src=x onerror="window['pwned']=5"><b id="injected">p</b>`
	)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfg, []byte(hostileConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	dev := startDev(t, filepath.Join(dir, "data"), "--config", cfg)
	b := newBrowser(t, dev.console)

	// Refused: a forged LiSA delivery carrying markup in its body and
	// headers, and deliveries to a source named with markup.
	forged := []byte(`{"productId":"` + strings.ReplaceAll(img, `"`, `\"`) + `","title":"` + script + `"}`)
	h := lisaHeaders(hmacHex("not-the-secret", forged))
	h.Set("X-Delivery-Id", script)
	h.Set("Webhook-Id", img)
	h.Set("X-Request-Id", title)
	mustPost(t, dev.ingest+"/webhooks/lisa-main", h, forged, http.StatusUnauthorized)
	for _, name := range []string{img, script} {
		status, err := post(dev.ingest+"/webhooks/"+url.PathEscape(name), h, forged)
		if err != nil || status < 400 || status >= 500 {
			t.Fatalf("POST to the source %q: %d %v, want a refusal", name, status, err)
		}
	}
	// Accepted: a LiSA product titled with markup, and a Standard Webhooks
	// delivery whose id and product id are markup.
	id := fmt.Sprintf("hostile-%d", time.Now().UnixNano())
	key := "shop-eu:" + id
	body := []byte(fmt.Sprintf(`{"productId":%q,"price":1,"title":%q}`, id, title))
	mustPost(t, dev.ingest+"/webhooks/lisa-main", signHeaders(t, cfg, body), body, http.StatusAccepted)
	swBody := []byte(fmt.Sprintf(`{"id":%q,"title":%q}`, swProdID, title))
	mustPost(t, dev.ingest+"/webhooks/sw-main", swHeaders(t, swID, swBody), swBody, http.StatusAccepted)
	swKey := "vendor:" + swProdID

	b.open("/deliveries")
	var rows []deliveryRow
	waitFor(t, "the deliveries page shows all five deliveries", 15*time.Second, func() (bool, string) {
		rows = b.deliveryRows()
		_, lisa := find(rows, writes(key))
		_, sw := find(rows, writes(swKey))
		return lisa && sw && len(rows) == 5, fmt.Sprintf("%+v", rows)
	})
	b.safety("/deliveries")
	if r, _ := find(rows, writes(swKey)); r.DeliveryID != swID || r.Written[0].EventID != swID {
		t.Errorf("the Standard Webhooks delivery shows delivery id %q and event %q, want %q as text", r.DeliveryID, r.Written[0].EventID, swID)
	}
	b.shot("deliveries")
	// The page's own refresh swaps the rows in again, through htmx.
	eval[string](b, `document.getElementById('rows').dataset.before = 'swap'`)
	waitFor(t, "the page refreshes its rows", 10*time.Second, func() (bool, string) {
		return eval[bool](b, `!!document.getElementById('rows') && !document.getElementById('rows').dataset.before`), "the rows not swapped"
	})
	if rows := b.deliveryRows(); len(rows) != 5 {
		t.Errorf("after a refresh the page shows %d deliveries, want 5", len(rows))
	}
	b.safety("/deliveries after a refresh")

	for _, p := range []string{"/", "/sources", "/dead-letters", "/products?key=" + url.QueryEscape(`shop-eu:<b id="injected">x</b>`)} {
		if b.tryOpen(p) {
			b.safety(p)
		}
	}

	v := b.readTimeline(key, 30*time.Second)
	b.safety("the timeline of " + key)
	for what, text := range map[string]string{"change": v.Changes[0].JSON, "state": v.State.JSON, "update": v.Updates[0].JSON} {
		if !strings.Contains(text, `<script>window.pwned=3</script>`) {
			t.Errorf("the %s's JSON block does not show the title %q as sent (a JSON escape such as <\\/ hides it): %s", what, title, text)
		}
	}
	b.shot("timeline")

	v = b.readTimeline(swKey, 30*time.Second)
	b.safety("the timeline of a key made of markup")
	if v.Key != swKey {
		t.Errorf("the timeline names its key %q, want %q as text", v.Key, swKey)
	}
	b.shot("timeline-markup-key")
}
