package config

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// Console configures the operator console (package console): a read-mostly
// web page and JSON API about deliveries, products, the processor, dead
// letters and sinks.
type Console struct {
	// Listen is its host:port. Empty: no console (dev serves one on
	// DefaultDevConsoleListen). On any address but loopback at least one
	// user or token is required.
	Listen string `yaml:"listen"`
	// Actions enables what changes something (a signed test delivery, a
	// dead letter replay, a sink rebuild), each for the act scope only.
	// Default false: the console only reads.
	Actions bool `yaml:"actions"`
	// Users sign in to the page with HTTP basic auth.
	Users []ConsoleUser `yaml:"users"`
	// Tokens are bearer tokens for the JSON API.
	Tokens []ConsoleToken `yaml:"tokens"`
	// Scrape lists the /metrics URLs of the other productstream processes
	// (ingest, process, sink replicas) whose counters the console shows.
	// The console's own process is always included.
	Scrape []string `yaml:"scrape"`
	// TimelineWindow is how far back a product timeline reads by default
	// (default 24h).
	TimelineWindow time.Duration `yaml:"timeline_window"`
}

// ConsoleUser is one basic-auth user of the console.
type ConsoleUser struct {
	Name string `yaml:"name"`
	// PasswordHash is a bcrypt hash (`productstream hash-password` prints
	// one); the password itself is never configured.
	PasswordHash string `yaml:"password_hash"`
	// Scopes are what the user may do: view, payloads, act.
	Scopes []string `yaml:"scopes"`
}

// ConsoleToken is one bearer token of the console's JSON API.
type ConsoleToken struct {
	Name string `yaml:"name"`
	// Token is the secret itself, at least MinConsoleTokenLength
	// characters; give it as ${ENV}.
	Token  string   `yaml:"token"`
	Scopes []string `yaml:"scopes"`
}

// The console's scopes. View shows counts, reasons, times, ids and
// positions; payloads adds product fields and JSON; act allows the actions
// (when console.actions is true).
const (
	ScopeView     = "view"
	ScopePayloads = "payloads"
	ScopeAct      = "act"
)

// ConsoleScopes are the scopes a user or token may hold.
var ConsoleScopes = []string{ScopeView, ScopePayloads, ScopeAct}

// MinConsoleTokenLength is the shortest bearer token accepted: 32
// characters of a random token carry far more than 128 bits.
const MinConsoleTokenLength = 32

// Loopback says whether addr (host:port) binds to loopback only: an empty
// host or an unspecified address binds every interface.
func Loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// validate checks the console section.
func (c *Console) validate(errs *fieldErrors) {
	bad := errs.add
	if c.Listen != "" {
		if _, _, err := net.SplitHostPort(c.Listen); err != nil {
			bad("console.listen", "%q is not host:port", c.Listen)
		} else if !Loopback(c.Listen) && len(c.Users) == 0 && len(c.Tokens) == 0 {
			bad("console.listen", "%q is not a loopback address: configure console.users or console.tokens, the console does not serve without authentication there", c.Listen)
		}
	}
	if c.TimelineWindow <= 0 {
		bad("console.timeline_window", "must be positive")
	}
	names := map[string]bool{}
	name := func(f, n string) {
		switch {
		case !namePattern.MatchString(n):
			bad(f+".name", "%q must be letters, digits, '.', '_' or '-'", n)
		case names[n]:
			bad(f+".name", "%q is used twice (users and tokens share names)", n)
		}
		names[n] = true
	}
	for i, u := range c.Users {
		f := fmt.Sprintf("console.users[%d]", i)
		name(f, u.Name)
		if _, err := bcrypt.Cost([]byte(u.PasswordHash)); err != nil {
			bad(f+".password_hash", "is not a bcrypt hash (productstream hash-password prints one)")
		}
		validScopes(f, u.Scopes, errs)
	}
	for i, t := range c.Tokens {
		f := fmt.Sprintf("console.tokens[%d]", i)
		name(f, t.Name)
		if len(t.Token) < MinConsoleTokenLength {
			bad(f+".token", "must be at least %d characters", MinConsoleTokenLength)
		}
		validScopes(f, t.Scopes, errs)
	}
	for i, s := range c.Scrape {
		u, err := url.Parse(s)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad(fmt.Sprintf("console.scrape[%d]", i), "%q is not an http(s) URL", s)
		}
	}
}

// validScopes checks one user's or token's scopes.
func validScopes(f string, scopes []string, errs *fieldErrors) {
	if len(scopes) == 0 {
		errs.add(f+".scopes", "must name at least one of %s", strings.Join(ConsoleScopes, ", "))
	}
	for _, s := range scopes {
		if !slices.Contains(ConsoleScopes, s) {
			errs.add(f+".scopes", "%q is not one of %s", s, strings.Join(ConsoleScopes, ", "))
		}
	}
}
