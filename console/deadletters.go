package console

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/productstream/productstream/kafka"
)

// DeadLettersView is the Dead letters page: the newest records of the
// processor's dead letter topic and of each sink's.
type DeadLettersView struct {
	Now    time.Time        `json:"now"`
	Topics []DeadLetterList `json:"topics"`
}

// DeadLetterList is one dead letter topic's newest records.
type DeadLetterList struct {
	Topic string `json:"topic"`
	// Of is who writes it: "processor" or "sink <name>".
	Of string `json:"of"`
	// Sink is the sink's name, "" for the processor's.
	Sink    string       `json:"sink,omitempty"`
	Total   int64        `json:"total"`
	Records []DeadLetter `json:"records"`
	Error   string       `json:"error,omitempty"`
}

// DeadLetter is one dead letter record: where it is, its key, and its
// dlq-* headers (the error and the origin record's position). Its value is
// never shown: it is the input that failed.
type DeadLetter struct {
	Partition int32             `json:"partition"`
	Offset    int64             `json:"offset"`
	Time      time.Time         `json:"time"`
	Key       string            `json:"key"`
	Headers   map[string]string `json:"headers"`
}

// deadLettersShown is how many of each topic's newest records are shown.
const deadLettersShown = 50

// maxHeaderShown bounds one header value shown.
const maxHeaderShown = 1000

func (s *Server) deadLetters(ctx context.Context, _ *http.Request, _ principal) (any, error) {
	ctx, cancel := context.WithTimeout(ctx, kafkaTimeout)
	defer cancel()
	lists := []DeadLetterList{{Topic: s.d.ProcessorDLQ, Of: "processor"}}
	for _, sk := range s.d.Sinks {
		lists = append(lists, DeadLetterList{Topic: sk.DLQ, Of: "sink " + sk.Name, Sink: sk.Name})
	}
	for i := range lists {
		if err := s.readDeadLetters(ctx, &lists[i]); err != nil {
			if ctx.Err() != nil {
				return nil, err
			}
			s.d.Log.Warn("console: reading a dead letter topic", "topic", lists[i].Topic, "err", err)
			lists[i].Error = "could not be read (see the console's log)"
		}
	}
	return &DeadLettersView{Now: s.d.Now(), Topics: lists}, nil
}

// readDeadLetters reads the newest deadLettersShown records of each
// partition of l.Topic and keeps the newest deadLettersShown of them all.
func (s *Server) readDeadLetters(ctx context.Context, l *DeadLetterList) error {
	adm := kadm.NewClient(s.d.Kafka)
	ends, err := adm.ListEndOffsets(ctx, l.Topic)
	if err != nil {
		return err
	}
	if err := ends.Error(); err != nil {
		if errors.Is(err, kerr.UnknownTopicOrPartition) {
			return nil // not created yet: nothing was dead-lettered
		}
		return err
	}
	startsListed, err := adm.ListStartOffsets(ctx, l.Topic)
	if err != nil {
		return err
	}
	from := map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) {
		start := int64(0)
		if st, ok := startsListed.Lookup(o.Topic, o.Partition); ok {
			start = st.Offset
		}
		l.Total += o.Offset - start
		from[o.Partition] = max(start, o.Offset-deadLettersShown)
	})
	if l.Total == 0 {
		return nil
	}
	_, err = kafka.ReadToEnd(ctx, s.d.Client, []string{l.Topic}, func(r *kgo.Record) error {
		d := DeadLetter{Partition: r.Partition, Offset: r.Offset, Time: r.Timestamp, Key: clip(string(r.Key)), Headers: map[string]string{}}
		for _, h := range r.Headers {
			if strings.HasPrefix(h.Key, "dlq-") {
				d.Headers[clip(h.Key)] = clip(string(h.Value))
			}
		}
		l.Records = append(l.Records, d)
		return nil
	}, kafka.WithStartOffsets(map[string]map[int32]int64{l.Topic: from}), kafka.WithIdleEnd(2*time.Second), kafka.WithTimeout(kafkaTimeout))
	if err != nil {
		return fmt.Errorf("read %s: %w", l.Topic, err)
	}
	slices.SortFunc(l.Records, func(a, b DeadLetter) int { return b.Time.Compare(a.Time) })
	if len(l.Records) > deadLettersShown {
		l.Records = l.Records[:deadLettersShown]
	}
	return nil
}

// clip bounds a string taken from a topic.
func clip(s string) string {
	if len(s) > maxHeaderShown {
		return s[:maxHeaderShown] + "…"
	}
	return s
}
