package main

// The processes under measurement: productstream's roles (the binary built
// from ./cmd/productstream) and the baselines (this program re-executed with
// -serve), each a separate process so that the CPU each one uses can be read
// from /proc and compared.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/productstream/productstream/config"
	"github.com/productstream/productstream/kafka"
)

// proc is a child process whose stdout and stderr go to a log file.
type proc struct {
	name    string
	logPath string
	cmd     *exec.Cmd
	lines   chan string   // stderr lines matching the watch pattern
	exited  chan struct{} // closed once the process has been waited for
	err     error         // what Wait returned
	stop1   sync.Once
}

// startProc starts bin with args. Stderr lines matching watch (if not nil)
// are also sent on p.lines; the process is killed if this one dies.
func startProc(name, logPath string, watch *regexp.Regexp, bin string, args ...string) (*proc, error) {
	f, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("%s: log file: %w", name, err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout = f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, logPath: logPath, cmd: cmd, lines: make(chan string, 64), exited: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			_, _ = f.WriteString(line + "\n")
			if watch != nil && watch.MatchString(line) {
				select {
				case p.lines <- line:
				default:
				}
			}
		}
		_, _ = io.Copy(f, stderr)
		p.err = cmd.Wait()
		f.Close()
		close(p.exited)
	}()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// stop sends SIGTERM, and SIGKILL if the process is still running after
// grace; it returns once the process is gone. Safe to call more than once.
func (p *proc) stop(grace time.Duration) {
	p.stop1.Do(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(grace):
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
	})
}

// failed says whether the process has exited already, with its log's tail.
func (p *proc) failed() error {
	select {
	case <-p.exited:
		return fmt.Errorf("%s exited (%v); last lines of %s:\n%s", p.name, p.err, p.logPath, tailFile(p.logPath, 15))
	default:
		return nil
	}
}

// tailFile returns the last n lines of a file.
func tailFile(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// meter reads the CPU seconds (user+system) one process has used so far.
type meter struct {
	name string
	read func() (float64, error)
}

func readMeters(ms []meter) (map[string]float64, error) {
	out := make(map[string]float64, len(ms))
	for _, m := range ms {
		v, err := m.read()
		if err != nil {
			return nil, fmt.Errorf("cpu of %s: %w", m.name, err)
		}
		out[m.name] = v
	}
	return out, nil
}

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat times: 100 on every
// Linux architecture Go supports.
const clockTicks = 100

// procCPU returns utime+stime of pid, all threads, from /proc/<pid>/stat.
func procCPU(pid int) (float64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may contain spaces: count from its ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("malformed /proc stat")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, errors.New("short /proc stat")
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64) // field 14
	st, err2 := strconv.ParseUint(f[12], 10, 64) // field 15
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("parse /proc stat: %w", err)
	}
	return float64(ut+st) / clockTicks, nil
}

func procMeter(name string, pid int) meter {
	return meter{name, func() (float64, error) { return procCPU(pid) }}
}

// selfCPU returns this process's user+system CPU seconds (getrusage).
func selfCPU() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

var selfMeter = meter{"harness", func() (float64, error) { return selfCPU(), nil }}

// realBroker is what realbroker.sh's state dir says about the broker.
type realBroker struct {
	kafkaPID int
	version  string
}

// findRealBroker reads Kafka's pid and version from a realbroker.sh state
// dir, and only trusts them when that broker listens on one of brokers and
// the pid is still that broker's JVM (pids get reused).
func findRealBroker(dir string, brokers []string) (realBroker, error) {
	var rb realBroker
	if dir == "" {
		return rb, errors.New("no realbroker dir given (-broker-dir or $REALBROKER_DIR)")
	}
	props, err := os.ReadFile(filepath.Join(dir, "server.properties"))
	if err != nil {
		return rb, err
	}
	listens := false
	for _, b := range brokers {
		// Any of its listeners: PLAINTEXT, or SASL_SSL with -config.
		listens = listens || regexp.MustCompile(`://`+regexp.QuoteMeta(b)+`(,|\s|$)`).Match(props)
	}
	if !listens {
		return rb, fmt.Errorf("the broker of %s does not listen on %v", dir, brokers)
	}
	pidText, err := os.ReadFile(filepath.Join(dir, "kafka.pid"))
	if err != nil {
		return rb, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(pidText)))
	if err != nil {
		return rb, fmt.Errorf("kafka.pid: %w", err)
	}
	cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil || !bytes.Contains(cmdline, []byte("-Dproductstream.realbroker=kafka")) {
		return rb, fmt.Errorf("pid %d is not realbroker.sh's Kafka", pid)
	}
	rb.kafkaPID = pid
	if log, err := os.ReadFile(filepath.Join(dir, "kafka.log")); err == nil {
		if m := regexp.MustCompile(`Kafka version: (\S+)`).FindAllSubmatch(log, -1); len(m) > 0 {
			rb.version = string(m[len(m)-1][1])
		}
	}
	return rb, nil
}

