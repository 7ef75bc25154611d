package config

import (
	"errors"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"
)

const sample = `
kafka:
  brokers: ["kafka-1:9092"]
  topic_prefix: "ps."
  partitions: 6
schema_registry:
  url: "http://registry:8081"
http:
  listen: "0.0.0.0:8080"
sources:
  - name: lisa-main
    provider: lisa
    id: "plugin-42"
    namespace: "shop-eu"
    secrets: ["${LISA_SECRET}", "s0"]
    api_keys: ["k1"]
    max_body_bytes: 196608
processor:
  quiet_period: 2s
  max_delay: 30s
debug:
  listen: "127.0.0.1:6060"
`

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestParseExpandsEnvAndDecodesEveryField(t *testing.T) {
	cfg, err := Parse([]byte(sample), env(map[string]string{"LISA_SECRET": "s1"}))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(Needs{Brokers: true, Registry: true, Sources: true}); err != nil {
		t.Fatalf("valid sample refused: %v", err)
	}
	s := cfg.Sources[0]
	if s.Secrets[0] != "s1" || s.Secrets[1] != "s0" || s.ID != "plugin-42" || s.Namespace != "shop-eu" || s.MaxBodyBytes != 196608 {
		t.Fatalf("source decoded wrong: %+v", s)
	}
	if cfg.Kafka.Partitions != 6 || cfg.Kafka.TopicPrefix != "ps." || cfg.Processor.QuietPeriod != 2*time.Second || cfg.Processor.MaxDelay != 30*time.Second {
		t.Fatalf("kafka/processor decoded wrong: %+v %+v", cfg.Kafka, cfg.Processor)
	}
	if cfg.Debug.Listen != "127.0.0.1:6060" {
		t.Fatalf("debug decoded wrong: %+v", cfg.Debug)
	}
	if cfg.Kafka.ProduceTimeout != DefaultProduceTimeout || cfg.Processor.Group != DefaultGroup || cfg.Kafka.Compression != "lz4" {
		t.Fatalf("defaults not applied: %+v", cfg)
	}
}

func TestParseMissingEnvNamesTheVariable(t *testing.T) {
	_, err := Parse([]byte(sample), env(nil))
	if !errors.Is(err, ErrMissingEnv) || !strings.Contains(err.Error(), "LISA_SECRET") {
		t.Fatalf("want ErrMissingEnv naming LISA_SECRET, got %v", err)
	}
}

func TestParseRejectsUnknownKeys(t *testing.T) {
	_, err := Parse([]byte("kafka:\n  brokerz: [a:1]\n"), env(nil))
	if err == nil || !strings.Contains(err.Error(), "brokerz") {
		t.Fatalf("want error naming the unknown key, got %v", err)
	}
}

