package ingest

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/productstream/productstream/config"
)

// Micro-benchmarks of the ingest hot paths: every provider's Verify and
// Normalize on valid bodies of 1 KB, 16 KB and 192 KB. Run them with
//
//	go test -run '^$' -bench . -benchmem ./ingest
//
// Each body is a valid payload of its provider, grown to the exact size by
// a long "description" field, and is checked to pass both Verify and
// Normalize before any timing, so a broken setup fails instead of
// reporting fast refusals. No size is skipped: every provider's default
// body limit is at least 192 KiB (LiSA's is exactly that), and the limit
// is enforced when the body is read, not by Verify or Normalize.

// benchSizes are the body sizes every hot path is measured at.
var benchSizes = []int{1 << 10, 16 << 10, 192 << 10}

// benchCase is one provider (or one signing variant of it) set up for the
// benchmarks.
type benchCase struct {
	name    string // the provider, as Normalize reports it
	variant string // appended to name by Verify ("-v1"), or ""
	// verifyOnly marks a variant that normalizes like another case.
	verifyOnly bool
	src        *Source
	// build returns a signed, valid request whose body carries pad in a
	// description field.
	build func(b *testing.B, pad string) *Request
}

// benchSigned builds a request the source's own Sign signs.
func benchSigned(src *Source, body []byte) *Request {
	return &Request{Header: src.Adapter.(Signer).Sign(body), Body: body, Received: time.Now().UTC()}
}

// benchCases sets up every provider. Sources sign with the first of two
// rotated secrets, so Verify computes one MAC per request.
func benchCases(b *testing.B) []benchCase {
	secrets := []string{"s1", "s0"}
	signedBy := func(src *Source, body func(pad string) []byte) func(*testing.B, string) *Request {
		return func(_ *testing.B, pad string) *Request { return benchSigned(src, body(pad)) }
	}
	var cases []benchCase
	add := func(name string, cfg config.Source, body func(pad string) []byte) {
		src := oneSource(b, cfg)
		cases = append(cases, benchCase{name: name, src: src, build: signedBy(src, body)})
	}

	add("lisa", config.Source{Name: "lisa", Provider: "lisa", Namespace: "ns", Secrets: secrets, APIKeys: []string{"k1"}},
		func(pad string) []byte {
			return fmt.Appendf(nil, `{"productId":"123","title":"Trail shoe","brand":"Acme","price":19.99,"currency":"EUR",`+
				`"availability":"in_stock","updatedAt":"2026-11-01T10:00:00Z","description":%q}`, pad)
		})
	add("datasembly", config.Source{Name: "ds", Provider: "datasembly", Namespace: "ns", Secrets: secrets},
		func(pad string) []byte { return dsBody(dsListing("description", fmt.Sprintf("%q", pad))) })
	add("iimmpact", config.Source{Name: "iim", Provider: "iimmpact", Namespace: "ns", Secrets: secrets},
		func(pad string) []byte {
			return iimmpactEvent("product.updated", "products", `"CELCOM10"`, fmt.Sprintf(
				`{"product_code":"CELCOM10","display_name":"Celcom Prepaid Reload","image_url":"https://example.com/c.png","is_active":true,"description":%q}`, pad))
		})
	add("aicommerce", config.Source{Name: "aic", Provider: "aicommerce", Namespace: "ns", Secrets: secrets},
		func(pad string) []byte {
			return aicommerceBody("product.updated", fmt.Sprintf(`{"productId":"p1","name":"Shoe","price":59.90,"currency":"EUR","description":%q}`, pad))
		})
	cases = append(cases, benchTipser(b, "1"), benchTipser(b, "2"))
	add("hmac", config.Source{Name: "gh", Provider: "hmac", Namespace: "ns", Secrets: secrets,
		HMAC: cfgGitHubHMAC, Payload: &config.Payload{IDPointer: "/id"}},
		func(pad string) []byte {
			return fmt.Appendf(nil, `{"id":"p1","title":"Trail shoe","price":"19.99","currency":"EUR","updated_at":"2026-01-02T03:04:05Z","description":%q}`, pad)
		})
	add("hmac-stamped", config.Source{Name: "st", Provider: "hmac", Namespace: "ns", Secrets: secrets,
		HMAC: cfgStampedHMAC, Payload: cfgStampedPayload},
		func(pad string) []byte {
			return fmt.Appendf(nil, `{"type":"product.updated","timestamp":"2026-01-02T03:04:05Z","data":{"id":"p1","title":"Mug","description":%q}}`, pad)
		})
	add("standardwebhooks", cfgSWSource("sw"),
		func(pad string) []byte {
			return fmt.Appendf(nil, `{"type":"product.updated","timestamp":"2026-01-02T03:04:05Z","data":{"id":"p1","title":"Mug","description":%q}}`, pad)
		})
	return cases
}

