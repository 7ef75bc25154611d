package ingest

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/productstream/productstream/config"
	"github.com/productstream/productstream/schemas"
)

// genericHMAC is a configurable HMAC-SHA256 source (provider "hmac") for
// senders that have no adapter of their own but sign like most do
// (docs/providers-configurable.md has the Shopify and GitHub presets):
//
//	POST /webhooks/{name}
//	<hmac.header>: <hmac.prefix><hex or base64 of HMAC-SHA256(secret, signed bytes)>
//	<hmac.timestamp_header>: <unix seconds>   (only when hmac.signed uses {timestamp})
//
// The signed bytes are the raw body, or hmac.signed with {timestamp}
// replaced by the timestamp header's exact value and {body} by the raw
// body ("{timestamp}.{body}"). A signed timestamp must be within
// hmac.tolerance (default 5m) of the arrival time, either way. The header
// carries one signature; Stripe's multi-valued "t=...,v1=..." header is not
// understood. The body is one JSON object; source.payload says where its
// product id and event type are. Answers: 202 accepted; 400 missing or
// malformed signature or timestamp, or a body without the id; 401 wrong
// signature or stale timestamp; 413 over the limit (default 1 MiB).
type genericHMAC struct{}

// The optional interfaces the pipeline looks for: dropping one by accident
// would silently turn off preparation or deduplication.
var (
	_ Preparer           = genericHMAC{}
	_ DeliveryIdentifier = genericHMAC{}
	_ ReplayGuard        = genericHMAC{}
)

const (
	// configurableMaxBody is the default body limit of the configurable
	// providers.
	configurableMaxBody = 1 << 20
	// defaultHMACTolerance is how far a signed timestamp may be from the
	// arrival time when hmac.tolerance is not set.
	defaultHMACTolerance = 5 * time.Minute
)

func (genericHMAC) Name() string          { return "hmac" }
func (genericHMAC) DefaultMaxBody() int64 { return configurableMaxBody }
func (genericHMAC) Routes() []string      { return nil }

func (genericHMAC) Check(i int, src config.Source) error {
	if err := needSecrets(i, src); err != nil {
		return err
	}
	_, err := compileHMAC(src)
	return atSource(i, err)
}

// Prepare compiles the signature settings and the payload mapping.
func (genericHMAC) Prepare(src *Source) (any, error) { return compileHMAC(src.Source) }

// hmacSource is a generic hmac source's compiled configuration.
type hmacSource struct {
	header    string
	prefix    string
	base64    bool
	signed    signedTemplate
	tsHeader  string // "" when no timestamp is signed
	tolerance time.Duration
	idHeader  string // "" when the sender sends no delivery id
	payload   *payloadMapping
}

func compileHMAC(src config.Source) (*hmacSource, error) {
	h := src.HMAC
	if h == nil {
		return nil, badField("hmac", "is required for provider hmac (at least hmac.header)")
	}
	c := &hmacSource{header: h.Header, prefix: h.Prefix, tsHeader: h.TimestampHeader, tolerance: h.Tolerance, idHeader: h.EventIDHeader}
	switch {
	case h.Header == "":
		return nil, badField("hmac.header", "is required")
	case !validHeaderName(h.Header):
		return nil, badField("hmac.header", "%q is not a valid header name", h.Header)
	}
	switch h.Encoding {
	case "", "hex":
	case "base64":
		c.base64 = true
	default:
		return nil, badField("hmac.encoding", "%q is neither hex nor base64", h.Encoding)
	}
	if strings.ContainsAny(h.Prefix, "\r\n") {
		return nil, badField("hmac.prefix", "must not contain a line break")
	}
	var err error
	if c.signed, err = compileSignedTemplate(h.Signed); err != nil {
		return nil, badField("hmac.signed", "%v", err)
	}
	switch usesTS := c.signed.usesTimestamp(); {
	case usesTS && h.TimestampHeader == "":
		return nil, badField("hmac.timestamp_header", "is required when hmac.signed uses {timestamp}")
	case !usesTS && h.TimestampHeader != "":
		return nil, badField("hmac.timestamp_header", "is set but hmac.signed does not use {timestamp}: an unsigned timestamp proves nothing")
	case h.TimestampHeader != "" && !validHeaderName(h.TimestampHeader):
		return nil, badField("hmac.timestamp_header", "%q is not a valid header name", h.TimestampHeader)
	case h.Tolerance < 0:
		return nil, badField("hmac.tolerance", "must not be negative")
	case h.Tolerance > 0 && !usesTS:
		return nil, badField("hmac.tolerance", "applies only when hmac.signed uses {timestamp}")
	case h.EventIDHeader != "" && !validHeaderName(h.EventIDHeader):
		return nil, badField("hmac.event_id_header", "%q is not a valid header name", h.EventIDHeader)
	}
	if c.tsHeader != "" && c.tolerance == 0 {
		c.tolerance = defaultHMACTolerance
	}
	if c.payload, err = compilePayload(src.Payload); err != nil {
		return nil, err
	}
	return c, nil
}

