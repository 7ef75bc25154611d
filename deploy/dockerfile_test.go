package deploy

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// instruction is one line of the Dockerfile, continuations joined.
type instruction struct {
	cmd  string // upper case: FROM, RUN, USER, ...
	args string
}

// dockerfileStages reads the Dockerfile's instructions, one list per
// build stage (each starting with its FROM).
func dockerfileStages(t *testing.T) [][]instruction {
	t.Helper()
	f, err := os.Open("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var stages [][]instruction
	var line string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		text := strings.TrimSpace(sc.Text())
		if line == "" && (text == "" || strings.HasPrefix(text, "#")) {
			continue
		}
		if cont, ok := strings.CutSuffix(text, "\\"); ok {
			line += cont + " "
			continue
		}
		line += text
		cmd, args, _ := strings.Cut(line, " ")
		line = ""
		in := instruction{strings.ToUpper(cmd), strings.TrimSpace(args)}
		if in.cmd == "FROM" {
			stages = append(stages, nil)
		}
		if len(stages) == 0 {
			if in.cmd == "ARG" {
				continue
			}
			t.Fatalf("Dockerfile: %s before the first FROM", in.cmd)
		}
		stages[len(stages)-1] = append(stages[len(stages)-1], in)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(stages) == 0 {
		t.Fatal("Dockerfile: no FROM")
	}
	return stages
}

// imageUser returns the numeric user the image runs as: the final stage's
// USER, which must be a number other than root's so that Kubernetes'
// runAsNonRoot can check it.
func imageUser(t *testing.T) int64 {
	t.Helper()
	stages := dockerfileStages(t)
	var user string
	for _, in := range stages[len(stages)-1] {
		if in.cmd == "USER" {
			user = in.args
		}
	}
	uid, _, _ := strings.Cut(user, ":")
	n, err := strconv.ParseInt(uid, 10, 64)
	if err != nil || n == 0 {
		t.Fatalf("Dockerfile: the final stage's USER is %q, want a numeric user other than root", user)
	}
	return n
}

var staticBase = regexp.MustCompile(`^(gcr\.io/distroless/static(-debian\d+)?(:[a-z0-9.-]+)?|scratch)$`)

// The image is a static binary (no cgo) on a base with no libc or shell
// (distroless static, or scratch), run as a numeric non-root user, and its
// entry point is the binary the build stage made.
func TestDockerfileBuildsAStaticNonRootImage(t *testing.T) {
	stages := dockerfileStages(t)
	final := stages[len(stages)-1]
	from := strings.Fields(final[0].args)
	if base := from[len(from)-1]; !staticBase.MatchString(base) {
		t.Errorf("final stage FROM %s, want distroless static or scratch", base)
	}
	imageUser(t)
	var built, copied, entry string
	for _, st := range stages[:len(stages)-1] {
		for _, in := range st {
			if in.cmd == "RUN" && strings.Contains(in.args, "go build") {
				if !strings.Contains(in.args, "CGO_ENABLED=0") {
					t.Errorf("RUN %s: builds without CGO_ENABLED=0, so the binary may need libc", in.args)
				}
				if !strings.Contains(in.args, "./cmd/productstream") {
					t.Errorf("RUN %s: does not build ./cmd/productstream", in.args)
				}
				if m := regexp.MustCompile(`-o (\S+)`).FindStringSubmatch(in.args); m != nil {
					built = m[1]
				}
			}
		}
	}
	for _, in := range final {
		switch in.cmd {
		case "COPY":
			if f := strings.Fields(in.args); len(f) == 3 && strings.HasPrefix(f[0], "--from=") && f[1] == built {
				copied = f[2]
			}
		case "ENTRYPOINT":
			entry = in.args
		}
	}
	if built == "" || copied == "" {
		t.Fatalf("the final stage does not copy the binary the build makes (built %q, copied to %q)", built, copied)
	}
	if entry != `["`+copied+`"]` {
		t.Errorf("ENTRYPOINT %s, want [%q]", entry, copied)
	}
}

// The build context's ignore file keeps out nothing the build needs: no
// pattern matches go.mod, go.sum, or a Go or embedded file of the binary's
// packages in this module.
func TestDockerignoreKeepsTheBuildInputs(t *testing.T) {
	data, err := os.ReadFile("Dockerfile.dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	var patterns []string
	for _, l := range strings.Split(string(data), "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		if strings.ContainsAny(l, "!") || strings.Contains(l, "**") {
			t.Fatalf("pattern %q: this test matches only plain patterns", l)
		}
		patterns = append(patterns, strings.TrimPrefix(l, "/"))
	}
	ignored := func(p string) string {
		for dir := p; dir != "."; dir = filepath.Dir(dir) {
			for _, pat := range patterns {
				if ok, _ := filepath.Match(pat, dir); ok {
					return pat
				}
			}
		}
		return ""
	}
	if ignored(".git/HEAD") == "" {
		t.Fatal("the matcher does not exclude .git/HEAD: it proves nothing")
	}
	cmd := exec.Command("go", "list", "-deps", "-f", `{{if .Module}}{{if .Module.Main}}{{$d := .Dir}}{{range .GoFiles}}{{$d}}/{{.}}
{{end}}{{range .EmbedFiles}}{{$d}}/{{.}}
{{end}}{{end}}{{end}}`, "./cmd/productstream")
	cmd.Dir = ".."
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	files := []string{"go.mod", "go.sum"}
	for _, f := range strings.Fields(string(out)) {
		rel, err := filepath.Rel(root, f)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, rel)
	}
	if len(files) < 10 {
		t.Fatalf("go list named %d files: %q", len(files), files)
	}
	for _, f := range files {
		if pat := ignored(f); pat != "" {
			t.Errorf("%s is a build input, and the ignore pattern %q keeps it out of the image's build", f, pat)
		}
	}
}
