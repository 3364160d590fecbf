package argo

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/argoproj/argo-rollouts/pkg/apis/rollouts/v1alpha1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/inferensys/canaryd/internal/canarydtest"
)

// judgeSpec is the canaryd spec of the scenarios: mode judge, one rollout
// per agent (canary: auto, the versions from Argo's calls). Its alpha,
// 1e-4, bounds the chance that canaryd rolls back a canary as good as its
// baseline at any point (Ville's inequality over the whole release): the
// chance that a scenario with a good canary fails by luck.
const judgeSpec = `
rollout: support-agent
mode: judge
baseline: ` + stableHash + `
canary: auto
alpha: 0.0001
steps:
  - {weight: 10, min_duration: 20s, min_canary_events: 1000}
  - {weight: 50, min_duration: 20s, min_canary_events: 2000}
metrics:
  error_rate: {margin: 2.0}
  latency_p95: {margin: 0.2}
`

var (
	good = canarydtest.Arm{Version: canaryHash, ErrorRate: 0.01, MedianMS: 200}
	base = canarydtest.Arm{Version: stableHash, ErrorRate: 0.01, MedianMS: 200}
	bad  = canarydtest.Arm{Version: canaryHash, ErrorRate: 0.03, MedianMS: 200} // errors ×3
)

// argo is Argo's side of a scenario: the runs it would create for the
// example rollout's steps and background analysis, pointed at a test
// canaryd.
type argo struct {
	t     *testing.T
	c     *canarydtest.Canaryd
	ro    *v1alpha1.Rollout
	tpls  map[string]*v1alpha1.AnalysisTemplate
	guard *v1alpha1.AnalysisRun
}

func newArgo(t *testing.T, c *canarydtest.Canaryd) *argo {
	a := &argo{t: t, c: c, ro: rollout(t), tpls: templates(t)}
	a.guard = newRun(t, a.tpls["canaryd-guard"], rolloutArgs(t, a.ro, a.ro.Spec.Strategy.Canary.Analysis.Args, c.URL), "guard")
	return a
}

// gate returns the AnalysisRun of the example's analysis step after the
// setWeight of weight.
func (a *argo) gate(weight int32) *v1alpha1.AnalysisRun {
	a.t.Helper()
	w := int32(0)
	for i, s := range a.ro.Spec.Strategy.Canary.Steps {
		if s.SetWeight != nil {
			w = *s.SetWeight
		}
		if s.Analysis != nil && w == weight {
			return newRun(a.t, a.tpls["canaryd-gate"], rolloutArgs(a.t, a.ro, s.Analysis.Args, a.c.URL), fmt.Sprintf("gate-%d", i))
		}
	}
	a.t.Fatalf("the example rollout has no analysis step at weight %d", weight)
	return nil
}

// measure takes one measurement of the run's metric with Argo's provider.
func (a *argo) measure(run *v1alpha1.AnalysisRun) v1alpha1.Measurement {
	a.t.Helper()
	return measure(a.t, run, resolved(a.t, run))
}

// fast returns run with the metric's interval and limits changed for a
// run of the real analysis controller that ends in seconds rather than in
// the examples' hour: interval 1s; budget, when not nil, as both count and
// inconclusiveLimit (the examples' 120); consecutiveErrorLimit when not nil.
func fast(run *v1alpha1.AnalysisRun, budget, consecutiveErrorLimit *int) *v1alpha1.AnalysisRun {
	run = run.DeepCopy()
	m := &run.Spec.Metrics[0]
	m.Interval = "1s"
	if budget != nil {
		v := intstr.FromInt(*budget)
		m.Count, m.InconclusiveLimit = &v, &v
	}
	if consecutiveErrorLimit != nil {
		v := intstr.FromInt(*consecutiveErrorLimit)
		m.ConsecutiveErrorLimit = &v
	}
	return run
}

func ptr[T any](v T) *T { return &v }

