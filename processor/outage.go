package processor

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr"
	"github.com/twmb/franz-go/plugin/kslog"

	"github.com/productstream/productstream/kafka"
	"github.com/productstream/productstream/schemas"
)

// ErrKafkaUnreachable is what Ready returns, wrapped, while the processor
// cannot reach Kafka: from the first failed transaction, write, commit,
// restore or group session until Kafka answers again.
var ErrKafkaUnreachable = errors.New("kafka unreachable")

// ErrRegistryUnreachable is what Ready returns, wrapped, while the schema
// registry does not answer for a writer schema the processor has not seen
// yet: the changes written with it wait until it answers.
var ErrRegistryUnreachable = errors.New("schema registry unreachable")

// outage follows whether one service the processor depends on is
// reachable. It logs the start of an outage once, at warn, and its end once,
// at info, with how long it lasted, and sets its gauge to 0 meanwhile. Safe
// for concurrent use.
type outage struct {
	name     string // "kafka" or "schema registry", for the logs
	sentinel error  // ErrKafkaUnreachable or ErrRegistryUnreachable
	up       prometheus.Gauge
	log      *slog.Logger

	mu    sync.Mutex
	since time.Time // zero while reachable
	cause error     // the failure that began the outage
	ended time.Time // when the last outage ended
	quiet bool      // this outage began soon after the last: logged at debug
}

// flapping is how soon after an outage ended another one is logged at
// debug only: a service that comes and goes logs at most one warning and
// one info line in that long.
const flapping = 30 * time.Second

func newOutage(name string, sentinel error, up prometheus.Gauge, log *slog.Logger) *outage {
	up.Set(1)
	return &outage{name: name, sentinel: sentinel, up: up, log: log}
}

// fail notes a failure that a transient outage explains. The first one
// since the service was last reachable begins the outage.
func (o *outage) fail(err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.since.IsZero() {
		o.log.Debug(o.name+" still unreachable", "err", err)
		return
	}
	o.since, o.cause = time.Now(), err
	o.up.Set(0)
	level := slog.LevelWarn
	if o.quiet = !o.ended.IsZero() && time.Since(o.ended) < flapping; o.quiet {
		level = slog.LevelDebug
	}
	o.log.Log(context.Background(), level, o.name+" unreachable: processing paused until it answers", "err", err)
}

// ok notes that the service answered, which ends an outage.
func (o *outage) ok() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.since.IsZero() {
		return
	}
	level := slog.LevelInfo
	if o.quiet {
		level = slog.LevelDebug
	}
	o.log.Log(context.Background(), level, o.name+" answers again: processing resumed", "outage", time.Since(o.since).Round(time.Millisecond), "cause", o.cause)
	o.since, o.cause, o.ended = time.Time{}, nil, time.Now()
	o.up.Set(1)
}

// down reports whether an outage is going on.
func (o *outage) down() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return !o.since.IsZero()
}

// err is Ready's error during an outage, else nil.
func (o *outage) err() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.since.IsZero() {
		return nil
	}
	return fmt.Errorf("%w for %s: %v", o.sentinel, time.Since(o.since).Round(time.Second), o.cause)
}

// Backoff between attempts to get going again after a failure: from
// minBackoff, doubling, up to maxBackoff, each within ±20 % at random, so
// that the members of a group do not retry in step. The ceiling is low so
// that processing resumes within a few seconds of Kafka answering again:
// franz-go's own retries (the group's rejoin, the writes waiting for the
// broker) use the same backoff (clientOptions), and a few of them follow
// one another before the first record is written. A member asks a broker
// that does not answer about once a second.
const (
	minBackoff = 250 * time.Millisecond
	maxBackoff = time.Second
)

// retryBackoff is the wait before attempt tries (from 1).
func retryBackoff(tries int) time.Duration {
	d := maxBackoff
	if tries < 6 {
		d = min(minBackoff<<max(tries-1, 0), maxBackoff)
	}
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}

