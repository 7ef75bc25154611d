package config

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"gopkg.in/yaml.v3"
)

// writeFile writes content to name under dir and returns its path.
func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// ${file:PATH} is the file's content without one trailing newline, inside
// a longer value too, beside ${ENV}; what it expands to is not expanded
// again; and Parse lists the files it read.
func TestFileReferencesExpandToTheFilesContent(t *testing.T) {
	dir := t.TempDir()
	a := writeFile(t, dir, "a", "s1\n")
	b := writeFile(t, dir, "b", "s2\r\n")
	c := writeFile(t, dir, "c", "two\n\n")
	d := writeFile(t, dir, "d", "${LISA_KEY}")
	yml := `
sources:
  - name: lisa-main
    provider: lisa
    secrets: ["${file:` + a + `}", "pre-${file:` + b + `}-${LISA_KEY}", "${file:` + c + `}", "${file:` + a + `}"]
    api_keys: ["${file:` + d + `}"]
`
	cfg, err := Parse([]byte(yml), env(map[string]string{"LISA_KEY": "k1"}))
	if err != nil {
		t.Fatal(err)
	}
	s := cfg.Sources[0]
	if want := []string{"s1", "pre-s2-k1", "two\n", "s1"}; !slices.Equal(s.Secrets, want) {
		t.Errorf("secrets = %q, want %q", s.Secrets, want)
	}
	if s.APIKeys[0] != "${LISA_KEY}" {
		t.Errorf("a file's content was expanded again: %q", s.APIKeys[0])
	}
	if want := []string{a, b, c, d}; !slices.Equal(cfg.Files, want) {
		t.Errorf("Files = %q, want %q", cfg.Files, want)
	}
}

// A file reference that cannot be read stops Parse with a *FileRefError
// naming the key and the path and saying why, and never any of the file's
// content; a file of exactly MaxFileBytes is read.
func TestFileReferenceErrorsNameKeyAndPathNeverContent(t *testing.T) {
	dir := t.TempDir()
	const content = "TOP-SECRET-CONTENT"
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		path string
		want error
	}{
		{"missing", filepath.Join(dir, "nope"), fs.ErrNotExist},
		{"dangling symlink", symlink(t, dir, "dangling", filepath.Join(dir, "gone")), fs.ErrNotExist},
		{"relative", "secrets/a", ErrRelativePath},
		{"directory", dir, ErrNotRegular},
		{"pipe", fifo, ErrNotRegular},
		{"one byte over the limit", writeFile(t, dir, "big", content+strings.Repeat("x", MaxFileBytes+1-len(content))), ErrFileTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			yml := "sources:\n  - name: a\n    provider: lisa\n    secrets: [ok, \"${file:" + tc.path + "}\"]\n"
			_, err := Parse([]byte(yml), env(nil))
			var fe *FileRefError
			if !errors.As(err, &fe) || !errors.Is(err, tc.want) {
				t.Fatalf("want a *FileRefError wrapping %v, got %v", tc.want, err)
			}
			if fe.Key != "sources[0].secrets[1]" || fe.Path != tc.path {
				t.Errorf("error names key %q and path %q, want sources[0].secrets[1] and %q", fe.Key, fe.Path, tc.path)
			}
			if msg := err.Error(); !strings.Contains(msg, "sources[0].secrets[1]") || !strings.Contains(msg, tc.path) || strings.Contains(msg, content) {
				t.Errorf("message %q must name the key and the path and hold none of the content", msg)
			}
		})
	}
	t.Run("unreadable", func(t *testing.T) {
		if os.Geteuid() == 0 {
			t.Skip("root reads a file whatever its mode")
		}
		path := writeFile(t, dir, "locked", content)
		if err := os.Chmod(path, 0); err != nil {
			t.Fatal(err)
		}
		_, err := Parse([]byte("http: {listen: \"${file:"+path+"}\"}\n"), env(nil))
		var fe *FileRefError
		if !errors.As(err, &fe) || !errors.Is(err, fs.ErrPermission) || fe.Key != "http.listen" || strings.Contains(err.Error(), content) {
			t.Fatalf("want a *FileRefError on http.listen wrapping fs.ErrPermission, got %v", err)
		}
	})
	t.Run("exactly the limit", func(t *testing.T) {
		path := writeFile(t, dir, "max", strings.Repeat("y", MaxFileBytes))
		cfg, err := Parse([]byte("sources: [{name: a, provider: lisa, secrets: [\"${file:"+path+"}\"]}]\n"), env(nil))
		if err != nil {
			t.Fatal(err)
		}
		if n := len(cfg.Sources[0].Secrets[0]); n != MaxFileBytes {
			t.Fatalf("read %d bytes, want %d", n, MaxFileBytes)
		}
	})
	t.Run("every failure reported", func(t *testing.T) {
		yml := "kafka: {brokers: [\"${file:" + filepath.Join(dir, "x") + "}\"]}\nsources: [{name: a, provider: lisa, secrets: [\"${file:rel}\", \"${NOPE}\"]}]\n"
		_, err := Parse([]byte(yml), env(nil))
		for _, want := range []string{"kafka.brokers[0]", "sources[0].secrets[0]", "NOPE"} {
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("error %v does not name %s", err, want)
			}
		}
		if !errors.Is(err, ErrMissingEnv) || !errors.Is(err, ErrRelativePath) || !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("error %v does not wrap each cause", err)
		}
	})
}

