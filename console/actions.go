package console

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/productstream/productstream/config"
)

// The actions, each at POST /actions/<name> (and /api/actions/<name>),
// with its target in the form field "target" and "confirm=yes".
const (
	ActionReplay  = "replay-dead-letters"
	ActionRebuild = "rebuild"
)

// actionRoutes registers the actions. Every one is POST only, behind
// cross-origin protection (a browser's cross-site POST is refused), for
// the act scope, and refused outright while console.actions is false.
func (s *Server) actionRoutes() {
	cop := http.NewCrossOriginProtection()
	for _, name := range []string{ActionReplay, ActionRebuild} {
		h := s.guard(config.ScopeAct, cop.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			s.act(w, r, name)
		})))
		s.mux.Handle("POST /actions/"+name, h)
		s.mux.Handle("POST /api/actions/"+name, h)
	}
	postOnly := s.guard(config.ScopeView, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", http.MethodPost)
		s.fail(w, r, &httpError{http.StatusMethodNotAllowed, "actions are POST only"})
	}))
	s.mux.Handle("/actions/", postOnly)
	s.mux.Handle("/api/actions/", postOnly)
}

// ActionResult is what an action answers.
type ActionResult struct {
	Action string `json:"action"`
	Target string `json:"target"`
	Result string `json:"result"`
}

// maxActionForm bounds an action's form.
const maxActionForm = 4 << 10

func (s *Server) act(w http.ResponseWriter, r *http.Request, name string) {
	if !s.d.Config.Actions || s.d.Actions == nil {
		s.fail(w, r, &httpError{http.StatusForbidden, "actions are off (console.actions: false)"})
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxActionForm)
	if err := r.ParseForm(); err != nil {
		s.fail(w, r, badRequest("the form could not be read"))
		return
	}
	target := r.PostForm.Get("target")
	if r.PostForm.Get("confirm") != "yes" {
		s.fail(w, r, badRequest("confirm the action (confirm=yes)"))
		return
	}
	if err := s.checkTarget(target); err != nil {
		s.fail(w, r, err)
		return
	}
	p := principalOf(r)
	ctx, cancel := context.WithTimeout(r.Context(), time.Minute)
	defer cancel()
	var result string
	var err error
	switch name {
	case ActionReplay:
		result, err = s.d.Actions.ReplayDeadLetters(ctx, target)
	case ActionRebuild:
		result, err = s.rebuilds.start(s.d.Actions, target, s.d.Log)
	}
	e := AuditEntry{Time: s.d.Now(), User: p.Name, Action: name, Target: target, Result: result}
	if err != nil {
		e.Error = err.Error()
	}
	s.d.Log.Info("console action", "user", e.User, "action", e.Action, "target", e.Target, "result", e.Result, "err", e.Error)
	if s.d.Audit != nil {
		s.d.Audit.Audit(r.Context(), e)
	}
	if err != nil {
		s.fail(w, r, &httpError{http.StatusBadGateway, fmt.Sprintf("%s %s failed: %v", name, target, err)})
		return
	}
	res := ActionResult{Action: name, Target: target, Result: result}
	if wantsJSON(r) {
		writeJSON(w, http.StatusOK, res)
		return
	}
	s.pages.renderResult(w, r, p, res)
}

// checkTarget refuses a target that is not a configured sink.
func (s *Server) checkTarget(target string) error {
	if !slices.ContainsFunc(s.d.Sinks, func(sk SinkInfo) bool { return sk.Name == target }) {
		return badRequest("no sink is named %q", target)
	}
	return nil
}

// RebuildStatus is the progress of a rebuild started from the console.
type RebuildStatus struct {
	Started  time.Time `json:"started"`
	Read     int64     `json:"read"`
	Total    int64     `json:"total"`
	Done     bool      `json:"done"`
	Result   string    `json:"result,omitempty"`
	Error    string    `json:"error,omitempty"`
	Finished time.Time `json:"finished,omitzero"`
}

// rebuilds are the rebuilds started from this console, by sink.
type rebuilds struct {
	mu  sync.Mutex
	run map[string]*RebuildStatus
}

// start begins a rebuild of sink in the background, unless one runs.
func (rb *rebuilds) start(a Actions, sink string, log *slog.Logger) (string, error) {
	rb.mu.Lock()
	defer rb.mu.Unlock()
	if st := rb.run[sink]; st != nil && !st.Done {
		return "", fmt.Errorf("a rebuild of %s is running since %s", sink, st.Started.Format(time.RFC3339))
	}
	if rb.run == nil {
		rb.run = map[string]*RebuildStatus{}
	}
	st := &RebuildStatus{Started: time.Now()}
	rb.run[sink] = st
	go func() {
		result, err := a.Rebuild(context.Background(), sink, func(read, total int64) {
			rb.mu.Lock()
			st.Read, st.Total = read, total
			rb.mu.Unlock()
		})
		rb.mu.Lock()
		st.Done, st.Result, st.Finished = true, result, time.Now()
		if err != nil {
			st.Error = err.Error()
			log.Warn("console: rebuild failed", "sink", sink, "err", err)
		}
		rb.mu.Unlock()
	}()
	return "rebuild of " + sink + " started; the Sinks page shows its progress", nil
}

// status is a copy of sink's last rebuild's status, nil when none ran.
func (rb *rebuilds) status(sink string) *RebuildStatus {
	rb.mu.Lock()
	defer rb.mu.Unlock()
	st := rb.run[sink]
	if st == nil {
		return nil
	}
	c := *st
	return &c
}

// TopicAuditor writes every action to a topic as JSON, keyed by user, and
// never fails an action: a write that fails is logged.
type TopicAuditor struct {
	cl    *kgo.Client
	topic string
	log   *slog.Logger
}

// NewTopicAuditor audits to topic through cl.
func NewTopicAuditor(cl *kgo.Client, topic string, log *slog.Logger) *TopicAuditor {
	return &TopicAuditor{cl: cl, topic: topic, log: log}
}

// Audit writes e and waits for the broker's answer, at most 10 s.
func (a *TopicAuditor) Audit(ctx context.Context, e AuditEntry) {
	b, err := json.Marshal(e)
	if err != nil {
		a.log.Error("console: audit record not encoded", "err", err)
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := a.cl.ProduceSync(ctx, &kgo.Record{Topic: a.topic, Key: []byte(e.User), Value: b}).FirstErr(); err != nil {
		a.log.Error("console: audit record not written", "topic", a.topic, "action", e.Action, "err", err)
	}
}
