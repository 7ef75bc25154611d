package ingest

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"hash"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/productstream/productstream/config"
)

// hmacVerifier checks an HMAC-SHA256 signature that travels in one header,
// compiled once per source. LiSA, Datasembly, IIMMPACT, AICommerce and the
// configurable hmac provider are presets of it:
//
//	<header>: <prefix><hex or base64 of HMAC-SHA256(secret, signed bytes)>
//	<tsHeader>: <unix seconds>   (only when the signed bytes hold {timestamp})
//
// The signed bytes are the raw body, or a template over the timestamp
// header's exact value and the body ("{timestamp}.{body}"); a signed
// timestamp must be within tolerance of the arrival time. Every key is
// tried, each compared in constant time. Errors name the header, never the
// value, and are checked in this order: the header missing or empty ->
// ErrMissingSignature; a line break, the prefix missing (unless optional)
// or with nothing after it, or a value that does not decode to 32 bytes ->
// ErrMalformedSignature; with a timestamp, its header missing ->
// ErrMissingSignature, not digits -> ErrMalformedSignature, too far from
// now -> ErrStale; no key matches -> ErrBadSignature.
type hmacVerifier struct {
	header string
	prefix string
	// prefixOptional accepts the value without its prefix too (IIMMPACT
	// tolerates bare hex).
	prefixOptional bool
	base64         bool // else hex, either case
	// signed is what is signed; nil: the body alone.
	signed    signedTemplate
	tsHeader  string // "" when no timestamp is signed
	tolerance time.Duration
	keys      []*macKey
}

// macKey is one of a source's secrets, with the HMAC-SHA256 states keyed
// by it that verifications reuse: keying a new one for every request
// costs two hash blocks and a handful of allocations. Safe for concurrent
// use.
type macKey struct {
	secret []byte
	states sync.Pool // of *macState, each keyed by secret
}

// macState is a keyed HMAC-SHA256 and room for its sum.
type macState struct {
	mac hash.Hash
	sum [sha256.Size]byte
}

// matches reports whether sig is the HMAC-SHA256 under k of the bytes t
// signs of timestamp and body, comparing in constant time.
func (k *macKey) matches(sig []byte, t signedTemplate, timestamp string, body []byte) bool {
	s, _ := k.states.Get().(*macState)
	if s == nil {
		s = &macState{mac: hmac.New(sha256.New, k.secret)}
	} else {
		s.mac.Reset() // back to the keyed state, before any byte
	}
	t.write(s.mac, timestamp, body)
	ok := hmac.Equal(sig, s.mac.Sum(s.sum[:0]))
	k.states.Put(s)
	return ok
}

// verify authenticates req.
func (v *hmacVerifier) verify(req *Request) error {
	sig, err := v.presented(req.Header.Get(v.header))
	if err != nil {
		return err
	}
	var ts string
	if v.tsHeader != "" {
		ts = req.Header.Get(v.tsHeader)
		unix, err := parseUnixSeconds(v.tsHeader, ts)
		if err != nil {
			return err
		}
		if err := checkFresh(v.tsHeader, unix, req.Received, v.tolerance); err != nil {
			return err
		}
	}
	for _, key := range v.keys {
		if key.matches(sig, v.signed, ts, req.Body) {
			return nil
		}
	}
	return fmt.Errorf("%w: %s", ErrBadSignature, v.header)
}

// presented decodes the signature header's value s.
func (v *hmacVerifier) presented(s string) ([]byte, error) {
	if s == "" {
		return nil, fmt.Errorf("%w: %s header is required", ErrMissingSignature, v.header)
	}
	if strings.ContainsAny(s, "\r\n") {
		return nil, fmt.Errorf("%w: %s contains a line break", ErrMalformedSignature, v.header)
	}
	if v.prefix != "" {
		rest, ok := strings.CutPrefix(s, v.prefix)
		switch {
		case !ok && !v.prefixOptional:
			return nil, fmt.Errorf("%w: %s does not start with %q", ErrMalformedSignature, v.header, v.prefix)
		case ok && rest == "":
			return nil, fmt.Errorf("%w: %s has nothing after %q", ErrMalformedSignature, v.header, v.prefix)
		}
		s = rest
	}
	if v.base64 {
		sig, err := base64.StdEncoding.Strict().DecodeString(s)
		if err != nil || len(sig) != sha256.Size {
			return nil, fmt.Errorf("%w: %s must be the standard base64 of %d bytes", ErrMalformedSignature, v.header, sha256.Size)
		}
		return sig, nil
	}
	sig, err := hex.DecodeString(s)
	if err != nil || len(sig) != sha256.Size {
		return nil, fmt.Errorf("%w: %s must be %d hex characters", ErrMalformedSignature, v.header, 2*sha256.Size)
	}
	return sig, nil
}

