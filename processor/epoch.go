package processor

import (
	"context"
	"errors"
	"fmt"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// EpochShift places the version epoch above the offset in a version:
// Version(epoch, offset) = epoch<<EpochShift | offset. Offsets stay below
// 2^48 (a partition taking a million changes a second for eight years),
// and epochs below MaxEpoch, so a version is a positive int64.
const EpochShift = 48

// MaxEpoch is the highest version epoch.
const MaxEpoch = 1<<(63-EpochShift) - 1

// Version is the version of the change read at offset under epoch: what
// states, updates and tombstones carry, and what every sink compares. A
// higher epoch orders after every version of a lower one, so after the
// changes topic is re-created (its offsets start again at 0) raising the
// epoch keeps versions growing.
func Version(epoch int, offset int64) int64 { return int64(epoch)<<EpochShift | offset }

// ErrChangesLost surfaces from Run when a partition's restored state holds
// a version at or past the end of that partition of changes under the
// configured epoch: the changes topic was re-created or lost data (its
// offsets went back), or the epoch was lowered. Applying changes then would
// skip the new ones as already applied.
var ErrChangesLost = errors.New("restored state is ahead of the changes topic")

// checkVersions returns ErrChangesLost if a restored state of parts is at
// or past the end of its partition of changes, under the epoch. early are
// the end offsets of changes listed while the restore read (nil: none):
// ends only grow, so states below them are below the current ones, and
// only a state at or past them has the ends listed again before it counts.
func (p *Processor) checkVersions(ctx context.Context, r *restored, early kadm.ListedOffsets) error {
	if early != nil && p.versionsBelow(r, early) == nil {
		return nil
	}
	ends, err := p.changesEnds(ctx)
	if err != nil {
		return err
	}
	return p.versionsBelow(r, ends)
}

// changesEnds lists the end offsets of changes.
func (p *Processor) changesEnds(ctx context.Context) (kadm.ListedOffsets, error) {
	cl, err := kgo.NewClient(p.clientOptions()...)
	if err != nil {
		return nil, fmt.Errorf("kafka client: %w", err)
	}
	defer cl.Close()
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, p.cfg.Topics.Changes)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("end offsets of %s: %w", p.cfg.Topics.Changes, err)
	}
	return ends, nil
}

// versionsBelow returns ErrChangesLost if a restored state is at or past
// ends, under the epoch.
func (p *Processor) versionsBelow(r *restored, ends kadm.ListedOffsets) error {
	for part, states := range r.states {
		end, ok := ends.Lookup(p.cfg.Topics.Changes, part)
		if !ok {
			return fmt.Errorf("%w: %s has no partition %d", ErrChangesLost, p.cfg.Topics.Changes, part)
		}
		limit := Version(p.cfg.VersionEpoch, end.Offset)
		versions := func(yield func(string, int64) bool) {
			for key, e := range states {
				if !yield(key, e.version) {
					return
				}
			}
			for key, s := range r.stored[part] {
				if !yield(key, s.version) {
					return
				}
			}
		}
		for key, version := range versions {
			if version >= limit {
				return fmt.Errorf("%w: key %q of partition %d is at version %d, but %s ends at offset %d (version %d under epoch %d); "+
					"if changes was re-created, raise processor.version_epoch and rebuild every sink (docs/processor.md)",
					ErrChangesLost, key[1:], part, version, p.cfg.Topics.Changes, end.Offset, limit, p.cfg.VersionEpoch)
			}
		}
	}
	return nil
}
