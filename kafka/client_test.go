package kafka

import (
	"bytes"
	"log/slog"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kslog"
)

// franz-go's info logs are kept out unless the log level is debug;
// warnings and errors pass.
func TestQuietLogger(t *testing.T) {
	for _, tc := range []struct {
		name  string
		level slog.Level
		want  kgo.LogLevel
	}{
		{"info", slog.LevelInfo, kgo.LogLevelWarn},
		{"debug", slog.LevelDebug, kgo.LogLevelDebug},
		{"warn", slog.LevelWarn, kgo.LogLevelWarn},
		{"error", slog.LevelError, kgo.LogLevelError},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			l := quietLogger{kslog.New(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: tc.level})))}
			if got := l.Level(); got != tc.want {
				t.Errorf("level %v, want %v", got, tc.want)
			}
		})
	}
}
