package schemas

import (
	"bytes"
	"context"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/hamba/avro/v2"
	"github.com/twmb/franz-go/pkg/sr"
)

// This file measures the required Avro library (goavro, through Serde and
// its native map[string]any form) against hamba/avro/v2 (typed structs),
// side by side on the same schema text, the same values and the same
// Confluent wire format, each including the conversion to and from the
// product's Go types (Change, State). It changes nothing in the product: it
// is the evidence the performance issue asks for before any library swap.

// hambaFields mirrors the ProductFields record. Its fields have the same
// names and types as Fields, so the two convert to each other directly.
type hambaFields struct {
	Title        *string `avro:"title"`
	Description  *string `avro:"description"`
	Brand        *string `avro:"brand"`
	Price        *string `avro:"price"`
	SalePrice    *string `avro:"sale_price"`
	Currency     *string `avro:"currency"`
	URL          *string `avro:"url"`
	ImageURL     *string `avro:"image_url"`
	Availability *string `avro:"availability"`
	SKU          *string `avro:"sku"`
	GTIN         *string `avro:"gtin"`
}

// hambaChange mirrors the ProductChange record (current version).
type hambaChange struct {
	EventID       string      `avro:"event_id"`
	Source        string      `avro:"source"`
	Provider      string      `avro:"provider"`
	Namespace     string      `avro:"namespace"`
	EventType     string      `avro:"event_type"`
	Resource      string      `avro:"resource"`
	ProductID     string      `avro:"product_id"`
	Deleted       bool        `avro:"deleted"`
	ReceivedAt    time.Time   `avro:"received_at"`
	OccurredAt    *time.Time  `avro:"occurred_at"`
	Fields        hambaFields `avro:"fields"`
	Notice        bool        `avro:"notice"`
	CollectionIDs []string    `avro:"collection_ids"`
	Raw           string      `avro:"raw"`
}

// hambaState mirrors the ProductState record (current version).
type hambaState struct {
	Namespace     string           `avro:"namespace"`
	ProductID     string           `avro:"product_id"`
	Source        string           `avro:"source"`
	Provider      string           `avro:"provider"`
	Fields        hambaFields      `avro:"fields"`
	Raw           string           `avro:"raw"`
	Version       int64            `avro:"version"`
	ChangeCount   int64            `avro:"change_count"`
	LastEventID   string           `avro:"last_event_id"`
	UpdatedAt     time.Time        `avro:"updated_at"`
	OccurredAt    *time.Time       `avro:"occurred_at"`
	CollectionIDs []string         `avro:"collection_ids"`
	FieldTimes    map[string]int64 `avro:"field_times"`
	Fingerprints  string           `avro:"dedupe_fingerprints"`
}

func hambaOptTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func hambaTime(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return *t
}

// nilIfEmpty matches Serde's decoding, which gives nil for an empty array.
func nilIfEmpty(ss []string) []string {
	if len(ss) == 0 {
		return nil
	}
	return ss
}

func changeToHamba(c *Change) hambaChange {
	return hambaChange{
		EventID: c.EventID, Source: c.Source, Provider: c.Provider, Namespace: c.Namespace,
		EventType: c.EventType, Resource: c.Resource, ProductID: c.ProductID, Deleted: c.Deleted,
		ReceivedAt: c.ReceivedAt, OccurredAt: hambaOptTime(c.OccurredAt), Fields: hambaFields(c.Fields),
		Notice: c.Notice, CollectionIDs: c.CollectionIDs, Raw: c.Raw,
	}
}

func changeFromHamba(h *hambaChange) Change {
	return Change{
		EventID: h.EventID, Source: h.Source, Provider: h.Provider, Namespace: h.Namespace,
		EventType: h.EventType, Resource: h.Resource, ProductID: h.ProductID, Deleted: h.Deleted,
		ReceivedAt: h.ReceivedAt, OccurredAt: hambaTime(h.OccurredAt), Fields: Fields(h.Fields),
		Notice: h.Notice, CollectionIDs: nilIfEmpty(h.CollectionIDs), Raw: h.Raw,
	}
}

