// Package webhook is the sink that posts each record to a partner's HTTP
// endpoint, signed per Standard Webhooks (see message.go for what is sent).
//
// The endpoint is the partner's, so the sink cannot ask it what it holds:
// it implements sink.Sink only (not sink.Reader, not sink.Generations), and
// it keeps "apply only if newer" with a memory of its own, the last version
// delivered per key, which is per process and bounded (see Sink).
package webhook

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"

	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/productstream/productstream/config"
	"github.com/productstream/productstream/outbound"
	"github.com/productstream/productstream/sink"
	"github.com/productstream/productstream/stdwebhooks"
)

// ErrGone surfaces from Write, wrapped in each record's non-permanent
// error (or in Write's error when it is every record's), once the endpoint
// has answered 410 Gone: from then on the sink sends nothing until it is
// built again (a restart or a new configuration), and the runner's retries
// keep the records, and the lag, until then.
var ErrGone = errors.New("webhook: the partner endpoint is gone (410)")

// DefaultMemoryKeys is how many keys the sink remembers the last delivered
// version of (least recently used forgotten first).
const DefaultMemoryKeys = 1_000_000

// Sink posts records to one endpoint. It is safe for concurrent use, though
// the runner calls Write once at a time.
//
// Apply only if newer: the sink remembers, in memory, the last version
// delivered per key (DefaultMemoryKeys keys at most). A record at or below
// it is not sent: Stale below, Applied when equal (the partner has it). This
// memory is per process and starts empty: after a restart, a replay from
// the last committed offset sends again versions the partner may already
// have, and a key forgotten to make room for others may be sent again. Each
// such request carries the same webhook-id and Idempotency-Key as the first
// ("<key>:<version>"), so the partner can drop it, and the partner must
// itself ignore a version lower than one it holds (requests of one key are
// sent in order, but the first delivery of a version can have been lost).
type Sink struct {
	endpoint string // the URL posted to: never logged nor put in an error, it may carry a token
	where    string // scheme://host of the endpoint, for errors and logs
	keys     [][]byte
	client   *http.Client
	parallel int
	log      *slog.Logger

	delivered *lru.Cache[string, int64] // key -> last version the endpoint answered 2xx to
	gone      atomic.Bool
}

var _ sink.Sink = (*Sink)(nil)

// New builds the sink for cfg: it checks the URL, decodes the secrets and
// builds the guarded client (outbound.NewClient, private addresses allowed
// only with cfg.AllowPrivate). It sends nothing: a partner endpoint has
// nothing to prepare, and a probe would be a delivery the partner did not
// ask for, so an unreachable endpoint shows in the first Write. ctx is not
// used.
func New(_ context.Context, cfg config.SinkWebhook, log *slog.Logger) (*Sink, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// The URL is never repeated in an error: it may carry a token.
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, errors.New("webhook: url is not an absolute http(s) URL")
	}
	if u.User != nil {
		return nil, errors.New("webhook: url must not carry credentials")
	}
	if len(cfg.Secrets) == 0 {
		return nil, errors.New("webhook: at least one whsec_ secret is required")
	}
	keys := make([][]byte, len(cfg.Secrets))
	for i, s := range cfg.Secrets {
		if keys[i], err = stdwebhooks.DecodeSecret(s); err != nil {
			return nil, fmt.Errorf("webhook: secrets[%d]: %w", i, err)
		}
	}
	timeout := cfg.Timeout
	if timeout <= 0 {
		timeout = config.DefaultWebhookTimeout
	}
	parallel := max(cfg.Concurrency, 1)
	opts := []outbound.Option{outbound.WithTimeout(timeout), outbound.WithIdleConnsPerHost(parallel)}
	if cfg.AllowPrivate {
		opts = append(opts, outbound.AllowPrivate())
	}
	delivered, err := lru.New[string, int64](DefaultMemoryKeys)
	if err != nil {
		return nil, fmt.Errorf("webhook: %w", err)
	}
	return &Sink{
		endpoint:  u.String(),
		where:     u.Scheme + "://" + u.Host,
		keys:      keys,
		client:    outbound.NewClient(opts...),
		parallel:  parallel,
		log:       log,
		delivered: delivered,
	}, nil
}

