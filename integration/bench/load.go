package main

// The load generator: signed LiSA requests with a skewed product mix, sent
// over keep-alive connections either closed loop (a fixed number of senders,
// each sending its next request when the previous one is answered) or open
// loop (a fixed offered rate, latency measured from each request's intended
// send time, so that a slow server cannot hide its queueing: no coordinated
// omission).

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Credentials of the bench source, shared by the edge's generated config
// and B2. They protect nothing: the servers listen on loopback for one run.
const (
	benchSource    = "bench"
	benchPluginID  = "bench-plugin"
	benchNamespace = "bench"
	benchSecret    = "bench-secret"
	benchAPIKey    = "bench-key"
)

// workload says what the requests of one phase look like.
type workload struct {
	mix    []mixPart
	keys   uint64  // product ids p0 .. p<keys-1>
	zipfS  float64 // Zipf exponent of the product ids
	seed   uint64
	unique bool // every request a new product id <prefix>f<n> (the freshness runs)
	prefix string
}

// label describes the body sizes, e.g. "1 KB" or "1/16/192 KB (90/9/1 %)".
func (w workload) label() string {
	if len(w.mix) == 1 {
		return sizeLabel(w.mix[0].size)
	}
	total, kb := 0, true
	for _, m := range w.mix {
		total += m.weight
		kb = kb && m.size%1024 == 0
	}
	sizes, weights := make([]string, len(w.mix)), make([]string, len(w.mix))
	for i, m := range w.mix {
		sizes[i] = strconv.Itoa(m.size)
		if kb {
			sizes[i] = strconv.Itoa(m.size / 1024)
		}
		weights[i] = strconv.FormatFloat(100*float64(m.weight)/float64(total), 'g', 3, 64)
	}
	unit := " B"
	if kb {
		unit = " KB"
	}
	return strings.Join(sizes, "/") + unit + " (" + strings.Join(weights, "/") + " %)"
}

func sizeLabel(n int) string {
	if n%1024 == 0 {
		return strconv.Itoa(n/1024) + " KB"
	}
	return strconv.Itoa(n) + " B"
}

// padding fills the description field of the bodies: printable text, no
// characters JSON would escape.
var padding = bytes.Repeat([]byte("lorem ipsum dolor sit amet consectetur adipiscing elit "), 4096)

// generator makes one sender's requests; it is not safe for concurrent use.
type generator struct {
	w     workload
	cum   []int // cumulative weights of w.mix
	rng   *rand.Rand
	zipf  *rand.Zipf
	mac   hash.Hash
	sent  uint64
	start time.Time
}

func newGenerator(w workload, sender int) *generator {
	rng := rand.New(rand.NewPCG(w.seed, uint64(sender)))
	g := &generator{w: w, rng: rng, mac: hmac.New(sha256.New, []byte(benchSecret))}
	if w.keys > 1 {
		g.zipf = rand.NewZipf(rng, w.zipfS, 1, w.keys-1)
	}
	sum := 0
	for _, m := range w.mix {
		sum += m.weight
		g.cum = append(g.cum, sum)
	}
	return g
}