// benchTipser is a Tipser source receiving SNS notifications signed as
// SignatureVersion version by the SNS test key, whose certificate is
// already in the provider's cache under the AWS URL the envelopes name.
// Its outbound client refuses every request: a cache miss fails the setup
// instead of measuring a fetch.
func benchTipser(b *testing.B, version string) benchCase {
	noNetwork := &http.Client{Transport: roundTripFunc(func(*http.Request) (*http.Response, error) {
		return nil, errors.New("benchmark: no outbound requests")
	})}
	srcs, err := NewSources([]config.Source{{Name: "tip", Provider: "tipser", Namespace: "ns",
		SNS: &config.SNS{TopicARNs: []string{tipserTopic}}}}, Deps{Outbound: noNetwork})
	if err != nil {
		b.Fatal(err)
	}
	src := srcs[0]
	bed := &snsBed{key: snsTestKeys()[0], host: "sns.eu-west-1.amazonaws.com"}
	src.Adapter.(*tipser).certs.keys.Add(bed.certURL(), cachedKey{key: &bed.key.PublicKey, fetched: time.Now()})
	return benchCase{name: "tipser", variant: "-v" + version, verifyOnly: version == "1", src: src,
		build: func(b *testing.B, pad string) *Request {
			msg := tipserEvent("product-changed", fmt.Sprintf(`{"productId":"5075bb2ae1d49107c08f3fc8","description":%q}`, pad))
			m := bed.sign(b, bed.notification("22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324", msg), version)
			h := http.Header{}
			for k, v := range snsHeaders(m) {
				h.Set(k, v)
			}
			return &Request{Header: h, Body: m.body(b), Received: time.Now().UTC()}
		}}
}

// benchText is n bytes of plain ASCII prose, which JSON carries unescaped.
func benchText(n int) string {
	const words = "Lightweight trail running shoe with a grippy outsole. "
	return strings.Repeat(words, n/len(words)+1)[:n]
}

// request returns c's request with a body of exactly n bytes, checked to
// pass Verify and to normalize into at least one record, and what Verify
// returned for it.
func (c benchCase) request(b *testing.B, n int) (*Request, Verified) {
	b.Helper()
	pad := 0
	for range 3 {
		req := c.build(b, benchText(pad))
		if len(req.Body) == n {
			v, err := c.src.Adapter.Verify(b.Context(), req)
			if err != nil {
				b.Fatalf("%s: Verify refused the benchmark body: %v", c.name, err)
			}
			batch, err := c.src.Adapter.Normalize(b.Context(), v)
			if err != nil || batch.Len() == 0 {
				b.Fatalf("%s: Normalize gave %d records, error %v", c.name, batch.Len(), err)
			}
			return req, v
		}
		if pad += n - len(req.Body); pad < 0 {
			b.Fatalf("%s: the smallest body is %d bytes, over %d", c.name, len(req.Body), n)
		}
	}
	b.Fatalf("%s: cannot size the body to %d bytes", c.name, n)
	return nil, Verified{}
}

// BenchmarkVerify measures each provider's signature check on the exact
// raw body: hex or base64 decoding of the header, HMAC-SHA256 over the
// body (and signed template), or for Tipser the SNS envelope parse, the
// string to sign and an RSA-2048 PKCS#1 v1.5 check with a cached key.
func BenchmarkVerify(b *testing.B) {
	for _, c := range benchCases(b) {
		c.eachSize(b, c.name+c.variant, func(ctx context.Context, req *Request, _ Verified) error {
			_, err := c.src.Adapter.Verify(ctx, req)
			return err
		})
	}
}

// BenchmarkNormalize measures each provider's turning of a verified body
// into its batch: JSON parsing, field extraction, the body-derived event
// id and the raw copy each record keeps.
func BenchmarkNormalize(b *testing.B) {
	for _, c := range benchCases(b) {
		if c.verifyOnly {
			continue
		}
		c.eachSize(b, c.name, func(ctx context.Context, _ *Request, v Verified) error {
			_, err := c.src.Adapter.Normalize(ctx, v)
			return err
		})
	}
}

// eachSize runs name/<size> for each of benchSizes, timing op on c's
// request of that size and what Verify returned for it.
func (c benchCase) eachSize(b *testing.B, name string, op func(ctx context.Context, req *Request, v Verified) error) {
	for _, n := range benchSizes {
		b.Run(name+"/"+benchSizeName(n), func(b *testing.B) {
			req, v := c.request(b, n)
			ctx := b.Context()
			b.ReportAllocs()
			b.SetBytes(int64(n))
			for b.Loop() {
				if err := op(ctx, req, v); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func benchSizeName(n int) string { return fmt.Sprintf("%dKB", n>>10) }
