// Package ops is productstream's operations listener: Prometheus metrics at
// /metrics, liveness at /healthz, readiness at /readyz and the Go profiler
// under /debug/pprof/, on an address of their own (ops.listen), never on the
// public webhook listener. Like nats-server's monitoring port, it is for
// operators and their scrapers: bind it to loopback or a private network.
package ops

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Check reports whether one thing a role depends on is ready: nil means
// ready, an error says why not in words an operator can act on (never a
// secret). It must return when ctx ends and be safe for concurrent use.
type Check func(ctx context.Context) error

// NewRegistry returns a registry holding the Go runtime and process
// collectors, for a role to register its own metrics with.
func NewRegistry() *prometheus.Registry {
	r := prometheus.NewRegistry()
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return r
}

// Handler serves the operations endpoints. Build it with NewHandler.
type Handler struct {
	mux     *http.ServeMux
	timeout time.Duration

	mu       sync.Mutex
	checks   map[string]Check
	draining atomic.Bool
}

// Option configures a Handler.
type Option func(*Handler)

// WithCheck adds a readiness check under name; /readyz is ready when every
// check is. Adding a name again replaces its check.
func WithCheck(name string, c Check) Option {
	return func(h *Handler) { h.checks[name] = c }
}

// ErrStarting is the reason the "starting" check gives on /readyz, on a
// handler built WithStarting, until Started is called.
var ErrStarting = errors.New("starting: the role does not serve yet")

// WithStarting makes /readyz answer 503, its check "starting" failing with
// ErrStarting, until Started is called: for a role whose dependencies
// answer (and so whose other checks pass) before it serves. Default: not
// set.
func WithStarting() Option {
	return func(h *Handler) { h.checks["starting"] = func(context.Context) error { return ErrStarting } }
}

// WithCheckTimeout bounds each readiness check (default 2s): a check that
// has not answered by then counts as not ready.
func WithCheckTimeout(d time.Duration) Option { return func(h *Handler) { h.timeout = d } }

// NewHandler serves g's metrics, liveness, readiness from the checks, and
// pprof.
func NewHandler(g prometheus.Gatherer, opts ...Option) *Handler {
	h := &Handler{mux: http.NewServeMux(), timeout: 2 * time.Second, checks: map[string]Check{}}
	for _, o := range opts {
		o(h)
	}
	h.mux.Handle("GET /metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
	h.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"status": "ok"})
	})
	h.mux.HandleFunc("GET /readyz", h.ready)
	// pprof's handlers on this mux only: importing net/http/pprof also
	// registers them on http.DefaultServeMux, which nothing here serves.
	h.mux.HandleFunc("/debug/pprof/", pprof.Index)
	h.mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	h.mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	h.mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	h.mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return h
}

// AddCheck adds a readiness check once the handler is serving (a role
// whose dependencies are built after its ops listener).
func (h *Handler) AddCheck(name string, c Check) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.checks[name] = c
}

// Started removes the check WithStarting added: the role serves. Calling
// it again, or on a handler built without WithStarting, changes nothing.
func (h *Handler) Started() {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.checks, "starting")
}

// ErrDraining is the reason the "draining" check gives on /readyz once
// Drain was called.
var ErrDraining = errors.New("draining: the role is shutting down")

// Drain makes /readyz answer 503 at once from now on, with the one check
// "draining" failing with ErrDraining (the other checks are not run: they
// would not change the answer), so that a load balancer stops sending
// before the role stops accepting. It cannot be undone; a second call
// changes nothing.
func (h *Handler) Drain() { h.draining.Store(true) }

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

// ready runs every check at once, each bounded by the timeout, and answers
// 200 when all pass, else 503, with each check's result by name; 503 at
// once while draining.
func (h *Handler) ready(w http.ResponseWriter, r *http.Request) {
	if h.draining.Load() {
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"status": "not ready", "checks": map[string]string{"draining": ErrDraining.Error()}})
		return
	}
	h.mu.Lock()
	names := make([]string, 0, len(h.checks))
	for name := range h.checks {
		names = append(names, name)
	}
	checks := make([]Check, len(names))
	slices.Sort(names)
	for i, name := range names {
		checks[i] = h.checks[name]
	}
	h.mu.Unlock()
	results := make([]error, len(checks))
	var wg sync.WaitGroup
	for i, c := range checks {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(r.Context(), h.timeout)
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- c(ctx) }()
			select {
			case results[i] = <-done:
			case <-ctx.Done():
				results[i] = fmt.Errorf("no answer within %s", h.timeout)
			}
		})
	}
	wg.Wait()
	status, out := http.StatusOK, map[string]string{}
	for i, name := range names {
		out[name] = "ok"
		if results[i] != nil {
			status, out[name] = http.StatusServiceUnavailable, results[i].Error()
		}
	}
	word := "ready"
	if status != http.StatusOK {
		word = "not ready"
	}
	writeJSON(w, status, map[string]any{"status": word, "checks": out})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// Serve serves h on addr until ctx ends or stop is called. It returns once
// addr is bound, with the bound address; an error means nothing is served.
// stop closes the listener and every open connection (cutting short a
// profile being taken) and returns once the port is released; it is safe
// to call more than once, and after ctx has ended.
func Serve(ctx context.Context, addr string, h http.Handler, log *slog.Logger) (bound string, stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", nil, fmt.Errorf("ops.listen %s: %w", addr, err)
	}
	hs := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		// No WriteTimeout: /debug/pprof/profile and /trace answer after the
		// ?seconds= asked for, and pprof refuses longer ones than it.
		IdleTimeout: 2 * time.Minute,
		BaseContext: func(net.Listener) context.Context { return ctx },
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("ops server stopped", "addr", ln.Addr().String(), "err", err)
		}
	}()
	unhook := context.AfterFunc(ctx, func() { _ = hs.Close() })
	return ln.Addr().String(), func() {
		unhook()
		_ = hs.Close()
		<-served
	}, nil
}
