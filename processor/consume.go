package processor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/productstream/productstream/schemas"
)

// partition is the state of one assigned partition of the changes topic.
type partition struct {
	states map[string]*entry
	// stored holds the keys restored and untouched since, apart from
	// states: their state records' values, encoded, with their versions,
	// in a fraction of an entry's memory. lookup moves a key to states.
	stored    map[string]storedState
	next      int64      // offset after the last consumed record; -1 before any
	queue     []*pending // buffered keys in the order of their first offset
	committed int64
}

// storedState is a restored state record's value and version.
type storedState struct {
	enc     []byte
	version int64
}

// lookup returns key's entry, nil when it has none. A key restored and
// untouched since moves from stored to states, its state still encoded.
func (pt *partition) lookup(key string) *entry {
	if e := pt.states[key]; e != nil {
		return e
	}
	s, ok := pt.stored[key]
	if !ok {
		return nil
	}
	delete(pt.stored, key)
	e := &entry{enc: s.enc, version: s.version}
	pt.states[key] = e
	return e
}

// watermark is the offset that is safe to commit: the first buffered change
// not yet written, else everything consumed.
func (pt *partition) watermark() int64 {
	for len(pt.queue) > 0 && pt.queue[0].flushed {
		pt.queue[0] = nil
		pt.queue = pt.queue[1:]
	}
	if len(pt.queue) > 0 {
		return pt.queue[0].first
	}
	return pt.next
}

// decoded is one record of the changes topic with its decoded change. A
// record with err goes to the dead letter topic.
type decoded struct {
	rec *kgo.Record
	ch  schemas.Change
	err error
	fp  int64     // the change's fingerprint; 0 without an event id or with dedupe off
	raw rawObject // ch.Raw split into its members
	at  time.Time // when the processor polled it: its quiet period starts then
}

// ErrRawTooDeep is the dlq-error of a change whose raw JSON nests deeper
// than Config.MaxJSONDepth: merged into state, it would reach consumers
// and sinks whose parsers refuse it.
var ErrRawTooDeep = errors.New("raw JSON nests too deep")

// decodeChange decodes a record's value into d.ch, splits its raw JSON
// into members for merging (appended to members), refuses a change whose
// raw nests too deep, and takes the change's fingerprint. It needs no
// processor state, so decoding goroutines may call it concurrently.
func (p *Processor) decodeChange(d *decoded, members []rawMember) {
	d.ch, d.err = p.cfg.Serde.DecodeChange(context.Background(), d.rec.Value)
	if d.err == nil {
		var tooDeep bool
		if d.raw, tooDeep = splitRaw(d.ch.Raw, members, p.cfg.MaxJSONDepth); tooDeep {
			d.err = fmt.Errorf("%w: more than %d levels", ErrRawTooDeep, p.cfg.MaxJSONDepth)
		}
	}
	if d.err == nil && d.ch.EventID != "" && p.cfg.DedupeEventIDs > 0 {
		d.fp = fingerprint(&d.ch)
	}
}

// consumeFetches decodes the records of a poll and applies them in order,
// and returns how many there were. Decoding is the largest cost of a change
// and needs no processor state, so it runs on every CPU, a chunk at a time in
// log order, while this goroutine applies each chunk as soon as it is
// decoded: applying one chunk overlaps decoding the next. polled[i] is
// when fetches[i] was polled; without it, now. Called with mu held.
func (p *Processor) consumeFetches(fetches kgo.Fetches, polled []time.Time) int {
	batch := make([]decoded, 0, fetches.NumRecords())
	now := p.now()
	for i, f := range fetches {
		at := now
		if i < len(polled) {
			at = polled[i]
		}
		kgo.Fetches{f}.EachRecord(func(r *kgo.Record) { batch = append(batch, decoded{rec: r, at: at}) })
	}
	n := len(batch)
	decode := func(lo, hi int) {
		// Room for the raw members of each change, allocated at once;
		// merging copies what it keeps of them.
		room := make([]rawMember, membersRoom*(hi-lo))
		for i := lo; i < hi; i++ {
			at := membersRoom * (i - lo)
			p.decodeChange(&batch[i], room[at:at:at+membersRoom])
		}
	}
	chunks := (n + decodeChunk - 1) / decodeChunk
	if chunks < 2 {
		decode(0, n)
		p.consumeAll(batch)
		return n
	}
	done := make([]chan struct{}, chunks)
	for c := range done {
		done[c] = make(chan struct{})
	}
	var next atomic.Int64
	for range min(runtime.GOMAXPROCS(0), chunks) {
		go func() {
			for c := int(next.Add(1) - 1); c < chunks; c = int(next.Add(1) - 1) {
				decode(c*decodeChunk, min((c+1)*decodeChunk, n))
				close(done[c])
			}
		}()
	}
	for c := range chunks {
		<-done[c]
		p.consumeAll(batch[c*decodeChunk : min((c+1)*decodeChunk, n)])
	}
	return n
}