// waitHealthy polls GET http://addr+path until it answers 200, p exits,
// or timeout passes.
func waitHealthy(ctx context.Context, p *proc, addr, path string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		resp, err := http.Get("http://" + addr + path)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if err := p.failed(); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not healthy on %s after %s; log %s:\n%s", p.name, addr, timeout, p.logPath, tailFile(p.logPath, 15))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// edgeCompression is the producer codec productstream uses by default
// (kafka.compression), so that the baselines, and the copies the processor
// reads, are written as the edge and the processor write.
func edgeCompression() kgo.Opt {
	c, err := kafka.ParseCompression(config.DefaultCompression)
	if err != nil {
		panic(err) // the default is a known codec
	}
	return c.ProducerOpt()
}

// psConfig is what the generated productstream config says.
type psConfig struct {
	brokers     []string
	registry    string
	prefix      string
	partitions  int32
	listen      string
	maxBody     int
	group       string
	exactlyOnce bool
	quiet       time.Duration
	maxDelay    time.Duration
	debug       string // ops.listen, for profiles; empty: none
	epoch       int    // processor.version_epoch; 0: the default
	svc         services
	instanceID  string         // processor.instance_id; empty: a dynamic member
	session     time.Duration  // processor.session_timeout; 0: the default
	commit      *time.Duration // processor.commit_interval; nil: the default
}

// writeConfig writes a productstream config (the format of
// deploy/productstream.yaml) with one LiSA source.
func writeConfig(path string, c psConfig) error {
	brokers := make([]string, len(c.brokers))
	for i, b := range c.brokers {
		brokers[i] = strconv.Quote(b)
	}
	kafkaKeys, registryKeys, err := c.svc.configKeys()
	if err != nil {
		return err
	}
	text := fmt.Sprintf(`# Generated by integration/bench for one run.
kafka:
  brokers: [%s]
  topic_prefix: %q
  partitions: %d
  produce_timeout: 10s
%sschema_registry:
  url: %q
%shttp:
  listen: %q
sources:
  - name: %q
    provider: lisa
    id: %q
    namespace: %q
    secrets: [%q]
    api_keys: [%q]
    max_body_bytes: %d
processor:
  group: %q
  quiet_period: %s
  max_delay: %s
  exactly_once: %t
`, strings.Join(brokers, ", "), c.prefix, c.partitions, kafkaKeys, c.registry, registryKeys, c.listen,
		benchSource, benchPluginID, benchNamespace, benchSecret, benchAPIKey, c.maxBody,
		c.group, c.quiet, c.maxDelay, c.exactlyOnce)
	if c.epoch != 0 {
		text += fmt.Sprintf("  version_epoch: %d\n", c.epoch)
	}
	if c.commit != nil {
		text += fmt.Sprintf("  commit_interval: %s\n", *c.commit)
	}
	if c.session != 0 {
		text += fmt.Sprintf("  session_timeout: %s\n", c.session)
	}
	if c.instanceID != "" {
		text += fmt.Sprintf("  instance_id: %q\n", c.instanceID)
	}
	if c.debug != "" {
		text += fmt.Sprintf("ops:\n  listen: %q\n", c.debug)
	}
	return os.WriteFile(path, []byte(text), 0o600)
}

// lisaPath is the LiSA route of the bench source; B1 and B2 serve it too.
const lisaPath = "/plugin-notifications/" + benchPluginID + "/updates"

// childResult is what a B3 child prints on stdout, as one JSON line.
type childResult struct {
	Records    int64   `json:"records"`
	Seconds    float64 `json:"seconds"`
	CPUSeconds float64 `json:"cpu_seconds"`
}

// runChild runs this program with -serve and args to completion and decodes
// the JSON line it prints.
func runChild(ctx context.Context, logPath string, args ...string) (*childResult, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find own executable: %w", err)
	}
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, self, append([]string{"-serve"}, args...)...)
	cmd.Stdout, cmd.Stderr = &out, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%s: %w; last lines of %s:\n%s", args[0], err, logPath, tailFile(logPath, 15))
	}
	var r childResult
	if err := json.Unmarshal(bytes.TrimSpace(out.Bytes()), &r); err != nil {
		return nil, fmt.Errorf("%s printed %q: %w", args[0], out.String(), err)
	}
	return &r, nil
}

