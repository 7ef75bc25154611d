package ingest

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/productstream/productstream/schemas"
)

// iimmpactProvider is IIMMPACT's catalog webhook
// (shared/providers/iimmpact-catalog-webhook-events.txt), served at
// /webhooks/{name} only:
//
//	X-Webhook-Signature: sha256=<hex(HMAC-SHA256(secret, raw body))>
//	Content-Type: application/json; body at most 256 KiB
//
// Bare hex without the prefix is accepted too, as IIMMPACT's own sample
// verifier accepts it; any other prefix is malformed. The body is one event
// {type, resource, id, timestamp, data}: type "<kind>.<created|updated|deleted>"
// for kind product, option, category or group, resource the kind's plural,
// data the resource for created and updated and null for deleted. It
// becomes one change of Resource <kind>, keyed by id; only products carry
// typed fields. IIMMPACT takes no options.
func iimmpactProvider() Registration {
	return Registration{Name: "iimmpact", MaxBody: iimmpactMaxBody, New: bodySignedFactory(
		hmacVerifier{header: iimmpactSignatureHeader, prefix: "sha256=", prefixOptional: true},
		func(b bodySigned) Adapter { return &iimmpact{b} })}
}

const (
	iimmpactSignatureHeader = "X-Webhook-Signature"
	iimmpactMaxBody         = 256 << 10
)

// iimmpactResources maps each event kind to its resource name.
var iimmpactResources = map[string]string{
	"product":  "products",
	"option":   "options",
	"category": "categories",
	"group":    "groups",
}

// iimmpact is a configured IIMMPACT source. An event names its resource
// and the time of the change, so an identical body is a retry.
type iimmpact struct{ bodySigned }

var _ Signer = (*iimmpact)(nil)

func (s *iimmpact) Normalize(_ context.Context, v Verified) (Batch, error) {
	o, err := parseObject(v.Body, s.maxDepth)
	if err != nil {
		return Batch{}, err
	}
	typ, err := needString(o, "type", "")
	if err != nil {
		return Batch{}, err
	}
	kind, action, _ := strings.Cut(typ, ".")
	plural, known := iimmpactResources[kind]
	if !known || action != "created" && action != "updated" && action != "deleted" {
		return Batch{}, fieldInvalid("type", "", "must be <product|option|category|group>.<created|updated|deleted>")
	}
	resource, err := needString(o, "resource", "")
	if err != nil {
		return Batch{}, err
	}
	if resource != plural {
		return Batch{}, fieldInvalid("resource", "", fmt.Sprintf("type %s needs resource %s", typ, plural))
	}
	id, found, err := firstID(false, idCandidate{o, "id", "id"})
	if err != nil {
		return Batch{}, err
	}
	if !found {
		return Batch{}, fieldMissing("id", "")
	}
	ts, err := needTime(o, "timestamp", "")
	if err != nil {
		return Batch{}, err
	}
	deleted := action == "deleted"
	var data object
	raw, present := o["data"]
	switch {
	case deleted && !isNull(raw):
		return Batch{}, fieldInvalid("data", "", "must be null for "+typ)
	case deleted:
	case !present:
		return Batch{}, fieldMissing("data", "")
	default:
		if err := json.Unmarshal(raw, &data); err != nil || data == nil {
			return Batch{}, fieldInvalid("data", "", "must be an object for "+typ)
		}
	}
	ch := schemas.Change{
		EventID:    v.Identity.ID,
		Source:     s.name,
		Provider:   "iimmpact",
		Namespace:  s.namespace,
		EventType:  typ,
		Resource:   kind,
		ProductID:  id,
		Deleted:    deleted,
		ReceivedAt: v.Received,
		OccurredAt: ts,
		Raw:        bodyText(v.Body),
	}
	if kind == "product" && data != nil {
		ch.Fields = schemas.Fields{
			Title:        data.text("display_name", "name"),
			ImageURL:     data.text("image_url"),
			SKU:          data.text("product_code"),
			Availability: iimmpactActive(data),
		}
	}
	return Batch{Changes: []schemas.Change{ch}}, nil
}

// iimmpactActive maps is_active to "active" or "inactive" (nil unless a
// boolean).
func iimmpactActive(data object) *string {
	var active bool
	if raw := data["is_active"]; isNull(raw) || json.Unmarshal(raw, &active) != nil {
		return nil
	}
	s := "inactive"
	if active {
		s = "active"
	}
	return &s
}
