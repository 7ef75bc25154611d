package ingest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/productstream/productstream/schemas"
)

// datasemblyProvider is Datasembly's data ingest webhook for manually
// collected product listings (shared/providers/datasembly-ingest-webhook.txt):
//
//	POST /v2/ingest/productlistings/manual/{code}
//	ds-signature: base64(HMAC-SHA256(secret, raw body)), standard alphabet, padded
//	Content-Type: application/json; body at most 1 MiB
//
// The body is {"listings": [...]}, each listing one observation of a product
// at a retailer. Every listing is validated before anything is written: the
// first bad field refuses the whole delivery with the contract's wording
// ("missing field timestamp (listings[1])"). Each listing becomes one
// "listing.collected" change keyed by its barcode, else its sku. Answers
// follow the contract: 200 {"success":true,"count":N}, refusals
// {"success":false,"error":"..."} with the status the edge decided.
// Datasembly takes no options.
func datasemblyProvider() Registration {
	return Registration{Name: "datasembly", Routes: []string{"/v2/ingest/productlistings/manual/:id"},
		MaxBody: datasemblyMaxBody, New: bodySignedFactory(
			hmacVerifier{header: datasemblySignatureHeader, base64: true},
			func(b bodySigned) Adapter { return &datasembly{b} })}
}

const (
	datasemblySignatureHeader = "ds-signature"
	datasemblyMaxBody         = 1 << 20
)

// datasembly is a configured Datasembly source: ds-signature is decoded
// strictly (standard alphabet, padding, no stray bits, no line breaks: the
// decoder would skip them) and accepted if any configured secret produces
// it. Listings carry their collection time, so an identical body is a
// retry of the same submission.
type datasembly struct{ bodySigned }

var (
	_ Signer    = (*datasembly)(nil)
	_ Responder = (*datasembly)(nil)
)

func (d *datasembly) Normalize(_ context.Context, v Verified) (Batch, error) {
	o, err := parseObject(v.Body, d.maxDepth)
	if err != nil {
		return Batch{}, err
	}
	if isNull(o["listings"]) {
		return Batch{}, fieldMissing("listings", "")
	}
	var listings []json.RawMessage
	if err := json.Unmarshal(o["listings"], &listings); err != nil || len(listings) == 0 {
		return Batch{}, fieldInvalid("listings", "", "must be a non-empty array")
	}
	changes := make([]schemas.Change, 0, len(listings))
	for i, l := range listings {
		ch, err := datasemblyListing(l, fmt.Sprintf(" (listings[%d])", i))
		if err != nil {
			return Batch{}, err
		}
		ch.EventID = v.Identity.ID + "#" + strconv.Itoa(i)
		ch.Source = d.name
		ch.Namespace = d.namespace
		ch.ReceivedAt = v.Received
		changes = append(changes, ch)
	}
	return Batch{Changes: changes}, nil
}

// datasemblyListing validates one listing, in the contract's field order,
// and returns its change without the delivery's parts. at locates the
// listing in errors.
func datasemblyListing(raw json.RawMessage, at string) (schemas.Change, error) {
	var l object
	if err := json.Unmarshal(raw, &l); err != nil || l == nil {
		return schemas.Change{}, fieldInvalid("listing", at, "must be a JSON object")
	}
	ts, err := needTime(l, "timestamp", at)
	if err != nil {
		return schemas.Change{}, err
	}
	if _, err := needString(l, "retailer", at); err != nil {
		return schemas.Change{}, err
	}
	for _, c := range []struct {
		key      string
		min, max float64
	}{{"latitude", -90, 90}, {"longitude", -180, 180}} {
		v, err := needNumber(l, c.key, at)
		if err != nil {
			return schemas.Change{}, err
		}
		if v < c.min || v > c.max {
			return schemas.Change{}, fieldInvalid(c.key, at, "out of range")
		}
	}
	// The key is the barcode, else the sku; at least one must be usable.
	var id string
	for _, key := range []string{"barcode", "sku"} {
		if isNull(l[key]) {
			continue
		}
		var s string
		if err := json.Unmarshal(l[key], &s); err != nil {
			return schemas.Change{}, fieldInvalid(key, at, "must be a string")
		}
		if err := checkID(l[key], s); err != nil {
			return schemas.Change{}, fieldInvalid(key, at, err.Error())
		}
		if len(s) > maxIDLen {
			return schemas.Change{}, fieldInvalid(key, at, fmt.Sprintf("longer than %d bytes", maxIDLen))
		}
		if id == "" {
			id = strings.TrimSpace(s)
		}
	}
	if id == "" {
		return schemas.Change{}, fieldMissing("barcode or sku", at)
	}
	price, err := needNumber(l, "price", at)
	if err != nil {
		return schemas.Change{}, err
	}
	if price < 0 {
		return schemas.Change{}, fieldInvalid("price", at, "must not be negative")
	}
	if !isNull(l["salePrice"]) {
		sale, err := needNumber(l, "salePrice", at)
		if err != nil {
			return schemas.Change{}, err
		}
		if sale < 0 {
			return schemas.Change{}, fieldInvalid("salePrice", at, "must not be negative")
		}
	}
	return schemas.Change{
		Provider:   "datasembly",
		EventType:  "listing.collected",
		Resource:   "product",
		ProductID:  id,
		OccurredAt: ts,
		Fields: schemas.Fields{
			Price:     l.decimal("price"),
			SalePrice: l.decimal("salePrice"),
			GTIN:      nonBlank(l.text("barcode")),
			SKU:       nonBlank(l.text("sku")),
			ImageURL:  l.text("imageLabelUrl"),
		},
		Raw: string(raw),
	}, nil
}

// nonBlank is s unless it is nil or blank: a blank barcode is no barcode,
// and must not overwrite a known one.
func nonBlank(s *string) *string {
	if s == nil || strings.TrimSpace(*s) == "" {
		return nil
	}
	return s
}

// datasemblyReply is the contract's response body.
type datasemblyReply struct {
	Success bool   `json:"success"`
	Count   *int   `json:"count,omitempty"`
	Error   string `json:"error,omitempty"`
}

// Respond answers in the contract's shape. A payload refusal's message is
// the contract's own wording, without the "invalid payload: " prefix.
func (*datasembly) Respond(status, accepted int, err error) any {
	if err == nil {
		return datasemblyReply{Success: true, Count: &accepted}
	}
	msg := err.Error()
	switch {
	case status == http.StatusInternalServerError:
		msg = "internal error"
	case errors.Is(err, ErrInvalidPayload):
		msg = strings.TrimPrefix(msg, ErrInvalidPayload.Error()+": ")
	}
	return datasemblyReply{Error: msg}
}
