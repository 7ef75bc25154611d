package ingest

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
)

// Tipser runs the shared conformance suite with its signature inside the
// body: each payload is a Tipser event, sealed into an SNS Notification
// signed by the test bed's key ("s1" and "s0") or by a key the bed's
// certificate does not hold ("wrong").
func TestTipserConformance(t *testing.T) {
	b := newSNSBed(t)
	runConformance(t, conformance{
		source: b.source("tipser-main"),
		path:   "/webhooks/tipser-main",
		valid: func(n int) []byte {
			return []byte(tipserEvent("product-changed", fmt.Sprintf(`{"productId":"p%d"}`, n)))
		},
		seal: func(secret string, payload []byte) ([]byte, http.Header) {
			// The message id is the payload's hash: one length for every
			// payload, so the suite can size a sealed body exactly.
			sum := sha256.Sum256(payload)
			m := b.notification("m-"+hex.EncodeToString(sum[:8]), string(payload))
			if secret == "wrong" {
				m = snsSignWith(t, b.wrong, m, "2")
			} else {
				m = b.sign(t, m, "2")
			}
			h := http.Header{}
			for k, v := range snsHeaders(m) {
				h.Set(k, v)
			}
			return m.body(t), h
		},
		alter: func(body []byte) []byte {
			// SNS signs the envelope's values, not its bytes: change the
			// message itself.
			var m map[string]string
			if err := json.Unmarshal(body, &m); err != nil {
				t.Fatal(err)
			}
			m["Message"] += " "
			out, err := json.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			return out
		},
		wantKeys: func(n int) []string { return []string{fmt.Sprintf("tip:p%d", n)} },
		withID:   func(id string) []byte { return []byte(tipserEvent("product-changed", `{"productId":`+id+`}`)) },
		idField:  "field data.productId",
		invalidBodies: []invalidBody{
			{name: "missing eventType", body: []byte(`{"data":{"productId":"1"}}`), errHas: "missing field eventType"},
			{name: "unknown eventType", body: []byte(tipserEvent("product-exploded", `{"productId":"1"}`)), errHas: "unknown Tipser eventType"},
			{name: "missing productId", body: []byte(tipserEvent("product-changed", `{}`)), errHas: "data.productId"},
		},
		resend: resendReplay,
	}, b.deps())
}
