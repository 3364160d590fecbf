package detector

import (
	"strings"
	"testing"
	"time"

	"github.com/inferensys/canaryd/schemas"
)

// TestStepWaitsForAcks: with routers known to acknowledge, a step does not
// pass before they acknowledged its set_weight, however long it runs; once
// they have, it passes after its minimum duration counted from the
// acknowledgement. A drive rollout without acks is unchanged (the other
// tests). Fixed seed: deterministic.
func TestStepWaitsForAcks(t *testing.T) {
	j := NewJudge(testSpec())
	if !j.ExpectAcks() || j.ExpectAcks() {
		t.Fatal("ExpectAcks: want true once, then false")
	}
	f := newFeeder(j)
	v, cmd := f.next()
	if cmd == nil || cmd.Action != schemas.ActionSetWeight {
		t.Fatalf("first window: %v", v.Action)
	}
	first := cmd.CommandID
	if id := j.StepCommandID(); id != first {
		t.Fatalf("StepCommandID %s; want the set_weight's id %s", id, first)
	}
	// Twenty windows (200 s, far beyond the 30 s minimum) without acks.
	for range 20 {
		v, cmd = f.next()
		if cmd != nil {
			t.Fatalf("a command before the routers acknowledged: %s (%s)", cmd.Action, v.Reason)
		}
	}
	if !strings.Contains(v.Reason, "the routers' acknowledgement of 5%") {
		t.Fatalf("reason %q; want it to say it waits for the routers", v.Reason)
	}
	if j.Applied("not-this-command", time.Unix(1_700_000_210, 0)) {
		t.Fatal("another command's ack applied")
	}
	ackAt := time.Unix(1_700_000_000, 0).Add(time.Duration(f.i) * 10 * time.Second)
	if !j.Applied(first, ackAt) || j.Applied(first, ackAt) {
		t.Fatal("Applied: want true once, then false")
	}
	// The step counts from the ack: not before 30 s of windows after it.
	_, cmd, n := f.until(100)
	if cmd == nil || cmd.Action != schemas.ActionSetWeight || cmd.Weight != 50 {
		t.Fatalf("after the ack: %v after %d windows; want the next step's set_weight", cmd, n)
	}
	if n < 3 {
		t.Fatalf("the step passed %d windows after the ack: before its 30 s minimum counted from it", n)
	}
	// The next step waits for its own ack again.
	if v, cmd := f.next(); cmd != nil || !strings.Contains(v.Reason, "acknowledgement of 50%") {
		t.Fatalf("next step: %v %q", cmd, v.Reason)
	}
	// Checkpointed.
	b, err := j.MarshalState()
	if err != nil {
		t.Fatal(err)
	}
	r := NewJudge(j.Spec())
	if err := r.UnmarshalState(b); err != nil || !r.awaitingAcks() {
		t.Fatalf("restored: err %v, awaiting acks %v", err, r.awaitingAcks())
	}
}
