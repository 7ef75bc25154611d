// Package config reads productstream's application configuration: one YAML
// file, with ${ENV} references expanded, validated once at start with errors
// that name the offending field. The result is passed down explicitly; no
// package reads configuration on its own.
package config

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/productstream/productstream/jsondepth"
)

// Config is the whole application configuration.
type Config struct {
	Kafka          Kafka     `yaml:"kafka"`
	SchemaRegistry Registry  `yaml:"schema_registry"`
	HTTP           HTTP      `yaml:"http"`
	Sources        []Source  `yaml:"sources"`
	Processor      Processor `yaml:"processor"`
	Sinks          []Sink    `yaml:"sinks"`
	Ops            Ops       `yaml:"ops"`
	Console        Console   `yaml:"console"`
	Log            Log       `yaml:"log"`
	Runtime        Runtime   `yaml:"runtime"`
	Debug          Debug     `yaml:"debug"`

	// Deprecations name the deprecated keys the file used, each with its
	// replacement, for the role to log at start.
	Deprecations []string `yaml:"-"`
	// Path is the file Load read; "" for a configuration that Parse or
	// Demo made.
	Path string `yaml:"-"`
	// Files are the absolute paths of the ${file:PATH} references the
	// file made, sorted, for a role that reloads when one changes.
	Files []string `yaml:"-"`
}

// Ops configures the operations listener: /metrics, /healthz, /readyz and
// the profiler under /debug/pprof/, on an address of its own, never the
// public webhook listener's.
type Ops struct {
	// Listen is its host:port (default: none for ingest and process; dev
	// serves it on 127.0.0.1:9464). It exposes the process's internals, so
	// bind it to loopback or a private network.
	Listen string `yaml:"listen"`

	// from is the key Listen was read from, for errors to name: ops.listen
	// or a deprecated one.
	from string
}

// Kafka says where the brokers are and how productstream names and creates
// its topics.
type Kafka struct {
	// Brokers are the seed brokers; `dev` ignores them and uses its
	// embedded broker.
	Brokers []string `yaml:"brokers"`
	// TopicPrefix is prepended to every topic name (default "productstream.").
	TopicPrefix string `yaml:"topic_prefix"`
	// Partitions is the partition count of topics productstream creates
	// (default 12). Changes and state topics must agree on it, because a
	// key's state lives on the same partition number as its changes.
	Partitions int32 `yaml:"partitions"`
	// ReplicationFactor of created topics (default -1: the broker's default).
	ReplicationFactor int16 `yaml:"replication_factor"`
	// MinInsyncReplicas sets min.insync.replicas on every topic created
	// (default 0: the broker's default). With acks=all, a write is then
	// acknowledged only once this many replicas have it.
	MinInsyncReplicas int `yaml:"min_insync_replicas"`
	// Compression is the codec of every batch productstream writes: lz4
	// (the default), snappy, zstd, gzip or none. In the load harness a
	// plain franz-go consumer read lz4 batches about 1.9 times as fast as
	// snappy ones, ingest spent less CPU writing them, and the processor
	// was even.
	Compression string `yaml:"compression"`
	// ProduceTimeout bounds how long ingest waits for Kafka to acknowledge a
	// write before answering 503 (default 10s).
	ProduceTimeout time.Duration `yaml:"produce_timeout"`
	// TopicConfigs are extra topic configs, by topic family ("changes",
	// "products", "updates", "events", "dlq", "pending"), applied when
	// productstream creates a topic (the products family's apply to every
	// state topic):
	// for example min.insync.replicas, retention.ms, or segment.ms and
	// delete.retention.ms to tune compaction of products.
	TopicConfigs map[string]map[string]string `yaml:"topic_configs"`
	// TLS connects to the brokers over TLS (default: off).
	TLS KafkaTLS `yaml:"tls"`
	// SASL authenticates to the brokers (default: no mechanism, none).
	SASL SASL `yaml:"sasl"`
}

// Compressions are the codecs kafka.compression accepts.
var Compressions = []string{"lz4", "snappy", "zstd", "gzip", "none"}

// TopicFamilies are the keys TopicConfigs accepts.
var TopicFamilies = []string{"changes", "products", "updates", "events", "dlq", "pending", "deliveries", "audit"}

// Registry locates the Confluent-API schema registry.
type Registry struct {
	// URL of the registry; `dev` ignores it and uses its embedded registry.
	URL string `yaml:"url"`
	// TLS verifies an https registry (default: the system roots).
	TLS TLS `yaml:"tls"`
	// BasicAuth is sent with every request (default: none).
	BasicAuth *Credentials `yaml:"basic_auth"`
	// BearerToken is sent with every request as "Authorization: Bearer"
	// (default: none).
	BearerToken string `yaml:"bearer_token"`
	// BearerTokenFile holds the bearer token, read again for every
	// request, so whatever renews it is picked up (default: none).
	BearerTokenFile string `yaml:"bearer_token_file"`
}

