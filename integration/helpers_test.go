package integration

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
)

// hmacHex signs body the way LiSA senders do, independently of productstream's code.
func hmacHex(secret string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}