// rampUntil produces traffic one second of event time at a time and, every
// every seconds (Argo's interval: a measurement per interval of traffic),
// measures the gate and the guard, until the gate's measurement leaves
// Inconclusive or budget seconds have passed. It fails the test on a
// measurement Error, and on a guard measurement other than Successful
// unless the gate has failed too. It returns the gate's last measurement.
func (a *argo) rampUntil(tr *canarydtest.Traffic, gate *v1alpha1.AnalysisRun, every, budget int) (v1alpha1.Measurement, int) {
	a.t.Helper()
	var m v1alpha1.Measurement
	for s := 1; s <= budget; s++ {
		a.c.Produce(tr.Second())
		if s%every != 0 {
			continue
		}
		a.c.Sync(tr)
		// The guard first: a window may close (the idle rule, on the wall
		// clock) and decide between the two measurements. Measured in this
		// order, a rollback in between shows as a Successful guard with a
		// Failed gate, which is right; in the other order it showed as a
		// Failed guard with an Inconclusive gate (seen once in CI).
		g := a.measure(a.guard)
		m = a.measure(gate)
		if m.Phase == v1alpha1.AnalysisPhaseError || g.Phase == v1alpha1.AnalysisPhaseError {
			a.t.Fatalf("after %ds: gate %s %s, guard %s %s: measurement error", s, m.Phase, m.Message, g.Phase, g.Message)
		}
		if g.Phase != v1alpha1.AnalysisPhaseSuccessful && m.Phase != v1alpha1.AnalysisPhaseFailed {
			a.t.Fatalf("after %ds: guard %s (%s) while the gate is %s (%s)", s, g.Phase, g.Value, m.Phase, m.Value)
		}
		if m.Phase != v1alpha1.AnalysisPhaseInconclusive {
			return m, s
		}
	}
	return m, budget
}

func start(t *testing.T) (*canarydtest.Canaryd, *argo) {
	t.Helper()
	c := canarydtest.Start(t, judgeSpec)
	return c, newArgo(t, c)
}

// TestHealthyCanary: a canary as good as its baseline passes the gate at
// 10% and at 50%, the guard never fails, and Argo's analysis controller
// ends the gate's run Successful; the last gate, at 100%, ends the release
// in canaryd as promoted, which all traffic on the canary then leaves as
// it is. It fails by luck only if canaryd rolls
// the canary back (at most alpha = 1e-4) or cannot show it within the
// margins in the budget: 300 s at 1000 requests/s, 30,000 canary requests
// at 10%, where the error odds' bound needs about 5,000 (the README's demo
// passes a ×2 margin at 4,786) — with a fixed seed the outcome is the same
// at every run.
func TestHealthyCanary(t *testing.T) {
	if testing.Short() {
		t.Skip("produces a few minutes of event time")
	}
	_, a := start(t)
	tr := canarydtest.NewTraffic("support-agent", base, good, 1000, 10, time.Now().Add(-50*time.Minute), 1)
	ctl := startController(t)
	for _, weight := range []int32{10, 50, 100} {
		tr.Weight = int(weight)
		gate := a.gate(weight)
		// The analysis step starts with a measurement: it declares the
		// weight (and the release, at 10%) before its traffic is judged.
		// At 100% the declaration is Argo's promotion: pass at once.
		m := a.measure(gate)
		if weight == 100 {
			if m.Phase != v1alpha1.AnalysisPhaseSuccessful {
				t.Fatalf("100%%: first measurement %s (%s %s); want Successful (promoted)", m.Phase, m.Value, m.Message)
			}
			break
		}
		if m.Phase != v1alpha1.AnalysisPhaseInconclusive {
			t.Fatalf("%d%%: first measurement %s (%s %s); want Inconclusive (wait)", weight, m.Phase, m.Value, m.Message)
		}
		m, s := a.rampUntil(tr, gate, 5, 300)
		if m.Phase != v1alpha1.AnalysisPhaseSuccessful {
			t.Fatalf("%d%%: gate %s (%s) after %ds of traffic; want Successful", weight, m.Phase, m.Value, s)
		}
		t.Logf("%d%%: gate passed after %ds of event time", weight, s)
		// Argo's own controller, measuring the same canaryd: one
		// measurement, pass, and consecutiveSuccessLimit 1 ends the run.
		run := ctl.analyze(t, fast(gate, nil, nil), nil)
		if run.Status.Phase != v1alpha1.AnalysisPhaseSuccessful {
			t.Fatalf("%d%%: the analysis controller ended the gate's run %s; want Successful: %s", weight, run.Status.Phase, phases(run))
		}
	}
	// Promoted: all traffic on the canary (whose version the stable
	// ReplicaSet takes on in Argo; here the canary's events alone) leaves
	// the ended release as it is.
	tr.Weight = 100
	for range 120 {
		a.c.Produce(tr.Second())
	}
	a.c.Sync(tr)
	if m := a.measure(a.gate(100)); m.Phase != v1alpha1.AnalysisPhaseSuccessful {
		t.Errorf("after 2 min at 100%%: gate %s (%s); want Successful (promoted)", m.Phase, m.Value)
	}
	if v := status(t, a.c.URL); v.Final != "promote" {
		t.Errorf("canaryd's final %q; want promote", v.Final)
	}
}

// judgeReply is the part of canaryd's judge reply the tests read.
type judgeReply struct {
	Verdict, Final, Reason string
}

func status(t *testing.T, base string) judgeReply {
	t.Helper()
	resp, err := http.Get(base + "/v1/rollouts/support-agent/judge")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r judgeReply
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatal(err)
	}
	return r
}