// HTTP configures the ingest edge's listener.
type HTTP struct {
	// Listen is the host:port of the ingest server (default 127.0.0.1:8080).
	Listen string `yaml:"listen"`
	// ShutdownTimeout bounds graceful shutdown (default 15s).
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
	// DrainDelay is how long the edge goes on serving once told to stop,
	// with /readyz already answering "draining", before it stops accepting
	// connections: the time a load balancer needs to stop sending it new
	// requests (default 5s; 0s: stop accepting at once).
	DrainDelay *time.Duration `yaml:"drain_delay"`
	// ReadHeaderTimeout bounds reading a request's line and headers, from
	// its first byte (default 5s). A client still sending headers then is
	// disconnected (unanswered, or with a plain-text 400 when the cut falls
	// inside a header line).
	ReadHeaderTimeout time.Duration `yaml:"read_header_timeout"`
	// ReadTimeout bounds reading a whole request, headers and body, from its
	// first byte (default 15s: AWS SNS gives up on a delivery after 15s, so
	// no sender needs longer). A body still arriving then is cut off and
	// refused, and the connection closed.
	ReadTimeout time.Duration `yaml:"read_timeout"`
	// IdleTimeout closes a keep-alive connection that sends no next request
	// for this long (default 60s).
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// MaxConnections caps the connections open at once on the listener,
	// idle keep-alive ones included (default 1024). Further connections
	// wait in the kernel's accept queue, unread, until one closes.
	MaxConnections int `yaml:"max_connections"`
	// UnverifiedLimit is each client address's budget for requests refused
	// before their signature is verified (unknown source, missing or wrong
	// signature or credentials, body over the limit): past it, the address
	// is answered 429 before its body is read. Verified deliveries are
	// never charged, and forgeries never spend a source's rate_limit,
	// which only verified deliveries are charged. An IPv6 client is
	// charged by its /64. Default: 5 per second, bursts of 100.
	UnverifiedLimit RateLimit `yaml:"unverified_limit"`
	// TrustedProxies are the addresses or CIDR prefixes of proxies in front
	// of the edge whose X-Forwarded-For or X-Real-IP names the client
	// (default: none; the client is the connection's peer). Behind a load
	// balancer, name it here, or every client shares its address.
	TrustedProxies []string `yaml:"trusted_proxies"`
}

