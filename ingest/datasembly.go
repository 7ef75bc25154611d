package ingest

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/productstream/productstream/config"
	"github.com/productstream/productstream/schemas"
)

// datasembly is Datasembly's data ingest webhook for manually collected
// product listings (shared/providers/datasembly-ingest-webhook.txt):
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
type datasembly struct{}

const (
	datasemblySignatureHeader = "ds-signature"
	datasemblyMaxBody         = 1 << 20
)

func (datasembly) Name() string          { return "datasembly" }
func (datasembly) DefaultMaxBody() int64 { return datasemblyMaxBody }
func (datasembly) Routes() []string      { return []string{"/v2/ingest/productlistings/manual/:id"} }

func (datasembly) Check(i int, src config.Source) error { return needSecrets(i, src) }

// Verify decodes ds-signature strictly (standard alphabet, padding, no
// stray bits, no line breaks: the decoder would skip them) and accepts it
// if any configured secret produces it.
func (datasembly) Verify(_ context.Context, src *Source, req *Request) error {
	presented := req.Header.Get(datasemblySignatureHeader)
	if presented == "" {
		return fmt.Errorf("%w: %s header is required", ErrMissingSignature, datasemblySignatureHeader)
	}
	if strings.ContainsAny(presented, "\r\n") {
		return fmt.Errorf("%w: %s contains a line break", ErrMalformedSignature, datasemblySignatureHeader)
	}
	sig, err := base64.StdEncoding.Strict().DecodeString(presented)
	if err != nil || len(sig) != sha256.Size {
		return fmt.Errorf("%w: %s must be the standard base64 of %d bytes", ErrMalformedSignature, datasemblySignatureHeader, sha256.Size)
	}
	for _, sec := range src.secrets {
		if hmac.Equal(sig, hmacSHA256(sec, req.Body)) {
			return nil
		}
	}
	return fmt.Errorf("%w: %s", ErrBadSignature, datasemblySignatureHeader)
}

// DeliveryID is the body's hash: listings carry their collection time, so
// an identical body is a retry of the same submission.
func (datasembly) DeliveryID(src *Source, req *Request) Identity {
	return Identity{ID: bodyEventID(src.Name, req.Body), Signed: true}
}

func (datasembly) Normalize(_ context.Context, src *Source, req *Request) (Batch, error) {
	o, err := parseObject(req.Body, src.maxJSONDepth())
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
	eventID := bodyEventID(src.Name, req.Body)
	changes := make([]schemas.Change, 0, len(listings))
	for i, l := range listings {
		ch, err := datasemblyListing(l, fmt.Sprintf(" (listings[%d])", i))
		if err != nil {
			return Batch{}, err
		}
		ch.EventID = eventID + "#" + strconv.Itoa(i)
		ch.Source = src.Name
		ch.Namespace = src.Namespace
		ch.ReceivedAt = req.Received
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
func (datasembly) Respond(status, accepted int, err error) any {
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

func (datasembly) Sign(src *Source, body []byte) http.Header {
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	h.Set(datasemblySignatureHeader, base64.StdEncoding.EncodeToString(hmacSHA256(src.secrets[0], body)))
	return h
}

// Payload checks shared by the HMAC-family providers (datasembly.go,
// iimmpact.go, aicommerce.go). Their errors use Datasembly's wording
// ("missing field timestamp"); at locates the field inside a batch
// (" (listings[1])") and is empty for a top-level field.

func fieldMissing(name, at string) error {
	return fmt.Errorf("%w: missing field %s%s", ErrInvalidPayload, name, at)
}

func fieldInvalid(name, at, why string) error {
	return fmt.Errorf("%w: invalid field %s%s: %s", ErrInvalidPayload, name, at, why)
}

// isNull reports whether a field is absent (nil) or JSON null.
func isNull(raw json.RawMessage) bool {
	return raw == nil || string(bytes.TrimSpace(raw)) == "null"
}

// needString returns o[key] as sent: a string that is not blank.
func needString(o object, key, at string) (string, error) {
	raw := o[key]
	if isNull(raw) {
		return "", fieldMissing(key, at)
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil || strings.TrimSpace(s) == "" {
		return "", fieldInvalid(key, at, "must be a non-empty string")
	}
	return s, nil
}

// needTime returns o[key] as an RFC 3339 time (ISO 8601 with a zone), in UTC.
func needTime(o object, key, at string) (time.Time, error) {
	raw := o[key]
	if isNull(raw) {
		return time.Time{}, fieldMissing(key, at)
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, fieldInvalid(key, at, "must be an RFC 3339 time")
}

// needNumber returns o[key], which must be a JSON number (not a quoted one)
// within float64's range.
func needNumber(o object, key, at string) (float64, error) {
	raw := bytes.TrimSpace(o[key])
	if isNull(raw) {
		return 0, fieldMissing(key, at)
	}
	if c := raw[0]; c == '-' || c >= '0' && c <= '9' {
		var n json.Number
		if err := json.Unmarshal(raw, &n); err == nil {
			if f, err := strconv.ParseFloat(n.String(), 64); err == nil {
				return f, nil
			}
		}
	}
	return 0, fieldInvalid(key, at, "must be a number")
}

// idText returns raw, the field name (at locates it), as an id: a string
// fit for a record key (see checkID), trimmed, of 1 to maxIDLen bytes, or
// with integers an integer written as sent. Errors are fieldInvalid.
func idText(name, at string, raw json.RawMessage, integers bool) (string, error) {
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		if err := checkID(raw, s); err != nil {
			return "", fieldInvalid(name, at, err.Error())
		}
		s = strings.TrimSpace(s)
	} else if _, err := strconv.ParseInt(string(bytes.TrimSpace(raw)), 10, 64); integers && err == nil {
		s = string(bytes.TrimSpace(raw))
	}
	if s == "" || len(s) > maxIDLen { // also: neither a string nor an integer
		what := "string"
		if integers {
			what = "string or an integer"
		}
		return "", fieldInvalid(name, at, fmt.Sprintf("must be a non-empty %s of at most %d bytes", what, maxIDLen))
	}
	return s, nil
}
