package processor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	neturl "net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr"
	"github.com/twmb/franz-go/pkg/sr/srfake"

	"github.com/productstream/productstream/loopback"
	"github.com/productstream/productstream/schemas"
	"github.com/productstream/productstream/topics"
)

// refusedDial is dial with the error a stopped broker gives: the virtual
// network's own errors are plain ones, which franz-go would not take for a
// connection refused.
func refusedDial(dial func(ctx context.Context, network, addr string) (net.Conn, error)) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil && ctx.Err() == nil {
			return nil, &net.OpError{Op: "dial", Net: network, Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
		}
		return c, err
	}
}

// restartableTest is virtualTest on a broker that keeps its data in a
// directory, so that stopBroker and startBroker stop it and start it again
// on the same port with everything it had, as a real broker restarts.
func restartableTest(t *testing.T, eos bool, fn func(t *testing.T, e *env)) {
	serde := newSerde(t, topics.For("t."))
	dir := t.TempDir()
	synctest.Test(t, func(t *testing.T) {
		e := newEnvOn(t, serde, new(kfake.VirtualNetwork), kfake.DataDir(dir))
		e.eos = eos
		fn(t, e)
	})
}

// newRestartableEnv is restartableTest's broker on real TCP, for a test
// on the wall clock. Its port is outside the ephemeral range: while the
// broker is down, no client's outgoing connection can take it.
func newRestartableEnv(t *testing.T, eos bool) *env {
	var ports loopback.Ports
	addr, err := ports.Addr()
	if err != nil {
		t.Fatal(err)
	}
	_, p, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(p)
	e := newEnvOn(t, newSerde(t, topics.For("t.")), nil, kfake.DataDir(t.TempDir()), kfake.Ports(port))
	e.eos = eos
	return e
}

// stopBroker stops the broker: its listener closes, and every connection
// to it with it.
func (e *env) stopBroker() { e.cluster.Close() }

// startBroker starts the broker stopped by stopBroker again, on its port,
// with its data.
func (e *env) startBroker() {
	e.t.Helper()
	c, err := kfake.NewCluster(e.opts...)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(c.Close)
	e.cluster = c
}

// load writes changes to products p0 .. p<n-1>, one every period, each
// carrying its product's next sequence number as its price, until stop is
// called. A write the broker does not take is retried until it takes it.
type load struct {
	mu   sync.Mutex
	sent map[string]int // product -> changes acknowledged
	quit chan struct{}
	done chan struct{}
}

func (e *env) startLoad(n int, period time.Duration) *load {
	l := &load{sent: map[string]int{}, quit: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(l.done)
		for i := 0; ; i++ {
			select {
			case <-l.quit:
				return
			case <-time.After(period):
			}
			id := fmt.Sprintf("p%d", i%n)
			l.mu.Lock()
			seq := l.sent[id] + 1
			l.mu.Unlock()
			ch := schemas.Change{EventID: fmt.Sprintf("%s-%d", id, seq), Source: "s", Provider: "lisa", Namespace: "ns", EventType: "product.updated",
				Resource: "product", ProductID: id, ReceivedAt: time.Now(), Fields: schemas.Fields{Price: str(strconv.Itoa(seq))},
				Raw: fmt.Sprintf(`{"productId":%q,"price":"%d"}`, id, seq)}
			v, err := e.serde.EncodeChange(&ch)
			if err != nil {
				panic(err)
			}
			for e.client.ProduceSync(context.Background(), &kgo.Record{Topic: e.names.Changes, Key: []byte(ch.Key()), Value: v}).FirstErr() != nil {
				time.Sleep(100 * time.Millisecond)
			}
			l.mu.Lock()
			l.sent[id] = seq
			l.mu.Unlock()
		}
	}()
	return l
}

// stop stops the load and returns how many changes each product took.
func (l *load) stop() map[string]int {
	close(l.quit)
	<-l.done
	return l.sent
}

// outageRun is what rideOutage saw.
type outageRun struct {
	resumed time.Duration // from the broker answering again to the first update written after it
	logs    string
}