func stateToHamba(s *State) hambaState {
	return hambaState{
		Namespace: s.Namespace, ProductID: s.ProductID, Source: s.Source, Provider: s.Provider,
		Fields: hambaFields(s.Fields), Raw: s.Raw, Version: s.Version, ChangeCount: s.ChangeCount,
		LastEventID: s.LastEventID, UpdatedAt: s.UpdatedAt, OccurredAt: hambaOptTime(s.OccurredAt),
		CollectionIDs: s.CollectionIDs, FieldTimes: s.FieldTimes, Fingerprints: FingerprintsText(s.DedupeFingerprints),
	}
}

func stateFromHamba(h *hambaState) State {
	st := State{
		Namespace: h.Namespace, ProductID: h.ProductID, Source: h.Source, Provider: h.Provider,
		Fields: Fields(h.Fields), Raw: h.Raw, Version: h.Version, ChangeCount: h.ChangeCount,
		LastEventID: h.LastEventID, UpdatedAt: h.UpdatedAt, OccurredAt: hambaTime(h.OccurredAt),
		CollectionIDs: nilIfEmpty(h.CollectionIDs), FieldTimes: h.FieldTimes,
	}
	st.DedupeFingerprints = ParseFingerprints(h.Fingerprints)
	if len(st.FieldTimes) == 0 {
		st.FieldTimes = nil
	}
	return st
}

// hambaSerde is what a hamba-based Serde would do: the same Confluent
// header, schemas looked up by ID, a pooled writer and a copied result
// (the caller owns it, as with Serde).
type hambaSerde struct {
	hdr     sr.ConfluentHeader
	ids     [numKinds]int
	schemas sync.Map // schema ID -> avro.Schema
	writers sync.Pool
}

func newHambaSerde(tb testing.TB, s *Serde, kinds ...Kind) *hambaSerde {
	tb.Helper()
	h := &hambaSerde{writers: sync.Pool{New: func() any { return avro.NewWriter(nil, 1024) }}}
	for _, k := range kinds {
		// A cache per schema: both schemas define io.productstream.ProductFields.
		sch, err := avro.ParseWithCache(Current(k), "", &avro.SchemaCache{})
		if err != nil {
			tb.Fatalf("hamba parse %s: %v", k, err)
		}
		h.ids[k] = s.ID(k)
		h.schemas.Store(s.ID(k), sch)
	}
	return h
}

func (h *hambaSerde) encode(k Kind, v any) ([]byte, error) {
	id := h.ids[k]
	sch, ok := h.schemas.Load(id)
	if !ok {
		return nil, fmt.Errorf("%s: %w", k, ErrNotRegistered)
	}
	w := h.writers.Get().(*avro.Writer)
	defer h.writers.Put(w)
	w.Reset(nil)
	w.Error = nil
	var hdr [5]byte
	hb, _ := h.hdr.AppendEncode(hdr[:0], id, nil)
	_, _ = w.Write(hb)
	w.WriteVal(sch.(avro.Schema), v)
	if w.Error != nil {
		return nil, fmt.Errorf("encode %s: %w", k, w.Error)
	}
	return bytes.Clone(w.Buffer()), nil
}

func (h *hambaSerde) decode(b []byte, v any) error {
	id, body, err := h.hdr.DecodeID(b)
	if err != nil {
		return fmt.Errorf("wire header: %w", err)
	}
	sch, ok := h.schemas.Load(id)
	if !ok {
		return fmt.Errorf("%w %d", ErrUnknownSchema, id)
	}
	return avro.Unmarshal(sch.(avro.Schema), body, v)
}

func (h *hambaSerde) EncodeChange(c *Change) ([]byte, error) {
	hc := changeToHamba(c)
	return h.encode(KindChange, &hc)
}

func (h *hambaSerde) DecodeChange(b []byte) (Change, error) {
	var hc hambaChange
	if err := h.decode(b, &hc); err != nil {
		return Change{}, err
	}
	return changeFromHamba(&hc), nil
}

func (h *hambaSerde) EncodeState(st *State) ([]byte, error) {
	if !st.IsProduct() {
		return nil, fmt.Errorf("hamba bench: ResourceState not measured")
	}
	hs := stateToHamba(st)
	return h.encode(KindState, &hs)
}

func (h *hambaSerde) DecodeState(b []byte) (State, error) {
	var hs hambaState
	if err := h.decode(b, &hs); err != nil {
		return State{}, err
	}
	return stateFromHamba(&hs), nil
}

