package ingest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/productstream/productstream/config"
)

// cfgWhsec is the Standard Webhooks form of a raw key.
func cfgWhsec(key string) string { return "whsec_" + base64.StdEncoding.EncodeToString([]byte(key)) }

var cfgSWPayload = &config.Payload{IDPointer: "/data/id", TypePointer: "/type", DeleteTypes: []string{"product.deleted"}}

// cfgSWSource is a standardwebhooks source whose keys are the bytes of
// "s1" and "s0", so the conformance suite's secret names are the keys.
func cfgSWSource(name string) config.Source {
	return config.Source{Name: name, Provider: "standardwebhooks", Namespace: name,
		Secrets: []string{cfgWhsec("s1"), cfgWhsec("s0")}, Payload: cfgSWPayload, DedupeWindow: time.Minute}
}

// cfgSWSign signs body as Standard Webhooks does with key, computing the
// MAC over the concatenation directly (not through the provider's code).
func cfgSWSign(key, id, ts string, body []byte) string {
	return "v1," + base64.StdEncoding.EncodeToString(hmacSHA256([]byte(key), append([]byte(id+"."+ts+"."), body...)))
}

// cfgSWSigner signs a new message (fresh webhook-id, current time) with the
// key named by secret.
func cfgSWSigner(secret string, body []byte) http.Header {
	id, ts := "msg_"+rand.Text(), strconv.FormatInt(time.Now().Unix(), 10)
	return http.Header{
		"Content-Type":      {"application/json"},
		"Webhook-Id":        {id},
		"Webhook-Timestamp": {ts},
		"Webhook-Signature": {cfgSWSign(secret, id, ts, body)},
	}
}

func TestStandardWebhooksConformance(t *testing.T) {
	zeros := base64.StdEncoding.EncodeToString(make([]byte, 32))
	alter := func(header string, f func(string) string) func(h http.Header) {
		return func(h http.Header) { h.Set(header, f(h.Get(header))) }
	}
	sig := func(f func(string) string) func(h http.Header) { return alter("Webhook-Signature", f) }
	runConformance(t, conformance{
		source: cfgSWSource("sw"),
		path:   "/webhooks/sw",
		valid: func(n int) []byte {
			return fmt.Appendf(nil, `{"type":"product.updated","timestamp":"2026-01-02T03:04:05Z","data":{"id":"p%d","title":"Mug"}}`, n)
		},
		sign:      cfgSWSigner,
		withID:    func(id string) []byte { return []byte(`{"type":"product.updated","data":{"id":` + id + `}}`) },
		idField:   "field /data/id",
		resend:    resendReplay,
		wantKeys:  func(n int) []string { return []string{fmt.Sprintf("sw:p%d", n)} },
		sigHeader: "webhook-signature",
		badSignatures: []tamper{
			{"only an unknown version", sig(func(v string) string { return "v2," + strings.TrimPrefix(v, "v1,") }), http.StatusBadRequest},
			{"only v1a (asymmetric)", sig(func(v string) string { return "v1a," + strings.TrimPrefix(v, "v1,") }), http.StatusBadRequest},
			{"no version", sig(func(v string) string { return strings.TrimPrefix(v, "v1,") }), http.StatusBadRequest},
			{"v1 not base64", sig(func(string) string { return "v1," + strings.Repeat("!", 44) }), http.StatusBadRequest},
			{"v1 truncated", sig(func(v string) string { return v[:len(v)-4] }), http.StatusBadRequest},
			{"v1 hex instead of base64", sig(func(string) string { return "v1," + strings.Repeat("ab", 32) }), http.StatusBadRequest},
			{"only a wrong v1", sig(func(string) string { return "v1," + zeros }), http.StatusUnauthorized},
			{"valid v1 after a wrong one and another version", sig(func(v string) string { return "v1," + zeros + " v2,abc " + v }), 0},
			{"valid v1 after a malformed one", sig(func(v string) string { return "v1,!!! " + v }), 0},
			{"webhook-id missing", func(h http.Header) { h.Del("Webhook-Id") }, http.StatusBadRequest},
			{"webhook-id with a dot", alter("Webhook-Id", func(v string) string { return v + ".1" }), http.StatusBadRequest},
			{"webhook-id changed", alter("Webhook-Id", func(v string) string { return v + "x" }), http.StatusUnauthorized},
			{"timestamp missing", func(h http.Header) { h.Del("Webhook-Timestamp") }, http.StatusBadRequest},
			{"timestamp not digits", alter("Webhook-Timestamp", func(v string) string { return v + "Z" }), http.StatusBadRequest},
			{"timestamp moved by a second", alter("Webhook-Timestamp", func(v string) string { return cfgShiftUnix(v, 1) }), http.StatusUnauthorized},
			{"timestamp an hour old", alter("Webhook-Timestamp", func(v string) string { return cfgShiftUnix(v, -3600) }), http.StatusUnauthorized},
		},
		invalidBodies: []invalidBody{
			{name: "missing id", body: []byte(`{"type":"product.updated","data":{}}`), errHas: "missing field /data/id"},
			{name: "data not an object", body: []byte(`{"type":"product.updated","data":"p"}`), errHas: "missing field /data/id"},
			{name: "type not a string", body: []byte(`{"type":["x"],"data":{"id":"p"}}`), errHas: "field /type must be a string"},
			{name: "JSON array", body: []byte(`[{"data":{"id":"p"}}]`), errHas: "not a JSON object"},
		},
	}, Deps{})
}

