// Package processor consumes the changes topic in a consumer group, merges
// each change into its product's state, coalesces bursts on the wall clock
// (a quiet period, capped by a max delay), and writes the compacted products
// topic and the collapsed updates topic.
//
// Two delivery modes share that core (see deliveryMode):
//
//   - Exactly once (the default): each cycle runs in one Kafka transaction
//     that writes the outputs, the changes to the pending buffer's changelog
//     (<prefix><group>-pending, compacted), and the offsets of everything
//     consumed. A crash or an aborted transaction loses nothing and applies
//     nothing twice: the next owner restores products and the pending buffer
//     as of the last committed transaction. Readers use read_committed.
//   - At least once, for brokers without transactions: offsets are committed
//     only up to the first change whose product has not been written yet, so
//     nothing is lost. A change at or below a key's restored version is
//     skipped, so state never applies a change twice. But a crash between
//     writing and committing can repeat an update, and a product's state and
//     its update are not written atomically. Writes are pipelined: a key
//     counts as written once Kafka acknowledged its cycle, while later polls
//     are already being processed.
//
// In both modes every state and update carries the version of the last
// change applied: its offset, under the version epoch (Version), which only
// grows per key. Run refuses to start when changes went back behind the
// group's committed offsets (ErrChangesLost).
//
// The files follow the path of a change: loop.go (the cycle loop and the
// deliveryMode it drives), consume.go (decoding and applying a poll),
// dedupe.go (recognising a retry already applied), coalesce.go (when a key
// is due), state.go (merging), output.go (the records of due keys),
// exactlyonce.go and atleastonce.go (the two modes), rebalance.go
// (assignment, revoke, loss, leaving; Assigned and Ready), restore.go
// (reading state back), outage.go (riding out an outage of Kafka or of the
// schema registry: what is transient, back-off, recovering from a failed
// cycle), partitioner.go (where records land), metrics.go (the Prometheus
// collectors, built by NewMetrics).
package processor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kslog"

	"github.com/productstream/productstream/kafka"
	"github.com/productstream/productstream/schemas"
	"github.com/productstream/productstream/topics"
)

// Config configures a Processor. Brokers, Topics, Group, QuietPeriod,
// MaxDelay, Serde, MaxPendingKeys and MaxJSONDepth are required: New
// returns a *ConfigError naming the first one missing or out of range. The
// defaults of the settings an operator configures live in package config,
// which applies them once; New applies none of them.
type Config struct {
	Brokers []string
	// Security secures the connections of every Kafka client the
	// processor makes: TLS and SASL (kafka.NewSecurity). The zero value:
	// plaintext, no authentication.
	Security    kafka.Security
	Topics      topics.Names
	Group       string
	QuietPeriod time.Duration
	MaxDelay    time.Duration // at least QuietPeriod
	Serde       *schemas.Serde
	// Log receives the processor's logs (default slog.Default()).
	Log *slog.Logger
	// ExactlyOnce selects the transactional mode (see the package doc).
	ExactlyOnce bool
	// PendingJSON writes the pending changelog in the JSON form of
	// earlier versions, which read only that one, instead of the binary
	// form. Both forms are read either way.
	PendingJSON bool
	// MaxPendingKeys bounds the buffered keys; past it the keys closest to
	// their deadline are flushed early. Required (config's
	// processor.max_pending_keys).
	MaxPendingKeys int
	// MaxJSONDepth sends a change whose raw JSON nests deeper than this
	// to the dead letter topic, with ErrRawTooDeep, instead of merging it.
	// Required (config's processor.max_json_depth).
	MaxJSONDepth int
	// TopicSpec creates the pending changelog in exactly-once mode.
	TopicSpec topics.Spec
	// Compression is the codec of the batches the processor writes; the
	// zero value is lz4. Parse a configured name once, with
	// kafka.ParseCompression.
	Compression kafka.Compression
	// Dialer opens the connections of every Kafka client the processor
	// makes: the group member's and each restore's. nil: franz-go's
	// default (TCP, 10 s timeout). Tests pass kfake.VirtualNetwork's
	// DialContext to run on synctest's virtual time.
	Dialer func(ctx context.Context, network, addr string) (net.Conn, error)
	// Metrics are the collectors the processor counts on (NewMetrics).
	// nil: a private set that no registry exports, for a processor whose
	// metrics nobody reads (most tests); a role passes its own.
	Metrics *Metrics
	// VersionEpoch is placed above every offset in the versions the
	// processor writes (see Version); 0 to MaxEpoch. Raise it after the
	// changes topic was re-created. Config's processor.version_epoch.
	VersionEpoch int
	// DedupeEventIDs is how many of the changes applied to a key its
	// state remembers, so that a retry of one of them (the same event id
	// and raw, written again by another ingest replica) is neither merged
	// nor counted again; a retry of an older one is. 0 (the zero value)
	// remembers none. Config's processor.dedupe_event_ids.
	DedupeEventIDs int
	// RestoreIdle ends a partition's restore when a state topic has sent
	// nothing (and no error) for this long before its end offset was
	// reached: records at the end removed by compaction, which is rare
	// (Kafka never cleans the active segment). Default 30s: a broker that
	// stalls longer than this would cut a restore short, so generous.
	RestoreIdle time.Duration
	// InstanceID makes the member a static one (KIP-345): a member that
	// restarts with the same id takes its place in the group at once,
	// keeping its partitions, instead of waiting out the session of the
	// one that died. "" (the zero value): a dynamic member. Run leaves the
	// group explicitly when it returns, which franz-go does not do for a
	// static member. Config's processor.instance_id.
	InstanceID string
	// SessionTimeout is how long the group waits for a member that stopped
	// heartbeating before it gives its partitions to others (0: franz-go's
	// default, 45s). Config's processor.session_timeout.
	SessionTimeout time.Duration
	// CommitInterval paces the exactly-once mode: a transaction begins no
	// sooner than this after the one before it began. Until then the
	// loop does not poll, and what arrives waits in the client, so that a
	// steady trickle of changes costs the broker a few transactions a
	// second, each with more in it, instead of one per poll. It delays a
	// key by at most this, and only while transactions follow each other
	// closely: after a quiet spell the next one begins at once. 0 (the
	// zero value): a transaction per poll. At least once ignores it: its
	// writes are pipelined and cost no transactions. Config's
	// processor.commit_interval.
	CommitInterval time.Duration
}

