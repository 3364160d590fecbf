package daemon

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/inferensys/canaryd/schemas"
)

// TestAckState feeds the ack reader's state records without Kafka: the
// highest seq per router wins, since moves only with the weight, lagging
// starts exactly at the timeout, and is logged once per command.
func TestAckState(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 16, 0, 0, 0, time.UTC)
	ms := metrics.NewSet()
	a := &acks{topic: "acks", control: "control", timeout: 10 * time.Second, ms: ms, logger: slog.New(slog.DiscardHandler),
		known: func(id string) bool { return id == "r" }, rollouts: map[string]*ackRollout{}}
	command := func(seq uint64, weight int, at time.Time) {
		c := schemas.Command{CommandID: fmt.Sprint("c", seq), Seq: seq, Rollout: "r", Action: schemas.ActionSetWeight, Weight: weight}
		b, _ := json.Marshal(c)
		a.onCommand(&kgo.Record{Topic: "control", Key: []byte("r"), Value: b, Timestamp: at})
	}
	ack := func(router string, seq uint64, weight int, at time.Time) {
		b, _ := json.Marshal(schemas.Ack{CommandID: fmt.Sprint("c", seq), Rollout: "r", Seq: seq, Weight: weight,
			Action: schemas.ActionSetWeight, Router: router, AppliedAt: at})
		a.onAck(&kgo.Record{Topic: "acks", Key: []byte("r"), Value: b})
	}
	f := func(now time.Time, want string) {
		t.Helper()
		got := ""
		for _, r := range a.routers("r", now) {
			got += fmt.Sprintf("%s:%d@%d", r.Router, r.Seq, r.Weight)
			if r.Lagging {
				got += "!"
			}
			got += " "
		}
		if got != want {
			t.Errorf("at %v: routers %q; want %q", now.Sub(t0), got, want)
		}
	}
	command(1, 20, t0)
	ack("a", 1, 20, t0.Add(time.Second))
	ack("b", 1, 20, t0.Add(2*time.Second))
	f(t0.Add(time.Hour), "a:1@20 b:1@20 ")
	command(2, 20, t0.Add(time.Minute)) // a hold at the same weight
	ack("a", 2, 20, t0.Add(61*time.Second))
	f(t0.Add(time.Minute+9*time.Second), "a:2@20 b:1@20 ")
	f(t0.Add(time.Minute+10*time.Second), "a:2@20 b:1@20! ")
	if st := a.routers("r", t0)[0]; !st.Since.Equal(t0.Add(time.Second)) {
		t.Errorf("a's since %v; want its first ack at 20%%, %v", st.Since, t0.Add(time.Second))
	}
	// Router ids are bounded per rollout: the 257th is counted and skipped.
	for i := range maxRouters - 2 {
		ack(fmt.Sprint("pod-", i), 1, 20, t0.Add(time.Second))
	}
	ack("one-too-many", 1, 20, t0.Add(time.Second))
	if n := len(a.routers("r", t0)); n != maxRouters {
		t.Errorf("%d routers kept; want %d", n, maxRouters)
	}
	if c := ms.GetOrCreateCounter(`canaryd_acks_invalid_total{reason="too_many_routers"}`).Get(); c != 1 {
		t.Errorf("too_many_routers counted %d; want 1", c)
	}
	a.mu.Lock()
	for i := range maxRouters - 2 {
		delete(a.rollouts["r"].routers, fmt.Sprint("pod-", i))
	}
	a.mu.Unlock()
	ack("a", 1, 20, t0.Add(2*time.Minute)) // older: ignored
	command(3, 50, t0.Add(3*time.Minute))
	ack("a", 3, 50, t0.Add(3*time.Minute+time.Second))
	if st := a.routers("r", t0)[0]; st.Seq != 3 || !st.Since.Equal(t0.Add(3*time.Minute+time.Second)) {
		t.Errorf("a after 50%%: %+v; want seq 3 since its ack", st)
	}
	ack("c", 9, 50, t0) // unknown rollout: counted, not kept
	bad, _ := json.Marshal(schemas.Ack{CommandID: "x", Rollout: "ghost", Seq: 1, Action: schemas.ActionSetWeight, Router: "c", AppliedAt: t0})
	a.onAck(&kgo.Record{Key: []byte("ghost"), Value: bad})
	if n := ms.GetOrCreateCounter(`canaryd_acks_invalid_total{reason="unknown_rollout"}`).Get(); n != 1 {
		t.Errorf("unknown_rollout = %d; want 1", n)
	}
	// The decision itself, at its edges.
	for _, c := range []struct {
		acked, latest uint64
		after         time.Duration
		want          bool
	}{{1, 2, 10 * time.Second, true}, {1, 2, 10*time.Second - 1, false}, {2, 2, time.Hour, false}, {3, 2, time.Hour, false}, {0, 0, time.Hour, false}} {
		if got := isLagging(schemas.Ack{Seq: c.acked}, schemas.Command{Seq: c.latest}, t0, t0.Add(c.after), 10*time.Second); got != c.want {
			t.Errorf("isLagging(acked %d, latest %d, after %v) = %v; want %v", c.acked, c.latest, c.after, got, c.want)
		}
	}
}
