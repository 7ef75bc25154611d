// Package registry builds the schema registry client of every productstream
// role and tool from the configuration's schema_registry section (the URL,
// TLS, basic or bearer authentication), and explains the failures of its
// security, which retrying does not fix.
package registry

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/sr"

	"github.com/productstream/productstream/config"
)

// Connection is how productstream reaches the schema registry. Every
// registry client of the roles and tools is made by its NewClient.
type Connection struct {
	url  string
	cfg  config.Registry // security only, for messages
	opts []sr.ClientOpt  // TLS and authentication
}

// Connect is the Connection the configuration's schema_registry section
// describes, which Validate has checked. It reads the TLS files now, so
// one that does not load is a *config.FieldError at start.
func Connect(r config.Registry) (Connection, error) {
	c := Connection{url: r.URL, cfg: r}
	c.cfg.URL = ""
	if r.TLS != (config.TLS{}) {
		t, err := r.TLS.ClientConfig("schema_registry.tls")
		if err != nil {
			return Connection{}, err
		}
		c.opts = append(c.opts, sr.DialTLSConfig(t))
	}
	switch {
	case r.BasicAuth != nil:
		c.opts = append(c.opts, sr.BasicAuth(r.BasicAuth.Username, r.BasicAuth.Password))
	case r.BearerToken != "":
		c.opts = append(c.opts, sr.BearerToken(r.BearerToken))
	case r.BearerTokenFile != "":
		path := r.BearerTokenFile
		c.opts = append(c.opts, sr.PreReq(func(req *http.Request) error {
			token, err := readTokenFile(path)
			if err != nil {
				return err
			}
			req.Header.Set("Authorization", "Bearer "+token)
			return nil
		}))
	}
	return c, nil
}

// Plain is a Connection to the registry at url without TLS settings or
// credentials: the embedded registry's.
func Plain(url string) Connection { return Connection{url: url} }

// URL is the registry's base URL.
func (c Connection) URL() string { return c.url }

// WithURL is c to another URL, with the same security: for a tool's
// --registry flag.
func (c Connection) WithURL(url string) Connection {
	c.url = url
	return c
}

// NewClient is a registry client on c.
func (c Connection) NewClient(opts ...sr.ClientOpt) (*sr.Client, error) {
	cl, err := sr.NewClient(append(append([]sr.ClientOpt{sr.URLs(c.url)}, slices.Clip(c.opts)...), opts...)...)
	if err != nil {
		return nil, fmt.Errorf("registry client: %w", err)
	}
	return cl, nil
}

// TokenFileError is a bearer token file that could not be read.
type TokenFileError struct {
	Path string
	Err  error
}

func (e *TokenFileError) Error() string {
	return "reading schema_registry.bearer_token_file " + e.Path + ": " + e.Err.Error()
}
func (e *TokenFileError) Unwrap() error { return e.Err }

// readTokenFile reads a bearer token afresh, without surrounding white
// space.
func readTokenFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", &TokenFileError{Path: path, Err: err}
	}
	token := strings.TrimSpace(string(b))
	if token == "" {
		return "", &TokenFileError{Path: path, Err: errors.New("the file is empty")}
	}
	return token, nil
}

// SecurityError is a request to the registry that schema_registry's
// security settings cannot make as configured: credentials it refuses or
// misses, a certificate that is not trusted, TLS on one side only.
// Retrying does not help, so the roles stop at start with it. Diagnose
// returns it.
type SecurityError struct {
	// Field is the configuration key to look at, such as
	// "schema_registry.basic_auth".
	Field string
	// Msg says what is wrong, naming the user or the CA file; never a
	// password or a token.
	Msg string
	// Err is what the registry or the TLS handshake said.
	Err error
}

func (e *SecurityError) Error() string { return "schema registry: " + e.Msg + ": " + e.Err.Error() }
func (e *SecurityError) Unwrap() error { return e.Err }

// checkTimeout bounds Check's request.
const checkTimeout = 15 * time.Second

// Check makes one request to the registry (it lists the subjects) and
// returns the *SecurityError that a failure stands for; nil when it
// answers, or fails for another reason (a registry that is not up yet).
func (c Connection) Check(ctx context.Context) error {
	cl, err := c.NewClient()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	_, err = cl.Subjects(ctx)
	return c.Diagnose(err)
}

