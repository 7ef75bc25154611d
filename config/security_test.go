package config

import (
	"errors"
	"strings"
	"testing"
)

// A secured configuration decodes into the kafka.tls, kafka.sasl and
// schema_registry keys and validates.
func TestSecuredConfigDecodesAndValidates(t *testing.T) {
	cfg, err := Parse([]byte(`
kafka:
  brokers: ["kafka-1:9093"]
  tls: {enabled: true, ca_file: /etc/ps/ca.pem, cert_file: /etc/ps/client.pem, key_file: /etc/ps/client.key, server_name: kafka.internal}
  sasl: {mechanism: SCRAM-SHA-512, username: productstream, password: "${KAFKA_PASSWORD}"}
schema_registry:
  url: https://registry:8081
  tls: {ca_file: /etc/ps/registry-ca.pem}
  basic_auth: {username: ps, password: rs}
`), env(map[string]string{"KAFKA_PASSWORD": "k-secret"}))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(Needs{Brokers: true, Registry: true}); err != nil {
		t.Fatal(err)
	}
	want := Kafka{TLS: KafkaTLS{Enabled: true, TLS: TLS{CAFile: "/etc/ps/ca.pem", CertFile: "/etc/ps/client.pem", KeyFile: "/etc/ps/client.key", ServerName: "kafka.internal"}},
		SASL: SASL{Mechanism: SASLScramSHA512, Username: "productstream", Password: "k-secret"}}
	if cfg.Kafka.TLS != want.TLS || cfg.Kafka.SASL != want.SASL {
		t.Errorf("kafka security %+v %+v, want %+v %+v", cfg.Kafka.TLS, cfg.Kafka.SASL, want.TLS, want.SASL)
	}
	if r := cfg.SchemaRegistry; r.TLS.CAFile != "/etc/ps/registry-ca.pem" || r.BasicAuth == nil || *r.BasicAuth != (Credentials{"ps", "rs"}) {
		t.Errorf("schema_registry %+v", r)
	}
}

// Each inconsistent security setting is refused at start, naming its key.
func TestSecurityValidationNamesTheField(t *testing.T) {
	for _, tc := range []struct {
		name, yaml, field string
	}{
		{"tls keys while tls is off", "kafka: {tls: {ca_file: /ca.pem}}", "kafka.tls.enabled"},
		{"certificate without key", "kafka: {tls: {enabled: true, cert_file: /c.pem}}", "kafka.tls.key_file"},
		{"key without certificate", "kafka: {tls: {enabled: true, key_file: /c.key}}", "kafka.tls.cert_file"},
		{"skip verify with a CA file", "kafka: {tls: {enabled: true, ca_file: /ca.pem, insecure_skip_verify: true}}", "kafka.tls.insecure_skip_verify"},
		{"unknown mechanism", "kafka: {sasl: {mechanism: GSSAPI, username: u, password: p}}", "kafka.sasl.mechanism"},
		{"lower-case mechanism", "kafka: {sasl: {mechanism: plain, username: u, password: p}}", "kafka.sasl.mechanism"},
		{"credentials without a mechanism", "kafka: {sasl: {username: u, password: p}}", "kafka.sasl.mechanism"},
		{"SCRAM without a password", "kafka: {sasl: {mechanism: SCRAM-SHA-256, username: u}}", "kafka.sasl.password"},
		{"PLAIN without a user", "kafka: {sasl: {mechanism: PLAIN, password: p}}", "kafka.sasl.username"},
		{"a token file for SCRAM", "kafka: {sasl: {mechanism: SCRAM-SHA-512, username: u, password: p, token_file: /t}}", "kafka.sasl.token_file"},
		{"OAUTHBEARER without a token", "kafka: {sasl: {mechanism: OAUTHBEARER}}", "kafka.sasl.token_file"},
		{"OAUTHBEARER with both token sources", "kafka: {sasl: {mechanism: OAUTHBEARER, token_file: /t, token_command: 'echo t'}}", "kafka.sasl.token_file"},
		{"OAUTHBEARER with a password", "kafka: {sasl: {mechanism: OAUTHBEARER, token_file: /t, password: p}}", "kafka.sasl.username"},
		{"registry tls on an http URL", "schema_registry: {url: 'http://r:8081', tls: {ca_file: /ca.pem}}", "schema_registry.tls"},
		{"registry certificate without key", "schema_registry: {url: 'https://r', tls: {cert_file: /c.pem}}", "schema_registry.tls.key_file"},
		{"basic auth without a password", "schema_registry: {url: 'https://r', basic_auth: {username: u}}", "schema_registry.basic_auth"},
		{"basic auth and a bearer token", "schema_registry: {url: 'https://r', basic_auth: {username: u, password: p}, bearer_token: t}", "schema_registry.bearer_token"},
		{"a bearer token and its file", "schema_registry: {url: 'https://r', bearer_token: t, bearer_token_file: /t}", "schema_registry.bearer_token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Parse([]byte(tc.yaml), env(nil))
			if err != nil {
				t.Fatal(err)
			}
			err = cfg.Validate(Needs{})
			var fe *FieldError
			if !errors.As(err, &fe) || !strings.Contains(err.Error(), tc.field+":") {
				t.Fatalf("Validate = %v, want a FieldError naming %s", err, tc.field)
			}
		})
	}
}

// What messages say about the SASL settings names the mechanism and the
// user or the token's source, never the password.
func TestSASLDescribeNeverShowsTheSecret(t *testing.T) {
	for s, want := range map[SASL]string{
		{Mechanism: SASLScramSHA512, Username: "alice", Password: "pw-secret"}: `mechanism SCRAM-SHA-512, user "alice"`,
		{Mechanism: SASLOAuthBearer, TokenFile: "/run/token"}:                  "mechanism OAUTHBEARER, token from kafka.sasl.token_file /run/token",
		{Mechanism: SASLOAuthBearer, TokenCommand: "print-secret"}:             "mechanism OAUTHBEARER, token from kafka.sasl.token_command",
	} {
		if got := s.Describe(); got != want || strings.Contains(got, "secret") {
			t.Errorf("Describe(%s) = %q, want %q", s.Mechanism, got, want)
		}
	}
}
