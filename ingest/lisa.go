package ingest

import (
	"context"
	"encoding/hex"
	"fmt"
	"net/http"
	"strings"

	"github.com/productstream/productstream/config"
	"github.com/productstream/productstream/schemas"
)

// lisa is the LiSA Product Update Notification API
// (shared/providers/lisa-product-update-notification-api.md):
//
//	POST /plugin-notifications/{id}/updates
//	Authorization: ApiKey <key>
//	X-Hmac-Signature: hex(HMAC-SHA256(secret, raw body)), either case
//	Content-Type: application/json; body at most 192 KB
//
// The body is one JSON object describing one product, with at least
// productId. Every notification is an update (LiSA has no delete). Answers:
// 202 accepted, 400 missing or malformed signature, 401 wrong signature or
// API key, 413 over the limit.
type lisa struct{}

const (
	lisaSignatureHeader = "X-Hmac-Signature"
	lisaMaxBody         = 192 << 10
)

func (lisa) Name() string          { return "lisa" }
func (lisa) DefaultMaxBody() int64 { return lisaMaxBody }
func (lisa) Routes() []string      { return []string{"/plugin-notifications/:id/updates"} }

func (lisa) Check(i int, src config.Source) error {
	if err := needSecrets(i, src); err != nil {
		return err
	}
	if len(src.APIKeys) == 0 {
		return &config.FieldError{Field: fmt.Sprintf("sources[%d].api_keys", i), Msg: "lisa needs at least one API key"}
	}
	if src.BasicAuth != nil {
		return &config.FieldError{Field: fmt.Sprintf("sources[%d].basic_auth", i), Msg: "lisa sends its API key in Authorization, which basic auth would need too"}
	}
	return nil
}

func (lisa) Verify(_ context.Context, src *Source, req *Request) error {
	h, body := req.Header, req.Body
	// The API key is checked first but its failure is reported after a
	// malformed signature, so the statuses follow LiSA's table: a request
	// without a usable signature is a 400 whatever its key.
	key, hasScheme := strings.CutPrefix(h.Get("Authorization"), "ApiKey ")
	keyOK := hasScheme && anyKeyMatches([]byte(strings.TrimSpace(key)), src.apiKeys)
	err := verifyHexHMAC(lisaSignatureHeader, h.Get(lisaSignatureHeader), src.secrets, body)
	if err != nil && statusOf(err) == http.StatusBadRequest {
		return err
	}
	if !keyOK {
		return fmt.Errorf("%w: missing or invalid API key", ErrUnauthorized)
	}
	return err
}

func (lisa) Normalize(_ context.Context, src *Source, req *Request) (Batch, error) {
	body, received := req.Body, req.Received
	o, err := parseObject(body, src.maxJSONDepth())
	if err != nil {
		return Batch{}, err
	}
	id, err := o.id("productId")
	if err != nil {
		return Batch{}, err
	}
	return Batch{Changes: []schemas.Change{{
		EventID:    bodyEventID(src.Name, body),
		Source:     src.Name,
		Provider:   "lisa",
		Namespace:  src.Namespace,
		EventType:  "product.updated",
		Resource:   "product",
		ProductID:  id,
		ReceivedAt: received,
		OccurredAt: o.time("updatedAt", "timestamp"),
		Fields: schemas.Fields{
			Title:        o.text("title", "name"),
			Description:  o.text("description"),
			Brand:        o.text("brand"),
			Price:        o.decimal("price"),
			SalePrice:    o.decimal("salePrice"),
			Currency:     o.text("currency"),
			URL:          o.text("url", "link"),
			ImageURL:     o.text("imageUrl", "image"),
			Availability: o.availability("availability", "inStock"),
			SKU:          o.text("sku"),
			GTIN:         o.text("gtin", "ean", "barcode"),
		},
		Raw: string(body),
	}}}, nil
}

func (lisa) Sign(src *Source, body []byte) http.Header {
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	if len(src.apiKeys) > 0 {
		h.Set("Authorization", "ApiKey "+string(src.apiKeys[0]))
	}
	h.Set(lisaSignatureHeader, hex.EncodeToString(hmacSHA256(src.secrets[0], body)))
	return h
}
