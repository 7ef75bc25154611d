package config

import (
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Sink is one configured writer of a topic to a backend (package sink).
type Sink struct {
	// Name is unique; it names the consumer group <topic_prefix>sink.<name>
	// and the dead letter topic <topic_prefix>sink.<name>.dlq.
	Name string `yaml:"name"`
	// Type is the backend: opensearch, postgres, redis or webhook.
	Type string `yaml:"type"`
	// From is the topic family to read: products (default), updates,
	// changes, collections, categories, options, groups or pos.
	From string `yaml:"from"`
	// Namespaces, when set, keeps only records of these namespaces; the
	// others are counted as filtered.
	Namespaces []string `yaml:"namespaces"`
	// Batch bounds what is written at once.
	Batch SinkBatch `yaml:"batch"`
	// Retry paces the retries of transient failures (retried forever).
	Retry SinkRetry `yaml:"retry"`

	// The backend's own settings: the one matching Type is required, the
	// others must be absent.
	OpenSearch *SinkOpenSearch `yaml:"opensearch"`
	Postgres   *SinkPostgres   `yaml:"postgres"`
	Redis      *SinkRedis      `yaml:"redis"`
	Webhook    *SinkWebhook    `yaml:"webhook"`
}

// SinkBatch bounds one write.
type SinkBatch struct {
	MaxRecords int      `yaml:"max_records"` // default 1000
	MaxBytes   ByteSize `yaml:"max_bytes"`   // default 5MiB
	// Linger is how long a batch waits to fill once its first record is
	// in (default 200ms; 0s: not at all).
	Linger *time.Duration `yaml:"linger"`
}

// SinkRetry is a backoff with full jitter: the n-th wait is random in
// [0, min(max, initial*2^n)).
type SinkRetry struct {
	Initial time.Duration `yaml:"initial"` // default 200ms
	Max     time.Duration `yaml:"max"`     // default 30s
}

// SinkOpenSearch writes documents to an OpenSearch index alias.
type SinkOpenSearch struct {
	URLs []string `yaml:"urls"`
	// Index is the alias readers query (default: the sink's name); the
	// documents live in generations <index>-g<N> behind it.
	Index    string `yaml:"index"`
	Username string `yaml:"username"`
	Password string `yaml:"password"`
	// RefreshInterval is how often OpenSearch makes what the sink wrote
	// visible to searches (index.refresh_interval) on every generation
	// (default: OpenSearch's own, 1s; 100ms to 1h). Shorter is fresher
	// and costs OpenSearch more work per write.
	RefreshInterval time.Duration `yaml:"refresh_interval"`
}

// SinkPostgres writes rows to a PostgreSQL table.
type SinkPostgres struct {
	DSN string `yaml:"dsn"`
	// Table is the table's name (default: the sink's name, with '-' and '.'
	// as '_'); readers use the view <table>_live.
	Table string `yaml:"table"`
}

// SinkRedis writes one hash per key.
type SinkRedis struct {
	Addr     string `yaml:"addr"`
	Username string `yaml:"username"`
	Password string `yaml:"password"`
	DB       int    `yaml:"db"`
	// KeyPrefix is prepended to every record key (default "product:").
	KeyPrefix string `yaml:"key_prefix"`
}

// SinkWebhook posts each record, signed per Standard Webhooks.
type SinkWebhook struct {
	URL string `yaml:"url"`
	// Secrets are whsec_ secrets; each request is signed with every one
	// (rotation).
	Secrets []string `yaml:"secrets"`
	// Timeout bounds one request (default 10s).
	Timeout time.Duration `yaml:"timeout"`
	// AllowPrivate lets the URL resolve to loopback and private addresses
	// (tests, local setups); default false.
	AllowPrivate bool `yaml:"allow_private"`
	// Concurrency is how many keys are posted at once (default 8); one key
	// has at most one request in flight.
	Concurrency int `yaml:"concurrency"`
}

var (
	indexPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,99}$`)
	tablePattern = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,39}$`)
)

// SinkTypes are the values sinks[].type accepts.
var SinkTypes = []string{"opensearch", "postgres", "redis", "webhook"}

// SinkSources are the values sinks[].from accepts.
var SinkSources = []string{"products", "updates", "changes", "collections", "categories", "options", "groups", "pos"}

// Sink defaults, applied by applyDefaults.
const (
	DefaultSinkFrom         = "products"
	DefaultSinkBatchRecords = 1000
	DefaultSinkBatchBytes   = 5 << 20
	DefaultSinkLinger       = 50 * time.Millisecond
	DefaultSinkRetryInitial = 200 * time.Millisecond
	DefaultSinkRetryMax     = 30 * time.Second
	DefaultRedisKeyPrefix   = "product:"
	DefaultWebhookTimeout   = 10 * time.Second
	DefaultWebhookParallel  = 8
)

// ByteSize is a size in bytes, written as a number or with a unit: 512KiB,
// 5MiB, 1GiB (also KB, MB, GB as the same powers of 1024).
type ByteSize int64

// UnmarshalText reads "5MiB", "1024" and the like.
func (b *ByteSize) UnmarshalText(text []byte) error {
	s := strings.TrimSpace(string(text))
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1 << 10}, {"MB", 1 << 20}, {"GB", 1 << 30}, {"B", 1}} {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > (1<<40)/mult {
		return fmt.Errorf("%q is not a size such as 5MiB", text)
	}
	*b = ByteSize(n * mult)
	return nil
}

