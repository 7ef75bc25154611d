package ingest

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"strings"
)

// hmacSHA256 returns HMAC-SHA256(key, body).
func hmacSHA256(key, body []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(body)
	return m.Sum(nil)
}

// verifyHexHMAC checks a hex-encoded HMAC-SHA256 of body (either case)
// against every secret, in constant time per comparison. header names the
// header in errors; the presented value never appears in them.
func verifyHexHMAC(header, presented string, secrets [][]byte, body []byte) error {
	if presented == "" {
		return fmt.Errorf("%w: %s header is required", ErrMissingSignature, header)
	}
	if strings.ContainsAny(presented, "\r\n") {
		return fmt.Errorf("%w: %s contains a line break", ErrMalformedSignature, header)
	}
	sig, err := hex.DecodeString(presented)
	if err != nil || len(sig) != sha256.Size {
		return fmt.Errorf("%w: %s must be %d hex characters", ErrMalformedSignature, header, 2*sha256.Size)
	}
	for _, sec := range secrets {
		if hmac.Equal(sig, hmacSHA256(sec, body)) {
			return nil
		}
	}
	return fmt.Errorf("%w: %s", ErrBadSignature, header)
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
