package config

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"slices"
	"strings"
)

// TLS is how a client verifies the server it connects to and, optionally,
// proves who it is: schema_registry.tls, and kafka.tls beside Enabled.
type TLS struct {
	// CAFile is a PEM file of the CA certificates the server's certificate
	// must chain to (default: none, the system roots).
	CAFile string `yaml:"ca_file"`
	// CertFile and KeyFile are a PEM client certificate and its key, for
	// servers that require mutual TLS (default: none). Both or neither.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ServerName is the name the server's certificate must hold (default:
	// none, the host the client connects to).
	ServerName string `yaml:"server_name"`
	// InsecureSkipVerify accepts any certificate the server shows (default
	// false). For tests only: anyone on the path can read the traffic.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
}

// set reports whether any field of t is set.
func (t TLS) set() bool { return t != TLS{} }

// KafkaTLS is kafka.tls: whether the brokers are reached over TLS, and how.
type KafkaTLS struct {
	// Enabled connects to the brokers over TLS (default false).
	Enabled bool `yaml:"enabled"`
	TLS     `yaml:",inline"`
}

// SASL mechanisms kafka.sasl.mechanism accepts.
const (
	SASLPlain       = "PLAIN"
	SASLScramSHA256 = "SCRAM-SHA-256"
	SASLScramSHA512 = "SCRAM-SHA-512"
	SASLOAuthBearer = "OAUTHBEARER"
)

// SASLMechanisms are the values kafka.sasl.mechanism accepts.
var SASLMechanisms = []string{SASLPlain, SASLScramSHA256, SASLScramSHA512, SASLOAuthBearer}

// SASL is kafka.sasl: how productstream authenticates to the brokers.
type SASL struct {
	// Mechanism is PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER
	// (default: none, no authentication).
	Mechanism string `yaml:"mechanism"`
	// Username and Password are the credentials of PLAIN and SCRAM.
	Username string `yaml:"username"`
	Password string `yaml:"password"`
	// TokenFile is, for OAUTHBEARER, a file holding the token, read again
	// on every authentication, so whatever renews it is picked up.
	TokenFile string `yaml:"token_file"`
	// TokenCommand is the alternative to TokenFile: a shell command (run
	// with sh -c) whose standard output is the token, run on every
	// authentication.
	TokenCommand string `yaml:"token_command"`
}

// Credentials are a user name and a password.
type Credentials struct {
	Username string `yaml:"username"`
	Password string `yaml:"password"`
}

// Describe names what s authenticates as, for messages: the mechanism and
// the user, or where an OAUTHBEARER token comes from. It never holds a
// password or a token.
func (s SASL) Describe() string {
	switch {
	case s.Mechanism == SASLOAuthBearer && s.TokenFile != "":
		return fmt.Sprintf("mechanism %s, token from kafka.sasl.token_file %s", s.Mechanism, s.TokenFile)
	case s.Mechanism == SASLOAuthBearer:
		return fmt.Sprintf("mechanism %s, token from kafka.sasl.token_command", s.Mechanism)
	}
	return fmt.Sprintf("mechanism %s, user %q", s.Mechanism, s.Username)
}

// ClientConfig loads the files t names into a TLS client configuration:
// the CA file's certificates as the only roots (none: the system roots),
// the client certificate when set. field is where t sits in the file
// ("kafka.tls"), for the *FieldError of a file that does not load.
func (t TLS) ClientConfig(field string) (*tls.Config, error) {
	c := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName, InsecureSkipVerify: t.InsecureSkipVerify}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, &FieldError{Field: field + ".ca_file", Msg: err.Error()}
		}
		c.RootCAs = x509.NewCertPool()
		if !c.RootCAs.AppendCertsFromPEM(pem) {
			return nil, &FieldError{Field: field + ".ca_file", Msg: fmt.Sprintf("%s holds no PEM certificate", t.CAFile)}
		}
	}
	if t.CertFile != "" {
		pair, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, &FieldError{Field: field + ".cert_file", Msg: fmt.Sprintf("with %s.key_file: %v", field, err)}
		}
		c.Certificates = []tls.Certificate{pair}
	}
	return c, nil
}

// validate checks the shape of t at field; ClientConfig loads the files
// when a client is built.
func (t TLS) validate(field string, errs *fieldErrors) {
	switch {
	case t.CertFile != "" && t.KeyFile == "":
		errs.add(field+".key_file", "is required with %s.cert_file", field)
	case t.KeyFile != "" && t.CertFile == "":
		errs.add(field+".cert_file", "is required with %s.key_file", field)
	}
	if t.InsecureSkipVerify && t.CAFile != "" {
		errs.add(field+".insecure_skip_verify", "and %s.ca_file exclude each other: with it, no certificate is verified", field)
	}
}

// validateSecurity checks kafka.tls and kafka.sasl.
func (k *Kafka) validateSecurity(errs *fieldErrors) {
	if !k.TLS.Enabled && k.TLS.TLS.set() {
		errs.add("kafka.tls.enabled", "is false, but other kafka.tls keys are set: set it true to connect over TLS")
	}
	k.TLS.TLS.validate("kafka.tls", errs)

	s := k.SASL
	switch {
	case s.Mechanism == "":
		if s != (SASL{}) {
			errs.add("kafka.sasl.mechanism", "is required when other kafka.sasl keys are set (one of %s)", strings.Join(SASLMechanisms, ", "))
		}
		return
	case !slices.Contains(SASLMechanisms, s.Mechanism):
		errs.add("kafka.sasl.mechanism", "unknown mechanism %q (want one of %s)", s.Mechanism, strings.Join(SASLMechanisms, ", "))
		return
	}
	if s.Mechanism == SASLOAuthBearer {
		if (s.TokenFile == "") == (s.TokenCommand == "") {
			errs.add("kafka.sasl.token_file", "OAUTHBEARER needs exactly one of kafka.sasl.token_file and kafka.sasl.token_command")
		}
		if s.Username != "" || s.Password != "" {
			errs.add("kafka.sasl.username", "is not used by OAUTHBEARER: its token names the principal")
		}
		return
	}
	if s.Username == "" {
		errs.add("kafka.sasl.username", "is required for %s", s.Mechanism)
	}
	if s.Password == "" {
		errs.add("kafka.sasl.password", "is required for %s", s.Mechanism)
	}
	if s.TokenFile != "" || s.TokenCommand != "" {
		errs.add("kafka.sasl.token_file", "token_file and token_command are for OAUTHBEARER, not %s", s.Mechanism)
	}
}

// validateSecurity checks schema_registry.tls and the registry's
// credentials.
func (r *Registry) validateSecurity(errs *fieldErrors) {
	if r.TLS.set() && strings.HasPrefix(r.URL, "http://") {
		errs.add("schema_registry.tls", "is set, but schema_registry.url %q is not https", r.URL)
	}
	r.TLS.validate("schema_registry.tls", errs)
	if b := r.BasicAuth; b != nil && (b.Username == "" || b.Password == "") {
		errs.add("schema_registry.basic_auth", "needs a username and a password")
	}
	n := 0
	for _, set := range []bool{r.BasicAuth != nil, r.BearerToken != "", r.BearerTokenFile != ""} {
		if set {
			n++
		}
	}
	if n > 1 {
		errs.add("schema_registry.bearer_token", "set only one of schema_registry.basic_auth, bearer_token and bearer_token_file")
	}
}
