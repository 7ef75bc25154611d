package main

// B4-<kind>, the sinks' baselines: what a user would write to copy the
// products topic into a backend, and no more. A plain franz-go consumer in
// a group of its own reads the topic from the start (read_committed, as the
// sinks read), takes what one poll returns (at most -sink-batch records),
// decodes each value as the sinks do (schemas.Serde.DecodeJSON), does the
// bare write of the batch, commits it, and polls again. The bare writes
// write the same documents, columns, fields and bodies as the sinks, with
// none of their guarantees: no version guard, no per-record outcome, no
// retry, no dead letters.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	goredis "github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/productstream/productstream/schemas"
	"github.com/productstream/productstream/sink"
	"github.com/productstream/productstream/sink/opensearch"
)

// bareRecord is one decoded record of the input.
type bareRecord struct {
	key, namespace, id string
	version            int64
	doc                json.RawMessage
	updatedAt          time.Time
}

// bareWriter is one baseline's write of a batch.
type bareWriter interface {
	write(ctx context.Context, batch []bareRecord) error
	close()
}

// bare is the baselines' consumer: poll, decode, write, commit, until ctx
// ends.
func (e *sinkEnv) bare(ctx context.Context, group string, assigned kgo.Opt, w bareWriter, batches *atomic.Int64) error {
	cl, err := kgo.NewClient(e.h.o.svc.opts(kgo.ConsumerGroup(group), kgo.ConsumeTopics(e.in.topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.DisableAutoCommit(), assigned)...)
	if err != nil {
		return fmt.Errorf("kafka client: %w", err)
	}
	defer cl.Close()
	serde := schemas.NewSerde(e.h.reg)
	for {
		fetches := cl.PollRecords(ctx, e.h.o.sinkBatch)
		if ctx.Err() != nil {
			return nil
		}
		if err := fetches.Err(); err != nil {
			return fmt.Errorf("fetch: %w", err)
		}
		recs := fetches.Records()
		if len(recs) == 0 {
			continue
		}
		batch := make([]bareRecord, len(recs))
		for i, r := range recs {
			doc, err := serde.DecodeJSON(ctx, r.Value)
			if err != nil {
				return fmt.Errorf("decode %s: %w", r.Key, err)
			}
			b := bareRecord{key: string(r.Key), doc: doc, updatedAt: r.Timestamp}
			b.namespace, b.id, _ = strings.Cut(b.key, ":")
			for _, h := range r.Headers {
				if h.Key == "version" {
					b.version, _ = strconv.ParseInt(string(h.Value), 10, 64)
				}
			}
			batch[i] = b
		}
		if err := w.write(ctx, batch); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		batches.Add(1)
		if err := cl.CommitRecords(ctx, recs...); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("commit: %w", err)
		}
	}
}

// newBare builds kind's bare writer into a fresh backend object named
// after name (an index, a table, a key prefix) and returns the object's
// name, for check and drop.
func (e *sinkEnv) newBare(ctx context.Context, kind, name string) (bareWriter, string, error) {
	switch kind {
	case "opensearch":
		index := strings.ToLower(e.h.runID + "-" + name)
		if err := e.openSearchDo(ctx, http.MethodPut, "/"+index, e.osIndex, nil); err != nil {
			return nil, "", err
		}
		return &osBare{e: e, url: strings.TrimRight(e.h.o.opensearchURL, "/") + "/" + index + "/_bulk?filter_path=errors,items.*.error"}, index, nil
	case "postgres":
		table := pgName(e.h.runID, name)
		t := pgx.Identifier{table}.Sanitize()
		if _, err := e.pg.Exec(ctx, `CREATE TABLE `+t+` (
	key        text PRIMARY KEY,
	namespace  text NOT NULL,
	product_id text NOT NULL,
	version    bigint NOT NULL,
	deleted    boolean NOT NULL,
	state      jsonb,
	updated_at timestamptz NOT NULL
)`); err != nil {
			return nil, "", fmt.Errorf("create %s: %w", table, err)
		}
		pool, err := pgxpool.New(ctx, e.h.o.postgresDSN)
		if err != nil {
			return nil, "", err
		}
		return &pgBare{pool: pool, sql: `INSERT INTO ` + t + ` (key, namespace, product_id, version, deleted, state, updated_at)
SELECT key, namespace, product_id, version, deleted, state::jsonb, updated_at
FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::boolean[], $6::text[], $7::timestamptz[])
	AS i(key, namespace, product_id, version, deleted, state, updated_at)
ON CONFLICT (key) DO UPDATE SET namespace = EXCLUDED.namespace, product_id = EXCLUDED.product_id,
	version = EXCLUDED.version, deleted = EXCLUDED.deleted, state = EXCLUDED.state, updated_at = EXCLUDED.updated_at`}, table, nil
	case "redis":
		prefix := e.h.runID + ":" + name + ":"
		return &redisBare{client: goredis.NewClient(&goredis.Options{Addr: e.h.o.redisAddr}), prefix: prefix}, prefix, nil
	case "webhook":
		e.hook.reset()
		n := e.h.o.webhookConcurrency
		return &webhookBare{url: e.hook.url, parallel: n, client: &http.Client{Timeout: 10 * time.Second,
			Transport: &http.Transport{MaxIdleConns: n, MaxIdleConnsPerHost: n, IdleConnTimeout: 90 * time.Second}}}, "", nil
	}
	return nil, "", fmt.Errorf("unknown sink %q", kind)
}

