package console

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/productstream/productstream/config"
)

// principal is who a request is from and what it may do.
type principal struct {
	Name   string   `json:"name"`
	Scopes []string `json:"scopes"`
}

func (p principal) can(scope string) bool { return slices.Contains(p.Scopes, scope) }

// anonymous is the principal of a console without users or tokens, which
// serves loopback only (config and New refuse any other address): the
// machine's own user, who may see and do everything.
func anonymous() principal {
	return principal{Name: "anonymous", Scopes: []string{config.ScopeView, config.ScopePayloads, config.ScopeAct}}
}

// authenticator checks basic-auth users (bcrypt) and bearer tokens.
type authenticator struct {
	users  map[string]config.ConsoleUser
	tokens []token
	// dummy is a bcrypt hash compared against when a user name is
	// unknown, so that answering takes as long for any name.
	dummy []byte
	// verified remembers credentials bcrypt accepted, by their SHA-256,
	// for verifiedFor: bcrypt is slow on purpose, and a page polls.
	mu       sync.Mutex
	verified map[[32]byte]verifiedEntry
	now      func() time.Time
}

type token struct {
	name   string
	sum    [32]byte
	scopes []string
}

type verifiedEntry struct {
	p     principal
	until time.Time
}

// verifiedFor is how long a verified password is remembered.
const verifiedFor = 5 * time.Minute

// maxVerified bounds that memory; when full it is emptied.
const maxVerified = 1024

func newAuthenticator(c config.Console, now func() time.Time) *authenticator {
	a := &authenticator{users: map[string]config.ConsoleUser{}, verified: map[[32]byte]verifiedEntry{}, now: now}
	for _, u := range c.Users {
		a.users[u.Name] = u
	}
	for _, t := range c.Tokens {
		a.tokens = append(a.tokens, token{name: t.Name, sum: sha256.Sum256([]byte(t.Token)), scopes: t.Scopes})
	}
	a.dummy, _ = bcrypt.GenerateFromPassword([]byte("not a password of anyone"), bcrypt.MinCost)
	return a
}

// open says the console has no users or tokens: anyone on loopback is the
// anonymous principal.
func (a *authenticator) open() bool { return len(a.users) == 0 && len(a.tokens) == 0 }

// authenticate finds the principal of r: ok false when its credentials
// are missing or wrong.
func (a *authenticator) authenticate(r *http.Request) (principal, bool) {
	if a.open() {
		return anonymous(), true
	}
	if h := r.Header.Get("Authorization"); len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return a.bearer(strings.TrimSpace(h[7:]))
	}
	user, pass, ok := r.BasicAuth()
	if !ok {
		return principal{}, false
	}
	return a.basic(user, pass)
}

// bearer checks a token against every configured one, in constant time.
func (a *authenticator) bearer(t string) (principal, bool) {
	sum := sha256.Sum256([]byte(t))
	var found *token
	for i := range a.tokens {
		if subtle.ConstantTimeCompare(sum[:], a.tokens[i].sum[:]) == 1 {
			found = &a.tokens[i]
		}
	}
	if found == nil {
		return principal{}, false
	}
	return principal{Name: found.name, Scopes: found.scopes}, true
}

// basic checks a user's password with bcrypt, remembering a success.
func (a *authenticator) basic(user, pass string) (principal, bool) {
	key := sha256.Sum256([]byte(user + "\x00" + pass))
	now := a.now()
	a.mu.Lock()
	e, hit := a.verified[key]
	a.mu.Unlock()
	if hit && now.Before(e.until) {
		return e.p, true
	}
	u, known := a.users[user]
	hash := a.dummy
	if known {
		hash = []byte(u.PasswordHash)
	}
	if bcrypt.CompareHashAndPassword(hash, []byte(pass)) != nil || !known {
		return principal{}, false
	}
	p := principal{Name: u.Name, Scopes: u.Scopes}
	a.mu.Lock()
	if len(a.verified) >= maxVerified {
		clear(a.verified)
	}
	a.verified[key] = verifiedEntry{p: p, until: now.Add(verifiedFor)}
	a.mu.Unlock()
	return p, true
}