// rideOutage runs a processor under load, stops the broker for outage,
// starts it again, and checks that Run never returned; that the processor
// said it was not ready and its broker_up gauge read 0 meanwhile, and
// that it logged the outage once at warn and its end once at info; and
// that every change is in its product's state once (the state's change
// count and last price), and in the updates once exactly once (at least
// once at least once), as without the outage.
func rideOutage(t *testing.T, e *env, outage time.Duration) outageRun {
	var logs lockedBuffer
	e.log = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	const quiet = 100 * time.Millisecond
	p, exited, stop := e.runWatched(Config{QuietPeriod: quiet, MaxDelay: time.Second})
	e.waitAssigned(p, 3)
	e.waitFetching()
	l := e.startLoad(20, 10*time.Millisecond)
	time.Sleep(2 * time.Second)

	e.stopBroker()
	stopped := time.Now()
	e.waitFor("the processor to notice the outage", func() bool { return errors.Is(p.Ready(context.Background()), ErrKafkaUnreachable) })
	t.Logf("outage noticed after %s", time.Since(stopped))
	if up := testutil.ToFloat64(e.metrics.brokerUp); up != 0 {
		t.Errorf("broker_up %v during the outage, want 0", up)
	}
	time.Sleep(outage - time.Since(stopped))
	select {
	case <-exited:
		t.Fatalf("Run returned during the outage; log:\n%s", logs.String())
	default:
	}
	e.startBroker()
	back := time.Now()
	e.waitFor("the processor to be ready again", func() bool { return p.Ready(context.Background()) == nil })
	time.Sleep(2 * time.Second)
	sent := l.stop()
	select {
	case <-exited:
		t.Fatalf("Run returned after the outage; log:\n%s", logs.String())
	default:
	}
	if up := testutil.ToFloat64(e.metrics.brokerUp); up != 1 {
		t.Errorf("broker_up %v after the outage, want 1", up)
	}

	total := 0
	for _, n := range sent {
		total += n
	}
	ups := e.updates(e.read(e.names.Updates, total, 30*time.Second))
	counts := map[string]int{}
	var first time.Time
	for _, u := range ups {
		counts[u.ProductID] += int(u.ChangeCount)
		if u.EmittedAt.After(back) && (first.IsZero() || u.EmittedAt.Before(first)) {
			first = u.EmittedAt
		}
	}
	states := map[string]schemas.State{}
	for _, r := range e.read(e.names.Products, len(sent), 10*time.Second) {
		st, err := e.serde.DecodeState(context.Background(), r.Value)
		if err != nil {
			t.Fatal(err)
		}
		if prev, ok := states[st.ProductID]; !ok || st.Version > prev.Version {
			states[st.ProductID] = st
		}
	}
	stop()
	for id, n := range sent {
		st := states[id]
		if int(st.ChangeCount) != n || st.Fields.Price == nil || *st.Fields.Price != strconv.Itoa(n) {
			t.Errorf("%s: state counts %d changes, price %v; want %d and %d", id, st.ChangeCount, show(st.Fields.Price), n, n)
		}
		if counts[id] < n || e.eos && counts[id] != n {
			t.Errorf("%s: updates count %d changes, want %d", id, counts[id], n)
		}
	}
	out := logs.String()
	if n := strings.Count(out, "kafka unreachable: processing paused"); n != 1 {
		t.Errorf("the outage's start logged %d times, want once", n)
	}
	if n := strings.Count(out, "kafka answers again: processing resumed"); n != 1 {
		t.Errorf("the outage's end logged %d times, want once", n)
	}
	if t.Failed() {
		t.Logf("log:\n%s", out)
	}
	if first.IsZero() {
		t.Fatal("no update was written after the outage")
	}
	return outageRun{resumed: first.Sub(back), logs: out}
}

func show[T any](p *T) string {
	if p == nil {
		return "unset"
	}
	return fmt.Sprint(*p)
}

// maxResume is how soon after the broker answers again the processor
// writes updates again.
const maxResume = 5 * time.Second

// Exactly once, on virtual time: the processor rides out a broker outage
// under load, long enough for the transaction open when it began to fail
// and for the group session to be lost, whatever its length (15 s, and 2
// minutes), and resumes within 5 s of the broker answering again with every
// change counted once.
func TestProcessorRidesOutBrokerOutageExactlyOnce(t *testing.T) {
	for _, outage := range []time.Duration{15 * time.Second, 2 * time.Minute} {
		t.Run(outage.String(), func(t *testing.T) {
			restartableTest(t, true, func(t *testing.T, e *env) {
				r := rideOutage(t, e, outage)
				t.Logf("resumed %s after the broker answered again", r.resumed)
				if r.resumed > maxResume {
					t.Errorf("resumed %s after the broker answered again, want at most %s", r.resumed, maxResume)
				}
				if n := testutil.ToFloat64(e.metrics.recoveries); n == 0 {
					t.Errorf("no failed cycle was recovered from: the outage did not reach a transaction")
				}
			})
		})
	}
}