func (genericHMAC) Verify(_ context.Context, src *Source, req *Request) error {
	c := src.extra.(*hmacSource)
	sig, err := c.presented(req.Header.Get(c.header))
	if err != nil {
		return err
	}
	var ts string
	if c.tsHeader != "" {
		ts = req.Header.Get(c.tsHeader)
		unix, err := parseUnixSeconds(c.tsHeader, ts)
		if err != nil {
			return err
		}
		if err := checkFresh(c.tsHeader, unix, req.Received, c.tolerance); err != nil {
			return err
		}
	}
	for _, key := range src.secrets {
		m := hmac.New(sha256.New, key)
		c.signed.write(m, ts, req.Body)
		if hmac.Equal(sig, m.Sum(nil)) {
			return nil
		}
	}
	return fmt.Errorf("%w: %s", ErrBadSignature, c.header)
}

// presented decodes the signature header's value v. Errors name the header,
// never the value.
func (c *hmacSource) presented(v string) ([]byte, error) {
	if v == "" {
		return nil, fmt.Errorf("%w: %s header is required", ErrMissingSignature, c.header)
	}
	if strings.ContainsAny(v, "\r\n") {
		return nil, fmt.Errorf("%w: %s contains a line break", ErrMalformedSignature, c.header)
	}
	if c.prefix != "" {
		rest, ok := strings.CutPrefix(v, c.prefix)
		if !ok {
			return nil, fmt.Errorf("%w: %s does not start with %q", ErrMalformedSignature, c.header, c.prefix)
		}
		if rest == "" {
			return nil, fmt.Errorf("%w: %s has nothing after %q", ErrMalformedSignature, c.header, c.prefix)
		}
		v = rest
	}
	var sig []byte
	var err error
	encoding := "hex"
	if c.base64 {
		encoding = "base64"
		sig, err = base64.StdEncoding.Strict().DecodeString(v)
	} else {
		sig, err = hex.DecodeString(v)
	}
	if err != nil || len(sig) != sha256.Size {
		return nil, fmt.Errorf("%w: %s must be the %s of %d bytes", ErrMalformedSignature, c.header, encoding, sha256.Size)
	}
	return sig, nil
}

func (genericHMAC) Normalize(_ context.Context, src *Source, req *Request) (Batch, error) {
	c := src.extra.(*hmacSource)
	eventID := bodyEventID(src.Name, req.Body)
	if id, ok := c.deliveryID(req.Header); ok {
		if err := checkHeaderValue(c.idHeader, id); err != nil {
			return Batch{}, err
		}
		eventID = id
	}
	ch, err := c.payload.change(src, req, "hmac", eventID)
	if err != nil {
		return Batch{}, err
	}
	return Batch{Changes: []schemas.Change{ch}}, nil
}

// DeliveryID is the hmac.event_id_header value, when the source names one
// and the delivery carries it. The signature does not cover it. Without it
// an identical body may be a real repeat, so nothing is deduplicated.
func (genericHMAC) DeliveryID(src *Source, req *Request) Identity {
	id, _ := src.extra.(*hmacSource).deliveryID(req.Header)
	return Identity{ID: id}
}