// applySinkDefaults fills in the sinks' empty fields.
func (c *Config) applySinkDefaults() {
	for i := range c.Sinks {
		s := &c.Sinks[i]
		setDefault(&s.From, DefaultSinkFrom)
		setDefault(&s.Batch.MaxRecords, DefaultSinkBatchRecords)
		setDefault(&s.Batch.MaxBytes, DefaultSinkBatchBytes)
		setDefaultPtr(&s.Batch.Linger, DefaultSinkLinger)
		setDefault(&s.Retry.Initial, DefaultSinkRetryInitial)
		setDefault(&s.Retry.Max, DefaultSinkRetryMax)
		if o := s.OpenSearch; o != nil {
			setDefault(&o.Index, s.Name)
		}
		if p := s.Postgres; p != nil {
			setDefault(&p.Table, strings.NewReplacer("-", "_", ".", "_").Replace(s.Name))
		}
		if r := s.Redis; r != nil {
			setDefault(&r.KeyPrefix, DefaultRedisKeyPrefix)
		}
		if w := s.Webhook; w != nil {
			setDefault(&w.Timeout, DefaultWebhookTimeout)
			setDefault(&w.Concurrency, DefaultWebhookParallel)
		}
	}
}

// validateSinks checks the sinks section.
func (c *Config) validateSinks(errs *fieldErrors) {
	bad := errs.add
	seen := map[string]bool{}
	for i := range c.Sinks {
		s := &c.Sinks[i]
		f := fmt.Sprintf("sinks[%d]", i)
		switch {
		case !namePattern.MatchString(s.Name):
			bad(f+".name", "%q must be letters, digits, '.', '_' or '-'", s.Name)
		case seen[s.Name]:
			bad(f+".name", "%q is used twice", s.Name)
		}
		seen[s.Name] = true
		if !slices.Contains(SinkSources, s.From) {
			bad(f+".from", "%q is not one of %s", s.From, strings.Join(SinkSources, ", "))
		}
		if slices.Contains(s.Namespaces, "") {
			bad(f+".namespaces", "must not hold an empty namespace")
		}
		if s.Batch.MaxRecords < 1 {
			bad(f+".batch.max_records", "must be at least 1")
		}
		if s.Batch.MaxBytes < 1 {
			bad(f+".batch.max_bytes", "must be positive")
		}
		if *s.Batch.Linger < 0 {
			bad(f+".batch.linger", "must not be negative")
		}
		if s.Retry.Initial <= 0 || s.Retry.Max < s.Retry.Initial {
			bad(f+".retry", "initial must be positive and max at least initial")
		}
		s.validateBackend(f, errs)
	}
}

// validateBackend checks that exactly the section of s.Type is present, and
// its fields.
func (s *Sink) validateBackend(f string, errs *fieldErrors) {
	bad := errs.add
	present := map[string]bool{"opensearch": s.OpenSearch != nil, "postgres": s.Postgres != nil,
		"redis": s.Redis != nil, "webhook": s.Webhook != nil}
	if !slices.Contains(SinkTypes, s.Type) {
		bad(f+".type", "%q is not one of %s", s.Type, strings.Join(SinkTypes, ", "))
		return
	}
	for _, t := range SinkTypes {
		if t == s.Type && !present[t] {
			bad(f+"."+t, "is required for type %s", t)
		}
		if t != s.Type && present[t] {
			bad(f+"."+t, "does not go with type %s", s.Type)
		}
	}
	switch {
	case s.OpenSearch != nil:
		if len(s.OpenSearch.URLs) == 0 {
			bad(f+".opensearch.urls", "at least one URL is required")
		}
		for j, u := range s.OpenSearch.URLs {
			checkHTTPURL(fmt.Sprintf("%s.opensearch.urls[%d]", f, j), u, errs)
		}
		if !indexPattern.MatchString(s.OpenSearch.Index) {
			bad(f+".opensearch.index", "%q must be lower-case letters, digits, '_' or '-'", s.OpenSearch.Index)
		}
		if r := s.OpenSearch.RefreshInterval; r != 0 && (r < 100*time.Millisecond || r > time.Hour) {
			bad(f+".opensearch.refresh_interval", "%s: want 100ms to 1h (or unset: OpenSearch's default)", r)
		}
	case s.Postgres != nil:
		if s.Postgres.DSN == "" {
			bad(f+".postgres.dsn", "is required")
		}
		if !tablePattern.MatchString(s.Postgres.Table) {
			bad(f+".postgres.table", "%q must be lower-case letters, digits and '_', at most 40", s.Postgres.Table)
		}
	case s.Redis != nil:
		if s.Redis.Addr == "" {
			bad(f+".redis.addr", "is required (host:port)")
		}
	case s.Webhook != nil:
		checkHTTPURL(f+".webhook.url", s.Webhook.URL, errs)
		if len(s.Webhook.Secrets) == 0 {
			bad(f+".webhook.secrets", "at least one whsec_ secret is required")
		}
		for j, sec := range s.Webhook.Secrets {
			if !strings.HasPrefix(sec, "whsec_") || len(sec) < len("whsec_")+4 {
				bad(fmt.Sprintf("%s.webhook.secrets[%d]", f, j), "must be a whsec_ secret (base64 after the prefix)")
			}
		}
		if s.Webhook.Timeout <= 0 {
			bad(f+".webhook.timeout", "must be positive")
		}
		if s.Webhook.Concurrency < 1 {
			bad(f+".webhook.concurrency", "must be at least 1")
		}
	}
}

// checkHTTPURL records an error unless u is an absolute http(s) URL.
func checkHTTPURL(field, u string, errs *fieldErrors) {
	// The URL is not repeated in the message: it may carry a token.
	p, err := url.Parse(u)
	if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
		errs.add(field, "is not an absolute http(s) URL")
		return
	}
	if p.User != nil {
		errs.add(field, "must not carry credentials; use the username and password keys")
	}
}