// TestBadCanary: a canary with three times the baseline's error rate fails
// the gate and the guard (Argo aborts the rollout), and Argo's controller
// ends both runs Failed. It fails by luck if canaryd does not reach its
// rollback threshold within 300 s of 100 canary requests/s: the README's
// demo rolls errors ×3 back after 771 canary requests, 40 times fewer
// than the budget (fixed seed: the same outcome at every run).
func TestBadCanary(t *testing.T) {
	if testing.Short() {
		t.Skip("produces a few minutes of event time")
	}
	_, a := start(t)
	tr := canarydtest.NewTraffic("support-agent", base, bad, 1000, 10, time.Now().Add(-50*time.Minute), 2)
	gate := a.gate(10)
	a.measure(gate)
	m, s := a.rampUntil(tr, gate, 5, 300)
	if m.Phase != v1alpha1.AnalysisPhaseFailed {
		t.Fatalf("gate %s (%s) after %ds; want Failed", m.Phase, m.Value, s)
	}
	if g := a.measure(a.guard); g.Phase != v1alpha1.AnalysisPhaseFailed {
		t.Fatalf("guard %s (%s); want Failed", g.Phase, g.Value)
	}
	t.Logf("gate and guard failed after %ds of event time", s)
	ctl := startController(t)
	for _, run := range []*v1alpha1.AnalysisRun{fast(gate, nil, nil), fast(a.guard, nil, nil)} {
		got := ctl.analyze(t, run, nil)
		if got.Status.Phase != v1alpha1.AnalysisPhaseFailed {
			t.Errorf("the analysis controller ended %s %s; want Failed: %s", run.Name, got.Status.Phase, phases(got))
		}
	}
}

// TestLowTraffic: a good canary with little traffic (2 canary requests a
// second at 10%) for 30 minutes of event time is never Failed by the gate
// or the guard; while the evidence is short the gate is Inconclusive, and
// Argo's controller ends a run whose budget is spent Inconclusive (Argo
// pauses the rollout) while a guard run stays Successful. A failure by luck needs canaryd to roll a good canary back:
// at most alpha = 1e-4.
func TestLowTraffic(t *testing.T) {
	if testing.Short() {
		t.Skip("produces 30 minutes of event time")
	}
	c, a := start(t)
	tr := canarydtest.NewTraffic("support-agent", base, good, 20, 10, time.Now().Add(-50*time.Minute), 3)
	gate := a.gate(10)
	a.measure(gate)
	for range 10 {
		c.Produce(tr.Second())
	}
	c.Sync(tr)

	// With the evidence this short, Argo's controller: the gate with a
	// budget of 3 (count and inconclusiveLimit, the examples' 120) ends
	// Inconclusive at its third wait; the guard, terminated after three
	// measurements as a finished rollout does, ends Successful.
	ctl := startController(t)
	run := ctl.analyze(t, fast(gate, ptr(3), nil), nil)
	if run.Status.Phase != v1alpha1.AnalysisPhaseInconclusive || run.Status.MetricResults[0].Inconclusive != 3 {
		t.Errorf("gate run %s; want Inconclusive after 3 measurements: %s", run.Status.Phase, phases(run))
	}
	run = ctl.analyze(t, fast(a.guard, nil, nil), func(r *v1alpha1.AnalysisRun) bool {
		if measurements(r) < 3 {
			return false
		}
		r.Spec.Terminate = true
		return true
	})
	if run.Status.Phase != v1alpha1.AnalysisPhaseSuccessful {
		t.Errorf("guard run %s; want Successful: %s", run.Status.Phase, phases(run))
	}

	// 30 minutes at Argo's interval (30 s): never Failed.
	counts := map[v1alpha1.AnalysisPhase]int{}
	for s := 1; s <= 1800; s++ {
		c.Produce(tr.Second())
		if s%30 != 0 {
			continue
		}
		c.Sync(tr)
		m, g := a.measure(gate), a.measure(a.guard)
		counts[m.Phase]++
		if m.Phase == v1alpha1.AnalysisPhaseFailed || m.Phase == v1alpha1.AnalysisPhaseError || g.Phase != v1alpha1.AnalysisPhaseSuccessful {
			t.Fatalf("after %ds of low traffic: gate %s (%s %s), guard %s (%s %s)", s, m.Phase, m.Value, m.Message, g.Phase, g.Value, g.Message)
		}
	}
	t.Logf("gate measurements over 30 min of low traffic: %v", counts)
}

