package main

import (
	"bufio"
	"strings"
	"testing"
)

// TestAssignedPartitions pins down how the start-up section reads the
// processor's assigned partitions gauge from /metrics.
func TestAssignedPartitions(t *testing.T) {
	for _, tc := range []struct {
		name, text string
		want       int
	}{
		{"set", "# HELP productstream_processor_assigned_partitions Partitions.\n# TYPE productstream_processor_assigned_partitions gauge\nproductstream_processor_assigned_partitions 12\n", 12},
		{"zero", "productstream_processor_assigned_partitions 0\n", 0},
		{"prefix of another metric is not it", "productstream_processor_assigned_partitions_total 3\n", -1},
		{"absent", "productstream_processor_broker_up 1\n", -1},
		{"not a number", "productstream_processor_assigned_partitions NaNish\n", -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := assignedPartitions(bufio.NewScanner(strings.NewReader(tc.text))); got != tc.want {
				t.Errorf("got %d, want %d", got, tc.want)
			}
		})
	}
}
