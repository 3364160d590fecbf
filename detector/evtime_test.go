package detector

import (
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/inferensys/canaryd/schemas"
	"github.com/inferensys/canaryd/window"
)

// goodWindows returns n 10-second windows of a good canary at 20% from a
// fixed seed, from start.
func goodWindows(n int, start time.Time) []window.Closed {
	rng := rand.New(rand.NewPCG(23, 1))
	ws := make([]window.Closed, n)
	for i := range ws {
		ws[i] = simWindow(rng, start.Add(time.Duration(i)*10*time.Second), 10*time.Second,
			arm{version: "v1", perWindow: 2000, errRate: 0.05, latMedian: 100, latSigma: 0.5},
			arm{version: "v2", perWindow: 500, errRate: 0.05, latMedian: 100, latSigma: 0.5})
		ws[i].Source = "t"
	}
	return ws
}

func tenMinuteSpec() Spec {
	s := fixtureSpec()
	s.Steps[0].MinDuration = Duration(10 * time.Minute)
	if err := s.validate(nilNode()); err != nil {
		panic(err)
	}
	return s
}

// TestFastClockCannotShortenStep: two minutes into a 10-minute step the
// producers' clocks jump 5 minutes ahead (event time runs ahead of the wall
// clock, inside what MaxFuture lets through). The step passes after 10
// minutes of wall time, not after 5 — and while it waits, its reason says
// why.
func TestFastClockCannotShortenStep(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	ws := goodWindows(80, t0)
	for i := range ws {
		wall := t0.Add(time.Duration(i+1)*10*time.Second + time.Second) // 1 s after the honest end
		if i >= 12 {
			ws[i].Start += int64(5 * time.Minute)
			ws[i].End += int64(5 * time.Minute)
			ws[i].Watermark = ws[i].End
		}
		ws[i].Wall = wall.UnixNano()
	}
	j := NewJudge(tenMinuteSpec())
	passed := -1
	var waiting string
	for i, c := range ws {
		j.Observe(c)
		v, cmd := j.Decide(c.Watermark)
		if i == 45 {
			waiting = v.Reason
		}
		if cmd != nil && cmd.Action == schemas.ActionPromote {
			passed = i
			break
		}
	}
	// Started at window 0 (wall t0+11s); 10 minutes of wall time at window
	// 60 (t0+611s). Event time alone passed 10 minutes at window 30.
	if passed != 60 {
		t.Fatalf("step passed at window %d; want 60 (10 minutes of wall time; event time alone: window 30)", passed)
	}
	if !strings.Contains(waiting, "7m31s of 10m0s on canaryd's wall clock (event time ran 4m59s ahead of it") {
		t.Fatalf("reason while wall time binds: %q; want it to say so", waiting)
	}
}

var wallAt = regexp.MustCompile(`,"wall_at":"[^"]*"`)

// TestWallClockDoesNotMoveHonestDecisions: with clocks that do not run
// ahead, the wall clock never decides: windows closed 1 s, 1 min or 3 hours
// (a backlog replayed after a crash) after their end, or with no wall clock,
// give the same verdicts and commands.
func TestWallClockDoesNotMoveHonestDecisions(t *testing.T) {
	ws := goodWindows(80, time.Unix(1_700_000_000, 0))
	var want []string
	for _, lag := range []time.Duration{-1, time.Second, time.Minute, 3 * time.Hour} {
		cs := make([]window.Closed, len(ws))
		for i, c := range ws {
			cs[i] = c
			if lag >= 0 {
				cs[i].Wall = c.End + int64(lag) + int64(i)*int64(time.Millisecond)
			}
		}
		got := decisions(t, NewJudge(tenMinuteSpec()), cs)
		for i := range got { // the wall clock is reported as it is (Verdict.WallAt); it decides nothing
			got[i] = wallAt.ReplaceAllString(got[i], "")
		}
		if want == nil {
			want = got
			if !strings.Contains(strings.Join(got, "\n"), `"action":"promote"`) {
				t.Fatal("no promotion: the test compares nothing that matters")
			}
			continue
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("windows closed %v after their end: window %d decided\n %s\nwant\n %s", lag, i, got[i], want[i])
			}
		}
	}
}

// TestRestoreHold: a hold read back from the control topic (no state
// directory) is restored like the other final commands: the judge stays
// held at that step and weight, its status says so, and later windows send
// nothing. It used to be ignored: the rollout restarted at step 0 and walked
// again silently.
func TestRestoreHold(t *testing.T) {
	s := testSpec()
	hold := &schemas.Command{Rollout: "r", Baseline: "v1", Canary: "v2", Action: schemas.ActionHold, Weight: 50, Step: 1, Seq: 3,
		Reason: "hold: experiment invalid: sample ratio mismatch", DecidedAt: time.Unix(1_700_000_600, 0).UTC()}
	j := NewJudge(s)
	if !j.Restore(hold) {
		t.Fatal("Restore(hold) = false; want the hold restored")
	}
	st := j.Status()
	if st.Final != string(schemas.ActionHold) || st.Step != 1 || st.Weight != 50 || st.Verdict.Action != schemas.ActionHold ||
		st.Verdict.Reason != hold.Reason || !st.Verdict.At.Equal(hold.DecidedAt) {
		t.Fatalf("status after restoring a hold: final %q step %d weight %d verdict %s %q at %v; want hold at step 1, 50%%",
			st.Final, st.Step, st.Weight, st.Verdict.Action, st.Verdict.Reason, st.Verdict.At)
	}
	for _, c := range goodWindows(40, time.Unix(1_700_000_700, 0)) {
		j.Observe(c)
		if v, cmd := j.Decide(c.Watermark); cmd != nil || v.Action != schemas.ActionHold {
			t.Fatalf("a held rollout decided %s (command %v); want it held", v.Action, cmd != nil)
		}
	}
	// A hold of other versions, or of a step the spec lacks, is not applied.
	other := *hold
	other.Canary = "v3"
	bad := *hold
	bad.Step = 7
	for _, c := range []*schemas.Command{&other, &bad} {
		if NewJudge(s).Restore(c) {
			t.Fatalf("Restore applied a hold of %s at step %d", c.Canary, c.Step)
		}
	}
}
