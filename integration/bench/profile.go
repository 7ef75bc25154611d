package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// profileResult is a CPU profile of one process over one run, taken through
// its ops.listen pprof endpoint, and what `go tool pprof` says of it.
type profileResult struct {
	name    string  // e.g. "processor, transactions off"
	changes int64   // changes the profiled run processed
	total   float64 // CPU seconds sampled
	areas   []area  // share of the samples whose stack holds each area
	top     string  // `go tool pprof -top` (flat), its first lines
	files   []string
}

// area is a part of the code and its share of a profile's CPU samples.
type area struct {
	label string
	share float64 // 0..1; NaN: not computed
}

// profileArea is a part of the code: the samples whose stack has a frame
// matching focus (a pprof -focus regexp) and, when ignore is set, none
// matching ignore.
type profileArea struct {
	label, focus, ignore string
}

// profileAreas are the parts reported for every processor profile (a
// sample may count in more than one).
var profileAreas = []profileArea{
	{label: "goavro (Avro decode and encode)", focus: `github\.com/linkedin/goavro`},
	{label: "franz-go (fetch, produce, group)", focus: `github\.com/twmb/franz-go`},
	{label: "state merge and JSON rendering (processor.apply, render; gjson)", focus: `processor\.apply|processor\.\(\*entry\)\.render|github\.com/tidwall`},
	{label: "garbage collector (background mark workers)", focus: `runtime\.gcBgMarkWorker`},
	{label: "system calls", focus: `syscall\.Syscall|syscall\.RawSyscall|internal/runtime/syscall`},
}

// edgeProfileAreas are the parts reported for the profiles of B2 and the
// edge (a sample may count in more than one).
var edgeProfileAreas = []profileArea{
	{label: "reading the request: headers and body (net/http)", focus: `net/http\.\(\*conn\)\.readRequest|ingest\.readBody|io\.ReadAll`},
	{label: "signature and API key checks (crypto)", focus: `^crypto/`},
	{label: "JSON: the product id, or the edge's parse and normalization", focus: `encoding/json\.|ingest\.parseObject|ingest\.object\.`},
	{label: "Avro encoding (goavro, the edge's serde)", focus: `github\.com/linkedin/goavro|schemas\.\(\*Serde\)\.Encode`},
	{label: "franz-go (produce, acknowledgements)", focus: `github\.com/twmb/franz-go`},
	{label: "the edge's delivery log and metrics (deliveries, Prometheus)", focus: `productstream/deliveries|github\.com/prometheus`},
	{label: "Gin's own work (routing, context; the edge's handler excluded)", focus: `github\.com/gin-gonic`, ignore: `productstream/ingest\.`},
	{label: "writing the answer (net/http)", focus: `net/http\.\(\*response\)\.finishRequest|net/http\.\(\*response\)\.Write|net/http\.\(\*chunkWriter\)`},
	{label: "garbage collector (background mark workers)", focus: `runtime\.gcBgMarkWorker`},
	{label: "system calls", focus: `syscall\.Syscall|syscall\.RawSyscall|internal/runtime/syscall`},
}

// cpuProfiles takes back-to-back CPU profiles of the process serving pprof
// on addr, of 1 s each (net/http/pprof cannot end one early), into dir,
// until stop is closed. The last one may run up to a second past stop.
func cpuProfiles(ctx context.Context, addr, dir, name string, stop <-chan struct{}) ([]string, error) {
	var files []string
	for i := 0; ; i++ {
		select {
		case <-stop:
			return files, nil
		case <-ctx.Done():
			return files, ctx.Err()
		default:
		}
		path := filepath.Join(dir, fmt.Sprintf("%s-%03d.pprof", name, i))
		if err := fetchProfile(ctx, "http://"+addr+"/debug/pprof/profile?seconds=1", path); err != nil {
			return files, err
		}
		files = append(files, path)
	}
}

func fetchProfile(ctx context.Context, url, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("CPU profile: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("CPU profile: %s: %s", resp.Status, strings.TrimSpace(string(msg)))
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return fmt.Errorf("CPU profile: %w", err)
	}
	return f.Close()
}

var (
	totalLine   = regexp.MustCompile(`Showing nodes accounting for \S+, ([0-9.]+)% of (\S+) total`)
	durationRow = regexp.MustCompile(`^Duration: .*$`)
)

// summarize merges the profiles with `go tool pprof` and fills the share
// of each of areas and the top of the flat listing.
func summarize(ctx context.Context, root, bin string, pr *profileResult, areas []profileArea) error {
	if len(pr.files) == 0 {
		return errors.New("no CPU profile was taken")
	}
	pprof := func(args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, "go", append(append([]string{"tool", "pprof"}, args...), append([]string{bin}, pr.files...)...)...)
		cmd.Dir = root
		out, err := cmd.CombinedOutput()
		if err != nil {
			return "", fmt.Errorf("go tool pprof %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
		}
		return string(out), nil
	}
	top, err := pprof("-top", "-nodecount=25")
	if err != nil {
		return err
	}
	m := totalLine.FindStringSubmatch(top)
	if m == nil {
		return fmt.Errorf("go tool pprof -top: no total in %q", firstLines(top, 8))
	}
	total, err := time.ParseDuration(m[2])
	if err != nil {
		return fmt.Errorf("go tool pprof -top: total %q: %w", m[2], err)
	}
	pr.total = total.Seconds()
	pr.top = firstLines(durationRow.ReplaceAllString(top, ""), 40)
	for _, a := range areas {
		args := []string{"-top", "-nodecount=0", "-nodefraction=0", "-edgefraction=0", "-focus=" + a.focus}
		if a.ignore != "" {
			args = append(args, "-ignore="+a.ignore)
		}
		out, err := pprof(args...)
		share := 0.0
		switch m := totalLine.FindStringSubmatch(out); {
		case err != nil && strings.Contains(err.Error(), "no matches found"):
		case err != nil:
			return err
		case m != nil:
			v, _ := strconv.ParseFloat(m[1], 64)
			share = v / 100
		}
		pr.areas = append(pr.areas, area{label: a.label, share: share})
	}
	return nil
}

// firstLines returns up to n lines of s, without blank ones at the start.
func firstLines(s string, n int) string {
	lines := strings.Split(strings.TrimLeft(s, "\n"), "\n")
	var keep []string
	for _, l := range lines {
		if strings.TrimSpace(l) == "" && len(keep) == 0 {
			continue
		}
		keep = append(keep, l)
		if len(keep) == n {
			break
		}
	}
	return strings.Join(keep, "\n")
}
