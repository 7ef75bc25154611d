package ingest

import (
	"net/netip"
	"sync"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
	"golang.org/x/time/rate"
)

// budgetClients bounds how many client addresses a refusal budget tracks.
// An address it forgets starts again with a full bucket.
const budgetClients = 65_536

// refusalBudget charges each client address for the requests the edge
// refused before their signature was verified (an unknown source, a
// missing, malformed or wrong signature, a wrong credential, a body over
// the limit). An address whose bucket is empty is answered 429 before its
// body is read, so forgeries cost at most the budget's rate in reads and
// verifications, and they never spend a source's own rate limit, which
// only verified deliveries are charged. Safe for concurrent use.
type refusalBudget struct {
	perSecond rate.Limit
	burst     int

	mu      sync.Mutex
	buckets *simplelru.LRU[netip.Prefix, *rate.Limiter]
}

func newRefusalBudget(perSecond float64, burst int) *refusalBudget {
	buckets, err := simplelru.NewLRU[netip.Prefix, *rate.Limiter](budgetClients, nil)
	if err != nil {
		panic(err) // only for a non-positive size
	}
	return &refusalBudget{perSecond: rate.Limit(perSecond), burst: max(1, burst), buckets: buckets}
}

// exhausted reports whether client has no refusals left at now. It runs
// on every request, so it only peeks: a lookup does not reorder the LRU,
// only a charge does.
func (b *refusalBudget) exhausted(client netip.Prefix, now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	lim, ok := b.buckets.Peek(client)
	return ok && lim.TokensAt(now) < 1
}

// charge spends one refusal of client's at now.
func (b *refusalBudget) charge(client netip.Prefix, now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	lim, ok := b.buckets.Get(client)
	if !ok {
		lim = rate.NewLimiter(b.perSecond, b.burst)
		b.buckets.Add(client, lim)
	}
	lim.AllowN(now, 1)
}

// clientPrefix is the unit a budget charges: the address itself for IPv4,
// its /64 for IPv6 (one subscriber's network, which a single host can
// rotate through at will). ok is false when ip is not an address.
func clientPrefix(ip string) (netip.Prefix, bool) {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return netip.Prefix{}, false
	}
	a = a.WithZone("").Unmap()
	bits := 32
	if a.Is6() {
		bits = 64
	}
	p, err := a.Prefix(bits)
	return p, err == nil
}
