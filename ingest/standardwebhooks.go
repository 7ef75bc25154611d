package ingest

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/productstream/productstream/config"
	"github.com/productstream/productstream/schemas"
)

// standardWebhooks is a sender following the Standard Webhooks
// specification (provider "standardwebhooks", symmetric "v1" signatures):
//
//	POST /webhooks/{name}
//	webhook-id: <delivery id, the same on every retry; no ".">
//	webhook-timestamp: <unix seconds, digits only>
//	webhook-signature: v1,<base64 HMAC-SHA256(key, id "." timestamp "." body)> [v1,<...> ...]
//
// Each secret is "whsec_" + base64(key). The delivery is authentic when
// any v1 entry matches any key; entries of other versions ("v1a", "v2")
// are ignored, and a header without a v1 entry is malformed. The timestamp
// must be within 5 minutes of the arrival time, either way. Retries are
// recognised by webhook-id. The body is one JSON object mapped by
// source.payload, as for the hmac provider. Answers: 202 accepted; 400
// missing or malformed headers, or a body without the id; 401 no matching
// signature or stale timestamp; 413 over the limit (default 1 MiB).
type standardWebhooks struct{}

// The optional interfaces the pipeline looks for: dropping one by accident
// would silently turn off preparation or deduplication.
var (
	_ Preparer           = standardWebhooks{}
	_ DeliveryIdentifier = standardWebhooks{}
	_ ReplayGuard        = standardWebhooks{}
)

const (
	swIDHeader        = "webhook-id"
	swTimestampHeader = "webhook-timestamp"
	swSignatureHeader = "webhook-signature"
	swSecretPrefix    = "whsec_"
	swTolerance       = 5 * time.Minute
)

func (standardWebhooks) Name() string          { return "standardwebhooks" }
func (standardWebhooks) DefaultMaxBody() int64 { return configurableMaxBody }
func (standardWebhooks) Routes() []string      { return nil }

func (standardWebhooks) Check(i int, src config.Source) error {
	if err := needSecrets(i, src); err != nil {
		return err
	}
	_, err := compileStandardWebhooks(src)
	return atSource(i, err)
}

// Prepare decodes the whsec_ secrets into keys and compiles the payload
// mapping.
func (standardWebhooks) Prepare(src *Source) (any, error) { return compileStandardWebhooks(src.Source) }

// swSource is a standardwebhooks source's compiled configuration.
type swSource struct {
	keys    [][]byte
	payload *payloadMapping
}

func compileStandardWebhooks(src config.Source) (*swSource, error) {
	if src.HMAC != nil {
		return nil, badField("hmac", "is not used by standardwebhooks, whose scheme is fixed")
	}
	c := &swSource{}
	for k, s := range src.Secrets {
		key, err := decodeWhsec(s)
		if err != nil {
			return nil, badField(fmt.Sprintf("secrets[%d]", k), "%v", err)
		}
		c.keys = append(c.keys, key)
	}
	var err error
	if c.payload, err = compilePayload(src.Payload); err != nil {
		return nil, err
	}
	return c, nil
}

// decodeWhsec decodes a "whsec_<base64 key>" secret. Its errors never hold
// the secret.
func decodeWhsec(s string) ([]byte, error) {
	b64, ok := strings.CutPrefix(s, swSecretPrefix)
	if !ok {
		return nil, errors.New("must start with " + swSecretPrefix)
	}
	key, err := base64.StdEncoding.Strict().DecodeString(b64)
	if err != nil || len(key) == 0 {
		return nil, errors.New("must be " + swSecretPrefix + " followed by the standard base64 of a non-empty key")
	}
	return key, nil
}

func (standardWebhooks) Verify(_ context.Context, src *Source, req *Request) error {
	c := src.extra.(*swSource)
	id, ts := req.Header.Get(swIDHeader), req.Header.Get(swTimestampHeader)
	if err := checkWebhookID(id); err != nil {
		return err
	}
	unix, err := parseUnixSeconds(swTimestampHeader, ts)
	if err != nil {
		return err
	}
	sigs, err := v1Signatures(req.Header.Get(swSignatureHeader))
	if err != nil {
		return err
	}
	if err := checkFresh(swTimestampHeader, unix, req.Received, swTolerance); err != nil {
		return err
	}
	// One MAC per key, compared with every entry: a long header costs
	// comparisons, not hashes of the body.
	for _, key := range c.keys {
		want := swSignature(key, id, ts, req.Body)
		for _, sig := range sigs {
			if hmac.Equal(sig, want) {
				return nil
			}
		}
	}
	return fmt.Errorf("%w: %s", ErrBadSignature, swSignatureHeader)
}