// sleep waits for d, or until ctx ends; it reports whether ctx is still
// live.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// permanent reports whether err is one that no retry mends, so Run
// returns it: changes lost behind the committed state, credentials or
// authorizations the broker refuses, a certificate not trusted, a closed
// client, a record our own code cannot encode. Everything else (a broker
// or registry that does not answer, a transaction the broker aborted, a
// group session lost) is transient: the processor backs off, restores what
// was committed and carries on.
func permanent(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	if errors.Is(err, ErrChangesLost) || errors.Is(err, kgo.ErrClientClosed) || errors.Is(err, errEncode) {
		return true
	}
	if _, ok := errors.AsType[*kafka.SecurityError](err); ok {
		return true
	}
	if _, ok := errors.AsType[*kafka.TokenError](err); ok {
		return true
	}
	if _, ok := errors.AsType[*tls.CertificateVerificationError](err); ok {
		return true
	}
	if _, ok := errors.AsType[x509.UnknownAuthorityError](err); ok {
		return true
	}
	for _, ke := range []*kerr.Error{
		kerr.SaslAuthenticationFailed, kerr.IllegalSaslState, kerr.UnsupportedSaslMechanism,
		kerr.TopicAuthorizationFailed, kerr.GroupAuthorizationFailed, kerr.ClusterAuthorizationFailed,
		kerr.TransactionalIDAuthorizationFailed, kerr.DelegationTokenAuthorizationFailed,
	} {
		if errors.Is(err, ke) {
			return true
		}
	}
	return false
}

// errEncode marks a record the processor could not encode: its own
// doing, which a retry would only repeat.
var errEncode = errors.New("encode")

// unreachable reports whether err says that Kafka did not answer: a
// connection refused, reset or timed out, or a group session that ended
// for such a reason. Run counts the outage from such an error.
func unreachable(err error) bool {
	if err == nil || permanent(err) {
		return false
	}
	if _, ok := errors.AsType[*net.OpError](err); ok {
		return true
	}
	return kgo.IsRetryableBrokerErr(err) || errors.Is(err, context.DeadlineExceeded)
}

// registryDown reports whether err, from decoding a change, says the
// schema registry did not answer (a connection refused, a timeout, a 5xx
// or 429), rather than that it does not know the writer schema (404): the
// record waits until it answers, instead of going to the dead letter
// topic.
func registryDown(err error) bool {
	if err == nil {
		return false
	}
	if re, ok := errors.AsType[*sr.ResponseError](err); ok {
		return re.StatusCode >= 500 || re.StatusCode == 429 || re.StatusCode == 408
	}
	if _, ok := errors.AsType[*net.OpError](err); ok {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, context.DeadlineExceeded)
}

// brokerHooks tell the processor, from its group member's connections,
// that no broker answers: a connection that cannot be made while no
// response has arrived for brokerSilence. A cycle waiting on Kafka would
// tell only once it gives up. (A broker that accepts connections and
// answers nothing, frozen or cut off, is watch's.)
type brokerHooks struct{ p *Processor }

// brokerSilence is how long without a response from any broker makes the
// processor ask whether Kafka answers. The member hears from the broker at
// least every heartbeat (a second) while it answers.
const brokerSilence = 3 * time.Second

// watch asks Kafka, through the client probe, whether it answers when no
// broker has answered the member for brokerSilence, and counts an outage
// from when it does not, until ctx ends. It runs beside the loop, which
// may be waiting on Kafka itself.
func (p *Processor) watch(ctx context.Context, probe *kgo.Client) {
	t := time.NewTicker(brokerSilence / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if p.kafka.down() || time.Since(time.Unix(0, p.lastRead.Load())) < brokerSilence {
			continue // the loop asks during an outage
		}
		pctx, cancel := context.WithTimeout(ctx, 2*maxBackoff)
		err := probe.Ping(pctx)
		cancel()
		if err != nil && ctx.Err() == nil {
			p.kafka.fail(fmt.Errorf("no broker answered for %s: %w", brokerSilence, err))
		}
	}
}

func (h brokerHooks) OnBrokerConnect(_ kgo.BrokerMetadata, _ time.Duration, _ net.Conn, err error) {
	if err != nil && time.Since(time.Unix(0, h.p.lastRead.Load())) > brokerSilence {
		h.p.kafka.fail(fmt.Errorf("no broker answers: %w", err))
	}
}

func (h brokerHooks) OnBrokerRead(_ kgo.BrokerMetadata, _ int16, _ int, _, _ time.Duration, err error) {
	if err == nil {
		h.p.lastRead.Store(time.Now().UnixNano())
	}
}

