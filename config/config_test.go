package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

const sample = `
kafka:
  brokers: ["kafka-1:9092"]
  topic_prefix: "ps."
  partitions: 6
schema_registry:
  url: "http://registry:8081"
http:
  listen: "0.0.0.0:8080"
sources:
  - name: lisa-main
    provider: lisa
    id: "plugin-42"
    namespace: "shop-eu"
    secrets: ["${LISA_SECRET}", "s0"]
    api_keys: ["k1"]
    max_body_bytes: 196608
processor:
  quiet_period: 2s
  max_delay: 30s
debug:
  listen: "127.0.0.1:6060"
`

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestParseExpandsEnvAndDecodesEveryField(t *testing.T) {
	cfg, err := Parse([]byte(sample), env(map[string]string{"LISA_SECRET": "s1"}))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(Needs{Brokers: true, Registry: true, Sources: true}); err != nil {
		t.Fatalf("valid sample refused: %v", err)
	}
	s := cfg.Sources[0]
	if s.Secrets[0] != "s1" || s.Secrets[1] != "s0" || s.ID != "plugin-42" || s.Namespace != "shop-eu" || s.MaxBodyBytes != 196608 {
		t.Fatalf("source decoded wrong: %+v", s)
	}
	if cfg.Kafka.Partitions != 6 || cfg.Kafka.TopicPrefix != "ps." || cfg.Processor.QuietPeriod != 2*time.Second || cfg.Processor.MaxDelay != 30*time.Second {
		t.Fatalf("kafka/processor decoded wrong: %+v %+v", cfg.Kafka, cfg.Processor)
	}
	if cfg.Debug.Listen != "127.0.0.1:6060" {
		t.Fatalf("debug decoded wrong: %+v", cfg.Debug)
	}
	if cfg.Kafka.ProduceTimeout != DefaultProduceTimeout || cfg.Processor.Group != DefaultGroup || cfg.Kafka.Compression != "lz4" {
		t.Fatalf("defaults not applied: %+v", cfg)
	}
}

func TestParseMissingEnvNamesTheVariable(t *testing.T) {
	_, err := Parse([]byte(sample), env(nil))
	if !errors.Is(err, ErrMissingEnv) || !strings.Contains(err.Error(), "LISA_SECRET") {
		t.Fatalf("want ErrMissingEnv naming LISA_SECRET, got %v", err)
	}
}

func TestParseRejectsUnknownKeys(t *testing.T) {
	_, err := Parse([]byte("kafka:\n  brokerz: [a:1]\n"), env(nil))
	if err == nil || !strings.Contains(err.Error(), "brokerz") {
		t.Fatalf("want error naming the unknown key, got %v", err)
	}
}