// checkWebhookID refuses a missing id, and an id holding "." (it would make
// the signed "id.timestamp.body" ambiguous) or unfit for a record: too
// long, not UTF-8, or holding a control character (checkID).
func checkWebhookID(id string) error {
	switch {
	case id == "":
		return fmt.Errorf("%w: %s header is required", ErrMissingSignature, swIDHeader)
	case strings.Contains(id, "."):
		return fmt.Errorf("%w: %s must not contain '.'", ErrMalformedSignature, swIDHeader)
	case len(id) > maxIDLen || !utf8.ValidString(id) || checkID(nil, id) != nil:
		return fmt.Errorf("%w: %s must be UTF-8 of at most %d bytes, without control characters", ErrMalformedSignature, swIDHeader, maxIDLen)
	}
	return nil
}

// v1Signatures decodes the v1 entries of a webhook-signature header. Other
// versions are skipped, as is a v1 entry that is not the base64 of 32 bytes
// when another one is; with no usable v1 entry the header is malformed.
func v1Signatures(v string) ([][]byte, error) {
	if v == "" {
		return nil, fmt.Errorf("%w: %s header is required", ErrMissingSignature, swSignatureHeader)
	}
	if strings.ContainsAny(v, "\r\n") {
		return nil, fmt.Errorf("%w: %s contains a line break", ErrMalformedSignature, swSignatureHeader)
	}
	var sigs [][]byte
	sawV1 := false
	for _, entry := range strings.Split(v, " ") {
		version, value, ok := strings.Cut(entry, ",")
		if !ok || version != "v1" {
			continue
		}
		sawV1 = true
		if sig, err := base64.StdEncoding.Strict().DecodeString(value); err == nil && len(sig) == sha256.Size {
			sigs = append(sigs, sig)
		}
	}
	switch {
	case !sawV1:
		return nil, fmt.Errorf("%w: %s has no v1 signature", ErrMalformedSignature, swSignatureHeader)
	case len(sigs) == 0:
		return nil, fmt.Errorf("%w: %s v1 signatures must be the base64 of %d bytes", ErrMalformedSignature, swSignatureHeader, sha256.Size)
	}
	return sigs, nil
}

// swSignature is HMAC-SHA256(key, id "." timestamp "." body).
func swSignature(key []byte, id, timestamp string, body []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(id))
	m.Write([]byte{'.'})
	m.Write([]byte(timestamp))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}

func (standardWebhooks) Normalize(_ context.Context, src *Source, req *Request) (Batch, error) {
	c := src.extra.(*swSource)
	ch, err := c.payload.change(src, req, "standardwebhooks", req.Header.Get(swIDHeader))
	if err != nil {
		return Batch{}, err
	}
	return Batch{Changes: []schemas.Change{ch}}, nil
}

// DeliveryID is webhook-id: the sender keeps it across retries, and the
// signature covers it.
func (standardWebhooks) DeliveryID(_ *Source, req *Request) Identity {
	return Identity{ID: req.Header.Get(swIDHeader), Signed: true}
}

// ReplayWindow is twice the tolerance: a delivery accepted now may carry
// a time up to 5 minutes ahead, and stays acceptable until 5 minutes after
// that.
func (standardWebhooks) ReplayWindow(*Source) time.Duration { return 2 * swTolerance }

// ReplayKey is the hash of the signed bytes, id "." timestamp "." body.
func (standardWebhooks) ReplayKey(_ *Source, req *Request) string {
	h := sha256.New()
	for _, part := range [][]byte{[]byte(req.Header.Get(swIDHeader)), {'.'}, []byte(req.Header.Get(swTimestampHeader)), {'.'}, req.Body} {
		h.Write(part)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Sign signs body as a new message (a random webhook-id, the current time)
// with the source's first key.
func (standardWebhooks) Sign(src *Source, body []byte) http.Header {
	c := src.extra.(*swSource)
	id := "msg_" + rand.Text()
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	h.Set(swIDHeader, id)
	h.Set(swTimestampHeader, ts)
	h.Set(swSignatureHeader, "v1,"+base64.StdEncoding.EncodeToString(swSignature(c.keys[0], id, ts, body)))
	return h
}
