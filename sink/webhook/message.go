package webhook

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
	"unicode"
	"unicode/utf8"

	"github.com/productstream/productstream/sink"
	"github.com/productstream/productstream/stdwebhooks"
)

// What one request is, per Standard Webhooks:
//
//	POST <url>
//	Content-Type: application/json
//	User-Agent: productstream-webhook/1
//	webhook-id: <key>:<version>
//	Idempotency-Key: <key>:<version>
//	webhook-timestamp: <unix seconds, when this attempt was signed>
//	webhook-signature: v1,<base64 HMAC-SHA256(key, id "." timestamp "." body)> [v1,<...> ...]
//
//	{"type":"product.updated","key":"ns:1","namespace":"ns","id":"1","version":10,
//	 "timestamp":"2023-11-14T22:13:20.000Z","data":{...the record's value...}}
//
// The signature has one v1 entry per configured secret, so a partner
// rotating its secret accepts the request with either. The id is the same on
// every attempt of a version, so the partner can drop repeats; the
// timestamp is each attempt's own. In the id, a key's '.' (which Standard
// Webhooks verifiers such as ingest's refuse in an id, since the signed
// content is dot-separated), '%' and any byte that is not printable ASCII
// are percent-encoded ("ns:a.b" at version 3 is "ns:a%2Eb:3"). A deleted
// record is "product.deleted" with "data": null.
const (
	typeUpdated = "product.updated"
	typeDeleted = "product.deleted"

	headerIdemKey = "Idempotency-Key"
	userAgent     = "productstream-webhook/1"

	// maxRead is how much of a response body is read: enough for an error
	// message, bounded whatever the endpoint sends.
	maxRead = 4 << 10
	// maxReason is how much of an error response's body goes into the
	// record's error.
	maxReason = 200
	// maxRetryAfter caps the wait a Retry-After can ask for.
	maxRetryAfter = time.Hour
)

// message is the JSON body of one request.
type message struct {
	Type      string          `json:"type"`
	Key       string          `json:"key"`
	Namespace string          `json:"namespace"`
	ID        string          `json:"id"`
	Version   int64           `json:"version"`
	Timestamp string          `json:"timestamp"` // RFC 3339 in UTC, milliseconds
	Data      json.RawMessage `json:"data"`      // null when deleted
}

// body encodes rec as the request body. A record that is not deleted must
// carry a JSON value.
func body(rec sink.Record) ([]byte, error) {
	m := message{Type: typeUpdated, Key: rec.Key, Namespace: rec.Namespace, ID: rec.ID, Version: rec.Version,
		Timestamp: rec.UpdatedAt.UTC().Format("2006-01-02T15:04:05.000Z07:00"), Data: rec.Doc}
	if rec.Deleted {
		m.Type, m.Data = typeDeleted, nil
	} else if len(rec.Doc) == 0 {
		return nil, errors.New("the record has no value")
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(m); err != nil {
		return nil, fmt.Errorf("encoding the record: %w", err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte{'\n'}), nil
}

// webhookID is rec's "<key>:<version>", the key escaped as message's
// comment says.
func webhookID(rec sink.Record) string {
	var b strings.Builder
	for i := 0; i < len(rec.Key); i++ {
		c := rec.Key[i]
		if c <= ' ' || c >= 0x7f || c == '.' || c == '%' {
			fmt.Fprintf(&b, "%%%02X", c)
			continue
		}
		b.WriteByte(c)
	}
	return b.String() + ":" + strconv.FormatInt(rec.Version, 10)
}

// request builds the signed POST of rec, signed now.
func (s *Sink) request(ctx context.Context, rec sink.Record) (*http.Request, error) {
	b, err := body(rec)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.endpoint, bytes.NewReader(b))
	if err != nil {
		return nil, errors.New("building the request failed") // the error would name the URL
	}
	id, ts := webhookID(rec), strconv.FormatInt(time.Now().Unix(), 10)
	h := req.Header
	h.Set("Content-Type", "application/json")
	h.Set("User-Agent", userAgent)
	h.Set(stdwebhooks.IDHeader, id)
	h.Set(headerIdemKey, id) // also what lets net/http retry the POST on a dead kept-alive connection
	h.Set(stdwebhooks.TimestampHeader, ts)
	h.Set(stdwebhooks.SignatureHeader, stdwebhooks.Header(s.keys, id, ts, b))
	return req, nil
}

// readHead reads at most maxRead bytes of resp's body and closes it: a
// longer body is not read on (its connection is then not reused).
func readHead(resp *http.Response) []byte {
	head, _ := io.ReadAll(io.LimitReader(resp.Body, maxRead))
	_ = resp.Body.Close()
	return head
}

// refusal is nil for a 2xx; otherwise the error the record fails with:
// transient for 408, 429 and 5xx (a *sink.RetryAfter for a 429, or a 503
// that says how long to wait), Permanent for a 3xx and any other status.
// 410 is handled before.
func (s *Sink) refusal(resp *http.Response, head []byte) error {
	code := resp.StatusCode
	switch {
	case code >= 200 && code < 300:
		return nil
	case code >= 300 && code < 400:
		return sink.Permanent(fmt.Errorf("%s answered %s: redirects are not followed", s.where, resp.Status))
	}
	err := fmt.Errorf("%s answered %s", s.where, reason(resp.Status, head))
	switch {
	case code == http.StatusTooManyRequests:
		return &sink.RetryAfter{Err: err, Wait: retryAfter(resp.Header.Get("Retry-After"), time.Now())}
	case code == http.StatusServiceUnavailable && resp.Header.Get("Retry-After") != "":
		return &sink.RetryAfter{Err: err, Wait: retryAfter(resp.Header.Get("Retry-After"), time.Now())}
	case code == http.StatusRequestTimeout || code >= 500:
		return err
	}
	return sink.Permanent(err)
}

// reason is the status followed by up to maxReason bytes of the body, its
// characters that are not printable as '?' and its white space as one
// space.
func reason(status string, body []byte) string {
	var b strings.Builder
	space := false
	for len(body) > 0 && b.Len() < maxReason {
		r, size := utf8.DecodeRune(body)
		body = body[size:]
		switch {
		case unicode.IsSpace(r):
			space = true
			continue
		case r == utf8.RuneError || !unicode.IsPrint(r):
			r = '?'
		}
		if space && b.Len() > 0 {
			b.WriteByte(' ')
		}
		space = false
		if b.Len()+utf8.RuneLen(r) > maxReason {
			break
		}
		b.WriteRune(r)
	}
	if b.Len() == 0 {
		return status
	}
	return status + ": " + b.String()
}

// retryAfter reads a Retry-After value, seconds or an HTTP date, as a wait
// from now: 0 when absent, unreadable or past, at most maxRetryAfter.
func retryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	var d time.Duration
	if n, err := strconv.ParseUint(v, 10, 64); err == nil {
		if n > uint64(maxRetryAfter/time.Second) {
			return maxRetryAfter
		}
		d = time.Duration(n) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	}
	return min(max(d, 0), maxRetryAfter)
}
