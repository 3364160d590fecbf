package detector

import (
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/inferensys/canaryd/schemas"
)

func judgeSpec(t *testing.T, yaml string) Spec {
	t.Helper()
	ss, err := ParseSpecs("judge.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	s := ss[0]
	s.Rollout = "r"
	return s
}

// controllerSim feeds a judge-mode judge windows whose split follows the
// weight a controller set (or w when mis), as Argo Rollouts or Flagger
// would route; the outcomes are deterministic (fixed seeds).
type controllerSim struct {
	j      *Judge
	rng    *rand.Rand
	i      int
	weight int // the controller's weight
	serve  int // the weight actually served; 0: weight
	canary arm
}

func (c *controllerSim) next() (Verdict, *schemas.Command) {
	w := c.weight
	if c.serve > 0 {
		w = c.serve
	}
	k := 2500 * w / 100
	ca := c.canary
	ca.version, ca.perWindow = "v2", k
	win := simWindow(c.rng, time.Unix(1_700_000_000, 0).Add(time.Duration(c.i)*10*time.Second), 10*time.Second,
		arm{version: "v1", perWindow: 2500 - k, errRate: 0.02, latMedian: 100, latSigma: 0.5}, ca)
	win.Source = "t"
	c.i++
	c.j.Observe(win)
	return c.j.Decide(win.Watermark)
}

func (c *controllerSim) set(t *testing.T, w int) {
	t.Helper()
	if _, err := c.j.Declare(w, "argo", time.Unix(1_700_000_000, 0).Add(time.Duration(c.i)*10*time.Second)); err != nil {
		t.Fatal(err)
	}
	c.weight = w
}

// until feeds windows until the gate is g (or n windows pass) and
// returns how many it fed and every command sent meanwhile.
func (c *controllerSim) until(g string, n int) (int, []*schemas.Command) {
	var cmds []*schemas.Command
	for i := range n {
		if _, cmd := c.next(); cmd != nil {
			cmds = append(cmds, cmd)
		}
		if c.j.Gate() == g {
			return i + 1, cmds
		}
	}
	return n, cmds
}

const judgeYAML = `
rollout: r
baseline: v1
canary: v2
mode: judge
settle: 10s
steps:
  - {weight: 1, min_duration: 1m, min_canary_events: 300}
`

func TestJudgeModeHealthyPassesEachStep(t *testing.T) {
	sim := &controllerSim{j: NewJudge(judgeSpec(t, judgeYAML)), rng: rand.New(rand.NewPCG(11, 1)),
		canary: arm{errRate: 0.02, latMedian: 100, latSigma: 0.5}}
	sim.set(t, 10)
	for _, w := range []int{10, 30, 60} {
		if w != 10 {
			sim.set(t, w)
			if g := sim.j.Gate(); g != GateWait {
				t.Fatalf("a new step at %d%% starts with gate %s, want wait", w, g)
			}
		}
		n, cmds := sim.until(GatePass, 400)
		st := sim.j.Status()
		if st.Gate != GatePass {
			t.Fatalf("at %d%% after %d windows: gate %s (%s)", w, n, st.Gate, st.Verdict.Reason)
		}
		if len(cmds) != 0 {
			t.Fatalf("judge mode sent %d commands (first %s); want none", len(cmds), cmds[0].Action)
		}
		if st.Weight != w || st.WeightSource != "argo" || st.Mode != ModeJudge {
			t.Fatalf("status weight %d from %q mode %q; want %d from argo, judge", st.Weight, st.WeightSource, st.Mode, w)
		}
		if n < 6 {
			t.Fatalf("gate opened after %d windows, before the step's min_duration of 1m", n)
		}
		t.Logf("%d%%: gate open after %d windows: %s", w, n, st.Verdict.Reason)
		// The gate stays open while the controller takes its time.
		for range 5 {
			sim.next()
		}
		if g := sim.j.Gate(); g != GatePass {
			t.Fatalf("gate closed again: %s", g)
		}
	}
	// The controller promotes: the release ends as promoted, with no command.
	if _, err := sim.j.Declare(100, "argo", time.Unix(1_700_100_000, 0)); err != nil {
		t.Fatal(err)
	}
	if st := sim.j.Status(); st.Final != string(schemas.ActionPromote) || st.Gate != GatePass {
		t.Fatalf("after 100%%: final %q gate %q", st.Final, st.Gate)
	}
}

func TestJudgeModeBadCanaryFails(t *testing.T) {
	sim := &controllerSim{j: NewJudge(judgeSpec(t, judgeYAML)), rng: rand.New(rand.NewPCG(12, 1)),
		canary: arm{errRate: 0.06, latMedian: 100, latSigma: 0.5}}
	sim.set(t, 20)
	n, cmds := sim.until(GateFail, 400)
	if sim.j.Gate() != GateFail {
		t.Fatalf("gate %s after %d windows (%s)", sim.j.Gate(), n, sim.j.Status().Verdict.Reason)
	}
	if len(cmds) != 1 || cmds[0].Action != schemas.ActionRollback || cmds[0].Weight != 0 {
		t.Fatalf("commands %v; want one rollback (judge mode publishes its final verdicts)", cmds)
	}
	// A judge of the same release restores the end from that command.
	r := NewJudge(sim.j.Spec())
	if !r.Restore(cmds[0]) || r.Gate() != GateFail {
		t.Fatalf("restore from the rollback: gate %s", r.Gate())
	}
}

func TestJudgeModeObservedWeightAndSRM(t *testing.T) {
	// No controller declares a weight: the observed share stands in, and
	// SRM is not checked however the traffic is split.
	sim := &controllerSim{j: NewJudge(judgeSpec(t, judgeYAML)), rng: rand.New(rand.NewPCG(13, 1)),
		canary: arm{errRate: 0.02, latMedian: 100, latSigma: 0.5}, weight: 20}
	sim.until(GatePass, 400)
	st := sim.j.Status()
	if st.Gate != GatePass || st.WeightSource != WeightObserved || st.Weight < 18 || st.Weight > 22 {
		t.Fatalf("observed: gate %s weight %d from %s (%s)", st.Gate, st.Weight, st.WeightSource, st.Verdict.Reason)
	}
	// The controller declares 20% but the routers serve 35%: SRM holds.
	sim2 := &controllerSim{j: NewJudge(judgeSpec(t, judgeYAML)), rng: rand.New(rand.NewPCG(14, 1)),
		canary: arm{errRate: 0.02, latMedian: 100, latSigma: 0.5}, serve: 35}
	sim2.set(t, 20)
	n, cmds := sim2.until(GateHold, 400)
	st = sim2.j.Status()
	if st.Gate != GateHold || len(cmds) != 1 || cmds[0].Action != schemas.ActionHold {
		t.Fatalf("misrouted: gate %s after %d windows, commands %d (%s)", st.Gate, n, len(cmds), st.Verdict.Reason)
	}
	if !strings.Contains(st.Verdict.Reason, "experiment invalid") {
		t.Fatalf("hold reason %q", st.Verdict.Reason)
	}
}

func TestJudgeModeDeclare(t *testing.T) {
	d := NewJudge(testSpec())
	if _, err := d.Declare(20, "argo", time.Now()); !errors.Is(err, ErrNotNow) {
		t.Fatalf("Declare on a drive-mode judge: %v, want ErrNotNow", err)
	}
	j := NewJudge(judgeSpec(t, judgeYAML))
	if _, err := j.Declare(101, "argo", time.Now()); err == nil {
		t.Fatal("weight 101 accepted")
	}
	if changed, _ := j.Declare(20, "argo", time.Now()); !changed {
		t.Fatal("first declaration: no change")
	}
	if changed, _ := j.Declare(20, "argo", time.Now()); changed {
		t.Fatal("the same declaration again changed the judge")
	}
	// State round trip keeps the declaration and the gate.
	sim := &controllerSim{j: j, rng: rand.New(rand.NewPCG(15, 1)), canary: arm{errRate: 0.02, latMedian: 100, latSigma: 0.5}, weight: 20}
	sim.until(GatePass, 400)
	b, err := j.MarshalState()
	if err != nil {
		t.Fatal(err)
	}
	r := NewJudge(j.Spec())
	if err := r.UnmarshalState(b); err != nil {
		t.Fatal(err)
	}
	if r.Gate() != GatePass || r.Status().Weight != 20 || r.Status().WeightSource != "argo" {
		t.Fatalf("restored: gate %s weight %d from %s", r.Gate(), r.Status().Weight, r.Status().WeightSource)
	}
}

func TestJudgeModeSpec(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"rollout: r\nbaseline: a\ncanary: b\nmode: watch\n", `judge.yaml:4: mode: "watch": want "drive"`},
		{"rollout: r\nbaseline: a\ncanary: b\nmode: judge\nsteps: [{weight: 100}]\n", "weight 100 in mode: judge"},
		{"rollout: r\nbaseline: a\ncanary: b\n", "at least one step is required"},
	} {
		_, err := ParseSpecs("judge.yaml", []byte(tc.yaml))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want %q", tc.yaml, err, tc.want)
		}
	}
	s := judgeSpec(t, "rollout: r\nbaseline: a\ncanary: b\nmode: judge\n")
	if !s.JudgeOnly() || len(s.Steps) != 0 {
		t.Fatalf("judge spec without steps: %+v", s)
	}
	// mode: drive is the default and hashes as a spec without a mode.
	a := judgeSpec(t, "rollout: r\nbaseline: a\ncanary: b\nmode: drive\nsteps: [{weight: 10}]\n")
	b := judgeSpec(t, "rollout: r\nbaseline: a\ncanary: b\nsteps: [{weight: 10}]\n")
	if !SameSpec(a, b) {
		t.Fatal("mode: drive and no mode differ")
	}
}
