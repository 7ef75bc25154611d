package ingest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr"
	"github.com/twmb/franz-go/pkg/sr/srfake"

	"github.com/productstream/productstream/config"
	"github.com/productstream/productstream/schemas"
)

// BenchmarkEdge is one LiSA delivery of 1 KB through the edge's handler,
// from the request to Kafka's acknowledgement, on an in-process broker:
// what the edge spends per request besides the HTTP server and the wire.
func BenchmarkEdge(b *testing.B) {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, "c", "e"))
	if err != nil {
		b.Fatal(err)
	}
	defer cluster.Close()
	reg := srfake.New()
	defer reg.Close()
	rcl, _ := sr.NewClient(sr.URLs(reg.URL()))
	serde := schemas.NewSerde(rcl)
	if err := serde.Register(context.Background(), map[schemas.Kind][]string{schemas.KindChange: {"c"}, schemas.KindEvent: {"e"}}); err != nil {
		b.Fatal(err)
	}
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(cluster.ListenAddrs()...)}, ProducerOptions(10e9)...)...)
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	srcs, err := NewSources([]config.Source{{Name: "l", Provider: "lisa", ID: "p", Namespace: "n", Secrets: []string{"s1"}, APIKeys: []string{"k1"}, DedupeWindow: 600e9}}, Deps{Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	h := New(srcs, Output{Producer: KafkaProducer{cl}, Encoder: serde, ChangesTopic: "c", EventsTopic: "e"}, WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))),
		WithRefusalBudget(5, 100), WithObserver(benchMetrics(b))).Handler()
	body := []byte(fmt.Sprintf(`{"productId":"p1","price":"19.99","title":"%s"}`, bytes.Repeat([]byte("x"), 900)))
	sig := sign("s1", body)
	b.ReportAllocs()
	for b.Loop() {
		req := httptest.NewRequest(http.MethodPost, "/plugin-notifications/p/updates", bytes.NewReader(body))
		req.Header.Set("Authorization", "ApiKey k1")
		req.Header.Set("X-Hmac-Signature", sig)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != http.StatusAccepted {
			b.Fatal(w.Code, w.Body.String())
		}
	}
}

// benchMetrics is the Prometheus observer on a registry of its own.
func benchMetrics(b *testing.B) *Metrics {
	m, err := NewMetrics(prometheus.NewRegistry(), nil)
	if err != nil {
		b.Fatal(err)
	}
	return m
}
