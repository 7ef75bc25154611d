package main

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/prometheus/client_golang/prometheus"
	"gopkg.in/yaml.v3"

	"github.com/productstream/productstream/config"
	"github.com/productstream/productstream/ingest"
)

// debounce is how long the files must stay quiet after a change before
// they are read: a rewrite is often several events (truncate, write,
// rename), and a Kubernetes volume update is a burst of them.
const debounce = 100 * time.Millisecond

// maxDebounce bounds how long a stream of changes delays a reload.
const maxDebounce = time.Second

// reloader reloads the ingest edge's sources (their secrets, API keys,
// basic auth, rate limits and options) without a restart: on SIGHUP, and
// when the configuration file or a file it references with ${file:PATH}
// changes. It reads and validates the whole configuration again, builds
// the sources, and swaps them in at once (ingest.Server.SetSources). A
// configuration that does not load, validate or build is refused, logged
// with the field at fault, and the one in force stays. Every other setting
// (listen addresses, Kafka, topics, processor, sinks, ...) applies only at
// start: a change to one is logged at warn, and the running value stays.
type reloader struct {
	needs   config.Needs
	log     *slog.Logger
	hup     chan os.Signal
	apply   func([]*ingest.Source)
	metrics *configMetrics

	mu      sync.Mutex
	current *config.Config // in force: the start-only settings as started, the sources as last applied
	warned  *config.Config // the last file whose start-only changes were logged
	refused bool           // the files on disk were refused at the last reload
	dirs    []string       // watched
}

// newReloader starts listening for SIGHUP at once, so that one sent
// before the edge runs is remembered rather than fatal; start applies it.
func newReloader(cfg *config.Config, needs config.Needs, log *slog.Logger) *reloader {
	rl := &reloader{needs: needs, log: log.With("component", "config"), hup: make(chan os.Signal, 1), current: cfg}
	signal.Notify(rl.hup, syscall.SIGHUP)
	return rl
}

// ignoreHangup keeps a role that reloads nothing (process, sink, console)
// running on SIGHUP, which would otherwise end it, and logs that a changed
// configuration needs a restart of it: one SIGHUP sent to every pod or
// process after a change must not stop the ones that cannot reload. The
// returned func stops it.
func ignoreHangup(ctx context.Context, log *slog.Logger, role string) func() {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				log.Warn("SIGHUP: the "+role+" role reloads nothing; restart it to apply a changed configuration", "component", "config")
			}
		}
	}()
	return func() {
		signal.Stop(hup)
		cancel()
		<-done
	}
}

// configMetrics describe the configuration in force and its reloads.
type configMetrics struct {
	info     *prometheus.GaugeVec
	loadedAt prometheus.Gauge
	reloads  *prometheus.CounterVec
}

func newConfigMetrics(reg prometheus.Registerer) (*configMetrics, error) {
	m := &configMetrics{
		info: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "productstream_config_info",
			Help: "1, labelled with the fingerprint of the configuration in force: a slow (Argon2id) hash of it, secrets included, so that replicas running the same configuration show the same hash and guesses at a secret cannot be checked against it at speed.",
		}, []string{"hash"}),
		loadedAt: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "productstream_config_load_timestamp_seconds",
			Help: "When the configuration in force was loaded, at start or by the last reload that was not refused (Unix seconds).",
		}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "productstream_config_reloads_total",
			Help: "Configuration reloads by result: ok (applied, or nothing changed) or refused (the configuration did not load, validate or build; the one in force stays).",
		}, []string{"result"}),
	}
	for _, c := range []prometheus.Collector{m.info, m.loadedAt, m.reloads} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	m.reloads.WithLabelValues("ok")
	m.reloads.WithLabelValues("refused")
	return m, nil
}

// loaded records cfg as the configuration in force, loaded now, and
// returns its fingerprint.
func (m *configMetrics) loaded(cfg *config.Config) string {
	fp := cfg.Fingerprint()
	m.info.Reset()
	m.info.WithLabelValues(fp).Set(1)
	m.loadedAt.SetToCurrentTime()
	return fp
}

// start registers the metrics with reg and, until ctx ends, reloads on
// SIGHUP and on changes to the files, handing each new set of sources to
// apply. It returns once the files are watched; stop ends the watching
// and waits for it to end.
func (rl *reloader) start(ctx context.Context, reg prometheus.Registerer, apply func([]*ingest.Source)) (stop func(), err error) {
	defer func() {
		if err != nil {
			signal.Stop(rl.hup)
		}
	}()
	if rl.metrics, err = newConfigMetrics(reg); err != nil {
		return nil, fmt.Errorf("config metrics: %w", err)
	}
	rl.apply = apply
	rl.metrics.loaded(rl.current)
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("watching the configuration files: %w", err)
	}
	rl.watch(w)
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		defer signal.Stop(rl.hup)
		defer w.Close()
		rl.run(ctx, w)
	})
	return func() { cancel(); wg.Wait() }, nil
}

