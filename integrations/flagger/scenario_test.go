package flagger

import (
	"fmt"
	"strings"
	"testing"
	"time"

	flaggerv1 "github.com/fluxcd/flagger/pkg/apis/flagger/v1beta1"
	"github.com/fluxcd/flagger/pkg/controller"

	"github.com/inferensys/canaryd/internal/canarydtest"
)

// judgeSpec is the canaryd spec of the scenarios: mode judge, the versions
// from the Flagger hooks' metadata (canary: auto as a template). Its alpha,
// 1e-4, bounds the chance that canaryd rolls back a canary as good as its
// baseline at any point of the release (Ville's inequality): the chance
// that a scenario with a good canary fails by luck.
const judgeSpec = `
rollout: support-agent
mode: judge
baseline: v1
canary: auto
alpha: 0.0001
steps:
  - {weight: 10, min_duration: 20s, min_canary_events: 1000}
metrics:
  error_rate: {margin: 2.0}
  latency_p95: {margin: 0.2}
`

var (
	base = canarydtest.Arm{Version: "v1", ErrorRate: 0.01, MedianMS: 200}
	good = canarydtest.Arm{Version: "v2", ErrorRate: 0.01, MedianMS: 200}
	bad  = canarydtest.Arm{Version: "v2", ErrorRate: 0.03, MedianMS: 200} // errors ×3
)

// sim drives canaryd as Flagger's scheduler does (advanceCanary in
// pkg/controller/scheduler.go of v1.36.1, which needs a cluster and is not
// run here): per analysis interval, the rollback hooks, then (at weight 0)
// the pre-rollout hooks or (after) the rollout hooks and the metric check,
// then confirm-traffic-increase and a weight step, or at maxWeight
// confirm-promotion and the promotion; with the event messages Flagger
// sends on the way. Every call is Flagger's own client code.
type sim struct {
	*flagger
	c  *canarydtest.Canaryd
	tr *canarydtest.Traffic

	weight       int
	skew         int // the traffic's canary share is weight × skew (0: ×1)
	failedChecks int
	ended        string // promoted, rolled back
	log          []string
}

// newSim starts canaryd with spec and a replay of Flagger with the example
// Canary. With versions, its hooks' metadata name the canary and baseline
// versions, so that canaryd starts the release and takes Flagger's first
// weight at the first call; without (the example as it is), canaryd starts
// the release from the canary's events (canary: auto).
func newSim(t *testing.T, spec string, versions bool, canaryArm canarydtest.Arm, perSecond int, seed uint64) *sim {
	c := canarydtest.Start(t, spec)
	f := newFlagger(t, c.URL)
	for i := range f.cd.Spec.Analysis.Webhooks {
		if !versions {
			break
		}
		w := &f.cd.Spec.Analysis.Webhooks[i]
		md := map[string]string{"canary": canaryArm.Version, "baseline": base.Version}
		for k, v := range *w.Metadata {
			md[k] = v
		}
		w.Metadata = &md
	}
	tr := canarydtest.NewTraffic("support-agent", base, canaryArm, perSecond, 0, time.Now().Add(-50*time.Minute), seed)
	tr.FromCanary = !versions
	return &sim{flagger: f, c: c, tr: tr}
}

func (s *sim) logf(format string, args ...any) {
	s.log = append(s.log, fmt.Sprintf(format, args...))
}

// must calls a hook and fails the test on Flagger's error path (no answer
// from canaryd). Like Flagger's run*Hooks it then sends the event message
// Flagger records for the outcome (scheduler_hooks.go, scheduler.go).
func (s *sim) must(ht flaggerv1.HookType) answer {
	s.t.Helper()
	a, msg := s.hook(ht)
	if a == failure {
		s.t.Fatalf("%s hook: %s", ht, msg)
	}
	s.logf("%s: %s %s", ht, a, strings.TrimSpace(msg))
	name, cd := "canaryd-"+string(ht), s.cd
	switch {
	case ht == flaggerv1.RollbackHook && a == yes:
		s.event(false, "Rollback check %s passed", name)
	case ht == flaggerv1.RollbackHook:
		s.event(false, "Rollback hook %s not signaling a rollback", name)
	case ht == flaggerv1.ConfirmTrafficIncreaseHook && a == no:
		s.event(false, "Halt %s.%s advancement waiting for traffic increase approval %s", cd.Name, cd.Namespace, name)
	case ht == flaggerv1.ConfirmTrafficIncreaseHook:
		s.event(false, "Confirm-traffic-increase check %s passed", name)
	case ht == flaggerv1.ConfirmPromotionHook && a == no:
		s.event(false, "Halt %s.%s advancement waiting for promotion approval %s", cd.Name, cd.Namespace, name)
	case ht == flaggerv1.ConfirmPromotionHook:
		s.event(false, "Confirm-promotion check %s passed", name)
	case ht == flaggerv1.ConfirmRolloutHook && a == no:
		s.event(false, "Halt %s.%s advancement waiting for approval %s", cd.Name, cd.Namespace, name)
	case ht == flaggerv1.ConfirmRolloutHook:
		s.event(false, "Confirm-rollout check %s passed", name)
	case ht == flaggerv1.PreRolloutHook && a == no:
		s.event(false, "Halt %s.%s advancement pre-rollout check %s failed %s", cd.Name, cd.Namespace, name, msg)
	case ht == flaggerv1.PreRolloutHook:
		s.event(false, "Pre-rollout check %s passed", name)
	case ht == flaggerv1.RolloutHook && a == no:
		s.event(false, "Halt %s.%s advancement external check %s failed %s", cd.Name, cd.Namespace, name, msg)
	case ht == flaggerv1.PostRolloutHook && a == no:
		s.event(false, "Post-rollout hook %s failed %s", name, msg)
	case ht == flaggerv1.PostRolloutHook:
		s.event(false, "Post-rollout check %s passed", name)
	}
	return a
}

