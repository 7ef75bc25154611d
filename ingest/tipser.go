package ingest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/productstream/productstream/config"
	"github.com/productstream/productstream/schemas"
)

// tipserProvider is Tipser's Product Webhook API (shared/providers/
// tipser-product-webhook-api-sns.txt), delivered by AWS SNS:
//
//	POST /webhooks/{name}
//	Content-Type: text/plain (SNS's default; the raw bytes are read)
//	x-amz-sns-message-type, x-amz-sns-message-id, x-amz-sns-topic-arn
//	body: the SNS JSON envelope, signed by AWS (signatures.md, "AWS SNS")
//
// A Notification's Message is one Tipser event {"eventType", "data"}; each
// becomes one change. A SubscriptionConfirmation is confirmed by visiting its
// SubscribeURL; an UnsubscribeConfirmation is only logged. With raw message
// delivery (x-amz-sns-rawdelivery: true) the body is the Tipser event
// itself, unsigned: accepted only from a source with basic auth.
//
// Options (config.SNS): topic_arns (required), signature_versions,
// strict, max_age, trusted_cert_hosts; the deprecated sns block holds the
// same keys.
//
// Answers: 202 accepted (an empty batch for confirmations); 400 malformed
// envelope, unknown Type or eventType, header and body disagreeing, bad
// SubscribeURL query or path, undecodable Signature; 401 SignatureVersion
// not accepted, untrusted SigningCertURL, certificate not a usable RSA
// certificate, signature mismatch, message older than max_age or more than
// 5 minutes ahead, raw delivery without basic auth; 403 TopicArn not
// allowed, SubscribeURL host not allowed; 413 over 300 KiB; 503 certificate
// fetch or confirmation failed for now, no certificate fetch slot free in
// time, or Kafka did not acknowledge (SNS retries).
func tipserProvider() Registration {
	return Registration{Name: "tipser", MaxBody: tipserMaxBody, New: newTipser}
}

const tipserMaxBody = 300 << 10 // SNS messages are at most 256 KiB, plus the envelope

// tipser is a configured Tipser source.
type tipser struct {
	origin
	policy *snsPolicy
	// basicAuth says the source requires basic auth, which the server
	// checks before Verify: the only way raw delivery is accepted.
	basicAuth bool
	// client makes the outbound requests: certificate fetches and
	// subscription confirmations. It never follows redirects. It and the
	// certificate cache are shared by every SNS source (Deps.sns).
	client *http.Client
	certs  *certCache
	log    *slog.Logger
}

// The optional interfaces the pipeline looks for: dropping one by accident
// would silently turn off signing or replay memory.
var (
	_ Signer      = (*tipser)(nil)
	_ ReplayGuard = (*tipser)(nil)
)

// newTipser checks the SNS settings (options, or the deprecated sns
// block): at least one topic ARN; secrets are not used (AWS signs with its
// own key).
func newTipser(cfg config.Source, deps Deps) (Adapter, error) {
	o, at := cfg.SNS, "sns"
	if hasOptions(cfg) {
		o, at = &config.SNS{}, optionsKey
		if err := decodeOptions(cfg, o); err != nil {
			return nil, err
		}
	}
	if err := checkSNSConfig(o, at); err != nil {
		return nil, err
	}
	out := deps.sns()
	return &tipser{origin: originOf(cfg), policy: newSNSPolicy(o), basicAuth: cfg.BasicAuth != nil,
		client: out.client, certs: out.certs, log: deps.log()}, nil
}

// isRawDelivery reports whether SNS delivered the message raw, without its
// signed envelope.
func isRawDelivery(h http.Header) bool {
	return strings.EqualFold(strings.TrimSpace(h.Get(snsHeaderRawDelivery)), "true")
}

