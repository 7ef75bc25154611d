package main

// How the harness reaches Kafka and the schema registry: plaintext to
// -brokers and -registry by default, or as the kafka and schema_registry
// sections of a productstream configuration file (-config) say, TLS and
// SASL included. Every client the harness makes, in this process and in the
// baselines it re-executes, starts from the same options, and the configs
// it writes for the productstream processes carry the same sections.

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr"
	"gopkg.in/yaml.v3"

	"github.com/productstream/productstream/config"
	"github.com/productstream/productstream/kafka"
	"github.com/productstream/productstream/registry"
)

// services are the broker and registry connections of a run.
type services struct {
	kafka    kafka.Connection
	registry registry.Connection
	// secured are the kafka and schema_registry keys, besides the brokers
	// and the URL, that the configs of the productstream processes get
	// (zero: plaintext, none written).
	kafkaTLS config.KafkaTLS
	sasl     config.SASL
	reg      config.Registry // its URL unused
}

// loadServices builds the connections: from the -config file at path when
// it is not empty (its kafka.brokers and schema_registry.url, when set,
// take the place of brokers and registryURL), else plaintext.
func loadServices(path string, brokers []string, registryURL string) (services, []string, string, error) {
	if path == "" {
		return services{kafka: kafka.Connection{Brokers: brokers}, registry: registry.Plain(registryURL)}, brokers, registryURL, nil
	}
	cfg, err := config.Load(path)
	if err != nil {
		return services{}, nil, "", err
	}
	if len(cfg.Kafka.Brokers) > 0 {
		brokers = cfg.Kafka.Brokers
	}
	if cfg.SchemaRegistry.URL != "" {
		registryURL = cfg.SchemaRegistry.URL
	}
	cfg.Kafka.Brokers, cfg.SchemaRegistry.URL = brokers, registryURL
	return newServices(cfg.Kafka, cfg.SchemaRegistry)
}

// newServices builds the connections of k and r.
func newServices(k config.Kafka, r config.Registry) (services, []string, string, error) {
	kc, err := kafka.Connect(k, nil)
	if err != nil {
		return services{}, nil, "", fmt.Errorf("-config: %w", err)
	}
	rc, err := registry.Connect(r)
	if err != nil {
		return services{}, nil, "", fmt.Errorf("-config: %w", err)
	}
	s := services{kafka: kc, registry: rc, kafkaTLS: k.TLS, sasl: k.SASL, reg: r}
	s.reg.URL = ""
	return s, k.Brokers, r.URL, nil
}

// opts are the options of a new Kafka client of the run: the seed
// brokers, TLS and SASL, then extra.
func (s services) opts(extra ...kgo.Opt) []kgo.Opt {
	return append(s.kafka.Options(), extra...)
}

// newRegistry is a registry client of the run.
func (s services) newRegistry() (*sr.Client, error) { return s.registry.NewClient() }

// secured reports whether any connection is secured (TLS or
// authentication).
func (s services) secured() bool {
	return s.kafkaTLS != (config.KafkaTLS{}) || s.sasl != (config.SASL{}) || s.reg.TLS != (config.TLS{}) ||
		s.reg.BasicAuth != nil || s.reg.BearerToken != "" || s.reg.BearerTokenFile != ""
}

// describe says how the connections are secured, for the report: never a
// password or a token.
func (s services) describe() string {
	if !s.secured() {
		return "plaintext, unauthenticated"
	}
	var parts []string
	if s.kafkaTLS.Enabled {
		parts = append(parts, "Kafka over TLS")
	}
	if s.sasl.Mechanism != "" {
		parts = append(parts, "Kafka SASL "+s.sasl.Mechanism)
	}
	if s.reg.TLS != (config.TLS{}) {
		parts = append(parts, "registry TLS settings")
	}
	if s.reg.BasicAuth != nil || s.reg.BearerToken != "" || s.reg.BearerTokenFile != "" {
		parts = append(parts, "registry credentials")
	}
	return strings.Join(parts, ", ") + " (-config)"
}

// configKeys are the YAML lines the configs of the productstream
// processes get under kafka: and under schema_registry: for the secured
// settings, indented for their section; empty for plaintext.
func (s services) configKeys() (kafkaKeys, registryKeys string, err error) {
	type kafkaSec struct {
		TLS  *config.KafkaTLS `yaml:"tls,omitempty"`
		SASL *config.SASL     `yaml:"sasl,omitempty"`
	}
	var k kafkaSec
	if s.kafkaTLS != (config.KafkaTLS{}) {
		k.TLS = &s.kafkaTLS
	}
	if s.sasl != (config.SASL{}) {
		k.SASL = &s.sasl
	}
	type registrySec struct {
		TLS             *config.TLS         `yaml:"tls,omitempty"`
		BasicAuth       *config.Credentials `yaml:"basic_auth,omitempty"`
		BearerToken     string              `yaml:"bearer_token,omitempty"`
		BearerTokenFile string              `yaml:"bearer_token_file,omitempty"`
	}
	r := registrySec{BasicAuth: s.reg.BasicAuth, BearerToken: s.reg.BearerToken, BearerTokenFile: s.reg.BearerTokenFile}
	if s.reg.TLS != (config.TLS{}) {
		r.TLS = &s.reg.TLS
	}
	if kafkaKeys, err = indentYAML(k); err != nil {
		return "", "", err
	}
	registryKeys, err = indentYAML(r)
	return kafkaKeys, registryKeys, err
}

// indentYAML marshals v and indents every line by two spaces; "" for an
// empty mapping.
func indentYAML(v any) (string, error) {
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(v); err != nil {
		return "", err
	}
	if err := enc.Close(); err != nil {
		return "", err
	}
	text := strings.TrimRight(buf.String(), "\n")
	if text == "{}" || text == "" {
		return "", nil
	}
	return "  " + strings.ReplaceAll(text, "\n", "\n  ") + "\n", nil
}

// clientOptions are opts with franz-go's logs through log, as the roles
// make their clients: for the sinks the harness runs in process.
func (s services) clientOptions(log *slog.Logger, extra ...kgo.Opt) []kgo.Opt {
	c := s.kafka
	c.Log = log
	return append(c.Options(), extra...)
}

// childArgs are the arguments of a baseline child that talks to Kafka:
// its role (runChild's first argument) when not empty, the seed brokers
// and, with -config, the file, then extra.
func (h *harness) childArgs(role string, extra ...string) []string {
	var args []string
	if role != "" {
		args = append(args, role)
	}
	args = append(args, "-brokers", strings.Join(h.o.brokers, ","))
	if h.o.configPath != "" {
		args = append(args, "-config", h.o.configPath)
	}
	return append(args, extra...)
}
