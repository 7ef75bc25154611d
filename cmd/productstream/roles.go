package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr"

	"github.com/productstream/productstream/config"
	"github.com/productstream/productstream/ingest"
	"github.com/productstream/productstream/metrics"
	"github.com/productstream/productstream/processor"
	"github.com/productstream/productstream/schemas"
	"github.com/productstream/productstream/topics"
)

// services are the addresses of the broker and registry a role talks to.
type services struct {
	brokers     []string
	registryURL string
}

// roleFlags parses the flags the ingest and process roles share and loads
// the config they need.
func roleFlags(name string, args []string, needs config.Needs) (*config.Config, *slog.Logger, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	path := fs.String("config", "", "config file (YAML; required)")
	level := fs.String("log-level", "info", "log level: debug, info, warn, error")
	if err := fs.Parse(args); err != nil {
		return nil, nil, err
	}
	if *path == "" {
		return nil, nil, errors.New("--config is required")
	}
	log, err := newLogger(*level)
	if err != nil {
		return nil, nil, err
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return nil, nil, err
	}
	if err := cfg.Validate(needs); err != nil {
		return nil, nil, fmt.Errorf("invalid config:\n%w", err)
	}
	return cfg, log, nil
}

func runIngestRole(ctx context.Context, args []string) error {
	cfg, log, err := roleFlags("ingest", args, config.Needs{Brokers: true, Registry: true, Sources: true})
	if err != nil {
		return err
	}
	if addr := cfg.Debug.Listen; addr != "" {
		stop, err := serveDebug(ctx, addr, log)
		if err != nil {
			return err
		}
		defer stop()
	}
	sources, err := ingest.NewSources(cfg.Sources, ingest.Deps{Log: log})
	if err != nil {
		return fmt.Errorf("invalid config:\n%w", err)
	}
	svc := services{cfg.Kafka.Brokers, cfg.SchemaRegistry.URL}
	serde, names, err := prepare(ctx, cfg, svc, log)
	if err != nil {
		return err
	}
	return serveIngest(ctx, cfg, sources, svc, serde, names, cfg.HTTP.Listen, log, func(addr string) {
		log.Info("ingest listening", "addr", addr)
	})
}

func runProcessRole(ctx context.Context, args []string) error {
	cfg, log, err := roleFlags("process", args, config.Needs{Brokers: true, Registry: true})
	if err != nil {
		return err
	}
	if addr := cfg.Debug.Listen; addr != "" {
		stop, err := serveDebug(ctx, addr, log)
		if err != nil {
			return err
		}
		defer stop()
	}
	svc := services{cfg.Kafka.Brokers, cfg.SchemaRegistry.URL}
	serde, names, err := prepare(ctx, cfg, svc, log)
	if err != nil {
		return err
	}
	if addr := cfg.Processor.MetricsListen; addr != "" {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("processor.metrics_listen %s: %w", addr, err)
		}
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", metrics.Handler())
		hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = hs.Serve(ln) }()
		defer hs.Close()
		log.Info("metrics listening", "addr", ln.Addr().String())
	}
	return runProcessor(ctx, cfg, svc, serde, names, log)
}

