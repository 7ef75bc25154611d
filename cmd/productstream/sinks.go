package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/productstream/productstream/config"
	"github.com/productstream/productstream/schemas"
	"github.com/productstream/productstream/sink"
	"github.com/productstream/productstream/sink/opensearch"
	"github.com/productstream/productstream/sink/postgres"
	"github.com/productstream/productstream/sink/redis"
	"github.com/productstream/productstream/sink/webhook"
	"github.com/productstream/productstream/topics"
)

// sinkBuilders build a sink of each type from its configuration: one line
// per kind.
func sinkBuilders() map[string]func(context.Context, config.Sink, *slog.Logger) (sink.Sink, error) {
	return map[string]func(context.Context, config.Sink, *slog.Logger) (sink.Sink, error){
		"opensearch": func(ctx context.Context, s config.Sink, log *slog.Logger) (sink.Sink, error) {
			return opensearch.New(ctx, *s.OpenSearch, log)
		},
		"postgres": func(ctx context.Context, s config.Sink, log *slog.Logger) (sink.Sink, error) {
			if keepsHistory(s) {
				return postgres.NewHistory(ctx, *s.Postgres, log)
			}
			return postgres.New(ctx, *s.Postgres, log)
		},
		"redis": func(ctx context.Context, s config.Sink, log *slog.Logger) (sink.Sink, error) {
			return redis.New(ctx, *s.Redis, log)
		},
		"webhook": func(ctx context.Context, s config.Sink, log *slog.Logger) (sink.Sink, error) {
			return webhook.New(ctx, *s.Webhook, log)
		},
	}
}

// keepsHistory reports whether s keeps every change rather than each key's
// latest value: a PostgreSQL sink of changes writes its history table.
// Other types reading changes keep the latest change of each key.
func keepsHistory(s config.Sink) bool { return s.From == "changes" && s.Type == "postgres" }

// sinkTopic is the topic a sink reads: from is one of config.SinkSources.
func sinkTopic(names topics.Names, from string) string {
	return map[string]string{"products": names.Products, "updates": names.Updates, "changes": names.Changes,
		"collections": names.Collections, "categories": names.Categories, "options": names.Options,
		"groups": names.Groups, "pos": names.Pos}[from]
}

// sinkNames are the group and dead letter topic of a sink.
func sinkNames(cfg *config.Config, name string) (group, dlq string) {
	group = cfg.Kafka.TopicPrefix + "sink." + name
	return group, group + ".dlq"
}

// newSinkRunner builds s's backend writer and its runner. The backend is
// connected to before it returns.
func newSinkRunner(ctx context.Context, cfg *config.Config, s config.Sink, svc services, serde sink.Decoder, m *sink.Metrics, log *slog.Logger) (*sink.Runner, error) {
	log = log.With("sink", s.Name)
	w, err := sinkBuilders()[s.Type](ctx, s, log)
	if err != nil {
		return nil, fmt.Errorf("sink %s: %w", s.Name, err)
	}
	group, dlq := sinkNames(cfg, s.Name)
	r, err := sink.NewRunner(sink.Config{
		Name: s.Name, Sink: w, Client: svc.kafkaOpts(log),
		Topic: sinkTopic(topics.For(cfg.Kafka.TopicPrefix), s.From), Group: group, DLQ: dlq,
		VersionIsOffset: s.From == "changes", History: keepsHistory(s), Namespaces: s.Namespaces,
		MaxRecords: s.Batch.MaxRecords, MaxBytes: int64(s.Batch.MaxBytes), Linger: *s.Batch.Linger,
		RetryInitial: s.Retry.Initial, RetryMax: s.Retry.Max, Decoder: serde, Metrics: m, Log: log,
	})
	if err != nil {
		_ = w.Close()
		return nil, err
	}
	return r, nil
}

