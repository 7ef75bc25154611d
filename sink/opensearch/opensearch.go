// Package opensearch is the sink that indexes records into OpenSearch, for
// search: one document per key, found through an alias readers query.
//
// Layout, for a sink whose index (the alias) is "shop":
//
//   - shop-g1, shop-g2, ...: the generations, one index each, created from
//     the index template shop-template (pattern shop-g*): one shard, no
//     replica (index.number_of_replicas is dynamic: raise it on the
//     template and the live index when the cluster has more nodes), and an
//     explicit mapping with dynamic: false (see Sink.template).
//   - shop: a filtered alias, {"term":{"deleted":false}}, on the live
//     generation. Readers search it and never see deleted documents.
//
// A document's _id is the record key and its _version the record version,
// indexed with version_type external_gte: OpenSearch itself refuses a lower
// version (a version conflict, reported as sink.Stale) and accepts an equal
// one. A delete indexes a marker document {deleted: true} under the same
// rule, never a real delete: nothing is ever removed from a generation, so
// a stale write after a delete stays a version conflict however long ago
// the delete was, whatever index.gc_deletes says.
//
// The generation state lives in OpenSearch, so every process writing the
// sink sees the same: the live generation is the one the alias points at,
// the building one is the generation whose mapping _meta holds
// {"productstream":{"building":true}} (set by Begin, cleared by Switch, gone
// with the index when it is dropped). Each Write reads both with one GET of
// the generation indexes (served from the cluster state) and indexes every
// record into the live generation, through the alias so that a concurrent
// Switch is followed at once, and into the building one. A batch in flight
// while Begin runs may miss the new generation; the rebuild, which reads
// the topic from its start, writes those records too.
package opensearch

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/opensearch-project/opensearch-go/v4"
	"github.com/opensearch-project/opensearch-go/v4/opensearchapi"
	"github.com/opensearch-project/opensearch-go/v4/opensearchtransport"

	"github.com/productstream/productstream/config"
	"github.com/productstream/productstream/sink"
)

// requestTimeout bounds each request to OpenSearch (a bulk included), on
// top of the caller's context.
const requestTimeout = 30 * time.Second

// Sink writes records to the generations behind one OpenSearch alias. It
// implements sink.Sink, sink.Reader and sink.Generations. Its methods are
// safe for concurrent use, though the runner never calls Write
// concurrently with itself.
type Sink struct {
	api   *opensearchapi.Client
	alias string
	log   *slog.Logger
	// refresh is every generation's index.refresh_interval; 0: OpenSearch's
	// default.
	refresh time.Duration
}

var (
	_ sink.Sink        = (*Sink)(nil)
	_ sink.Reader      = (*Sink)(nil)
	_ sink.Generations = (*Sink)(nil)
)

var indexPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,99}$`)

// New connects to OpenSearch and prepares the sink's index family: it puts
// the index template (every time, so a changed mapping applies to the next
// generation) and, when the alias does not exist yet, creates generation 1
// and points the alias at it. It fails with ErrUnreachable when no node
// answers, with ErrAuthentication when the credentials are refused.
func New(ctx context.Context, cfg config.SinkOpenSearch, log *slog.Logger) (*Sink, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if !indexPattern.MatchString(cfg.Index) {
		return nil, fmt.Errorf("opensearch sink: index %q must be lower-case letters, digits, '_' or '-'", cfg.Index)
	}
	if len(cfg.URLs) == 0 {
		return nil, fmt.Errorf("opensearch sink %s: no urls", cfg.Index)
	}
	urls := make([]*url.URL, len(cfg.URLs))
	for i, u := range cfg.URLs {
		// The URL is not repeated in the message: it may carry a token.
		p, err := url.Parse(u)
		if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" || p.User != nil {
			return nil, fmt.Errorf("opensearch sink %s: urls[%d] is not an http(s) URL without credentials", cfg.Index, i)
		}
		urls[i] = p
	}
	tp, err := opensearchtransport.New(opensearchtransport.Config{
		URLs:     urls,
		Username: cfg.Username,
		Password: cfg.Password,
		// The runner retries, with backoff, and must see every 429 and 5xx:
		// the client retrying on its own would hide them and send bulk
		// bodies again behind its back.
		DisableRetry: true,
		// No background polling of node stats or cluster health: traffic
		// and monitor permissions the sink does not need.
		NodeStatsInterval:     -1,
		MaxRetryClusterHealth: -1,
		Transport:             newTransport(),
	})
	if err != nil {
		return nil, fmt.Errorf("opensearch sink %s: client: %w", cfg.Index, err)
	}
	// Bulk partial failures are read item by item in Write: the v4 client
	// does not turn them into an error.
	api := opensearchapi.NewFromClient(&opensearch.Client{Transport: tp})
	s := &Sink{api: api, alias: cfg.Index, log: log.With("backend", "opensearch", "index", cfg.Index), refresh: cfg.RefreshInterval}
	live, err := s.prepare(ctx)
	if err != nil {
		_ = api.Close()
		return nil, fmt.Errorf("opensearch sink %s: %w", cfg.Index, err)
	}
	s.log.Info("opensearch sink ready", "live_generation", live)
	return s, nil
}

// applyRefresh sets the configured refresh interval on the generations
// that exist (the template gives it to the ones created later), so that a
// changed refresh_interval applies at the sink's next start.
func (s *Sink) applyRefresh(ctx context.Context, gens []int) error {
	if s.refresh == 0 || len(gens) == 0 {
		return nil
	}
	indexes := make([]string, len(gens))
	for i, g := range gens {
		indexes[i] = s.genIndex(g)
	}
	body, err := json.Marshal(map[string]any{"index.refresh_interval": refreshSetting(s.refresh)})
	if err != nil {
		return fmt.Errorf("refresh interval: %w", err)
	}
	resp, err := s.api.Indices.Settings.Put(ctx, opensearchapi.SettingsPutReq{Indices: indexes, Body: bytes.NewReader(body)})
	return check(ctx, "put refresh interval", resp.Inspect().Response, err)
}

// refreshSetting writes d as OpenSearch's time unit value.
func refreshSetting(d time.Duration) string { return strconv.FormatInt(d.Milliseconds(), 10) + "ms" }

// newTransport is the HTTP transport of one Sink: bounded dials, pooled
// keep-alive connections, closed with the Sink.
func newTransport() *http.Transport {
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout:   10 * time.Second,
		MaxIdleConns:          16,
		MaxIdleConnsPerHost:   8,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
		ForceAttemptHTTP2:     true,
	}
}

// prepare puts the template and makes sure the alias points at a
// generation, returning the live one.
func (s *Sink) prepare(ctx context.Context) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	body, err := json.Marshal(s.template())
	if err != nil {
		return 0, fmt.Errorf("index template: %w", err)
	}
	resp, err := s.api.IndexTemplate.Create(ctx, opensearchapi.IndexTemplateCreateReq{
		IndexTemplate: s.templateName(), Body: bytes.NewReader(body)})
	if err := check(ctx, "put index template "+s.templateName(), resp.Inspect().Response, err); err != nil {
		var se *StatusError
		if errors.As(err, &se) && strings.Contains(se.Reason, "[scaled_float]") {
			return 0, fmt.Errorf("this OpenSearch has no scaled_float field type (its mapper-extras module is missing): %w", err)
		}
		return 0, err
	}
	st, err := s.state(ctx)
	if err != nil {
		return 0, err
	}
	if err := s.applyRefresh(ctx, st.all); err != nil {
		return 0, err
	}
	if st.live != 0 {
		return st.live, nil
	}
	// No alias yet: generation 1 becomes live (reused if a previous start
	// created it and stopped before the alias).
	if err := s.createGeneration(ctx, 1); err != nil {
		return 0, err
	}
	if err := s.aliasActions(ctx, s.addAlias(1)); err != nil {
		return 0, err
	}
	s.log.Info("opensearch alias created", "generation", 1)
	return 1, nil
}

// Close releases the client's connections. It is idempotent.
func (s *Sink) Close() error {
	if err := s.api.Close(); err != nil {
		return fmt.Errorf("opensearch sink %s: close: %w", s.alias, err)
	}
	return nil
}

// templateName names the index template of the sink's generations.
func (s *Sink) templateName() string { return s.alias + "-template" }

// isStatus reports whether err carries an OpenSearch answer of errType.
func isStatus(err error, errType string) bool {
	var se *StatusError
	return errors.As(err, &se) && se.Type == errType
}
