package ingest

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/productstream/productstream/config"
)

// Helpers for tests that call an adapter directly.

// oneSource builds cfg as the only configured source, failing t on a
// configuration error.
func oneSource(t testing.TB, cfg config.Source) *Source {
	t.Helper()
	srcs, err := NewSources([]config.Source{cfg}, Deps{})
	if err != nil {
		t.Fatal(err)
	}
	return srcs[0]
}

// verifyErr runs src's Verify alone, for tests of its refusals.
func verifyErr(ctx context.Context, src *Source, req *Request) error {
	_, err := src.Adapter.Verify(ctx, req)
	return err
}

// wantErrIs fails t unless err is want (errors.Is), or nil when want is nil.
func wantErrIs(t testing.TB, err, want error) {
	t.Helper()
	if want == nil && err != nil || want != nil && !errors.Is(err, want) {
		t.Fatalf("got %v, want %v", err, want)
	}
}

// verifiedFor returns req as src's Verify accepts it once signed as src's
// sender signs it (its Signer's headers set over req's own), checked at the
// current time: Normalize sees only verified deliveries. The result carries
// req's own arrival time, for Normalize.
func verifiedFor(t testing.TB, src *Source, req *Request) Verified {
	t.Helper()
	h := req.Header.Clone()
	if h == nil {
		h = http.Header{}
	}
	for k, vs := range src.Adapter.(Signer).Sign(req.Body) {
		h[k] = vs
	}
	v, err := src.Adapter.Verify(t.Context(), &Request{Header: h, Body: req.Body, Received: time.Now()})
	if err != nil {
		t.Fatalf("%s: Verify refused its own signature: %v", src.Name, err)
	}
	v.Request = &Request{Header: h, Body: req.Body, Received: req.Received}
	return v
}

// normalizeSigned normalizes req's body as src receives it once verified
// (verifiedFor).
func normalizeSigned(t testing.TB, src *Source, req *Request) (Batch, error) {
	t.Helper()
	return src.Adapter.Normalize(t.Context(), verifiedFor(t, src, req))
}

// identityOf is the identity src's Verify gives req once signed.
func identityOf(t testing.TB, src *Source, req *Request) Identity {
	t.Helper()
	return verifiedFor(t, src, req).Identity
}

// wantFieldError fails t unless err is a *config.FieldError on field, or
// nil when field is "".
func wantFieldError(t testing.TB, err error, field string) {
	t.Helper()
	var fe *config.FieldError
	switch {
	case field == "" && err != nil:
		t.Fatal(err)
	case field != "" && (!errors.As(err, &fe) || fe.Field != field):
		t.Fatalf("error %v, want a FieldError on %s", err, field)
	}
}
