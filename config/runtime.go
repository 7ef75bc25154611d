package config

// Runtime tunes Go's garbage collector in a role's process. A key left
// unset takes its environment variable (GOGC, GOMEMLIMIT) when that is
// set, and else the role's default: DefaultIngestGCPercent and
// DefaultIngestMemoryLimitBytes for ingest, Go's own for the others (100,
// and no limit).
type Runtime struct {
	// GCPercent is how far the heap grows past what the last collection
	// left live, in percent, before the next collection starts (Go's
	// GOGC). -1 turns collections off until the memory limit is near.
	GCPercent *int `yaml:"gc_percent"`
	// MemoryLimitBytes is a soft limit on the memory the Go runtime uses
	// (Go's GOMEMLIMIT): nearing it, the collector runs as often as it
	// must, whatever GCPercent says. 0: no limit.
	MemoryLimitBytes *int64 `yaml:"memory_limit_bytes"`
}

// The ingest role's collector settings. The edge's live heap is small (a
// few MiB) and it allocates for every request, so a collection every time
// the heap doubles costs it about a tenth of its CPU at full load: it
// collects when the heap has grown five times instead. The limit keeps
// that from multiplying a large live heap: with the producer's buffer full
// (256 MiB while Kafka is away) and bodies in flight, the heap stays near
// what it would reach with Go's defaults.
const (
	DefaultIngestGCPercent        = 400
	DefaultIngestMemoryLimitBytes = int64(768 << 20)
)

// Bounds of the runtime settings: below MinGCPercent the collector runs
// nearly without pause; past MaxGCPercent, -1 says it better; a limit
// under MinMemoryLimitBytes would keep the collector running all the time.
const (
	MinGCPercent        = 25
	MaxGCPercent        = 10_000
	MinMemoryLimitBytes = int64(64 << 20)
)

// validate checks the runtime section.
func (r *Runtime) validate(errs *fieldErrors) {
	if p := r.GCPercent; p != nil && *p != -1 && (*p < MinGCPercent || *p > MaxGCPercent) {
		errs.add("runtime.gc_percent", "must be -1 (off until the memory limit is near) or between %d and %d, got %d", MinGCPercent, MaxGCPercent, *p)
	}
	if m := r.MemoryLimitBytes; m != nil && *m != 0 && *m < MinMemoryLimitBytes {
		errs.add("runtime.memory_limit_bytes", "must be 0 (no limit) or at least %d (64 MiB), got %d", MinMemoryLimitBytes, *m)
	}
	if p, m := r.GCPercent, r.MemoryLimitBytes; p != nil && *p == -1 && m != nil && *m == 0 {
		errs.add("runtime.gc_percent", "-1 needs a memory limit: with runtime.memory_limit_bytes 0 the heap would grow without bound")
	}
}
