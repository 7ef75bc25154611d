package kafka

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/productstream/productstream/config"
	"github.com/productstream/productstream/securitytest"
)

// securedCluster is a kfake broker that takes only TLS, with a certificate
// ca signed for 127.0.0.1, and SASL: alice with SCRAM-SHA-512 and
// SCRAM-SHA-256, bob with PLAIN.
func securedCluster(t *testing.T, ca *securitytest.CA) string {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.TLS(ca.ServerTLS(t, "127.0.0.1")), kfake.EnableSASL(),
		kfake.Superuser(config.SASLScramSHA512, "alice", "alice-secret"),
		kfake.Superuser(config.SASLScramSHA256, "alice", "alice-secret"),
		kfake.Superuser(config.SASLPlain, "bob", "bob-secret"),
		kfake.SeedTopics(1, "t"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c.ListenAddrs()[0]
}

// Each way a secured connection fails is named by Check, promptly, with
// the key to fix and never the password; the right credentials over a
// trusted certificate produce and read a record. On kfake, which closes
// the connection on wrong credentials where Kafka answers
// SASL_AUTHENTICATION_FAILED, Check's own probe tells the two apart.
func TestCheckNamesEachSecurityFailure(t *testing.T) {
	ca := securitytest.NewCA(t, "productstream test CA")
	other := securitytest.NewCA(t, "another CA")
	addr := securedCluster(t, ca)
	trusted := config.KafkaTLS{Enabled: true, TLS: config.TLS{CAFile: ca.File}}
	scram := func(mech, user, pass string) config.SASL {
		return config.SASL{Mechanism: mech, Username: user, Password: pass}
	}
	for _, tc := range []struct {
		name  string
		tls   config.KafkaTLS
		sasl  config.SASL
		field string // "" when it connects
		want  string
	}{
		{name: "SCRAM-SHA-512, right password", tls: trusted, sasl: scram(config.SASLScramSHA512, "alice", "alice-secret")},
		{name: "SCRAM-SHA-256, right password", tls: trusted, sasl: scram(config.SASLScramSHA256, "alice", "alice-secret")},
		{name: "PLAIN, right password", tls: trusted, sasl: scram(config.SASLPlain, "bob", "bob-secret")},
		{name: "insecure_skip_verify", tls: config.KafkaTLS{Enabled: true, TLS: config.TLS{InsecureSkipVerify: true}}, sasl: scram(config.SASLPlain, "bob", "bob-secret")},
		{
			name: "SCRAM-SHA-512, wrong password", tls: trusted, sasl: scram(config.SASLScramSHA512, "alice", "wrong-secret"),
			field: "kafka.sasl.password",
			want:  `kafka: SASL authentication failed (mechanism SCRAM-SHA-512, user "alice"); check kafka.sasl.username and kafka.sasl.password: `,
		},
		{
			name: "SCRAM-SHA-256, unknown user", tls: trusted, sasl: scram(config.SASLScramSHA256, "mallory", "wrong-secret"),
			field: "kafka.sasl.password",
			want:  `kafka: SASL authentication failed (mechanism SCRAM-SHA-256, user "mallory"); check kafka.sasl.username and kafka.sasl.password: `,
		},
		{
			name: "PLAIN, wrong password", tls: trusted, sasl: scram(config.SASLPlain, "bob", "wrong-secret"),
			field: "kafka.sasl.password",
			want:  `kafka: SASL authentication failed (mechanism PLAIN, user "bob"); check kafka.sasl.username and kafka.sasl.password: `,
		},
		{
			name: "a CA file that did not sign the certificate", tls: config.KafkaTLS{Enabled: true, TLS: config.TLS{CAFile: other.File}},
			sasl: scram(config.SASLPlain, "bob", "bob-secret"), field: "kafka.tls.ca_file",
			want: `kafka: TLS: the broker's certificate (issued by "CN=productstream test CA") is not signed by a CA in the CA file ` + other.File + ` (kafka.tls.ca_file): `,
		},
		{
			name: "the system roots", tls: config.KafkaTLS{Enabled: true}, sasl: scram(config.SASLPlain, "bob", "bob-secret"),
			field: "kafka.tls.ca_file",
			want:  `kafka: TLS: the broker's certificate (issued by "CN=productstream test CA") is not signed by a CA in the system roots (set kafka.tls.ca_file to the CA that signed it): `,
		},
		{
			name: "a server name the certificate does not hold", tls: config.KafkaTLS{Enabled: true, TLS: config.TLS{CAFile: ca.File, ServerName: "kafka.example"}},
			sasl: scram(config.SASLPlain, "bob", "bob-secret"), field: "kafka.tls.server_name",
			want: `kafka: TLS: the broker's certificate is not valid for "kafka.example" (set kafka.tls.server_name to a name it holds): `,
		},
		{
			name: "a plaintext client on the TLS port", sasl: scram(config.SASLScramSHA512, "alice", "alice-secret"),
			field: "kafka.tls.enabled",
			want:  "kafka: the broker at " + addr + " answers TLS on this port, but kafka.tls.enabled is false: ",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sec, err := NewSecurity(tc.tls, tc.sasl)
			if err != nil {
				t.Fatal(err)
			}
			conn := Connection{Brokers: []string{addr}, Security: sec}
			start := time.Now()
			err = conn.Check(context.Background())
			if took := time.Since(start); took > 10*time.Second {
				t.Errorf("Check took %s: a security error must stop a role promptly", took)
			}
			if tc.field == "" {
				if err != nil {
					t.Fatalf("Check: %v", err)
				}
				roundTrip(t, conn)
				return
			}
			var se *SecurityError
			if !errors.As(err, &se) {
				t.Fatalf("Check = %v, want a *SecurityError", err)
			}
			if se.Field != tc.field || !strings.HasPrefix(err.Error(), tc.want) {
				t.Errorf("Check = %q (field %s)\nwant  %q... (field %s)", err, se.Field, tc.want, tc.field)
			}
			if strings.Contains(err.Error(), "secret") {
				t.Errorf("the error shows a password: %q", err)
			}
		})
	}
}