// A signature computed independently, with
// python3 -c "import hmac,hashlib,base64; k=base64.b64decode('MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw'); print(base64.b64encode(hmac.new(k, b'msg_p5jXN8AQM9LWM0D4loKWxJek.1614265330.{\"type\":\"product.updated\",\"data\":{\"id\":\"prod_1\",\"title\":\"Mug\"}}', hashlib.sha256).digest()).decode())"
func TestStandardWebhooksVector(t *testing.T) {
	src := oneSource(t, config.Source{Name: "sw", Namespace: "sw", Provider: "standardwebhooks",
		Secrets: []string{"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}, Payload: cfgSWPayload})
	body := []byte(`{"type":"product.updated","data":{"id":"prod_1","title":"Mug"}}`)
	req := &Request{Header: http.Header{
		"Webhook-Id":        {"msg_p5jXN8AQM9LWM0D4loKWxJek"},
		"Webhook-Timestamp": {"1614265330"},
		"Webhook-Signature": {"v1,E6qNQcbyJxFaiwk8KacA2bnA0pDqraWYzXsfYoNPYmk="},
	}, Body: body, Received: time.Unix(1614265330, 0)}
	v, err := src.Adapter.Verify(t.Context(), req)
	if err != nil {
		t.Fatalf("vector refused: %v", err)
	}
	b, err := src.Adapter.Normalize(t.Context(), v)
	if err != nil {
		t.Fatal(err)
	}
	ch := b.Changes[0]
	if ch.ProductID != "prod_1" || ch.EventID != "msg_p5jXN8AQM9LWM0D4loKWxJek" || ch.EventType != "product.updated" ||
		ch.Deleted || ch.Provider != "standardwebhooks" || ch.Fields.Title == nil || *ch.Fields.Title != "Mug" {
		t.Fatalf("change %+v", ch)
	}
	if id := v.Identity; id != (Identity{ID: "msg_p5jXN8AQM9LWM0D4loKWxJek", Signed: true}) {
		t.Fatalf("DeliveryID %+v", id)
	}
	// Five minutes later the same delivery is still fresh; a second more is not.
	req.Received = time.Unix(1614265330+300, 0)
	if err := verifyErr(t.Context(), src, req); err != nil {
		t.Fatalf("at the tolerance: %v", err)
	}
	req.Received = req.Received.Add(time.Second)
	if err := verifyErr(t.Context(), src, req); !errors.Is(err, ErrStale) {
		t.Fatalf("past the tolerance: %v, want ErrStale", err)
	}
}

// What Sign produces verifies, with a fresh webhook-id each time.
func TestStandardWebhooksSignRoundTrip(t *testing.T) {
	src := oneSource(t, cfgSWSource("sw"))
	body := []byte(`{"data":{"id":"p"}}`)
	h1, h2 := src.Adapter.(Signer).Sign(body), src.Adapter.(Signer).Sign(body)
	if h1.Get("webhook-id") == h2.Get("webhook-id") {
		t.Fatal("Sign reused a webhook-id")
	}
	if err := verifyErr(t.Context(), src, &Request{Header: h1, Body: body, Received: time.Now()}); err != nil {
		t.Fatal(err)
	}
}

// The tolerance is five minutes both ways, inclusive; the server's clock
// is the reference.
func TestStandardWebhooksTolerance(t *testing.T) {
	now := time.Unix(1_750_000_000, 0)
	f := startEdge(t, []config.Source{cfgSWSource("sw")}, Deps{}, 5*time.Second, withClock(func() time.Time { return now }))
	for i, tc := range []struct {
		name   string
		offset time.Duration
		status int
	}{
		{"exactly 5m old", -5 * time.Minute, http.StatusAccepted},
		{"exactly 5m ahead", 5 * time.Minute, http.StatusAccepted},
		{"5m1s old", -5*time.Minute - time.Second, http.StatusUnauthorized},
		{"5m1s ahead", 5*time.Minute + time.Second, http.StatusUnauthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := fmt.Appendf(nil, `{"data":{"id":"p%d"}}`, i)
			id, ts := fmt.Sprintf("msg_%d", i), strconv.FormatInt(now.Add(tc.offset).Unix(), 10)
			status, resp, _ := f.postT(t, "/webhooks/sw", bytes.NewReader(body), int64(len(body)), map[string]string{
				"webhook-id": id, "webhook-timestamp": ts, "webhook-signature": cfgSWSign("s1", id, ts, body),
			})
			if status != tc.status {
				t.Fatalf("status %d, want %d (%v)", status, tc.status, resp)
			}
			if status == http.StatusUnauthorized && !strings.Contains(errorText(resp), ErrStale.Error()) {
				t.Fatalf("error %q is not ErrStale", errorText(resp))
			}
		})
	}
	if n := len(f.records()); n != 2 {
		t.Fatalf("want 2 records, got %d", n)
	}
}

// A replayed webhook-id is answered as accepted without a second record,
// even re-signed at a later time; a new id with the same body is a new
// delivery. A delete type becomes a deletion.
func TestStandardWebhooksReplay(t *testing.T) {
	f := startEdge(t, []config.Source{cfgSWSource("sw")}, Deps{}, 5*time.Second)
	body := []byte(`{"type":"product.deleted","data":{"id":"gone"}}`)
	post := func(id string, ts int64) {
		t.Helper()
		tss := strconv.FormatInt(ts, 10)
		status, resp, _ := f.post("/webhooks/sw", bytes.NewReader(body), int64(len(body)), map[string]string{
			"webhook-id": id, "webhook-timestamp": tss, "webhook-signature": cfgSWSign("s0", id, tss, body),
		})
		if status != http.StatusAccepted || resp["accepted"] != 1.0 {
			t.Fatalf("%s: %d %v", id, status, resp)
		}
	}
	now := time.Now().Unix()
	post("msg_a", now)
	post("msg_a", now)    // the sender's retry
	post("msg_a", now+10) // a retry re-signed later
	if n := len(f.records()); n != 1 {
		t.Fatalf("a replayed webhook-id wrote %d records, want 1", n)
	}
	post("msg_b", now)
	recs := f.records()
	if len(recs) != 2 {
		t.Fatalf("want 2 records, got %d", len(recs))
	}
	for i, r := range recs {
		ch, err := f.serde.DecodeChange(context.Background(), r.Value)
		if err != nil {
			t.Fatal(err)
		}
		if !ch.Deleted || ch.ProductID != "gone" || ch.EventID != []string{"msg_a", "msg_b"}[i] || string(r.Key) != "sw:gone" {
			t.Fatalf("record %d: %+v", i, ch)
		}
	}
}

// Verify's refusals of the three headers, each with its sentinel (direct
// calls, so what HTTP cannot carry is covered too).
func TestStandardWebhooksSignatureHeader(t *testing.T) {
	src := oneSource(t, cfgSWSource("sw"))
	now := time.Unix(1_700_000_000, 0)
	body := []byte(`{"data":{"id":"p"}}`)
	const id, ts = "msg_1", "1700000000"
	good := cfgSWSign("s1", id, ts, body)
	zeros := "v1," + base64.StdEncoding.EncodeToString(make([]byte, 32))
	for _, tc := range []struct {
		name          string
		id, ts, sig   string
		want          error // nil: accepted
		wantInMessage string
	}{
		{"valid", id, ts, good, nil, ""},
		{"rotated key", id, ts, cfgSWSign("s0", id, ts, body), nil, ""},
		{"one of several, last", id, ts, zeros + " " + zeros + " " + good, nil, ""},
		{"one of several, first", id, ts, good + " " + zeros, nil, ""},
		{"among other versions", id, ts, "v2,abc v1a,xyz " + good + " v0,", nil, ""},
		{"double spaces", id, ts, zeros + "  " + good, nil, ""},
		{"wrong key", id, ts, cfgSWSign("wrong", id, ts, body), ErrBadSignature, ""},
		{"only wrong v1s", id, ts, zeros + " " + zeros, ErrBadSignature, ""},
		{"only unknown versions", id, ts, "v2," + strings.TrimPrefix(good, "v1,") + " v1a,abc", ErrMalformedSignature, "no v1"},
		{"version in other case", id, ts, "V1," + strings.TrimPrefix(good, "v1,"), ErrMalformedSignature, "no v1"},
		{"only malformed v1s", id, ts, "v1,!!! v1," + strings.TrimPrefix(good, "v1,")[:20], ErrMalformedSignature, "base64"},
		{"v1 unpadded", id, ts, strings.TrimRight(good, "="), ErrMalformedSignature, "base64"},
		{"comma-separated instead of spaces", id, ts, zeros + "," + good, ErrMalformedSignature, "base64"},
		{"embedded newline", id, ts, zeros + "\n" + good, ErrMalformedSignature, "line break"},
		{"signature missing", id, ts, "", ErrMissingSignature, "webhook-signature"},
		{"id missing", "", ts, good, ErrMissingSignature, "webhook-id"},
		{"id with a dot", "msg.1", ts, cfgSWSign("s1", "msg.1", ts, body), ErrMalformedSignature, "'.'"},
		{"id too long", strings.Repeat("m", maxIDLen+1), ts, good, ErrMalformedSignature, "webhook-id"},
		{"id not UTF-8", "msg_\xff", ts, good, ErrMalformedSignature, "webhook-id"},
		{"timestamp missing", id, "", good, ErrMissingSignature, "webhook-timestamp"},
		{"timestamp with a sign", id, "+" + ts, good, ErrMalformedSignature, "digits"},
		{"timestamp in milliseconds", id, ts + "000", cfgSWSign("s1", id, ts+"000", body), ErrStale, ""},
		{"timestamp as a date", id, "2023-11-14T22:13:20Z", good, ErrMalformedSignature, "digits"},
		{"timestamp with a leading zero", id, "0" + ts, good, ErrBadSignature, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			for k, v := range map[string]string{"webhook-id": tc.id, "webhook-timestamp": tc.ts, "webhook-signature": tc.sig} {
				if v != "" {
					h[http.CanonicalHeaderKey(k)] = []string{v}
				}
			}
			err := verifyErr(t.Context(), src, &Request{Header: h, Body: body, Received: now})
			wantErrIs(t, err, tc.want)
			if err != nil && !strings.Contains(err.Error(), tc.wantInMessage) {
				t.Fatalf("error %q does not say %q", err, tc.wantInMessage)
			}
			if err != nil && strings.Contains(err.Error(), strings.TrimPrefix(good, "v1,")[:16]) {
				t.Fatalf("error leaks the signature: %v", err)
			}
		})
	}
	// A body altered after signing, one byte.
	altered := bytes.Replace(body, []byte(`"p"`), []byte(`"q"`), 1)
	h := http.Header{"Webhook-Id": {id}, "Webhook-Timestamp": {ts}, "Webhook-Signature": {good}}
	if err := verifyErr(t.Context(), src, &Request{Header: h, Body: altered, Received: now}); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("altered body: %v, want ErrBadSignature", err)
	}
}