// Verify checks, in this order and before any outbound request: the
// envelope and its headers, the Type, the SignatureVersion, the Signature's
// encoding, the TopicArn, the SigningCertURL, the Timestamp (at most
// max_age old, at most 5 minutes ahead) and, for a SubscriptionConfirmation,
// the SubscribeURL. Only then is the certificate fetched (or taken from the
// cache, or a recent failure answered again) and the signature checked.
//
// The delivery id is the envelope's MessageId, which SNS reuses when it
// retries and which the signature covers; it is also the replay key. A raw
// delivery's x-amz-sns-message-id header is covered by nothing (the edge
// pairs it with the body), and binds no time. A Tipser body names neither
// its time nor an id, so it never identifies a delivery by itself.
func (t *tipser) Verify(ctx context.Context, req *Request) (Verified, error) {
	if isRawDelivery(req.Header) {
		if err := t.verifyRawDelivery(req.Header); err != nil {
			return Verified{}, err
		}
		return Verified{Request: req, Identity: Identity{ID: req.Header.Get(snsHeaderMessageID)}}, nil
	}
	env, err := parseSNSEnvelope(req.Body)
	if err != nil {
		return Verified{}, err
	}
	if err := env.checkHeaders(req.Header); err != nil {
		return Verified{}, err
	}
	if err := env.validate(); err != nil {
		return Verified{}, err
	}
	pol := t.policy
	if !pol.acceptsVersion(env.SignatureVersion) {
		return Verified{}, fmt.Errorf("%w: SignatureVersion %q is not accepted by this source", ErrBadSignature, snsClip(env.SignatureVersion, 16))
	}
	sig, err := decodeSNSSignature(env.Signature)
	if err != nil {
		return Verified{}, err
	}
	if !pol.allowsTopic(env.TopicArn) {
		return Verified{}, fmt.Errorf("%w: TopicArn is not allowed for this source", ErrForbidden)
	}
	certURL, err := pol.checkCertURL(env.SigningCertURL, env.TopicArn)
	if err != nil {
		return Verified{}, err
	}
	if err := pol.checkAge(env.sent, req.Received); err != nil {
		return Verified{}, err
	}
	if env.Type == snsSubscriptionConfirmation {
		if env.subscribe, err = pol.checkSubscribeURL(env); err != nil {
			return Verified{}, err
		}
	}
	signed, err := env.stringToSign()
	if err != nil {
		return Verified{}, err
	}
	key, err := t.certs.key(ctx, certURL.String())
	if err != nil {
		return Verified{}, err
	}
	if err := verifySNSSignature(key, env.SignatureVersion, signed, sig); err != nil {
		return Verified{}, err
	}
	return Verified{Request: req, Identity: Identity{ID: env.MessageID, Signed: true}, ReplayKey: env.MessageID, envelope: env}, nil
}

// verifyRawDelivery accepts an unsigned raw delivery only from a source
// with basic auth, which the server has already checked. The unsigned
// headers then still have to name a Notification from an allowed topic.
func (t *tipser) verifyRawDelivery(h http.Header) error {
	if !t.basicAuth {
		return fmt.Errorf("%w: raw message delivery carries no signature; it needs a source with basic_auth", ErrUnauthorized)
	}
	// The message id is the delivery's only identity: a Tipser body names
	// no time or id, so the same body can be a later, real change.
	if id := h.Get(snsHeaderMessageID); id == "" {
		return fmt.Errorf("%w: a raw delivery needs the %s header", ErrInvalidPayload, snsHeaderMessageID)
	} else if err := checkHeaderValue(snsHeaderMessageID, id); err != nil {
		return err
	}
	for _, v := range h.Values(snsHeaderType) {
		if v != snsNotification {
			return fmt.Errorf("%w: a raw delivery must be a Notification", ErrInvalidPayload)
		}
	}
	for _, v := range h.Values(snsHeaderTopicARN) {
		if !t.policy.allowsTopic(v) {
			return fmt.Errorf("%w: TopicArn is not allowed for this source", ErrForbidden)
		}
	}
	return nil
}

// ReplayWindow is how long a signed Notification stays acceptable (its
// max age plus the allowed clock skew).
func (t *tipser) ReplayWindow() time.Duration { return t.policy.acceptWindow() }

// Normalize turns a Notification into its one change, confirms a
// SubscriptionConfirmation (an empty batch) and logs an
// UnsubscribeConfirmation (an empty batch), from the envelope Verify
// parsed.
func (t *tipser) Normalize(ctx context.Context, v Verified) (Batch, error) {
	env := v.envelope
	if env == nil { // raw delivery: the body is the Tipser event
		ch, err := t.change(v.Body, v.Identity.ID, time.Time{}, v.Received)
		if err != nil {
			return Batch{}, err
		}
		return Batch{Changes: []schemas.Change{ch}}, nil
	}
	switch env.Type {
	case snsSubscriptionConfirmation:
		return Batch{}, t.confirm(ctx, env)
	case snsUnsubscribeConfirmation:
		t.log.Info("SNS unsubscribe confirmation received; not visiting its SubscribeURL",
			"source", t.name, "topic_arn", env.TopicArn, "message_id", env.MessageID)
		return Batch{}, nil
	}
	ch, err := t.change([]byte(env.Message), env.MessageID, env.sent, v.Received)
	if err != nil {
		return Batch{}, err
	}
	return Batch{Changes: []schemas.Change{ch}}, nil
}

// confirm visits the SubscribeURL Verify checked, once. A failure wraps
// ErrUnavailable, so SNS sends the confirmation again.
func (t *tipser) confirm(ctx context.Context, env *snsEnvelope) error {
	u := env.subscribe
	ctx, cancel := context.WithTimeout(ctx, outboundTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return fmt.Errorf("%w: SubscribeURL: %w", ErrInvalidPayload, err)
	}
	resp, err := t.client.Do(req)
	if err != nil {
		t.log.Warn("SNS subscription confirmation failed", "source", t.name, "topic_arn", env.TopicArn, "err", redactURLError(err))
		return fmt.Errorf("%w: confirming the SNS subscription failed", ErrUnavailable)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, snsMaxCertBytes))
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%w: confirming the SNS subscription answered %d", ErrUnavailable, resp.StatusCode)
	}
	t.log.Info("SNS subscription confirmed", "source", t.name, "topic_arn", env.TopicArn, "message_id", env.MessageID)
	return nil
}