// run is start's loop.
func (rl *reloader) run(ctx context.Context, w *fsnotify.Watcher) {
	var quiet *time.Timer
	var fire <-chan time.Time
	var first time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-rl.hup:
			rl.reload("SIGHUP", false)
			rl.watch(w)
		case ev, ok := <-w.Events:
			if !ok {
				return
			}
			if !rl.concerns(ev.Name) {
				continue // another file of a watched directory, such as a log
			}
			rl.log.Debug("configuration file event", "path", ev.Name, "op", ev.Op.String())
			switch {
			case fire == nil:
				first = time.Now()
				quiet = time.NewTimer(debounce)
				fire = quiet.C
			case time.Since(first) < maxDebounce:
				quiet.Reset(debounce)
			}
		case <-fire:
			fire = nil
			rl.reload("file change", true)
			rl.watch(w)
		case err, ok := <-w.Errors:
			if !ok {
				return
			}
			rl.log.Warn("watching the configuration files; SIGHUP still reloads", "err", err)
		}
	}
}

// concerns reports whether an event on path may change the configuration:
// path is the configuration file or a file it references, or an entry
// whose name begins with "..", as Kubernetes names the directories and the
// link it swaps to update a mounted volume at once. While the files on disk
// are refused, any file of the watched directories may be the one that
// mends them (a secret file that was missing, say).
func (rl *reloader) concerns(path string) bool {
	if strings.HasPrefix(filepath.Base(path), "..") {
		return true
	}
	rl.mu.Lock()
	cfg, refused := rl.current, rl.refused
	rl.mu.Unlock()
	if refused {
		return true
	}
	for _, f := range append([]string{cfg.Path}, cfg.Files...) {
		if abs, err := filepath.Abs(f); err == nil && abs == filepath.Clean(path) {
			return true
		}
	}
	return false
}

// watch watches the directories of the configuration file and of every
// file it references, and no others. A directory, not the file: an
// editor's save or a Kubernetes volume update replaces the file (a rename,
// or a symbolic link swapped), which a watch on the file would not follow.
func (rl *reloader) watch(w *fsnotify.Watcher) {
	rl.mu.Lock()
	cfg := rl.current
	rl.mu.Unlock()
	if cfg.Path == "" {
		return // the built-in configuration: no file
	}
	var dirs []string
	for _, f := range append([]string{cfg.Path}, cfg.Files...) {
		if abs, err := filepath.Abs(f); err == nil {
			dirs = append(dirs, filepath.Dir(abs))
		}
	}
	slices.Sort(dirs)
	dirs = slices.Compact(dirs)
	for _, d := range rl.dirs {
		if !slices.Contains(dirs, d) {
			_ = w.Remove(d)
		}
	}
	for _, d := range dirs {
		if !slices.Contains(rl.dirs, d) {
			if err := w.Add(d); err != nil {
				rl.log.Warn("cannot watch a configuration directory; SIGHUP still reloads", "dir", d, "err", err)
			}
		}
	}
	rl.dirs = dirs
}

// reload reads the configuration file again and applies what it can:
// the sources. A trigger of file changes (onlyChanges) that changed
// nothing in force is not counted. It returns the refusal, if any.
func (rl *reloader) reload(trigger string, onlyChanges bool) error {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	log := rl.log.With("trigger", trigger)
	if rl.current.Path == "" {
		log.Info("nothing to reload: running the built-in configuration, not a file")
		return nil
	}
	next, sources, err := rl.load(rl.current.Path)
	rl.refused = err != nil
	if err != nil {
		rl.metrics.reloads.WithLabelValues("refused").Inc()
		log.Error("configuration reload refused; the configuration in force stays", "err", err)
		return err
	}
	changed := startOnlyChanges(rl.current, next)
	if len(changed) == 0 {
		rl.warned = nil
	} else if rl.warned == nil || !config.Same(next, rl.warned) || !onlyChanges {
		rl.warned = next
		log.Warn("configuration changed in settings that apply only at start; restart to apply them (the running values stay)",
			"keys", strings.Join(changed, ", "))
	}
	effective := *rl.current
	effective.Sources, effective.Files = next.Sources, next.Files
	if onlyChanges && config.Same(&effective, rl.current) && slices.Equal(effective.Files, rl.current.Files) {
		log.Debug("configuration files changed, the sources did not")
		return nil
	}
	rl.current = &effective
	rl.metrics.reloads.WithLabelValues("ok").Inc()
	hash := rl.metrics.loaded(&effective)
	rl.apply(sources)
	log.Info("configuration reloaded", "hash", hash, "sources", len(sources))
	return nil
}

// load loads, validates and builds the configuration at path, as at start.
func (rl *reloader) load(path string) (*config.Config, []*ingest.Source, error) {
	cfg, err := config.Load(path)
	if err != nil {
		return nil, nil, err
	}
	if err := cfg.Validate(rl.needs); err != nil {
		return nil, nil, fmt.Errorf("invalid config: %w", err)
	}
	sources, err := ingest.NewSources(cfg.Sources, ingest.Deps{Log: rl.log})
	if err != nil {
		return nil, nil, fmt.Errorf("invalid config: %w", err)
	}
	return cfg, sources, nil
}

// startOnlyChanges lists the top-level keys, other than sources, whose
// values differ between a and b: what a reload cannot apply.
func startOnlyChanges(a, b *config.Config) []string {
	va, vb := reflect.ValueOf(a).Elem(), reflect.ValueOf(b).Elem()
	var out []string
	for i := range va.NumField() {
		f := va.Type().Field(i)
		key, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if key == "" || key == "-" || key == "sources" || !f.IsExported() {
			continue
		}
		ya, erra := yaml.Marshal(va.Field(i).Interface())
		yb, errb := yaml.Marshal(vb.Field(i).Interface())
		if erra != nil || errb != nil || !bytes.Equal(ya, yb) {
			out = append(out, key)
		}
	}
	return out
}