func TestDefaultsIDAndNamespaceToName(t *testing.T) {
	cfg, err := Parse([]byte("sources:\n  - {name: a, provider: lisa, secrets: [x]}\n"), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Sources[0].ID != "a" || cfg.Sources[0].Namespace != "a" {
		t.Fatalf("id/namespace not defaulted: %+v", cfg.Sources[0])
	}
}

// max_json_depth defaults to 64 for every source and the processor, and a
// configured value is kept.
func TestMaxJSONDepthDefaults(t *testing.T) {
	cfg, err := Parse([]byte("sources:\n  - {name: a, provider: lisa, secrets: [x]}\n  - {name: b, provider: lisa, secrets: [x], max_json_depth: 10000}\nprocessor: {max_json_depth: 1}\n"), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(Needs{}); err != nil {
		t.Fatal(err)
	}
	if cfg.Sources[0].MaxJSONDepth != 64 || cfg.Sources[1].MaxJSONDepth != 10000 || cfg.Processor.MaxJSONDepth != 1 {
		t.Fatalf("max_json_depth: sources %d and %d, processor %d", cfg.Sources[0].MaxJSONDepth, cfg.Sources[1].MaxJSONDepth, cfg.Processor.MaxJSONDepth)
	}
	if d := Demo(); d.Sources[0].MaxJSONDepth != 64 || d.Processor.MaxJSONDepth != 64 {
		t.Fatalf("demo max_json_depth: source %d, processor %d", d.Sources[0].MaxJSONDepth, d.Processor.MaxJSONDepth)
	}
}

func TestValidateNamesTheField(t *testing.T) {
	cases := []struct {
		name  string
		yaml  string
		needs Needs
		field string
	}{
		{"brokers required outside dev", "sources: []", Needs{Brokers: true}, "kafka.brokers"},
		{"broker not host:port", "kafka: {brokers: [nohost]}", Needs{}, "kafka.brokers[0]"},
		{"registry required outside dev", "{}", Needs{Registry: true}, "schema_registry.url"},
		{"registry not a URL", "schema_registry: {url: ftp://x}", Needs{Registry: true}, "schema_registry.url"},
		{"no sources for ingest", "{}", Needs{Sources: true}, "sources"},
		{"missing name", "sources: [{provider: lisa, secrets: [x]}]", Needs{}, "sources[0].name"},
		{"duplicate name", "sources: [{name: a, provider: lisa, secrets: [x]}, {name: a, id: b, provider: lisa, secrets: [x]}]", Needs{}, "sources[1].name"},
		{"duplicate provider id", "sources: [{name: a, id: p, provider: lisa, secrets: [x]}, {name: b, id: p, provider: lisa, secrets: [x]}]", Needs{}, "sources[1].id"},
		{"missing provider", "sources: [{name: a, secrets: [x]}]", Needs{}, "sources[0].provider"},
		{"empty secret", "sources: [{name: a, provider: lisa, secrets: ['']}]", Needs{}, "sources[0].secrets[0]"},
		{"colon in namespace", "sources: [{name: a, provider: lisa, namespace: 'x:y', secrets: [x]}]", Needs{}, "sources[0].namespace"},
		{"unknown topic family", "kafka: {topic_configs: {nope: {a: b}}}", Needs{}, "kafka.topic_configs.nope"},
		{"products not compacted", "kafka: {topic_configs: {products: {cleanup.policy: delete}}}", Needs{}, "kafka.topic_configs.products.cleanup.policy"},
		{"min.insync.replicas above the replication factor", "kafka: {replication_factor: 2, min_insync_replicas: 3}", Needs{}, "kafka.min_insync_replicas"},
		{"negative min.insync.replicas", "kafka: {min_insync_replicas: -1}", Needs{}, "kafka.min_insync_replicas"},
		{"metrics address not host:port", "processor: {metrics_listen: nope}", Needs{}, "processor.metrics_listen"},
		{"debug address not host:port", "debug: {listen: nope}", Needs{}, "debug.listen"},
		{"unknown compression codec", "kafka: {compression: brotli}", Needs{}, "kafka.compression"},
		{"bad partitions", "kafka: {partitions: -1}", Needs{}, "kafka.partitions"},
		{"max delay under quiet period", "processor: {quiet_period: 5s, max_delay: 1s}", Needs{}, "processor.max_delay"},
		{"negative source max_json_depth", "sources: [{name: a, provider: lisa, secrets: [x], max_json_depth: -1}]", Needs{}, "sources[0].max_json_depth"},
		{"source max_json_depth beyond encoding/json", "sources: [{name: a, provider: lisa, secrets: [x], max_json_depth: 10001}]", Needs{}, "sources[0].max_json_depth"},
		{"negative processor max_json_depth", "processor: {max_json_depth: -1}", Needs{}, "processor.max_json_depth"},
		{"processor max_json_depth beyond encoding/json", "processor: {max_json_depth: 10001}", Needs{}, "processor.max_json_depth"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Parse([]byte(tc.yaml), env(nil))
			if err != nil {
				t.Fatal(err)
			}
			err = cfg.Validate(tc.needs)
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("want a FieldError, got %v", err)
			}
			if !strings.Contains(err.Error(), tc.field+":") {
				t.Fatalf("error %q does not name %s", err, tc.field)
			}
		})
	}
}

