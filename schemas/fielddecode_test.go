package schemas

import (
	"bytes"
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/linkedin/goavro/v2"
	"github.com/twmb/franz-go/pkg/sr"
)

// DecodeChange decodes field by field exactly what the map gives, for
// every published ProductChange schema and for writer schemas of other
// shapes (fields in a union, null second in a union, a named type used
// twice, which the map decodes), and refuses what the map refuses.
func TestDecodeChangeFieldByFieldMatchesTheMap(t *testing.T) {
	s, reg := newSerde(t)
	ctx := context.Background()
	now := time.UnixMilli(time.Now().UnixMilli()).UTC()
	changes := []Change{
		{EventID: "e1", Source: "src", Provider: "lisa", Namespace: "ns", EventType: "product.updated", Resource: "product", ProductID: "p1",
			ReceivedAt: now, OccurredAt: now.Add(-time.Second), Fields: Fields{Title: str("Shoe"), Price: str("19.99"), GTIN: str("")},
			CollectionIDs: []string{"c1", "c2"}, Raw: `{"productId":"p1"}`},
		{EventID: "e2", Namespace: "ns", ProductID: "p2", Deleted: true, Notice: true, ReceivedAt: now},
		{},
	}
	texts := map[string]string{
		"fields in a union": `{"type":"record","name":"ProductChange","namespace":"io.productstream","fields":[
			{"name":"product_id","type":"string"},
			{"name":"fields","type":["null",{"type":"record","name":"F","fields":[{"name":"title","type":["null","string"]}]}]},
			{"name":"occurred_at","type":[{"type":"long","logicalType":"timestamp-millis"},"null"]},
			{"name":"raw","type":"string"}]}`,
		"a named type used twice": `{"type":"record","name":"ProductChange","namespace":"io.productstream","fields":[
			{"name":"product_id","type":{"type":"fixed","name":"Id","size":2}},
			{"name":"namespace","type":"Id"},{"name":"raw","type":"string"}]}`,
	}
	for _, v := range Published {
		if v.Kind == KindChange {
			texts["published v"+string(rune('0'+v.Version))] = v.Text()
		}
	}
	for name, text := range texts {
		t.Run(name, func(t *testing.T) {
			codec, err := goavro.NewCodecForStandardJSONFull(text)
			if err != nil {
				t.Fatal(err)
			}
			id, _, err := reg.RegisterSchema("diff-"+name+"-value", sr.Schema{Schema: text, Type: sr.TypeAvro})
			if err != nil {
				t.Fatal(err)
			}
			if plan := s.changePlan(id, codec); (plan != nil) != (name != "a named type used twice" && name != "fields in a union") {
				t.Fatalf("decoded field by field: %v", plan != nil)
			}
			for _, ch := range changes {
				native := ch.native()
				if name == "fields in a union" {
					native["fields"] = goavro.Union("io.productstream.F", map[string]any{"title": optString(ch.Fields.Title)})
					native["occurred_at"] = optTimeSecond(ch.OccurredAt)
				}
				if name == "a named type used twice" {
					native["product_id"], native["namespace"] = []byte("ab"), []byte("cd")
				}
				wire, _ := s.hdr.AppendEncode(nil, id, nil)
				if wire, err = codec.BinaryFromNative(wire, native); err != nil {
					t.Fatal(err)
				}
				got, err := s.DecodeChange(ctx, wire)
				if err != nil {
					t.Fatal(err)
				}
				n, _, err := s.decode(ctx, wire)
				if err != nil {
					t.Fatal(err)
				}
				want, err := changeFromNative(n)
				if err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(got, want) {
					t.Errorf("field by field\n%+v\nthrough the map\n%+v", got, want)
				}
				// The change keeps nothing of the buffer it was decoded
				// from, which a consumer reuses.
				reused := bytes.Clone(wire)
				kept, err := s.DecodeChange(ctx, reused)
				if err != nil {
					t.Fatal(err)
				}
				for i := range reused {
					reused[i] = 'x'
				}
				if !reflect.DeepEqual(kept, want) {
					t.Errorf("after its buffer was overwritten, the change decoded from it is\n%+v\nnot\n%+v", kept, want)
				}
				for cut := 5; cut < len(wire); cut++ {
					if _, err := s.DecodeChange(ctx, wire[:cut]); err == nil {
						t.Fatalf("a value cut to %d of %d bytes decoded", cut, len(wire))
					}
				}
				if _, err := s.DecodeChange(ctx, append(wire, 0)); err == nil {
					t.Fatal("a value with a trailing byte decoded")
				}
			}
		})
	}
}

// optTimeSecond is a time in a union whose null branch comes second.
func optTimeSecond(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return goavro.Union("long.timestamp-millis", t)
}

// textFromBinary reads what goavro's string codec reads, and refuses what
// it refuses.
func FuzzTextFromBinaryMatchesGoavro(f *testing.F) {
	codec, err := goavro.NewCodec(`"string"`)
	if err != nil {
		f.Fatal(err)
	}
	bytesCodec, err := goavro.NewCodec(`"bytes"`)
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{"", "a", "héllo", string(make([]byte, 300))} {
		enc, _ := codec.BinaryFromNative(nil, s)
		f.Add(enc)
		f.Add(append(enc, 7, 8))
		f.Add(enc[:len(enc)/2])
	}
	f.Add([]byte{})
	f.Add([]byte{0x01})                                                             // length -1
	f.Add([]byte{0x80})                                                             // a varint cut short
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}) // a varint too long
	f.Add([]byte{0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})       // the largest length
	f.Add([]byte{0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x30, 0x30}) // a length past 64 bits, which goavro reads as 0
	f.Fuzz(func(t *testing.T, buf []byte) {
		want, wantRest, wantErr := codec.NativeFromBinary(buf)
		got, rest, err := textFromBinary(buf, bytesCodec)
		if (err == nil) != (wantErr == nil) {
			t.Fatalf("%x: error %v, goavro's %v", buf, err, wantErr)
		}
		if err != nil {
			return
		}
		if string(got) != want.(string) || !bytes.Equal(rest, wantRest) {
			t.Fatalf("%x: read %q and left %x; goavro read %q and left %x", buf, got, rest, want, wantRest)
		}
	})
}
