package ingest_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr"
	"github.com/twmb/franz-go/pkg/sr/srfake"

	"github.com/productstream/productstream/config"
	"github.com/productstream/productstream/deliveries"
	"github.com/productstream/productstream/ingest"
	"github.com/productstream/productstream/kafka"
	"github.com/productstream/productstream/schemas"
)

// BenchmarkEdgeRole is one LiSA delivery of 1 KB, the load harness's body,
// from the request to Kafka's acknowledgement, through the edge the ingest
// role builds, on an in-process broker: the listener's handler, the
// refusal budget at its defaults, the Prometheus observer and the delivery
// log's recorder writing to a topic through a client of its own, both
// clients compressing as the role's do. It is what the edge spends per
// request besides the HTTP server and the wire, all of it.
func BenchmarkEdgeRole(b *testing.B) {
	const changes, events, log = "c", "e", "d"
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, changes, events, log))
	if err != nil {
		b.Fatal(err)
	}
	defer cluster.Close()
	reg := srfake.New()
	defer reg.Close()
	rcl, err := sr.NewClient(sr.URLs(reg.URL()))
	if err != nil {
		b.Fatal(err)
	}
	serde := schemas.NewSerde(rcl)
	if err := serde.Register(context.Background(), map[schemas.Kind][]string{schemas.KindChange: {changes}, schemas.KindEvent: {events}}); err != nil {
		b.Fatal(err)
	}
	discard := slog.New(slog.NewTextHandler(io.Discard, nil))
	compression, err := kafka.ParseCompression(config.DefaultCompression)
	if err != nil {
		b.Fatal(err)
	}
	client := func(opts ...kgo.Opt) *kgo.Client {
		cl, err := kgo.NewClient(append(append(kafka.ClientOptions(cluster.ListenAddrs(), discard), opts...), compression.ProducerOpt())...)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(cl.Close)
		return cl
	}
	cl := client(ingest.ProducerOptions(10 * time.Second)...)
	logClient := client(deliveries.ProducerOptions()...)

	sources, err := ingest.NewSources([]config.Source{{Name: "l", Provider: "lisa", ID: "p", Namespace: "n", Secrets: []string{"s1"}, APIKeys: []string{"k1"}}}, ingest.Deps{Log: discard})
	if err != nil {
		b.Fatal(err)
	}
	metrics := prometheus.NewRegistry()
	m, err := ingest.NewMetrics(metrics, sources)
	if err != nil {
		b.Fatal(err)
	}
	recorder, err := deliveries.NewRecorder(logClient, log, "bench-host:1", discard, metrics)
	if err != nil {
		b.Fatal(err)
	}
	edge := ingest.New(sources, ingest.Output{Producer: ingest.NewKafkaProducer(cl), Encoder: serde, ChangesTopic: changes, EventsTopic: events},
		ingest.WithLogger(discard), ingest.WithProduceTimeout(10*time.Second),
		ingest.WithRefusalBudget(config.DefaultUnverifiedPerSecond, config.DefaultUnverifiedBurst),
		ingest.WithObserver(m), ingest.WithObserver(recorder))
	hs, ln, err := ingest.Listen("127.0.0.1:0", edge.Handler(), ingest.ListenerConfig{ReadHeaderTimeout: time.Second, ReadTimeout: time.Second,
		WriteTimeout: time.Second, IdleTimeout: time.Second, MaxHeaderBytes: 64 << 10, MaxConnections: 1})
	if err != nil {
		b.Fatal(err)
	}
	ln.Close() // only the listener's handler is used
	h := hs.Handler

	// The load harness's body: 1 KB, the description padding it.
	body := fmt.Appendf(nil, `{"productId":"p1","price":"19.99","currency":"EUR","title":"Bench product p1","updatedAt":"%s","seq":1,"description":"`,
		time.Now().UTC().Format(time.RFC3339Nano))
	body = append(append(body, bytes.Repeat([]byte("lorem ipsum "), 100)[:1024-len(body)-2]...), `"}`...)
	hdr := sources[0].Adapter.(ingest.Signer).Sign(body)
	b.ReportAllocs()
	cpu0 := processCPU(b)
	for b.Loop() {
		// What net/http hands the handler: a parsed request with headers
		// of its own, and a response with a header map of its own.
		req, err := http.NewRequest(http.MethodPost, "http://edge/plugin-notifications/p/updates", bytes.NewReader(body))
		if err != nil {
			b.Fatal(err)
		}
		req.RemoteAddr = "192.0.2.1:1234"
		req.Header = hdr.Clone()
		w := &benchResponse{header: http.Header{}}
		h.ServeHTTP(w, req)
		if w.status != http.StatusAccepted {
			b.Fatal(w.status, w.body.String())
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(processCPU(b)-cpu0)/float64(b.N), "cpu-ns/op")
	if err := logClient.Flush(context.Background()); err != nil {
		b.Fatal(err)
	}
}

// benchResponse is a ResponseWriter keeping the status and body.
type benchResponse struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (w *benchResponse) Header() http.Header { return w.header }

func (w *benchResponse) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
	}
}

func (w *benchResponse) Write(p []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	return w.body.Write(p)
}

// processCPU is the CPU time the process has used, user and system, in
// nanoseconds: the in-process broker's included.
func processCPU(b *testing.B) int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}