// TrustedPrefixes parses TrustedProxies, which Validate has checked: a
// bare address is a prefix of its full length.
func (h HTTP) TrustedPrefixes() ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(h.TrustedProxies))
	for i, s := range h.TrustedProxies {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			a, aerr := netip.ParseAddr(s)
			if aerr != nil {
				return nil, &FieldError{Field: fmt.Sprintf("http.trusted_proxies[%d]", i), Msg: fmt.Sprintf("%q is neither an address nor a CIDR prefix", s)}
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// Source is one configured sender: a provider contract plus its credentials.
type Source struct {
	// Name is unique; it names the route /webhooks/{name}.
	Name string `yaml:"name"`
	// Provider names the contract (for example "lisa").
	Provider string `yaml:"provider"`
	// ID is the provider-side identifier used in provider-compatible routes
	// (default: Name).
	ID string `yaml:"id"`
	// Namespace prefixes record keys "<namespace>:<productId>" (default: Name).
	Namespace string `yaml:"namespace"`
	// Secrets are the signing secrets; every one is accepted (rotation).
	// Which providers need them is checked by the provider.
	Secrets []string `yaml:"secrets"`
	// APIKeys are accepted API keys, for providers that send one.
	APIKeys []string `yaml:"api_keys"`
	// MaxBodyBytes caps the request body (default: the provider's limit).
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
	// RateLimit bounds the requests this source may send (default: none).
	RateLimit RateLimit `yaml:"rate_limit"`
	// BasicAuth, when set, is required on every request of the source (and
	// is what lets an SNS source accept raw message delivery).
	BasicAuth *BasicAuth `yaml:"basic_auth"`
	// DedupeWindow is how long an accepted delivery id is remembered, so a
	// retried delivery is answered without writing it again (default 10m;
	// negative: off).
	DedupeWindow time.Duration `yaml:"dedupe_window"`
	// Options are the provider's own settings, decoded strictly by the
	// provider when the source is built (package ingest): what each
	// provider takes is on its page in docs/. Null or absent: none.
	Options yaml.Node `yaml:"options"`
	// SNS configures a source delivered through AWS SNS (provider tipser).
	//
	// Deprecated: put these keys under Options; still read, with a
	// warning at start.
	SNS *SNS `yaml:"sns"`
	// HMAC configures the generic hmac provider.
	//
	// Deprecated: put these keys under Options; still read, with a
	// warning at start.
	HMAC *HMAC `yaml:"hmac"`
	// Payload says where the generic providers (hmac, standardwebhooks)
	// find the product id and the event type in the JSON body.
	//
	// Deprecated: put it under Options as options.payload; still read,
	// with a warning at start.
	Payload *Payload `yaml:"payload"`
	// MaxJSONDepth refuses (400) a payload whose objects and arrays nest
	// deeper than this ({} is 1 level); default 64, at most 10000.
	MaxJSONDepth int `yaml:"max_json_depth"`
}

// RateLimit is a token bucket: PerSecond requests on average, bursts of Burst.
type RateLimit struct {
	PerSecond float64 `yaml:"per_second"` // 0: unlimited
	Burst     int     `yaml:"burst"`      // default: max(1, PerSecond)
}

// BasicAuth is one accepted user; each password in Passwords is accepted
// (rotation).
type BasicAuth struct {
	Username  string   `yaml:"username"`
	Passwords []string `yaml:"passwords"`
}

// SNS configures verification of AWS SNS deliveries.
type SNS struct {
	// TopicARNs allowed to deliver to this source; anything else gets 403
	// and nothing is fetched. Required.
	TopicARNs []string `yaml:"topic_arns"`
	// SignatureVersions accepted (default ["1", "2"]). The topic owner, not
	// the receiver, picks the version, and Tipser's topics sign with "1"
	// (RSA-SHA1); set ["2"] once the topic signs with SHA-256.
	SignatureVersions []string `yaml:"signature_versions"`
	// Strict (default true) pins the certificate and subscribe host to
	// sns.<region of the topic>.amazonaws.com (.com.cn in aws-cn) and the
	// certificate path to /SimpleNotificationService-<hex>.pem. false
	// accepts the SNS host of any AWS region, sns.<region>.amazonaws.com[.cn],
	// and any .pem path; it never accepts an S3 bucket host.
	Strict *bool `yaml:"strict"`
	// MaxAge refuses messages whose Timestamp is older (default 1h: the
	// longest retry policy SNS allows for HTTP/S deliveries spans an hour).
	MaxAge time.Duration `yaml:"max_age"`
	// TrustedCertHosts replaces the AWS host rule for certificate and
	// subscribe URLs with these exact host[:port] values. For tests only.
	TrustedCertHosts []string `yaml:"trusted_cert_hosts"`
}

// HMAC configures the generic hmac provider: which header carries the
// signature, how it is encoded, and which bytes are signed.
type HMAC struct {
	Header   string `yaml:"header"`   // e.g. X-Shopify-Hmac-Sha256; required
	Encoding string `yaml:"encoding"` // hex (default) or base64
	Prefix   string `yaml:"prefix"`   // e.g. "sha256="; optional
	// Signed is "body" (default) or a template over {timestamp} and {body},
	// e.g. "{timestamp}.{body}", with TimestampHeader naming the header.
	Signed          string        `yaml:"signed"`
	TimestampHeader string        `yaml:"timestamp_header"`
	Tolerance       time.Duration `yaml:"tolerance"` // default 5m when a timestamp is signed
	// EventIDHeader names a header carrying the sender's delivery id
	// (e.g. X-Shopify-Webhook-Id), used to recognise retries.
	EventIDHeader string `yaml:"event_id_header"`
}

// Payload locates fields in a JSON body with JSON pointers (RFC 6901).
type Payload struct {
	IDPointer   string   `yaml:"id_pointer"`   // required, e.g. /id
	TypePointer string   `yaml:"type_pointer"` // optional, e.g. /type
	TypeHeader  string   `yaml:"type_header"`  // alternative: a header, e.g. X-Shopify-Topic
	DeleteTypes []string `yaml:"delete_types"` // event types that mean delete
	Resource    string   `yaml:"resource"`     // default "product"
}

// Processor configures the coalescing processor.
type Processor struct {
	// QuietPeriod: a product's update is emitted once no change has arrived
	// for this long (default 2s).
	QuietPeriod time.Duration `yaml:"quiet_period"`
	// MaxDelay: an update is emitted no later than this after the first
	// buffered change, however hot the product (default 30s).
	MaxDelay time.Duration `yaml:"max_delay"`
	// Group is the Kafka consumer group (default "productstream-processor").
	Group string `yaml:"group"`
	// ExactlyOnce writes outputs, the pending buffer and the consumed
	// offsets in one Kafka transaction (default true). Set it false for
	// brokers without transactions: at-least-once, see README.
	ExactlyOnce *bool `yaml:"exactly_once"`
	// CommitInterval: with exactly_once, a transaction begins no sooner
	// than this after the one before it began; changes arriving meanwhile
	// wait and go into the next one (default 25ms; 0: a transaction per
	// poll). It adds at most this to an update's latency, and only while
	// transactions follow each other closely, and saves the broker most
	// of the transactions of a steady trickle of changes.
	CommitInterval *time.Duration `yaml:"commit_interval"`
	// PendingFormat is the form the exactly-once pending changelog is
	// written in: binary (the default) or json, the form of earlier
	// versions, which read only that one. Both are always read. Set json
	// while a group upgraded from an earlier version may still have
	// members of that version, or before rolling back to one.
	PendingFormat string `yaml:"pending_format"`
	// MaxPendingKeys bounds the keys buffered at once; past it the keys
	// closest to their deadline are flushed early (default 1,000,000).
	MaxPendingKeys int `yaml:"max_pending_keys"`
	// Deprecated: MetricsListen is read as ops.listen when that is not
	// set, with a deprecation warning.
	MetricsListen string `yaml:"metrics_listen"`
	// MaxJSONDepth sends a change whose raw JSON nests deeper than this to
	// the dead letter topic instead of merging it (default 64, at most
	// 10000).
	MaxJSONDepth int `yaml:"max_json_depth"`
	// VersionEpoch is placed above every changes offset in the versions
	// the processor writes (version = epoch * 2^48 + offset), so raising it
	// keeps versions growing after the changes topic is re-created
	// (default 0; at most 32767).
	VersionEpoch int `yaml:"version_epoch"`
	// DedupeEventIDs is how many of the changes applied to a product (or
	// other resource) its state remembers, so that a retry of one that
	// another ingest replica wrote again is not merged or counted twice
	// (default 16, at most 256; 0: off).
	DedupeEventIDs *int `yaml:"dedupe_event_ids"`
	// InstanceID makes the process a static member of the group: restarted
	// with the same id, it takes its own place back at once instead of
	// waiting out the session of the one that died (default none: a
	// dynamic member). Unique per process, stable across its restarts,
	// such as "${POD_NAME}"; letters, digits, '.', '_' and '-'.
	InstanceID string `yaml:"instance_id"`
	// SessionTimeout is how long the group waits for a member that stopped
	// heartbeating before it gives its partitions to the others (default
	// 45s; 6s to 30m, the broker's default bounds).
	SessionTimeout time.Duration `yaml:"session_timeout"`
}

// Log configures what every role logs to stderr.
type Log struct {
	// Format is text (logfmt, the default) or json (one object per line).
	Format string `yaml:"format"`
	// Level is debug, info (the default), warn or error; a role's
	// --log-level flag overrides it.
	Level string `yaml:"level"`
}

// LogFormats are the formats log.format accepts.
func LogFormats() []string { return []string{"text", "json"} }

// validate checks the log section.
func (l *Log) validate(errs *fieldErrors) {
	if !slices.Contains(LogFormats(), l.Format) {
		errs.add("log.format", "%q is not one of %s", l.Format, strings.Join(LogFormats(), ", "))
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(l.Level)); err != nil {
		errs.add("log.level", "%q is not one of debug, info, warn, error", l.Level)
	}
}

// Debug is the former home of the profiling listener.
type Debug struct {
	// Deprecated: Listen is read as ops.listen when neither that nor
	// processor.metrics_listen is set, with a deprecation warning.
	Listen string `yaml:"listen"`
}

// Defaults applied by Parse to fields left empty (zero), all in one place:
// applyDefaults. docs/configuration.md states each one, and a test holds
// the two together. (A provider's own settings default in the provider.)
const (
	DefaultTopicPrefix       = "productstream."
	DefaultPartitions        = 12
	DefaultReplicationFactor = -1 // the broker's default
	DefaultProduceTimeout    = 10 * time.Second
	DefaultCompression       = "lz4"

	DefaultListen = "127.0.0.1:8080"
	// DefaultDevOpsListen is where `dev` serves the operations listener
	// when ops.listen is not set (the roles serve none by default).
	DefaultDevOpsListen = "127.0.0.1:9464"
	// DefaultDevConsoleListen is where dev serves the console when
	// console.listen is not set (other roles serve none by default).
	DefaultDevConsoleListen  = "127.0.0.1:9465"
	DefaultTimelineWindow    = 24 * time.Hour
	DefaultLogFormat         = "text"
	DefaultLogLevel          = "info"
	DefaultShutdownTimeout   = 15 * time.Second
	DefaultDrainDelay        = 5 * time.Second
	DefaultReadHeaderTimeout = 5 * time.Second
	// DefaultReadTimeout is AWS SNS's own limit: it gives up on an HTTP/S
	// delivery after 15s, so no sender needs longer.
	DefaultReadTimeout    = 15 * time.Second
	DefaultIdleTimeout    = 60 * time.Second
	DefaultMaxConnections = 1024
	// DefaultUnverifiedPerSecond and DefaultUnverifiedBurst are
	// http.unverified_limit's: generous for a sender whose credentials are
	// being fixed, cheap for the edge under a flood of forgeries.
	DefaultUnverifiedPerSecond = 5
	DefaultUnverifiedBurst     = 100

	DefaultDedupeWindow = 10 * time.Minute
	DefaultMaxJSONDepth = jsondepth.Default // sources[].max_json_depth and processor.max_json_depth
	DefaultSNSStrict    = true
	DefaultSNSMaxAge    = time.Hour

	DefaultQuietPeriod    = 2 * time.Second
	DefaultMaxDelay       = 30 * time.Second
	DefaultGroup          = "productstream-processor"
	DefaultExactlyOnce    = true
	DefaultPendingFormat  = "binary"
	DefaultMaxPendingKeys = 1_000_000
	DefaultDedupeEventIDs = 16
	DefaultSessionTimeout = 45 * time.Second
	DefaultCommitInterval = 25 * time.Millisecond
)

// MaxVersionEpoch is the highest processor.version_epoch: the epoch takes
// the bits of a version above the 48 of the offset.
const MaxVersionEpoch = 1<<15 - 1

// MaxDedupeEventIDs is the highest processor.dedupe_event_ids: each one
// remembered adds 16 bytes to every state and update record.
const MaxDedupeEventIDs = 256

// FieldError is a validation failure of one configuration field. Field is the
// path as it is written in the file, such as "sources[1].secrets".
type FieldError struct {
	Field string
	Msg   string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

// ErrMissingEnv surfaces from Parse when the file references an environment
// variable that is not set.
var ErrMissingEnv = errors.New("environment variable not set")

// Load reads, expands, parses and defaults the file at path. It does not
// validate: call Validate with the role's needs.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	cfg, err := Parse(data, os.LookupEnv)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	cfg.Path = path
	return cfg, nil
}

// ref is a reference in a value: ${NAME}, an environment variable
// (submatch 2), or ${file:PATH}, a file's content (submatch 1).
var ref = regexp.MustCompile(`\$\{(?:file:([^}]*)|([A-Za-z_][A-Za-z0-9_]*))\}`)

// Parse expands the references in values (comments are left alone): ${NAME}
// with lookup, and ${file:PATH} with the file's content (readFileRef). It
// then decodes the YAML strictly (unknown keys are errors) and fills in
// defaults. A file that cannot be read is a *FileRefError naming the key
// and the path. What a reference expands to is not expanded again.
func Parse(data []byte, lookup func(string) (string, bool)) (*Config, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("parse yaml: %w", err)
	}
	var missing []string
	var unread []error
	files := map[string]bool{}
	expand(&doc, "", func(key string, m []string) string {
		if name := m[2]; name != "" {
			v, ok := lookup(name)
			if !ok {
				missing = append(missing, name)
			}
			return v
		}
		path := m[1]
		files[path] = true
		v, err := readFileRef(path)
		if err != nil {
			unread = append(unread, &FileRefError{Key: key, Path: path, Err: err})
		}
		return v
	})
	if len(missing) > 0 {
		unread = append([]error{fmt.Errorf("%w: %s", ErrMissingEnv, strings.Join(missing, ", "))}, unread...)
	}
	if len(unread) > 0 {
		return nil, errors.Join(unread...)
	}
	var cfg Config
	if len(doc.Content) > 0 {
		expanded, err := yaml.Marshal(&doc)
		if err != nil {
			return nil, fmt.Errorf("parse yaml: %w", err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(expanded))
		dec.KnownFields(true)
		if err := dec.Decode(&cfg); err != nil {
			return nil, fmt.Errorf("parse yaml: %w", err)
		}
	}
	cfg.applyDefaults()
	cfg.Files = slices.Sorted(maps.Keys(files))
	return &cfg, nil
}

// expand replaces every reference in the scalars below n, at the key at
// ("sources[0].secrets[1]"), with what value returns for the key and the
// reference's submatches.
func expand(n *yaml.Node, at string, value func(key string, m []string) string) {
	switch n.Kind {
	case yaml.ScalarNode:
		if strings.Contains(n.Value, "${") {
			n.Value = ref.ReplaceAllStringFunc(n.Value, func(r string) string {
				return value(at, ref.FindStringSubmatch(r))
			})
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			key := n.Content[i].Value
			expand(n.Content[i], at, value)
			if at != "" {
				key = at + "." + key
			}
			expand(n.Content[i+1], key, value)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			expand(c, fmt.Sprintf("%s[%d]", at, i), value)
		}
	default:
		for _, c := range n.Content {
			expand(c, at, value)
		}
	}
}

// applyDefaults fills in every field left empty with its Default
// constant. It is the only place defaults are set; Parse and Demo call it
// once.
func (c *Config) applyDefaults() {
	c.foldOps()
	setDefault(&c.Kafka.TopicPrefix, DefaultTopicPrefix)
	setDefault(&c.Kafka.Partitions, DefaultPartitions)
	setDefault(&c.Kafka.ReplicationFactor, DefaultReplicationFactor)
	setDefault(&c.Kafka.ProduceTimeout, DefaultProduceTimeout)
	setDefault(&c.Kafka.Compression, DefaultCompression)

	setDefault(&c.HTTP.Listen, DefaultListen)
	setDefault(&c.HTTP.ShutdownTimeout, DefaultShutdownTimeout)
	setDefaultPtr(&c.HTTP.DrainDelay, DefaultDrainDelay)
	setDefault(&c.HTTP.ReadHeaderTimeout, DefaultReadHeaderTimeout)
	setDefault(&c.HTTP.ReadTimeout, DefaultReadTimeout)
	setDefault(&c.HTTP.IdleTimeout, DefaultIdleTimeout)
	setDefault(&c.HTTP.MaxConnections, DefaultMaxConnections)
	setDefault(&c.HTTP.UnverifiedLimit.PerSecond, DefaultUnverifiedPerSecond)
	setDefault(&c.HTTP.UnverifiedLimit.Burst, DefaultUnverifiedBurst)

	for i := range c.Sources {
		s := &c.Sources[i]
		setDefault(&s.ID, s.Name)
		setDefault(&s.Namespace, s.Name)
		setDefault(&s.DedupeWindow, DefaultDedupeWindow)
		if s.RateLimit.PerSecond > 0 {
			setDefault(&s.RateLimit.Burst, max(1, int(s.RateLimit.PerSecond)))
		}
		if s.SNS != nil {
			setDefaultPtr(&s.SNS.Strict, DefaultSNSStrict)
			setDefault(&s.SNS.MaxAge, DefaultSNSMaxAge)
		}
		setDefault(&s.MaxJSONDepth, DefaultMaxJSONDepth)
	}

	setDefault(&c.Processor.QuietPeriod, DefaultQuietPeriod)
	setDefault(&c.Processor.MaxDelay, DefaultMaxDelay)
	setDefault(&c.Processor.Group, DefaultGroup)
	setDefaultPtr(&c.Processor.ExactlyOnce, DefaultExactlyOnce)
	setDefault(&c.Processor.PendingFormat, DefaultPendingFormat)
	setDefault(&c.Processor.MaxPendingKeys, DefaultMaxPendingKeys)
	setDefault(&c.Processor.MaxJSONDepth, DefaultMaxJSONDepth)
	setDefaultPtr(&c.Processor.DedupeEventIDs, DefaultDedupeEventIDs)
	setDefault(&c.Processor.SessionTimeout, DefaultSessionTimeout)
	setDefaultPtr(&c.Processor.CommitInterval, DefaultCommitInterval)
	c.applySinkDefaults()
	setDefault(&c.Console.TimelineWindow, DefaultTimelineWindow)
	setDefault(&c.Log.Format, DefaultLogFormat)
	setDefault(&c.Log.Level, DefaultLogLevel)
}

// setDefault sets *field to def when it holds its zero value.
func setDefault[T comparable](field *T, def T) {
	var zero T
	if *field == zero {
		*field = def
	}
}

// setDefaultPtr points a nil *field at a copy of def: for the booleans whose
// default is true, where an absent key and false must differ.
func setDefaultPtr[T any](field **T, def T) {
	if *field == nil {
		*field = &def
	}
}

// Needs says which external services a role requires to be configured.
type Needs struct {
	Brokers  bool // kafka.brokers must be set (not for `dev`)
	Registry bool // schema_registry.url must be set (not for `dev`)
	Sources  bool // at least one source (the ingest role)
}

var namePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

// Validate checks the configuration and returns every problem found, each
// a *FieldError, joined. Each section checks its own fields.
func (c *Config) Validate(n Needs) error {
	var errs fieldErrors
	c.Kafka.validate(n, &errs)
	c.SchemaRegistry.validate(n, &errs)
	c.HTTP.validate(&errs)
	c.validateSources(n, &errs)
	c.Processor.validate(&errs)
	c.validateSinks(&errs)
	c.Ops.validate(&errs) // debug.listen and processor.metrics_listen are folded into it
	c.Console.validate(&errs)
	c.Log.validate(&errs)
	c.Runtime.validate(&errs)
	return errors.Join(errs...)
}

// fieldErrors collects a section's validation failures.
type fieldErrors []error

// add records a *FieldError for field.
func (e *fieldErrors) add(field, format string, args ...any) {
	*e = append(*e, &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)})
}