// Write posts the batch's records, at most cfg.Concurrency at once (the
// runner gives one record per key and one batch at a time, so a key never
// has two requests in flight), and returns each record's outcome:
//
//   - 2xx: Applied.
//   - at or below the version last delivered for its key: Stale, or Applied
//     when equal, without sending.
//   - 429, 408, 5xx, a timeout or a connection error: Failed, not
//     permanent; a 429 (or a 503 with Retry-After) as a *sink.RetryAfter.
//   - 410: Failed with ErrGone, as is every record after it, unsent.
//   - a 3xx (redirects are not followed), any other 4xx, or a record that
//     cannot be encoded: Failed, Permanent.
//
// When every record failed and none for good (the endpoint is down, slow,
// throttling or gone), Write returns an error instead, the longest
// Retry-After among them if any: the batch as a whole failed. It also
// returns an error when ctx ends.
func (s *Sink) Write(ctx context.Context, batch []sink.Record) ([]sink.Result, error) {
	results := make([]sink.Result, len(batch))
	slots := make(chan struct{}, s.parallel)
	var wg sync.WaitGroup
send:
	for i := range batch {
		if r, done := s.remembered(batch[i]); done {
			results[i] = r
			continue
		}
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			break send
		}
		wg.Go(func() {
			defer func() { <-slots }()
			results[i] = s.deliver(ctx, batch[i])
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("webhook: %w", err)
	}
	if err := wholeBatchFailed(results); err != nil {
		return nil, err
	}
	return results, nil
}

// remembered returns the outcome of rec when the sink knows it without
// sending: a version at or below the last delivered one, or a gone
// endpoint.
func (s *Sink) remembered(rec sink.Record) (sink.Result, bool) {
	if last, ok := s.delivered.Get(rec.Key); ok {
		switch {
		case rec.Version < last:
			return sink.Result{Outcome: sink.Stale}, true
		case rec.Version == last:
			return sink.Result{Outcome: sink.Applied}, true
		}
	}
	if s.gone.Load() {
		return goneResult(), true
	}
	return sink.Result{}, false
}

func goneResult() sink.Result {
	return sink.Result{Outcome: sink.Failed, Err: fmt.Errorf("%w: nothing is sent until the sink is restarted or reconfigured", ErrGone)}
}

// deliver posts rec and says what became of it.
func (s *Sink) deliver(ctx context.Context, rec sink.Record) sink.Result {
	if s.gone.Load() { // a 410 arrived while rec waited for a slot
		return goneResult()
	}
	req, err := s.request(ctx, rec)
	if err != nil {
		return sink.Result{Outcome: sink.Failed, Err: sink.Permanent(fmt.Errorf("webhook: %s: %w", rec.Key, err))}
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return sink.Result{Outcome: sink.Failed, Err: fmt.Errorf("webhook: %s: %w", rec.Key, s.redact(err))}
	}
	head := readHead(resp)
	if resp.StatusCode == http.StatusGone {
		s.markGone()
		return sink.Result{Outcome: sink.Failed, Err: fmt.Errorf("%w: %s answered it for %s", ErrGone, s.where, rec.Key)}
	}
	if err := s.refusal(resp, head); err != nil {
		return sink.Result{Outcome: sink.Failed, Err: fmt.Errorf("webhook: %s: %w", rec.Key, err)}
	}
	s.delivered.Add(rec.Key, rec.Version)
	return sink.Result{Outcome: sink.Applied}
}

// markGone records the endpoint's 410, logging it the first time.
func (s *Sink) markGone() {
	if s.gone.CompareAndSwap(false, true) {
		s.log.Error("the partner endpoint answered 410 Gone: nothing more is sent until the sink is restarted or reconfigured",
			"endpoint", s.where)
	}
}

// redact replaces the URL in a client error (a *url.Error names it in
// full, and it may carry a token) with the endpoint's scheme and host.
func (s *Sink) redact(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return &url.Error{Op: ue.Op, URL: s.where, Err: ue.Err}
	}
	return err
}

// wholeBatchFailed returns the error Write returns in place of results
// when every record failed and none for good; nil otherwise. Of several
// *sink.RetryAfter, it is the one asking the longest wait.
func wholeBatchFailed(results []sink.Result) error {
	if len(results) == 0 {
		return nil
	}
	var first error
	var longest *sink.RetryAfter
	for _, r := range results {
		if r.Outcome != sink.Failed || sink.IsPermanent(r.Err) {
			return nil
		}
		if first == nil {
			first = r.Err
		}
		var ra *sink.RetryAfter
		if errors.As(r.Err, &ra) && (longest == nil || ra.Wait > longest.Wait) {
			longest = ra
		}
	}
	if longest != nil {
		first = longest
	}
	if len(results) == 1 {
		return first
	}
	return fmt.Errorf("webhook: all %d records failed: %w", len(results), first)
}

// Close closes the client's idle connections. The sink must not be used
// after.
func (s *Sink) Close() error {
	s.client.CloseIdleConnections()
	return nil
}