func (c *hmacSource) deliveryID(h http.Header) (string, bool) {
	if c.idHeader == "" {
		return "", false
	}
	id := h.Get(c.idHeader)
	return id, id != ""
}

// ReplayWindow is twice the tolerance when a timestamp is signed: a
// delivery accepted now may carry a time up to one tolerance ahead, and
// stays acceptable until one tolerance after that.
func (genericHMAC) ReplayWindow(src *Source) time.Duration {
	if c := src.extra.(*hmacSource); c.tsHeader != "" {
		return 2 * c.tolerance
	}
	return 0
}

// ReplayKey is the hash of the signed bytes (timestamp and body), when a
// timestamp is signed.
func (genericHMAC) ReplayKey(src *Source, req *Request) string {
	c := src.extra.(*hmacSource)
	if c.tsHeader == "" {
		return ""
	}
	h := sha256.New()
	c.signed.write(h, req.Header.Get(c.tsHeader), req.Body)
	return hex.EncodeToString(h.Sum(nil))
}

// Sign signs body with the source's first secret; a signed timestamp is
// the current time.
func (genericHMAC) Sign(src *Source, body []byte) http.Header {
	c := src.extra.(*hmacSource)
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	var ts string
	if c.tsHeader != "" {
		ts = strconv.FormatInt(time.Now().Unix(), 10)
		h.Set(c.tsHeader, ts)
	}
	m := hmac.New(sha256.New, src.secrets[0])
	c.signed.write(m, ts, body)
	mac := m.Sum(nil)
	sig := hex.EncodeToString(mac)
	if c.base64 {
		sig = base64.StdEncoding.EncodeToString(mac)
	}
	h.Set(c.header, c.prefix+sig)
	return h
}

// signedTemplate is a compiled hmac.signed: the parts whose concatenation
// is signed.
type signedTemplate []signedPart

type signedPart struct {
	kind    partKind
	literal string // for partLiteral
}

type partKind int

const (
	partLiteral partKind = iota
	partTimestamp
	partBody
)

var placeholderRE = regexp.MustCompile(`\{[A-Za-z_]+\}`)

// compileSignedTemplate compiles "" or "body" (the body alone) or a
// template holding {body} exactly once and {timestamp} any number of
// times; any other {name} is refused as a likely typo.
func compileSignedTemplate(s string) (signedTemplate, error) {
	if s == "" || s == "body" {
		return signedTemplate{{kind: partBody}}, nil
	}
	var t signedTemplate
	last, bodies := 0, 0
	for _, loc := range placeholderRE.FindAllStringIndex(s, -1) {
		if loc[0] > last {
			t = append(t, signedPart{kind: partLiteral, literal: s[last:loc[0]]})
		}
		switch name := s[loc[0]:loc[1]]; name {
		case "{timestamp}":
			t = append(t, signedPart{kind: partTimestamp})
		case "{body}":
			t = append(t, signedPart{kind: partBody})
			bodies++
		default:
			return nil, fmt.Errorf("unknown placeholder %s (want {timestamp} or {body})", name)
		}
		last = loc[1]
	}
	if last < len(s) {
		t = append(t, signedPart{kind: partLiteral, literal: s[last:]})
	}
	if bodies != 1 {
		return nil, fmt.Errorf("%q must be \"body\" or a template holding {body} exactly once", s)
	}
	return t, nil
}

func (t signedTemplate) usesTimestamp() bool {
	return slices.ContainsFunc(t, func(p signedPart) bool { return p.kind == partTimestamp })
}

// write writes the signed bytes to m, without copying the body.
func (t signedTemplate) write(m hash.Hash, timestamp string, body []byte) {
	for _, p := range t {
		switch p.kind {
		case partLiteral:
			m.Write([]byte(p.literal))
		case partTimestamp:
			m.Write([]byte(timestamp))
		case partBody:
			m.Write(body)
		}
	}
}