// childMain runs one baseline: this program re-executed as
// `bench -serve b1|b2|b3-passthrough|b3-consume [flags]`.
func childMain(args []string) int {
	fs := flag.NewFlagSet("bench -serve", flag.ContinueOnError)
	role := fs.String("serve", "", "b1, b2, b3-passthrough or b3-consume")
	addr := fs.String("addr", "127.0.0.1:0", "b1, b2: listen address")
	brokers := fs.String("brokers", "", "b2, b3: seed brokers, comma-separated")
	cfgPath := fs.String("config", "", "b2, b3: a productstream configuration whose kafka section secures the connections (the harness's -config)")
	topic := fs.String("topic", "", "b2: topic to produce to; b3: topic to read")
	outTopic := fs.String("out-topic", "", "b3-passthrough: topic to produce to")
	group := fs.String("group", "", "b3-passthrough: consumer group")
	expect := fs.Int64("expect", 0, "b3-passthrough: records to pass through")
	maxBody := fs.Int64("max-body", 192<<10, "b1, b2: body limit in bytes")
	linger := fs.Duration("linger", 0, "b2: producer linger")
	pprofAddr := fs.String("pprof", "", "b1, b2: serve CPU profiles at /debug/pprof/profile on this address (default: none)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("role", *role)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	svc, _, _, err := loadServices(*cfgPath, strings.Split(*brokers, ","), "")
	if err != nil {
		log.Error("failed", "err", err)
		return 1
	}
	seeds := svc.opts()
	if *pprofAddr != "" {
		stopProfiles, err := serveProfiles(*pprofAddr)
		if err != nil {
			log.Error("failed", "err", err)
			return 1
		}
		defer stopProfiles()
	}
	switch *role {
	case "b1":
		err = serveHTTP(ctx, *addr, b1Handler(*maxBody))
	case "b2":
		var h http.Handler
		var cl *kgo.Client
		if h, cl, err = b2Handler(ctx, seeds, *topic, *maxBody, *linger); err == nil {
			err = serveHTTP(ctx, *addr, h)
			cl.Close()
		}
	case "b3-passthrough":
		err = passthrough(ctx, seeds, *topic, *outTopic, *group, *expect)
	case "b3-consume":
		err = consumeToEnd(ctx, seeds, *topic)
	default:
		err = fmt.Errorf("unknown role %q", *role)
	}
	if err != nil {
		log.Error("failed", "err", err)
		return 1
	}
	return 0
}

// serveProfiles serves CPU profiles at /debug/pprof/profile on addr until
// stop is called, as ops.listen does for productstream.
func serveProfiles(addr string) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("pprof listen: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = hs.Serve(ln) }()
	return func() { _ = hs.Close() }, nil
}

// serveHTTP serves h on addr until ctx ends, then shuts down gracefully.
func serveHTTP(ctx context.Context, addr string, h http.Handler) error {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	mux.Handle("POST "+lisaPath, h)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	select {
	case err := <-served:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return hs.Shutdown(sctx)
}

// b1Handler is B1, the HTTP ceiling: read the body under the limit, 202.
func b1Handler(maxBody int64) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody)); err != nil {
			http.Error(w, "body too large or unreadable", http.StatusRequestEntityTooLarge)
			return
		}
		w.WriteHeader(http.StatusAccepted)
	})
}

