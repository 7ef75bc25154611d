package ingest

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/productstream/productstream/config"
)

// deliveryLog is an Observer that keeps every Delivery it is told of.
type deliveryLog struct {
	mu   sync.Mutex
	seen []Delivery
}

func (l *deliveryLog) Observe(d Delivery) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seen = append(l.seen, d)
}

// count is how many deliveries were observed.
func (l *deliveryLog) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.seen)
}

// last returns the latest Delivery, failing t when there is none.
func (l *deliveryLog) last(t *testing.T) Delivery {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.seen) == 0 {
		t.Fatal("no delivery observed")
	}
	return l.seen[len(l.seen)-1]
}

// Written names each record an accepted delivery wrote by the partition and
// offset Kafka gave it (franz-go sets both on a record it acknowledged), its
// key and its event id; a duplicate lists none, and says when it arrived,
// how many bytes its body had and which delivery it was.
func TestDeliveryWrittenIsWhatKafkaHolds(t *testing.T) {
	obs := &deliveryLog{}
	f := startEdge(t, []config.Source{{Name: "ds-main", Provider: "datasembly", ID: "acme", Namespace: "ds",
		Secrets: []string{"s1"}, DedupeWindow: time.Minute}}, Deps{}, 5*time.Second, WithObserver(obs))
	body := dsBody(dsListing("barcode", `"a"`), dsListing("barcode", `"b"`), dsListing("barcode", `"c"`),
		dsListing("barcode", `"d"`), dsListing("barcode", `"e"`))
	before := time.Now()
	if status, raw := familyPost(t, f.url+"/v2/ingest/productlistings/manual/acme", body, datasemblySigner("s1", body)); status != http.StatusOK {
		t.Fatalf("delivery: %d %s", status, raw)
	}
	d := obs.last(t)
	if d.Outcome != Accepted || d.Records != 5 || len(d.Written) != 5 {
		t.Fatalf("got %+v, want accepted with 5 records written", d)
	}
	if d.At.Before(before) || d.At.After(time.Now()) || d.Bytes != int64(len(body)) {
		t.Fatalf("at %v (posted at %v), bytes %d (body %d)", d.At, before, d.Bytes, len(body))
	}
	if want := bodyEventID("ds-main", body); d.DeliveryID != want {
		t.Fatalf("delivery id %q, want %q", d.DeliveryID, want)
	}
	type at struct {
		partition int32
		offset    int64
	}
	held := map[at][2]string{}
	for _, r := range f.records() {
		var eventID string
		for _, h := range r.Headers {
			if h.Key == "event-id" {
				eventID = string(h.Value)
			}
		}
		held[at{r.Partition, r.Offset}] = [2]string{string(r.Key), eventID}
	}
	partitions := map[int32]bool{}
	for i, w := range d.Written {
		got, ok := held[at{w.Partition, w.Offset}]
		if w.Topic != testTopic || !ok || got != [2]string{w.Key, w.EventID} {
			t.Fatalf("written[%d] = %+v; Kafka holds %q at that partition and offset", i, w, got)
		}
		if want := d.DeliveryID + "#" + strconv.Itoa(i); w.EventID != want {
			t.Fatalf("written[%d] event id %q, want %q (in the order produced)", i, w.EventID, want)
		}
		partitions[w.Partition] = true
	}
	if len(partitions) < 2 {
		t.Fatalf("five keys all on partition %v: the partition is not the one Kafka chose", partitions)
	}

	if status, raw := familyPost(t, f.url+"/v2/ingest/productlistings/manual/acme", body, datasemblySigner("s1", body)); status != http.StatusOK {
		t.Fatalf("retry: %d %s", status, raw)
	}
	if d := obs.last(t); d.Outcome != Duplicate || d.Records != 5 || len(d.Written) != 0 || d.Bytes != int64(len(body)) ||
		d.DeliveryID != bodyEventID("ds-main", body) {
		t.Fatalf("retry: %+v, want a duplicate of 5 that wrote nothing", d)
	}
}