// libBenchRaw is a realistic provider item of about 1 KB.
const libBenchRaw = `{"productId":"123456","sku":"TRL-SHOE-42-BLK","gtin":"4006381333931",` +
	`"title":"Trail running shoe, waterproof","brand":"Northpeak",` +
	`"description":"Lightweight trail running shoe with a waterproof breathable membrane, ` +
	`a grippy rubber outsole with 5 mm lugs and a cushioned midsole for long distances on mixed terrain. ` +
	`Reflective details for low light. Removable insole.",` +
	`"price":{"amount":"129.95","currency":"EUR"},"salePrice":{"amount":"99.95","currency":"EUR"},` +
	`"url":"https://shop.example.com/p/trail-running-shoe-waterproof-123456",` +
	`"images":["https://cdn.example.com/img/123456/main.jpg","https://cdn.example.com/img/123456/side.jpg",` +
	`"https://cdn.example.com/img/123456/sole.jpg"],"availability":"in_stock","stock":37,` +
	`"variants":[{"id":"123456-40","size":"40","stock":5},{"id":"123456-41","size":"41","stock":9},` +
	`{"id":"123456-42","size":"42","stock":12},{"id":"123456-43","size":"43","stock":11}],` +
	`"categories":["shoes","running","trail"],"tags":["waterproof","new","outdoor"],` +
	`"attributes":{"color":"black","material":"mesh/synthetic","weight_g":310,"drop_mm":8},` +
	`"updatedAt":"2025-03-14T09:26:53.589Z"}`

func libBenchFields() Fields {
	return Fields{
		Title:        str("Trail running shoe, waterproof"),
		Description:  str("Lightweight trail running shoe with a waterproof breathable membrane and a grippy outsole."),
		Brand:        str("Northpeak"),
		Price:        str("129.95"),
		SalePrice:    str("99.95"),
		Currency:     str("EUR"),
		URL:          str("https://shop.example.com/p/trail-running-shoe-waterproof-123456"),
		ImageURL:     str("https://cdn.example.com/img/123456/main.jpg"),
		Availability: str("in_stock"),
		SKU:          str("TRL-SHOE-42-BLK"),
		GTIN:         str("4006381333931"),
	}
}

// sameChange compares two changes, times by instant.
func sameChange(a, b Change) bool {
	if !a.ReceivedAt.Equal(b.ReceivedAt) || !a.OccurredAt.Equal(b.OccurredAt) {
		return false
	}
	a.ReceivedAt, a.OccurredAt, b.ReceivedAt, b.OccurredAt = time.Time{}, time.Time{}, time.Time{}, time.Time{}
	return reflect.DeepEqual(a, b)
}

// sameState compares two states, times by instant.
func sameState(a, b State) bool {
	if !a.UpdatedAt.Equal(b.UpdatedAt) || !a.OccurredAt.Equal(b.OccurredAt) {
		return false
	}
	a.UpdatedAt, a.OccurredAt, b.UpdatedAt, b.OccurredAt = time.Time{}, time.Time{}, time.Time{}, time.Time{}
	return reflect.DeepEqual(a, b)
}

// avroLib is one library's codec of one record type, its encode bound to
// the value benchmarked.
type avroLib[T any] struct {
	name   string
	encode func() ([]byte, error)
	decode func([]byte) (T, error)
}

// crossCheck encodes want with each library and fails b unless each
// decodes its own bytes and the other's to want (same compares); it
// returns goavro's and hamba's bytes.
func crossCheck[T any](b *testing.B, want T, same func(x, y T) bool, goavro, hamba avroLib[T]) (gw, hw []byte) {
	b.Helper()
	gw, err := goavro.encode()
	if err != nil {
		b.Fatalf("goavro encode: %v", err)
	}
	hw, err = hamba.encode()
	if err != nil {
		b.Fatalf("hamba encode: %v", err)
	}
	for _, c := range []struct {
		what string
		lib  avroLib[T]
		wire []byte
	}{
		{"goavro round trip", goavro, gw},
		{"hamba round trip", hamba, hw},
		{"goavro decode of hamba bytes", goavro, hw},
		{"hamba decode of goavro bytes", hamba, gw},
	} {
		if got, err := c.lib.decode(c.wire); err != nil || !same(got, want) {
			b.Fatalf("%s: %v\n got %+v\nwant %+v", c.what, err, got, want)
		}
	}
	return gw, hw
}

