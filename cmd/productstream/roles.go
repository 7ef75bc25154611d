package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/productstream/productstream/config"
	"github.com/productstream/productstream/deliveries"
	"github.com/productstream/productstream/ingest"
	"github.com/productstream/productstream/kafka"
	"github.com/productstream/productstream/processor"
	"github.com/productstream/productstream/schemas"
	"github.com/productstream/productstream/topics"
)

// role is what a running role builds from its configuration once and its
// parts share: the services, the codec of every batch written, the log and
// the operations listener.
type role struct {
	cfg         *config.Config
	svc         services
	compression kafka.Compression
	log         *slog.Logger
	ops         *opsListener
}

// newRole starts the operations listener on opsAddr (none when empty) and
// parses what the parts share. stop ends the listener.
func newRole(ctx context.Context, cfg *config.Config, svc services, opsAddr string, log *slog.Logger) (*role, func(), error) {
	logDeprecations(log, cfg.Deprecations)
	compression, err := kafka.ParseCompression(cfg.Kafka.Compression)
	if err != nil {
		return nil, nil, fmt.Errorf("kafka.compression: %w", err)
	}
	o, stop, err := startOps(ctx, opsAddr, log)
	if err != nil {
		return nil, nil, err
	}
	r := &role{cfg: cfg, svc: svc, compression: compression, log: log, ops: o}
	check, err := registryReady(svc.registry)
	if err != nil {
		stop()
		return nil, nil, err
	}
	o.handler.AddCheck("registry", check)
	// A client of its own answers the Kafka check, whatever the role's
	// parts are doing with theirs.
	cl, err := kgo.NewClient(svc.kafkaOpts(log)...)
	if err != nil {
		stop()
		return nil, nil, fmt.Errorf("kafka client: %w", err)
	}
	o.handler.AddCheck("kafka", kafkaReady(cl))
	return r, func() { stop(); cl.Close() }, nil
}

// roleFlags parses the flags the ingest and process roles share and loads
// the config they need.
func roleFlags(name string, args []string, needs config.Needs) (*config.Config, *slog.Logger, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	path := fs.String("config", "", "config file (YAML; required)")
	level := fs.String("log-level", "", "log level: debug, info, warn, error (default: the config's log.level, info)")
	if err := fs.Parse(args); err != nil {
		return nil, nil, err
	}
	return loadConfig(*path, *level, needs)
}

// loadConfig loads and validates the config file at path, which is
// required, and makes the logger it configures, at level when that is set.
func loadConfig(path, level string, needs config.Needs) (*config.Config, *slog.Logger, error) {
	if path == "" {
		return nil, nil, errors.New("--config is required")
	}
	cfg, err := config.Load(path)
	if err != nil {
		return nil, nil, err
	}
	if err := cfg.Validate(needs); err != nil {
		return nil, nil, fmt.Errorf("invalid config:\n%w", err)
	}
	log, err := newLogger(os.Stderr, cfg.Log.Format, cmp.Or(level, cfg.Log.Level))
	if err != nil {
		return nil, nil, err
	}
	return cfg, log, nil
}

// joinErrors waits for errs to be closed and joins what it carried.
func joinErrors(errs <-chan error) error {
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	return errors.Join(all...)
}

func runIngestRole(ctx context.Context, args []string) error {
	needs := config.Needs{Brokers: true, Registry: true, Sources: true}
	return runRole(ctx, "ingest", args, needs, func(cfg *config.Config, log *slog.Logger) (roleRun, error) {
		sources, err := ingest.NewSources(cfg.Sources, ingest.Deps{Log: log})
		if err != nil {
			return nil, fmt.Errorf("invalid config:\n%w", err)
		}
		reload := newReloader(cfg, needs, log)
		return func(ctx context.Context, r *role, serde *schemas.Serde, names topics.Names) error {
			return serveIngest(ctx, r, sources, reload, serde, names, cfg.HTTP.Listen, *cfg.HTTP.DrainDelay, func(addr string) {
				log.Info("ingest listening", "addr", addr)
			})
		}, nil
	})
}

func runProcessRole(ctx context.Context, args []string) error {
	needs := config.Needs{Brokers: true, Registry: true}
	return runRole(ctx, "process", args, needs, func(*config.Config, *slog.Logger) (roleRun, error) {
		return func(ctx context.Context, r *role, serde *schemas.Serde, names topics.Names) error {
			r.ops.handler.Started() // its readiness is the processor's check, added as it starts
			return runProcessor(ctx, r, serde, names)
		}, nil
	})
}

// roleRun runs a role's parts once its topics and schemas are in place.
type roleRun func(ctx context.Context, r *role, serde *schemas.Serde, names topics.Names) error

