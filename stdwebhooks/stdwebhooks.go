// Package stdwebhooks is the symmetric ("v1") signature scheme of the
// Standard Webhooks specification, which ingest verifies (provider
// standardwebhooks) and the webhook sink signs with:
//
//	webhook-id: <message id>
//	webhook-timestamp: <unix seconds>
//	webhook-signature: v1,<base64 HMAC-SHA256(key, id "." timestamp "." body)> [v1,<...> ...]
//
// A secret is "whsec_" followed by the standard base64 of the key.
package stdwebhooks

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strings"
)

// The scheme's headers and the secrets' prefix.
const (
	IDHeader        = "webhook-id"
	TimestampHeader = "webhook-timestamp"
	SignatureHeader = "webhook-signature"
	SecretPrefix    = "whsec_"
)

// DecodeSecret decodes a "whsec_<base64 key>" secret. Its errors never
// hold the secret.
func DecodeSecret(s string) ([]byte, error) {
	b64, ok := strings.CutPrefix(s, SecretPrefix)
	if !ok {
		return nil, errors.New("must start with " + SecretPrefix)
	}
	key, err := base64.StdEncoding.Strict().DecodeString(b64)
	if err != nil || len(key) == 0 {
		return nil, errors.New("must be " + SecretPrefix + " followed by the standard base64 of a non-empty key")
	}
	return key, nil
}

// Signature is HMAC-SHA256(key, id "." timestamp "." body): the bytes a v1
// entry carries in base64.
func Signature(key []byte, id, timestamp string, body []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(id))
	m.Write([]byte{'.'})
	m.Write([]byte(timestamp))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}

// Header is the webhook-signature value signing id, timestamp and body
// with each key in turn: one v1 entry per key, space-separated, so a
// receiver holding any one of the keys accepts it (rotation).
func Header(keys [][]byte, id, timestamp string, body []byte) string {
	entries := make([]string, len(keys))
	for i, key := range keys {
		entries[i] = "v1," + base64.StdEncoding.EncodeToString(Signature(key, id, timestamp, body))
	}
	return strings.Join(entries, " ")
}
