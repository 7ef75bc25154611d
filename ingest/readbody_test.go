package ingest

import (
	"strings"
	"testing"
	"testing/iotest"
)

// readAll reads the whole body whatever the Content-Length says (the
// sender's word: too small, too large, unknown, or larger than what is
// allocated up front), in reads of any size.
func TestReadAllWhateverTheLengthSays(t *testing.T) {
	body := strings.Repeat("0123456789", 100) // 1,000 bytes
	big := strings.Repeat("x", maxPresize+4096)
	for _, tc := range []struct {
		name string
		data string
		size int64
	}{
		{"exact", body, 1000},
		{"unknown", body, -1},
		{"said less", body, 10},
		{"said more", body, 1 << 40},
		{"said nothing", body, 0},
		{"empty", "", 0},
		{"beyond the presize", big, int64(len(big))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := readAll(strings.NewReader(tc.data), tc.size)
			if err != nil || string(got) != tc.data {
				t.Fatalf("read %d bytes (%v), want %d", len(got), err, len(tc.data))
			}
			if tc.size == int64(len(tc.data)) && tc.size <= maxPresize && cap(got) != len(tc.data)+1 {
				t.Errorf("a body of the length it said took a buffer of %d bytes, want %d", cap(got), len(tc.data)+1)
			}
			got, err = readAll(iotest.OneByteReader(strings.NewReader(tc.data)), tc.size)
			if err != nil || string(got) != tc.data {
				t.Fatalf("one byte at a time: read %d bytes (%v), want %d", len(got), err, len(tc.data))
			}
		})
	}
	if _, err := readAll(iotest.ErrReader(iotest.ErrTimeout), 10); err != iotest.ErrTimeout {
		t.Errorf("a failing read: %v, want its error", err)
	}
}