// ensureDLQs creates the dead letter topics of the sinks.
func ensureDLQs(ctx context.Context, cfg *config.Config, svc services, log *slog.Logger, sinks []config.Sink) error {
	cl, err := kgo.NewClient(svc.kafkaOpts(log)...)
	if err != nil {
		return fmt.Errorf("kafka client: %w", err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	for _, s := range sinks {
		_, dlq := sinkNames(cfg, s.Name)
		res, err := adm.CreateTopic(ctx, cfg.Kafka.Partitions, cfg.Kafka.ReplicationFactor, nil, dlq)
		if err == nil {
			err = res.Err
		}
		if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
			return fmt.Errorf("create %s: %w", dlq, err)
		}
	}
	return nil
}

// runSinks runs the configured sinks (only the one named only, when set)
// until ctx ends. A backend that cannot be reached at start is tried again
// with backoff: it holds up its own sink only.
func runSinks(ctx context.Context, r *role, serde *schemas.Serde, only string) error {
	cfg, log := r.cfg, r.log
	var chosen []config.Sink
	for _, s := range cfg.Sinks {
		if only == "" || s.Name == only {
			chosen = append(chosen, s)
		}
	}
	if only != "" && len(chosen) == 0 {
		return fmt.Errorf("no sink named %q in the config", only)
	}
	if len(chosen) == 0 {
		return nil
	}
	if err := ensureDLQs(ctx, cfg, r.svc, log, chosen); err != nil {
		return err
	}
	m, err := sink.NewMetrics(r.ops.reg)
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	errs := make(chan error, len(chosen))
	for _, s := range chosen {
		wg.Go(func() {
			runner, err := connectSink(ctx, cfg, s, r.svc, serde, m, log)
			if err == nil {
				err = runner.Run(ctx)
			}
			if err != nil && ctx.Err() == nil {
				errs <- fmt.Errorf("sink %s: %w", s.Name, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	return joinErrors(errs)
}

// connectSink builds a sink's runner, retrying while its backend is not
// reachable, until ctx ends.
func connectSink(ctx context.Context, cfg *config.Config, s config.Sink, svc services, serde sink.Decoder, m *sink.Metrics, log *slog.Logger) (*sink.Runner, error) {
	for attempt := 0; ; attempt++ {
		runner, err := newSinkRunner(ctx, cfg, s, svc, serde, m, log)
		if err == nil {
			return runner, nil
		}
		wait := max(sink.Backoff(attempt, s.Retry.Initial, s.Retry.Max), s.Retry.Initial)
		log.Warn("sink backend not ready; retrying", "sink", s.Name, "err", err, "in", wait.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(wait):
		}
	}
}

const sinkUsage = `usage:
  productstream sink --config FILE [--name NAME]                 run the configured sinks (or one)
  productstream sink explain NAME KEY --config FILE [--brokers ADDR] [--registry URL]
  productstream sink replay-dlq NAME --config FILE [--brokers ADDR] [--registry URL]
  productstream sink rebuild NAME --config FILE [--brokers ADDR] [--registry URL]
  productstream sink drop-generation NAME GENERATION --config FILE`

// runSinkCommand is `productstream sink`: the role, or one of its tools.
func runSinkCommand(ctx context.Context, args []string) error {
	if len(args) > 0 {
		switch args[0] {
		case "explain", "replay-dlq", "rebuild", "drop-generation":
			return runSinkTool(ctx, args[0], args[1:])
		}
	}
	fs := flag.NewFlagSet("sink", flag.ContinueOnError)
	path := fs.String("config", "", "config file (YAML; required)")
	name := fs.String("name", "", "run only this sink (default: all configured)")
	level := fs.String("log-level", "", "log level: debug, info, warn, error (default: the config's log.level, info)")
	fs.Usage = func() { fmt.Fprintln(os.Stderr, sinkUsage); fs.PrintDefaults() }
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, log, err := loadConfig(*path, *level, config.Needs{Brokers: true, Registry: true})
	if err != nil {
		return err
	}
	if len(cfg.Sinks) == 0 {
		return errors.New("the config has no sinks")
	}
	defer ignoreHangup(ctx, log, "sink")()
	svc, err := newServices(cfg, log)
	if err != nil {
		return err
	}
	r, stop, err := newRole(ctx, cfg, svc, cfg.Ops.Listen, log)
	if err != nil {
		return err
	}
	defer stop()
	serde, _, err := prepare(ctx, cfg, r.svc, log)
	if err != nil {
		return err
	}
	r.ops.handler.Started()
	return runSinks(ctx, r, serde, *name)
}

// runSinkTool runs explain, replay-dlq or rebuild for one sink.
func runSinkTool(ctx context.Context, tool string, args []string) error {
	fs := flag.NewFlagSet("sink "+tool, flag.ContinueOnError)
	path := fs.String("config", "", "config file (YAML; required)")
	brokers := fs.String("brokers", "", "comma-separated seed brokers (default: the config's kafka.brokers, else the dev broker 127.0.0.1:9092)")
	registry := fs.String("registry", "", "schema registry URL (default: the config's schema_registry.url, else the dev registry)")
	level := fs.String("log-level", "warn", "log level: debug, info, warn, error")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	want := map[string]int{"explain": 2, "replay-dlq": 1, "rebuild": 1, "drop-generation": 2}[tool]
	if len(pos) != want || *path == "" {
		return errors.New(sinkUsage)
	}
	cfg, log, err := loadConfig(*path, *level, config.Needs{})
	if err != nil {
		return err
	}
	var s *config.Sink
	for i := range cfg.Sinks {
		if cfg.Sinks[i].Name == pos[0] {
			s = &cfg.Sinks[i]
		}
	}
	if s == nil {
		return fmt.Errorf("no sink named %q in the config", pos[0])
	}
	svc, err := toolServices(ctx, cfg, log, *brokers, *registry)
	if err != nil {
		return err
	}
	reg, err := svc.registry.NewClient()
	if err != nil {
		return err
	}
	runner, err := newSinkRunner(ctx, cfg, *s, svc, schemas.NewSerde(reg), nil, log)
	if err != nil {
		return err
	}
	switch tool {
	case "explain":
		return explainKey(ctx, runner, pos[1])
	case "drop-generation":
		return dropGeneration(ctx, runner, s.Name, pos[1])
	case "replay-dlq":
		res, err := runner.ReplayDeadLetters(ctx)
		if err != nil {
			return err
		}
		fmt.Printf("replayed the dead letters of %s: %d applied, %d stale, %d still failing\n", s.Name, res.Applied, res.Stale, res.StillFailing)
		if res.StillFailing > 0 {
			return fmt.Errorf("%d dead letters still fail", res.StillFailing)
		}
		return nil
	}
	n, err := runner.Rebuild(ctx, func(p sink.Progress) {
		eta := "?"
		if p.Read > 0 && p.Total > p.Read {
			eta = (time.Duration(float64(p.Elapsed) * float64(p.Total-p.Read) / float64(p.Read))).Round(time.Second).String()
		}
		rate := float64(p.Read) / max(p.Elapsed.Seconds(), 0.001)
		fmt.Fprintf(os.Stderr, "rebuild %s generation %d: %d of at most %d records, %.0f/s, ETA %s\n", s.Name, p.Generation, p.Read, p.Total, rate, eta)
	})
	if err != nil {
		return err
	}
	fmt.Printf("rebuilt %s: generation %d is live; the running sink drops the old one after a grace period\n", s.Name, n)
	return nil
}

// explainKey prints what explain found for key, then its verdict.
func explainKey(ctx context.Context, runner *sink.Runner, key string) error {
	ex, err := runner.Explain(ctx, key)
	if err != nil {
		return err
	}
	fmt.Printf("key        %s (partition %d)\n", ex.Key, ex.Partition)
	if l := ex.Latest; l != nil {
		fmt.Printf("source     version %d at offset %d, deleted=%v, written %s\n", l.Version, l.Origin.Offset, l.Deleted, l.UpdatedAt.UTC().Format(time.RFC3339Nano))
	} else {
		fmt.Println("source     no record")
	}
	fmt.Printf("committed  %d\n", ex.Committed)
	switch {
	case ex.HeldErr != nil:
		fmt.Printf("backend    not readable: %v\n", ex.HeldErr)
	case !ex.HeldKnown:
		fmt.Println("backend    (this sink cannot be read back)")
	case ex.Held == nil:
		fmt.Println("backend    nothing")
	default:
		fmt.Printf("backend    version %d, deleted=%v\n", ex.Held.Version, ex.Held.Deleted)
	}
	for _, d := range ex.Dead {
		fmt.Printf("dlq        offset %d: version %d, %s: %s\n", d.Offset, d.Version, d.Class, d.Reason)
	}
	fmt.Println(ex.Verdict)
	return nil
}

// dropGeneration drops one generation of a sink by hand: one a rebuild
// replaced while no sink process ran long enough to drop it.
func dropGeneration(ctx context.Context, runner *sink.Runner, name, arg string) error {
	n, err := strconv.Atoi(arg)
	if err != nil || n < 1 {
		return fmt.Errorf("generation %q is not a number from 1", arg)
	}
	if err := runner.DropGeneration(ctx, n); err != nil {
		return err
	}
	fmt.Printf("dropped generation %d of %s\n", n, name)
	return nil
}
