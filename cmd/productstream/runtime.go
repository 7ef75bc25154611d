package main

import (
	"log/slog"
	"math"
	"os"
	"runtime/debug"

	"github.com/productstream/productstream/config"
)

// tuneRuntime applies the garbage collector's settings of rt to this
// process, running role: each key set in the configuration; else, when
// its environment variable is set, what Go already read from it; else the
// role's default (config.Runtime).
func tuneRuntime(rt config.Runtime, role string, log *slog.Logger) {
	gc, limit := rt.GCPercent, rt.MemoryLimitBytes
	if role == "ingest" {
		if gc == nil && os.Getenv("GOGC") == "" {
			gc = ptr(config.DefaultIngestGCPercent)
		}
		if limit == nil && os.Getenv("GOMEMLIMIT") == "" {
			limit = ptr(config.DefaultIngestMemoryLimitBytes)
		}
	}
	if gc != nil {
		debug.SetGCPercent(*gc)
	}
	if limit != nil {
		l := *limit
		if l == 0 {
			l = math.MaxInt64 // Go's own: no limit
		}
		debug.SetMemoryLimit(l)
	}
	if gc != nil || limit != nil {
		log.Info("garbage collector tuned", "gc_percent", currentGCPercent(), "memory_limit_bytes", debug.SetMemoryLimit(-1))
	}
}

// currentGCPercent is the collector's percent now (SetGCPercent answers
// with the one it replaces).
func currentGCPercent() int {
	p := debug.SetGCPercent(100)
	debug.SetGCPercent(p)
	return p
}

func ptr[T any](v T) *T { return &v }