// validate checks the kafka section.
func (k *Kafka) validate(n Needs, errs *fieldErrors) {
	bad := errs.add
	if n.Brokers && len(k.Brokers) == 0 {
		bad("kafka.brokers", "at least one broker is required")
	}
	for i, b := range k.Brokers {
		if !strings.Contains(b, ":") {
			bad(fmt.Sprintf("kafka.brokers[%d]", i), "%q is not host:port", b)
		}
	}
	if !namePattern.MatchString(k.TopicPrefix) {
		bad("kafka.topic_prefix", "%q may hold only letters, digits, '.', '_' and '-'", k.TopicPrefix)
	}
	if k.Partitions < 1 {
		bad("kafka.partitions", "must be at least 1, got %d", k.Partitions)
	}
	if k.ReplicationFactor < -1 || k.ReplicationFactor == 0 {
		bad("kafka.replication_factor", "must be -1 (broker default) or at least 1, got %d", k.ReplicationFactor)
	}
	if !slices.Contains(Compressions, k.Compression) {
		bad("kafka.compression", "unknown codec %q (want one of %v)", k.Compression, Compressions)
	}
	if k.MinInsyncReplicas < 0 || k.ReplicationFactor > 0 && k.MinInsyncReplicas > int(k.ReplicationFactor) {
		bad("kafka.min_insync_replicas", "must be 0 (broker default) or between 1 and replication_factor, got %d", k.MinInsyncReplicas)
	}
	for family, cfgs := range k.TopicConfigs {
		if !slices.Contains(TopicFamilies, family) {
			bad("kafka.topic_configs."+family, "unknown topic family (want one of %v)", TopicFamilies)
		}
		if family == "products" && cfgs["cleanup.policy"] != "" && cfgs["cleanup.policy"] != "compact" {
			bad("kafka.topic_configs.products.cleanup.policy", "must stay compact: products holds the latest state per key")
		}
	}
	if k.ProduceTimeout < time.Second {
		bad("kafka.produce_timeout", "must be at least 1s, got %s", k.ProduceTimeout)
	}
	k.validateSecurity(errs)
}