// begin is Flagger's start of an analysis: confirm-rollout, then the
// first interval at weight 0 with its pre-rollout hooks.
func (s *sim) begin() {
	s.t.Helper()
	// canaryd exports the gate of every rollout in its specs from its
	// start, so the metric has a value before the first release.
	if val, ok, err := s.check(); err != nil || !ok || val != 0 {
		s.t.Fatalf("metric before the analysis: %v ok=%v err=%v; want 0 (wait)", val, ok, err)
	}
	s.event(false, "New revision detected! Scaling up %s.%s", s.cd.Spec.TargetRef.Name, s.cd.Namespace)
	if a := s.must(flaggerv1.ConfirmRolloutHook); a != yes {
		s.t.Fatal("confirm-rollout: no; want yes for a known rollout")
	}
	s.cd.Status.Phase = flaggerv1.CanaryPhaseProgressing
	s.event(false, "Starting canary analysis for %s.%s", s.cd.Spec.TargetRef.Name, s.cd.Namespace)
	if a := s.must(flaggerv1.PreRolloutHook); a != yes {
		s.t.Fatal("pre-rollout: no; want yes")
	}
}

// interval runs one analysis interval (after its traffic) and reports
// whether the canary ended (promoted or rolled back).
func (s *sim) interval() bool {
	s.t.Helper()
	a := s.cd.GetAnalysis()
	if s.must(flaggerv1.RollbackHook) == yes {
		s.event(false, "Rolling back %s.%s manual webhook invoked", s.cd.Name, s.cd.Namespace)
		s.rollback()
		return true
	}
	if s.failedChecks >= a.Threshold {
		s.event(false, "Rolling back %s.%s failed checks threshold reached %d", s.cd.Name, s.cd.Namespace, s.failedChecks)
		s.rollback()
		return true
	}
	if s.weight > 0 {
		if s.must(flaggerv1.RolloutHook) != yes {
			s.failedChecks++
			return false
		}
		val, ok, err := s.check()
		s.logf("metric %s: %v ok=%v err=%v", s.metric.Name, val, ok, err)
		if err != nil {
			s.t.Fatalf("metric %s: %v", s.metric.Name, err)
		}
		if !ok {
			s.event(false, "Halt %s.%s advancement %s %.2f > %v", s.cd.Name, s.cd.Namespace, s.metric.Name, val, *s.metric.ThresholdRange.Max)
			s.failedChecks++
			return false
		}
	}
	if s.weight < a.MaxWeight {
		if s.must(flaggerv1.ConfirmTrafficIncreaseHook) != yes {
			return false
		}
		s.weight = min(s.weight+a.StepWeight, a.MaxWeight)
		s.tr.Weight = s.weight * max(s.skew, 1)
		s.event(false, "Advance %s.%s canary weight %d", s.cd.Name, s.cd.Namespace, s.weight)
		return false
	}
	if s.must(flaggerv1.ConfirmPromotionHook) != yes {
		s.cd.Status.Phase = flaggerv1.CanaryPhaseWaitingPromotion
		return false
	}
	s.event(false, "Copying %s.%s template spec to %s-primary.%s", s.cd.Spec.TargetRef.Name, s.cd.Namespace, s.cd.Spec.TargetRef.Name, s.cd.Namespace)
	s.cd.Status.Phase = flaggerv1.CanaryPhasePromoting
	s.weight, s.tr.Weight = 0, 0
	s.event(false, "Routing all traffic to primary")
	s.cd.Status.Phase = flaggerv1.CanaryPhaseSucceeded
	s.must(flaggerv1.PostRolloutHook)
	s.event(false, "Promotion completed! Scaling down %s.%s", s.cd.Spec.TargetRef.Name, s.cd.Namespace)
	s.ended = "promoted"
	return true
}

