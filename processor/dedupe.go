package processor

import (
	"crypto/sha256"
	"encoding/binary"
	"hash/crc32"
	"strings"
	"sync"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/productstream/productstream/schemas"
)

// Several ingest replicas behind a load balancer each remember only the
// deliveries they answered themselves, so a sender's retry that reaches
// another replica is written to changes again, with the same event id.
// Each key's state remembers the last Config.DedupeEventIDs changes applied
// to it (schemas.State.DedupeFingerprints, oldest first), so the processor
// recognises such a retry and neither merges nor counts it again. The
// memory is part of the state: it is written to the state topic and the
// pending changelog, and restored with the rest of the state.

// fingerprint is what a key's memory holds of a change with an event id:
// 64 bits of SHA-256 over its source, its event id, and the CRC-32C and
// length of its raw JSON, never 0 (the entry of a change without an event
// id). A retry carries the same body, so the same raw. Binding the raw
// keeps what the edge promises for a delivery id that the signature does
// not cover: a captured delivery re-posted under the id the sender will use
// next cannot make the real one look like a retry, since its signed body
// fixes its raw. The raw is only checksummed, which costs a fraction of
// hashing it.
func fingerprint(ch *schemas.Change) int64 {
	var buf [256]byte
	b := append(append(buf[:0], ch.Source...), 0)
	b = append(append(b, ch.EventID...), 0)
	b = binary.LittleEndian.AppendUint32(b, crcString(ch.Raw))
	b = binary.LittleEndian.AppendUint64(b, uint64(len(ch.Raw)))
	sum := sha256.Sum256(b)
	return int64(binary.LittleEndian.Uint64(sum[:8]) | 1)
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// crcChunks are the buffers crcString copies a string through: converted
// to a slice, the string would be copied to the heap, as crc32 takes a
// []byte that escapes.
var crcChunks = sync.Pool{New: func() any { return new([4096]byte) }}

// crcString is the CRC-32C of s.
func crcString(s string) uint32 {
	chunk := crcChunks.Get().(*[4096]byte)
	var crc uint32
	for len(s) > 0 {
		n := copy(chunk[:], s)
		crc = crc32.Update(crc, castagnoli, chunk[:n])
		s = s[n:]
	}
	crcChunks.Put(chunk)
	return crc
}

// bodyHashID reports whether an event id is a hash of the delivery's body:
// what ingest gives a change whose delivery names no id of its own
// ("sha256:" and 32 hex digits: LiSA's, and an hmac source's without
// event_id_header). An identical body can then be a real repeat (a price
// going 10, 12, 10), not a retry, so only a repeat of the last change
// applied to the key is taken for a retry: merging it again would change
// nothing.
func bodyHashID(id string) bool {
	hexPart, ok := strings.CutPrefix(id, "sha256:")
	if !ok || len(hexPart) != 32 {
		return false
	}
	for i := range len(hexPart) {
		if c := hexPart[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// applied reports whether the change with event id and fingerprint fp
// (not 0) is one the state remembers applying: any remembered one, or for
// a body hash id the last one applied.
func applied(st *schemas.State, id string, fp int64) bool {
	mem := st.DedupeFingerprints
	if bodyHashID(id) {
		return len(mem) > 0 && mem[len(mem)-1] == fp
	}
	for _, f := range mem {
		if f == fp {
			return true
		}
	}
	return false
}

// remember records fp (0 for a change without an event id) as the last
// change applied to the state, keeping the last n; n == 0 forgets them
// all. Once the memory is full, the oldest one makes room in place.
func remember(st *schemas.State, fp int64, n int) {
	mem := st.DedupeFingerprints
	switch {
	case n == 0:
		st.DedupeFingerprints = nil
		return
	case len(mem) > n: // restored under a larger setting
		mem = append(mem[:0], mem[len(mem)-n:]...)
	}
	if len(mem) == n {
		copy(mem, mem[1:])
		mem[n-1] = fp
	} else {
		mem = append(mem, fp)
	}
	st.DedupeFingerprints = mem
}

// headerFingerprints reads a tombstone's dedupeHeader; nil when it has
// none or it does not parse.
func headerFingerprints(r *kgo.Record) []int64 {
	for _, h := range r.Headers {
		if h.Key == dedupeHeader {
			return schemas.ParseFingerprints(string(h.Value))
		}
	}
	return nil
}
