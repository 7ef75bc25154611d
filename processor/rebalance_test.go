package processor

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/productstream/productstream/schemas"
	"github.com/productstream/productstream/topics"
)

// A member that owns no partition is not ready, and says why.
func TestReadyWithoutPartitions(t *testing.T) {
	// Nothing listens on the discard port: the member never joins.
	p, err := New(withDefaults(Config{Brokers: []string{"127.0.0.1:9"}, Topics: topics.For("t."), Group: "g",
		QuietPeriod: time.Second, MaxDelay: time.Second, Serde: schemas.NewSerde(nil)}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.client.Close)
	if n := p.Assigned(); n != 0 {
		t.Fatalf("Assigned: %d before any assignment, want 0", n)
	}
	if err := p.Ready(context.Background()); !errors.Is(err, ErrNotAssigned) {
		t.Fatalf("Ready: %v, want ErrNotAssigned", err)
	}
}

// Assigned follows the partitions a member owns: all of them while it is
// alone, its share once a second member joins, all again when that one
// leaves, and none once Run has returned.
func TestAssignedFollowsRebalances(t *testing.T) {
	virtualTest(t, false, func(t *testing.T, e *env) {
		cfg := Config{QuietPeriod: time.Second, MaxDelay: time.Second}
		p1, stop1 := e.run(cfg)
		e.waitAssigned(p1, 3)
		if err := p1.Ready(context.Background()); err != nil {
			t.Fatalf("Ready with 3 partitions: %v", err)
		}

		p2, stop2 := e.run(cfg)
		e.waitFor("the partitions to be shared", func() bool { return p1.Assigned() > 0 && p2.Assigned() > 0 && p1.Assigned()+p2.Assigned() == 3 })
		if err := errors.Join(p1.Ready(context.Background()), p2.Ready(context.Background())); err != nil {
			t.Fatalf("Ready with %d and %d partitions: %v", p1.Assigned(), p2.Assigned(), err)
		}

		stop2()
		if n := p2.Assigned(); n != 0 {
			t.Fatalf("Assigned after Run returned: %d, want 0", n)
		}
		if err := p2.Ready(context.Background()); !errors.Is(err, ErrNotAssigned) {
			t.Fatalf("Ready after Run returned: %v, want ErrNotAssigned", err)
		}
		e.waitAssigned(p1, 3)

		stop1()
		if n := p1.Assigned(); n != 0 {
			t.Fatalf("Assigned after Run returned: %d, want 0", n)
		}
	})
}

// A static member (InstanceID) that stops leaves the group, so that the
// other members take its partitions over at once, not once its session
// timed out: franz-go leaves on close only for a dynamic member.
func TestStaticMemberLeavesWhenItStops(t *testing.T) {
	virtualTest(t, true, func(t *testing.T, e *env) {
		a, stopA := e.run(Config{QuietPeriod: time.Second, MaxDelay: time.Second, InstanceID: "a", SessionTimeout: 45 * time.Second})
		e.waitAssigned(a, 3)
		b, _ := e.run(Config{QuietPeriod: time.Second, MaxDelay: time.Second, InstanceID: "b", SessionTimeout: 45 * time.Second})
		e.waitFor("the partitions to be shared", func() bool { return a.Assigned() > 0 && b.Assigned() > 0 && a.Assigned()+b.Assigned() == 3 })
		stopped := time.Now()
		stopA()
		e.waitAssigned(b, 3)
		if took := time.Since(stopped); took > 3*time.Second {
			t.Fatalf("the other member took the partitions over %s after the stop, want within 3s (the session is 45s)", took)
		}
	})
}