// defaultRestoreIdle is Config.RestoreIdle's default. It is no operator
// setting, so this is its only place.
const defaultRestoreIdle = 30 * time.Second

// ConfigError is what New returns for a Config it cannot run with.
type ConfigError struct {
	Field string // the Config field, e.g. "MaxPendingKeys"
	Err   error  // what is wrong with it
}

func (e *ConfigError) Error() string { return fmt.Sprintf("processor: Config.%s: %v", e.Field, e.Err) }
func (e *ConfigError) Unwrap() error { return e.Err }

// Processor is one member of the processor consumer group. Build it with
// New, run it with Run.
type Processor struct {
	cfg     Config
	log     *slog.Logger
	pending string       // the pending changelog topic (exactly-once mode)
	eos     bool         // exactly-once mode: restore reads the pending changelog too
	mode    deliveryMode // set before the client exists, so rebalance callbacks may call it
	client  *kgo.Client  // the group member; the mode may wrap it (a GroupTransactSession)
	// memberOpts built client: the mode builds a new one from them when
	// the broker fenced the old one's producer (renew).
	memberOpts []kgo.Opt
	metrics    *Metrics
	now        func() time.Time

	mu      sync.Mutex // held by the loop while it processes, and by rebalance callbacks
	parts   map[int32]*partition
	co      *coalescer
	derived []*kgo.Record // derived changes to write this cycle
	dlq     []*kgo.Record // poison records to write this cycle
	forced  int64         // keys flushed early because of MaxPendingKeys
	fatalMu sync.Mutex
	fatalE  error // why the member left the group on its own; Run returns it

	rebalancing atomic.Bool  // a revoke or loss callback is waiting for mu or running
	owned       atomic.Int32 // len(parts) as of the last rebalance callback, for Assigned

	stateTopics map[string]string // resource ("" too) -> its state topic

	// Outages of the services the processor needs (outage.go).
	kafka, registry *outage
	// unrestored are owned partitions whose state was dropped after a
	// failed cycle and is not restored yet, each with the offset to
	// consume it from again (-1: where the client is). Run polls nothing
	// while there are any. Guarded by mu.
	unrestored map[int32]int64
	// schemaIDs are the writer schemas of changes the serde has resolved
	// (resolveSchemas). Run's goroutine only.
	schemaIDs map[int]bool
	// abortPending is set when a cycle failed, until the mode has aborted
	// what it left open; renewPending, when the broker fenced the
	// producer, until the mode has a new client. Guarded by mu.
	abortPending, renewPending bool
	// recovering is set from a failed cycle (or a clean abort) until its
	// partitions are restored; lastRead is when a broker last answered
	// the member, in Unix nanoseconds (brokerHooks).
	recovering atomic.Bool
	lastRead   atomic.Int64
	// Run's goroutine only: when to ask Kafka next whether it answers
	// again during an outage, after how many asks; how many times the
	// registry failed in a row.
	nextPing      time.Time
	pings         int
	registryTries int
	// nextCycle is when the loop may poll again (CommitInterval). Run's
	// goroutine only.
	nextCycle time.Time
	stopping  chan struct{} // closed once Run's context has ended
	stopOnce  sync.Once
}

