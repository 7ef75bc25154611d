package main

import (
	"cmp"
	"context"
	"flag"
	"fmt"
	"os"
	"sync"

	"github.com/productstream/productstream/config"
	"github.com/productstream/productstream/devstack"
	"github.com/productstream/productstream/ingest"
	"github.com/productstream/productstream/topics"
)

// runDev runs the whole pipeline in one process on an embedded broker and
// registry, for local use.
func runDev(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("dev", flag.ContinueOnError)
	path := fs.String("config", "", "config file (default: the built-in demo config)")
	dataDir := fs.String("data-dir", "./.productstream", "where the embedded broker persists")
	kafkaAddr := fs.String("kafka-addr", "127.0.0.1:9092", "embedded Kafka broker listen address")
	registryAddr := fs.String("registry-addr", "127.0.0.1:8081", "embedded schema registry listen address")
	httpAddr := fs.String("http-addr", "", "ingest listen address (default: the config's http.listen, 127.0.0.1:8080)")
	opsAddr := fs.String("ops-addr", "", "operations listen address: /metrics, /healthz, /readyz, /debug/pprof/ (default: the config's ops.listen, else "+config.DefaultDevOpsListen+")")
	consoleAddr := fs.String("console-addr", "", "console listen address (default: the config's console.listen, else "+config.DefaultDevConsoleListen+"); \"off\" serves none")
	syncWrites := fs.Bool("sync-writes", false, "fsync every write of the embedded broker (survives a machine crash, not only a killed process)")
	level := fs.String("log-level", "", "log level: debug, info, warn, error (default: the config's log.level, info)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg := config.Demo()
	if *path != "" {
		var err error
		if cfg, err = config.Load(*path); err != nil {
			return err
		}
	}
	log, err := newLogger(os.Stderr, cfg.Log.Format, cmp.Or(*level, cfg.Log.Level))
	if err != nil {
		return err
	}
	needs := config.Needs{Sources: true}
	if err := cfg.Validate(needs); err != nil {
		return fmt.Errorf("invalid config:\n%w", err)
	}
	tuneRuntime(cfg.Runtime, "dev", log)
	sources, err := ingest.NewSources(cfg.Sources, ingest.Deps{Log: log})
	if err != nil {
		return fmt.Errorf("invalid config:\n%w", err)
	}
	reload := newReloader(cfg, needs, log)
	listen := cfg.HTTP.Listen
	if *httpAddr != "" {
		listen = *httpAddr
	}

	names := topics.For(cfg.Kafka.TopicPrefix)
	stack, err := devstack.Start(devstack.Options{
		DataDir: *dataDir, KafkaAddr: *kafkaAddr, RegistryAddr: *registryAddr,
		Topics: names.ByKind(), SyncWrites: *syncWrites, Log: log,
	})
	if err != nil {
		return err
	}
	defer stack.Close()
	svc := plainServices([]string{stack.KafkaAddr}, stack.RegistryURL, log)
	opsListen := cmp.Or(*opsAddr, cfg.Ops.Listen, config.DefaultDevOpsListen)
	r, stopOps, err := newRole(ctx, cfg, svc, opsListen, log)
	if err != nil {
		return err
	}
	defer stopOps()
	serde, _, err := prepare(ctx, cfg, svc, log, pendingGroups(cfg)...)
	if err != nil {
		return err
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	consoleListen := cmp.Or(*consoleAddr, cfg.Console.Listen, config.DefaultDevConsoleListen)
	if consoleListen == "off" {
		consoleListen = ""
	}
	consoleBound := make(chan string, 1)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	if consoleListen != "" {
		wg.Go(func() {
			err := serveConsole(ctx, r, serde, names, consoleListen, func(addr string) { consoleBound <- addr })
			if err != nil && ctx.Err() == nil {
				errs <- err
				cancel()
			}
		})
	} else {
		consoleBound <- ""
	}
	wg.Add(3)
	go func() {
		defer wg.Done()
		errs <- runProcessor(ctx, r, serde, names)
		cancel()
	}()
	go func() {
		defer wg.Done()
		// A sink whose backend is down waits for it without holding up
		// the rest; one that fails for good ends dev like the others.
		if err := runSinks(ctx, r, serde, ""); err != nil {
			errs <- err
			cancel()
		}
	}()
	go func() {
		defer wg.Done()
		// No drain: nothing balances in front of dev, and Ctrl-C should
		// stop it at once.
		errs <- serveIngest(ctx, r, sources, reload, serde, names, listen, 0, func(addr string) {
			var consoleAt string
			select {
			case consoleAt = <-consoleBound:
			case <-ctx.Done():
			}
			printBanner(cfg, *dataDir, stack, addr, r.ops.addr, consoleAt)
		})
		cancel()
	}()
	wg.Wait()
	close(errs)
	return joinErrors(errs)
}

func printBanner(cfg *config.Config, dataDir string, stack *devstack.Stack, httpAddr, opsAddr, consoleAddr string) {
	fmt.Printf("productstream dev is running (data in %s); Ctrl-C stops it\n", dataDir)
	fmt.Printf("  kafka     %s\n", stack.KafkaAddr)
	fmt.Printf("  registry  %s\n", stack.RegistryURL)
	fmt.Printf("  ingest    http://%s\n", httpAddr)
	fmt.Printf("  ops       http://%s (/metrics /healthz /readyz /debug/pprof/)\n", opsAddr)
	if consoleAddr != "" {
		fmt.Printf("  console   http://%s\n", consoleAddr)
	}
	for _, s := range cfg.Sources {
		fmt.Printf("  source    %s (%s): POST http://%s/webhooks/%s\n", s.Name, s.Provider, httpAddr, s.Name)
	}
	fmt.Printf("  topics    %schanges, %sproducts, %supdates\n", cfg.Kafka.TopicPrefix, cfg.Kafka.TopicPrefix, cfg.Kafka.TopicPrefix)
	for _, s := range cfg.Sinks {
		fmt.Printf("  sink      %s (%s) from %s%s\n", s.Name, s.Type, cfg.Kafka.TopicPrefix, s.From)
	}
	os.Stdout.Sync()
}