// parseUnixSeconds parses a signed timestamp header's value: unix seconds,
// digits only. A number too large for int64 is a time far in the future.
func parseUnixSeconds(header, v string) (int64, error) {
	if v == "" {
		return 0, fmt.Errorf("%w: %s header is required", ErrMissingSignature, header)
	}
	if strings.Trim(v, "0123456789") != "" {
		return 0, fmt.Errorf("%w: %s must be unix seconds, digits only", ErrMalformedSignature, header)
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: %s is out of range", ErrStale, header)
	}
	return n, nil
}

// checkFresh refuses a signed time more than tolerance away from now in
// either direction; exactly tolerance away is accepted. A zero now (a
// Request built without an arrival time) means the current time.
func checkFresh(header string, unix int64, now time.Time, tolerance time.Duration) error {
	if now.IsZero() {
		now = time.Now()
	}
	if d := now.Sub(time.Unix(unix, 0)); d > tolerance || d < -tolerance {
		return fmt.Errorf("%w: %s is more than %s away from now", ErrStale, header, tolerance)
	}
	return nil
}

// payloadMapping is a compiled config.Payload: where the configurable
// providers find a change's product id and event type.
type payloadMapping struct {
	id          jsonPointer
	typ         jsonPointer // nil when the type is not read from the body
	typeHeader  string
	deleteTypes []string
	resource    string
}

func compilePayload(p *config.Payload) (*payloadMapping, error) {
	if p == nil {
		return nil, badField("payload", "is required (at least payload.id_pointer)")
	}
	m := &payloadMapping{typeHeader: p.TypeHeader, deleteTypes: p.DeleteTypes, resource: p.Resource}
	if p.IDPointer == "" {
		return nil, badField("payload.id_pointer", "is required, e.g. /id")
	}
	var err error
	if m.id, err = parseJSONPointer(p.IDPointer); err != nil {
		return nil, badField("payload.id_pointer", "%v", err)
	}
	if len(m.id) == 0 {
		return nil, badField("payload.id_pointer", "must point into the body, e.g. /id")
	}
	if p.TypePointer != "" {
		if m.typ, err = parseJSONPointer(p.TypePointer); err != nil {
			return nil, badField("payload.type_pointer", "%v", err)
		}
		if len(m.typ) == 0 {
			return nil, badField("payload.type_pointer", "must point into the body, e.g. /type")
		}
		if p.TypeHeader != "" {
			return nil, badField("payload.type_header", "set payload.type_pointer or payload.type_header, not both")
		}
	}
	if p.TypeHeader != "" && !validHeaderName(p.TypeHeader) {
		return nil, badField("payload.type_header", "%q is not a valid header name", p.TypeHeader)
	}
	for k, t := range p.DeleteTypes {
		if t == "" {
			return nil, badField(fmt.Sprintf("payload.delete_types[%d]", k), "is empty")
		}
	}
	if m.resource == "" {
		m.resource = "product"
	}
	return m, nil
}