// prepare creates missing topics and registers the schemas, retrying while
// the broker or the registry is not reachable yet (they may start later).
func prepare(ctx context.Context, cfg *config.Config, svc services, log *slog.Logger) (*schemas.Serde, topics.Names, error) {
	names := topics.For(cfg.Kafka.TopicPrefix)
	reg, err := sr.NewClient(sr.URLs(svc.registryURL))
	if err != nil {
		return nil, names, fmt.Errorf("registry client: %w", err)
	}
	serde := schemas.NewSerde(reg)
	cl, err := kgo.NewClient(topics.ClientOptions(svc.brokers, log)...)
	if err != nil {
		return nil, names, fmt.Errorf("kafka client: %w", err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	spec := topicSpec(cfg)
	for wait := 500 * time.Millisecond; ; wait = min(2*wait, 10*time.Second) {
		err = topics.Ensure(ctx, adm, names, spec)
		if err == nil {
			err = serde.Register(ctx, names.ByKind())
		}
		if err == nil || errors.Is(err, topics.ErrPartitionMismatch) {
			return serde, names, err
		}
		log.Warn("kafka or registry not ready; retrying", "err", err, "in", wait)
		select {
		case <-ctx.Done():
			return nil, names, fmt.Errorf("preparing topics and schemas: %w", err)
		case <-time.After(wait):
		}
	}
}

// serveIngest runs the HTTP edge on listen until ctx ends, then stops
// accepting, lets requests in flight finish and flushes the producer.
// ready is called with the bound address once it accepts connections.
func serveIngest(ctx context.Context, cfg *config.Config, sources []*ingest.Source, svc services, serde *schemas.Serde, names topics.Names, listen string, log *slog.Logger, ready func(addr string)) error {
	compression, err := topics.Compression(cfg.Kafka.Compression)
	if err != nil {
		return fmt.Errorf("kafka.compression: %w", err)
	}
	cl, err := kgo.NewClient(append(append(topics.ClientOptions(svc.brokers, log), ingest.ProducerOptions(cfg.Kafka.ProduceTimeout)...), compression)...)
	if err != nil {
		return fmt.Errorf("kafka client: %w", err)
	}
	defer cl.Close()
	proxies, err := cfg.HTTP.TrustedPrefixes()
	if err != nil {
		return err
	}
	edge := ingest.New(sources, ingest.Output{Producer: ingest.KafkaProducer{Client: cl}, Encoder: serde, ChangesTopic: names.Changes, EventsTopic: names.Events},
		ingest.WithLogger(log.With("component", "ingest")), ingest.WithProduceTimeout(cfg.Kafka.ProduceTimeout),
		ingest.WithRefusalBudget(cfg.HTTP.UnverifiedLimit.PerSecond, cfg.HTTP.UnverifiedLimit.Burst),
		ingest.WithTrustedProxies(proxies))
	hs, ln, err := ingest.Listen(listen, edge.Handler(), ingest.ListenerConfig{
		ReadHeaderTimeout: cfg.HTTP.ReadHeaderTimeout,
		ReadTimeout:       cfg.HTTP.ReadTimeout,
		WriteTimeout:      cfg.Kafka.ProduceTimeout + 30*time.Second,
		IdleTimeout:       cfg.HTTP.IdleTimeout,
		MaxHeaderBytes:    64 << 10,
		MaxConnections:    cfg.HTTP.MaxConnections,
	})
	if err != nil {
		return err
	}
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	ready(ln.Addr().String())
	select {
	case err := <-served:
		return fmt.Errorf("http server: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), cfg.HTTP.ShutdownTimeout)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		log.Warn("http shutdown", "err", err)
	}
	if err := cl.Flush(sctx); err != nil {
		log.Warn("producer flush", "err", err)
	}
	return nil
}

// runProcessor runs one processor group member until ctx ends.
func runProcessor(ctx context.Context, cfg *config.Config, svc services, serde *schemas.Serde, names topics.Names, log *slog.Logger) error {
	p, err := processor.New(processor.Config{
		Brokers:        svc.brokers,
		Topics:         names,
		Group:          cfg.Processor.Group,
		QuietPeriod:    cfg.Processor.QuietPeriod,
		MaxDelay:       cfg.Processor.MaxDelay,
		Serde:          serde,
		Log:            log,
		ExactlyOnce:    *cfg.Processor.ExactlyOnce,
		MaxPendingKeys: cfg.Processor.MaxPendingKeys,
		MaxJSONDepth:   cfg.Processor.MaxJSONDepth,
		TopicSpec:      topicSpec(cfg),
		Compression:    cfg.Kafka.Compression,
	})
	if err != nil {
		return err
	}
	return p.Run(ctx)
}

// topicSpec says how the roles create topics.
func topicSpec(cfg *config.Config) topics.Spec {
	return topics.Spec{Partitions: cfg.Kafka.Partitions, ReplicationFactor: cfg.Kafka.ReplicationFactor,
		MinInsyncReplicas: cfg.Kafka.MinInsyncReplicas, Configs: cfg.Kafka.TopicConfigs}
}
