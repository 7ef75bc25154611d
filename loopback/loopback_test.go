package loopback

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

func TestAddrsAreFreeDistinctAndBelowTheEphemeralRange(t *testing.T) {
	var p Ports
	seen := make(map[string]bool)
	for range 300 {
		a, err := p.Addr()
		if err != nil {
			t.Fatal(err)
		}
		if seen[a] {
			t.Fatalf("%s handed out twice", a)
		}
		seen[a] = true
		host, port, err := net.SplitHostPort(a)
		if err != nil || host != "127.0.0.1" {
			t.Fatalf("%q is not a loopback address: %v", a, err)
		}
		n, _ := strconv.Atoi(port)
		if windowClear(ephemeralRange, windowHigh) && (n < windowLow || n >= windowHigh) {
			t.Fatalf("%s is outside the window %d-%d", a, windowLow, windowHigh-1)
		}
		ln, err := net.Listen("tcp", a)
		if err != nil {
			t.Fatalf("%s was handed out but cannot be listened on: %v", a, err)
		}
		ln.Close()
	}
}

// TestAddrSkipsPortsInUse holds all but one port of a small window: Addr
// answers that one, then reports the window exhausted.
func TestAddrSkipsPortsInUse(t *testing.T) {
	const low, high = 24980, 24990
	if !windowClear(ephemeralRange, high) {
		t.Skip("the window is not below this machine's ephemeral range")
	}
	p := Ports{low: low, high: high}
	want := -1
	for port := low; port < high; port++ {
		ln, err := net.Listen("tcp", addr(port))
		if err != nil {
			continue // taken by someone else already
		}
		if want < 0 {
			want = port
			ln.Close()
			continue
		}
		defer ln.Close()
	}
	if want < 0 {
		t.Skip("no port of the window is free on this machine")
	}
	got, err := p.Addr()
	if err != nil {
		t.Fatalf("Addr with one free port: %v", err)
	}
	if got != addr(want) {
		t.Fatalf("Addr = %s, want the one free port %s", got, addr(want))
	}
	if again, err := p.Addr(); err == nil {
		t.Fatalf("Addr handed out %s with no port left", again)
	}
}

func TestWindowClear(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		content string
		want    bool
	}{
		{"32768\t60999\n", true},
		{"25000 60999", true},
		{"24999 60999", false},
		{"1024 65535", false},
		{"garbage", false},
		{"", false},
	} {
		f := filepath.Join(dir, "range")
		if err := os.WriteFile(f, []byte(c.content), 0o600); err != nil {
			t.Fatal(err)
		}
		if got := windowClear(f, windowHigh); got != c.want {
			t.Errorf("windowClear(%q) = %v, want %v", c.content, got, c.want)
		}
	}
	if windowClear(filepath.Join(dir, "missing"), windowHigh) {
		t.Error("a missing file counts as clear")
	}
}
