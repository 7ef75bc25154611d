package kafka

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/oauth"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/productstream/productstream/config"
)

// Security is how a client secures its connections to the brokers: TLS
// and SASL, built once by NewSecurity from kafka.tls and kafka.sasl. The
// zero value is plaintext without authentication.
type Security struct {
	tls  *tls.Config    // nil: plaintext
	sasl sasl.Mechanism // nil: no authentication
	cfg  config.Kafka   // TLS and SASL only, for messages
}

// NewSecurity builds the TLS configuration (reading its files now, so a
// missing one is a *config.FieldError at start) and the SASL mechanism of
// t and s, which Validate has checked.
func NewSecurity(t config.KafkaTLS, s config.SASL) (Security, error) {
	sec := Security{cfg: config.Kafka{TLS: t, SASL: s}}
	if t.Enabled {
		c, err := t.ClientConfig("kafka.tls")
		if err != nil {
			return Security{}, err
		}
		sec.tls = c
	}
	switch s.Mechanism {
	case "":
	case config.SASLPlain:
		sec.sasl = plain.Auth{User: s.Username, Pass: s.Password}.AsMechanism()
	case config.SASLScramSHA256:
		sec.sasl = scram.Auth{User: s.Username, Pass: s.Password}.AsSha256Mechanism()
	case config.SASLScramSHA512:
		sec.sasl = scram.Auth{User: s.Username, Pass: s.Password}.AsSha512Mechanism()
	case config.SASLOAuthBearer:
		sec.sasl = oauth.Oauth(func(ctx context.Context) (oauth.Auth, error) {
			token, err := readToken(ctx, s)
			return oauth.Auth{Token: token}, err
		})
	default:
		return Security{}, &config.FieldError{Field: "kafka.sasl.mechanism", Msg: fmt.Sprintf("unknown mechanism %q", s.Mechanism)}
	}
	return sec, nil
}

// TLS reports whether s connects over TLS.
func (s Security) TLS() bool { return s.tls != nil }

// SASL names s's SASL mechanism; "" when it has none.
func (s Security) SASL() string { return s.cfg.SASL.Mechanism }

// options are the kgo options that secure a client's connections.
func (s Security) options() []kgo.Opt {
	var opts []kgo.Opt
	if s.tls != nil {
		// franz-go clones it for every dial and sets the server name
		// to the broker's host when it is empty.
		opts = append(opts, kgo.DialTLSConfig(s.tls))
	}
	if s.sasl != nil {
		opts = append(opts, kgo.SASL(s.sasl))
	}
	return opts
}

// tokenCommandTimeout bounds one run of kafka.sasl.token_command.
const tokenCommandTimeout = 30 * time.Second

// readToken reads an OAUTHBEARER token afresh: the content of
// kafka.sasl.token_file, or the output of kafka.sasl.token_command,
// without surrounding white space. Its errors are *TokenError.
func readToken(ctx context.Context, s config.SASL) (string, error) {
	var out []byte
	var err error
	field := "kafka.sasl.token_file"
	if s.TokenFile != "" {
		out, err = os.ReadFile(s.TokenFile)
	} else {
		field = "kafka.sasl.token_command"
		ctx, cancel := context.WithTimeout(ctx, tokenCommandTimeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, "/bin/sh", "-c", s.TokenCommand)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err = cmd.Output()
		if err != nil {
			if line, _, _ := strings.Cut(strings.TrimSpace(stderr.String()), "\n"); line != "" {
				err = fmt.Errorf("%w (stderr: %.200s)", err, line)
			}
		}
	}
	if err != nil {
		return "", &TokenError{Field: field, Err: err}
	}
	token := strings.TrimSpace(string(out))
	if token == "" {
		return "", &TokenError{Field: field, Err: errors.New("the token is empty")}
	}
	return token, nil
}

// TokenError is an OAUTHBEARER token that could not be read: it surfaces
// from the connection that was authenticating.
type TokenError struct {
	Field string // kafka.sasl.token_file or kafka.sasl.token_command
	Err   error
}

func (e *TokenError) Error() string {
	return "reading the OAUTHBEARER token of " + e.Field + ": " + e.Err.Error()
}
func (e *TokenError) Unwrap() error { return e.Err }