// validate checks the schema_registry section, which only roles that talk
// to a registry of their own need.
func (r *Registry) validate(n Needs, errs *fieldErrors) {
	r.validateSecurity(errs)
	if !n.Registry {
		return
	}
	if r.URL == "" {
		errs.add("schema_registry.url", "is required")
	} else if !strings.HasPrefix(r.URL, "http://") && !strings.HasPrefix(r.URL, "https://") {
		errs.add("schema_registry.url", "%q must be an http or https URL", r.URL)
	}
}

// validate checks the http section.
func (h *HTTP) validate(errs *fieldErrors) {
	bad := errs.add
	if !strings.Contains(h.Listen, ":") {
		bad("http.listen", "%q is not host:port", h.Listen)
	}
	if h.ReadHeaderTimeout <= 0 {
		bad("http.read_header_timeout", "must be positive, got %s", h.ReadHeaderTimeout)
	}
	if h.ReadTimeout <= 0 {
		bad("http.read_timeout", "must be positive, got %s", h.ReadTimeout)
	} else if h.ReadHeaderTimeout > h.ReadTimeout {
		bad("http.read_header_timeout", "(%s) must not be longer than http.read_timeout (%s), which bounds the headers too", h.ReadHeaderTimeout, h.ReadTimeout)
	}
	if l := h.UnverifiedLimit; l.PerSecond <= 0 || l.Burst <= 0 {
		bad("http.unverified_limit", "per_second and burst must be positive, got %v and %d", l.PerSecond, l.Burst)
	}
	if _, err := h.TrustedPrefixes(); err != nil {
		*errs = append(*errs, err)
	}
	if h.IdleTimeout <= 0 {
		bad("http.idle_timeout", "must be positive, got %s", h.IdleTimeout)
	}
	if h.DrainDelay != nil && *h.DrainDelay < 0 {
		bad("http.drain_delay", "must not be negative, got %s", *h.DrainDelay)
	}
	if h.MaxConnections <= 0 {
		bad("http.max_connections", "must be positive, got %d", h.MaxConnections)
	}
}

