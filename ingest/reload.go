package ingest

import (
	"time"

	"github.com/hashicorp/golang-lru/v2/expirable"
	"golang.org/x/time/rate"
)

// sourceSet is what the edge serves at one time: the sources, by name and
// by provider id, and the state it keeps per source. A request loads the
// set once, when it arrives, and uses that set to its end, so that a
// reload (SetSources) never mixes two configurations in one request.
type sourceSet struct {
	byName     map[string]*Source
	byProvider map[string]map[string]*Source // provider -> id -> source
	limits     map[string]*rate.Limiter      // source name -> limiter
	seen       map[string]*expirable.LRU[string, int]
	replays    map[string]*expirable.LRU[string, int]
}

// SetSources replaces the sources the edge serves, with their secrets, API
// keys, basic auth and rate limits, in one step: a request that has
// arrived finishes with the sources it arrived under, every request that
// arrives after SetSources returns uses the new ones, and no request is
// refused for arriving in between. sources are built by NewSources, as
// New's are. It is safe to call while requests are served, and from
// several goroutines.
//
// What the edge remembers of a source carries over to the new source of
// the same name, so that a reload neither grants a fresh burst nor lets a
// delivery be replayed: its rate limiter when its rate_limit is unchanged,
// and its memory of accepted deliveries and replays (kept for the new
// window when that changed).
func (s *Server) SetSources(sources []*Source) {
	s.swap.Lock()
	defer s.swap.Unlock()
	s.sources.Store(newSourceSet(sources, s.sources.Load()))
}

// newSourceSet indexes sources, carrying over prev's state of each source
// of the same name (prev is nil at start).
func newSourceSet(sources []*Source, prev *sourceSet) *sourceSet {
	set := &sourceSet{
		byName:     map[string]*Source{},
		byProvider: map[string]map[string]*Source{},
		limits:     map[string]*rate.Limiter{},
		seen:       map[string]*expirable.LRU[string, int]{},
		replays:    map[string]*expirable.LRU[string, int]{},
	}
	if prev == nil {
		prev = &sourceSet{}
	}
	for _, src := range sources {
		old := prev.byName[src.Name]
		set.byName[src.Name] = src
		if set.byProvider[src.Provider] == nil {
			set.byProvider[src.Provider] = map[string]*Source{}
		}
		set.byProvider[src.Provider][src.ID] = src
		if rl := src.RateLimit; rl.PerSecond > 0 {
			if lim := prev.limits[src.Name]; lim != nil && old.RateLimit == rl {
				set.limits[src.Name] = lim
			} else {
				set.limits[src.Name] = rate.NewLimiter(rate.Limit(rl.PerSecond), rl.Burst)
			}
		}
		// A delivery without an identity (Verified.Identity) is never
		// looked up or remembered, so a source whose deliveries have none
		// keeps this memory empty.
		if src.DedupeWindow > 0 {
			set.seen[src.Name] = memory(prev.seen[src.Name], dedupeWindow(old), src.DedupeWindow)
		}
		// Replay memory is not a convenience like dedupe_window: it is on
		// for every source whose signatures bind a time.
		if window := replayWindow(src); window > 0 {
			set.replays[src.Name] = memory(prev.replays[src.Name], replayWindow(old), window)
		}
	}
	return set
}

// memory is a memory of deliveries kept for window: old itself when it
// was kept for the same window, else a new one holding old's entries
// (each then kept for the new window from now).
func memory(old *expirable.LRU[string, int], oldWindow, window time.Duration) *expirable.LRU[string, int] {
	if old != nil && oldWindow == window {
		return old
	}
	m := expirable.NewLRU[string, int](dedupeCapacity, nil, window)
	if old != nil {
		for _, k := range old.Keys() { // oldest first, as they were added
			if v, ok := old.Peek(k); ok {
				m.Add(k, v)
			}
		}
	}
	return m
}

// dedupeWindow is src's dedupe_window; 0 for no source.
func dedupeWindow(src *Source) time.Duration {
	if src == nil {
		return 0
	}
	return src.DedupeWindow
}

// replayWindow is how long src's signatures stay acceptable (ReplayGuard);
// 0 for no source, or one whose signatures bind no time.
func replayWindow(src *Source) time.Duration {
	if src == nil {
		return 0
	}
	if g, ok := src.Adapter.(ReplayGuard); ok {
		return g.ReplayWindow()
	}
	return 0
}