// runRole is the start the ingest and process roles share: parse the flags
// and load the config, let build check what only this role needs (before
// anything starts or waits for a service), start the operations listener,
// create the topics and register the schemas, then run what build returned.
func runRole(ctx context.Context, name string, args []string, needs config.Needs, build func(*config.Config, *slog.Logger) (roleRun, error)) error {
	cfg, log, err := roleFlags(name, args, needs)
	if err != nil {
		return err
	}
	tuneRuntime(cfg.Runtime, name, log)
	if name != "ingest" { // the ingest role's reloader takes SIGHUP
		defer ignoreHangup(ctx, log, name)()
	}
	run, err := build(cfg, log)
	if err != nil {
		return err
	}
	svc, err := newServices(cfg, log)
	if err != nil {
		return err
	}
	r, stop, err := newRole(ctx, cfg, svc, cfg.Ops.Listen, log)
	if err != nil {
		return err
	}
	defer stop()
	var groups []string
	if name == "process" {
		groups = pendingGroups(cfg)
	}
	serde, names, err := prepare(ctx, cfg, r.svc, log, groups...)
	if err != nil {
		return err
	}
	return run(ctx, r, serde, names)
}

// pendingGroups is the processor group whose pending changelog prepare
// creates with the other topics, when it runs exactly once: so its
// partitions have leaders by the time the processor restores them.
func pendingGroups(cfg *config.Config) []string {
	if !*cfg.Processor.ExactlyOnce {
		return nil
	}
	return []string{cfg.Processor.Group}
}