// New validates cfg and builds the group member (it joins in Run).
func New(cfg Config) (*Processor, error) {
	if err := validate(&cfg); err != nil {
		return nil, err
	}
	p := newProcessor(cfg)
	// The member decompresses what it fetches into buffers of a pool of
	// its own, which the loop gets back by recycling each poll's records
	// once the cycle is done with them (see Run).
	decompress := kafka.NewDecompressPool()
	p.memberOpts = append(append(p.clientOptions(), p.groupOptions()...),
		kgo.WithPools(decompress), kgo.WithHooks(decompress),
		cfg.Compression.ProducerOpt(),
		kgo.ConsumerGroup(cfg.Group),
		kgo.ConsumeTopics(cfg.Topics.Changes),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.Balancers(kgo.CooperativeStickyBalancer()),
		kgo.OnPartitionsAssigned(p.assigned),
		kgo.OnPartitionsRevoked(p.revoked),
		kgo.OnPartitionsLost(p.lost),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.RecordPartitioner(pendingPartitioner{pending: p.pending, byKey: kgo.StickyKeyPartitioner(nil)}),
		kgo.ProducerLinger(5*time.Millisecond),
		// A produce right after EndTxn can meet CONCURRENT_TRANSACTIONS
		// while the broker writes the markers; franz-go retries after a
		// metadata refresh, which the default minimum age (5 s) would
		// hold back, stalling the loop for seconds.
		kgo.MetadataMinAge(250*time.Millisecond),
		// A member that stops heartbeating is noticed by the others at
		// their next heartbeat: at most a second, when one leaves.
		kgo.HeartbeatInterval(p.heartbeatInterval()),
		kgo.WithHooks(brokerHooks{p}),
	)
	var err error
	if p.client, err = p.mode.newClient(p.memberOpts); err != nil {
		return nil, err
	}
	return p, nil
}

// groupOptions are the group member's options that the configuration
// sets: the session timeout, and the instance id of a static member.
func (p *Processor) groupOptions() []kgo.Opt {
	var opts []kgo.Opt
	if p.cfg.SessionTimeout > 0 {
		opts = append(opts, kgo.SessionTimeout(p.cfg.SessionTimeout))
	}
	if p.cfg.InstanceID != "" {
		opts = append(opts, kgo.InstanceID(p.cfg.InstanceID))
	}
	return opts
}

// heartbeatInterval is a second, or a third of a shorter session timeout.
func (p *Processor) heartbeatInterval() time.Duration {
	if s := p.cfg.SessionTimeout; s > 0 && s/3 < time.Second {
		return s / 3
	}
	return time.Second
}

// setFatal records why the member is leaving the group on its own.
func (p *Processor) setFatal(err error) {
	p.fatalMu.Lock()
	defer p.fatalMu.Unlock()
	if p.fatalE == nil {
		p.fatalE = err
	}
}

// fatal is the error recorded by setFatal, if any.
func (p *Processor) fatal() error {
	p.fatalMu.Lock()
	defer p.fatalMu.Unlock()
	return p.fatalE
}