func TestDefaultsIDAndNamespaceToName(t *testing.T) {
	cfg, err := Parse([]byte("sources:\n  - {name: a, provider: lisa, secrets: [x]}\n"), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Sources[0].ID != "a" || cfg.Sources[0].Namespace != "a" {
		t.Fatalf("id/namespace not defaulted: %+v", cfg.Sources[0])
	}
}

// max_json_depth defaults to 64 for every source and the processor, and a
// configured value is kept.
func TestMaxJSONDepthDefaults(t *testing.T) {
	cfg, err := Parse([]byte("sources:\n  - {name: a, provider: lisa, secrets: [x]}\n  - {name: b, provider: lisa, secrets: [x], max_json_depth: 10000}\nprocessor: {max_json_depth: 1}\n"), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(Needs{}); err != nil {
		t.Fatal(err)
	}
	if cfg.Sources[0].MaxJSONDepth != 64 || cfg.Sources[1].MaxJSONDepth != 10000 || cfg.Processor.MaxJSONDepth != 1 {
		t.Fatalf("max_json_depth: sources %d and %d, processor %d", cfg.Sources[0].MaxJSONDepth, cfg.Sources[1].MaxJSONDepth, cfg.Processor.MaxJSONDepth)
	}
	if d := Demo(); d.Sources[0].MaxJSONDepth != 64 || d.Processor.MaxJSONDepth != 64 {
		t.Fatalf("demo max_json_depth: source %d, processor %d", d.Sources[0].MaxJSONDepth, d.Processor.MaxJSONDepth)
	}
}

func TestValidateNamesTheField(t *testing.T) {
	cases := []struct {
		name  string
		yaml  string
		needs Needs
		field string
	}{
		{"brokers required outside dev", "sources: []", Needs{Brokers: true}, "kafka.brokers"},
		{"broker not host:port", "kafka: {brokers: [nohost]}", Needs{}, "kafka.brokers[0]"},
		{"registry required outside dev", "{}", Needs{Registry: true}, "schema_registry.url"},
		{"registry not a URL", "schema_registry: {url: ftp://x}", Needs{Registry: true}, "schema_registry.url"},
		{"no sources for ingest", "{}", Needs{Sources: true}, "sources"},
		{"missing name", "sources: [{provider: lisa, secrets: [x]}]", Needs{}, "sources[0].name"},
		{"duplicate name", "sources: [{name: a, provider: lisa, secrets: [x]}, {name: a, id: b, provider: lisa, secrets: [x]}]", Needs{}, "sources[1].name"},
		{"duplicate provider id", "sources: [{name: a, id: p, provider: lisa, secrets: [x]}, {name: b, id: p, provider: lisa, secrets: [x]}]", Needs{}, "sources[1].id"},
		{"missing provider", "sources: [{name: a, secrets: [x]}]", Needs{}, "sources[0].provider"},
		{"empty secret", "sources: [{name: a, provider: lisa, secrets: ['']}]", Needs{}, "sources[0].secrets[0]"},
		{"colon in namespace", "sources: [{name: a, provider: lisa, namespace: 'x:y', secrets: [x]}]", Needs{}, "sources[0].namespace"},
		{"unknown topic family", "kafka: {topic_configs: {nope: {a: b}}}", Needs{}, "kafka.topic_configs.nope"},
		{"products not compacted", "kafka: {topic_configs: {products: {cleanup.policy: delete}}}", Needs{}, "kafka.topic_configs.products.cleanup.policy"},
		{"min.insync.replicas above the replication factor", "kafka: {replication_factor: 2, min_insync_replicas: 3}", Needs{}, "kafka.min_insync_replicas"},
		{"negative min.insync.replicas", "kafka: {min_insync_replicas: -1}", Needs{}, "kafka.min_insync_replicas"},
		{"metrics address not host:port", "processor: {metrics_listen: nope}", Needs{}, "processor.metrics_listen"},
		{"debug address not host:port", "debug: {listen: nope}", Needs{}, "debug.listen"},
		{"unknown compression codec", "kafka: {compression: brotli}", Needs{}, "kafka.compression"},
		{"bad partitions", "kafka: {partitions: -1}", Needs{}, "kafka.partitions"},
		{"max delay under quiet period", "processor: {quiet_period: 5s, max_delay: 1s}", Needs{}, "processor.max_delay"},
		{"unknown pending format", "processor: {pending_format: avro}", Needs{}, "processor.pending_format"},
		{"negative source max_json_depth", "sources: [{name: a, provider: lisa, secrets: [x], max_json_depth: -1}]", Needs{}, "sources[0].max_json_depth"},
		{"source max_json_depth beyond encoding/json", "sources: [{name: a, provider: lisa, secrets: [x], max_json_depth: 10001}]", Needs{}, "sources[0].max_json_depth"},
		{"negative processor max_json_depth", "processor: {max_json_depth: -1}", Needs{}, "processor.max_json_depth"},
		{"processor max_json_depth beyond encoding/json", "processor: {max_json_depth: 10001}", Needs{}, "processor.max_json_depth"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Parse([]byte(tc.yaml), env(nil))
			if err != nil {
				t.Fatal(err)
			}
			err = cfg.Validate(tc.needs)
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("want a FieldError, got %v", err)
			}
			if !strings.Contains(err.Error(), tc.field+":") {
				t.Fatalf("error %q does not name %s", err, tc.field)
			}
		})
	}
}

