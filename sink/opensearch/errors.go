package opensearch

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/opensearch-project/opensearch-go/v4"

	"github.com/productstream/productstream/sink"
)

var (
	// ErrUnreachable wraps every failure to get an answer from OpenSearch at
	// all (connection refused or reset, DNS, TLS): from New, Write, Held and
	// the generation calls. It is transient.
	ErrUnreachable = errors.New("opensearch unreachable")
	// ErrAuthentication is returned (wrapped) by any call OpenSearch answers
	// with 401: New fails with it when the username or password is wrong.
	ErrAuthentication = errors.New("opensearch authentication failed (check the username and password)")
	// ErrLiveGeneration is returned by Drop and Begin for the generation the
	// alias points at: the live generation is never dropped or rebuilt.
	ErrLiveGeneration = errors.New("generation is live")
	// ErrNoGeneration is returned by Switch for a generation whose index does
	// not exist.
	ErrNoGeneration = errors.New("no such generation")
	// ErrLayout is returned by New, Write, Held and the generation calls when
	// the alias is not what this sink made it: it points at more than one
	// index, or at an index that is not one of its generations. An operator
	// must repair it; writes are retried meanwhile.
	ErrLayout = errors.New("unexpected opensearch alias layout")
)

// StatusError is an error answer from OpenSearch: to a whole request (then
// wrapped by the error the call returns) or to one bulk item (then the
// record's Result.Err, marked sink.Permanent unless retrying can help).
type StatusError struct {
	// Status is the HTTP status of the answer or of the bulk item.
	Status int
	// Type is OpenSearch's error type (mapper_parsing_exception,
	// version_conflict_engine_exception, ...), empty when the answer had none.
	Type string
	// Reason is OpenSearch's explanation, truncated to maxReason bytes.
	Reason string
}

// Error says the status, the type and the reason.
func (e *StatusError) Error() string {
	switch {
	case e.Type != "" && e.Reason != "":
		return fmt.Sprintf("opensearch answered %d %s: %s", e.Status, e.Type, e.Reason)
	case e.Type != "":
		return fmt.Sprintf("opensearch answered %d %s", e.Status, e.Type)
	case e.Reason != "":
		return fmt.Sprintf("opensearch answered %d: %s", e.Status, e.Reason)
	}
	return fmt.Sprintf("opensearch answered %d %s", e.Status, http.StatusText(e.Status))
}

// transient reports whether retrying the same request may succeed: the
// cluster was busy or failing, not refusing the content.
func (e *StatusError) transient() bool {
	return e.Status == http.StatusTooManyRequests || e.Status >= 500 ||
		strings.Contains(e.Type, "rejected_execution_exception") ||
		e.Type == "index_not_found_exception" // a generation index missing is an operational state, not the record's fault
}

// maxReason bounds the reason kept in an error: OpenSearch quotes the
// offending value, which may be long.
const maxReason = 400

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && s[cut]&0xC0 == 0x80 { // do not split a UTF-8 sequence
		cut--
	}
	return s[:cut] + "..."
}

// errorBody is the error part of an OpenSearch answer.
type errorBody struct {
	Type     string     `json:"type"`
	Reason   string     `json:"reason"`
	CausedBy *errorBody `json:"caused_by"`
}

// reason joins e's reason with the chain of causes.
func (e *errorBody) reason() string {
	var b strings.Builder
	b.WriteString(e.Reason)
	for c := e.CausedBy; c != nil; c = c.CausedBy {
		fmt.Fprintf(&b, " (caused by %s: %s)", c.Type, c.Reason)
	}
	return truncate(b.String(), maxReason)
}

// statusError reads an error answer's body: {"error":{"type":..,"reason":..}},
// {"error":"text"} or anything else.
func statusError(status int, body []byte) *StatusError {
	e := &StatusError{Status: status}
	var v struct {
		Error json.RawMessage `json:"error"`
	}
	if json.Unmarshal(body, &v) == nil && len(v.Error) > 0 {
		var eb errorBody
		var text string
		switch {
		case json.Unmarshal(v.Error, &eb) == nil:
			e.Type, e.Reason = eb.Type, eb.reason()
		case json.Unmarshal(v.Error, &text) == nil:
			e.Reason = truncate(text, maxReason)
		}
	}
	return e
}

// check turns what an opensearchapi call returned into this package's
// errors: nil on a 2xx answer; ErrUnreachable (or the context's error)
// when no answer came; ErrAuthentication on 401; a *sink.RetryAfter when a
// 429 or 5xx carries Retry-After; a wrapped *StatusError otherwise.
func check(ctx context.Context, op string, resp *opensearch.Response, err error) error {
	if resp == nil {
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%s: %w", op, errors.Join(ctx.Err(), err))
		}
		return fmt.Errorf("%s: %w: %w", op, ErrUnreachable, err)
	}
	if !resp.IsError() {
		if err != nil { // the answer was fine but its body could not be read or decoded
			return fmt.Errorf("%s: %w", op, err)
		}
		return nil
	}
	se := statusError(resp.StatusCode, body(resp))
	switch {
	case se.Status == http.StatusUnauthorized:
		return fmt.Errorf("%s: %w: %w", op, ErrAuthentication, se)
	case se.transient():
		if wait, ok := retryAfter(resp.Header.Get("Retry-After"), time.Now()); ok {
			return &sink.RetryAfter{Err: fmt.Errorf("%s: %w", op, se), Wait: wait}
		}
	}
	return fmt.Errorf("%s: %w", op, se)
}

// body returns resp's body, leaving it readable again.
func body(resp *opensearch.Response) []byte {
	if raw := resp.RawBody(); raw != nil || resp.Body == nil {
		return raw
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	_ = resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(b))
	return b
}

// retryAfter reads a Retry-After header: delay-seconds or an HTTP date.
func retryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs < 0 {
			return 0, false
		}
		return time.Duration(min(secs, int64(24*time.Hour/time.Second))) * time.Second, true
	}
	if at, err := http.ParseTime(v); err == nil {
		return max(at.Sub(now), 0), true
	}
	return 0, false
}