// symlink makes name under dir point at target and returns its path.
func symlink(t *testing.T, dir, name, target string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.Symlink(target, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// Load records the file it read, for a reload to read it again.
func TestLoadRecordsItsPath(t *testing.T) {
	dir := t.TempDir()
	secret := writeFile(t, dir, "secret", "s1\n")
	path := writeFile(t, dir, "config.yaml", "sources: [{name: a, provider: lisa, secrets: [\"${file:"+secret+"}\"]}]\n")
	cfg, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Path != path || !slices.Equal(cfg.Files, []string{secret}) || cfg.Sources[0].Secrets[0] != "s1" {
		t.Fatalf("Load gave path %q, files %q, secret %q", cfg.Path, cfg.Files, cfg.Sources[0].Secrets[0])
	}
}

// The fingerprint is of the effective configuration: defaults written
// out or left to applyDefaults give the same one; any value, a secret
// read from a file included, changes it; it shows none of the values.
func TestFingerprintIsOfTheEffectiveConfiguration(t *testing.T) {
	dir := t.TempDir()
	secret := writeFile(t, dir, "secret", "s1-very-secret\n")
	parse := func(yml string) *Config {
		t.Helper()
		cfg, err := Parse([]byte(yml), env(nil))
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	base := "sources: [{name: a, provider: lisa, secrets: [\"${file:" + secret + "}\"]}]\n"
	fp := parse(base).Fingerprint()
	if len(fp) != fingerprintLen || strings.Trim(fp, "0123456789abcdef") != "" {
		t.Fatalf("fingerprint %q is not %d hex digits", fp, fingerprintLen)
	}
	if got := parse("kafka: {topic_prefix: productstream., partitions: 12}\n" + base).Fingerprint(); got != fp {
		t.Errorf("defaults written out changed the fingerprint: %s, want %s", got, fp)
	}
	if got := parse(base + "http: {listen: \"127.0.0.1:9999\"}\n").Fingerprint(); got == fp {
		t.Error("another listen address kept the fingerprint")
	}
	writeFile(t, dir, "secret", "s2-very-secret\n")
	if got := parse(base).Fingerprint(); got == fp {
		t.Error("another secret in the file kept the fingerprint")
	}
	if a, b := Demo().Fingerprint(), Demo().Fingerprint(); a != b {
		t.Errorf("one configuration, two fingerprints: %s and %s", a, b)
	}
	// Not a fast hash of the values, which would let guesses at the
	// secret be checked at speed.
	data, err := yaml.Marshal(parse(base))
	if err != nil {
		t.Fatal(err)
	}
	if sum := sha256.Sum256(data); strings.HasPrefix(hex.EncodeToString(sum[:]), parse(base).Fingerprint()) {
		t.Error("the fingerprint is a SHA-256 prefix of the configuration")
	}
}

func BenchmarkFingerprint(b *testing.B) {
	cfg := Demo()
	for b.Loop() {
		cfg.Fingerprint()
	}
}
