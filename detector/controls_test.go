package detector

import (
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/inferensys/canaryd/schemas"
)

// feeder drives a judge with a good canary's windows (fixed seed: the
// outcomes below are deterministic), traffic following the judge's weight.
type feeder struct {
	j   *Judge
	rng *rand.Rand
	i   int
}

func newFeeder(j *Judge) *feeder { return &feeder{j: j, rng: rand.New(rand.NewPCG(7, 1))} }

// next feeds one window and returns the verdict and command.
func (f *feeder) next() (Verdict, *schemas.Command) {
	w := f.j.Status().Weight
	k := 2500 * w / 100
	c := simWindow(f.rng, time.Unix(1_700_000_000, 0).Add(time.Duration(f.i)*10*time.Second), 10*time.Second,
		arm{version: "v1", perWindow: 2500 - k, errRate: 0.02, latMedian: 100, latSigma: 0.5},
		arm{version: "v2", perWindow: k, errRate: 0.02, latMedian: 100, latSigma: 0.5})
	c.Source = "t"
	f.i++
	f.j.Observe(c)
	return f.j.Decide(c.Watermark)
}

// until feeds windows until a command comes (or n windows pass).
func (f *feeder) until(n int) (Verdict, *schemas.Command, int) {
	for i := range n {
		if v, cmd := f.next(); cmd != nil {
			return v, cmd, i + 1
		}
	}
	return f.j.last, nil, n
}

var alice = OpRecord{By: "alice", Reason: "checking dashboards", At: time.Unix(1_700_000_100, 0).UTC()}

func TestPauseResume(t *testing.T) {
	// Reference: how many windows step 1 takes without a pause.
	ref := newFeeder(NewJudge(testSpec()))
	ref.until(1) // start
	_, cmd, steady := ref.until(500)
	if cmd == nil || cmd.Action != schemas.ActionSetWeight {
		t.Fatalf("reference: step 1 did not pass in 500 windows (%v)", cmd)
	}

	j := NewJudge(testSpec())
	f := newFeeder(j)
	f.until(1)
	if err := j.Pause(alice); err != nil {
		t.Fatal(err)
	}
	if err := j.Pause(alice); !errors.Is(err, ErrNotNow) {
		t.Errorf("second pause: %v; want ErrNotNow", err)
	}
	v, cmd, _ := f.until(steady + 20)
	if cmd != nil {
		t.Fatalf("paused: a command came: %s %s", cmd.Action, cmd.Reason)
	}
	if !strings.Contains(v.Reason, "paused (pause by alice") {
		t.Errorf("paused verdict's reason %q does not say who paused", v.Reason)
	}
	if st := j.Status(); !st.Paused || st.Next[0] != OpResume || len(st.Audit) != 1 {
		t.Errorf("status while paused: paused %v next %v audit %v", st.Paused, st.Next, st.Audit)
	}
	if err := j.Resume(alice); err != nil {
		t.Fatal(err)
	}
	if _, cmd, _ := f.until(1); cmd == nil || cmd.Action != schemas.ActionSetWeight || cmd.Step != 1 {
		t.Errorf("after resume: %v; want the step passed at once (its evidence was in)", cmd)
	}
}

func TestApprovalGate(t *testing.T) {
	s := testSpec()
	s.Steps[0].Approval = ApprovalRequired
	j := NewJudge(s)
	f := newFeeder(j)
	f.until(1)
	v, cmd, _ := f.until(600)
	if cmd != nil {
		t.Fatalf("gated step passed without approval: %s", cmd.Reason)
	}
	if !strings.Contains(v.Reason, "awaits approval") || !j.Status().AwaitingApproval {
		t.Fatalf("verdict %q, awaiting %v; want the gate shown", v.Reason, j.Status().AwaitingApproval)
	}
	if err := j.Approve(alice); err != nil {
		t.Fatal(err)
	}
	if _, cmd, _ := f.until(1); cmd == nil || cmd.Step != 1 {
		t.Fatalf("after approve: %v; want step 2's set_weight", cmd)
	}
	if err := j.Approve(alice); !errors.Is(err, ErrNotNow) {
		t.Errorf("approve on step 2 (no gate): %v; want ErrNotNow", err)
	}
}

