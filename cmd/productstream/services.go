package main

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/productstream/productstream/config"
	"github.com/productstream/productstream/kafka"
	"github.com/productstream/productstream/registry"
)

// services are the broker and the registry a role talks to: where they
// are and how the connections are secured. Every Kafka client and registry
// client of the binary is built from them.
type services struct {
	kafka    kafka.Connection
	registry registry.Connection
}

// newServices is the services the configuration names: kafka.brokers,
// kafka.tls and kafka.sasl, and the schema_registry section. A TLS file
// that does not load is an error now.
func newServices(cfg *config.Config, log *slog.Logger) (services, error) {
	k, err := kafka.Connect(cfg.Kafka, log)
	if err != nil {
		return services{}, fmt.Errorf("invalid config:\n%w", err)
	}
	r, err := registry.Connect(cfg.SchemaRegistry)
	if err != nil {
		return services{}, fmt.Errorf("invalid config:\n%w", err)
	}
	if k.Security.SASL() == config.SASLPlain && !k.Security.TLS() {
		log.Warn("kafka.sasl.mechanism PLAIN without kafka.tls sends the password in the clear")
	}
	return services{kafka: k, registry: r}, nil
}

// plainServices are the embedded broker and registry of dev: no TLS, no
// credentials.
func plainServices(brokers []string, registryURL string, log *slog.Logger) services {
	return services{kafka: kafka.Connection{Brokers: brokers, Log: log}, registry: registry.Plain(registryURL)}
}

// kafkaOpts are the options a Kafka client of s starts from, logging to
// log.
func (s services) kafkaOpts(log *slog.Logger) []kgo.Opt {
	c := s.kafka
	c.Log = log
	return c.Options()
}

// check connects to the broker and the registry once and returns the
// security error that stops the role (wrong credentials, an untrusted
// certificate, a mechanism the broker does not enable, TLS on one side
// only); nil when both answer or fail for another reason, which is
// retried. It asks both at once.
func (s services) check(ctx context.Context) error {
	registry := make(chan error, 1)
	go func() { registry <- s.registry.Check(ctx) }()
	kerr := s.kafka.Check(ctx)
	rerr := <-registry
	if kerr != nil {
		return kerr
	}
	return rerr
}

// securityError is the security error err, from a client of s, stands
// for, or nil.
func (s services) securityError(ctx context.Context, err error) error {
	if serr := s.registry.Diagnose(err); serr != nil {
		return serr
	}
	return s.kafka.Diagnose(ctx, err)
}

// toolServices are the services a tool (tail, the sink tools) talks to:
// the config's, with --brokers and --registry taking their place when
// given, else the dev broker and registry; checked once, so that a wrong
// credential stops the tool with its error.
func toolServices(ctx context.Context, cfg *config.Config, log *slog.Logger, brokers, registry string) (services, error) {
	svc, err := newServices(cfg, log)
	if err != nil {
		return services{}, err
	}
	if brokers != "" || len(svc.kafka.Brokers) == 0 {
		svc.kafka.Brokers = strings.Split(cmp.Or(brokers, "127.0.0.1:9092"), ",")
	}
	svc.registry = svc.registry.WithURL(cmp.Or(registry, svc.registry.URL(), "http://127.0.0.1:8081"))
	if err := svc.check(ctx); err != nil {
		return services{}, err
	}
	return svc, nil
}
