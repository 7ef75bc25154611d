// Package devstack runs the services `productstream dev` embeds: a
// Kafka-protocol broker (franz-go's kfake) persisting to a data directory,
// and a Confluent-API schema registry (srfake) seeded with every published
// schema version under fixed IDs, so IDs are the same on every start.
package devstack

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/sr"
	"github.com/twmb/franz-go/pkg/sr/srfake"

	"github.com/productstream/productstream/schemas"
)

// Options configure the embedded services.
type Options struct {
	// DataDir is where the broker persists; required.
	DataDir string
	// KafkaAddr is the broker's listen address (port 0: any free port).
	KafkaAddr string
	// RegistryAddr is the registry's listen address (port 0: any free port).
	RegistryAddr string
	// Topics maps each schema kind to its topics, for seeding the registry.
	Topics map[schemas.Kind][]string
	// SyncWrites fsyncs every produced batch before it is acknowledged.
	// Without it an acknowledged write survives a killed process (it is in
	// the OS page cache) but not a machine crash.
	SyncWrites bool
	// CompactionInterval is how often the broker compacts compacted topics
	// (default 30s, so compaction is observable while developing).
	CompactionInterval time.Duration
	Log                *slog.Logger
}

// Stack is a running broker and registry.
type Stack struct {
	Cluster     *kfake.Cluster
	KafkaAddr   string // host:port clients dial
	RegistryURL string // base URL of the registry
	Registry    *srfake.Registry

	srv *http.Server
}

// Start starts the broker (reloading DataDir's state if there is any) and
// the registry. Close stops both.
func Start(o Options) (*Stack, error) {
	if o.DataDir == "" {
		return nil, errors.New("devstack: DataDir is required")
	}
	if o.CompactionInterval == 0 {
		o.CompactionInterval = 30 * time.Second
	}
	kopts := []kfake.Opt{
		kfake.NumBrokers(1),
		kfake.DataDir(filepath.Join(o.DataDir, "kafka")),
		kfake.ListenFn(func(network, _ string) (net.Listener, error) { return net.Listen(network, o.KafkaAddr) }),
		kfake.ClusterID("productstream-dev"),
		kfake.BrokerConfigs(map[string]string{
			"log.cleaner.backoff.ms": fmt.Sprint(o.CompactionInterval.Milliseconds()),
		}),
		kfake.WithLogger(kfakeLogger{o.Log}),
	}
	if o.SyncWrites {
		kopts = append(kopts, kfake.SyncWrites())
	}
	cluster, err := kfake.NewCluster(kopts...)
	if err != nil {
		return nil, fmt.Errorf("start embedded broker on %s: %w", o.KafkaAddr, err)
	}

	reg := srfake.NewRegistry()
	// A schema ID can be seeded under one subject only: a kind's further
	// topics get the same ID when the roles register the schema.
	for _, v := range schemas.Published {
		if topics := o.Topics[v.Kind]; len(topics) > 0 {
			reg.SeedSchema(schemas.Subject(topics[0]), v.Version, v.ID, sr.Schema{Schema: v.Text(), Type: sr.TypeAvro})
		}
	}
	ln, err := net.Listen("tcp", o.RegistryAddr)
	if err != nil {
		cluster.Close()
		return nil, fmt.Errorf("start embedded registry on %s: %w", o.RegistryAddr, err)
	}
	srv := &http.Server{Handler: reg.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			o.Log.Error("embedded registry stopped", "err", err)
		}
	}()
	return &Stack{
		Cluster:     cluster,
		KafkaAddr:   cluster.ListenAddrs()[0],
		RegistryURL: "http://" + ln.Addr().String(),
		Registry:    reg,
		srv:         srv,
	}, nil
}

// Close stops the registry and the broker; the broker writes its state to
// the data directory before it returns.
func (s *Stack) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = s.srv.Shutdown(ctx)
	s.Cluster.Close()
}

// kfakeLogger passes the broker's warnings and errors to slog.
type kfakeLogger struct{ log *slog.Logger }

func (l kfakeLogger) Logf(level kfake.LogLevel, format string, args ...any) {
	switch level {
	case kfake.LogLevelError:
		l.log.Error(fmt.Sprintf(format, args...), "component", "kfake")
	case kfake.LogLevelWarn:
		l.log.Warn(fmt.Sprintf(format, args...), "component", "kfake")
	}
}
