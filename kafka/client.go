// Package kafka holds what every productstream Kafka client shares: the
// options a client starts from (brokers, TLS and SASL), the explanation of
// a connection its security refuses, the batch compression setting, and
// ReadToEnd, the one way productstream reads topics to their end (restores,
// `productstream tail --exit-at-end`, the tests' readers).
package kafka

import (
	"log/slog"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kslog"

	"github.com/productstream/productstream/config"
)

// Connection is how productstream reaches Kafka: the seed brokers, how the
// connections are secured, and where franz-go logs. Every Kafka client of
// the roles and tools starts from its Options; Diagnose explains what goes
// wrong with its security.
type Connection struct {
	Brokers  []string
	Security Security
	// Log receives franz-go's warnings and errors (its info logs too at
	// debug level). nil: none.
	Log *slog.Logger
}

// Connect is the Connection the configuration's kafka section describes:
// kafka.brokers, kafka.tls and kafka.sasl. It reads the TLS files now, so
// one that does not load is a *config.FieldError at start.
func Connect(k config.Kafka, log *slog.Logger) (Connection, error) {
	sec, err := NewSecurity(k.TLS, k.SASL)
	if err != nil {
		return Connection{}, err
	}
	return Connection{Brokers: k.Brokers, Security: sec, Log: log}, nil
}

// Options are the options every productstream Kafka client starts from:
// the seed brokers, TLS and SASL as configured, and franz-go's logs
// through slog. Each call returns a new slice, for the caller to append to.
func (c Connection) Options() []kgo.Opt {
	opts := []kgo.Opt{kgo.SeedBrokers(c.Brokers...)}
	if c.Log != nil {
		opts = append(opts, kgo.WithLogger(quietLogger{kslog.New(c.Log.With("component", "kgo"))}))
	}
	return append(opts, c.Security.options()...)
}

// ClientOptions are the options of a plaintext, unauthenticated Connection
// to brokers: the embedded broker's, and the tests'.
func ClientOptions(brokers []string, log *slog.Logger) []kgo.Opt {
	return Connection{Brokers: brokers, Log: log}.Options()
}

// quietLogger keeps franz-go's chatty info logs (joins, metadata refreshes)
// out of the log unless the level is debug; warnings and errors pass.
type quietLogger struct{ *kslog.Logger }

func (q quietLogger) Level() kgo.LogLevel {
	if l := q.Logger.Level(); l != kgo.LogLevelDebug {
		return min(l, kgo.LogLevelWarn)
	}
	return kgo.LogLevelDebug
}