// At least once, on the wall clock (franz-go holds a lock across the
// retries of an asynchronous commit, which the virtual clock cannot pass):
// the processor rides out a broker outage under load and resumes within 5 s
// of the broker answering again, with every change in its state once.
func TestProcessorRidesOutBrokerOutageAtLeastOnce(t *testing.T) {
	e := newRestartableEnv(t, false)
	r := rideOutage(t, e, 8*time.Second)
	t.Logf("resumed %s after the broker answered again", r.resumed)
	if r.resumed > maxResume {
		t.Errorf("resumed %s after the broker answered again, want at most %s", r.resumed, maxResume)
	}
}

// flakyRegistry is a schema registry that answers 503 while down is set.
func flakyRegistry(t *testing.T) (url string, down *atomic.Bool) {
	reg := srfake.New()
	t.Cleanup(reg.Close)
	target, err := neturl.Parse(reg.URL())
	if err != nil {
		t.Fatal(err)
	}
	down = new(atomic.Bool)
	proxy := httputil.NewSingleHostReverseProxy(target)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if down.Load() {
			http.Error(w, "unavailable", http.StatusServiceUnavailable)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL, down
}

// A change whose writer schema the processor has not seen, read while the
// schema registry does not answer, waits for it: it goes to no dead letter
// topic, the processor is not ready and says why, and once the registry
// answers the change is applied and its update written.
func TestProcessorWaitsForTheRegistry(t *testing.T) {
	url, down := flakyRegistry(t)
	rcl, err := sr.NewClient(sr.URLs(url))
	if err != nil {
		t.Fatal(err)
	}
	names := topics.For("t.")
	writer := schemas.NewSerde(rcl)
	if err := writer.Register(context.Background(), names.ByKind()); err != nil {
		t.Fatal(err)
	}
	// The processor's serde knows the schemas it writes, not the changes'.
	reader := schemas.NewSerde(rcl)
	kinds := names.ByKind()
	delete(kinds, schemas.KindChange)
	if err := reader.Register(context.Background(), kinds); err != nil {
		t.Fatal(err)
	}
	e := newEnvOn(t, writer, nil)
	var logs lockedBuffer
	e.log = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	e.serde = reader
	p, exited, _ := e.runWatched(Config{QuietPeriod: 50 * time.Millisecond, MaxDelay: time.Second})
	e.serde = writer
	e.waitAssigned(p, 3)

	down.Store(true)
	e.change("p1", schemas.Fields{Title: str("waits")}, false)
	e.waitFor("the processor to say the registry does not answer", func() bool {
		return errors.Is(p.Ready(context.Background()), ErrRegistryUnreachable)
	})
	if up := testutil.ToFloat64(e.metrics.registryUp); up != 0 {
		t.Errorf("registry_up %v while it does not answer, want 0", up)
	}
	time.Sleep(time.Second)
	if got := e.read(e.names.Updates, 1, time.Second); len(got) != 0 {
		t.Fatalf("%d updates while the change's schema was unknown", len(got))
	}

	down.Store(false)
	ups := e.updates(e.read(e.names.Updates, 1, 10*time.Second))
	if len(ups) != 1 || ups[0].State == nil || *ups[0].State.Fields.Title != "waits" {
		t.Fatalf("after the registry answered again: updates %+v", ups)
	}
	e.waitFor("the processor to be ready again", func() bool { return p.Ready(context.Background()) == nil })
	if dlq := e.read(e.names.DLQ, 1, time.Second); len(dlq) != 0 {
		t.Errorf("%d dead letters: a registry that did not answer made a change a dead letter", len(dlq))
	}
	select {
	case <-exited:
		t.Fatal("Run returned")
	default:
	}
	out := logs.String()
	if strings.Count(out, "schema registry unreachable: processing paused") != 1 || strings.Count(out, "schema registry answers again") != 1 {
		t.Errorf("want the registry's outage logged once as it began and once as it ended; log:\n%s", out)
	}
}