func TestAbortAndRetry(t *testing.T) {
	j := NewJudge(testSpec())
	j.SetSeqBase(10)
	f := newFeeder(j)
	_, start, _ := f.until(1)
	v, cmd, err := j.Abort(OpRecord{By: "bob", Reason: "pager went off", At: time.Unix(1_700_000_200, 0)})
	if err != nil {
		t.Fatal(err)
	}
	if cmd.Action != schemas.ActionRollback || cmd.Seq != 12 || !strings.Contains(v.Reason, "aborted by bob: pager went off") {
		t.Errorf("abort: %s seq %d %q; want rollback seq 12 naming bob and why", cmd.Action, cmd.Seq, v.Reason)
	}
	if _, _, err := j.Abort(alice); !errors.Is(err, ErrNotNow) {
		t.Errorf("second abort: %v; want ErrNotNow", err)
	}
	if st := j.Status(); st.Final != "rollback" || len(st.Next) != 1 || st.Next[0] != OpRetry {
		t.Errorf("after abort: final %q next %v; want rollback, [retry]", st.Final, st.Next)
	}
	n, err := j.Retry(alice)
	if err != nil {
		t.Fatal(err)
	}
	f.j = n
	_, again, _ := f.until(1)
	if again == nil || again.Seq != 13 || again.CommandID == start.CommandID {
		t.Fatalf("retry's start: %+v; want seq 13 and an id other than attempt 0's %s", again, start.CommandID)
	}
	if st := n.Status(); st.Attempt != 1 || len(st.Audit) != 2 || st.Audit[0].Op != OpAbort || st.Audit[1].Op != OpRetry {
		t.Errorf("retry's status: attempt %d audit %+v", st.Attempt, st.Audit)
	}
	if _, err := n.Retry(alice); !errors.Is(err, ErrNotNow) {
		t.Errorf("retry of a running rollout: %v; want ErrNotNow", err)
	}
}

func TestControlsSurviveState(t *testing.T) {
	s := testSpec()
	s.Steps[0].Approval = ApprovalRequired
	j := NewJudge(s)
	f := newFeeder(j)
	f.until(1)
	if err := j.Pause(alice); err != nil {
		t.Fatal(err)
	}
	b, err := j.MarshalState()
	if err != nil {
		t.Fatal(err)
	}
	n := NewJudge(s)
	if err := n.UnmarshalState(b); err != nil {
		t.Fatal(err)
	}
	if st := n.Status(); !st.Paused || len(st.Audit) != 1 || st.Audit[0].By != "alice" {
		t.Errorf("restored: paused %v audit %+v; want paused by alice", st.Paused, st.Audit)
	}
}

// A step restricted to a cohort: its set_weight carries the cohort, the
// promotion does not, and the SRM check is off during it, because the
// canary's share of all requests is the weight times the cohort's share.
// The same misrouted-looking split (1% canary at weight 5) holds a rollout
// without a cohort, which shows the test can fail.
func TestCohortStep(t *testing.T) {
	cohort := &schemas.Cohort{Attribute: "user_tier", Values: []string{"internal"}}
	feed := func(s Spec) (cmds []*schemas.Command) {
		j := NewJudge(s)
		rng := rand.New(rand.NewPCG(3, 1))
		for i := range 400 {
			k := 2500 * j.Status().Weight / 100
			if j.Status().Step == 0 {
				k = 25 // the internal cohort is a fifth of the traffic: 1%, not 5%
			}
			c := simWindow(rng, time.Unix(1_700_000_000, 0).Add(time.Duration(i)*10*time.Second), 10*time.Second,
				arm{version: "v1", perWindow: 2500 - k, errRate: 0.02, latMedian: 100, latSigma: 0.5},
				arm{version: "v2", perWindow: k, errRate: 0.02, latMedian: 100, latSigma: 0.5})
			c.Source = "t"
			j.Observe(c)
			if _, cmd := j.Decide(c.Watermark); cmd != nil {
				cmds = append(cmds, cmd)
				if isFinal(cmd.Action) {
					return cmds
				}
			}
		}
		return cmds
	}

	s := testSpec()
	s.Steps[0].Cohort = cohort
	cmds := feed(s)
	if len(cmds) != 3 || cmds[2].Action != schemas.ActionPromote {
		for _, c := range cmds {
			t.Logf("%s step %d weight %d: %s", c.Action, c.Step, c.Weight, c.Reason)
		}
		t.Fatalf("%d commands; want set_weight 5, set_weight 50, promote", len(cmds))
	}
	if c := cmds[0]; c.Cohort == nil || c.Cohort.Attribute != "user_tier" || c.Weight != 5 {
		t.Errorf("step 0's set_weight: cohort %v weight %d; want user_tier, 5", c.Cohort, c.Weight)
	}
	if cmds[1].Cohort != nil || cmds[2].Cohort != nil {
		t.Errorf("step 1 and the promotion carry cohorts %v, %v; want none", cmds[1].Cohort, cmds[2].Cohort)
	}
	if err := cmds[0].Validate(); err != nil {
		t.Errorf("command with a cohort: %v", err)
	}

	ref := feed(testSpec())
	if last := ref[len(ref)-1]; last.Action != schemas.ActionHold || !strings.Contains(last.Reason, "ratio") {
		t.Errorf("without the cohort, a 1%% split at weight 5 ended %s (%s); want hold by SRM", last.Action, last.Reason)
	}
}