// decodeChunk is how many records a decoding goroutine takes at a time.
const decodeChunk = 256

// membersRoom is how many raw members of a change fit in the room decoding
// sets aside for it; a change with more has them allocated apart.
const membersRoom = 8

// consumeAll applies a poll's decoded records in order. Called with mu held.
func (p *Processor) consumeAll(batch []decoded) {
	for i := range batch {
		p.consume(&batch[i])
	}
}

// consume applies one decoded record of the changes topic. Called with mu
// held.
func (p *Processor) consume(d *decoded) {
	r := d.rec
	pt := p.parts[r.Partition]
	if pt == nil {
		return // not (or no longer) ours
	}
	pt.next = r.Offset + 1
	if d.err != nil {
		p.deadLetter(r, d.err)
		return
	}
	ch := &d.ch
	resource := ch.Resource
	if resource == "" {
		resource = "product"
	}
	tag, ok := resourceTags[resource]
	if !ok {
		p.metrics.changesNoState.Inc()
		return // a resource without a state topic stays on changes only
	}
	key := internalKey(tag, r.Key)
	e := pt.lookup(key)
	version := Version(p.cfg.VersionEpoch, r.Offset)
	if e != nil && version <= e.version {
		p.metrics.changesReplayed.Inc()
		return // applied before a restart
	}
	p.load(e)
	if e != nil && d.fp != 0 && applied(&e.state, ch.EventID, d.fp) {
		p.metrics.changesDuplicate.Inc()
		return // a retry, written again by another ingest replica
	}
	if stale(e, ch) {
		p.metrics.changesStale.Inc()
		return // older than what the state already reflects
	}
	p.metrics.changesApplied.Inc()
	e = apply(e, ch, &d.raw, version, p.derive)
	remember(&e.state, d.fp, p.cfg.DedupeEventIDs)
	pt.states[key] = e
	if np := p.co.add(key, r.Partition, r.Offset, ch.ReceivedAt, d.at, e.deleted); np != nil {
		pt.queue = append(pt.queue, np)
	}
	p.mode.changed(key, r.Partition)
}

// load decodes a restored entry's state record on first use. A record that
// does not decode is logged and the key starts afresh, keeping its version
// so that replayed changes are still skipped. Called with mu held.
func (p *Processor) load(e *entry) {
	if e == nil || e.enc == nil {
		return
	}
	st, err := p.cfg.Serde.DecodeState(context.Background(), e.enc)
	e.enc = nil
	if err != nil {
		p.log.Error("undecodable state record: starting the key afresh", "version", e.version, "err", err)
		e.state, e.deleted = schemas.State{Version: e.version}, true
		return
	}
	e.state = st
}

// derive queues a change that another change implies (collection
// membership) for the changes topic, where it is processed like any other
// and its key's partition owns it. Called with mu held.
func (p *Processor) derive(ch schemas.Change) {
	v, err := p.cfg.Serde.EncodeChange(&ch)
	if err != nil {
		p.log.Error("cannot encode a derived change", "event_type", ch.EventType, "err", err)
		return
	}
	p.metrics.derived.Inc()
	p.derived = append(p.derived, &kgo.Record{Topic: p.cfg.Topics.Changes, Key: []byte(ch.Key()), Value: v,
		Headers: []kgo.RecordHeader{{Key: "event-id", Value: []byte(ch.EventID)}, {Key: "source", Value: []byte(ch.Source)}}})
}

// deadLetter queues a record that cannot be processed for the DLQ topic,
// with headers naming the error and its origin; processing goes on.
func (p *Processor) deadLetter(r *kgo.Record, err error) {
	p.log.Error("record sent to the dead letter topic", "topic", r.Topic, "partition", r.Partition, "offset", r.Offset, "err", err)
	// The record is recycled once the cycle is done (see recycle), which
	// at least once may be before its dead letter was sent: what the dead
	// letter carries of it is cloned.
	headers := []kgo.RecordHeader{
		{Key: "dlq-error", Value: []byte(err.Error())},
		{Key: "dlq-origin-topic", Value: []byte(r.Topic)},
		{Key: "dlq-origin-partition", Value: []byte(strconv.Itoa(int(r.Partition)))},
		{Key: "dlq-origin-offset", Value: []byte(strconv.FormatInt(r.Offset, 10))},
	}
	for _, h := range r.Headers {
		headers = append(headers, kgo.RecordHeader{Key: strings.Clone(h.Key), Value: bytes.Clone(h.Value)})
	}
	p.dlq = append(p.dlq, &kgo.Record{Topic: p.cfg.Topics.DLQ, Key: bytes.Clone(r.Key), Value: bytes.Clone(r.Value), Headers: headers})
}
