// Package timeline reads one product's whole path through Kafka: the
// changes ingest wrote for its key, its current state on the products
// topic, the updates the processor emitted, and what the processor holds
// for it now in its pending changelog. It is the data source of the
// console's product timeline.
//
// A read touches only the key's partition of each topic, the one Kafka's
// default partitioner (murmur2) gives the key, and is bounded by a time
// window, a number of offsets per topic and a time limit; a Timeline says
// which bound cut it short. It reads committed data only
// (read_committed), as the processor's transactions require.
//
// The files: timeline.go (what a read returns), reader.go (Reader, its
// options and Read), scan.go (how a partition is located, its offsets
// listed and a range of it fetched), entries.go (what a record becomes in
// a Timeline), key.go (checking a key and finding its partition).
package timeline

import (
	"encoding/json"
	"time"
)

// Timeline is what Read found for one key. Entries carry the names of
// the fields records hold but not their values: values are only in the
// JSON of each entry, so a caller that may not show them drops JSON.
type Timeline struct {
	Key string `json:"key"`
	// Partition is the key's partition of the changes topic. The state
	// topics and updates are co-partitioned with it; Scans has each
	// topic's partition read.
	Partition int32 `json:"partition"`
	// Since and Until are the window changes and updates were read in;
	// a zero Until reads to the end of each partition.
	Since time.Time `json:"since"`
	Until time.Time `json:"until,omitzero"`

	// Changes are the key's changes in the window, newest first.
	Changes []Change `json:"changes"`
	// State is the key's latest record on the products topic, whatever
	// its time: nil when there is none within the offsets scanned.
	State *State `json:"state"`
	// Updates are the key's updates in the window, newest first.
	Updates []Update `json:"updates"`
	// Pending is what the processor holds for the key now: nil when
	// nothing is pending (or the group keeps no changelog: Scans.Pending
	// says so).
	Pending *Pending `json:"pending"`

	Scans Scans `json:"scans"`
	// Truncated says a bound cut the read short; TruncatedBy lists which,
	// and each Scan the topic it cut.
	Truncated   bool    `json:"truncated"`
	TruncatedBy []Bound `json:"truncated_by,omitempty"`
}

// Scans are the reads of each topic.
type Scans struct {
	Changes  Scan `json:"changes"`
	Products Scan `json:"products"`
	Updates  Scan `json:"updates"`
	Pending  Scan `json:"pending"`
}

// Scan is what was read of one topic.
type Scan struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	// From and To are the offsets read, [From, To): the window's offsets
	// (changes, updates), or for the compacted topics the offsets scanned
	// backwards from the end until the key's latest record was found.
	From int64 `json:"from"`
	To   int64 `json:"to"`
	// Records is how many records were read, every key's.
	Records int64 `json:"records"`
	// Missing says the topic does not exist: the pending changelog of a
	// group that is not in exactly-once mode, or a group never started.
	Missing bool `json:"missing,omitempty"`
	// Truncated is the bound that cut this read short, "" if none. A
	// read the time bound cut stopped somewhere within [From, To).
	Truncated Bound `json:"truncated,omitempty"`

	complete bool // the read ended, with or without Truncated
}

// Bound is a limit that can cut a read short.
type Bound string

// The bounds of a read.
const (
	// BoundMaxRecords: the topic's part to read spanned more offsets than
	// WithMaxRecords allows. A window is then read from its newest end.
	BoundMaxRecords Bound = "max-records"
	// BoundTimeout: WithTimeout passed before the topic was read.
	BoundTimeout Bound = "timeout"
)

// Op is what a change does to its product.
type Op string

// The ops of a change, as its Deleted flag says.
const (
	OpUpsert Op = "upsert"
	OpDelete Op = "delete"
)