// validateSources checks the sources list and what every source has in
// common; what a provider needs of its own source is checked by the
// provider when the sources are built.
func (c *Config) validateSources(n Needs, errs *fieldErrors) {
	bad := errs.add
	if n.Sources && len(c.Sources) == 0 {
		bad("sources", "at least one source is required")
	}
	names := map[string]int{}
	ids := map[string]int{}
	for i, s := range c.Sources {
		f := fmt.Sprintf("sources[%d]", i)
		switch {
		case s.Name == "":
			bad(f+".name", "is required")
		case !namePattern.MatchString(s.Name):
			bad(f+".name", "%q may hold only letters, digits, '.', '_' and '-'", s.Name)
		default:
			if j, dup := names[s.Name]; dup {
				bad(f+".name", "%q is already used by sources[%d]", s.Name, j)
			}
			names[s.Name] = i
		}
		if s.Provider == "" {
			bad(f+".provider", "is required")
		}
		pid := s.Provider + "/" + s.ID
		if j, dup := ids[pid]; dup && s.ID != "" {
			bad(f+".id", "%q is already used by sources[%d] of the same provider", s.ID, j)
		}
		ids[pid] = i
		if strings.Contains(s.Namespace, ":") {
			bad(f+".namespace", "%q must not contain ':' (it separates namespace and id in keys)", s.Namespace)
		}
		for k, sec := range s.Secrets {
			if sec == "" {
				bad(fmt.Sprintf("%s.secrets[%d]", f, k), "is empty")
			}
		}
		for k, key := range s.APIKeys {
			if key == "" {
				bad(fmt.Sprintf("%s.api_keys[%d]", f, k), "is empty")
			}
		}
		if s.MaxBodyBytes < 0 {
			bad(f+".max_body_bytes", "must not be negative")
		}
		if s.MaxJSONDepth < 0 || s.MaxJSONDepth > jsondepth.Max {
			bad(f+".max_json_depth", "must be between 1 and %d (0: the default, %d), got %d", jsondepth.Max, jsondepth.Default, s.MaxJSONDepth)
		}
		if s.RateLimit.PerSecond < 0 || s.RateLimit.Burst < 0 {
			bad(f+".rate_limit", "must not be negative")
		}
		if s.BasicAuth != nil && (s.BasicAuth.Username == "" || len(s.BasicAuth.Passwords) == 0 || slices.Contains(s.BasicAuth.Passwords, "")) {
			bad(f+".basic_auth", "needs a username and non-empty passwords")
		}
	}
}