// roundTrip produces a record on conn's options and reads it back.
func roundTrip(t *testing.T, conn Connection) {
	t.Helper()
	cl, err := kgo.NewClient(append(conn.Options(), kgo.ConsumeTopics("t"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "t", Value: []byte("v")}).FirstErr(); err != nil {
		t.Fatalf("produce: %v", err)
	}
	if fs := cl.PollFetches(ctx); fs.Err() != nil || fs.NumRecords() == 0 {
		t.Fatalf("fetch: %d records, %v", fs.NumRecords(), fs.Err())
	}
}

// A broker that is not up yet is no security error: the roles retry it.
func TestCheckLeavesAnUnreachableBrokerToRetries(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	for _, tls := range []bool{false, true} {
		sec, err := NewSecurity(config.KafkaTLS{Enabled: tls}, config.SASL{Mechanism: config.SASLPlain, Username: "u", Password: "p"})
		if err != nil {
			t.Fatal(err)
		}
		if err := (Connection{Brokers: []string{addr}, Security: sec}).Check(context.Background()); err != nil {
			t.Errorf("tls %v: Check = %v, want nil (retry)", tls, err)
		}
	}
}

// An OAUTHBEARER token is read afresh for every authentication, from the
// file or the command, so whatever renews it is picked up; an empty or
// missing token is a *TokenError naming the key.
func TestOAuthBearerReadsTheTokenAtEveryAuthentication(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "token")
	write := func(s string) {
		if err := os.WriteFile(file, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name  string
		sasl  config.SASL
		field string
	}{
		{"token_file", config.SASL{Mechanism: config.SASLOAuthBearer, TokenFile: file}, "kafka.sasl.token_file"},
		{"token_command", config.SASL{Mechanism: config.SASLOAuthBearer, TokenCommand: "cat '" + file + "'"}, "kafka.sasl.token_command"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sec, err := NewSecurity(config.KafkaTLS{}, tc.sasl)
			if err != nil {
				t.Fatal(err)
			}
			for _, token := range []string{"first-token", "renewed-token"} {
				write(token + "\n")
				_, msg, err := sec.sasl.Authenticate(context.Background(), "127.0.0.1:9092")
				if err != nil {
					t.Fatal(err)
				}
				if want := "auth=Bearer " + token + "\x01"; !strings.Contains(string(msg), want) {
					t.Fatalf("first message %q does not carry %q", msg, want)
				}
			}
			write(" \n")
			_, _, err = sec.sasl.Authenticate(context.Background(), "127.0.0.1:9092")
			var te *TokenError
			if !errors.As(err, &te) || te.Field != tc.field {
				t.Fatalf("empty token: %v, want a *TokenError of %s", err, tc.field)
			}
			se := Connection{Security: sec}.Diagnose(context.Background(), err)
			if want := "kafka: SASL authentication failed (mechanism OAUTHBEARER, token from " + tc.field; se == nil || !strings.HasPrefix(se.Error(), want) {
				t.Errorf("Diagnose = %v, want %q...", se, want)
			}
		})
	}
}

// Connect reads the TLS files at start: one that does not load is a
// *config.FieldError naming the key.
func TestConnectNamesATLSFileThatDoesNotLoad(t *testing.T) {
	notPEM := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		tls   config.TLS
		field string
	}{
		{"missing CA file", config.TLS{CAFile: filepath.Join(t.TempDir(), "missing.pem")}, "kafka.tls.ca_file"},
		{"CA file without a certificate", config.TLS{CAFile: notPEM}, "kafka.tls.ca_file"},
		{"missing key pair", config.TLS{CertFile: notPEM, KeyFile: notPEM}, "kafka.tls.cert_file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Connect(config.Kafka{Brokers: []string{"b:9092"}, TLS: config.KafkaTLS{Enabled: true, TLS: tc.tls}}, nil)
			var fe *config.FieldError
			if !errors.As(err, &fe) || fe.Field != tc.field {
				t.Fatalf("Connect = %v, want a *config.FieldError of %s", err, tc.field)
			}
		})
	}
}
