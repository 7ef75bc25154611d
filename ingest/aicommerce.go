package ingest

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"github.com/productstream/productstream/config"
	"github.com/productstream/productstream/schemas"
)

// aicommerce is AICommerce's store webhook
// (shared/providers/aicommerce-webhooks.txt), served at /webhooks/{name}
// only:
//
//	X-Webhook-Signature: sha256=<hex(HMAC-SHA256(secret, raw body))>
//	Content-Type: application/json; body at most 256 KiB
//
// The prefix is required. The body is {event, timestamp, data}; a
// "signature" field in the body is not authentication and is ignored.
// product.added and product.updated become a product change; every other
// event (product.viewed, chat.*, analytics.daily, and event types added
// later) goes to the events topic. AICommerce retries a non-2xx answer up
// to 3 times with the same body, so the body identifies the delivery.
type aicommerce struct{}

const (
	aicommerceSignatureHeader = "X-Webhook-Signature"
	aicommerceMaxBody         = 256 << 10
)

func (aicommerce) Name() string          { return "aicommerce" }
func (aicommerce) DefaultMaxBody() int64 { return aicommerceMaxBody }
func (aicommerce) Routes() []string      { return nil }

func (aicommerce) Check(i int, src config.Source) error { return needSecrets(i, src) }

func (aicommerce) Verify(_ context.Context, src *Source, req *Request) error {
	presented := req.Header.Get(aicommerceSignatureHeader)
	if presented == "" {
		return fmt.Errorf("%w: %s header is required", ErrMissingSignature, aicommerceSignatureHeader)
	}
	digest, ok := strings.CutPrefix(presented, "sha256=")
	if !ok || digest == "" {
		return fmt.Errorf("%w: %s must be sha256=<hex>", ErrMalformedSignature, aicommerceSignatureHeader)
	}
	return verifyHexHMAC(aicommerceSignatureHeader, digest, src.secrets, req.Body)
}

// DeliveryID is the body's hash: a retry resends the same body, whose
// timestamp tells it apart from a later event of the same kind.
func (aicommerce) DeliveryID(src *Source, req *Request) Identity {
	return Identity{ID: bodyEventID(src.Name, req.Body), Signed: true}
}

func (aicommerce) Normalize(_ context.Context, src *Source, req *Request) (Batch, error) {
	o, err := parseObject(req.Body, src.maxJSONDepth())
	if err != nil {
		return Batch{}, err
	}
	event, err := needString(o, "event", "")
	if err != nil {
		return Batch{}, err
	}
	if len(event) > maxIDLen {
		return Batch{}, fieldInvalid("event", "", fmt.Sprintf("longer than %d bytes", maxIDLen))
	}
	ts, err := needTime(o, "timestamp", "")
	if err != nil {
		return Batch{}, err
	}
	if isNull(o["data"]) {
		return Batch{}, fieldMissing("data", "")
	}
	var data, product object
	if err := json.Unmarshal(o["data"], &data); err != nil || data == nil {
		return Batch{}, fieldInvalid("data", "", "must be an object")
	}
	_ = json.Unmarshal(data["product"], &product) // nil unless an object
	productID := []idCandidate{{data, "productId", "data.productId"}, {product, "id", "data.product.id"}, {data, "id", "data.id"}}

	eventID := bodyEventID(src.Name, req.Body)
	switch event {
	case "product.added", "product.updated":
		id, found, err := firstID(productID...)
		if err != nil {
			return Batch{}, err
		}
		if !found {
			return Batch{}, fieldMissing("data.productId", "")
		}
		// A field is read from data, else from data.product.
		text := func(keys ...string) *string {
			if s := data.text(keys...); s != nil {
				return s
			}
			return product.text(keys...)
		}
		price := data.decimal("price")
		if price == nil {
			price = product.decimal("price")
		}
		return Batch{Changes: []schemas.Change{{
			EventID:    eventID,
			Source:     src.Name,
			Provider:   "aicommerce",
			Namespace:  src.Namespace,
			EventType:  event,
			Resource:   "product",
			ProductID:  id,
			ReceivedAt: req.Received,
			OccurredAt: ts,
			Fields: schemas.Fields{
				Title:       text("name"),
				Description: text("description"),
				Price:       price,
				Currency:    text("currency"),
				URL:         text("url"),
				ImageURL:    text("imageUrl", "image"),
			},
			Raw: string(req.Body),
		}}}, nil
	}

	// Everything else is an analytics event about a subject.
	var subject string
	var found bool
	switch {
	case event == "product.viewed":
		if subject, found, err = firstID(productID...); err == nil && !found {
			err = fieldMissing("data.productId", "")
		}
	case strings.HasPrefix(event, "chat."):
		if subject, found, err = firstID(idCandidate{data, "sessionId", "data.sessionId"}); err == nil && !found {
			err = fieldMissing("data.sessionId", "")
		}
	case event == "analytics.daily":
		if subject, found, err = firstID(idCandidate{data, "storeId", "data.storeId"}, idCandidate{data, "date", "data.date"}); err == nil && !found {
			err = fieldMissing("data.storeId", "")
		}
	default:
		if subject, found, err = firstID(idCandidate{data, "storeId", "data.storeId"}); err == nil && !found {
			subject = event
		}
	}
	if err != nil {
		return Batch{}, err
	}
	return Batch{Events: []schemas.Event{{
		EventID:    eventID,
		Source:     src.Name,
		Provider:   "aicommerce",
		Namespace:  src.Namespace,
		EventType:  event,
		Subject:    subject,
		ReceivedAt: req.Received,
		OccurredAt: ts,
		Raw:        string(req.Body),
	}}}, nil
}

// idCandidate is one place an id may be: o[key], called name in errors.
type idCandidate struct {
	o         object
	key, name string
}

// firstID returns the first of fields that is present and not null, as an
// id (a string or an integer). A present field that is no id is an error
// naming it; found is false when none is present.
func firstID(fields ...idCandidate) (id string, found bool, err error) {
	for _, f := range fields {
		raw := f.o[f.key]
		if isNull(raw) {
			continue
		}
		id, err := idText(f.name, "", raw, true)
		return id, true, err
	}
	return "", false, nil
}

func (aicommerce) Sign(src *Source, body []byte) http.Header {
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	h.Set(aicommerceSignatureHeader, "sha256="+hex.EncodeToString(hmacSHA256(src.secrets[0], body)))
	return h
}