// newProcessor builds a Processor for a validated cfg, without its client.
func newProcessor(cfg Config) *Processor {
	p := &Processor{
		cfg:     cfg,
		log:     cfg.Log.With("component", "processor"),
		pending: cfg.Topics.Pending(cfg.Group),
		eos:     cfg.ExactlyOnce,
		metrics: cfg.Metrics,
		now:     time.Now,
		parts:   map[int32]*partition{},
		co:      newCoalescer(cfg.QuietPeriod, cfg.MaxDelay),

		stateTopics: cfg.Topics.Resources(),

		kafka:      newOutage("kafka", ErrKafkaUnreachable, cfg.Metrics.brokerUp, cfg.Log.With("component", "processor")),
		registry:   newOutage("schema registry", ErrRegistryUnreachable, cfg.Metrics.registryUp, cfg.Log.With("component", "processor")),
		unrestored: map[int32]int64{},
		schemaIDs:  map[int]bool{},
		stopping:   make(chan struct{}),
	}
	p.lastRead.Store(time.Now().UnixNano())
	p.stateTopics[""] = cfg.Topics.Products
	if cfg.ExactlyOnce {
		p.mode = newExactlyOnce(p)
	} else {
		p.mode = newAtLeastOnce(p)
	}
	return p
}

// clientOptions are the options every Kafka client of the processor
// starts from: the group member's, and restore's. Their retries back off
// as the processor's own (retryBackoff), so that a client rejoins the
// group within a couple of seconds of Kafka answering again.
func (p *Processor) clientOptions() []kgo.Opt {
	opts := kafka.Connection{Brokers: p.cfg.Brokers, Security: p.cfg.Security}.Options()
	opts = append(opts, kgo.RetryBackoffFn(retryBackoff), kgo.WithLogger(kgoLogger{kslog.New(p.cfg.Log.With("component", "kgo")), p.kafka}))
	if p.cfg.Dialer != nil {
		opts = append(opts, kgo.Dialer(p.cfg.Dialer))
	}
	return opts
}

// validate checks the required fields of cfg and fills in the defaults of
// the others (Log, RestoreIdle, Metrics).
func validate(cfg *Config) error {
	switch {
	case len(cfg.Brokers) == 0:
		return &ConfigError{"Brokers", errors.New("none given")}
	case cfg.Serde == nil:
		return &ConfigError{"Serde", errors.New("not set")}
	case cfg.Group == "":
		return &ConfigError{"Group", errors.New("empty")}
	case cfg.QuietPeriod <= 0:
		return &ConfigError{"QuietPeriod", fmt.Errorf("%s: want 0 < quiet period <= max delay (%s)", cfg.QuietPeriod, cfg.MaxDelay)}
	case cfg.MaxDelay < cfg.QuietPeriod:
		return &ConfigError{"MaxDelay", fmt.Errorf("%s: want quiet period (%s) <= max delay", cfg.MaxDelay, cfg.QuietPeriod)}
	case cfg.MaxPendingKeys <= 0:
		return &ConfigError{"MaxPendingKeys", fmt.Errorf("%d: want > 0 (config's processor.max_pending_keys has the default)", cfg.MaxPendingKeys)}
	case cfg.MaxJSONDepth <= 0:
		return &ConfigError{"MaxJSONDepth", fmt.Errorf("%d: want > 0 (config's processor.max_json_depth has the default)", cfg.MaxJSONDepth)}
	case cfg.VersionEpoch < 0 || cfg.VersionEpoch > MaxEpoch:
		return &ConfigError{"VersionEpoch", fmt.Errorf("%d: want 0 to %d", cfg.VersionEpoch, MaxEpoch)}
	case cfg.DedupeEventIDs < 0:
		return &ConfigError{"DedupeEventIDs", fmt.Errorf("%d: want >= 0 (0: off)", cfg.DedupeEventIDs)}
	case cfg.SessionTimeout < 0:
		return &ConfigError{"SessionTimeout", fmt.Errorf("%s: want >= 0 (0: franz-go's default)", cfg.SessionTimeout)}
	case cfg.CommitInterval < 0:
		return &ConfigError{"CommitInterval", fmt.Errorf("%s: want >= 0 (0: a transaction per poll)", cfg.CommitInterval)}
	}
	// A Compression that is no codec can only come from a conversion; its
	// name round-trips for every codec.
	if _, err := kafka.ParseCompression(cfg.Compression.String()); err != nil {
		return &ConfigError{"Compression", err}
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.RestoreIdle == 0 {
		cfg.RestoreIdle = defaultRestoreIdle
	}
	if cfg.Metrics == nil {
		cfg.Metrics = newMetrics()
	}
	return nil
}
