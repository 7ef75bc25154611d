package config

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/crypto/argon2"
	"gopkg.in/yaml.v3"
)

// A value may be, or hold, ${file:PATH}: Parse replaces it by the content
// of the file at PATH, with one trailing newline removed, as a secret
// mounted from Kubernetes or Docker is written. So a secret need not sit in
// the configuration file or in the environment.

// MaxFileBytes bounds the file a ${file:PATH} reference reads: a secret, a
// key or a token, never a data set.
const MaxFileBytes = 64 << 10

// The reasons a *FileRefError gives beside the operating system's.
var (
	// ErrFileTooLarge: the file holds more than MaxFileBytes.
	ErrFileTooLarge = fmt.Errorf("larger than %d bytes", MaxFileBytes)
	// ErrRelativePath: PATH is not absolute (it would depend on the
	// directory the process was started in).
	ErrRelativePath = errors.New("the path must be absolute")
	// ErrNotRegular: PATH is a directory, a device or a pipe.
	ErrNotRegular = errors.New("not a regular file")
)

// FileRefError surfaces from Parse (and Load) when a ${file:PATH}
// reference cannot be read. It names the key and the path, never any of
// the file's content.
type FileRefError struct {
	// Key is where the reference is, as written in the file:
	// "sources[0].secrets[1]".
	Key string
	// Path is the file the reference names.
	Path string
	// Err is why: an *fs.PathError, ErrFileTooLarge, ErrRelativePath or
	// ErrNotRegular.
	Err error
}

func (e *FileRefError) Error() string {
	return fmt.Sprintf("%s: ${file:%s}: %v", e.Key, e.Path, e.Err)
}

func (e *FileRefError) Unwrap() error { return e.Err }

// readFileRef reads the file a ${file:PATH} reference names, at most
// MaxFileBytes of it, without its one trailing newline ("\n" or "\r\n").
func readFileRef(path string) (string, error) {
	if !filepath.IsAbs(path) {
		return "", ErrRelativePath
	}
	// Stat first: opening a pipe would block, and a device never ends.
	info, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	if !info.Mode().IsRegular() {
		return "", ErrNotRegular
	}
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileBytes+1))
	if err != nil {
		return "", err
	}
	if len(data) > MaxFileBytes {
		return "", ErrFileTooLarge
	}
	s, found := strings.CutSuffix(string(data), "\n")
	if found {
		s = strings.TrimSuffix(s, "\r")
	}
	return s, nil
}

// Same reports whether a and b are the same configuration, every default
// applied and every reference expanded, as Fingerprint would tell, but
// at once: for comparisons that show nothing.
func Same(a, b *Config) bool {
	da, erra := yaml.Marshal(a)
	db, errb := yaml.Marshal(b)
	return erra == nil && errb == nil && bytes.Equal(da, db)
}

// fingerprintLen is how many hex digits of the derived key Fingerprint
// keeps.
const fingerprintLen = 12

// The cost of Fingerprint's key derivation (Argon2id, OWASP's smallest
// recommended setting): about 30 ms and 19 MiB per fingerprint, so that
// checking guesses against it is slow.
const (
	fingerprintTime   = 2
	fingerprintMemory = 19 << 10 // KiB
)

// fingerprintSalt is fixed, so that every process derives the same
// fingerprint from the same configuration.
var fingerprintSalt = []byte("productstream configuration fingerprint v1")

// Fingerprint identifies the configuration in force: the first 12 hex
// digits of an Argon2id key derived from c with every default applied and
// every reference expanded, secrets included, so that two processes show
// the same fingerprint exactly when they run the same configuration. It
// reveals none of the values; because it depends on them, the derivation
// is deliberately slow (fingerprintTime, fingerprintMemory), so that the
// fingerprint cannot serve to try guesses at a weak secret at any useful
// speed. Serve it where the configuration's readers are trusted all the
// same (the operations listener).
func (c *Config) Fingerprint() string {
	data, err := yaml.Marshal(c)
	if err != nil {
		// Every type of Config marshals; this would be a programming
		// error, and a fingerprint that matches nothing says so.
		return "unmarshalable"
	}
	key := argon2.IDKey(data, fingerprintSalt, fingerprintTime, fingerprintMemory, 1, fingerprintLen/2)
	return hex.EncodeToString(key)
}
