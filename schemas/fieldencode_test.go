package schemas

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/linkedin/goavro/v2"
)

// Every encoder writes, byte for byte, what goavro writes for the whole
// record from its native form, over random values: empty, long and
// non-ASCII strings, absent typed fields, zero and set times, empty and
// full lists. A field-times map has at most one entry here, since goavro
// writes a map in Go's random order; TestEncodedRecordsDecodeBack covers
// larger ones.
func TestEncodersMatchGoavro(t *testing.T) {
	s, _ := newSerde(t)
	rng := rand.New(rand.NewPCG(3, 4))
	full := map[Kind]*goavro.Codec{}
	for _, k := range Kinds {
		c, err := goavro.NewCodecForStandardJSONFull(Current(k))
		if err != nil {
			t.Fatal(err)
		}
		full[k] = c
	}
	check := func(k Kind, native map[string]any, got []byte, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		want, _ := s.hdr.AppendEncode(nil, s.ID(k), nil)
		if want, err = full[k].BinaryFromNative(want, native); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%s differs from goavro's:\n got % x\nwant % x", k, got, want)
		}
	}
	for range 300 {
		r := randomValues{rng, 1}
		ch := r.change()
		v, err := s.EncodeChange(&ch)
		check(KindChange, ch.native(), v, err)

		st := r.state()
		v, err = s.EncodeState(&st)
		check(KindState, st.native(), v, err)

		res := r.state()
		res.Resource, res.PosIDs, res.ProductIDs = r.pick("collection", "pos", "category"), r.strings(), r.strings()
		v, err = s.EncodeState(&res)
		check(KindResource, res.resourceNative(), v, err)

		u := Update{Namespace: r.str(), ProductID: r.str(), Deleted: r.rng.IntN(2) == 0, ChangeCount: r.rng.Int32(),
			Version: r.rng.Int64(), FirstReceivedAt: r.time(), LastReceivedAt: r.time(), EmittedAt: r.time()}
		if !u.Deleted {
			u.State = &st
		}
		v, err = s.EncodeUpdate(&u)
		check(KindUpdate, u.native(), v, err)
		sv, uv, err := s.EncodeStateAndUpdate(u.State, &u)
		check(KindUpdate, u.native(), uv, err)
		if u.State != nil {
			check(KindState, st.native(), sv, err)
		} else if sv != nil {
			t.Fatal("a delete has no state record value")
		}

		e := Event{EventID: r.str(), Source: r.str(), Provider: r.str(), Namespace: r.str(), EventType: r.str(),
			Subject: r.str(), ReceivedAt: r.time(), OccurredAt: r.optTime(), Raw: r.str()}
		v, err = s.EncodeEvent(&e)
		check(KindEvent, e.native(), v, err)
	}
}

// Encoded records decode back to what was encoded, field times of many
// entries included.
func TestEncodedRecordsDecodeBack(t *testing.T) {
	s, _ := newSerde(t)
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(5, 6))
	for range 100 {
		r := randomValues{rng, 20}
		st := r.state()
		v, err := s.EncodeState(&st)
		if err != nil {
			t.Fatal(err)
		}
		back, err := s.DecodeState(ctx, v)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(back, st) {
			t.Fatalf("state decoded back differs:\n got %+v\nwant %+v", back, st)
		}
		ch := r.change()
		if v, err = s.EncodeChange(&ch); err != nil {
			t.Fatal(err)
		}
		backCh, err := s.DecodeChange(ctx, v)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(backCh, ch) {
			t.Fatalf("change decoded back differs:\n got %+v\nwant %+v", backCh, ch)
		}
	}
}

// randomValues makes random records; a field-times map gets at most
// maxTimes entries.
type randomValues struct {
	rng      *rand.Rand
	maxTimes int
}

func (r randomValues) pick(s ...string) string { return s[r.rng.IntN(len(s))] }