// Configuration errors name the exact field, at the source's index; the
// message never holds the secret.
func TestStandardWebhooksConfigErrors(t *testing.T) {
	ok := cfgWhsec("key")
	for _, tc := range []struct {
		name  string
		src   config.Source
		field string
	}{
		{"no secrets", config.Source{Payload: cfgSWPayload}, "sources[1].secrets"},
		{"secret without prefix", config.Source{Secrets: []string{ok, "c2VjcmV0"}, Payload: cfgSWPayload}, "sources[1].secrets[1]"},
		{"secret not base64", config.Source{Secrets: []string{"whsec_not base64!"}, Payload: cfgSWPayload}, "sources[1].secrets[0]"},
		{"secret unpadded", config.Source{Secrets: []string{"whsec_c2VjcmV0MQ"}, Payload: cfgSWPayload}, "sources[1].secrets[0]"},
		{"secret empty key", config.Source{Secrets: []string{"whsec_"}, Payload: cfgSWPayload}, "sources[1].secrets[0]"},
		{"hmac block", config.Source{Secrets: []string{ok}, Payload: cfgSWPayload, HMAC: &config.HMAC{Header: "X"}}, "sources[1].hmac"},
		{"no payload", config.Source{Secrets: []string{ok}}, "sources[1].payload"},
		{"no id pointer", config.Source{Secrets: []string{ok}, Payload: &config.Payload{TypePointer: "/type"}}, "sources[1].payload.id_pointer"},
		{"a member with an empty name is a valid id pointer", config.Source{Secrets: []string{ok}, Payload: &config.Payload{IDPointer: "/"}}, ""},
		{"id pointer not a pointer", config.Source{Secrets: []string{ok}, Payload: &config.Payload{IDPointer: "data.id"}}, "sources[1].payload.id_pointer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.src.Name, tc.src.Provider = "bad", "standardwebhooks"
			lisa := config.Source{Name: "l", Provider: "lisa", Secrets: []string{"s"}, APIKeys: []string{"k"}}
			_, err := NewSources([]config.Source{lisa, tc.src}, Deps{})
			if tc.field == "" { // a valid configuration
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			var fe *config.FieldError
			if !errors.As(err, &fe) || fe.Field != tc.field {
				t.Fatalf("error %v, want a FieldError on %s", err, tc.field)
			}
			for _, s := range tc.src.Secrets {
				if len(s) > len("whsec_") && strings.Contains(err.Error(), s) {
					t.Fatalf("error leaks a secret: %v", err)
				}
			}
		})
	}
}
