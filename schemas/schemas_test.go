package schemas

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/hamba/avro/v2"
	"github.com/twmb/franz-go/pkg/sr"
	"github.com/twmb/franz-go/pkg/sr/srfake"
)

var testTopics = map[Kind][]string{KindChange: {"t.changes"}, KindState: {"t.products"}, KindUpdate: {"t.updates"}, KindEvent: {"t.events"}, KindResource: {"t.collections", "t.categories"}}

func newSerde(t testing.TB) (*Serde, *srfake.Registry) {
	t.Helper()
	reg := srfake.New()
	t.Cleanup(reg.Close)
	cl, err := sr.NewClient(sr.URLs(reg.URL()))
	if err != nil {
		t.Fatal(err)
	}
	s := NewSerde(cl)
	if err := s.Register(context.Background(), testTopics); err != nil {
		t.Fatal(err)
	}
	return s, reg
}

func str(s string) *string { return &s }

func TestRoundTripEveryKind(t *testing.T) {
	s, _ := newSerde(t)
	ctx := context.Background()
	now := time.UnixMilli(time.Now().UnixMilli()).UTC()
	ch := Change{EventID: "e1", Source: "src", Provider: "lisa", Namespace: "ns", EventType: "product.updated",
		Resource: "product", ProductID: "p1", ReceivedAt: now, OccurredAt: now.Add(-time.Second),
		Fields: Fields{Title: str("Shoe"), Price: str("19.99")}, Raw: `{"productId":"p1"}`}
	b, err := s.EncodeChange(&ch)
	if err != nil {
		t.Fatal(err)
	}
	if b[0] != 0 || int(b[1])<<24|int(b[2])<<16|int(b[3])<<8|int(b[4]) != s.ID(KindChange) {
		t.Fatalf("not Confluent wire format with id %d: % x", s.ID(KindChange), b[:5])
	}
	got, err := s.DecodeChange(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	if got.Key() != "ns:p1" || *got.Fields.Title != "Shoe" || *got.Fields.Price != "19.99" || got.Fields.Brand != nil ||
		!got.ReceivedAt.Equal(now) || !got.OccurredAt.Equal(now.Add(-time.Second)) || got.Raw != ch.Raw {
		t.Fatalf("change round trip: %+v", got)
	}

	ev := Event{EventID: "e2", Source: "s", Provider: "aicommerce", Namespace: "ns", EventType: "product.viewed", Subject: "p9", ReceivedAt: now, Raw: "{}"}
	b, err = s.EncodeEvent(&ev)
	if err != nil {
		t.Fatal(err)
	}
	if ge, err := s.DecodeEvent(ctx, b); err != nil || ge != ev {
		t.Fatalf("event round trip: %+v %v", ge, err)
	}

	st := State{Namespace: "ns", ProductID: "p1", Fields: ch.Fields, Raw: ch.Raw, Version: 42, ChangeCount: 3, UpdatedAt: now,
		DedupeFingerprints: []int64{-7, 1 << 62, 0}}
	up := Update{Namespace: "ns", ProductID: "p1", ChangeCount: 3, Version: 42, FirstReceivedAt: now, LastReceivedAt: now, EmittedAt: now, State: &st}
	b, err = s.EncodeUpdate(&up)
	if err != nil {
		t.Fatal(err)
	}
	gu, err := s.DecodeUpdate(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	if gu.State == nil || gu.State.Version != 42 || gu.ChangeCount != 3 || *gu.State.Fields.Title != "Shoe" || !gu.State.OccurredAt.IsZero() ||
		!slices.Equal(gu.State.DedupeFingerprints, st.DedupeFingerprints) {
		t.Fatalf("update round trip: %+v state %+v", gu, gu.State)
	}
	js, err := s.DecodeJSON(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	var plain map[string]any
	if err := json.Unmarshal(js, &plain); err != nil {
		t.Fatal(err)
	}
	if plain["state"].(map[string]any)["fields"].(map[string]any)["title"] != "Shoe" {
		t.Fatalf("DecodeJSON should unwrap unions: %s", js)
	}
}

// An older writer schema (fewer fields) still decodes: fields are read by name.
func TestDecodeOlderWriterSchema(t *testing.T) {
	s, reg := newSerde(t)
	old := `{"type":"record","name":"ProductState","namespace":"io.productstream","fields":[
	 {"name":"namespace","type":"string"},{"name":"product_id","type":"string"}]}`
	id, _, err := reg.RegisterSchema("old-value", sr.Schema{Schema: old, Type: sr.TypeAvro})
	if err != nil {
		t.Fatal(err)
	}
	body := []byte{0, 0, 0, 0, byte(id), 4, 'n', 's', 4, 'p', '1'}
	st, err := s.DecodeState(context.Background(), body)
	if err != nil {
		t.Fatal(err)
	}
	if st.Key() != "ns:p1" || st.Version != 0 || st.Fields.Title != nil {
		t.Fatalf("got %+v", st)
	}
}

func TestDecodeUnknownSchemaID(t *testing.T) {
	s, _ := newSerde(t)
	_, err := s.DecodeChange(context.Background(), []byte{0, 0, 0, 0x7f, 0, 1})
	if !errors.Is(err, ErrUnknownSchema) {
		t.Fatalf("want ErrUnknownSchema, got %v", err)
	}
	if _, err := s.DecodeChange(context.Background(), []byte("{}")); err == nil {
		t.Fatal("non-wire-format bytes decoded")
	}
}

func TestEncodeBeforeRegister(t *testing.T) {
	s := NewSerde(nil)
	if _, err := s.EncodeChange(&Change{}); !errors.Is(err, ErrNotRegistered) {
		t.Fatalf("want ErrNotRegistered, got %v", err)
	}
}

// backward reports whether a reader using newer can read data written with older.
func backward(newer, older string) error {
	r, err := avro.Parse(newer)
	if err != nil {
		return err
	}
	w, err := avro.Parse(older)
	if err != nil {
		return err
	}
	return avro.NewSchemaCompatibility().Compatible(r, w)
}

// Every schema change must be published, and every published version must
// be able to read everything written before it (BACKWARD_TRANSITIVE).
func TestSchemasEvolveBackwardCompatibly(t *testing.T) {
	ids := map[int]bool{}
	for _, k := range Kinds {
		var versions []Version
		for _, v := range Published {
			if v.Kind == k {
				versions = append(versions, v)
			}
		}
		if len(versions) == 0 {
			t.Fatalf("%s has no published version", k)
		}
		for i, v := range versions {
			if v.Version != i+1 {
				t.Errorf("%s: published versions must be 1..n in order, found v%d at %d", k, v.Version, i)
			}
			if ids[v.ID] {
				t.Errorf("%s v%d: schema ID %d used twice", k, v.Version, v.ID)
			}
			ids[v.ID] = true
			for _, older := range versions[:i] {
				if err := backward(v.Text(), older.Text()); err != nil {
					t.Errorf("%s v%d cannot read v%d data: %v", k, v.Version, older.Version, err)
				}
			}
		}
		latest := versions[len(versions)-1]
		if Current(k) != latest.Text() {
			t.Errorf("%s.avsc differs from its latest published version v%d: publish the change (see package doc)", k.file(), latest.Version)
		}
	}
}

// The compatibility check itself must catch the classic breaking changes.
func TestBackwardCheckCatchesBreakingChanges(t *testing.T) {
	base := Current(KindChange)
	breaking := map[string]string{
		"new field without default": strings.Replace(base, `"fields": [`, `"fields": [{"name":"x","type":"string"},`, 1),
		"field type changed":        strings.Replace(base, "\"name\": \"raw\",\n      \"type\": \"string\"", "\"name\": \"raw\",\n      \"type\": \"int\"", 1),
	}
	for name, s := range breaking {
		if s == base {
			t.Fatalf("%s: replacement did not apply", name)
		}
		if err := backward(s, base); err == nil {
			t.Errorf("%s: not reported as incompatible", name)
		}
	}
	additive := strings.Replace(base, `"fields": [`, `"fields": [{"name":"x","type":["null","string"],"default":null},`, 1)
	if err := backward(additive, base); err != nil {
		t.Errorf("adding an optional field must stay compatible: %v", err)
	}
}

// A state's dedupe fingerprints travel as one hex string: every value
// round-trips, and text of another form reads as none.
func TestFingerprintsText(t *testing.T) {
	fps := []int64{0, 1, -1, 1 << 62, -7}
	text := FingerprintsText(fps)
	if len(text) != 16*len(fps) || strings.Trim(text, "0123456789abcdef") != "" {
		t.Fatalf("text %q: want 16 lowercase hex digits per fingerprint", text)
	}
	if got := ParseFingerprints(text); !slices.Equal(got, fps) {
		t.Fatalf("read back %v, want %v", got, fps)
	}
	for _, bad := range []string{"", "0123", text + "0", "000000000000000g"} {
		if got := ParseFingerprints(bad); got != nil {
			t.Errorf("ParseFingerprints(%q) = %v, want nil", bad, got)
		}
	}
}

// A record is encoded into a buffer sized for it at once: the size hint is
// never below the encoded size, and not far above it, for records small
// and large, with every field, set and map filled. AppendChange and
// AppendEvent write the same bytes after what their buffer holds, and
// reuse a buffer with room.
func TestEncodeSizesTheBufferOnce(t *testing.T) {
	s, _ := newSerde(t)
	now := time.Now()
	long := strings.Repeat("ü", 3000)
	full := Fields{Title: str(long), Description: str(long), Brand: str("b"), Price: str("1.00"), SalePrice: str("0.90"),
		Currency: str("EUR"), URL: str("https://x/" + long), ImageURL: str("https://x/i"), Availability: str("in_stock"),
		SKU: str("s"), GTIN: str("4006381333931")}
	for _, tc := range []struct {
		name string
		ch   Change
	}{
		{"small", Change{EventID: "e", Source: "s", Provider: "lisa", Namespace: "n", EventType: "product.updated", ProductID: "p",
			ReceivedAt: now, Raw: `{}`}},
		{"large", Change{EventID: long, Source: "s", Provider: "lisa", Namespace: "n", EventType: "product.updated", ProductID: "p",
			ReceivedAt: now, OccurredAt: now, Fields: full, CollectionIDs: []string{long, "c2"}, Raw: long + long}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := s.EncodeChange(&tc.ch)
			if err != nil {
				t.Fatal(err)
			}
			if hint := tc.ch.sizeHint(); cap(b) != hint || len(b) > hint {
				t.Errorf("change: %d bytes in a buffer of %d, hint %d: grown", len(b), cap(b), hint)
			}
			st := State{Namespace: "n", ProductID: "p", Source: "s", Provider: "lisa", Fields: tc.ch.Fields, Raw: tc.ch.Raw,
				Version: 1 << 50, ChangeCount: 1 << 40, LastEventID: tc.ch.EventID, UpdatedAt: now, OccurredAt: now,
				CollectionIDs: tc.ch.CollectionIDs, FieldTimes: map[string]int64{"fields.title": now.UnixMilli(), "raw." + long: -1},
				DedupeFingerprints: []int64{-1, 1 << 62, 7}}
			b, err = s.EncodeState(&st)
			if err != nil {
				t.Fatal(err)
			}
			if hint := st.sizeHint(); cap(b) != hint || len(b) > hint {
				t.Errorf("state: %d bytes in a buffer of %d, hint %d: grown", len(b), cap(b), hint)
			}
			if len(b) < st.sizeHint()/2 && len(b) > 1000 {
				t.Errorf("state: hint %d for %d bytes: too much memory held", st.sizeHint(), len(b))
			}
			up := Update{Namespace: "n", ProductID: "p", ChangeCount: 3, Version: 9, FirstReceivedAt: now, LastReceivedAt: now, EmittedAt: now, State: &st}
			if b, err = s.EncodeUpdate(&up); err != nil || len(b) > cap(b) || cap(b) > len(b)*2+recordOverhead*2 {
				t.Errorf("update: %d bytes in a buffer of %d (%v)", len(b), cap(b), err)
			}
			// Appended to a buffer in use, a change is the same bytes
			// after what the buffer held, and a reused buffer is not
			// grown again.
			want, err := s.EncodeChange(&tc.ch)
			if err != nil {
				t.Fatal(err)
			}
			buf, err := s.AppendChange([]byte("prefix"), &tc.ch)
			if err != nil || string(buf) != "prefix"+string(want) {
				t.Fatalf("AppendChange after a prefix: %q (%v), want the prefix and EncodeChange's %q", buf, err, want)
			}
			again, err := s.AppendChange(buf[:0], &tc.ch)
			if err != nil || !bytes.Equal(again, want) || unsafe.SliceData(again) != unsafe.SliceData(buf) {
				t.Fatalf("AppendChange into a reused buffer: %q (%v), want EncodeChange's bytes in the same buffer", again, err)
			}
			ev := Event{EventID: tc.ch.EventID, Source: "s", Provider: "lisa", Namespace: "n", EventType: "order.created", Subject: "o1", Raw: tc.ch.Raw, ReceivedAt: now}
			wantEv, err := s.EncodeEvent(&ev)
			if err != nil {
				t.Fatal(err)
			}
			if got, err := s.AppendEvent(again[:0], &ev); err != nil || !bytes.Equal(got, wantEv) {
				t.Fatalf("AppendEvent: %q (%v), want EncodeEvent's %q", got, err, wantEv)
			}
		})
	}
}
