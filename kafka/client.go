// Package kafka holds what every productstream Kafka client shares: the
// options a client starts from, the batch compression setting, and
// ReadToEnd, the one way productstream reads topics to their end (restores,
// `productstream tail --exit-at-end`, the tests' readers).
package kafka

import (
	"log/slog"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kslog"
)

// ClientOptions are the options every productstream Kafka client starts
// from: the seed brokers and franz-go's logs through slog.
func ClientOptions(brokers []string, log *slog.Logger) []kgo.Opt {
	return []kgo.Opt{
		kgo.SeedBrokers(brokers...),
		kgo.WithLogger(quietLogger{kslog.New(log.With("component", "kgo"))}),
	}
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
