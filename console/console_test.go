package console

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/crypto/bcrypt"

	"github.com/productstream/productstream/config"
	"github.com/productstream/productstream/deliveries"
	"github.com/productstream/productstream/ingest"
	"github.com/productstream/productstream/schemas"
	"github.com/productstream/productstream/schemas/schemastest"
	"github.com/productstream/productstream/timeline"
	"github.com/productstream/productstream/topics"
)

// The credentials of the test console: one user and one token per scope
// set.
const (
	viewToken     = "view-token-view-token-view-token-0"
	payloadsToken = "payloads-token-payloads-token-0000"
	actToken      = "act-token-act-token-act-token-00000"
	userName      = "ops"
	userPassword  = "correct horse battery staple"
)

// stack is a console on a real in-process broker and registry, served on
// a loopback HTTP server.
type stack struct {
	url     string
	names   topics.Names
	serde   *schemas.Serde
	kafka   *kgo.Client
	actions *recordedActions
}

// recordedActions is the console's Actions seam answered in the test: it
// records what it was asked to do.
type recordedActions struct {
	mu    sync.Mutex
	calls []string
}

func (a *recordedActions) ReplayDeadLetters(_ context.Context, sink string) (string, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.calls = append(a.calls, "replay "+sink)
	return "0 applied, 0 stale, 0 still failing", nil
}

func (a *recordedActions) Rebuild(_ context.Context, sink string, progress func(read, total int64)) (string, error) {
	a.mu.Lock()
	a.calls = append(a.calls, "rebuild "+sink)
	a.mu.Unlock()
	progress(1, 1)
	return "generation 2 is live", nil
}

func (a *recordedActions) called() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.calls)
}

// newStack starts a console with c's auth and actions settings.
func newStack(t *testing.T, c config.Console) *stack {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	names := topics.For("t.")
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, names.Changes, names.Products,
		names.Updates, names.DLQ, names.Deliveries, names.Audit))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)
	serde := schemastest.Serde(t, names.ByKind())
	opts := []kgo.Opt{kgo.SeedBrokers(cluster.ListenAddrs()...)}
	newClient := func(extra ...kgo.Opt) *kgo.Client {
		cl, err := kgo.NewClient(append(slices.Clone(opts), extra...)...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(cl.Close)
		return cl
	}
	cl := newClient()
	feed, err := deliveries.NewFeed(newClient(), names.Deliveries)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = feed.Run(ctx) }()
	tl, err := timeline.New(cl, serde, names, "g")
	if err != nil {
		t.Fatal(err)
	}
	c.TimelineWindow = time.Hour
	actions := &recordedActions{}
	srv, err := New(Deps{
		Config: c, Sources: []Source{{Name: "shop", Provider: "lisa", Namespace: "shop-eu"}},
		Deliveries: feed, Timelines: tl, Kafka: cl, Client: opts,
		ProcessorGroup: "g", Changes: names.Changes, ProcessorDLQ: names.DLQ,
		Sinks:   []SinkInfo{{Name: "cache", Type: "redis", From: "products", Topic: names.Products, Group: "t.sink.cache", DLQ: "t.sink.cache.dlq"}},
		Metrics: NewSampler(prometheus.NewRegistry(), nil, time.Hour, nil),
		Actions: actions, Audit: NewTopicAuditor(newClient(), names.Audit, slogDiscard()),
	})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	return &stack{url: hs.URL, names: names, serde: serde, kafka: cl, actions: actions}
}