// validate checks the processor section.
func (p *Processor) validate(errs *fieldErrors) {
	bad := errs.add
	if p.QuietPeriod <= 0 {
		bad("processor.quiet_period", "must be positive")
	}
	if p.MaxPendingKeys < 0 {
		bad("processor.max_pending_keys", "must not be negative")
	}
	if p.MaxJSONDepth < 0 || p.MaxJSONDepth > jsondepth.Max {
		bad("processor.max_json_depth", "must be between 1 and %d (0: the default, %d), got %d", jsondepth.Max, jsondepth.Default, p.MaxJSONDepth)
	}
	if p.VersionEpoch < 0 || p.VersionEpoch > MaxVersionEpoch {
		bad("processor.version_epoch", "must be between 0 and %d, got %d", MaxVersionEpoch, p.VersionEpoch)
	}
	if n := p.DedupeEventIDs; n != nil && (*n < 0 || *n > MaxDedupeEventIDs) {
		bad("processor.dedupe_event_ids", "must be between 0 and %d (0: off), got %d", MaxDedupeEventIDs, *n)
	}
	if p.MaxDelay < p.QuietPeriod {
		bad("processor.max_delay", "(%s) must not be shorter than processor.quiet_period (%s)", p.MaxDelay, p.QuietPeriod)
	}
	if id := p.InstanceID; id != "" && (len(id) > 249 || !instanceIDPattern.MatchString(id)) {
		bad("processor.instance_id", "%q: at most 249 letters, digits, '.', '_' and '-'", id)
	}
	if t := p.SessionTimeout; t < MinSessionTimeout || t > MaxSessionTimeout {
		bad("processor.session_timeout", "must be between %s and %s, got %s", MinSessionTimeout, MaxSessionTimeout, t)
	}
	if t := p.CommitInterval; t != nil && (*t < 0 || *t > MaxCommitInterval) {
		bad("processor.commit_interval", "must be between 0 and %s (0: a transaction per poll), got %s", MaxCommitInterval, *t)
	}
	if f := p.PendingFormat; f != "binary" && f != "json" {
		bad("processor.pending_format", "%q: want binary or json", f)
	}
}

