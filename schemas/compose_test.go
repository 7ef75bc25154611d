package schemas

import (
	"bytes"
	"context"
	"testing"
	"time"
)

// The composed update is byte for byte the update EncodeUpdate writes, with
// a state and without one (a delete).
func TestEncodeStateAndUpdateMatchesEncodeUpdate(t *testing.T) {
	s, _ := newSerde(t)
	now := time.UnixMilli(time.Now().UnixMilli()).UTC()
	st := State{Namespace: "ns", ProductID: "p1", Source: "s", Provider: "lisa", Fields: Fields{Title: str("Shoe"), Price: str("19.99")},
		Raw: `{"productId":"p1"}`, Version: 42, ChangeCount: 3, UpdatedAt: now, OccurredAt: now.Add(-time.Minute),
		CollectionIDs: []string{"c1", "c2"}, FieldTimes: map[string]int64{"fields.title": 5}, // one entry: Avro writes a map in Go's random order
		DedupeFingerprints: []int64{-1, 42}}
	for _, withState := range []bool{true, false} {
		u := Update{Namespace: "ns", ProductID: "p1", Deleted: !withState, ChangeCount: 3, Version: 42,
			FirstReceivedAt: now.Add(-time.Second), LastReceivedAt: now, EmittedAt: now}
		var sp *State
		if withState {
			sp, u.State = &st, &st
		}
		gotState, gotUpdate, err := s.EncodeStateAndUpdate(sp, &u)
		if err != nil {
			t.Fatal(err)
		}
		wantUpdate, err := s.EncodeUpdate(&u)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(gotUpdate, wantUpdate) {
			t.Fatalf("state %v: composed update differs:\n got % x\nwant % x", withState, gotUpdate, wantUpdate)
		}
		if withState {
			wantState, _ := s.EncodeState(&st)
			if !bytes.Equal(gotState, wantState) {
				t.Fatal("state bytes differ")
			}
		} else if gotState != nil {
			t.Fatal("a delete has no state record value")
		}
		back, err := s.DecodeUpdate(context.Background(), gotUpdate)
		if err != nil || back.Version != 42 || (back.State != nil) != withState {
			t.Fatalf("decode: %+v %v", back, err)
		}
	}
}