// Diagnose returns the *SecurityError that err, from a client made by c,
// is the symptom of, or nil when err is no security problem.
func (c Connection) Diagnose(err error) error {
	if err == nil {
		return nil
	}
	if se, ok := errors.AsType[*SecurityError](err); ok {
		return se
	}
	if te, ok := errors.AsType[*TokenFileError](err); ok {
		return &SecurityError{Field: "schema_registry.bearer_token_file", Msg: "no bearer token", Err: te}
	}
	r := c.cfg
	if re, ok := errors.AsType[*sr.ResponseError](err); ok {
		switch status := fmt.Sprintf("%d %s from %s", re.StatusCode, http.StatusText(re.StatusCode), c.url); {
		case re.StatusCode == http.StatusUnauthorized && c.credentials() == "":
			return &SecurityError{Field: "schema_registry.basic_auth",
				Msg: status + ": it requires credentials: set schema_registry.basic_auth, bearer_token or bearer_token_file", Err: err}
		case re.StatusCode == http.StatusUnauthorized:
			return &SecurityError{Field: c.credentialsField(), Msg: status + ": it refused the credentials of " + c.credentials(), Err: err}
		case re.StatusCode == http.StatusForbidden:
			return &SecurityError{Field: c.credentialsField(), Msg: status + ": the credentials of " + cmp.Or(c.credentials(), "no one") + " may not do this", Err: err}
		case re.StatusCode == http.StatusBadRequest && strings.Contains(string(re.Raw), "HTTPS server"):
			return &SecurityError{Field: "schema_registry.url", Msg: "the registry at " + c.url + " answers https only, but schema_registry.url is http", Err: err}
		}
		return nil
	}
	if ua, ok := errors.AsType[x509.UnknownAuthorityError](err); ok {
		roots := "the system roots (set schema_registry.tls.ca_file to the CA that signed it)"
		if r.TLS.CAFile != "" {
			roots = "the CA file " + r.TLS.CAFile + " (schema_registry.tls.ca_file)"
		}
		subject := "the registry's certificate"
		if ua.Cert != nil {
			subject = fmt.Sprintf("the registry's certificate (issued by %q)", ua.Cert.Issuer.String())
		}
		return &SecurityError{Field: "schema_registry.tls.ca_file", Msg: "TLS: " + subject + " is not signed by a CA in " + roots, Err: err}
	}
	if he, ok := errors.AsType[x509.HostnameError](err); ok {
		return &SecurityError{Field: "schema_registry.tls.server_name",
			Msg: fmt.Sprintf("TLS: the registry's certificate is not valid for %q (set schema_registry.tls.server_name to a name it holds)", he.Host), Err: err}
	}
	if _, ok := errors.AsType[x509.CertificateInvalidError](err); ok {
		return &SecurityError{Field: "schema_registry.tls.ca_file", Msg: "TLS: the registry's certificate is not valid", Err: err}
	}
	if _, ok := errors.AsType[tls.RecordHeaderError](err); ok {
		return &SecurityError{Field: "schema_registry.url", Msg: "the registry at " + c.url + " does not answer TLS, but schema_registry.url is https", Err: err}
	}
	return nil
}

// credentials names what c authenticates with, for messages; "" when
// nothing.
func (c Connection) credentials() string {
	switch r := c.cfg; {
	case r.BasicAuth != nil:
		return fmt.Sprintf("schema_registry.basic_auth (user %q)", r.BasicAuth.Username)
	case r.BearerToken != "":
		return "schema_registry.bearer_token"
	case r.BearerTokenFile != "":
		return "schema_registry.bearer_token_file " + r.BearerTokenFile
	}
	return ""
}

// credentialsField is the key of c's credentials.
func (c Connection) credentialsField() string {
	switch r := c.cfg; {
	case r.BearerToken != "":
		return "schema_registry.bearer_token"
	case r.BearerTokenFile != "":
		return "schema_registry.bearer_token_file"
	}
	return "schema_registry.basic_auth"
}
