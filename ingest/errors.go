package ingest

import (
	"errors"
	"net/http"
)

// Errors a request can be refused with. Each maps to one HTTP status; the
// error's text (never a secret or a signature) is the JSON error body.
var (
	// ErrUnknownSource: no source has that name or provider id (404).
	ErrUnknownSource = errors.New("unknown source")
	// ErrBodyTooLarge: the body exceeds the source's limit (413).
	ErrBodyTooLarge = errors.New("request body too large")
	// ErrMissingSignature: the signature header is absent or empty (400).
	ErrMissingSignature = errors.New("missing signature")
	// ErrMalformedSignature: the signature header cannot be decoded (400).
	ErrMalformedSignature = errors.New("malformed signature")
	// ErrBadSignature: no configured secret produces the signature (401).
	ErrBadSignature = errors.New("signature does not match")
	// ErrUnauthorized: missing or wrong API key or other credential (401).
	ErrUnauthorized = errors.New("unauthorized")
	// ErrStale: a signed timestamp outside the tolerance, or a message older
	// than the source's max age (401).
	ErrStale = errors.New("stale or future timestamp")
	// ErrForbidden: authentic, but not allowed for this source, such as an
	// SNS topic not on the allow-list (403).
	ErrForbidden = errors.New("forbidden")
	// ErrRateLimited: the source sent more than its rate limit (429).
	ErrRateLimited = errors.New("rate limit exceeded")
	// ErrInvalidPayload: the verified body is not what the contract says (400).
	ErrInvalidPayload = errors.New("invalid payload")
	// ErrUnavailable: Kafka did not acknowledge in time; retry later (503).
	ErrUnavailable = errors.New("temporarily unavailable")
)

// statusOf maps a refusal to its HTTP status.
func statusOf(err error) int {
	switch {
	case errors.Is(err, ErrUnknownSource):
		return http.StatusNotFound
	case errors.Is(err, ErrBodyTooLarge):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, ErrMissingSignature), errors.Is(err, ErrMalformedSignature), errors.Is(err, ErrInvalidPayload):
		return http.StatusBadRequest
	case errors.Is(err, ErrBadSignature), errors.Is(err, ErrUnauthorized), errors.Is(err, ErrStale):
		return http.StatusUnauthorized
	case errors.Is(err, ErrForbidden):
		return http.StatusForbidden
	case errors.Is(err, ErrRateLimited):
		return http.StatusTooManyRequests
	case errors.Is(err, ErrUnavailable):
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}
