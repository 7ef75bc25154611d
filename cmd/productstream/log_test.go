package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// log.format json writes one JSON object per line, text writes logfmt,
// and the level drops what is below it.
func TestNewLoggerFormatsAndLevels(t *testing.T) {
	var buf bytes.Buffer
	log, err := newLogger(&buf, "json", "warn")
	if err != nil {
		t.Fatal(err)
	}
	log.Info("dropped")
	log.Warn("kept", "source", "lisa-main")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 1 {
		t.Fatalf("got %d lines, want only the warning: %q", len(lines), buf.String())
	}
	var line map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &line); err != nil {
		t.Fatalf("not a JSON line: %q: %v", lines[0], err)
	}
	if line["msg"] != "kept" || line["level"] != "WARN" || line["source"] != "lisa-main" {
		t.Fatalf("line %v", line)
	}

	buf.Reset()
	if log, err = newLogger(&buf, "text", "debug"); err != nil {
		t.Fatal(err)
	}
	log.Debug("shown", "source", "lisa-main")
	if got := buf.String(); !strings.Contains(got, "level=DEBUG") || !strings.Contains(got, "source=lisa-main") {
		t.Fatalf("text line %q", got)
	}
	if _, err := newLogger(&buf, "text", "loud"); err == nil {
		t.Fatal("an unknown level was accepted")
	}
}
