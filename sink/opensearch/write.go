package opensearch

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/opensearch-project/opensearch-go/v4/opensearchapi"

	"github.com/productstream/productstream/sink"
)

// Write indexes batch in one _bulk request into the live generation and,
// while one is being built, into it too. A record's outcome is Failed if
// either index failed it, else the live generation's. It returns an error,
// and no results, when the request as a whole failed: no answer
// (ErrUnreachable), a 429 or 5xx (a *sink.RetryAfter when OpenSearch said
// how long to wait), or an alias it cannot write through (ErrLayout).
func (s *Sink) Write(ctx context.Context, batch []sink.Record) ([]sink.Result, error) {
	if len(batch) == 0 {
		return nil, nil
	}
	sctx, cancel := context.WithTimeout(ctx, requestTimeout)
	st, err := s.state(sctx)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("opensearch sink %s: write: %w", s.alias, err)
	}
	if st.live == 0 {
		return nil, fmt.Errorf("opensearch sink %s: write: %w: alias %s is missing (restarting the sink creates it)", s.alias, ErrLayout, s.alias)
	}
	// Through the alias: a Switch between reading the state and the bulk is
	// followed, and an index is never created under the alias's name.
	targets := []string{s.alias}
	if st.building != 0 {
		targets = append(targets, s.genIndex(st.building))
	}
	res, err := s.write(ctx, batch, targets)
	if err != nil {
		return nil, fmt.Errorf("opensearch sink %s: write: %w", s.alias, err)
	}
	return res, nil
}

// write indexes every record of batch into each of targets (an alias or
// generation index) in one _bulk request, and reads each item's answer.
func (s *Sink) write(ctx context.Context, batch []sink.Record, targets []string) ([]sink.Result, error) {
	if len(batch) == 0 {
		return nil, nil
	}
	results := make([]sink.Result, len(batch))
	var body, doc bytes.Buffer
	enc, docEnc := json.NewEncoder(&body), json.NewEncoder(&doc)
	enc.SetEscapeHTML(false)
	docEnc.SetEscapeHTML(false)
	var sent []int // the batch index of each record in the request
	for i, rec := range batch {
		doc.Reset()
		err := validate(rec)
		if err == nil {
			err = docEnc.Encode(newDocument(rec))
		}
		if err != nil {
			results[i] = sink.Result{Outcome: sink.Failed, Err: sink.Permanent(fmt.Errorf("record %s: %w", rec.Key, err))}
			continue
		}
		for _, target := range targets {
			action := map[string]bulkAction{"index": {Index: target, ID: rec.Key, Version: rec.Version, VersionType: "external_gte"}}
			if err := enc.Encode(action); err != nil {
				return nil, fmt.Errorf("encode bulk action for %s: %w", rec.Key, err)
			}
			body.Write(doc.Bytes()) // ends with the newline Encode wrote
		}
		sent = append(sent, i)
	}
	if len(sent) == 0 {
		return results, nil
	}

	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	resp, err := s.api.Bulk(ctx, opensearchapi.BulkReq{
		Body:   &body,
		Params: opensearchapi.BulkParams{FilterPath: []string{"items.*.status", "items.*.error"}},
	})
	raw := resp.Inspect().Response
	if raw == nil || raw.IsError() || len(resp.Items) == 0 {
		// With a 2xx answer a non-nil err can only be a partial failure,
		// which the items below tell record by record.
		if err := check(ctx, "bulk", raw, err); err != nil {
			return nil, err
		}
	}
	if want := len(sent) * len(targets); len(resp.Items) != want {
		return nil, fmt.Errorf("bulk: %d items answered for %d actions", len(resp.Items), want)
	}
	for j, i := range sent {
		var outcome sink.Result
		for t := range targets {
			r := itemResult(resp.Items[j*len(targets)+t])
			switch {
			case t == 0:
				outcome = r
			case r.Outcome == sink.Failed && outcome.Outcome != sink.Failed:
				outcome = r
			case r.Outcome == sink.Failed && sink.IsPermanent(outcome.Err) && !sink.IsPermanent(r.Err):
				outcome = r // retrying the record may yet help the other index
			}
		}
		results[i] = outcome
	}
	return results, nil
}

