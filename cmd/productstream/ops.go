package main

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/productstream/productstream/ops"
	"github.com/productstream/productstream/registry"
)

// opsListener is a role's operations listener: the registry its parts
// register their metrics with, and the handler its readiness checks are
// added to. With no address it serves nothing, and the parts still count.
type opsListener struct {
	reg     *prometheus.Registry
	handler *ops.Handler
	addr    string // bound address; "" when not serving
}

// startOps serves the operations listener on addr (none when empty) until
// stop is called, and logs the bound address. /readyz says "starting"
// until the role calls handler.Started once its parts serve (a role's
// dependencies answer before it does). When ctx ends (the signal to stop)
// it turns to "draining" at once, while the role shuts down behind it: the
// listener outlives ctx, so that load balancers and scrapers see the role
// drain rather than vanish.
func startOps(ctx context.Context, addr string, log *slog.Logger) (*opsListener, func(), error) {
	o := &opsListener{reg: ops.NewRegistry()}
	o.handler = ops.NewHandler(o.reg, ops.WithStarting())
	context.AfterFunc(ctx, o.handler.Drain)
	if addr == "" {
		return o, func() {}, nil
	}
	bound, stop, err := ops.Serve(context.WithoutCancel(ctx), addr, o.handler, log)
	if err != nil {
		return nil, nil, err
	}
	o.addr = bound
	log.Info("ops listening", "addr", bound, "serves", "/metrics /healthz /readyz /debug/pprof/")
	return o, stop, nil
}

// kafkaReady is the readiness check of a role's Kafka client: a broker
// answers.
func kafkaReady(cl *kgo.Client) ops.Check {
	return func(ctx context.Context) error {
		if err := cl.Ping(ctx); err != nil {
			return fmt.Errorf("no Kafka broker answers: %w", err)
		}
		return nil
	}
}

// registryReady is the readiness check of the schema registry c reaches:
// it lists its subjects.
func registryReady(c registry.Connection) (ops.Check, error) {
	reg, err := c.NewClient()
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context) error {
		if _, err := reg.Subjects(ctx); err != nil {
			return fmt.Errorf("the schema registry does not answer: %w", err)
		}
		return nil
	}, nil
}

// logDeprecations logs each deprecated key the configuration used.
func logDeprecations(log *slog.Logger, notes []string) {
	for _, n := range notes {
		log.Warn("deprecated configuration", "note", n)
	}
}
