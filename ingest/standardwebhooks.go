package ingest

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/productstream/productstream/config"
	"github.com/productstream/productstream/schemas"
	"github.com/productstream/productstream/stdwebhooks"
)

// standardWebhooksProvider is a sender following the Standard Webhooks
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
// options.payload, as for the hmac provider. Answers: 202 accepted; 400
// missing or malformed headers, or a body without the id; 401 no matching
// signature or stale timestamp; 413 over the limit (default 1 MiB).
func standardWebhooksProvider() Registration {
	return Registration{Name: "standardwebhooks", MaxBody: configurableMaxBody, New: newStandardWebhooks}
}

const (
	swIDHeader        = stdwebhooks.IDHeader
	swTimestampHeader = stdwebhooks.TimestampHeader
	swSignatureHeader = stdwebhooks.SignatureHeader
	swTolerance       = 5 * time.Minute
)

// swOptions are the standardwebhooks provider's options: the scheme is
// fixed, so only the payload mapping.
type swOptions struct {
	Payload *config.Payload `yaml:"payload"`
}

// standardWebhooks is a configured standardwebhooks source.
type standardWebhooks struct {
	origin
	keys    [][]byte
	payload *payloadMapping
}

// The optional interfaces the pipeline looks for: dropping one by accident
// would silently turn off signing or replay memory.
var (
	_ Signer      = (*standardWebhooks)(nil)
	_ ReplayGuard = (*standardWebhooks)(nil)
)

// newStandardWebhooks decodes the whsec_ secrets into keys and compiles
// the payload mapping, from options or the deprecated payload block.
func newStandardWebhooks(cfg config.Source, _ Deps) (Adapter, error) {
	if _, err := secretKeys(cfg); err != nil {
		return nil, err
	}
	if cfg.HMAC != nil {
		return nil, badField("hmac", "is not used by standardwebhooks, whose scheme is fixed")
	}
	s := &standardWebhooks{origin: originOf(cfg)}
	for k, secret := range cfg.Secrets {
		key, err := stdwebhooks.DecodeSecret(secret)
		if err != nil {
			return nil, badField(fmt.Sprintf("secrets[%d]", k), "%v", err)
		}
		s.keys = append(s.keys, key)
	}
	o, at := swOptions{Payload: cfg.Payload}, "payload"
	if hasOptions(cfg) {
		if err := decodeOptions(cfg, &o); err != nil {
			return nil, err
		}
		at = optionsKey + ".payload"
	}
	var err error
	if s.payload, err = compilePayload(o.Payload, at); err != nil {
		return nil, err
	}
	return s, nil
}

// Verify checks the headers and the v1 signatures. The delivery id is
// webhook-id: the sender keeps it across retries, and the signature covers
// it, as it covers the timestamp.
func (s *standardWebhooks) Verify(_ context.Context, req *Request) (Verified, error) {
	id, ts := req.Header.Get(swIDHeader), req.Header.Get(swTimestampHeader)
	if err := checkWebhookID(id); err != nil {
		return Verified{}, err
	}
	unix, err := parseUnixSeconds(swTimestampHeader, ts)
	if err != nil {
		return Verified{}, err
	}
	sigs, err := v1Signatures(req.Header.Get(swSignatureHeader))
	if err != nil {
		return Verified{}, err
	}
	if err := checkFresh(swTimestampHeader, unix, req.Received, swTolerance); err != nil {
		return Verified{}, err
	}
	// One MAC per key, compared with every entry: a long header costs
	// comparisons, not hashes of the body.
	for _, key := range s.keys {
		want := stdwebhooks.Signature(key, id, ts, req.Body)
		for _, sig := range sigs {
			if hmac.Equal(sig, want) {
				return Verified{Request: req, Identity: Identity{ID: id, Signed: true}, ReplayKey: swReplayKey(id, ts, req.Body)}, nil
			}
		}
	}
	return Verified{}, fmt.Errorf("%w: %s", ErrBadSignature, swSignatureHeader)
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

func (s *standardWebhooks) Normalize(_ context.Context, v Verified) (Batch, error) {
	ch, err := s.payload.change(s.origin, v.Request, "standardwebhooks", v.Identity.ID)
	if err != nil {
		return Batch{}, err
	}
	return Batch{Changes: []schemas.Change{ch}}, nil
}

// ReplayWindow is twice the tolerance: a delivery accepted now may carry
// a time up to 5 minutes ahead, and stays acceptable until 5 minutes after
// that.
func (*standardWebhooks) ReplayWindow() time.Duration { return 2 * swTolerance }

// swReplayKey is the hash of the signed bytes, id "." timestamp "." body.
func swReplayKey(id, ts string, body []byte) string {
	h := sha256.New()
	for _, part := range [][]byte{[]byte(id), {'.'}, []byte(ts), {'.'}, body} {
		h.Write(part)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Sign signs body as a new message (a random webhook-id, the current time)
// with the source's first key.
func (s *standardWebhooks) Sign(body []byte) http.Header {
	id := "msg_" + rand.Text()
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	h.Set(swIDHeader, id)
	h.Set(swTimestampHeader, ts)
	h.Set(swSignatureHeader, stdwebhooks.Header(s.keys[:1], id, ts, body))
	return h
}
