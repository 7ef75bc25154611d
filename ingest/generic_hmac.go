package ingest

import (
	"context"
	"net/http"
	"strings"
	"time"

	"github.com/productstream/productstream/config"
	"github.com/productstream/productstream/schemas"
)

// hmacProvider is a configurable HMAC-SHA256 source (provider "hmac") for
// senders that have no adapter of their own but sign like most do
// (docs/providers-configurable.md has the Shopify and GitHub presets):
//
//	POST /webhooks/{name}
//	<options.header>: <options.prefix><hex or base64 of HMAC-SHA256(secret, signed bytes)>
//	<options.timestamp_header>: <unix seconds>   (only when options.signed uses {timestamp})
//
// The signed bytes are the raw body, or options.signed with {timestamp}
// replaced by the timestamp header's exact value and {body} by the raw
// body ("{timestamp}.{body}"). A signed timestamp must be within
// options.tolerance (default 5m) of the arrival time, either way. The
// header carries one signature; Stripe's multi-valued "t=...,v1=..."
// header is not understood. The body is one JSON object; options.payload
// says where its product id and event type are. Answers: 202 accepted; 400
// missing or malformed signature or timestamp, or a body without the id;
// 401 wrong signature or stale timestamp; 413 over the limit (default
// 1 MiB).
func hmacProvider() Registration {
	return Registration{Name: "hmac", MaxBody: configurableMaxBody, New: newHMACSource}
}

const (
	// configurableMaxBody is the default body limit of the configurable
	// providers.
	configurableMaxBody = 1 << 20
	// defaultHMACTolerance is how far a signed timestamp may be from the
	// arrival time when the tolerance is not set.
	defaultHMACTolerance = 5 * time.Minute
)

// hmacOptions are the hmac provider's options: the signature scheme and,
// under payload, the payload mapping.
type hmacOptions struct {
	config.HMAC `yaml:",inline"`
	Payload     *config.Payload `yaml:"payload"`
}

// hmacSource is a configured hmac source.
type hmacSource struct {
	origin
	verifier *hmacVerifier
	idHeader string // "" when the sender sends no delivery id
	payload  *payloadMapping
}

// The optional interfaces the pipeline looks for: dropping one by accident
// would silently turn off signing or replay memory.
var (
	_ Signer      = (*hmacSource)(nil)
	_ ReplayGuard = (*hmacSource)(nil)
)

// newHMACSource compiles the signature settings and the payload mapping,
// from options or from the deprecated hmac and payload blocks.
func newHMACSource(cfg config.Source, _ Deps) (Adapter, error) {
	keys, err := secretKeys(cfg)
	if err != nil {
		return nil, err
	}
	var o hmacOptions
	scheme, payload := "hmac", "payload"
	switch {
	case hasOptions(cfg):
		if err := decodeOptions(cfg, &o); err != nil {
			return nil, err
		}
		scheme, payload = optionsKey, optionsKey+".payload"
	case cfg.HMAC == nil:
		return nil, badField("hmac", "is required: provider hmac needs its options (at least options.header and options.payload.id_pointer)")
	default:
		o = hmacOptions{HMAC: *cfg.HMAC, Payload: cfg.Payload}
	}
	v, err := compileHMACScheme(o.HMAC, keys, scheme)
	if err != nil {
		return nil, err
	}
	s := &hmacSource{origin: originOf(cfg), verifier: v, idHeader: o.EventIDHeader}
	if s.payload, err = compilePayload(o.Payload, payload); err != nil {
		return nil, err
	}
	return s, nil
}

// compileHMACScheme compiles h into a verifier of keys; at names the block
// holding h's keys ("options", or the deprecated "hmac") in errors.
func compileHMACScheme(h config.HMAC, keys []*macKey, at string) (*hmacVerifier, error) {
	field := func(key string) string { return at + "." + key }
	v := &hmacVerifier{header: h.Header, prefix: h.Prefix, tsHeader: h.TimestampHeader, tolerance: h.Tolerance, keys: keys}
	switch {
	case h.Header == "":
		return nil, badField(field("header"), "is required")
	case !validHeaderName(h.Header):
		return nil, badField(field("header"), "%q is not a valid header name", h.Header)
	}
	switch h.Encoding {
	case "", "hex":
	case "base64":
		v.base64 = true
	default:
		return nil, badField(field("encoding"), "%q is neither hex nor base64", h.Encoding)
	}
	if strings.ContainsAny(h.Prefix, "\r\n") {
		return nil, badField(field("prefix"), "must not contain a line break")
	}
	var err error
	if v.signed, err = compileSignedTemplate(h.Signed); err != nil {
		return nil, badField(field("signed"), "%v", err)
	}
	switch usesTS := v.signed.usesTimestamp(); {
	case usesTS && h.TimestampHeader == "":
		return nil, badField(field("timestamp_header"), "is required when %s uses {timestamp}", field("signed"))
	case !usesTS && h.TimestampHeader != "":
		return nil, badField(field("timestamp_header"), "is set but %s does not use {timestamp}: an unsigned timestamp proves nothing", field("signed"))
	case h.TimestampHeader != "" && !validHeaderName(h.TimestampHeader):
		return nil, badField(field("timestamp_header"), "%q is not a valid header name", h.TimestampHeader)
	case h.Tolerance < 0:
		return nil, badField(field("tolerance"), "must not be negative")
	case h.Tolerance > 0 && !usesTS:
		return nil, badField(field("tolerance"), "applies only when %s uses {timestamp}", field("signed"))
	case h.EventIDHeader != "" && !validHeaderName(h.EventIDHeader):
		return nil, badField(field("event_id_header"), "%q is not a valid header name", h.EventIDHeader)
	}
	if v.tsHeader != "" && v.tolerance == 0 {
		v.tolerance = defaultHMACTolerance
	}
	return v, nil
}

// Verify checks the signature (and signed timestamp). The delivery id is
// the event_id_header value, when the source names one and the delivery
// carries it; the signature does not cover it. Without it an identical
// body may be a real repeat, so nothing is deduplicated.
func (s *hmacSource) Verify(_ context.Context, req *Request) (Verified, error) {
	if err := s.verifier.verify(req); err != nil {
		return Verified{}, err
	}
	v := Verified{Request: req, ReplayKey: s.verifier.replayKey(req)}
	if s.idHeader != "" {
		v.Identity.ID = req.Header.Get(s.idHeader)
	}
	return v, nil
}

// Normalize maps the body; the event id is the delivery id, else derived
// from the body.
func (s *hmacSource) Normalize(_ context.Context, v Verified) (Batch, error) {
	eventID := v.Identity.ID
	if eventID != "" {
		if err := checkHeaderValue(s.idHeader, eventID); err != nil {
			return Batch{}, err
		}
	} else {
		eventID = bodyEventID(s.name, v.Body)
	}
	ch, err := s.payload.change(s.origin, v.Request, "hmac", eventID)
	if err != nil {
		return Batch{}, err
	}
	return Batch{Changes: []schemas.Change{ch}}, nil
}

// ReplayWindow is twice the tolerance when a timestamp is signed.
func (s *hmacSource) ReplayWindow() time.Duration { return s.verifier.replayWindow() }

// Sign signs body with the source's first secret; a signed timestamp is
// the current time.
func (s *hmacSource) Sign(body []byte) http.Header {
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	s.verifier.sign(h, body, time.Now())
	return h
}

// validHeaderName reports whether s is an HTTP field name (RFC 9110 token).
func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0 {
			continue
		}
		return false
	}
	return true
}
