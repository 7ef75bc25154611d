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

// iimmpact is IIMMPACT's catalog webhook
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
// typed fields.
type iimmpact struct{}

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

func (iimmpact) Name() string          { return "iimmpact" }
func (iimmpact) DefaultMaxBody() int64 { return iimmpactMaxBody }
func (iimmpact) Routes() []string      { return nil }

func (iimmpact) Check(i int, src config.Source) error { return needSecrets(i, src) }

func (iimmpact) Verify(_ context.Context, src *Source, req *Request) error {
	presented := req.Header.Get(iimmpactSignatureHeader)
	if digest, ok := strings.CutPrefix(presented, "sha256="); ok {
		if digest == "" {
			return fmt.Errorf("%w: %s has a prefix and no digest", ErrMalformedSignature, iimmpactSignatureHeader)
		}
		presented = digest
	} else if strings.Contains(presented, "=") {
		return fmt.Errorf("%w: %s must be sha256=<hex>", ErrMalformedSignature, iimmpactSignatureHeader)
	}
	return verifyHexHMAC(iimmpactSignatureHeader, presented, src.secrets, req.Body)
}

// DeliveryID is the body's hash: an event names its resource and the time
// of the change, so an identical body is a retry.
func (iimmpact) DeliveryID(src *Source, req *Request) Identity {
	return Identity{ID: bodyEventID(src.Name, req.Body), Signed: true}
}

func (iimmpact) Normalize(_ context.Context, src *Source, req *Request) (Batch, error) {
	o, err := parseObject(req.Body, src.maxJSONDepth())
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
	if isNull(o["id"]) {
		return Batch{}, fieldMissing("id", "")
	}
	id, err := idText("id", "", o["id"], false)
	if err != nil {
		return Batch{}, err
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
		EventID:    bodyEventID(src.Name, req.Body),
		Source:     src.Name,
		Provider:   "iimmpact",
		Namespace:  src.Namespace,
		EventType:  typ,
		Resource:   kind,
		ProductID:  id,
		Deleted:    deleted,
		ReceivedAt: req.Received,
		OccurredAt: ts,
		Raw:        string(req.Body),
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

func (iimmpact) Sign(src *Source, body []byte) http.Header {
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	h.Set(iimmpactSignatureHeader, "sha256="+hex.EncodeToString(hmacSHA256(src.secrets[0], body)))
	return h
}