// redactURLError drops the URL, whose query holds the subscription Token,
// from a client error.
func redactURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("%s: %w", ue.Op, ue.Err)
	}
	return err
}

// tipserEvents says how each Tipser eventType becomes a change: its
// resource, the data field holding its id (the record key is
// "<namespace>:<id>"), other ids it must carry, and whether it carries
// collectionsIds. The other ids stay in Raw only.
var tipserEvents = map[string]struct {
	resource    string
	idField     string
	otherIDs    []string
	collections bool
}{
	"product-changed":               {resource: "product", idField: "productId"},
	"product-customization-changed": {resource: "product", idField: "productId", otherIDs: []string{"productCustomizationId"}},
	"product-in-collection-changed": {resource: "product", idField: "productId", collections: true},
	"pos-collections-changed":       {resource: "pos", idField: "posId", collections: true},
	"collection-changed":            {resource: "collection", idField: "collectionId"},
	"collection-added":              {resource: "collection", idField: "collectionId"},
}

// change turns one Tipser event, msg, into its change. eventID is the SNS
// MessageId (the message id header for raw delivery); occurred is the SNS
// Timestamp (zero for raw delivery). Raw is msg byte for byte. Errors wrap
// ErrInvalidPayload and name the field.
func (t *tipser) change(msg []byte, eventID string, occurred, received time.Time) (schemas.Change, error) {
	o, err := parseObject(msg, t.maxDepth)
	if err != nil {
		return schemas.Change{}, fmt.Errorf("Tipser message: %w", err)
	}
	var eventType string
	if raw, ok := o["eventType"]; !ok || string(raw) == "null" {
		return schemas.Change{}, fmt.Errorf("%w: missing field eventType", ErrInvalidPayload)
	} else if err := json.Unmarshal(raw, &eventType); err != nil {
		return schemas.Change{}, fmt.Errorf("%w: field eventType must be a string", ErrInvalidPayload)
	}
	spec, ok := tipserEvents[eventType]
	if !ok {
		return schemas.Change{}, fmt.Errorf("%w: unknown Tipser eventType %q", ErrInvalidPayload, snsClip(eventType, 64))
	}
	rawData, ok := o["data"]
	if !ok || string(rawData) == "null" {
		return schemas.Change{}, fmt.Errorf("%w: missing field data", ErrInvalidPayload)
	}
	var data object
	if err := json.Unmarshal(rawData, &data); err != nil || data == nil {
		return schemas.Change{}, fmt.Errorf("%w: field data must be a JSON object", ErrInvalidPayload)
	}
	id, err := data.tipserID(spec.idField)
	if err != nil {
		return schemas.Change{}, err
	}
	for _, f := range spec.otherIDs {
		if _, err := data.tipserID(f); err != nil {
			return schemas.Change{}, err
		}
	}
	var collections []string
	if spec.collections {
		if collections, err = data.tipserStrings("collectionsIds"); err != nil {
			return schemas.Change{}, err
		}
	}
	return schemas.Change{
		EventID:    eventID,
		Source:     t.name,
		Provider:   "tipser",
		Namespace:  t.namespace,
		EventType:  eventType,
		Resource:   spec.resource,
		ProductID:  id,
		ReceivedAt: received,
		OccurredAt: occurred,
		// Tipser's events name what changed, never its data.
		Notice:        true,
		CollectionIDs: collections,
		Raw:           string(msg),
	}, nil
}

// tipserID returns the id in key of a Tipser event's data object, naming
// the field as data.<key> in errors.
func (o object) tipserID(key string) (string, error) {
	return idField("data."+key, o[key])
}

// tipserStrings returns the array of non-empty strings that key of a Tipser
// event's data object holds (it may be empty: a snapshot of no
// collections).
func (o object) tipserStrings(key string) ([]string, error) {
	raw, ok := o[key]
	if !ok || string(raw) == "null" {
		return nil, fmt.Errorf("%w: missing field data.%s", ErrInvalidPayload, key)
	}
	var items []json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		return nil, fmt.Errorf("%w: field data.%s must be an array of strings", ErrInvalidPayload, key)
	}
	out := make([]string, 0, len(items))
	for i, it := range items {
		var s string
		if len(it) == 0 || it[0] != '"' || json.Unmarshal(it, &s) != nil || s == "" || len(s) > maxIDLen {
			return nil, fmt.Errorf("%w: field data.%s must be an array of non-empty strings", ErrInvalidPayload, key)
		}
		if err := checkID(it, s); err != nil {
			return nil, fmt.Errorf("%w: field data.%s[%d] %w", ErrInvalidPayload, key, i, err)
		}
		out = append(out, s)
	}
	return out, nil
}

// Sign cannot sign: an SNS signature needs AWS's private key, so
// `productstream sign` prints only the headers SNS sends with a
// Notification. Tests sign envelopes with their own key and certificate.
func (*tipser) Sign([]byte) http.Header {
	h := http.Header{}
	h.Set("Content-Type", "text/plain")
	h.Set(snsHeaderType, snsNotification)
	return h
}