// mac is the HMAC-SHA256 under key of the signed bytes of timestamp and
// body.
func (v *hmacVerifier) mac(key []byte, timestamp string, body []byte) []byte {
	m := hmac.New(sha256.New, key)
	v.signed.write(m, timestamp, body)
	return m.Sum(nil)
}

// replayKey is the hash of the signed bytes of a verified req when they
// hold a timestamp; "" when they bind no time.
func (v *hmacVerifier) replayKey(req *Request) string {
	if v.tsHeader == "" {
		return ""
	}
	h := sha256.New()
	v.signed.write(h, req.Header.Get(v.tsHeader), req.Body)
	return hex.EncodeToString(h.Sum(nil))
}

// replayWindow is twice the tolerance when a timestamp is signed: a
// delivery accepted now may carry a time up to one tolerance ahead, and
// stays acceptable until one tolerance after that.
func (v *hmacVerifier) replayWindow() time.Duration {
	if v.tsHeader == "" {
		return 0
	}
	return 2 * v.tolerance
}

// sign sets the signature header of body, signed with the first key, on
// h (and the timestamp header, now, when one is signed).
func (v *hmacVerifier) sign(h http.Header, body []byte, now time.Time) {
	var ts string
	if v.tsHeader != "" {
		ts = strconv.FormatInt(now.Unix(), 10)
		h.Set(v.tsHeader, ts)
	}
	mac := v.mac(v.keys[0].secret, ts, body)
	sig := hex.EncodeToString(mac)
	if v.base64 {
		sig = base64.StdEncoding.EncodeToString(mac)
	}
	h.Set(v.header, v.prefix+sig)
}

// bodySigned is the half of an adapter that Datasembly, IIMMPACT and
// AICommerce share: their senders sign the raw body with HMAC-SHA256 (a
// preset of hmacVerifier), and their bodies name their own event and
// time, so an identical body is a retry. Each embeds it and adds its
// Normalize.
type bodySigned struct {
	origin
	verifier *hmacVerifier
}

// bodySignedFactory is the factory of a provider that takes no options
// and signs as preset does: it compiles a source's bodySigned, keyed by its
// secrets, and wrap makes it the provider's adapter.
func bodySignedFactory(preset hmacVerifier, wrap func(bodySigned) Adapter) Factory {
	return func(cfg config.Source, _ Deps) (Adapter, error) {
		keys, err := secretKeys(cfg)
		if err != nil {
			return nil, err
		}
		if err := noOptions(cfg); err != nil {
			return nil, err
		}
		v := preset
		v.keys = keys
		return wrap(bodySigned{origin: originOf(cfg), verifier: &v}), nil
	}
}

// Verify checks the signature. The delivery's identity is the body's
// hash, which the signature covers.
func (b *bodySigned) Verify(_ context.Context, req *Request) (Verified, error) {
	if err := b.verifier.verify(req); err != nil {
		return Verified{}, err
	}
	return Verified{Request: req, Identity: b.bodyID(req.Body)}, nil
}

// Sign signs body as the sender does, with the source's first secret.
func (b *bodySigned) Sign(body []byte) http.Header {
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	b.verifier.sign(h, body, time.Now())
	return h
}

// hmacSHA256 returns HMAC-SHA256(key, body).
func hmacSHA256(key, body []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(body)
	return m.Sum(nil)
}

// anyKeyMatches reports whether presented equals one of keys, comparing in
// constant time and always comparing against every key.
func anyKeyMatches(presented []byte, keys [][]byte) bool {
	match := 0
	for _, k := range keys {
		match |= subtle.ConstantTimeCompare(presented, k)
	}
	return match == 1
}

// signedTemplate is a compiled hmac.signed: the parts whose concatenation
// is signed. Nil is the body alone.
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
		return nil, nil
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
	if t == nil {
		m.Write(body)
		return
	}
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
