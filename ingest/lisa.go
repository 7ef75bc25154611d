package ingest

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/productstream/productstream/config"
	"github.com/productstream/productstream/schemas"
)

// lisaProvider is the LiSA Product Update Notification API
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
// API key, 413 over the limit. LiSA takes no options.
func lisaProvider() Registration {
	return Registration{Name: "lisa", Routes: []string{"/plugin-notifications/:id/updates"}, MaxBody: lisaMaxBody, New: newLiSA}
}

const (
	lisaSignatureHeader = "X-Hmac-Signature"
	lisaMaxBody         = 192 << 10
)

// lisa is a configured LiSA source.
type lisa struct {
	origin
	verifier *hmacVerifier
	apiKeys  [][]byte
}

var _ Signer = (*lisa)(nil)

func newLiSA(cfg config.Source, _ Deps) (Adapter, error) {
	keys, err := secretKeys(cfg)
	if err != nil {
		return nil, err
	}
	if len(cfg.APIKeys) == 0 {
		return nil, badField("api_keys", "lisa needs at least one API key")
	}
	if cfg.BasicAuth != nil {
		return nil, badField("basic_auth", "lisa sends its API key in Authorization, which basic auth would need too")
	}
	if err := noOptions(cfg); err != nil {
		return nil, err
	}
	l := &lisa{origin: originOf(cfg), verifier: &hmacVerifier{header: lisaSignatureHeader, keys: keys}}
	for _, k := range cfg.APIKeys {
		l.apiKeys = append(l.apiKeys, []byte(k))
	}
	return l, nil
}

// Verify checks the API key and the signature. A LiSA delivery names no
// id and binds no time, and an identical body can be a real repeat (a
// price going 10, 12, 10): it has no identity.
func (l *lisa) Verify(_ context.Context, req *Request) (Verified, error) {
	// The API key is checked first but its failure is reported after a
	// malformed signature, so the statuses follow LiSA's table: a request
	// without a usable signature is a 400 whatever its key.
	key, hasScheme := strings.CutPrefix(req.Header.Get("Authorization"), "ApiKey ")
	keyOK := hasScheme && anyKeyMatches([]byte(strings.TrimSpace(key)), l.apiKeys)
	err := l.verifier.verify(req)
	if err != nil && statusOf(err) == http.StatusBadRequest {
		return Verified{}, err
	}
	if !keyOK {
		return Verified{}, fmt.Errorf("%w: missing or invalid API key", ErrUnauthorized)
	}
	if err != nil {
		return Verified{}, err
	}
	return Verified{Request: req}, nil
}

func (l *lisa) Normalize(_ context.Context, v Verified) (Batch, error) {
	o, err := parseObject(v.Body, l.maxDepth)
	if err != nil {
		return Batch{}, err
	}
	id, err := o.id("productId")
	if err != nil {
		return Batch{}, err
	}
	return Batch{Changes: []schemas.Change{{
		EventID:    bodyEventID(l.name, v.Body),
		Source:     l.name,
		Provider:   "lisa",
		Namespace:  l.namespace,
		EventType:  "product.updated",
		Resource:   "product",
		ProductID:  id,
		ReceivedAt: v.Received,
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
		Raw: bodyText(v.Body),
	}}}, nil
}

func (l *lisa) Sign(body []byte) http.Header {
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	h.Set("Authorization", "ApiKey "+string(l.apiKeys[0]))
	l.verifier.sign(h, body, time.Now())
	return h
}
