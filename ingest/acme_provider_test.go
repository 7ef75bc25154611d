package ingest

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/productstream/productstream/config"
	"github.com/productstream/productstream/schemas"
)

// acme is a provider that exists only in tests. It shows what adding a
// provider takes: this one file (its registration, factory, adapter,
// conformance case and fuzz targets) plus one registration line, which
// for a real provider goes in providers() and for this one is
// testProviders.
//
//	POST /webhooks/{name}
//	X-Acme-Signature: sha256=<hex(HMAC-SHA256(secret, raw body))>
//	body: {"<id_key>": "<product id>", "title": "...", "updated_at": "<RFC 3339>"}
//
// Options: id_key, the member holding the product id (default "sku").
// A body names its own time, so the body identifies a delivery.
func acmeProvider() Registration {
	return Registration{Name: "acme", MaxBody: 64 << 10, New: newAcme}
}

// testProviders is the registry of the tests of fixture providers: the
// built-in providers and acme.
func testProviders() registry { return providers().with(acmeProvider()) }

const acmeSignatureHeader = "X-Acme-Signature"

// acmeOptions are acme's options, decoded strictly from options.
type acmeOptions struct {
	IDKey string `yaml:"id_key"`
}

// acmeSource is a configured acme source: a sender that signs the body,
// whose body identifies a delivery (bodySigned), and its id key.
type acmeSource struct {
	bodySigned
	idKey string
}

var _ Signer = (*acmeSource)(nil)

func newAcme(cfg config.Source, _ Deps) (Adapter, error) {
	keys, err := secretKeys(cfg)
	if err != nil {
		return nil, err
	}
	o := acmeOptions{IDKey: "sku"}
	if err := decodeOptions(cfg, &o); err != nil {
		return nil, err
	}
	if o.IDKey == "" {
		return nil, badField("options.id_key", "must not be empty")
	}
	verifier := &hmacVerifier{header: acmeSignatureHeader, prefix: "sha256=", keys: keys}
	return &acmeSource{bodySigned: bodySigned{origin: originOf(cfg), verifier: verifier}, idKey: o.IDKey}, nil
}

func (a *acmeSource) Normalize(_ context.Context, v Verified) (Batch, error) {
	o, err := parseObject(v.Body, a.maxDepth)
	if err != nil {
		return Batch{}, err
	}
	id, err := o.id(a.idKey)
	if err != nil {
		return Batch{}, err
	}
	return Batch{Changes: []schemas.Change{{
		EventID: v.Identity.ID, Source: a.name, Provider: "acme", Namespace: a.namespace,
		EventType: "product.updated", Resource: "product", ProductID: id,
		ReceivedAt: v.Received, OccurredAt: o.time("updated_at"),
		Fields: schemas.Fields{Title: o.text("title")},
		Raw:    string(v.Body),
	}}}, nil
}

// acmeOptionsNode is text decoded as a source's options block.
func acmeOptionsNode(t testing.TB, text string) yaml.Node {
	t.Helper()
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(text), &doc); err != nil {
		t.Fatal(err)
	}
	return *doc.Content[0]
}

func acmeSourceConfig(t testing.TB) config.Source {
	return config.Source{Name: "acme-main", Provider: "acme", Namespace: "acme", Secrets: []string{"s1", "s0"},
		DedupeWindow: 10 * time.Minute, Options: acmeOptionsNode(t, "id_key: code")}
}

func TestAcmeConformance(t *testing.T) {
	runConformance(t, conformance{
		providers: testProviders(),
		source:    acmeSourceConfig(t),
		path:      "/webhooks/acme-main",
		valid: func(n int) []byte {
			return fmt.Appendf(nil, `{"code":"c%d","title":"Shoe","updated_at":"2026-01-02T03:04:05Z"}`, n)
		},
		sign:          hexSigner(acmeSignatureHeader, "sha256=", nil),
		withID:        func(id string) []byte { return []byte(`{"code":` + id + `}`) },
		idField:       "field code",
		wantKeys:      func(n int) []string { return []string{fmt.Sprintf("acme:c%d", n)} },
		sigHeader:     acmeSignatureHeader,
		badSignatures: hexTampering(acmeSignatureHeader, "sha256="),
		invalidBodies: []invalidBody{
			{name: "missing id", body: []byte(`{"sku":"c1"}`), errHas: "missing field code"},
			{name: "id is an object", body: []byte(`{"code":{}}`), errHas: "field code must be a string or an integer"},
		},
	}, Deps{})
}

// acme's options are decoded strictly, and its errors name the field.
func TestAcmeOptions(t *testing.T) {
	for _, tc := range []struct{ name, options, field string }{
		{"default id key", "", ""},
		{"id key", "id_key: code", ""},
		{"empty id key", `id_key: ""`, "sources[0].options.id_key"},
		{"unknown key", "id_kee: code", "sources[0].options.id_kee"},
		{"wrong type", "id_key: [a]", "sources[0].options.id_key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := acmeSourceConfig(t)
			cfg.Options = yaml.Node{}
			if tc.options != "" {
				cfg.Options = acmeOptionsNode(t, tc.options)
			}
			_, err := testProviders().newSources([]config.Source{cfg}, Deps{})
			wantFieldError(t, err, tc.field)
		})
	}
}

func acmeFuzzSource(f *testing.F) *Source {
	srcs, err := testProviders().newSources([]config.Source{acmeSourceConfig(f)}, Deps{})
	if err != nil {
		f.Fatal(err)
	}
	return srcs[0]
}

// FuzzAcmeVerify: a signature is accepted only when it is "sha256=" and
// the hex of the body's HMAC under a configured secret.
func FuzzAcmeVerify(f *testing.F) {
	src := acmeFuzzSource(f)
	body := []byte(`{"code":"c1"}`)
	good := fmt.Sprintf("%x", hmacSHA256([]byte("s1"), body))
	for _, h := range []string{"sha256=" + good, good, "sha256=", "sha1=" + good, "", "sha256=" + good + "\n"} {
		f.Add(h, body)
	}
	f.Fuzz(func(t *testing.T, header string, body []byte) {
		err := verifyErr(t.Context(), src, &Request{Header: http.Header{"X-Acme-Signature": {header}}, Body: body})
		checkVerifyOutcome(t, err, body, func(mac []byte) bool {
			digest, ok := strings.CutPrefix(header, "sha256=")
			return ok && strings.EqualFold(digest, fmt.Sprintf("%x", mac))
		})
	})
}

// FuzzAcmeNormalize: a verified body is refused with ErrInvalidPayload or
// becomes one change fit for a record.
func FuzzAcmeNormalize(f *testing.F) {
	src := acmeFuzzSource(f)
	for _, b := range []string{`{"code":"c1","title":"x"}`, `{"code":7}`, `{"code":"p\ud800"}`, `[]`, `{"code":"c"}}`} {
		f.Add([]byte(b))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		b, err := normalizeSigned(t, src, &Request{Body: body})
		checkBatch(t, b, err)
		if err == nil && (len(b.Changes) != 1 || b.Changes[0].Raw != string(body)) {
			t.Fatalf("batch %+v", b)
		}
	})
}
