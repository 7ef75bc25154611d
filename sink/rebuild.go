package sink

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/productstream/productstream/kafka"
)

// ErrNoGenerations surfaces from Rebuild for a sink that keeps no
// generations (a webhook).
var ErrNoGenerations = errors.New("this sink cannot be rebuilt: it keeps no generations")

// Progress is reported while a rebuild reads the source topic.
type Progress struct {
	Generation int
	Read       int64 // records read so far
	Total      int64 // records to read (the partitions' end minus start offsets)
	Elapsed    time.Duration
}

// Rebuild builds a new generation of r's sink from the start of the source
// topic while the running writers keep writing the live one, then switches
// readers to it. It returns the new generation's number.
//
// How it stays consistent: Begin marks the generation as being built, and
// every runner writes each batch to it too from its next look at the
// generations (at most GenerationsEvery later). Rebuild waits out two of
// those periods before it takes the topic's end offsets, so every record
// written to the topic after them reaches the new generation through a
// runner, and every record before them through the rebuild. The version
// guard makes the interleaving of the two writers safe. The old generation
// is dropped by the running sinks a grace period after the switch.
func (r *Runner) Rebuild(ctx context.Context, progress func(Progress)) (int, error) {
	gens, ok := r.cfg.Sink.(Generations)
	if !ok {
		return 0, ErrNoGenerations
	}
	live, building, err := gens.Generations(ctx)
	if err != nil {
		return 0, fmt.Errorf("read generations: %w", err)
	}
	n := max(live, building) + 1
	if building != 0 {
		n = building // an interrupted rebuild is taken up again
	}
	if err := gens.Begin(ctx, n); err != nil {
		return 0, fmt.Errorf("begin generation %d: %w", n, err)
	}
	r.log.Info("rebuild: generation begun; waiting for the running writers to see it", "generation", n, "live", live)
	select {
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-time.After(2*r.cfg.GenerationsEvery + time.Second):
	}
	target := gens.At(n)
	total, err := r.topicRecords(ctx)
	if err != nil {
		return 0, err
	}
	start := time.Now()
	var read int64
	var batch []*kgo.Record
	var size int64
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		recs, dead := r.decode(ctx, batch)
		for _, d := range dead {
			r.log.Warn("rebuild: record not decodable; skipped", "key", truncate(string(d.rec.Key), 200), "reason", d.reason)
		}
		for attempt := 0; len(recs) > 0; attempt++ {
			res, err := target.Write(ctx, recs)
			if err != nil {
				if werr := r.retry(ctx, attempt, recs, err); werr != nil {
					return werr
				}
				continue
			}
			var again []Record
			for i, x := range res {
				if x.Outcome == Failed && !IsPermanent(x.Err) {
					again = append(again, recs[i])
				}
			}
			recs = again
		}
		batch, size = batch[:0], 0
		return nil
	}
	res, err := kafka.ReadToEnd(ctx, r.cfg.Client, []string{r.cfg.Topic}, func(kr *kgo.Record) error {
		batch = append(batch, kr)
		size += int64(len(kr.Key) + len(kr.Value))
		read++
		if len(batch) >= r.cfg.MaxRecords || size >= r.cfg.MaxBytes {
			return flush()
		}
		return nil
	}, kafka.WithIdleEnd(5*time.Second), kafka.WithProgress(time.Second, func(read int64) {
		if progress != nil {
			progress(Progress{Generation: n, Read: read, Total: total, Elapsed: time.Since(start)})
		}
	}))
	if err == nil {
		err = flush()
	}
	if err != nil {
		return 0, fmt.Errorf("rebuild generation %d: %w", n, err)
	}
	if progress != nil {
		progress(Progress{Generation: n, Read: res.Records, Total: total, Elapsed: time.Since(start)})
	}
	if err := gens.Switch(ctx, n); err != nil {
		return 0, fmt.Errorf("switch to generation %d: %w", n, err)
	}
	r.log.Info("rebuild: switched", "generation", n, "records", read, "took", time.Since(start).Round(time.Millisecond))
	return n, nil
}

// topicRecords is the number of offsets between the start and the end of
// every partition of the source topic: what a full read covers at most.
func (r *Runner) topicRecords(ctx context.Context) (int64, error) {
	cl, err := kgo.NewClient(r.cfg.Client...)
	if err != nil {
		return 0, fmt.Errorf("kafka client: %w", err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	starts, err := adm.ListStartOffsets(ctx, r.cfg.Topic)
	if err == nil {
		err = starts.Error()
	}
	if err != nil {
		return 0, fmt.Errorf("start offsets of %s: %w", r.cfg.Topic, err)
	}
	ends, err := adm.ListEndOffsets(ctx, r.cfg.Topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return 0, fmt.Errorf("end offsets of %s: %w", r.cfg.Topic, err)
	}
	var total int64
	ends.Each(func(o kadm.ListedOffset) {
		if s, ok := starts.Lookup(o.Topic, o.Partition); ok {
			total += o.Offset - s.Offset
		}
	})
	return total, nil
}

// DropGeneration drops generation n of r's sink, which must not be the
// live one or the one being built.
func (r *Runner) DropGeneration(ctx context.Context, n int) error {
	gens, ok := r.cfg.Sink.(Generations)
	if !ok {
		return ErrNoGenerations
	}
	live, building, err := gens.Generations(ctx)
	if err != nil {
		return fmt.Errorf("read generations: %w", err)
	}
	if n == live || n == building {
		return fmt.Errorf("generation %d is %s: %w", n, map[bool]string{true: "live", false: "being built"}[n == live], ErrGenerationInUse)
	}
	return gens.Drop(ctx, n)
}

// ErrGenerationInUse surfaces from DropGeneration for the live generation
// and the one being built.
var ErrGenerationInUse = errors.New("the generation is in use")

// Close closes the runner's sink, once nothing uses the runner any more
// (Run leaves it open).
func (r *Runner) Close() error { return r.cfg.Sink.Close() }
