package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/productstream/productstream/config"
)

// TestServicesPlaintext pins down that without -config the harness's
// clients are plaintext to -brokers and -registry, and the configs it
// writes carry no security keys.
func TestServicesPlaintext(t *testing.T) {
	svc, brokers, reg, err := loadServices("", []string{"127.0.0.1:9092"}, "http://127.0.0.1:8081")
	if err != nil {
		t.Fatal(err)
	}
	if svc.secured() || svc.kafka.Security.TLS() || svc.kafka.Security.SASL() != "" {
		t.Errorf("plaintext services are secured: %s", svc.describe())
	}
	if len(brokers) != 1 || brokers[0] != "127.0.0.1:9092" || reg != "http://127.0.0.1:8081" || svc.registry.URL() != reg {
		t.Errorf("brokers %v, registry %q (%q)", brokers, reg, svc.registry.URL())
	}
	k, r, err := svc.configKeys()
	if err != nil || k != "" || r != "" {
		t.Errorf("config keys %q, %q, %v: want none", k, r, err)
	}
	if n := len(svc.opts()); n != 1 {
		t.Errorf("%d client options, want the seed brokers only", n)
	}
}

// TestServicesFromConfig pins down that -config's kafka and schema_registry
// sections secure every client (TLS and SASL options) and are written,
// whole, into the configs of the productstream processes, which decode to
// the same settings.
func TestServicesFromConfig(t *testing.T) {
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, testCA(t), 0o600); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "secured.yaml")
	if err := os.WriteFile(cfgPath, []byte(`kafka:
  brokers: ["127.0.0.1:19094"]
  tls:
    enabled: true
    ca_file: `+ca+`
  sasl:
    mechanism: SCRAM-SHA-512
    username: productstream
    password: s3cret
schema_registry:
  url: "https://127.0.0.1:18081/apis/ccompat/v7"
  basic_auth:
    username: reg
    password: regpass
`), 0o600); err != nil {
		t.Fatal(err)
	}
	svc, brokers, reg, err := loadServices(cfgPath, []string{"127.0.0.1:9092"}, "http://127.0.0.1:8081")
	if err != nil {
		t.Fatal(err)
	}
	if len(brokers) != 1 || brokers[0] != "127.0.0.1:19094" || reg != "https://127.0.0.1:18081/apis/ccompat/v7" {
		t.Errorf("brokers %v, registry %q: want the file's", brokers, reg)
	}
	if !svc.kafka.Security.TLS() || svc.kafka.Security.SASL() != config.SASLScramSHA512 {
		t.Errorf("kafka security: TLS %v, SASL %q", svc.kafka.Security.TLS(), svc.kafka.Security.SASL())
	}
	// Seed brokers, then the TLS dialer and the SASL mechanism.
	if n := len(svc.opts()); n != 3 {
		t.Errorf("%d client options, want 3", n)
	}
	if d := svc.describe(); strings.Contains(d, "s3cret") || strings.Contains(d, "regpass") || !strings.Contains(d, "SCRAM-SHA-512") {
		t.Errorf("describe %q: want the mechanism, never a password", d)
	}

	out := filepath.Join(dir, "written.yaml")
	if err := writeConfig(out, psConfig{brokers: brokers, registry: reg, prefix: "p.", partitions: 3, listen: "127.0.0.1:0",
		maxBody: 1024, group: "g", exactlyOnce: true, quiet: 1, maxDelay: 1, svc: svc}); err != nil {
		t.Fatal(err)
	}
	got, err := config.Load(out)
	if err != nil {
		t.Fatal(err)
	}
	if got.Kafka.TLS != svc.kafkaTLS || got.Kafka.SASL != svc.sasl || got.Kafka.Brokers[0] != "127.0.0.1:19094" {
		t.Errorf("written kafka section %+v, want TLS %+v and SASL %+v", got.Kafka, svc.kafkaTLS, svc.sasl)
	}
	if b := got.SchemaRegistry.BasicAuth; b == nil || b.Username != "reg" || b.Password != "regpass" || got.SchemaRegistry.URL != reg {
		t.Errorf("written schema_registry section %+v", got.SchemaRegistry)
	}
}

// testCA is a new self-signed CA certificate, PEM encoded.
func testCA(t *testing.T) []byte {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "bench"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
