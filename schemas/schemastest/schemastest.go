// Package schemastest gives tests a Serde whose schemas are registered on
// an in-process Confluent-API schema registry (srfake) of their own.
package schemastest

import (
	"context"
	"testing"

	"github.com/twmb/franz-go/pkg/sr"
	"github.com/twmb/franz-go/pkg/sr/srfake"

	"github.com/productstream/productstream/schemas"
)

// Serde registers the schemas of topics (by kind) on a registry that lives
// until the test ends. Once registered, the serde encodes without asking
// the registry again; decoding a schema id it has not seen asks it.
func Serde(t testing.TB, topics map[schemas.Kind][]string) *schemas.Serde {
	t.Helper()
	reg := srfake.New()
	t.Cleanup(reg.Close)
	cl, err := sr.NewClient(sr.URLs(reg.URL()))
	if err != nil {
		t.Fatal(err)
	}
	serde := schemas.NewSerde(cl)
	if err := serde.Register(context.Background(), topics); err != nil {
		t.Fatal(err)
	}
	return serde
}