func TestDemoIsValid(t *testing.T) {
	if err := Demo().Validate(Needs{Sources: true}); err != nil {
		t.Fatal(err)
	}
}

// The shipped deployment config parses and validates.
func TestDeployConfigIsValid(t *testing.T) {
	cfg, err := Load("../deploy/productstream.yaml")
	if err == nil {
		t.Fatal("deploy config loaded without its environment variables")
	}
	for _, k := range []string{"LISA_PLUGIN_ID", "LISA_SECRET", "LISA_API_KEY"} {
		t.Setenv(k, "x-"+k)
	}
	if cfg, err = Load("../deploy/productstream.yaml"); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(Needs{Brokers: true, Registry: true, Sources: true}); err != nil {
		t.Fatal(err)
	}
	if cfg.Sources[0].Secrets[0] != "x-LISA_SECRET" {
		t.Fatalf("secret not expanded: %q", cfg.Sources[0].Secrets[0])
	}
}

// The http settings default as documented, and a setting that would leave
// the listener unbounded stops start-up with an error naming it. (The
// listener's contract depends on them; config_test.go is the natural home.)
func TestHTTPConfigDefaultsAndValidation(t *testing.T) {
	cfg, err := Parse([]byte("{}"), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	h := cfg.HTTP
	if h.ReadHeaderTimeout != 5*time.Second || h.ReadTimeout != 15*time.Second || h.IdleTimeout != time.Minute || h.MaxConnections != 1024 ||
		h.UnverifiedLimit != (RateLimit{PerSecond: 5, Burst: 100}) || len(h.TrustedProxies) != 0 {
		t.Fatalf("defaults: %+v", h)
	}
	cases := []struct{ name, yaml, field string }{
		{"negative header timeout", "http: {read_header_timeout: -1s}", "http.read_header_timeout"},
		{"negative read timeout", "http: {read_timeout: -1s}", "http.read_timeout"},
		{"header timeout past read timeout", "http: {read_header_timeout: 20s, read_timeout: 10s}", "http.read_header_timeout"},
		{"negative idle timeout", "http: {idle_timeout: -1s}", "http.idle_timeout"},
		{"negative connection cap", "http: {max_connections: -1}", "http.max_connections"},
		{"negative refusal budget", "http: {unverified_limit: {per_second: -1}}", "http.unverified_limit"},
		{"a proxy that is no address", "http: {trusted_proxies: [10.0.0.0/8, lb.internal]}", "http.trusted_proxies[1]"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Parse([]byte(tc.yaml), func(string) (string, bool) { return "", false })
			if err != nil {
				t.Fatal(err)
			}
			err = cfg.Validate(Needs{})
			var fe *FieldError
			if !errors.As(err, &fe) || !strings.Contains(err.Error(), tc.field+":") {
				t.Fatalf("got %v, want a FieldError naming %s", err, tc.field)
			}
		})
	}
}

// Every YAML example of README.md that configures productstream parses
// strictly (no unknown key) and validates, so the README cannot drift from
// the code.
func TestREADMEConfigExamplesAreValid(t *testing.T) {
	doc, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllSubmatch(doc, -1)
	checked := 0
	for i, b := range blocks {
		cfg, err := Parse(b[1], func(string) (string, bool) { return "x", true })
		if err != nil {
			t.Fatalf("README yaml block %d: %v", i, err)
		}
		if len(cfg.Sources) == 0 {
			continue // a fragment, not a whole configuration
		}
		if err := cfg.Validate(Needs{Brokers: true, Registry: true, Sources: true}); err != nil {
			t.Fatalf("README yaml block %d: %v", i, err)
		}
		checked++
	}
	if checked == 0 {
		t.Fatal("README has no whole configuration example")
	}
}