// next returns the product id, body and hex signature of the next request.
// seq is the request's number in its phase (unique ids use it).
func (g *generator) next(seq uint64) (string, []byte, string) {
	var id string
	switch {
	case g.w.unique:
		id = g.w.prefix + "f" + strconv.FormatUint(seq, 10)
	case g.zipf != nil:
		id = "p" + strconv.FormatUint(g.zipf.Uint64(), 10)
	default:
		id = "p0"
	}
	size := g.w.mix[0].size
	if len(g.cum) > 1 {
		r := g.rng.IntN(g.cum[len(g.cum)-1])
		for i, c := range g.cum {
			if r < c {
				size = g.w.mix[i].size
				break
			}
		}
	}
	g.sent++
	cents := 100 + g.rng.IntN(99_900)
	body := make([]byte, 0, size)
	body = append(body, `{"productId":"`...)
	body = append(body, id...)
	body = append(body, `","price":"`...)
	body = strconv.AppendInt(body, int64(cents/100), 10)
	body = append(body, '.', byte('0'+cents%100/10), byte('0'+cents%10))
	body = append(body, `","currency":"EUR","title":"Bench product `...)
	body = append(body, id...)
	body = append(body, `","updatedAt":"`...)
	body = time.Now().UTC().AppendFormat(body, time.RFC3339Nano)
	body = append(body, `","seq":`...)
	body = strconv.AppendUint(body, seq, 10)
	body = append(body, `,"description":"`...)
	if n := size - len(body) - 2; n > 0 {
		for n > len(padding) {
			body = append(body, padding...)
			n -= len(padding)
		}
		body = append(body, padding[:n]...)
	}
	body = append(body, `"}`...)
	g.mac.Reset()
	g.mac.Write(body)
	return id, body, hex.EncodeToString(g.mac.Sum(nil))
}

// target is one server under load.
type target struct {
	name   string
	url    string // the LiSA route
	client *http.Client
}

// newTarget builds a client whose keep-alive pool holds conns connections.
func newTarget(name, url string, conns int) *target {
	tr := &http.Transport{
		MaxIdleConns:        conns,
		MaxIdleConnsPerHost: conns,
		MaxConnsPerHost:     conns,
		IdleConnTimeout:     2 * time.Minute,
		DisableCompression:  true,
	}
	return &target{name: name, url: url, client: &http.Client{Transport: tr, Timeout: 60 * time.Second}}
}

func (t *target) close() { t.client.CloseIdleConnections() }

// send posts one signed request and returns its status.
func (t *target) send(ctx context.Context, body []byte, sig string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.url, bytes.NewReader(body))
	if err != nil {
		return 0, fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "ApiKey "+benchAPIKey)
	req.Header.Set("X-Hmac-Signature", sig)
	resp, err := t.client.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// loadSpec is one phase of load.
type loadSpec struct {
	phase    string  // "closed", "open", "mixed", "warmup", "fresh"
	rate     float64 // open loop: offered req/s; 0: closed loop
	duration time.Duration
	senders  int
	work     workload
	// accepted, when set, is called with the product id and the time of
	// each 202 (from several goroutines).
	accepted func(id string, at time.Time)
}

// answers is what requests got back: kept by each sender, summed over the
// senders of a phase, then over the rounds of a phase.
type answers struct {
	sent     int
	status   map[int]int // by HTTP status; never nil
	netErrs  int
	firstErr string
	lat      []time.Duration // every answered request
}

// add sums o into a; a.lat is left unsorted.
func (a *answers) add(o answers) {
	a.sent += o.sent
	a.netErrs += o.netErrs
	if a.firstErr == "" {
		a.firstErr = o.firstErr
	}
	for code, n := range o.status {
		a.status[code] += n
	}
	a.lat = append(a.lat, o.lat...)
}

// loadResult is what one phase measured.
type loadResult struct {
	server   string
	phase    string
	bodies   string
	rate     float64       // offered req/s (open loop)
	elapsed  time.Duration // first send to last answer (closed), or schedule start to last answer (open)
	answers                // its lat sorted
	accepted int           // answered 202
	cpu      map[string]float64
}

// merge adds another round of the same phase against the same server.
func (r *loadResult) merge(o *loadResult) *loadResult {
	if r == nil {
		return o
	}
	r.elapsed += o.elapsed
	r.accepted += o.accepted
	r.add(o.answers)
	for name, v := range o.cpu {
		r.cpu[name] += v
	}
	slices.Sort(r.lat)
	return r
}

// rps is the accepted requests per second.
func (r *loadResult) rps() float64 {
	if r == nil || r.elapsed <= 0 {
		return 0
	}
	return float64(r.accepted) / r.elapsed.Seconds()
}

// errors counts every request not answered 202.
func (r *loadResult) errors() int {
	if r == nil {
		return 0
	}
	return r.sent - r.accepted
}

