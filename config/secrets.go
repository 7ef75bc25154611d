package config

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

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

// fingerprintLen is how many hex digits of the SHA-256 Fingerprint keeps.
const fingerprintLen = 12

// Fingerprint identifies the configuration in force: the first 12 hex
// digits of the SHA-256 of c with every default applied and every
// reference expanded, secrets included, so that two processes show the
// same fingerprint exactly when they run the same configuration. It
// reveals none of the values, but it is a hash of them: a guess at a weak
// secret can be checked against it, so serve it where the configuration's
// readers are trusted (the operations listener).
func (c *Config) Fingerprint() string {
	data, err := yaml.Marshal(c)
	if err != nil {
		// Every type of Config marshals; this would be a programming
		// error, and a fingerprint that matches nothing says so.
		return "unmarshalable"
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])[:fingerprintLen]
}