func TestDemoIsValid(t *testing.T) {
	if err := Demo().Validate(Needs{Sources: true}); err != nil {
		t.Fatal(err)
	}
}

// The shipped deployment config parses and validates.
func TestDeployConfigIsValid(t *testing.T) {
	cfg, err := Load("../deploy/productstream.yaml")
	if err == nil {
		t.Fatal("deploy config loaded without its environment variables")
	}
	for _, k := range []string{"LISA_PLUGIN_ID", "LISA_SECRET", "LISA_API_KEY"} {
		t.Setenv(k, "x-"+k)
	}
	if cfg, err = Load("../deploy/productstream.yaml"); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(Needs{Brokers: true, Registry: true, Sources: true}); err != nil {
		t.Fatal(err)
	}
	if cfg.Sources[0].Secrets[0] != "x-LISA_SECRET" {
		t.Fatalf("secret not expanded: %q", cfg.Sources[0].Secrets[0])
	}
}

// The http settings default as documented, and a setting that would leave
// the listener unbounded stops start-up with an error naming it. (The
// listener's contract depends on them; config_test.go is the natural home.)
func TestHTTPConfigDefaultsAndValidation(t *testing.T) {
	cfg, err := Parse([]byte("{}"), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	h := cfg.HTTP
	if h.ReadHeaderTimeout != 5*time.Second || h.ReadTimeout != 15*time.Second || h.IdleTimeout != time.Minute || h.MaxConnections != 1024 ||
		h.UnverifiedLimit != (RateLimit{PerSecond: 5, Burst: 100}) || len(h.TrustedProxies) != 0 {
		t.Fatalf("defaults: %+v", h)
	}
	if h.DrainDelay == nil || *h.DrainDelay != 5*time.Second {
		t.Fatalf("http.drain_delay defaults to %v, want 5s", h.DrainDelay)
	}
	// An explicit 0s is kept: it turns the drain off.
	if off, err := Parse([]byte("http: {drain_delay: 0s}"), func(string) (string, bool) { return "", false }); err != nil {
		t.Fatal(err)
	} else if d := off.HTTP.DrainDelay; d == nil || *d != 0 || off.Validate(Needs{}) != nil {
		t.Fatalf("http.drain_delay: 0s gives %v (valid: %v), want 0 and valid", d, off.Validate(Needs{}))
	}
	cases := []struct{ name, yaml, field string }{
		{"negative drain delay", "http: {drain_delay: -1s}", "http.drain_delay"},
		{"negative header timeout", "http: {read_header_timeout: -1s}", "http.read_header_timeout"},
		{"negative read timeout", "http: {read_timeout: -1s}", "http.read_timeout"},
		{"header timeout past read timeout", "http: {read_header_timeout: 20s, read_timeout: 10s}", "http.read_header_timeout"},
		{"negative idle timeout", "http: {idle_timeout: -1s}", "http.idle_timeout"},
		{"negative connection cap", "http: {max_connections: -1}", "http.max_connections"},
		{"negative refusal budget", "http: {unverified_limit: {per_second: -1}}", "http.unverified_limit"},
		{"a proxy that is no address", "http: {trusted_proxies: [10.0.0.0/8, lb.internal]}", "http.trusted_proxies[1]"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Parse([]byte(tc.yaml), func(string) (string, bool) { return "", false })
			if err != nil {
				t.Fatal(err)
			}
			err = cfg.Validate(Needs{})
			var fe *FieldError
			if !errors.As(err, &fe) || !strings.Contains(err.Error(), tc.field+":") {
				t.Fatalf("got %v, want a FieldError naming %s", err, tc.field)
			}
		})
	}
}

