package sinktest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// backendsScript is the script that runs the real backends, relative to the
// module root.
const backendsScript = "integration/backends/backends.sh"

// backendEnv returns the environment variable that holds the address of the
// named backend, the one `backends.sh env <name>` exports.
func backendEnv(name string) (string, bool) {
	switch name {
	case "postgres":
		return "PRODUCTSTREAM_POSTGRES_DSN", true
	case "redis":
		return "PRODUCTSTREAM_REDIS_ADDR", true
	case "opensearch":
		return "PRODUCTSTREAM_OPENSEARCH_URL", true
	}
	return "", false
}

// StartBackend returns the address of a running real backend ("postgres" -> a DSN, "redis" -> host:port, "opensearch" -> a URL):
// the PRODUCTSTREAM_POSTGRES_DSN / PRODUCTSTREAM_REDIS_ADDR / PRODUCTSTREAM_OPENSEARCH_URL environment variable when set,
// else it runs integration/backends/backends.sh start <name> (found by walking up from the working directory to go.mod)
// and reads the value from `backends.sh env <name>`. It fails the test with the script's output if the backend cannot be started. Never skips.
//
// Nothing is cached: when the backend already runs, the script only checks
// that it answers (well under a second), and concurrent calls, from this
// process or from other test binaries, take turns on the script's lock.
func StartBackend(t testing.TB, name string) string {
	t.Helper()
	envVar, ok := backendEnv(name)
	if !ok {
		t.Fatalf("sinktest.StartBackend: unknown backend %q (known: postgres, redis, opensearch)", name)
	}
	if v := os.Getenv(envVar); v != "" {
		return v
	}
	script, err := findBackendsScript()
	if err != nil {
		t.Fatalf("sinktest.StartBackend(%q): %s is not set and %v", name, envVar, err)
	}
	if out, err := runScript(script, "start", name); err != nil {
		t.Fatalf("sinktest.StartBackend(%q): bash %s start %s: %v\n%s", name, script, name, err, out)
	}
	out, err := runScript(script, "env", name)
	if err != nil {
		t.Fatalf("sinktest.StartBackend(%q): bash %s env %s: %v\n%s", name, script, name, err, out)
	}
	v, err := parseExport(out, envVar)
	if err != nil {
		t.Fatalf("sinktest.StartBackend(%q): bash %s env %s: %v\n%s", name, script, name, err, out)
	}
	return v
}

// runScript runs the script with bash and returns its stdout and stderr
// together, for the test's failure message.
func runScript(script string, args ...string) ([]byte, error) {
	cmd := exec.Command("bash", append([]string{script}, args...)...)
	cmd.Dir = filepath.Dir(script)
	return cmd.CombinedOutput()
}

// findBackendsScript walks up from the working directory to the directory
// holding go.mod (the module root) and returns the script's path there.
func findBackendsScript() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			script := filepath.Join(dir, filepath.FromSlash(backendsScript))
			if _, err := os.Stat(script); err != nil {
				return "", fmt.Errorf("module root %s has no %s: %w", dir, backendsScript, err)
			}
			return script, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod found above the working directory")
		}
		dir = parent
	}
}

// parseExport finds the line `export NAME=value` in out and returns value.
func parseExport(out []byte, name string) (string, error) {
	prefix := "export " + name + "="
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), prefix); ok && v != "" {
			return v, nil
		}
	}
	return "", fmt.Errorf("no %q line in its output", prefix+"...")
}