func (s *sim) rollback() {
	s.t.Helper()
	s.weight, s.tr.Weight = 0, 0
	s.cd.Status.Phase = flaggerv1.CanaryPhaseFailed
	s.event(false, "Canary failed! Scaling down %s.%s", s.cd.Spec.TargetRef.Name, s.cd.Namespace)
	s.must(flaggerv1.PostRolloutHook)
	s.ended = "rolled back"
}

// run produces traffic at the sim's weight and runs an analysis interval
// every every seconds of event time, until the canary ends or budget
// seconds have passed; it returns the seconds used.
func (s *sim) run(every, budget int) int {
	s.t.Helper()
	s.begin()
	for sec := 1; sec <= budget; sec++ {
		s.c.Produce(s.tr.Second())
		if sec%every != 0 {
			continue
		}
		s.c.Sync(s.tr)
		if s.interval() {
			return sec
		}
	}
	return budget
}

func (s *sim) dump() {
	for _, l := range s.log {
		s.t.Log(l)
	}
}

// TestHealthyCanary: Flagger, asking canaryd at every interval with the
// example Canary as it is (canaryd takes the canary from the events),
// takes a canary as good as its baseline from 10% to 50% in steps of 10
// and promotes it (confirm-promotion 2xx); the rollback hook never says
// yes and the metric never fails. It fails by luck if canaryd rolls back (at
// most alpha = 1e-4) or cannot show the canary within the margins in the
// budget (600 s at 1000 requests/s, 10-50% canary: 5 steps needing about
// 5,000 canary requests each, the README's demo passing at 4,786); with a
// fixed seed the outcome is the same at every run.
func TestHealthyCanary(t *testing.T) {
	if testing.Short() {
		t.Skip("produces minutes of event time")
	}
	s := newSim(t, judgeSpec, false, good, 1000, 1)
	sec := s.run(5, 600)
	if s.ended != "promoted" {
		s.dump()
		t.Fatalf("after %ds: %q at weight %d; want promoted", sec, s.ended, s.weight)
	}
	t.Logf("promoted after %ds of event time", sec)
	if v := verdict(t, s.c.URL, "support-agent"); v["final"] != "promote" {
		t.Errorf("canaryd's final %v (verdict %v: %v); want promote (Flagger's post-rollout and events end the release)", v["final"], v["verdict"], v["reason"])
	}
}

// TestBadCanary: errors ×3 make canaryd fail the canary: the rollback hook
// says yes (Flagger rolls back at once), the rollout hook no and the
// metric 3 (a failed check). It fails by luck if canaryd does not reach
// its rollback threshold within 300 s at 100 canary requests/s, 40 times
// the 771 canary requests after which the README's demo rolls errors ×3
// back (fixed seed: the same outcome at every run).
func TestBadCanary(t *testing.T) {
	if testing.Short() {
		t.Skip("produces minutes of event time")
	}
	s := newSim(t, judgeSpec, false, bad, 1000, 2)
	sec := s.run(5, 300)
	if s.ended != "rolled back" {
		s.dump()
		t.Fatalf("after %ds: %q at weight %d; want rolled back", sec, s.ended, s.weight)
	}
	t.Logf("rolled back after %ds of event time", sec)
	if a, _ := s.hook(flaggerv1.RolloutHook); a != no {
		t.Errorf("rollout hook after the rollback: %s; want no", a)
	}
	if a, _ := s.hook(flaggerv1.ConfirmPromotionHook); a != no {
		t.Errorf("confirm-promotion after the rollback: %s; want no", a)
	}
	if val, ok, err := s.check(); err != nil || ok || val != 3 {
		t.Errorf("metric after the rollback: %v ok=%v err=%v; want 3, a failed check", val, ok, err)
	}
}

// TestLowTraffic: a good canary with 2 requests a second at 10% for 30
// minutes of event time is never rolled back: the rollback hook never says
// yes and the metric never fails. The hooks name the versions: from the
// events alone canaryd would start the release only at a window with 10
// canary requests, and judge nothing before. A failure by luck needs canaryd to roll
// a good canary back: at most alpha = 1e-4.
func TestLowTraffic(t *testing.T) {
	if testing.Short() {
		t.Skip("produces 30 minutes of event time")
	}
	s := newSim(t, judgeSpec, true, good, 20, 3)
	// Flagger's 30 s interval.
	sec := s.run(30, 1800)
	if s.ended == "rolled back" {
		s.dump()
		t.Fatalf("rolled back after %ds of low traffic", sec)
	}
	t.Logf("after %ds of low traffic: weight %d, %q, failed checks %d", sec, s.weight, s.ended, s.failedChecks)
	if s.failedChecks != 0 {
		s.dump()
		t.Errorf("%d failed checks; want 0", s.failedChecks)
	}
}

