package ingest

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/productstream/productstream/schemas"
)

// aicommerceProvider is AICommerce's store webhook
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
// AICommerce takes no options.
func aicommerceProvider() Registration {
	return Registration{Name: "aicommerce", MaxBody: aicommerceMaxBody, New: bodySignedFactory(
		hmacVerifier{header: aicommerceSignatureHeader, prefix: "sha256="},
		func(b bodySigned) Adapter { return &aicommerce{b} })}
}

const (
	aicommerceSignatureHeader = "X-Webhook-Signature"
	aicommerceMaxBody         = 256 << 10
)

// aicommerce is a configured AICommerce source. A retry resends the same
// body, whose timestamp tells it apart from a later event of the same
// kind.
type aicommerce struct{ bodySigned }

var _ Signer = (*aicommerce)(nil)

func (a *aicommerce) Normalize(_ context.Context, v Verified) (Batch, error) {
	o, err := parseObject(v.Body, a.maxDepth)
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
	// An event type can become an analytics event's key (its subject).
	if err := checkID(o["event"], event); err != nil {
		return Batch{}, fieldInvalid("event", "", err.Error())
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

	eventID := v.Identity.ID
	switch event {
	case "product.added", "product.updated":
		id, found, err := firstID(true, productID...)
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
			Source:     a.name,
			Provider:   "aicommerce",
			Namespace:  a.namespace,
			EventType:  event,
			Resource:   "product",
			ProductID:  id,
			ReceivedAt: v.Received,
			OccurredAt: ts,
			Fields: schemas.Fields{
				Title:       text("name"),
				Description: text("description"),
				Price:       price,
				Currency:    text("currency"),
				URL:         text("url"),
				ImageURL:    text("imageUrl", "image"),
			},
			Raw: bodyText(v.Body),
		}}}, nil
	}

	// Everything else is an analytics event about a subject.
	var subject string
	var found bool
	switch {
	case event == "product.viewed":
		if subject, found, err = firstID(true, productID...); err == nil && !found {
			err = fieldMissing("data.productId", "")
		}
	case strings.HasPrefix(event, "chat."):
		if subject, found, err = firstID(true, idCandidate{data, "sessionId", "data.sessionId"}); err == nil && !found {
			err = fieldMissing("data.sessionId", "")
		}
	case event == "analytics.daily":
		if subject, found, err = firstID(true, idCandidate{data, "storeId", "data.storeId"}, idCandidate{data, "date", "data.date"}); err == nil && !found {
			err = fieldMissing("data.storeId", "")
		}
	default:
		if subject, found, err = firstID(true, idCandidate{data, "storeId", "data.storeId"}); err == nil && !found {
			subject = event
		}
	}
	if err != nil {
		return Batch{}, err
	}
	return Batch{Events: []schemas.Event{{
		EventID:    eventID,
		Source:     a.name,
		Provider:   "aicommerce",
		Namespace:  a.namespace,
		EventType:  event,
		Subject:    subject,
		ReceivedAt: v.Received,
		OccurredAt: ts,
		Raw:        bodyText(v.Body),
	}}}, nil
}