// b2Handler is B2, what a user would write in fifty lines: read the body
// under the limit, check the API key and the hex HMAC-SHA256 signature,
// take the product id with a minimal JSON decode for the record key (so
// that B2 partitions by product like the edge), ProduceSync the raw bytes
// with acks=all and answer 202. The producer settings are the edge's
// (idempotent, acks=all, murmur2 key partitioning, linger 0 unless -linger).
func b2Handler(ctx context.Context, seeds []kgo.Opt, topic string, maxBody int64, linger time.Duration) (http.Handler, *kgo.Client, error) {
	cl, err := kgo.NewClient(append(seeds, kgo.DefaultProduceTopic(topic),
		kgo.RequiredAcks(kgo.AllISRAcks()), kgo.ProducerLinger(linger),
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)), edgeCompression())...)
	if err != nil {
		return nil, nil, fmt.Errorf("kafka client: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := cl.Ping(pctx); err != nil {
		cl.Close()
		return nil, nil, fmt.Errorf("kafka: %w", err)
	}
	wantKey := []byte("ApiKey " + benchAPIKey)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
		if err != nil {
			http.Error(w, "body too large or unreadable", http.StatusRequestEntityTooLarge)
			return
		}
		sig, err := hex.DecodeString(r.Header.Get("X-Hmac-Signature"))
		if err != nil || len(sig) != sha256.Size {
			http.Error(w, "malformed signature", http.StatusBadRequest)
			return
		}
		mac := hmac.New(sha256.New, []byte(benchSecret))
		mac.Write(body)
		if !hmac.Equal(sig, mac.Sum(nil)) || subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), wantKey) != 1 {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		var p struct {
			ProductID string `json:"productId"`
		}
		if err := json.Unmarshal(body, &p); err != nil || p.ProductID == "" {
			http.Error(w, "no productId", http.StatusBadRequest)
			return
		}
		pctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
		defer cancel()
		rec := &kgo.Record{Key: []byte(benchNamespace + ":" + p.ProductID), Value: body}
		if err := cl.ProduceSync(pctx, rec).FirstErr(); err != nil {
			http.Error(w, "kafka did not acknowledge", http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusAccepted)
	}), cl, nil
}

// passthrough is B3: in a consumer group, read topic from the start and
// produce every record on to out (acks=all, the processor's producer
// settings), committing after each polled batch was acknowledged, until
// expect records were read and written. It prints a childResult timed from
// the partitions' assignment to the last commit.
func passthrough(ctx context.Context, seeds []kgo.Opt, topic, out, group string, expect int64) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	var assignedAt atomic.Pointer[time.Time]
	var cpu0 atomic.Uint64
	cl, err := kgo.NewClient(append(seeds, kgo.ConsumerGroup(group), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.DisableAutoCommit(),
		kgo.RequiredAcks(kgo.AllISRAcks()), kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)),
		kgo.ProducerLinger(5*time.Millisecond), edgeCompression(),
		kgo.OnPartitionsAssigned(func(context.Context, *kgo.Client, map[string][]int32) {
			now := time.Now()
			if assignedAt.CompareAndSwap(nil, &now) {
				cpu0.Store(uint64(selfCPU() * 1e9))
			}
		}))...)
	if err != nil {
		return fmt.Errorf("kafka client: %w", err)
	}
	defer cl.Close()
	var n int64
	var produceErr atomic.Pointer[error]
	for n < expect {
		fetches := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("passed %d of %d records: %w", n, expect, err)
		}
		if err := fetches.Err(); err != nil {
			return fmt.Errorf("fetch: %w", err)
		}
		fetches.EachRecord(func(r *kgo.Record) {
			n++
			cl.Produce(ctx, &kgo.Record{Topic: out, Key: r.Key, Value: r.Value, Headers: r.Headers}, func(_ *kgo.Record, err error) {
				if err != nil {
					produceErr.CompareAndSwap(nil, &err)
				}
			})
		})
		if err := cl.Flush(ctx); err != nil {
			return fmt.Errorf("flush: %w", err)
		}
		if perr := produceErr.Load(); perr != nil {
			return fmt.Errorf("produce: %w", *perr)
		}
		if err := cl.CommitUncommittedOffsets(ctx); err != nil {
			return fmt.Errorf("commit: %w", err)
		}
	}
	end := time.Now()
	start := assignedAt.Load()
	if start == nil {
		return errors.New("records arrived before the assignment callback")
	}
	return printResult(childResult{Records: n, Seconds: end.Sub(*start).Seconds(),
		CPUSeconds: selfCPU() - float64(cpu0.Load())/1e9})
}

// consumeToEnd is B3's consume-only rate: a plain consumer that reads every
// partition of topic from the start to its last stable offset
// (read_committed, as a restore reads), timed from the client's creation.
func consumeToEnd(ctx context.Context, seeds []kgo.Opt, topic string) error {
	start, cpu0 := time.Now(), selfCPU()
	read, err := kafka.ReadToEnd(ctx, seeds, []string{topic}, nil,
		kafka.WithTimeout(10*time.Minute), kafka.WithIdleEnd(0))
	if err != nil {
		return fmt.Errorf("read %d records: %w", read.Records, err)
	}
	return printResult(childResult{Records: read.Records, Seconds: time.Since(start).Seconds(), CPUSeconds: selfCPU() - cpu0})
}

func printResult(r childResult) error {
	return json.NewEncoder(os.Stdout).Encode(r)
}