// prepare creates missing topics (and the pending changelog of each of
// groups, a processor group's) and registers the schemas, at once, since
// neither waits for the other; it retries while the broker or the registry
// is not reachable yet (they may start later). It stops at once on a
// security error, which retrying does not fix: credentials refused, an
// untrusted certificate, a mechanism the broker does not enable, TLS on
// one side only.
func prepare(ctx context.Context, cfg *config.Config, svc services, log *slog.Logger, groups ...string) (*schemas.Serde, topics.Names, error) {
	start := time.Now()
	names := topics.For(cfg.Kafka.TopicPrefix)
	if err := svc.check(ctx); err != nil {
		return nil, names, err
	}
	checked := time.Since(start)
	reg, err := svc.registry.NewClient()
	if err != nil {
		return nil, names, err
	}
	serde := schemas.NewSerde(reg)
	// Retries back off from 10 ms, not franz-go's 250: a partition just
	// created answers NOT_LEADER_FOR_PARTITION for a few milliseconds
	// (topics.Ensure waits for it), and a broker not up yet is retried
	// by the loop below.
	cl, err := kgo.NewClient(append(svc.kafkaOpts(log), kgo.RetryBackoffFn(func(tries int) time.Duration {
		return min(10*time.Millisecond<<min(tries, 7), time.Second)
	}))...)
	if err != nil {
		return nil, names, fmt.Errorf("kafka client: %w", err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	spec := topicSpec(cfg)
	var topicsTook, schemasTook time.Duration
	for wait := 500 * time.Millisecond; ; wait = min(2*wait, 10*time.Second) {
		var registered error
		done := make(chan struct{})
		go func() {
			defer close(done)
			t := time.Now()
			registered = serde.Register(ctx, names.ByKind())
			schemasTook = time.Since(t)
		}()
		t := time.Now()
		err = topics.Ensure(ctx, adm, names, spec, groups...)
		topicsTook = time.Since(t)
		<-done
		if err == nil {
			err = registered
		}
		if err == nil || errors.Is(err, topics.ErrPartitionMismatch) {
			break
		}
		if serr := svc.securityError(ctx, err); serr != nil {
			return nil, names, serr
		}
		log.Warn("kafka or registry not ready; retrying", "err", err, "in", wait)
		select {
		case <-ctx.Done():
			return nil, names, fmt.Errorf("preparing topics and schemas: %w", err)
		case <-time.After(wait):
		}
	}
	if err != nil {
		return serde, names, err
	}
	log.Info("topics and schemas in place", "took", time.Since(start).Round(time.Millisecond),
		"check", checked.Round(time.Millisecond), "topics", topicsTook.Round(time.Millisecond), "schemas", schemasTook.Round(time.Millisecond))
	return serde, names, nil
}

// serveIngest runs the HTTP edge on listen until ctx ends, then drains:
// /readyz answers "draining" from then on (startOps), and for drain the
// edge goes on serving every request as before, so that load balancers
// stop sending it new ones; then it stops accepting (a connection is
// refused from then on), lets requests in flight finish within
// http.shutdown_timeout and flushes the producer, then the delivery log's.
// ready is called with the bound address once it accepts connections.
// reload, when not nil, swaps in new sources when the configuration
// changes.
func serveIngest(ctx context.Context, r *role, sources []*ingest.Source, reload *reloader, serde *schemas.Serde, names topics.Names, listen string, drain time.Duration, ready func(addr string)) error {
	cfg, log := r.cfg, r.log
	cl, err := kgo.NewClient(append(append(r.svc.kafkaOpts(log), ingest.ProducerOptions(cfg.Kafka.ProduceTimeout)...), r.compression.ProducerOpt())...)
	if err != nil {
		return fmt.Errorf("kafka client: %w", err)
	}
	defer cl.Close()
	proxies, err := cfg.HTTP.TrustedPrefixes()
	if err != nil {
		return err
	}
	m, err := ingest.NewMetrics(r.ops.reg, sources)
	if err != nil {
		return fmt.Errorf("ingest metrics: %w", err)
	}
	// The delivery log has a client of its own: a slow deliveries topic
	// never delays an answer.
	logClient, err := kgo.NewClient(append(append(r.svc.kafkaOpts(log), deliveries.ProducerOptions()...), r.compression.ProducerOpt())...)
	if err != nil {
		return fmt.Errorf("delivery log kafka client: %w", err)
	}
	defer logClient.Close()
	host, err := os.Hostname()
	if err != nil {
		host = "unknown"
	}
	recorder, err := deliveries.NewRecorder(logClient, names.Deliveries, fmt.Sprintf("%s:%d", host, os.Getpid()),
		log.With("component", "deliveries"), r.ops.reg)
	if err != nil {
		return fmt.Errorf("delivery log: %w", err)
	}
	edge := ingest.New(sources, ingest.Output{Producer: ingest.NewKafkaProducer(cl), Encoder: serde, ChangesTopic: names.Changes, EventsTopic: names.Events},
		ingest.WithLogger(log.With("component", "ingest")), ingest.WithProduceTimeout(cfg.Kafka.ProduceTimeout),
		ingest.WithRefusalBudget(cfg.HTTP.UnverifiedLimit.PerSecond, cfg.HTTP.UnverifiedLimit.Burst),
		ingest.WithTrustedProxies(proxies), ingest.WithObserver(m), ingest.WithObserver(recorder))
	if reload != nil {
		stopReload, err := reload.start(ctx, r.ops.reg, edge.SetSources)
		if err != nil {
			return err
		}
		defer stopReload()
	}
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
	r.ops.handler.Started()
	ready(ln.Addr().String())
	select {
	case err := <-served:
		return fmt.Errorf("http server: %w", err)
	case <-ctx.Done():
	}
	if drain > 0 {
		log.Info("draining: serving on while load balancers stop sending", "for", drain)
		// Each response closes its connection: a sender's next request
		// opens a new one, which the balancer gives a replica still ready.
		hs.SetKeepAlivesEnabled(false)
		select {
		case <-time.After(drain):
		case err := <-served:
			return fmt.Errorf("http server: %w", err)
		}
	}
	start := time.Now()
	sctx, cancel := context.WithTimeout(context.Background(), cfg.HTTP.ShutdownTimeout)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		log.Warn("http shutdown: requests still in flight are cut off", "err", err)
		_ = hs.Close()
	}
	if err := cl.Flush(sctx); err != nil {
		log.Warn("producer flush", "err", err)
	}
	if err := logClient.Flush(sctx); err != nil {
		log.Warn("delivery log flush", "err", err)
	}
	log.Info("ingest stopped", "drained", drain, "shutdown", time.Since(start).Round(time.Millisecond))
	return nil
}

// runProcessor runs one processor group member until ctx ends, through
// any outage of Kafka or the registry; the ops listener is ready while it
// owns partitions and they answer it.
func runProcessor(ctx context.Context, r *role, serde *schemas.Serde, names topics.Names) error {
	cfg, svc, log := r.cfg, r.svc, r.log
	pm, err := processor.NewMetrics(r.ops.reg)
	if err != nil {
		return err
	}
	p, err := processor.New(processor.Config{
		Brokers:        svc.kafka.Brokers,
		Security:       svc.kafka.Security,
		Topics:         names,
		Group:          cfg.Processor.Group,
		QuietPeriod:    cfg.Processor.QuietPeriod,
		MaxDelay:       cfg.Processor.MaxDelay,
		Serde:          serde,
		Log:            log,
		ExactlyOnce:    *cfg.Processor.ExactlyOnce,
		PendingJSON:    cfg.Processor.PendingFormat == "json",
		MaxPendingKeys: cfg.Processor.MaxPendingKeys,
		MaxJSONDepth:   cfg.Processor.MaxJSONDepth,
		VersionEpoch:   cfg.Processor.VersionEpoch,
		DedupeEventIDs: *cfg.Processor.DedupeEventIDs,
		InstanceID:     cfg.Processor.InstanceID,
		SessionTimeout: cfg.Processor.SessionTimeout,
		CommitInterval: *cfg.Processor.CommitInterval,
		TopicSpec:      topicSpec(cfg),
		Compression:    r.compression,
		Metrics:        pm,
	})
	if err != nil {
		return err
	}
	r.ops.handler.AddCheck("processor", p.Ready)
	return p.Run(ctx)
}

// topicSpec says how the roles create topics.
func topicSpec(cfg *config.Config) topics.Spec {
	return topics.Spec{Partitions: cfg.Kafka.Partitions, ReplicationFactor: cfg.Kafka.ReplicationFactor,
		MinInsyncReplicas: cfg.Kafka.MinInsyncReplicas, Configs: cfg.Kafka.TopicConfigs}
}
