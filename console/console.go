// Package console serves the operator console: a web page, with a JSON
// twin of every view, that answers "did it arrive, why was it refused,
// what is this product's state, where is it stuck?".
//
// It is server-rendered with html/template; the one script it loads is a
// pinned htmx, embedded, that refreshes parts of a page. Every page is
// also JSON: under /api/ or with Accept: application/json. It reads what
// it shows from the deliveries log (package deliveries), the topics
// (package timeline, the dead letter topics), the consumer groups and the
// processes' own metrics, so it sees every replica of every role.
//
// It only reads, unless console.actions is set; then the act scope may
// POST the actions, each checked for cross-origin requests and audited.
// Without users or tokens it serves loopback only, to the machine's own
// user; with them every request is authenticated.
package console

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/productstream/productstream/config"
	"github.com/productstream/productstream/deliveries"
	"github.com/productstream/productstream/timeline"
)

//go:embed static templates openapi.json
var files embed.FS

// Deliveries is the log of what the ingest edges decided (package
// deliveries' Feed). Its methods are safe for concurrent use and answer
// from memory.
type Deliveries interface {
	Recent(deliveries.Filter) []deliveries.Record
	Sources(known []string) []deliveries.SourceSummary
	Instances() []string
}

// Timelines read one product's path through the topics (package
// timeline's Reader). Read is bounded in time and records and honours
// ctx.
type Timelines interface {
	Read(ctx context.Context, q timeline.Query) (*timeline.Timeline, error)
}

// Source is a configured source, as the console names it.
type Source struct {
	Name, Provider, Namespace string
}

// SinkInfo is a configured sink.
type SinkInfo struct {
	Name, Type, From string
	// Topic is what it reads, Group its consumer group, DLQ its dead
	// letter topic.
	Topic, Group, DLQ string
	// Explain answers, in one line, why key is or is not in the sink's
	// backend (sink explain); nil when this process cannot reach it.
	Explain func(ctx context.Context, key string) (string, error)
}

// Actions are what the act scope may do, when console.actions is true.
// Each returns a one-line description of what it did, for the page and
// the audit trail. A nil Actions offers none.
type Actions interface {
	// ReplayDeadLetters replays sink's dead letters through the sink and
	// its version guard.
	ReplayDeadLetters(ctx context.Context, sink string) (string, error)
	// Rebuild builds a new generation of sink and switches its readers
	// to it, telling progress the records read so far and in all.
	Rebuild(ctx context.Context, sink string, progress func(read, total int64)) (string, error)
}

// Auditor records an action: who did what, when, and its outcome. It must
// not fail the action: errors are its own to log.
type Auditor interface {
	Audit(ctx context.Context, e AuditEntry)
}

// AuditEntry is one action taken through the console.
type AuditEntry struct {
	Time   time.Time `json:"time"`
	User   string    `json:"user"`
	Action string    `json:"action"`
	Target string    `json:"target"`
	Result string    `json:"result"`
	Error  string    `json:"error,omitempty"`
}

// Deps are what the console reads and who it answers.
type Deps struct {
	Config config.Console
	Log    *slog.Logger
	// Sources are the configured sources.
	Sources []Source
	// Deliveries and Timelines are required.
	Deliveries Deliveries
	Timelines  Timelines
	// Kafka answers the consumer groups' positions and reads the dead
	// letter topics; Client are its options, for readers of their own.
	Kafka  *kgo.Client
	Client []kgo.Opt
	// ProcessorGroup and Changes are the processor's group and input.
	ProcessorGroup, Changes string
	// ProcessorDLQ is the processor's dead letter topic.
	ProcessorDLQ string
	Sinks        []SinkInfo
	// Metrics are the processes' counters; required.
	Metrics *Sampler
	Actions Actions
	Audit   Auditor
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Server is the console. Build it with New.
type Server struct {
	d        Deps
	auth     *authenticator
	pages    *pages
	mux      *http.ServeMux
	rebuilds rebuilds
}

// ErrUnauthenticatedListen surfaces from Check when the console would
// serve an address other than loopback without users or tokens.
var ErrUnauthenticatedListen = errors.New("the console serves only loopback without console.users or console.tokens")

// Check refuses a configuration that would serve the console without
// authentication anywhere but loopback (config.Validate says the same;
// this is the console's own guard).
func Check(c config.Console) error {
	if c.Listen != "" && !config.Loopback(c.Listen) && len(c.Users) == 0 && len(c.Tokens) == 0 {
		return fmt.Errorf("console.listen %q: %w", c.Listen, ErrUnauthenticatedListen)
	}
	return nil
}

// New builds the console.
func New(d Deps) (*Server, error) {
	if err := Check(d.Config); err != nil {
		return nil, err
	}
	if d.Deliveries == nil || d.Timelines == nil || d.Metrics == nil || d.Kafka == nil {
		return nil, errors.New("console: Deliveries, Timelines, Metrics and Kafka are required")
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.Log == nil {
		d.Log = slog.New(slog.DiscardHandler)
	}
	p, err := newPages(d.Log)
	if err != nil {
		return nil, err
	}
	s := &Server{d: d, auth: newAuthenticator(d.Config, d.Now), pages: p, mux: http.NewServeMux()}
	s.routes()
	return s, nil
}

// Handler is the console's whole HTTP surface.
func (s *Server) Handler() http.Handler { return s.mux }

// Serve serves the console on addr until ctx ends; ready is called with
// the bound address.
func (s *Server) Serve(ctx context.Context, addr string, ready func(string)) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("console listen %s: %w", addr, err)
	}
	hs := &http.Server{Handler: s.mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 15 * time.Second,
		WriteTimeout: 60 * time.Second, IdleTimeout: 60 * time.Second, MaxHeaderBytes: 32 << 10,
		BaseContext: func(net.Listener) context.Context { return ctx }}
	done := make(chan error, 1)
	go func() { done <- hs.Serve(ln) }()
	if ready != nil {
		ready(ln.Addr().String())
	}
	select {
	case err := <-done:
		return fmt.Errorf("console: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return hs.Shutdown(sctx)
}

// view is one page of the console and its JSON twin.
type view struct {
	path, title string
	// load builds the page's data; a *httpError says what to answer.
	load func(ctx context.Context, r *http.Request, p principal) (any, error)
}

// httpError is an answer other than 200, with a message fit to show.
type httpError struct {
	status int
	msg    string
}

func (e *httpError) Error() string { return e.msg }

func badRequest(format string, args ...any) error {
	return &httpError{http.StatusBadRequest, fmt.Sprintf(format, args...)}
}

// routes registers every view at its path and under /api/, the static
// files and the actions.
func (s *Server) routes() {
	for _, v := range s.views() {
		path := v.path
		if path == "/" {
			path = "/{$}" // the overview only, not every path
		}
		s.mux.Handle("GET "+path, s.guard(config.ScopeView, s.page(v)))
		api := "/api" + v.path
		if v.path == "/" {
			api = "/api/overview"
		}
		s.mux.Handle("GET "+api, s.guard(config.ScopeView, s.json(v)))
	}
	s.mux.Handle("GET /api/openapi.json", s.guard(config.ScopeView, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		b, _ := files.ReadFile("openapi.json")
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(b)
	})))
	s.mux.Handle("GET /static/", s.guard(config.ScopeView, http.FileServerFS(files)))
	s.actionRoutes()
	s.mux.Handle("/", s.guard(config.ScopeView, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.fail(w, r, &httpError{http.StatusNotFound, "no such page"})
	})))
}

