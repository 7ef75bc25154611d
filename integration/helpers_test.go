package integration

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/productstream/productstream/kafka"
)

// hmacHex signs body the way LiSA senders do, independently of productstream's code.
func hmacHex(secret string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

// readAll reads every committed record of topic present now, as a
// read_committed consumer does: up to the last stable offset, without the
// records of aborted transactions. A topic that does not exist reads as
// empty. It fails the test unless every partition reaches its end offset
// within a minute.
func readAll(t *testing.T, brokers, topic string) []*kgo.Record {
	t.Helper()
	var out []*kgo.Record
	_, err := kafka.ReadToEnd(context.Background(), clientOpts(t, brokers), []string{topic},
		func(r *kgo.Record) error {
			out = append(out, r)
			return nil
		},
		kafka.WithTimeout(time.Minute), kafka.WithIdleEnd(0))
	if err != nil {
		t.Fatal(err)
	}
	return out
}
