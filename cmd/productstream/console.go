package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/crypto/bcrypt"

	"github.com/productstream/productstream/config"
	"github.com/productstream/productstream/console"
	"github.com/productstream/productstream/deliveries"
	"github.com/productstream/productstream/schemas"
	"github.com/productstream/productstream/sink"
	"github.com/productstream/productstream/timeline"
	"github.com/productstream/productstream/topics"
)

// consoleSampleEvery is how often the console samples the processes'
// metrics: its rates are over this interval.
const consoleSampleEvery = 5 * time.Second

// runConsoleRole is `productstream console`: the console alone, reading
// the topics, the groups and the other processes' metrics.
func runConsoleRole(ctx context.Context, args []string) error {
	needs := config.Needs{Brokers: true, Registry: true}
	return runRole(ctx, "console", args, needs, func(cfg *config.Config, log *slog.Logger) (roleRun, error) {
		if cfg.Console.Listen == "" {
			return nil, errors.New("console.listen is not set: the console role has nothing to serve")
		}
		return func(ctx context.Context, r *role, serde *schemas.Serde, names topics.Names) error {
			return serveConsole(ctx, r, serde, names, cfg.Console.Listen, func(addr string) {
				r.ops.handler.Started()
				log.Info("console listening", "addr", addr)
			})
		}, nil
	})
}

// serveConsole serves the console on listen until ctx ends. ready is
// called with the bound address.
func serveConsole(ctx context.Context, r *role, serde *schemas.Serde, names topics.Names, listen string, ready func(string)) error {
	cfg, log := r.cfg, r.log.With("component", "console")
	cc := cfg.Console
	cc.Listen = listen
	if err := console.Check(cc); err != nil {
		return err
	}
	opts := r.svc.kafkaOpts(log)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return fmt.Errorf("kafka client: %w", err)
	}
	defer cl.Close()
	feedClient, err := kgo.NewClient(opts...)
	if err != nil {
		return fmt.Errorf("kafka client: %w", err)
	}
	defer feedClient.Close()
	feed, err := deliveries.NewFeed(feedClient, names.Deliveries, deliveries.WithLogger(log))
	if err != nil {
		return err
	}
	tl, err := timeline.New(cl, serde, names, cfg.Processor.Group, timeline.WithWindow(cc.TimelineWindow),
		timeline.WithSchedule(cfg.Processor.QuietPeriod, cfg.Processor.MaxDelay))
	if err != nil {
		return err
	}
	sampler := console.NewSampler(r.ops.reg, cc.Scrape, consoleSampleEvery, log)
	auditClient, err := kgo.NewClient(append(opts, kgo.DefaultProduceTopic(names.Audit))...)
	if err != nil {
		return fmt.Errorf("kafka client: %w", err)
	}
	defer auditClient.Close()

	deps := console.Deps{
		Config: cc, Log: log, Deliveries: feed, Timelines: tl, Kafka: cl, Client: opts,
		ProcessorGroup: cfg.Processor.Group, Changes: names.Changes, ProcessorDLQ: names.DLQ,
		Metrics: sampler, Audit: console.NewTopicAuditor(auditClient, names.Audit, log),
	}
	for _, s := range cfg.Sources {
		deps.Sources = append(deps.Sources, console.Source{Name: s.Name, Provider: s.Provider, Namespace: s.Namespace})
	}
	for _, s := range cfg.Sinks {
		group, dlq := sinkNames(cfg, s.Name)
		deps.Sinks = append(deps.Sinks, console.SinkInfo{Name: s.Name, Type: s.Type, From: s.From,
			Topic: sinkTopic(names, s.From), Group: group, DLQ: dlq,
			Explain: func(ctx context.Context, key string) (string, error) {
				var verdict string
				err := withSinkRunner(ctx, cfg, s, r.svc, serde, log, func(runner *sink.Runner) error {
					ex, err := runner.Explain(ctx, key)
					verdict = ex.Verdict
					return err
				})
				return verdict, err
			}})
	}
	if cc.Actions {
		deps.Actions = sinkActions{cfg: cfg, svc: r.svc, serde: serde, log: log}
	}
	srv, err := console.New(deps)
	if err != nil {
		return err
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { sampler.Run(ctx) })
	wg.Go(func() {
		if err := feed.Run(ctx); err != nil && ctx.Err() == nil {
			log.Error("console: the deliveries feed stopped", "err", err)
		}
	})
	err = srv.Serve(ctx, listen, ready)
	cancel()
	return err
}

// withSinkRunner connects to s's backend for one question and closes it
// after.
func withSinkRunner(ctx context.Context, cfg *config.Config, s config.Sink, svc services, serde *schemas.Serde, log *slog.Logger, f func(*sink.Runner) error) error {
	runner, err := newSinkRunner(ctx, cfg, s, svc, serde, nil, log)
	if err != nil {
		return err
	}
	defer runner.Close()
	return f(runner)
}

// sinkActions are the console's actions on sinks.
type sinkActions struct {
	cfg   *config.Config
	svc   services
	serde *schemas.Serde
	log   *slog.Logger
}

func (a sinkActions) sink(name string) (config.Sink, error) {
	for _, s := range a.cfg.Sinks {
		if s.Name == name {
			return s, nil
		}
	}
	return config.Sink{}, fmt.Errorf("no sink named %q", name)
}

// ReplayDeadLetters replays name's dead letters through the sink.
func (a sinkActions) ReplayDeadLetters(ctx context.Context, name string) (string, error) {
	s, err := a.sink(name)
	if err != nil {
		return "", err
	}
	var res sink.Replayed
	err = withSinkRunner(ctx, a.cfg, s, a.svc, a.serde, a.log, func(runner *sink.Runner) error {
		res, err = runner.ReplayDeadLetters(ctx)
		return err
	})
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%d applied, %d stale, %d still failing", res.Applied, res.Stale, res.StillFailing), nil
}

// Rebuild rebuilds name, reporting progress.
func (a sinkActions) Rebuild(ctx context.Context, name string, progress func(read, total int64)) (string, error) {
	s, err := a.sink(name)
	if err != nil {
		return "", err
	}
	var n int
	err = withSinkRunner(ctx, a.cfg, s, a.svc, a.serde, a.log, func(runner *sink.Runner) error {
		n, err = runner.Rebuild(ctx, func(p sink.Progress) { progress(p.Read, p.Total) })
		return err
	})
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("generation %d is live", n), nil
}

// runHashPassword is `productstream hash-password`: it reads a password
// from stdin and prints its bcrypt hash, for console.users.
func runHashPassword(_ context.Context, args []string) error {
	if len(args) > 0 {
		return errors.New("usage: productstream hash-password < password-file (reads one line from stdin)")
	}
	line, err := bufio.NewReader(os.Stdin).ReadString('\n')
	if err != nil && line == "" {
		return fmt.Errorf("reading the password from stdin: %w", err)
	}
	pass := strings.TrimRight(line, "\r\n")
	if len(pass) < 12 {
		return errors.New("the password must be at least 12 characters")
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(pass), bcrypt.DefaultCost)
	if err != nil {
		return err
	}
	fmt.Println(string(hash))
	return nil
}