// Change is one record of the changes topic.
type Change struct {
	Offset int64     `json:"offset"`
	Time   time.Time `json:"time"` // the record's timestamp
	// EventID and Source are the record's headers of those names.
	EventID string `json:"event_id"`
	Source  string `json:"source"`
	Op      Op     `json:"op"`
	// EventType is the provider's event type; Notice says the change only
	// names the product and carries no data.
	EventType string `json:"event_type"`
	Notice    bool   `json:"notice,omitempty"`
	// Fields names what the change sets, as the state's field times name
	// them: "fields.<name>" for each typed field it carries, in the
	// schema's order, and "raw.<key>" for each top-level member of its raw
	// JSON, in the order written ("raw" when raw is not a JSON object).
	Fields []string        `json:"fields"`
	JSON   json.RawMessage `json:"json,omitempty"`
	// Error says why the value could not be decoded; the other fields
	// then hold what the record's metadata says.
	Error string `json:"error,omitempty"`
}

// State is the key's latest record on the products topic.
type State struct {
	Offset int64     `json:"offset"`
	Time   time.Time `json:"time"`
	// Version is the state's version: the offset on changes of the last
	// change applied, under the processor's version epoch.
	Version int64 `json:"version"`
	// Deleted says the record is a tombstone: its version and DeletedAt
	// come from its headers (DeletedAt zero when the delete did not say
	// when it occurred).
	Deleted   bool      `json:"deleted"`
	DeletedAt time.Time `json:"deleted_at,omitzero"`
	// Fields names the fields the state holds, as Change.Fields does;
	// FieldTimes the occurred time of each field's value, by the same
	// names, when the record has them (nil for a record written by a
	// schema without them, or whose changes never said when they
	// occurred).
	Fields     []string             `json:"fields"`
	FieldTimes map[string]time.Time `json:"field_times,omitempty"`
	JSON       json.RawMessage      `json:"json,omitempty"` // nil for a tombstone
	Error      string               `json:"error,omitempty"`
}

// Update is one record of the updates topic.
type Update struct {
	Offset      int64     `json:"offset"`
	Time        time.Time `json:"time"`
	Version     int64     `json:"version"`
	Deleted     bool      `json:"deleted"`
	ChangeCount int32     `json:"change_count"`
	// Fields names the fields of the state the update carries (none for
	// a delete), as Change.Fields does.
	Fields []string        `json:"fields"`
	JSON   json.RawMessage `json:"json,omitempty"`
	Error  string          `json:"error,omitempty"`
}

// Pending is the processor's pending changelog entry for the key: changes
// merged but not emitted yet.
//
// The changelog records when the changes arrived, not when the update is
// due, which depends on the group's quiet period and max delay: Due is
// set only when the Reader was given them (WithSchedule). Otherwise a
// caller that knows them computes it from FirstSeen and LastSeen: the
// earlier of LastSeen + quiet period and FirstSeen + max delay, LastSeen
// for a delete.
type Pending struct {
	Offset int64     `json:"offset"`
	Time   time.Time `json:"time"` // when the processor wrote the entry
	// FirstSeen is when the key became pending, LastSeen when its latest
	// buffered change arrived (the processor's wall clock).
	FirstSeen time.Time `json:"first_seen"`
	LastSeen  time.Time `json:"last_seen"`
	Due       time.Time `json:"due,omitzero"`
	// FirstOffset is the offset on changes of the first buffered change,
	// Count how many are buffered.
	FirstOffset int64 `json:"first_offset"`
	Count       int   `json:"count"`
	// FirstReceived and LastReceived are those changes' received times.
	FirstReceived time.Time `json:"first_received"`
	LastReceived  time.Time `json:"last_received"`
	// Version and Deleted are those of the state the update will carry;
	// Fields names its fields, as Change.Fields does.
	Version int64    `json:"version"`
	Deleted bool     `json:"deleted"`
	Fields  []string `json:"fields"`
	// JSON is the changelog's value as it is (the processor's internal
	// JSON, which holds the merged state).
	JSON  json.RawMessage `json:"json,omitempty"`
	Error string          `json:"error,omitempty"`
}