// change normalizes a verified JSON object body into one change. The id
// is a string or an integer at the id pointer; the event type is the
// string at the type pointer or the type header's value ("updated" when
// absent), and a delete type makes the change a deletion. Typed fields are
// read by their common names from the object holding the id (the top
// level for "/id"), the time from there or else from the top level.
func (m *payloadMapping) change(src *Source, req *Request, provider, eventID string) (schemas.Change, error) {
	top, err := parseObject(req.Body, src.maxJSONDepth())
	if err != nil {
		return schemas.Change{}, err
	}
	// The id's holder: the top level for "/id", else the value its parent
	// pointer names. An object holder also gives the typed fields; an
	// array holder ("/ids/0") gives the id only.
	holder, holderRaw := top, json.RawMessage(nil)
	if len(m.id) > 1 {
		holder = nil
		if raw, ok := m.id.parent().lookup(req.Body); ok {
			holderRaw = raw
			if err := json.Unmarshal(raw, &holder); err != nil {
				holder = nil
			}
		}
	}
	id, err := m.productID(holder, holderRaw)
	if err != nil {
		return schemas.Change{}, err
	}
	typ, err := m.eventType(req)
	if err != nil {
		return schemas.Change{}, err
	}
	if holder == nil {
		holder = top
	}
	timeKeys := []string{"updated_at", "updatedAt", "timestamp"}
	occurred := holder.time(timeKeys...)
	if occurred.IsZero() {
		occurred = top.time(timeKeys...)
	}
	return schemas.Change{
		EventID:    eventID,
		Source:     src.Name,
		Provider:   provider,
		Namespace:  src.Namespace,
		EventType:  typ,
		Resource:   m.resource,
		ProductID:  id,
		Deleted:    slices.Contains(m.deleteTypes, typ),
		ReceivedAt: req.Received,
		OccurredAt: occurred,
		Fields: schemas.Fields{
			Title:        holder.text("title", "name"),
			Description:  holder.text("description"),
			Brand:        holder.text("brand", "vendor"),
			Price:        holder.decimal("price"),
			SalePrice:    holder.decimal("sale_price", "salePrice"),
			Currency:     holder.text("currency"),
			URL:          holder.text("url", "link"),
			ImageURL:     holder.text("image_url", "imageUrl", "image"),
			Availability: holder.availability("availability", "in_stock", "inStock"),
			SKU:          holder.text("sku"),
			GTIN:         holder.text("gtin", "ean", "barcode"),
		},
		Raw: string(req.Body),
	}, nil
}

// productID is the id at the id pointer, found in its holder (an object,
// or else the raw array), and checked like object.id, whose errors name
// the pointer ("missing field /id").
func (m *payloadMapping) productID(holder object, holderRaw json.RawMessage) (string, error) {
	name, last := m.id.String(), m.id[len(m.id)-1]
	var raw json.RawMessage
	var ok bool
	if holder != nil {
		raw, ok = holder[last]
	} else if holderRaw != nil {
		raw, ok = pointerChild(holderRaw, last)
	}
	o := object{}
	if ok {
		o[name] = raw
	}
	return o.id(name)
}

func (m *payloadMapping) eventType(req *Request) (string, error) {
	var typ string
	switch {
	case m.typeHeader != "":
		typ = req.Header.Get(m.typeHeader)
		if err := checkHeaderValue(m.typeHeader, typ); err != nil {
			return "", err
		}
	case m.typ != nil:
		raw, ok := m.typ.lookup(req.Body)
		if ok && string(raw) != "null" {
			if err := json.Unmarshal(raw, &typ); err != nil {
				return "", fmt.Errorf("%w: field %s must be a string", ErrInvalidPayload, m.typ)
			}
			if len(typ) > maxIDLen {
				return "", fmt.Errorf("%w: field %s is longer than %d bytes", ErrInvalidPayload, m.typ, maxIDLen)
			}
		}
	}
	if typ == "" {
		typ = "updated"
	}
	return typ, nil
}

// checkHeaderValue refuses a header value that cannot travel in a record
// as an id or an event type: over maxIDLen bytes, not UTF-8, or holding a
// control character (checkID).
func checkHeaderValue(header, v string) error {
	if len(v) > maxIDLen || !utf8.ValidString(v) {
		return fmt.Errorf("%w: %s must be UTF-8 of at most %d bytes", ErrInvalidPayload, header, maxIDLen)
	}
	if err := checkID(nil, v); err != nil {
		return fmt.Errorf("%w: %s %w", ErrInvalidPayload, header, err)
	}
	return nil
}

// badField is a configuration problem of a source's field, named relative
// to the source ("hmac.header"); atSource names it in full.
func badField(field, format string, args ...any) *config.FieldError {
	return &config.FieldError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

// atSource prefixes a badField error with "sources[i].".
func atSource(i int, err error) error {
	var fe *config.FieldError
	if errors.As(err, &fe) {
		return &config.FieldError{Field: fmt.Sprintf("sources[%d].%s", i, fe.Field), Msg: fe.Msg}
	}
	return err
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
