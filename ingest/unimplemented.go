package ingest

import (
	"context"
	"errors"
	"net/http"

	"github.com/productstream/productstream/config"
)

// unimplemented is embedded by providers still being written; it refuses
// every source at start. Remove it when the last provider is done.
type unimplemented struct{}

var errUnimplemented = errors.New("provider not implemented yet")

func (unimplemented) DefaultMaxBody() int64                           { return 1 << 20 }
func (unimplemented) Check(int, config.Source) error                  { return errUnimplemented }
func (unimplemented) Routes() []string                                { return nil }
func (unimplemented) Sign(*Source, []byte) http.Header                { return http.Header{} }
func (unimplemented) Verify(context.Context, *Source, *Request) error { return errUnimplemented }
func (unimplemented) Normalize(context.Context, *Source, *Request) (Batch, error) {
	return Batch{}, errUnimplemented
}