// osBare is B4-opensearch: one plain _bulk index request per batch (no
// version, no version_type) of the documents the sink indexes, into an
// index created with the sink's settings and mappings; an answer with
// errors fails the run.
type osBare struct {
	e   *sinkEnv
	url string
}

// osBulkAction is a bulk index action without version.
type osBulkAction struct {
	Index struct {
		ID string `json:"_id"`
	} `json:"index"`
}

func (w *osBare) write(ctx context.Context, batch []bareRecord) error {
	var body bytes.Buffer
	enc := json.NewEncoder(&body)
	enc.SetEscapeHTML(false)
	var action osBulkAction
	for _, r := range batch {
		action.Index.ID = r.key
		if err := enc.Encode(action); err != nil {
			return err
		}
		if err := enc.Encode(opensearch.Document(sink.Record{Key: r.key, Namespace: r.namespace, ID: r.id, Version: r.version, UpdatedAt: r.updatedAt, Doc: r.doc})); err != nil {
			return err
		}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.url, &body)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-ndjson")
	resp, err := w.e.osHTTP.Do(req)
	if err != nil {
		return fmt.Errorf("bulk: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("bulk: %w", err)
	}
	var ans struct {
		Errors bool `json:"errors"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(b, &ans) != nil || ans.Errors {
		return fmt.Errorf("bulk: %s: %s", resp.Status, truncate(string(b), 300))
	}
	return nil
}

func (w *osBare) close() {}

// pgBare is B4-postgres: one INSERT ... SELECT FROM unnest(...) ON
// CONFLICT (key) DO UPDATE per batch, without the version guard, into a
// table of the sink's columns.
type pgBare struct {
	pool *pgxpool.Pool
	sql  string
}

func (w *pgBare) write(ctx context.Context, batch []bareRecord) error {
	n := len(batch)
	keys, nss, ids, states := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	versions, deleted, updated := make([]int64, n), make([]bool, n), make([]time.Time, n)
	for i, r := range batch {
		keys[i], nss[i], ids[i], states[i] = r.key, r.namespace, r.id, string(r.doc)
		versions[i], updated[i] = r.version, r.updatedAt
	}
	if _, err := w.pool.Exec(ctx, w.sql, keys, nss, ids, versions, deleted, states, updated); err != nil {
		return fmt.Errorf("upsert: %w", err)
	}
	return nil
}

func (w *pgBare) close() { w.pool.Close() }

// redisBare is B4-redis: one pipeline per batch of HSETs of the sink's
// fields (version, deleted, state, updated_at, generation).
type redisBare struct {
	client *goredis.Client
	prefix string
}

func (w *redisBare) write(ctx context.Context, batch []bareRecord) error {
	pipe := w.client.Pipeline()
	for _, r := range batch {
		pipe.HSet(ctx, w.prefix+r.key, "version", strconv.FormatInt(r.version, 10), "deleted", "0", "state", string(r.doc),
			"updated_at", r.updatedAt.UTC().Format("2006-01-02T15:04:05.000Z07:00"), "generation", "1")
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("pipeline: %w", err)
	}
	return nil
}

func (w *redisBare) close() { _ = w.client.Close() }

// webhookBare is B4-webhook: one POST per record of the body the sink
// sends, at most -webhook-concurrency at once, each batch waited for; not
// signed (the sink's signature headers are part of what it costs).
type webhookBare struct {
	url      string
	parallel int
	client   *http.Client
}

// webhookMessage is the body the webhook sink posts, field for field.
type webhookMessage struct {
	Type      string          `json:"type"`
	Key       string          `json:"key"`
	Namespace string          `json:"namespace"`
	ID        string          `json:"id"`
	Version   int64           `json:"version"`
	Timestamp string          `json:"timestamp"`
	Data      json.RawMessage `json:"data"`
}

func (w *webhookBare) write(ctx context.Context, batch []bareRecord) error {
	slots := make(chan struct{}, w.parallel)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for _, r := range batch {
		slots <- struct{}{}
		wg.Go(func() {
			defer func() { <-slots }()
			if err := w.post(ctx, r); err != nil {
				mu.Lock()
				if firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return firstErr
}

func (w *webhookBare) post(ctx context.Context, r bareRecord) error {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(webhookMessage{Type: "product.updated", Key: r.key, Namespace: r.namespace, ID: r.id, Version: r.version,
		Timestamp: r.updatedAt.UTC().Format("2006-01-02T15:04:05.000Z07:00"), Data: r.doc}); err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.url, bytes.NewReader(bytes.TrimSuffix(buf.Bytes(), []byte{'\n'})))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := w.client.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("webhook: %s", resp.Status)
	}
	return nil
}

func (w *webhookBare) close() { w.client.CloseIdleConnections() }