// libBench runs <lib>/encode and <lib>/decode for one library.
func libBench[T any](b *testing.B, lib avroLib[T], wire []byte) {
	b.Run(lib.name+"/encode", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(wire)))
		for b.Loop() {
			if _, err := lib.encode(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run(lib.name+"/decode", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(wire)))
		for b.Loop() {
			if _, err := lib.decode(wire); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkAvroLibraries compares goavro (the product's Serde) with
// hamba/avro/v2 on ProductChange and ProductState, both through the
// Confluent wire format and both converting to and from Change/State.
// Before timing it checks that each library round-trips the value and
// that each decodes the other's bytes to the same value.
func BenchmarkAvroLibraries(b *testing.B) {
	s, _ := newSerde(b)
	h := newHambaSerde(b, s, KindChange, KindState)
	ctx := context.Background()
	now := time.UnixMilli(time.Now().UnixMilli()).UTC()

	ch := Change{
		EventID: "sha256:0123456789abcdef0123456789abcdef", Source: "lisa-main", Provider: "lisa", Namespace: "shop-eu",
		EventType: "product.updated", Resource: "product", ProductID: "123456",
		ReceivedAt: now, OccurredAt: now.Add(-1500 * time.Millisecond), Fields: libBenchFields(),
		CollectionIDs: []string{"coll-summer-sale", "coll-running"}, Raw: libBenchRaw,
	}
	st := State{
		Namespace: "shop-eu", ProductID: "123456", Source: "lisa-main", Provider: "lisa",
		Fields: libBenchFields(), Raw: libBenchRaw, Version: 421337, ChangeCount: 17,
		LastEventID: "sha256:0123456789abcdef0123456789abcdef", UpdatedAt: now, OccurredAt: now.Add(-time.Second),
		CollectionIDs: []string{"coll-running", "coll-summer-sale"},
		FieldTimes: map[string]int64{
			"fields.title": now.UnixMilli() - 86_400_000, "fields.price": now.UnixMilli() - 1000, "collection_ids": now.UnixMilli() - 3_600_000,
		},
	}

	b.Run("ProductChange", func(b *testing.B) {
		goavro := avroLib[Change]{name: "goavro",
			encode: func() ([]byte, error) { return s.EncodeChange(&ch) },
			decode: func(w []byte) (Change, error) { return s.DecodeChange(ctx, w) }}
		hamba := avroLib[Change]{name: "hamba",
			encode: func() ([]byte, error) { return h.EncodeChange(&ch) },
			decode: h.DecodeChange}
		gw, hw := crossCheck(b, ch, sameChange, goavro, hamba)
		// The bytes differ only in the array block header: hamba by default
		// writes a negative item count and the block's byte size, which the
		// Avro spec allows (both libraries read both, checked above). With
		// that header disabled the encodings are byte for byte the same.
		hc := changeToHamba(&ch)
		sch, _ := h.schemas.Load(s.ID(KindChange))
		plain, err := avro.Config{DisableBlockSizeHeader: true}.Freeze().Marshal(sch.(avro.Schema), &hc)
		if err != nil || !bytes.Equal(gw[5:], plain) || !bytes.Equal(gw[:5], hw[:5]) {
			b.Fatalf("encodings differ beyond the block header (%v):\ngoavro % x\n hamba % x", err, gw, hw)
		}
		libBench(b, goavro, gw)
		libBench(b, hamba, hw)
	})

	b.Run("ProductState", func(b *testing.B) {
		goavro := avroLib[State]{name: "goavro",
			encode: func() ([]byte, error) { return s.EncodeState(&st) },
			decode: func(w []byte) (State, error) { return s.DecodeState(ctx, w) }}
		hamba := avroLib[State]{name: "hamba",
			encode: func() ([]byte, error) { return h.EncodeState(&st) },
			decode: h.DecodeState}
		gw, hw := crossCheck(b, st, sameState, goavro, hamba)
		libBench(b, goavro, gw)
		libBench(b, hamba, hw)
	})
}