func (r randomValues) str() string {
	switch r.rng.IntN(4) {
	case 0:
		return ""
	case 1:
		return fmt.Sprintf("p%d", r.rng.IntN(1000))
	case 2:
		return "Größe 42 — 靴 \u2028 \"quoted\""
	}
	return string(bytes.Repeat([]byte{byte('a' + r.rng.IntN(26))}, 100+r.rng.IntN(5000)))
}

func (r randomValues) optStr() *string {
	if r.rng.IntN(3) == 0 {
		return nil
	}
	return new(r.str())
}

// time is a time to the millisecond, as Avro keeps it, in UTC.
func (r randomValues) time() time.Time {
	return time.UnixMilli(1_600_000_000_000 + r.rng.Int64N(1e12)).UTC()
}

func (r randomValues) optTime() time.Time {
	if r.rng.IntN(3) == 0 {
		return time.Time{}
	}
	return r.time()
}

// strings is nil or one to three strings (decoding gives nil for none).
func (r randomValues) strings() []string {
	var out []string
	for range r.rng.IntN(4) {
		out = append(out, r.str())
	}
	return out
}

func (r randomValues) fields() Fields {
	return Fields{Title: r.optStr(), Description: r.optStr(), Brand: r.optStr(), Price: r.optStr(), SalePrice: r.optStr(),
		Currency: r.optStr(), URL: r.optStr(), ImageURL: r.optStr(), Availability: r.optStr(), SKU: r.optStr(), GTIN: r.optStr()}
}

func (r randomValues) change() Change {
	return Change{EventID: r.str(), Source: r.str(), Provider: r.str(), Namespace: r.str(), EventType: r.str(),
		Resource: r.str(), ProductID: r.str(), Deleted: r.rng.IntN(2) == 0, ReceivedAt: r.time(), OccurredAt: r.optTime(),
		Fields: r.fields(), Notice: r.rng.IntN(2) == 0, CollectionIDs: r.strings(), Raw: r.str()}
}

func (r randomValues) state() State {
	st := State{Namespace: r.str(), ProductID: r.str(), Source: r.str(), Provider: r.str(), Fields: r.fields(), Raw: r.str(),
		Version: r.rng.Int64(), ChangeCount: r.rng.Int64N(1000), LastEventID: r.str(), UpdatedAt: r.time(),
		OccurredAt: r.optTime(), CollectionIDs: r.strings()}
	if n := r.rng.IntN(r.maxTimes + 1); n > 0 {
		st.FieldTimes = map[string]int64{}
		for i := range n {
			st.FieldTimes[fmt.Sprintf("raw.k%d", i)] = r.rng.Int64()
		}
	}
	for range r.rng.IntN(4) {
		st.DedupeFingerprints = append(st.DedupeFingerprints, r.rng.Int64())
	}
	return st
}

// A typed accessor must match its field's type: a string one for a
// string, a *string one for a nullable string, an int64 one for a long;
// anything else is refused when the encoder is planned.
func TestRecordEncoderRefusesAMismatchedAccessor(t *testing.T) {
	schema := func(typ any) map[string]any {
		return map[string]any{"type": "record", "name": "R", "fields": []any{map[string]any{"name": "f", "type": typ}}}
	}
	type r struct{}
	text := func(*r) string { return "" }
	optText := func(*r) *string { return nil }
	long := func(*r) int64 { return 0 }
	for _, tc := range []struct {
		typ      any
		accessor any
		ok       bool
	}{
		{"string", text, true},
		{[]any{"null", "string"}, optText, true},
		{"long", long, true},
		{"long", text, false},
		{"string", optText, false},
		{[]any{"null", "string"}, text, false},
		{"string", long, false},
		{[]any{"null", "long"}, long, false},
		{"string", func(*r) int { return 0 }, false},
	} {
		_, err := newRecordEncoder[r](schema(tc.typ), map[string]any{"f": tc.accessor}, nil)
		if (err == nil) != tc.ok {
			t.Errorf("type %v, accessor %T: err %v, want ok %t", tc.typ, tc.accessor, err, tc.ok)
		}
	}
}