// Demo sets its source and nothing else: every other field comes from
// applyDefaults, as it does for a file that leaves it out.
func TestDemoTakesEveryDefaultFromApplyDefaults(t *testing.T) {
	parsed, err := Parse([]byte("{}"), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	demo := Demo()
	demo.Sources, parsed.Sources = nil, nil
	if !reflect.DeepEqual(demo, parsed) {
		t.Fatalf("Demo differs from the defaults:\n%+v\n%+v", demo, parsed)
	}
}

// Validate reports the problems of every section at once, each a
// *FieldError naming its field.
func TestValidateReportsEverySection(t *testing.T) {
	bad := `
kafka: {partitions: -1}
schema_registry: {url: ftp://x}
http: {max_connections: -1}
sources: [{name: a, secrets: [x]}]
processor: {max_pending_keys: -1}
debug: {listen: nope}
`
	cfg, err := Parse([]byte(bad), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	joined, ok := cfg.Validate(Needs{Brokers: true, Registry: true, Sources: true}).(interface{ Unwrap() []error })
	if !ok {
		t.Fatal("want the joined errors of every section")
	}
	var fields []string
	for _, e := range joined.Unwrap() {
		var fe *FieldError
		if !errors.As(e, &fe) {
			t.Fatalf("%v is not a FieldError", e)
		}
		fields = append(fields, fe.Field)
	}
	want := []string{"kafka.brokers", "kafka.partitions", "schema_registry.url", "http.max_connections",
		"sources[0].provider", "processor.max_pending_keys", "debug.listen"}
	if !reflect.DeepEqual(fields, want) {
		t.Fatalf("fields %v, want %v", fields, want)
	}
}

// configKey is one key of the configuration file, as Parse accepts it.
type configKey struct {
	typ  reflect.Type // pointers removed
	leaf bool         // a value, not a mapping or list of mappings of known keys
}

var (
	durationType = reflect.TypeFor[time.Duration]()
	yamlNodeType = reflect.TypeFor[yaml.Node]()
	unmarshaler  = reflect.TypeFor[yaml.Unmarshaler]()
)

// yamlField is a struct field as the YAML decoder sees it.
type yamlField struct {
	name  string
	index []int
}

// yamlFields lists t's fields by their YAML names, inline fields flattened.
func yamlFields(t reflect.Type) []yamlField {
	var out []yamlField
	for _, f := range reflect.VisibleFields(t) {
		if !f.IsExported() || len(f.Index) > 1 && !inlined(t, f.Index) {
			continue
		}
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		switch {
		case name == "-":
			continue
		case slices.Contains(strings.Split(opts, ","), "inline"):
			continue // its fields are listed on their own
		case name == "":
			name = strings.ToLower(f.Name)
		}
		out = append(out, yamlField{name, f.Index})
	}
	return out
}

// inlined reports whether every struct on the way to the field at index
// is inlined.
func inlined(t reflect.Type, index []int) bool {
	for _, i := range index[:len(index)-1] {
		f := t.Field(i)
		if !strings.Contains(f.Tag.Get("yaml"), ",inline") {
			return false
		}
		t = deref(f.Type)
	}
	return true
}

func deref(t reflect.Type) reflect.Type {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t
}

// mapping reports whether t is decoded as a mapping of keys that it names.
func mapping(t reflect.Type) bool {
	return t.Kind() == reflect.Struct && t != yamlNodeType && !reflect.PointerTo(t).Implements(unmarshaler)
}

// configKeys walks t and adds every key below prefix: "kafka.brokers",
// "sources[].rate_limit.burst".
func configKeys(t reflect.Type, prefix string, out map[string]configKey) {
	for _, f := range yamlFields(t) {
		key := f.name
		if prefix != "" {
			key = prefix + "." + f.name
		}
		ft := deref(t.FieldByIndex(f.index).Type)
		switch {
		case mapping(ft):
			out[key] = configKey{ft, false}
			configKeys(ft, key, out)
		case ft.Kind() == reflect.Slice && mapping(deref(ft.Elem())):
			out[key] = configKey{ft, false}
			configKeys(deref(ft.Elem()), key+"[]", out)
		default:
			out[key] = configKey{ft, true}
		}
	}
}

// typeName is how docs/configuration.md names a key's type.
func typeName(t reflect.Type) string {
	switch {
	case t == durationType:
		return "duration"
	case t == reflect.TypeFor[ByteSize]():
		return "size"
	case t == yamlNodeType || mapping(t):
		return "mapping"
	}
	switch t.Kind() {
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "bool"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "integer"
	case reflect.Float32, reflect.Float64:
		return "number"
	case reflect.Map:
		return "map"
	case reflect.Slice:
		if e := deref(t.Elem()); e.Kind() == reflect.String {
			return "list of strings"
		} else if mapping(e) {
			return "list"
		}
	}
	return t.String()
}

// docRow is one row of a `| key | type | default | meaning |` table.
type docRow struct {
	line            int
	key, typ, deflt string
}

// configDocRows reads every key table of docs/configuration.md.
func configDocRows(t *testing.T) map[string]docRow {
	t.Helper()
	doc, err := os.ReadFile("../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string]docRow{}
	inTable := false
	for i, line := range strings.Split(string(doc), "\n") {
		cells := strings.Split(strings.Trim(strings.TrimSpace(line), "|"), "|")
		for k := range cells {
			cells[k] = strings.TrimSpace(cells[k])
		}
		switch {
		case !strings.HasPrefix(line, "|"):
			inTable = false
		case slices.Equal(cells, []string{"key", "type", "default", "meaning"}):
			inTable = true
		case !inTable || strings.HasPrefix(cells[0], "---"):
		case len(cells) != 4 || !strings.HasPrefix(cells[0], "`") || !strings.HasSuffix(cells[0], "`"):
			t.Errorf("docs/configuration.md:%d: want | `key` | type | default | meaning |, got %q", i+1, line)
		default:
			key := strings.Trim(cells[0], "`")
			if prev, dup := rows[key]; dup {
				t.Errorf("docs/configuration.md:%d: %s is already listed at line %d", i+1, key, prev.line)
			}
			rows[key] = docRow{line: i + 1, key: key, typ: cells[1], deflt: cells[2]}
		}
	}
	if len(rows) == 0 {
		t.Fatal("docs/configuration.md has no | key | type | default | meaning | table")
	}
	return rows
}

// docs/configuration.md lists every key Parse accepts, with its type, and
// no key that Parse would refuse.
func TestConfigurationDocListsEveryKey(t *testing.T) {
	keys := map[string]configKey{}
	configKeys(reflect.TypeFor[Config](), "", keys)
	rows := configDocRows(t)
	for key, k := range keys {
		row, ok := rows[key]
		switch {
		case !ok && k.leaf:
			t.Errorf("docs/configuration.md does not list %s (%s)", key, typeName(k.typ))
		case ok && row.typ != typeName(k.typ):
			t.Errorf("docs/configuration.md:%d: %s has type %q, want %q", row.line, key, row.typ, typeName(k.typ))
		}
	}
	for key, row := range rows {
		if _, ok := keys[key]; !ok {
			t.Errorf("docs/configuration.md:%d: %s is not a configuration key", row.line, key)
		}
	}
}

// defaultsInWords are the keys whose default is not a constant of
// applyDefaults: derived from another key, or the provider's own, applied
// when it builds the source. docs/configuration.md states them in words.
var defaultsInWords = []string{
	"sources[].id", "sources[].namespace", "sources[].max_body_bytes", "sources[].rate_limit.burst",
	"sources[].sns.signature_versions", "sources[].hmac.encoding", "sources[].hmac.signed",
	"sources[].hmac.tolerance", "sources[].payload.resource",
	"sinks[].opensearch.index", "sinks[].postgres.table",
}

// The default docs/configuration.md states for each key is the one Parse
// applies: a value in backticks is decoded into the field and compared,
// "none" means the field stays empty, "required" that there is none.
func TestConfigurationDocDefaults(t *testing.T) {
	// One source with every optional block present, so that the defaults
	// inside those blocks are applied too.
	cfg := Config{Sources: []Source{{Name: "probe", Provider: "lisa"}}}
	src := reflect.ValueOf(&cfg.Sources[0]).Elem()
	for i := range src.NumField() {
		if f := src.Field(i); f.Kind() == reflect.Pointer && f.IsNil() && mapping(f.Type().Elem()) {
			f.Set(reflect.New(f.Type().Elem()))
		}
	}
	// And one sink with every backend block present.
	cfg.Sinks = []Sink{{Name: "probe", OpenSearch: &SinkOpenSearch{}, Postgres: &SinkPostgres{}, Redis: &SinkRedis{}, Webhook: &SinkWebhook{}}}
	// And one console user and token.
	cfg.Console.Users, cfg.Console.Tokens = []ConsoleUser{{}}, []ConsoleToken{{}}
	cfg.applyDefaults()
	if p, err := Parse([]byte("sources: [{name: probe, provider: lisa}]"), env(nil)); err != nil {
		t.Fatal(err)
	} else if p.Kafka.TopicPrefix != cfg.Kafka.TopicPrefix || !reflect.DeepEqual(p.Processor, cfg.Processor) || p.HTTP.ReadTimeout != cfg.HTTP.ReadTimeout {
		t.Fatal("Parse does not apply applyDefaults")
	}
	keys := map[string]configKey{}
	configKeys(reflect.TypeFor[Config](), "", keys)
	for key, row := range configDocRows(t) {
		k, ok := keys[key]
		if !ok {
			continue // TestConfigurationDocListsEveryKey names it
		}
		got := valueAt(reflect.ValueOf(cfg), key)
		switch {
		case !k.leaf:
			if row.deflt != "" {
				t.Errorf("docs/configuration.md:%d: %s holds keys; state the defaults of those", row.line, key)
			}
		case slices.Contains(defaultsInWords, key):
			if row.deflt == "" || row.deflt == "none" || strings.HasPrefix(row.deflt, "`") {
				t.Errorf("docs/configuration.md:%d: the default of %s is applied outside applyDefaults: say which, in words", row.line, key)
			}
		case row.deflt == "required":
		case row.deflt == "none":
			if got.IsValid() && !got.IsZero() {
				t.Errorf("docs/configuration.md:%d: %s defaults to none, but Parse sets %v", row.line, key, got)
			}
		case strings.HasPrefix(row.deflt, "`") && strings.Count(row.deflt, "`") == 2 && strings.HasSuffix(row.deflt, "`"):
			want := reflect.New(k.typ)
			if err := yaml.Unmarshal([]byte(strings.Trim(row.deflt, "`")), want.Interface()); err != nil {
				t.Errorf("docs/configuration.md:%d: default of %s: %v", row.line, key, err)
				continue
			}
			if !got.IsValid() || !reflect.DeepEqual(got.Interface(), want.Elem().Interface()) {
				t.Errorf("docs/configuration.md:%d: %s defaults to %s, but Parse sets %v", row.line, key, row.deflt, got)
			}
		default:
			t.Errorf("docs/configuration.md:%d: the default of %s must be a value in backticks, none or required, got %q", row.line, key, row.deflt)
		}
	}
	if s := cfg.Sources[0]; s.ID != "probe" || s.Namespace != "probe" {
		t.Errorf("id and namespace default to the name, got %q and %q", s.ID, s.Namespace)
	}
}

// valueAt is the value at key below v, pointers followed; the invalid
// Value when a pointer on the way is nil.
func valueAt(v reflect.Value, key string) reflect.Value {
	for _, name := range strings.Split(key, ".") {
		name, list := strings.CutSuffix(name, "[]")
		for v.Kind() == reflect.Pointer {
			if v.IsNil() {
				return reflect.Value{}
			}
			v = v.Elem()
		}
		i := slices.IndexFunc(yamlFields(v.Type()), func(f yamlField) bool { return f.name == name })
		v = v.FieldByIndex(yamlFields(v.Type())[i].index)
		if list {
			v = v.Index(0)
		}
	}
	for v.Kind() == reflect.Pointer {
		if v.IsNil() {
			return reflect.Value{}
		}
		v = v.Elem()
	}
	return v
}

// yamlBlock is one YAML example in the repository's documentation.
type yamlBlock struct {
	where string // file:line
	text  []byte
}

var yamlFence = regexp.MustCompile("(?ms)^([ \t]*)```ya?ml[ \t]*\n(.*?)^[ \t]*```[ \t]*$")

// yamlExamples returns every ```yaml block of README.md and docs/*.md, and
// every file of deploy/ that is YAML.
func yamlExamples(t *testing.T) []yamlBlock {
	t.Helper()
	var out []yamlBlock
	docs, _ := filepath.Glob("../docs/*.md")
	for _, path := range append([]string{"../README.md"}, docs...) {
		doc, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range yamlFence.FindAllSubmatchIndex(doc, -1) {
			indent := string(doc[m[2]:m[3]])
			var text strings.Builder
			for _, line := range strings.SplitAfter(string(doc[m[4]:m[5]]), "\n") {
				text.WriteString(strings.TrimPrefix(line, indent))
			}
			line := 2 + strings.Count(string(doc[:m[0]]), "\n")
			out = append(out, yamlBlock{fmt.Sprintf("%s:%d", strings.TrimPrefix(path, "../"), line), []byte(text.String())})
		}
	}
	deploy, _ := filepath.Glob("../deploy/*")
	for _, path := range deploy {
		if ext := filepath.Ext(path); ext != ".yaml" && ext != ".yml" {
			continue
		}
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, yamlBlock{strings.TrimPrefix(path, "../"), data})
	}
	return out
}

// Every YAML example in README.md, docs/ and deploy/ parses strictly (no
// unknown key) with its ${ENV} references set, and validates: a whole
// configuration (brokers and sources) as the ingest role needs it, a
// fragment as far as it goes. So no example drifts from the code. (What a
// provider makes of a source's own settings is tested in ingest.)
func TestEveryYAMLExampleIsValid(t *testing.T) {
	// Long enough for a console token.
	dummy := func(name string) (string, bool) {
		return "x-" + strings.ToLower(name) + "-0123456789abcdef0123456789", true
	}
	whole := map[string]int{}
	for _, b := range yamlExamples(t) {
		t.Run(b.where, func(t *testing.T) {
			cfg, err := Parse(b.text, dummy)
			if err != nil {
				t.Fatal(err)
			}
			needs := Needs{}
			if len(cfg.Kafka.Brokers) > 0 && len(cfg.Sources) > 0 {
				needs = Needs{Brokers: true, Registry: true, Sources: true}
				whole[strings.Split(b.where, ":")[0]]++
			}
			if err := cfg.Validate(needs); err != nil {
				t.Fatal(err)
			}
		})
	}
	for _, f := range []string{"README.md", "docs/configuration.md", "deploy/productstream.yaml"} {
		if whole[f] == 0 {
			t.Errorf("%s has no whole configuration example", f)
		}
	}
}

var (
	mdLink     = regexp.MustCompile(`\]\(([^)\s]+)\)`)
	quotedPath = regexp.MustCompile("`(?:\\./)?([A-Za-z0-9_.-]+(?:/[A-Za-z0-9_.-]+)*/?)`")
	mdHeading  = regexp.MustCompile(`(?m)^#+ +(.+)$`)
)

// README.md and docs/ cite only files that are in the repository: every
// relative link (and its #heading) resolves, and so does every path in
// backticks that starts with one of the repository's top-level names.
func TestDocsCiteOnlyFilesInTheRepository(t *testing.T) {
	top := map[string]bool{}
	entries, err := os.ReadDir("..")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		top[e.Name()] = true
	}
	docs, _ := filepath.Glob("../docs/*.md")
	for _, path := range append([]string{"../README.md"}, docs...) {
		doc, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		name := strings.TrimPrefix(path, "../")
		for _, m := range mdLink.FindAllSubmatch(doc, -1) {
			target, anchor, _ := strings.Cut(string(m[1]), "#")
			if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			file := path
			if target != "" {
				file = filepath.Join(filepath.Dir(path), target)
			}
			if _, err := os.Stat(file); err != nil {
				t.Errorf("%s links to %s, which is not in the repository", name, m[1])
				continue
			}
			if anchor != "" && !slices.Contains(headingAnchors(t, file), anchor) {
				t.Errorf("%s links to %s, which has no such heading", name, m[1])
			}
		}
		for _, m := range quotedPath.FindAllSubmatch(doc, -1) {
			p := string(m[1])
			first, _, nested := strings.Cut(p, "/")
			if !nested || !top[first] {
				continue
			}
			if _, err := os.Stat(filepath.Join("..", p)); err != nil {
				t.Errorf("%s names %s, which is not in the repository", name, p)
			}
		}
	}
}

// headingAnchors returns the GitHub anchors of a Markdown file's headings.
func headingAnchors(t *testing.T, path string) []string {
	doc, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range mdHeading.FindAllSubmatch(doc, -1) {
		var b strings.Builder
		for _, r := range strings.ToLower(string(m[1])) {
			switch {
			case r == ' ':
				b.WriteRune('-')
			case r == '-' || r == '_' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9':
				b.WriteRune(r)
			}
		}
		out = append(out, b.String())
	}
	return out
}

// The operations listener's former homes still work: processor.metrics_listen,
// then debug.listen, are read as ops.listen when it is not set, each with a
// deprecation note; ops.listen wins over both.
func TestOpsListenFoldsDeprecatedKeys(t *testing.T) {
	cases := []struct {
		name, yaml, listen string
		notes              int
	}{
		{"ops alone", "ops: {listen: '127.0.0.1:1'}", "127.0.0.1:1", 0},
		{"metrics_listen", "processor: {metrics_listen: '127.0.0.1:2'}", "127.0.0.1:2", 1},
		{"debug.listen", "debug: {listen: '127.0.0.1:3'}", "127.0.0.1:3", 1},
		{"both deprecated", "processor: {metrics_listen: '127.0.0.1:2'}\ndebug: {listen: '127.0.0.1:3'}", "127.0.0.1:2", 2},
		{"ops wins", "ops: {listen: '127.0.0.1:1'}\ndebug: {listen: '127.0.0.1:3'}", "127.0.0.1:1", 1},
		{"none", "{}", "", 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Parse([]byte(tc.yaml), func(string) (string, bool) { return "", false })
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Ops.Listen != tc.listen || len(cfg.Deprecations) != tc.notes {
				t.Fatalf("ops.listen %q with notes %q, want %q with %d", cfg.Ops.Listen, cfg.Deprecations, tc.listen, tc.notes)
			}
			for _, n := range cfg.Deprecations {
				if !strings.Contains(n, "deprecated: use ops.listen") {
					t.Fatalf("note %q does not say what to use", n)
				}
			}
		})
	}
	cfg, _ := Parse([]byte("debug: {listen: nope}"), func(string) (string, bool) { return "", false })
	if err := cfg.Validate(Needs{}); err == nil || !strings.Contains(err.Error(), "debug.listen:") {
		t.Fatalf("a bad deprecated address: %v, want an error naming debug.listen", err)
	}
}
