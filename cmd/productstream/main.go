// Command productstream turns product-change webhooks into ordered,
// replayable Kafka streams and compacted catalog state.
//
//	productstream dev                      everything in one process, embedded broker and registry
//	productstream ingest  --config FILE    the HTTP edge
//	productstream process --config FILE    the processor
//	productstream sink    --config FILE    the sinks (and sink explain, replay-dlq, rebuild)
//	productstream tail TOPIC               print a topic's records as JSON
//	productstream sign --source NAME       print the headers that sign a body
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

const usage = `productstream: product-change webhooks to Kafka streams and catalog state

Usage:
  productstream dev [--config FILE] [--data-dir DIR] [--kafka-addr ADDR] [--registry-addr ADDR] [--http-addr ADDR] [--console-addr ADDR]
  productstream ingest --config FILE
  productstream process --config FILE
  productstream sink --config FILE [--name NAME]
  productstream console --config FILE
  productstream sink explain|replay-dlq|rebuild|drop-generation NAME [KEY|N] --config FILE [--brokers ADDR] [--registry URL]
  productstream tail TOPIC [--from-beginning] [--exit-at-end] [--config FILE] [--brokers ADDR] [--registry URL]
  productstream sign --source NAME [--config FILE] [--file BODY]
  productstream hash-password < PASSWORD_FILE

Run 'productstream COMMAND -h' for a command's flags.
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	commands := map[string]func(ctx context.Context, args []string) error{
		"dev":           runDev,
		"ingest":        runIngestRole,
		"process":       runProcessRole,
		"sink":          runSinkCommand,
		"console":       runConsoleRole,
		"hash-password": runHashPassword,
		"tail":          runTail,
		"sign":          runSign,
	}
	cmd, ok := commands[os.Args[1]]
	if !ok {
		if os.Args[1] != "-h" && os.Args[1] != "--help" && os.Args[1] != "help" {
			fmt.Fprintf(os.Stderr, "unknown command %q\n\n", os.Args[1])
		}
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := cmd(ctx, os.Args[2:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		fmt.Fprintf(os.Stderr, "productstream %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

// newLogger logs to w (the roles: stderr) in format (text or json) at the
// named level.
func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: l}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return slog.New(slog.NewTextHandler(w, opts)), nil
}