// securityHeaders are set on every answer: a strict Content-Security-
// Policy (scripts, styles and requests from the console only, no inline
// code, no frames), no sniffing, no referrer, no caching.
func securityHeaders(h http.Header) {
	h.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Frame-Options", "DENY")
}

// principalKey carries the request's principal in its context.
type principalKey struct{}

// guard authenticates every request and requires scope.
func (s *Server) guard(scope string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		securityHeaders(w.Header())
		if s.auth.open() && !config.Loopback(hostPort(r.Host)) {
			// A console without credentials answers requests for a
			// loopback name only: a page of another site whose name
			// resolves to 127.0.0.1 (DNS rebinding) gets nothing.
			s.fail(w, r, &httpError{http.StatusMisdirectedRequest, "this console answers only for localhost or a loopback address"})
			return
		}
		p, ok := s.auth.authenticate(r)
		if !ok {
			if wantsJSON(r) {
				w.Header().Set("WWW-Authenticate", `Bearer realm="productstream console"`)
			} else {
				w.Header().Set("WWW-Authenticate", `Basic realm="productstream console", charset="UTF-8"`)
			}
			s.fail(w, r, &httpError{http.StatusUnauthorized, "sign in: basic auth for the page, a bearer token for the API"})
			return
		}
		if !p.can(scope) {
			s.fail(w, r, &httpError{http.StatusForbidden, fmt.Sprintf("%s lacks the %s scope", p.Name, scope)})
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), principalKey{}, p)))
	})
}

// hostPort is a Host header as host:port.
func hostPort(host string) string {
	if _, _, err := net.SplitHostPort(host); err == nil {
		return host
	}
	return net.JoinHostPort(strings.Trim(host, "[]"), "80")
}

func principalOf(r *http.Request) principal {
	p, _ := r.Context().Value(principalKey{}).(principal)
	return p
}

// wantsJSON says a request is for the JSON twin.
func wantsJSON(r *http.Request) bool {
	return strings.HasPrefix(r.URL.Path, "/api/") || strings.Contains(r.Header.Get("Accept"), "application/json")
}

// page answers a view as HTML, or as JSON when asked for it.
func (s *Server) page(v view) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if wantsJSON(r) {
			s.json(v).ServeHTTP(w, r)
			return
		}
		p := principalOf(r)
		data, err := v.load(r.Context(), r, p)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		s.pages.render(w, r, v, p, data, s.d.Config.Actions)
	})
}

// json answers a view as JSON.
func (s *Server) json(v view) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		data, err := v.load(r.Context(), r, principalOf(r))
		if err != nil {
			s.fail(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, data)
	})
}

// fail answers err: its message when it is an httpError, a generic one
// otherwise (the error itself is logged, never shown: it may name hosts).
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	status, msg := http.StatusInternalServerError, "internal error; see the console's log"
	var he *httpError
	switch {
	case errors.As(err, &he):
		status, msg = he.status, he.msg
	case errors.Is(err, context.DeadlineExceeded):
		status, msg = http.StatusGatewayTimeout, "timed out reading Kafka; narrow the query or retry"
	default:
		s.d.Log.Warn("console request failed", "path", r.URL.Path, "err", err)
	}
	if wantsJSON(r) {
		writeJSON(w, status, map[string]string{"error": msg})
		return
	}
	s.pages.renderError(w, r, principalOf(r), status, msg)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
