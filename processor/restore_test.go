package processor

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/productstream/productstream/schemas"
)

// A key's last record on its state topic decides what the restore keeps,
// in exactly one of its two maps: a value with its version stays encoded
// (stored), a tombstone and a value written without a version header
// become entries (states), whatever came before them for the key.
func TestRestoreKeepsEachKeysLastRecord(t *testing.T) {
	e := newEnv(t)
	state := func(id string, version int64) []byte {
		v, err := e.serde.EncodeState(&schemas.State{Namespace: "shop", ProductID: id, Source: "s", Provider: "lisa",
			Raw: `{"v":` + strconv.FormatInt(version, 10) + `}`, Version: version, UpdatedAt: t0})
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	versioned := func(id string, version int64, value []byte) *kgo.Record {
		return &kgo.Record{Topic: e.names.Products, Key: []byte("shop:" + id), Value: value, Partition: 0,
			Headers: []kgo.RecordHeader{{Key: versionHeader, Value: []byte(strconv.FormatInt(version, 10))}}}
	}
	recs := []*kgo.Record{
		// Versions stay below the end of changes.
		{Topic: e.names.Changes, Key: []byte("x"), Value: []byte("x"), Partition: 0},
		{Topic: e.names.Changes, Key: []byte("x"), Value: []byte("x"), Partition: 0},
		versioned("deleted-after", 0, state("deleted-after", 0)),
		versioned("deleted-after", 1, nil),
		versioned("back-after", 0, nil),
		versioned("back-after", 1, state("back-after", 1)),
		{Topic: e.names.Products, Key: []byte("shop:no-header"), Value: state("no-header", 1), Partition: 0},
		versioned("kept", 1, state("kept", 1)),
	}
	cl := e.newClient(kgo.RecordPartitioner(kgo.ManualPartitioner()))
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	cfg := withDefaults(Config{Brokers: e.cluster.ListenAddrs(), Topics: e.names, Group: "g", QuietPeriod: time.Second,
		MaxDelay: time.Second, Serde: e.serde, Log: e.log})
	if err := validate(&cfg); err != nil {
		t.Fatal(err)
	}
	r, err := newProcessor(cfg).restore(ctx, []int32{0})
	if err != nil {
		t.Fatal(err)
	}
	states, stored := r.states[0], r.stored[0]
	for _, id := range []string{"deleted-after", "back-after", "no-header", "kept"} {
		_, inStates := states["pshop:"+id]
		_, inStored := stored["pshop:"+id]
		if inStates == inStored {
			t.Errorf("%s: in states %v, in stored %v; want exactly one", id, inStates, inStored)
		}
	}
	if d := states["pshop:deleted-after"]; d == nil || !d.deleted || d.version != 1 {
		t.Errorf("deleted-after: %+v, want deleted at version 1", d)
	}
	if s := stored["pshop:back-after"]; s.version != 1 || s.enc == nil {
		t.Errorf("back-after: %+v, want stored at version 1", s)
	}
	if n := states["pshop:no-header"]; n == nil || n.version != 1 || n.state.Raw != `{"v":1}` {
		t.Errorf("no-header: %+v, want decoded at version 1", n)
	}

	// A change to a stored key moves it to states, decoded on use.
	pt := &partition{states: states, stored: stored}
	got := pt.lookup("pshop:kept")
	if got == nil || got.version != 1 || got.enc == nil || states["pshop:kept"] != got {
		t.Fatalf("lookup of a stored key: %+v", got)
	}
	if _, still := stored["pshop:kept"]; still {
		t.Error("a key looked up stays in stored")
	}
	if pt.lookup("pshop:none") != nil {
		t.Error("a key never seen has an entry")
	}
}

// The partitions of a restore are dealt out to its readers, each to one,
// and no reader is left without one.
func TestRestoreGroups(t *testing.T) {
	for _, c := range []struct {
		parts []int32
		n     int
		want  string
	}{
		{[]int32{0, 1, 2, 3, 4}, 2, "[[0 2 4] [1 3]]"},
		{[]int32{7}, 4, "[[7]]"},
		{[]int32{0, 1}, 0, "[[0 1]]"},
		{nil, 2, "[]"},
	} {
		if got := fmt.Sprint(restoreGroups(c.parts, c.n)); got != c.want {
			t.Errorf("restoreGroups(%v, %d) = %s, want %s", c.parts, c.n, got, c.want)
		}
	}
}