// secured is a console with a user and a token of each scope set.
func secured(t *testing.T) config.Console {
	t.Helper()
	hash, err := bcrypt.GenerateFromPassword([]byte(userPassword), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return config.Console{
		Listen: "0.0.0.0:9465",
		Users:  []config.ConsoleUser{{Name: userName, PasswordHash: string(hash), Scopes: []string{"view", "payloads"}}},
		Tokens: []config.ConsoleToken{
			{Name: "viewer", Token: viewToken, Scopes: []string{"view"}},
			{Name: "reader", Token: payloadsToken, Scopes: []string{"view", "payloads"}},
			{Name: "operator", Token: actToken, Scopes: []string{"view", "act"}},
		},
	}
}

// request sends a request with the given credential ("" none, "user" the
// basic-auth user, anything else a bearer token).
func (s *stack) request(t *testing.T, method, path, cred string, form url.Values, header http.Header) (int, http.Header, string) {
	t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, s.url+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for k, v := range header {
		if k == "Host" {
			req.Host = v[0] // Go sends req.Host, not a Host header
			continue
		}
		req.Header[k] = v
	}
	switch cred {
	case "":
	case "user":
		req.SetBasicAuth(userName, userPassword)
	default:
		req.Header.Set("Authorization", "Bearer "+cred)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, string(b)
}

// everyGet is every GET path the console serves.
func everyGet() []string {
	paths := []string{"/api/openapi.json", "/static/htmx.min.js", "/static/console.css", "/no-such-page"}
	for _, v := range (&Server{}).views() {
		api := "/api" + v.path
		if v.path == "/" {
			api = "/api/overview"
		}
		paths = append(paths, v.path, api)
	}
	return paths
}

// A console without users or tokens serves loopback only: New refuses
// any other address, as config does.
func TestConsoleRefusesUnauthenticatedListen(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:9465", ":9465", "10.1.2.3:9465", "[::]:9465"} {
		if _, err := New(Deps{Config: config.Console{Listen: addr}}); !errors.Is(err, ErrUnauthenticatedListen) {
			t.Errorf("New on %s without credentials: %v, want ErrUnauthenticatedListen", addr, err)
		}
	}
	if err := Check(config.Console{Listen: "127.0.0.1:9465"}); err != nil {
		t.Errorf("loopback without credentials refused: %v", err)
	}
}

// With credentials configured, nothing answers without them or with wrong
// ones, pages and API alike, and every answer carries the security
// headers.
func TestConsoleEveryPathNeedsCredentials(t *testing.T) {
	s := newStack(t, secured(t))
	wrongUser := http.Header{"Authorization": {"Basic " + basic(userName, "wrong password")}}
	for _, p := range everyGet() {
		for _, tc := range []struct {
			name   string
			cred   string
			header http.Header
		}{
			{"none", "", nil},
			{"wrong token", strings.Repeat("x", 40), nil},
			{"wrong password", "", wrongUser},
		} {
			code, h, body := s.request(t, http.MethodGet, p, tc.cred, nil, tc.header)
			if code != http.StatusUnauthorized {
				t.Errorf("GET %s with %s credentials: %d, want 401", p, tc.name, code)
			}
			if h.Get("WWW-Authenticate") == "" || !strings.Contains(h.Get("Content-Security-Policy"), "default-src 'self'") {
				t.Errorf("GET %s with %s credentials: headers %v", p, tc.name, h)
			}
			if strings.Contains(body, viewToken) || strings.Contains(body, userPassword) {
				t.Errorf("GET %s: the answer shows a secret", p)
			}
		}
		for _, cred := range []string{viewToken, "user"} {
			code, h, _ := s.request(t, http.MethodGet, p, cred, nil, nil)
			want := http.StatusOK
			if p == "/no-such-page" {
				want = http.StatusNotFound
			}
			if code != want {
				t.Errorf("GET %s as %s: %d, want %d", p, cred, code, want)
			}
			if !strings.Contains(h.Get("Content-Security-Policy"), "script-src 'self'") || h.Get("X-Content-Type-Options") != "nosniff" {
				t.Errorf("GET %s: security headers missing: %v", p, h)
			}
		}
	}
}

func basic(user, pass string) string {
	req, _ := http.NewRequest(http.MethodGet, "http://x/", nil)
	req.SetBasicAuth(user, pass)
	return strings.TrimPrefix(req.Header.Get("Authorization"), "Basic ")
}

// writeChange puts a change for key on the changes topic, as ingest does.
func (s *stack) writeChange(t *testing.T, id, raw string) {
	t.Helper()
	c := schemas.Change{EventID: "ev-" + id, Source: "shop", Provider: "lisa", Namespace: "shop-eu", EventType: "updated",
		Resource: "product", ProductID: id, ReceivedAt: time.Now().UTC(), Raw: raw}
	v, err := s.serde.EncodeChange(&c)
	if err != nil {
		t.Fatal(err)
	}
	r := &kgo.Record{Topic: s.names.Changes, Key: []byte(c.Key()), Value: v,
		Headers: []kgo.RecordHeader{{Key: "event-id", Value: []byte(c.EventID)}, {Key: "source", Value: []byte("shop")}}}
	if err := s.kafka.ProduceSync(context.Background(), r).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

// The view scope sees a product's changes, times and field names but
// never its values; payloads sees them, in the page and its JSON twin.
func TestConsoleViewScopeSeesNoPayloads(t *testing.T) {
	s := newStack(t, secured(t))
	s.writeChange(t, "p-1", `{"productId":"p-1","price":"123.45","title":"Secret title"}`)
	path := "/products?" + url.Values{"key": {"shop-eu:p-1"}}.Encode()
	for _, tc := range []struct {
		cred     string
		payloads bool
	}{{viewToken, false}, {payloadsToken, true}, {"user", true}} {
		for _, p := range []string{path, "/api" + path} {
			code, _, body := s.request(t, http.MethodGet, p, tc.cred, nil, nil)
			if code != http.StatusOK {
				t.Fatalf("GET %s: %d %s", p, code, body)
			}
			if !strings.Contains(body, "ev-p-1") {
				t.Errorf("GET %s as %s: the change's event id is not shown", p, tc.cred)
			}
			if shown := strings.Contains(body, "Secret title"); shown != tc.payloads {
				t.Errorf("GET %s as %s: values shown %v, want %v", p, tc.cred, shown, tc.payloads)
			}
		}
	}
	if code, _, body := s.request(t, http.MethodGet, "/api/products?key=no-colon", viewToken, nil, nil); code != http.StatusBadRequest {
		t.Errorf("a bad key: %d %s, want 400", code, body)
	}
}

// Values that came from senders are escaped: a product whose fields hold
// markup is shown as text.
func TestConsoleEscapesValues(t *testing.T) {
	s := newStack(t, secured(t))
	s.writeChange(t, `x<b id="k">`, `{"productId":"x","title":"<script>window.pwned=1</script><img src=x onerror=alert(1)>"}`)
	code, _, body := s.request(t, http.MethodGet, "/products?"+url.Values{"key": {`shop-eu:x<b id="k">`}}.Encode(), payloadsToken, nil, nil)
	if code != http.StatusOK {
		t.Fatalf("%d %s", code, body)
	}
	for _, raw := range []string{"<script>window.pwned", "<img src=x", `<b id="k">`} {
		if strings.Contains(body, raw) {
			t.Errorf("the page holds %q unescaped", raw)
		}
	}
	if !strings.Contains(body, "&lt;script&gt;window.pwned=1&lt;") && !strings.Contains(body, `\u003cscript\u003ewindow.pwned=1`) {
		t.Errorf("the title is not shown escaped:\n%s", body)
	}
}

// Actions are POST only, for the act scope, refused while console.actions
// is false and for a cross-origin browser request, and need confirming;
// one that passes is done and audited.
func TestConsoleActionsAreGuarded(t *testing.T) {
	c := secured(t)
	off := newStack(t, c)
	c.Actions = true
	on := newStack(t, c)
	form := url.Values{"target": {"cache"}, "confirm": {"yes"}}
	for _, tc := range []struct {
		name   string
		s      *stack
		method string
		cred   string
		form   url.Values
		header http.Header
		want   int
	}{
		{"actions off", off, http.MethodPost, actToken, form, nil, http.StatusForbidden},
		{"no act scope", on, http.MethodPost, payloadsToken, form, nil, http.StatusForbidden},
		{"no credentials", on, http.MethodPost, "", form, nil, http.StatusUnauthorized},
		{"a GET", on, http.MethodGet, actToken, nil, nil, http.StatusMethodNotAllowed},
		{"cross-site", on, http.MethodPost, actToken, form, http.Header{"Sec-Fetch-Site": {"cross-site"}, "Origin": {"https://evil.example"}}, http.StatusForbidden},
		{"cross-origin without fetch metadata", on, http.MethodPost, actToken, form, http.Header{"Origin": {"https://evil.example"}}, http.StatusForbidden},
		{"not confirmed", on, http.MethodPost, actToken, url.Values{"target": {"cache"}}, nil, http.StatusBadRequest},
		{"no such sink", on, http.MethodPost, actToken, url.Values{"target": {"nope"}, "confirm": {"yes"}}, nil, http.StatusBadRequest},
	} {
		for _, path := range []string{"/actions/replay-dead-letters", "/api/actions/replay-dead-letters"} {
			code, _, body := tc.s.request(t, tc.method, path, tc.cred, tc.form, tc.header)
			if code != tc.want {
				t.Errorf("%s: %s %s: %d %s, want %d", tc.name, tc.method, path, code, body, tc.want)
			}
		}
	}
	if calls := append(off.actions.called(), on.actions.called()...); len(calls) != 0 {
		t.Fatalf("refused actions were carried out: %v", calls)
	}

	same := http.Header{"Sec-Fetch-Site": {"same-origin"}}
	code, _, body := on.request(t, http.MethodPost, "/api/actions/replay-dead-letters", actToken, form, same)
	if code != http.StatusOK || !strings.Contains(body, "still failing") {
		t.Fatalf("the action: %d %s", code, body)
	}
	if calls := on.actions.called(); !slices.Equal(calls, []string{"replay cache"}) {
		t.Fatalf("actions done: %v", calls)
	}
	// The audit trail names who did what.
	var audit AuditEntry
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(append(on.kafka.Opts(), kgo.ConsumeTopics(on.names.Audit), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	fs := cl.PollRecords(ctx, 1)
	if err := fs.Err0(); err != nil || fs.NumRecords() != 1 {
		t.Fatalf("audit topic: %v, %d records", err, fs.NumRecords())
	}
	if err := json.Unmarshal(fs.Records()[0].Value, &audit); err != nil {
		t.Fatal(err)
	}
	if audit.User != "operator" || audit.Action != ActionReplay || audit.Target != "cache" || audit.Error != "" {
		t.Fatalf("audit record %+v", audit)
	}
}

// Every JSON twin is described in the OpenAPI document, and the document
// describes no path the console does not serve.
func TestConsoleOpenAPIDescribesEveryAPIPath(t *testing.T) {
	b, err := os.ReadFile("openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{}
	for _, p := range everyGet() {
		if strings.HasPrefix(p, "/api/") && p != "/api/openapi.json" {
			want[p] = "get"
		}
	}
	for _, a := range []string{ActionReplay, ActionRebuild} {
		want["/api/actions/"+a] = "post"
	}
	for p, method := range want {
		if _, ok := doc.Paths[p][method]; !ok {
			t.Errorf("openapi.json does not describe %s %s", strings.ToUpper(method), p)
		}
	}
	for p := range doc.Paths {
		if _, ok := want[p]; !ok {
			t.Errorf("openapi.json describes %s, which the console does not serve", p)
		}
	}
}

func slogDiscard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// A console without credentials (loopback only) answers only requests for
// a loopback name: another site's page whose name resolves to 127.0.0.1
// (DNS rebinding) reads nothing and does nothing.
func TestConsoleOpenRefusesForeignHostNames(t *testing.T) {
	s := newStack(t, config.Console{Listen: "127.0.0.1:9465", Actions: true})
	for _, host := range []string{"evil.example", "evil.example:9465", "10.0.0.1:9465"} {
		for _, p := range []string{"/", "/api/overview", "/products"} {
			code, _, _ := s.request(t, http.MethodGet, p, "", nil, http.Header{"Host": {host}})
			if code != http.StatusMisdirectedRequest {
				t.Errorf("GET %s for host %s: %d, want 421", p, host, code)
			}
		}
		code, _, _ := s.request(t, http.MethodPost, "/actions/rebuild", "", url.Values{"target": {"cache"}, "confirm": {"yes"}},
			http.Header{"Host": {host}, "Sec-Fetch-Site": {"same-origin"}})
		if code != http.StatusMisdirectedRequest {
			t.Errorf("POST for host %s: %d, want 421", host, code)
		}
	}
	for _, host := range []string{"localhost:9465", "127.0.0.1:9465", "[::1]:9465", "localhost"} {
		if code, _, body := s.request(t, http.MethodGet, "/api/overview", "", nil, http.Header{"Host": {host}}); code != http.StatusOK {
			t.Errorf("GET for host %s: %d %s", host, code, body)
		}
	}
	if calls := s.actions.called(); len(calls) != 0 {
		t.Fatalf("actions done for a foreign host: %v", calls)
	}
}

// Every page renders with refusals counted by reason (a reason is not a
// plain string, and the Sources page links each one).
func TestConsolePagesRenderWithRefusals(t *testing.T) {
	s := newStack(t, secured(t))
	rec, err := deliveries.NewRecorder(s.kafka, s.names.Deliveries, "host:1", slogDiscard(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	rec.Observe(ingest.Delivery{Source: "shop", Route: "/webhooks/:name", Status: 401, Outcome: ingest.Refused,
		Reason: ingest.ReasonBadSignature, At: time.Now()})
	if err := s.kafka.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, _, body := s.request(t, http.MethodGet, "/sources", payloadsToken, nil, nil)
		if code != http.StatusOK {
			t.Fatalf("GET /sources: %d %s", code, body)
		}
		if strings.Contains(body, "reason=bad_signature") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the refusal is not on the Sources page:\n%s", body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, p := range everyGet() {
		if p == "/no-such-page" {
			continue
		}
		if code, _, body := s.request(t, http.MethodGet, p, payloadsToken, nil, nil); code != http.StatusOK {
			t.Errorf("GET %s: %d %s", p, code, body)
		}
	}
}

// JSON is shown indented, with Avro's "\/" escapes shown as "/" and every
// other escape kept.
func TestJSONTextUnescapesSlashesOnly(t *testing.T) {
	got := jsonText(json.RawMessage(`{"url":"https:\/\/shop.example\/p","q":"a\\\/b \"c\" \u003c"}`))
	want := "{\n  \"url\": \"https://shop.example/p\",\n  \"q\": \"a\\\\/b \\\"c\\\" \\u003c\"\n}"
	if got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
	if got := jsonText(json.RawMessage(`not json \/`)); got != `not json \/` {
		t.Fatalf("not JSON: got %q", got)
	}
}