// A refusal writes nothing and lists nothing written; its bytes are those
// read, or the Content-Length of a body never read, and it has a delivery
// id only once verified.
func TestDeliveryRefusalFields(t *testing.T) {
	obs := &deliveryLog{}
	f := startEdge(t, testSources, Deps{}, 5*time.Second, WithObserver(obs))
	good := []byte(`{"productId":"123","price":1}`)
	big := []byte(`{"productId":"123","pad":"` + strings.Repeat("x", 1024) + `"}`)
	lisa := func(sig string) map[string]string {
		return map[string]string{"Authorization": "ApiKey k1", "X-Hmac-Signature": sig, "Content-Type": "application/json"}
	}
	for _, tc := range []struct {
		name   string
		path   string
		body   []byte
		length int64 // -1: chunked
		hdr    map[string]string
		reason Reason
		bytes  int64
	}{
		{"bad signature: the body was read", "/webhooks/lisa-main", good, int64(len(good)), lisa(sign("nope", good)), ReasonBadSignature, int64(len(good))},
		{"too large by Content-Length: never read", "/webhooks/lisa-main", big, int64(len(big)), lisa(sign("s1", big)), ReasonTooLarge, int64(len(big))},
		{"too large and chunked: no length known", "/webhooks/lisa-main", big, -1, lisa(sign("s1", big)), ReasonTooLarge, 0},
		{"unknown source: never read", "/webhooks/nope", good, int64(len(good)), lisa(sign("s1", good)), ReasonUnknownSource, int64(len(good))},
		{"no route: never read", "/elsewhere", good, int64(len(good)), nil, ReasonNoRoute, int64(len(good))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := bytes.NewReader(tc.body)
			if tc.length < 0 {
				f.postT(t, tc.path, chunked{body}, -1, tc.hdr)
			} else {
				f.postT(t, tc.path, body, tc.length, tc.hdr)
			}
			d := obs.last(t)
			if d.Outcome != Refused || d.Reason != tc.reason || d.Bytes != tc.bytes || d.DeliveryID != "" || len(d.Written) != 0 || d.At.IsZero() {
				t.Fatalf("got %+v, want refused (%s) with %d bytes, no id, nothing written", d, tc.reason, tc.bytes)
			}
		})
	}
}

// The delivery id is the sender's choice: it is cut to 200 bytes, at a
// rune boundary, and kept even when the verified delivery is then refused.
func TestDeliveryIDIsBounded(t *testing.T) {
	obs := &deliveryLog{}
	cfg := config.Source{Name: "shop", Provider: "hmac", Namespace: "shop", Secrets: []string{"s1"},
		HMAC: &config.HMAC{Header: "X-Sig", Encoding: "base64", EventIDHeader: "X-Id"}, Payload: &config.Payload{IDPointer: "/id"}}
	f := startEdge(t, []config.Source{cfg}, Deps{}, 5*time.Second, WithObserver(obs))
	post := func(body []byte, id string) int {
		status, _, _ := f.post("/webhooks/shop", bytes.NewReader(body), int64(len(body)), map[string]string{
			"Content-Type": "application/json", "X-Id": id,
			"X-Sig": base64.StdEncoding.EncodeToString(hmacSHA256([]byte("s1"), body))})
		return status
	}
	id := strings.Repeat("a", 199) + "é" + strings.Repeat("b", 100) // é straddles byte 200
	if status := post([]byte(`{"id":"p1"}`), id); status != http.StatusAccepted {
		t.Fatalf("status %d", status)
	}
	if d := obs.last(t); d.DeliveryID != strings.Repeat("a", 199) || !utf8.ValidString(d.DeliveryID) {
		t.Fatalf("delivery id %q (%d bytes), want the first 199 bytes", d.DeliveryID, len(d.DeliveryID))
	}
	// Verified, then refused: an id over the normalizer's limit.
	if status := post([]byte(`{"id":"p2"}`), strings.Repeat("c", maxIDLen+1)); status != http.StatusBadRequest {
		t.Fatalf("status %d", status)
	}
	if d := obs.last(t); d.Reason != ReasonInvalidPayload || d.DeliveryID != strings.Repeat("c", maxDeliveryID) {
		t.Fatalf("got %+v, want invalid_payload with the id cut to %d bytes", d, maxDeliveryID)
	}
}

// A sender that hangs up while Kafka holds its write does not cut the
// wait short: once Kafka acknowledges, the delivery is logged accepted,
// with where its record was written.
func TestDeliverySenderHangsUpWhileKafkaHoldsTheWrite(t *testing.T) {
	obs := &deliveryLog{}
	f := startEdge(t, testSources, Deps{}, 5*time.Second, WithObserver(obs))
	held, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	f.cluster.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		once.Do(func() {
			close(held)
			f.cluster.SleepControl(func() { <-release })
		})
		return nil, nil, false
	})
	body := []byte(`{"productId":"hangs-up","price":1}`)
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, f.url+"/webhooks/lisa-main", bytes.NewReader(body))
	req.Header.Set("Authorization", "ApiKey k1")
	req.Header.Set("X-Hmac-Signature", sign("s1", body))
	req.Header.Set("Content-Type", "application/json")
	errc := make(chan error, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	select {
	case <-held:
	case <-time.After(5 * time.Second):
		t.Fatal("the record never reached the broker")
	}
	cancel() // the sender hangs up
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("the sender's request ended with %v, want it canceled", err)
	}
	time.Sleep(100 * time.Millisecond) // the server sees the connection close
	if n := obs.count(); n != 0 {
		t.Fatalf("%d deliveries logged while Kafka held the write", n)
	}
	close(release)
	deadline := time.Now().Add(5 * time.Second)
	for obs.count() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	d := obs.last(t)
	if d.Outcome != Accepted || d.Records != 1 || len(d.Written) != 1 || d.Written[0].Key != "shop-eu:hangs-up" {
		t.Fatalf("got %+v, want the delivery accepted with its record written", d)
	}
	if got := f.records(); len(got) != 1 {
		t.Fatalf("%d records in the changes topic, want 1", len(got))
	}
}
