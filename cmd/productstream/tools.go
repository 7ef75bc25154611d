package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"

	"github.com/productstream/productstream/config"
	"github.com/productstream/productstream/ingest"
	"github.com/productstream/productstream/tail"
)

// parseInterleaved parses flags that may come before or after positional
// arguments, as in `tail TOPIC --from-beginning`.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return positional, nil
		}
		positional = append(positional, args[0])
		args = args[1:]
	}
}

func runTail(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("tail", flag.ContinueOnError)
	fromBeginning := fs.Bool("from-beginning", false, "read from the start of the topic (default: only new records)")
	exitAtEnd := fs.Bool("exit-at-end", false, "exit once the records present at start were printed")
	brokers := fs.String("brokers", "", "comma-separated seed brokers (default: the config's kafka.brokers, else the dev broker 127.0.0.1:9092)")
	registry := fs.String("registry", "", "schema registry URL (default: the config's schema_registry.url, else the dev registry http://127.0.0.1:8081)")
	path := fs.String("config", "", "config file whose kafka and schema_registry sections say how to connect: addresses, TLS, credentials (default: the dev broker and registry)")
	level := fs.String("log-level", "warn", "log level: debug, info, warn, error")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return errors.New("usage: productstream tail TOPIC [--from-beginning] [--exit-at-end] [--config FILE] [--brokers ADDR] [--registry URL]")
	}
	log, err := newLogger(os.Stderr, config.DefaultLogFormat, *level)
	if err != nil {
		return err
	}
	cfg := &config.Config{}
	if *path != "" {
		if cfg, err = config.Load(*path); err != nil {
			return err
		}
		if err := cfg.Validate(config.Needs{}); err != nil {
			return fmt.Errorf("invalid config:\n%w", err)
		}
	}
	svc, err := toolServices(ctx, cfg, log, *brokers, *registry)
	if err != nil {
		return err
	}
	return tail.Run(ctx, tail.Options{
		Kafka: svc.kafka, Registry: svc.registry, Topic: pos[0],
		FromBeginning: *fromBeginning, ExitAtEnd: *exitAtEnd, Log: log,
	}, os.Stdout)
}

func runSign(_ context.Context, args []string) error {
	fs := flag.NewFlagSet("sign", flag.ContinueOnError)
	source := fs.String("source", "", "source name (required)")
	path := fs.String("config", "", "config file (default: the built-in demo config)")
	file := fs.String("file", "", "body file (default: standard input)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *source == "" {
		return errors.New("--source is required")
	}
	cfg := config.Demo()
	if *path != "" {
		var err error
		if cfg, err = config.Load(*path); err != nil {
			return err
		}
	}
	var body []byte
	var err error
	if *file != "" {
		body, err = os.ReadFile(*file)
	} else {
		body, err = io.ReadAll(os.Stdin)
	}
	if err != nil {
		return fmt.Errorf("read body: %w", err)
	}
	sources, err := ingest.NewSources(cfg.Sources, ingest.Deps{})
	if err != nil {
		return err
	}
	for _, s := range sources {
		if s.Name == *source {
			signer, ok := s.Adapter.(ingest.Signer)
			if !ok {
				return fmt.Errorf("source %q: provider %s cannot sign", *source, s.Provider)
			}
			h := signer.Sign(body)
			keys := make([]string, 0, len(h))
			for k := range h {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				fmt.Printf("%s: %s\n", k, h.Get(k))
			}
			return nil
		}
	}
	return fmt.Errorf("no source named %q", *source)
}