// pct returns the q-quantile (0 < q <= 1) of the latencies, nearest rank.
func (r *loadResult) pct(q float64) time.Duration {
	if r == nil {
		return 0
	}
	return quantile(r.lat, q)
}

// max returns the largest latency.
func (r *loadResult) max() time.Duration {
	if r == nil || len(r.lat) == 0 {
		return 0
	}
	return r.lat[len(r.lat)-1]
}

// cpuPer1000 returns the CPU seconds of one process per 1,000 accepted requests.
func (r *loadResult) cpuPer1000(proc string) (float64, bool) {
	v, ok := r.cpu[proc]
	if !ok || r.accepted == 0 {
		return 0, false
	}
	return v / float64(r.accepted) * 1000, true
}

func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// senderStats is what one sender collected; merged after the phase.
type senderStats struct {
	answers
	last time.Time
}

func (s *senderStats) record(status int, err error, lat time.Duration, now time.Time) {
	s.sent++
	s.last = now
	if err != nil {
		s.netErrs++
		if s.firstErr == "" {
			s.firstErr = err.Error()
		}
		return
	}
	s.status[status]++
	s.lat = append(s.lat, lat)
}

// runLoad runs one phase against t, reading each meter before and after.
func runLoad(ctx context.Context, t *target, spec loadSpec, meters []meter) (*loadResult, error) {
	if spec.senders < 1 || spec.duration <= 0 {
		return nil, fmt.Errorf("%s %s: need senders and a duration", t.name, spec.phase)
	}
	before, err := readMeters(meters)
	if err != nil {
		return nil, err
	}
	stats := make([]*senderStats, spec.senders)
	var wg sync.WaitGroup
	start := time.Now()
	var next atomic.Uint64 // open loop: the next request's number
	var total uint64       // open loop: requests in the schedule
	var interval float64   // open loop: nanoseconds between intended sends
	if spec.rate > 0 {
		total = uint64(spec.rate * spec.duration.Seconds())
		interval = float64(time.Second) / spec.rate
	}
	deadline := start.Add(spec.duration)
	for i := range stats {
		st := &senderStats{answers: answers{status: map[int]int{}}}
		stats[i] = st
		g := newGenerator(spec.work, i)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				var seq uint64
				var from time.Time // latency is measured from here
				if spec.rate > 0 {
					seq = next.Add(1) - 1
					if seq >= total {
						return
					}
					from = start.Add(time.Duration(float64(seq) * interval))
					if wait := time.Until(from); wait > 0 {
						time.Sleep(wait)
						// On time: measure from the actual send, so that
						// timer overshoot is not counted as server latency.
						from = time.Now()
					}
				} else {
					if !time.Now().Before(deadline) {
						return
					}
					seq = uint64(i)<<40 | g.sent
				}
				id, body, sig := g.next(seq)
				if spec.rate == 0 {
					from = time.Now()
				}
				status, err := t.send(ctx, body, sig)
				now := time.Now()
				if ctx.Err() != nil {
					return
				}
				st.record(status, err, now.Sub(from), now)
				if err == nil && status == http.StatusAccepted && spec.accepted != nil {
					spec.accepted(id, now)
				}
			}
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	after, err := readMeters(meters)
	if err != nil {
		return nil, err
	}
	res := &loadResult{server: t.name, phase: spec.phase, bodies: spec.work.label(), rate: spec.rate,
		answers: answers{status: map[int]int{}}, cpu: map[string]float64{}}
	var last time.Time
	for _, st := range stats {
		res.add(st.answers)
		if st.last.After(last) {
			last = st.last
		}
	}
	res.accepted = res.status[http.StatusAccepted]
	res.elapsed = last.Sub(start)
	slices.Sort(res.lat)
	for name, v := range after {
		res.cpu[name] = v - before[name]
	}
	if res.sent == 0 {
		return res, errors.New(t.name + " " + spec.phase + ": no request was sent")
	}
	return res, nil
}
