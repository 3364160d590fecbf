package detector

import (
	"testing"

	"github.com/inferensys/canaryd/schemas"
)

// TestSeqBase: a judge's commands carry seq base+offset, and SeqBase
// recovers the base from any of them, so that a judge restarted on the
// same release numbers its commands as its predecessor did.
func TestSeqBase(t *testing.T) {
	for _, tc := range []struct {
		action schemas.Action
		step   int
		base   uint64
		seq    uint64
	}{
		{schemas.ActionSetWeight, 0, 0, 1},
		{schemas.ActionSetWeight, 2, 4, 7},
		{schemas.ActionPromote, 2, 4, 8},
		{schemas.ActionRollback, 0, 6, 8},
		{schemas.ActionHold, 1, 10, 13},
	} {
		j := &Judge{spec: Spec{Rollout: "r", Baseline: "a", Canary: "b"}, step: tc.step}
		j.SetSeqBase(tc.base)
		c := j.command(Verdict{Action: tc.action})
		if c.Seq != tc.seq {
			t.Errorf("%s at step %d with base %d: seq %d; want %d", tc.action, tc.step, tc.base, c.Seq, tc.seq)
		}
		if got := SeqBase(c); got != tc.base {
			t.Errorf("SeqBase(%s seq %d step %d) = %d; want %d", tc.action, c.Seq, c.Step, got, tc.base)
		}
	}
}
