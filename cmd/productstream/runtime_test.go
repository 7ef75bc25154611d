package main

import (
	"io"
	"log/slog"
	"math"
	"runtime/debug"
	"testing"

	"github.com/productstream/productstream/config"
)

// Each collector setting comes from the configuration, else from its
// environment variable, else from the role's default: the ingest role's
// own, Go's for the others.
func TestTuneRuntime(t *testing.T) {
	gc0, limit0 := currentGCPercent(), debug.SetMemoryLimit(-1)
	t.Cleanup(func() {
		debug.SetGCPercent(gc0)
		debug.SetMemoryLimit(limit0)
	})
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, tc := range []struct {
		name             string
		role             string
		rt               config.Runtime
		gogc, gomemlimit string
		wantGC           int
		wantLimit        int64
	}{
		{"ingest: its defaults", "ingest", config.Runtime{}, "", "", config.DefaultIngestGCPercent, config.DefaultIngestMemoryLimitBytes},
		{"process: Go's", "process", config.Runtime{}, "", "", 100, math.MaxInt64},
		{"ingest: configured", "ingest", config.Runtime{GCPercent: ptr(150), MemoryLimitBytes: ptr(int64(0))}, "", "", 150, math.MaxInt64},
		{"ingest: GOGC set", "ingest", config.Runtime{}, "50", "", 100, config.DefaultIngestMemoryLimitBytes},
		{"ingest: GOMEMLIMIT set", "ingest", config.Runtime{}, "", "1GiB", config.DefaultIngestGCPercent, math.MaxInt64},
		{"ingest: configured over GOGC", "ingest", config.Runtime{GCPercent: ptr(300)}, "50", "", 300, config.DefaultIngestMemoryLimitBytes},
		{"dev: configured", "dev", config.Runtime{GCPercent: ptr(200), MemoryLimitBytes: ptr(int64(256 << 20))}, "", "", 200, 256 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("GOGC", tc.gogc)
			t.Setenv("GOMEMLIMIT", tc.gomemlimit)
			// What Go would have read from an empty environment; a set
			// variable was read at start, and is not read again here.
			debug.SetGCPercent(100)
			debug.SetMemoryLimit(math.MaxInt64)
			tuneRuntime(tc.rt, tc.role, log)
			if gc, limit := currentGCPercent(), debug.SetMemoryLimit(-1); gc != tc.wantGC || limit != tc.wantLimit {
				t.Fatalf("gc percent %d, memory limit %d; want %d, %d", gc, limit, tc.wantGC, tc.wantLimit)
			}
		})
	}
}