// kgoLogger is franz-go's logger for the processor's clients: its warnings
// and errors, as package kafka logs them (its info too at debug level),
// except during an outage of Kafka, which the processor logs once: then
// franz-go's warnings about it, every retry, go to debug.
type kgoLogger struct {
	*kslog.Logger
	kafka *outage
}

func (l kgoLogger) Level() kgo.LogLevel {
	if lv := l.Logger.Level(); lv != kgo.LogLevelDebug {
		return min(lv, kgo.LogLevelWarn)
	}
	return kgo.LogLevelDebug
}

func (l kgoLogger) Log(level kgo.LogLevel, msg string, kv ...any) {
	if level != kgo.LogLevelNone && level <= kgo.LogLevelWarn && l.kafka.down() {
		level = kgo.LogLevelDebug
	}
	l.Logger.Log(level, msg, kv...)
}

// answered notes that Kafka answered: it ends an outage, unless a failed
// cycle is still being recovered from (recover ends it then).
func (p *Processor) answered() {
	if !p.recovering.Load() {
		p.kafka.ok()
	}
}

// mustRecover reports whether owned partitions wait to be restored after
// a failed cycle, because their restore failed too.
func (p *Processor) mustRecover() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.unrestored) > 0 || p.abortPending
}

// recover gets the member going again after a cycle failed with the
// transient error cause (nil: after a restore that failed): it backs off
// with jitter until Kafka answers, has the mode abort what the failed cycle
// left open, and restores every partition it owns from what was committed,
// as after a rebalance. Rebalances go on meanwhile. It returns nil once
// done, or once ctx ended (what was not committed is left to the next
// owner), or a permanent error, which ends Run.
func (p *Processor) recover(ctx context.Context, cause error) error {
	p.recovering.Store(true)
	if cause != nil {
		p.metrics.recoveries.Inc()
		p.kafka.fail(cause)
		p.mu.Lock()
		p.abortPending = true
		p.renewPending = p.renewPending || p.eos && fenced(cause)
		p.mu.Unlock()
	}
	for tries := 1; ; tries++ {
		// After a failed cycle, Kafka has just not answered: back off
		// before asking again. A restore left to do after a clean abort
		// is tried at once.
		if cause != nil || tries > 1 {
			if !sleep(ctx, retryBackoff(tries)) {
				return nil
			}
			if err := p.ping(ctx); err != nil {
				p.kafka.fail(err)
				continue
			}
		}
		err := p.rewind(ctx)
		switch {
		case err == nil:
			p.recovering.Store(false)
			p.kafka.ok()
			return nil
		case permanent(err):
			return err
		case ctx.Err() != nil:
			return nil
		}
		p.restoreFailed(err)
	}
}

// restoreFailed notes a restore (or an abort) that failed for a transient
// reason. One that waited in vain for a transaction to end on a partition
// it reads is logged each time: a transaction whose markers the broker
// lost (an abrupt broker stop while it wrote them can do that) hangs until
// an operator aborts it, and the partition waits until then.
func (p *Processor) restoreFailed(err error) {
	if errors.Is(err, kafka.ErrTransactionOpen) {
		p.log.Warn("a transaction stays open on a partition being restored; the restore is retried until it ends (a hanging transaction the broker never ends is aborted with Kafka's transaction admin tool)", "err", err)
	}
	p.kafka.fail(err)
}

// ping asks Kafka whether it answers.
func (p *Processor) ping(ctx context.Context) error {
	pctx, cancel := context.WithTimeout(ctx, 2*maxBackoff)
	defer cancel()
	return p.client.Ping(pctx)
}