// MaxCommitInterval bounds processor.commit_interval: far below the
// transaction timeout, and longer than any update should wait for it.
const MaxCommitInterval = time.Second

// instanceIDPattern is what a group.instance.id may hold.
var instanceIDPattern = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)

// MinSessionTimeout and MaxSessionTimeout bound processor.session_timeout:
// the broker's default group.min.session.timeout.ms and
// group.max.session.timeout.ms, outside which it refuses the member.
const (
	MinSessionTimeout = 6 * time.Second
	MaxSessionTimeout = 30 * time.Minute
)

// validate checks the ops section.
func (o *Ops) validate(errs *fieldErrors) {
	if a := o.Listen; a != "" {
		if _, _, err := net.SplitHostPort(a); err != nil {
			errs.add(cmp.Or(o.from, "ops.listen"), "%q is not host:port", a)
		}
	}
}

// foldOps takes the deprecated homes of the operations listener,
// processor.metrics_listen and then debug.listen, as ops.listen when that
// is not set, and notes each one used.
func (c *Config) foldOps() {
	for _, old := range []struct{ key, addr string }{
		{"processor.metrics_listen", c.Processor.MetricsListen},
		{"debug.listen", c.Debug.Listen},
	} {
		if old.addr == "" {
			continue
		}
		note := old.key + " is deprecated: use ops.listen, which serves /metrics, /healthz, /readyz and /debug/pprof/"
		if c.Ops.Listen == "" {
			c.Ops.Listen, c.Ops.from = old.addr, old.key
		} else if c.Ops.Listen != old.addr {
			note += fmt.Sprintf(" (ignored: ops.listen is %s)", c.Ops.Listen)
		}
		c.Deprecations = append(c.Deprecations, note)
	}
}

// Demo secrets of the built-in `dev` configuration. They are public (README
// names them) and for local use only.
const (
	DemoSource = "lisa-demo"
	DemoID     = "demo-plugin"
	DemoSecret = "demo-secret"
	DemoAPIKey = "demo-key"
)

// Demo is the configuration `dev` uses without --config: one LiSA source with
// public demo credentials.
func Demo() *Config {
	c := &Config{
		Sources: []Source{{
			Name:     DemoSource,
			Provider: "lisa",
			ID:       DemoID,
			Secrets:  []string{DemoSecret},
			APIKeys:  []string{DemoAPIKey},
		}},
	}
	c.applyDefaults()
	return c
}
