package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/modules/redpanda"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/sr/srfake"
)

// backend is a Kafka broker and a Confluent-API schema registry that the
// backend tests run productstream's roles against.
type backend struct {
	name     string
	brokers  string // comma-separated
	registry string // base URL of the Confluent-compatible API
}

// Environment variables that point the suite at any running broker.
const (
	envBrokers  = "PRODUCTSTREAM_KAFKA_BROKERS"
	envRegistry = "PRODUCTSTREAM_SCHEMA_REGISTRY_URL"
)

// eachBackend runs fn against every backend of this run:
//   - with PRODUCTSTREAM_KAFKA_BROKERS (and PRODUCTSTREAM_SCHEMA_REGISTRY_URL)
//     set: that broker and registry;
//   - with PRODUCTSTREAM_SECURED_KAFKA_BROKERS (and the other
//     PRODUCTSTREAM_SECURED_* variables, see secured_test.go) set: the
//     "secured" backend, a SASL_SSL listener and the registry behind a TLS
//     proxy with basic auth. The roles' configuration files (startRole)
//     and the suite's own clients (readAll, newSerde, kcatRead) get its
//     security, so the tests are the same on every backend;
//   - with neither: an embedded broker (kfake) and registry (srfake) in
//     this process, and Redpanda through testcontainers-go when a Docker
//     engine is reachable (skipped, and said so, when none is).
//
// The tests share nothing but the backend: each uses its own topic prefix
// and consumer group.
func eachBackend(t *testing.T, fn func(t *testing.T, b backend)) {
	brokers, secured := os.Getenv(envBrokers), os.Getenv(envSecuredBrokers) != ""
	if brokers != "" {
		reg := os.Getenv(envRegistry)
		if reg == "" {
			t.Fatalf("%s is set but %s is not", envBrokers, envRegistry)
		}
		t.Run("external", func(t *testing.T) { fn(t, backend{name: "external", brokers: brokers, registry: reg}) })
	}
	if secured {
		t.Run("secured", func(t *testing.T) { fn(t, securedBackend(t)) })
	}
	if brokers != "" || secured {
		return
	}
	t.Run("embedded", func(t *testing.T) { fn(t, embeddedBackend(t)) })
	t.Run("testcontainers", func(t *testing.T) {
		testcontainers.SkipIfProviderIsNotHealthy(t)
		fn(t, containerBackend(t))
	})
}

// embeddedBackend starts a kfake broker whose cleaner runs every 500 ms and
// an srfake registry, for this test only.
func embeddedBackend(t *testing.T) backend {
	t.Helper()
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.BrokerConfigs(map[string]string{"log.cleaner.backoff.ms": "500"}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)
	reg := srfake.New()
	t.Cleanup(reg.Close)
	return backend{name: "embedded", brokers: cluster.ListenAddrs()[0], registry: reg.URL()}
}

var (
	redpandaOnce sync.Once
	redpandaB    backend
	redpandaErr  error
)

// containerBackend starts one Redpanda container (Kafka API and schema
// registry) for the whole package run; Ryuk removes it afterwards.
func containerBackend(t *testing.T) backend {
	t.Helper()
	redpandaOnce.Do(func() {
		ctx := context.Background()
		c, err := redpanda.Run(ctx, "docker.redpanda.com/redpandadata/redpanda:v24.3.7")
		if err != nil {
			redpandaErr = err
			return
		}
		var b backend
		b.name = "testcontainers"
		if b.brokers, err = c.KafkaSeedBroker(ctx); err == nil {
			b.registry, err = c.SchemaRegistryAddress(ctx)
		}
		redpandaB, redpandaErr = b, err
	})
	if redpandaErr != nil {
		t.Fatalf("start Redpanda: %v", redpandaErr)
	}
	return redpandaB
}

// uniquePrefix names a test's topics so that tests never share one, even on
// a long-lived external broker.
func uniquePrefix(t *testing.T) string {
	name := strings.NewReplacer("/", "-", "_", "-").Replace(strings.ToLower(t.Name()))
	return fmt.Sprintf("it-%s-%d.", name, time.Now().UnixNano()%1_000_000_000)
}

// roleConfigs writes the config files of a test's roles on b: b's kafka
// (with prefix, 3 partitions) and schema_registry sections, then rest (the
// sections every role shares: sources, processor, ...), then each role's
// own extra sections. It returns the writer, which names each file.
func roleConfigs(t *testing.T, b backend, prefix, rest string) func(name, extra string) string {
	t.Helper()
	dir := t.TempDir()
	brokers := `"` + strings.Join(strings.Split(b.brokers, ","), `", "`) + `"`
	common := fmt.Sprintf("kafka:\n  brokers: [%s]\n  topic_prefix: %q\n  partitions: 3\nschema_registry:\n  url: %q\n", brokers, prefix, b.registry) + rest
	return func(name, extra string) string {
		path := filepath.Join(dir, name+".yaml")
		if err := os.WriteFile(path, []byte(common+extra), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
}