// bulkAction is the metadata line of one bulk index action.
type bulkAction struct {
	Index       string `json:"_index"`
	ID          string `json:"_id"`
	Version     int64  `json:"version"`
	VersionType string `json:"version_type"`
}

// validate refuses a record that cannot be sent at all.
func validate(rec sink.Record) error {
	switch {
	case rec.Key == "":
		return errors.New("record has no key")
	case rec.Deleted:
		return nil
	case len(rec.Doc) == 0:
		return errors.New("record has no value")
	case !json.Valid(rec.Doc):
		return errors.New("value is not valid JSON")
	}
	return nil
}

// itemResult is the outcome of one bulk item: 2xx is Applied, a version
// conflict is Stale, a busy or failing cluster (429, rejected execution,
// 5xx, a missing index) a retryable failure, anything else a permanent one.
func itemResult(item map[string]opensearchapi.BulkRespItem) sink.Result {
	it := item["index"]
	if it.Status >= 200 && it.Status < 300 {
		return sink.Result{Outcome: sink.Applied}
	}
	se := &StatusError{Status: it.Status}
	if e := it.Error; e != nil {
		eb := errorBody{Type: e.Type, Reason: e.Reason}
		if c := e.Cause; c.Type != "" || c.Reason != "" {
			eb.CausedBy = &errorBody{Type: c.Type, Reason: c.Reason}
		}
		se.Type, se.Reason = eb.Type, eb.reason()
	}
	switch {
	case it.Status == http.StatusConflict && se.Type == "version_conflict_engine_exception":
		return sink.Result{Outcome: sink.Stale}
	case it.Status == 0:
		return sink.Result{Outcome: sink.Failed, Err: fmt.Errorf("bulk item without a status: %w", se)}
	case se.transient():
		return sink.Result{Outcome: sink.Failed, Err: se}
	}
	return sink.Result{Outcome: sink.Failed, Err: sink.Permanent(se)}
}

// Held reads what the live generation holds for key, deleted markers
// included (directly, not through the filtered alias).
func (s *Sink) Held(ctx context.Context, key string) (sink.Held, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	st, err := s.state(ctx)
	if err != nil {
		return sink.Held{}, false, fmt.Errorf("opensearch sink %s: held %s: %w", s.alias, key, err)
	}
	if st.live == 0 {
		return sink.Held{}, false, nil
	}
	h, found, err := s.held(ctx, s.genIndex(st.live), key)
	if err != nil {
		return sink.Held{}, false, fmt.Errorf("opensearch sink %s: %w", s.alias, err)
	}
	return h, found, nil
}

// held reads key's document in index.
func (s *Sink) held(ctx context.Context, index, key string) (sink.Held, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	resp, err := s.api.Document.Get(ctx, opensearchapi.DocumentGetReq{Index: index, DocumentID: key,
		Params: opensearchapi.DocumentGetParams{SourceIncludes: []string{"deleted", "state"}}})
	raw := resp.Inspect().Response
	if raw != nil && raw.StatusCode == http.StatusNotFound {
		var nf struct {
			Found *bool `json:"found"`
		}
		if json.Unmarshal(body(raw), &nf) == nil && nf.Found != nil && !*nf.Found {
			return sink.Held{}, false, nil
		}
	}
	if err := check(ctx, "get "+index+"/"+key, raw, err); err != nil {
		return sink.Held{}, false, err
	}
	if !resp.Found {
		return sink.Held{}, false, nil
	}
	var src struct {
		Deleted bool            `json:"deleted"`
		State   json.RawMessage `json:"state"`
	}
	if err := json.Unmarshal(resp.Source, &src); err != nil {
		return sink.Held{}, false, fmt.Errorf("get %s/%s: decode _source: %w", index, key, err)
	}
	h := sink.Held{Version: int64(resp.Version), Deleted: src.Deleted}
	if !src.Deleted && len(src.State) > 0 && string(src.State) != "null" {
		h.Doc = src.State
	}
	return h, true, nil
}
