package deliveries

import (
	"slices"
	"time"

	"github.com/productstream/productstream/ingest"
)

// SourceSummary is one source's deliveries over a feed's window.
type SourceSummary struct {
	// Name is the source's name; "" for the requests whose route named
	// no configured source.
	Name string `json:"name"`
	// Accepted, Duplicate and Refused count the window's deliveries by
	// outcome.
	Accepted  int `json:"accepted"`
	Duplicate int `json:"duplicate"`
	Refused   int `json:"refused"`
	// RefusedBy counts the window's refusals by reason.
	RefusedBy map[ingest.Reason]int `json:"refused_by"`
	// LastAccepted is the time of the latest accepted delivery the feed
	// read; zero when none.
	LastAccepted time.Time `json:"last_accepted"`
	// LastRefused and LastReason are the time and reason of the latest
	// refusal the feed read; zero when none.
	LastRefused time.Time     `json:"last_refused"`
	LastReason  ingest.Reason `json:"last_reason"`
	// Minutes are the window's minutes, oldest first, the last being the
	// current one.
	Minutes []Minute `json:"minutes"`
}

// Minute counts one source's deliveries in one minute.
type Minute struct {
	Start    time.Time `json:"start"`
	Accepted int       `json:"accepted"`
	Refused  int       `json:"refused"`
}

// sourceStats are the counts of one source.
type sourceStats struct {
	minutes      []minute // by Unix minute, modulo its length
	lastAccepted time.Time
	lastRefused  time.Time
	lastReason   ingest.Reason
	latest       time.Time // the latest record's time
}

// minute counts one source's records of one Unix minute.
type minute struct {
	at                           int64 // the Unix minute counted
	accepted, duplicate, refused int
	reasons                      map[ingest.Reason]int
}

// otherReason counts the reasons past maxReasons in one minute.
const otherReason ingest.Reason = "(other)"

// unixMinute is the minute t falls in, counted from the Unix epoch.
func unixMinute(t time.Time) int64 { return t.Unix() / 60 }

// count adds r to its source's counts: to its minute when that is in the
// window (or the minute after the current one: a clock slightly ahead),
// and to the latest times when r is not further ahead. It reports false
// when the source could not be tracked.
func (f *Feed) count(r Record, now time.Time) bool {
	if r.Time.After(now.Add(time.Minute)) {
		return true // a clock far ahead: kept, not counted
	}
	s := f.sources[r.Source]
	if s == nil {
		if len(f.sources) >= maxSources {
			f.prune(now)
		}
		if len(f.sources) >= maxSources {
			return false
		}
		s = &sourceStats{minutes: make([]minute, f.spare)}
		f.sources[r.Source] = s
	}
	if r.Time.After(s.latest) {
		s.latest = r.Time
	}
	switch {
	case r.Outcome == ingest.Accepted && r.Time.After(s.lastAccepted):
		s.lastAccepted = r.Time
	case r.Outcome == ingest.Refused && r.Time.After(s.lastRefused):
		s.lastRefused, s.lastReason = r.Time, r.Reason
	}
	at, current := unixMinute(r.Time), unixMinute(now)
	if at <= current-int64(f.spare-1) {
		return true // before the window
	}
	m := &s.minutes[at%int64(f.spare)]
	if m.at != at {
		*m = minute{at: at}
	}
	switch r.Outcome {
	case ingest.Accepted:
		m.accepted++
	case ingest.Duplicate:
		m.duplicate++
	case ingest.Refused:
		m.refused++
		reason := r.Reason
		if _, ok := m.reasons[reason]; !ok && len(m.reasons) >= maxReasons {
			reason = otherReason
		}
		if m.reasons == nil {
			m.reasons = map[ingest.Reason]int{}
		}
		m.reasons[reason]++
	}
	return true
}

// prune forgets the sources with no record in the window.
func (f *Feed) prune(now time.Time) {
	since := now.Add(-f.cfg.window)
	for name, s := range f.sources {
		if s.latest.Before(since) {
			delete(f.sources, name)
		}
	}
}

// Sources summarizes the window by source, sorted by name: every source
// the feed counted, and every source of known (the configured ones) even
// with nothing to count.
func (f *Feed) Sources(known []string) []SourceSummary {
	n := f.spare - 1
	current := unixMinute(f.cfg.now())
	f.mu.RLock()
	defer f.mu.RUnlock()
	names := slices.Clone(known)
	for name := range f.sources {
		names = append(names, name)
	}
	slices.Sort(names)
	names = slices.Compact(names)
	out := make([]SourceSummary, 0, len(names))
	for _, name := range names {
		sum := SourceSummary{Name: name, RefusedBy: map[ingest.Reason]int{}, Minutes: make([]Minute, n)}
		s := f.sources[name]
		if s != nil {
			sum.LastAccepted, sum.LastRefused, sum.LastReason = s.lastAccepted, s.lastRefused, s.lastReason
		}
		for i := range n {
			at := current - int64(n-1-i)
			sum.Minutes[i].Start = time.Unix(at*60, 0).UTC()
			if s == nil {
				continue
			}
			m := &s.minutes[at%int64(f.spare)]
			if m.at != at {
				continue
			}
			sum.Minutes[i].Accepted, sum.Minutes[i].Refused = m.accepted, m.refused
			sum.Accepted += m.accepted
			sum.Duplicate += m.duplicate
			sum.Refused += m.refused
			for reason, c := range m.reasons {
				sum.RefusedBy[reason] += c
			}
		}
		out = append(out, sum)
	}
	return out
}