// rewind has the mode abort what a failed cycle left open (once), drops
// the state of every partition owned then, and restores it from what was
// committed. It holds mu only between the waits, so that rebalances go on.
func (p *Processor) rewind(ctx context.Context) error {
	p.mu.Lock()
	abort, renew := p.abortPending, p.renewPending
	p.mu.Unlock()
	if abort && !renew {
		err := p.mode.abort(ctx)
		if p.eos && fenced(err) {
			renew = true
		} else if err != nil {
			return fmt.Errorf("abort after a failed cycle: %w", err)
		}
	}
	if renew {
		// The broker fenced the producer: nothing of it is open any
		// more, and its client is no use. The new client is assigned
		// its partitions afresh, and restores them as it is.
		p.log.Info("the broker fenced the producer: replacing the group member's client", "group", p.cfg.Group)
		if err := p.mode.renew(); err != nil {
			return fmt.Errorf("replace the fenced client: %w", err)
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		p.abortPending, p.renewPending = false, false
		p.mode.aborted()
		p.drop(slices.Collect(maps.Keys(p.parts)))
		clear(p.unrestored)
		p.dlq, p.derived = nil, nil
		return nil
	}
	if abort {
		p.mu.Lock()
		p.abortPending = false
		p.forget(p.mode.aborted())
		p.mu.Unlock()
	}
	return p.restoreDropped(ctx)
}

// fenced reports whether err says that the broker fenced the producer: an
// epoch it bumped (a transaction it timed out, or a newer producer with
// the same transactional id), which franz-go does not recover from.
func fenced(err error) bool {
	return errors.Is(err, kerr.ProducerFenced) || errors.Is(err, kerr.InvalidProducerEpoch) ||
		errors.Is(err, kerr.InvalidProducerIDMapping)
}

// forget drops the state of every owned partition, and everything queued
// for the cycle, and notes the partitions for restoreDropped, each with the
// offset to consume it from again (from at; -1: where the client is).
// Called with mu held.
func (p *Processor) forget(at map[int32]int64) {
	p.recovering.Store(true)
	parts := slices.Collect(maps.Keys(p.parts))
	p.drop(parts)
	p.dlq, p.derived = nil, nil
	for _, part := range parts {
		off, ok := at[part]
		if !ok {
			off = -1
		}
		p.unrestored[part] = off
	}
}

// restoreDropped restores the partitions forget dropped, and sends the
// client back to consume each from where forget noted. It reads without
// mu: a partition revoked or lost meanwhile leaves the list, and is not
// installed.
func (p *Processor) restoreDropped(ctx context.Context) error {
	p.mu.Lock()
	parts := slices.Sorted(maps.Keys(p.unrestored))
	p.mu.Unlock()
	if len(parts) == 0 {
		return nil
	}
	r, err := p.restore(ctx, parts)
	if err != nil {
		return fmt.Errorf("restore partitions %v: %w", parts, err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	still := parts[:0]
	offsets := map[int32]kgo.EpochOffset{}
	for _, part := range parts {
		off, ok := p.unrestored[part]
		if !ok {
			continue
		}
		still = append(still, part)
		if off >= 0 {
			offsets[part] = kgo.EpochOffset{Epoch: -1, Offset: off}
		}
		delete(p.unrestored, part)
	}
	p.install(still, r)
	if len(offsets) > 0 {
		p.client.SetOffsets(map[string]map[int32]kgo.EpochOffset{p.cfg.Topics.Changes: offsets})
	}
	p.log.Info("partitions restored after a failed cycle", "partitions", still, "restored_records", r.records)
	return nil
}

// resolveSchemas makes sure that the serde knows the writer schema of every
// change polled before any is applied, and returns nil. When the registry
// does not answer for a schema not seen before, it puts the records back
// (the next poll returns them again), notes the outage, backs off and
// returns why: no change goes to the dead letter topic because the
// registry did not answer. A schema the registry does not know (404) is
// left to decoding, which makes the change a dead letter.
func (p *Processor) resolveSchemas(ctx context.Context, fetches kgo.Fetches) error {
	var (
		hdr  sr.ConfluentHeader
		down error
	)
	fetches.EachRecord(func(r *kgo.Record) {
		if down != nil {
			return
		}
		id, _, err := hdr.DecodeID(r.Value)
		if err != nil || p.schemaIDs[id] {
			return
		}
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), registryTimeout)
		_, err = p.cfg.Serde.DecodeChange(rctx, r.Value)
		cancel()
		if errors.Is(err, schemas.ErrUnknownSchema) && registryDown(err) {
			down = err
			return
		}
		p.schemaIDs[id] = true
	})
	if down == nil {
		if p.registryTries > 0 {
			p.registryTries = 0
			p.registry.ok()
		}
		return nil
	}
	p.registry.fail(down)
	p.registryTries++
	if err := p.mode.unpoll(ctx, fetches); err != nil {
		return fmt.Errorf("put the polled records back: %w", err)
	}
	p.client.AllowRebalance()
	sleep(ctx, retryBackoff(p.registryTries))
	return fmt.Errorf("%w: %w", ErrRegistryUnreachable, down)
}

// registryTimeout bounds one lookup of a writer schema.
const registryTimeout = 10 * time.Second
