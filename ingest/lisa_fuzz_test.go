package ingest

import (
	"context"
	"crypto/hmac"
	"encoding/hex"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/productstream/productstream/config"
)

func fuzzLiSASource(t testing.TB) *Source {
	return oneSource(t, config.Source{Name: "f", Provider: "lisa", Secrets: []string{"s1", "s0"}, APIKeys: []string{"k1"}})
}

// Verify accepts exactly the deliveries whose signature is the HMAC of the
// body under a configured secret, and never panics.
func FuzzLiSAVerify(f *testing.F) {
	f.Add([]byte(`{"productId":"1"}`), "", "ApiKey k1")
	f.Add([]byte(`{}`), strings.Repeat("0", 64), "ApiKey k1")
	f.Add([]byte(`x`), "zz", "ApiKey")
	src := fuzzLiSASource(f)
	f.Fuzz(func(t *testing.T, body []byte, sig, auth string) {
		h := http.Header{}
		h.Set("Authorization", auth)
		h.Set("X-Hmac-Signature", sig)
		err := verifyErr(context.Background(), src, &Request{Header: h, Body: body})
		raw, decErr := hex.DecodeString(h.Get("X-Hmac-Signature"))
		genuine := decErr == nil && (hmac.Equal(raw, hmacSHA256([]byte("s1"), body)) || hmac.Equal(raw, hmacSHA256([]byte("s0"), body)))
		keyOK := strings.TrimSpace(strings.TrimPrefix(h.Get("Authorization"), "ApiKey ")) == "k1" && strings.HasPrefix(h.Get("Authorization"), "ApiKey ")
		if (err == nil) != (genuine && keyOK) {
			t.Fatalf("Verify = %v for genuine=%v keyOK=%v", err, genuine, keyOK)
		}
		if err != nil && !errors.Is(err, ErrMissingSignature) && !errors.Is(err, ErrMalformedSignature) && !errors.Is(err, ErrBadSignature) && !errors.Is(err, ErrUnauthorized) {
			t.Fatalf("unclassified error %v", err)
		}
	})
}

// Normalize either refuses with ErrInvalidPayload or returns one change
// with a usable key (no control characters) and the body as valid UTF-8.
func FuzzLiSANormalize(f *testing.F) {
	f.Add([]byte(`{"productId":"123","price":19.99,"title":"x","updatedAt":"2026-01-01T00:00:00Z"}`))
	f.Add([]byte(`{"productId":7}`))
	f.Add([]byte(`[1]`))
	f.Add([]byte("{\"productId\":\"\xff\"}"))
	src := fuzzLiSASource(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		b, err := normalizeSigned(t, src, &Request{Body: body, Received: time.Now()})
		if err != nil {
			if !errors.Is(err, ErrInvalidPayload) || b.Len() != 0 {
				t.Fatalf("error %v with %d records", err, b.Len())
			}
			return
		}
		if len(b.Changes) != 1 {
			t.Fatalf("%d changes", len(b.Changes))
		}
		c := b.Changes[0]
		if c.ProductID == "" || len(c.ProductID) > maxIDLen || strings.ContainsFunc(c.ProductID, unicode.IsControl) ||
			!utf8.ValidString(c.Raw) || c.Raw != string(body) {
			t.Fatalf("bad change %+v", c)
		}
	})
}
