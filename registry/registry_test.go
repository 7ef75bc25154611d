package registry

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/sr/srfake"

	"github.com/productstream/productstream/config"
	"github.com/productstream/productstream/securitytest"
)

// securedRegistry serves an srfake registry over TLS, with a certificate
// ca signed for 127.0.0.1, to requests that carry the Authorization
// header want; 401 to any other.
func securedRegistry(t *testing.T, ca *securitytest.CA, want func(*http.Request) bool) string {
	t.Helper()
	reg := srfake.NewRegistry()
	t.Cleanup(reg.Close)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !want(r) {
			w.Header().Set("WWW-Authenticate", `Basic realm="registry"`)
			http.Error(w, `{"error_code":401,"message":"Unauthorized"}`, http.StatusUnauthorized)
			return
		}
		reg.Handler().ServeHTTP(w, r)
	}))
	srv.TLS = ca.ServerTLS(t, "127.0.0.1")
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv.URL
}

// Each way a secured registry connection fails is named by Check, with
// the key to fix and never the password; the right credentials over a
// trusted certificate list the subjects.
func TestCheckNamesEachRegistrySecurityFailure(t *testing.T) {
	ca := securitytest.NewCA(t, "productstream test CA")
	other := securitytest.NewCA(t, "another CA")
	url := securedRegistry(t, ca, func(r *http.Request) bool {
		u, p, ok := r.BasicAuth()
		return ok && u == "ps" && p == "registry-secret"
	})
	trusted := config.TLS{CAFile: ca.File}
	for _, tc := range []struct {
		name  string
		cfg   config.Registry
		field string // "" when it answers
		want  string
	}{
		{name: "right credentials", cfg: config.Registry{URL: url, TLS: trusted, BasicAuth: &config.Credentials{Username: "ps", Password: "registry-secret"}}},
		{
			name: "wrong password", cfg: config.Registry{URL: url, TLS: trusted, BasicAuth: &config.Credentials{Username: "ps", Password: "wrong-secret"}},
			field: "schema_registry.basic_auth",
			want:  "schema registry: 401 Unauthorized from " + url + `: it refused the credentials of schema_registry.basic_auth (user "ps"): `,
		},
		{
			name: "no credentials", cfg: config.Registry{URL: url, TLS: trusted},
			field: "schema_registry.basic_auth",
			want:  "schema registry: 401 Unauthorized from " + url + ": it requires credentials: set schema_registry.basic_auth, bearer_token or bearer_token_file: ",
		},
		{
			name: "a CA file that did not sign the certificate", cfg: config.Registry{URL: url, TLS: config.TLS{CAFile: other.File}},
			field: "schema_registry.tls.ca_file",
			want:  `schema registry: TLS: the registry's certificate (issued by "CN=productstream test CA") is not signed by a CA in the CA file ` + other.File + " (schema_registry.tls.ca_file): ",
		},
		{
			name: "the system roots", cfg: config.Registry{URL: url},
			field: "schema_registry.tls.ca_file",
			want:  `schema registry: TLS: the registry's certificate (issued by "CN=productstream test CA") is not signed by a CA in the system roots (set schema_registry.tls.ca_file to the CA that signed it): `,
		},
		{
			name: "http to the https port", cfg: config.Registry{URL: "http" + strings.TrimPrefix(url, "https")},
			field: "schema_registry.url",
			want:  "schema registry: the registry at http" + strings.TrimPrefix(url, "https") + " answers https only, but schema_registry.url is http: ",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Connect(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			err = c.Check(context.Background())
			if tc.field == "" {
				if err != nil {
					t.Fatalf("Check: %v", err)
				}
				return
			}
			var se *SecurityError
			if !errors.As(err, &se) {
				t.Fatalf("Check = %v, want a *SecurityError", err)
			}
			if se.Field != tc.field || !strings.HasPrefix(err.Error(), tc.want) {
				t.Errorf("Check = %q (field %s)\nwant  %q... (field %s)", err, se.Field, tc.want, tc.field)
			}
			if strings.Contains(err.Error(), "secret") {
				t.Errorf("the error shows a password: %q", err)
			}
		})
	}
}

// A bearer token file is read again for every request: once it holds the
// token the registry takes, requests pass, without a new client. A
// missing file is a *SecurityError naming the key.
func TestBearerTokenFileIsReadForEveryRequest(t *testing.T) {
	ca := securitytest.NewCA(t, "productstream test CA")
	url := securedRegistry(t, ca, func(r *http.Request) bool { return r.Header.Get("Authorization") == "Bearer renewed-token" })
	file := filepath.Join(t.TempDir(), "token")
	c, err := Connect(config.Registry{URL: url, TLS: config.TLS{CAFile: ca.File}, BearerTokenFile: file})
	if err != nil {
		t.Fatal(err)
	}
	cl, err := c.NewClient()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	_, err = cl.Subjects(ctx)
	var se *SecurityError
	if !errors.As(c.Diagnose(err), &se) || se.Field != "schema_registry.bearer_token_file" {
		t.Fatalf("missing token file: %v, want a *SecurityError of schema_registry.bearer_token_file", c.Diagnose(err))
	}
	for token, ok := range map[string]bool{"first-token": false, "renewed-token": true} {
		if err := os.WriteFile(file, []byte(token+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := cl.Subjects(ctx); (err == nil) != ok {
			t.Errorf("token %s: %v, want success %v", token, err, ok)
		}
	}
}