// TestUnreachable: with canaryd unreachable every measurement is an Error
// (not a verdict), and Argo's controller ends the run in Error once
// consecutiveErrorLimit is exceeded (here 2, the examples' 10) — which
// Argo Rollouts treats like Failed (abort). No statistics: deterministic.
func TestUnreachable(t *testing.T) {
	ro, tpls := rollout(t), templates(t)
	url := canarydtest.Unreachable(t)
	var gate *v1alpha1.AnalysisRun
	for _, s := range ro.Spec.Strategy.Canary.Steps {
		if s.Analysis != nil {
			gate = newRun(t, tpls["canaryd-gate"], rolloutArgs(t, ro, s.Analysis.Args, url), "gate")
			break
		}
	}
	guard := newRun(t, tpls["canaryd-guard"], rolloutArgs(t, ro, ro.Spec.Strategy.Canary.Analysis.Args, url), "guard")
	for _, run := range []*v1alpha1.AnalysisRun{gate, guard} {
		if m := measure(t, run, resolved(t, run)); m.Phase != v1alpha1.AnalysisPhaseError {
			t.Errorf("%s: measurement %s (%s); want Error", run.Name, m.Phase, m.Message)
		}
	}
	// Argo retries an Error after 10 s (DefaultErrorRetryInterval), not
	// after the interval: the two runs take 20 s each, side by side.
	ctl := startController(t)
	for _, run := range []*v1alpha1.AnalysisRun{fast(gate, nil, ptr(2)), fast(guard, nil, ptr(2))} {
		t.Run(run.Name, func(t *testing.T) {
			t.Parallel()
			got := ctl.analyze(t, run, nil)
			if got.Status.Phase != v1alpha1.AnalysisPhaseError || got.Status.MetricResults[0].ConsecutiveError != 3 {
				t.Errorf("run %s after %d consecutive errors; want Error after 3: %s", got.Status.Phase,
					got.Status.MetricResults[0].ConsecutiveError, phases(got))
			}
		})
	}
}

// TestHold: Argo declares 10% but the traffic splits 30/70, as when the
// routing is not what Argo set: canaryd's SRM check holds the release. The
// gate measures hold, Inconclusive (Argo pauses once the budget is spent),
// and the guard stays Successful: never Failed. It fails by luck if the
// SRM check does not fire within 120 s of 300 canary requests/s against
// the 100/s declared (it needs a few hundred requests; fixed seed: the
// same outcome at every run), or if canaryd rolls the good canary back
// first (at most alpha = 1e-4).
//
// The spec's settle is 5 s here: canaryd checks the split only after a
// step's settle (default 1 min), and the step's min_duration (20 s) would
// let the gate pass before that.
func TestHold(t *testing.T) {
	if testing.Short() {
		t.Skip("produces minutes of event time")
	}
	c := canarydtest.Start(t, judgeSpec+"settle: 5s\n")
	a := newArgo(t, c)
	tr := canarydtest.NewTraffic("support-agent", base, good, 1000, 30, time.Now().Add(-50*time.Minute), 4)
	gate := a.gate(10)
	a.measure(gate)
	var m v1alpha1.Measurement
	for s := 1; s <= 120 && m.Value != `"hold"`; s++ {
		a.c.Produce(tr.Second())
		if s%5 != 0 {
			continue
		}
		a.c.Sync(tr)
		m = a.measure(gate)
		g := a.measure(a.guard)
		if m.Phase != v1alpha1.AnalysisPhaseInconclusive || g.Phase != v1alpha1.AnalysisPhaseSuccessful {
			t.Fatalf("after %ds: gate %s (%s %s), guard %s (%s %s); want Inconclusive and Successful", s,
				m.Phase, m.Value, m.Message, g.Phase, g.Value, g.Message)
		}
	}
	if m.Value != `"hold"` {
		t.Fatalf("gate %s (%s) after 120 s at 30%% declared as 10%%; want hold", m.Phase, m.Value)
	}
	ctl := startController(t)
	run := ctl.analyze(t, fast(gate, ptr(3), nil), nil)
	if run.Status.Phase != v1alpha1.AnalysisPhaseInconclusive {
		t.Errorf("gate run %s; want Inconclusive: %s", run.Status.Phase, phases(run))
	}
}

// TestUnknownRollout: a rollout argument canaryd does not know (a typo, a
// spec not deployed) is a measurement Error (404), never a verdict: Argo
// aborts only after consecutiveErrorLimit, as with canaryd unreachable.
func TestUnknownRollout(t *testing.T) {
	c, a := start(t)
	args := rolloutArgs(t, a.ro, a.ro.Spec.Strategy.Canary.Steps[1].Analysis.Args, c.URL)
	for i := range args {
		if args[i].Name == "rollout" {
			args[i].Value = ptr("no-such-agent")
		}
	}
	run := newRun(t, a.tpls["canaryd-gate"], args, "typo")
	if m := a.measure(run); m.Phase != v1alpha1.AnalysisPhaseError || !strings.Contains(m.Message, "404") {
		t.Errorf("measurement %s (%s); want Error (404)", m.Phase, m.Message)
	}
}