// TestUnreachable: with canaryd unreachable every hook call ends in
// Flagger's error path (an error that is not canaryd's answer) and the
// metric has no value (Flagger: "no values found", a failed check): no
// hook says yes, so nothing is promoted and nothing is rolled back by
// canaryd's word. No statistics: deterministic.
func TestUnreachable(t *testing.T) {
	f := newFlagger(t, canarydtest.Unreachable(t))
	for _, ht := range hookTypes {
		if ht == flaggerv1.EventHook {
			continue
		}
		if a, msg := f.hook(ht); a != failure {
			t.Errorf("%s: %s %s; want Flagger's error path", ht, a, msg)
		}
	}
	for _, w := range f.cd.Spec.Analysis.Webhooks {
		if w.Type == flaggerv1.EventHook {
			if err := controller.CallEventWebhook(f.cd, w, "Starting canary analysis for support-agent.agents", "Normal"); err == nil {
				t.Error("event hook: no error; want one")
			}
		}
	}
	if val, ok, err := f.check(); err == nil || ok {
		t.Errorf("metric: %v ok=%v err=%v; want Flagger's no-values error", val, ok, err)
	}
}

// TestHold: Flagger advances to 10% but the traffic splits 30/70, as when
// the mesh does not route what Flagger set: canaryd's SRM check holds the
// release. Flagger then halts (confirm-traffic-increase no), never rolls
// back on canaryd's word (rollback no), counts no failed check (rollout
// yes, metric 2 passes), and a new analysis is not confirmed
// (confirm-rollout no). It fails by luck if the SRM check does not fire
// within 120 s of 300 canary requests/s against the 100/s declared (it
// needs a few hundred requests; fixed seed: the same outcome at every run)
// or canaryd rolls the good canary back first (at most alpha = 1e-4). The
// spec's settle is 5 s: canaryd checks the split only after a step's
// settle (default 1 min), which the step's min_duration (20 s) would let
// the gate pass before.
func TestHold(t *testing.T) {
	if testing.Short() {
		t.Skip("produces minutes of event time")
	}
	s := newSim(t, judgeSpec+"settle: 5s\n", true, good, 1000, 4)
	s.skew = 3
	sec := s.run(5, 120)
	if s.ended != "" || s.failedChecks != 0 {
		s.dump()
		t.Fatalf("after %ds: %q, %d failed checks; want neither", sec, s.ended, s.failedChecks)
	}
	if v := verdict(t, s.c.URL, "support-agent"); v["verdict"] != "hold" {
		s.dump()
		t.Fatalf("canaryd's verdict %v (%v); want hold", v["verdict"], v["reason"])
	}
	for ht, want := range map[flaggerv1.HookType]answer{
		flaggerv1.ConfirmTrafficIncreaseHook: no, flaggerv1.ConfirmPromotionHook: no, flaggerv1.RollbackHook: no,
		flaggerv1.RolloutHook: yes, flaggerv1.ConfirmRolloutHook: no, flaggerv1.PreRolloutHook: no,
	} {
		if got, msg := s.hook(ht); got != want {
			t.Errorf("%s on hold: %s %s; want %s", ht, got, msg, want)
		}
	}
	if val, ok, err := s.check(); err != nil || !ok || val != 2 {
		t.Errorf("metric on hold: %v ok=%v err=%v; want 2, passing", val, ok, err)
	}
}

// TestUnknownRollout: hooks for a rollout canaryd does not know are
// answered 404 (Flagger: an error, so no hook says yes) except event and
// post-rollout, which canaryd acknowledges whatever they name.
func TestUnknownRollout(t *testing.T) {
	c := canarydtest.Start(t, judgeSpec)
	f := newFlagger(t, c.URL)
	for i := range f.cd.Spec.Analysis.Webhooks {
		f.cd.Spec.Analysis.Webhooks[i].Metadata = &map[string]string{"rollout": "no-such-agent"}
	}
	for _, ht := range hookTypes {
		if ht == flaggerv1.EventHook {
			continue
		}
		got, msg := f.hook(ht)
		want := no
		if ht == flaggerv1.PostRolloutHook {
			want = yes
		}
		if got != want {
			t.Errorf("%s: %s %s; want %s", ht, got, msg, want)
		}
	}
}
