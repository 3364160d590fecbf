package detector

import (
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/inferensys/canaryd/schemas"
)

// Judge-only rollouts (Spec.Mode "judge"): Argo Rollouts, Flagger or a
// pipeline owns the steps. The judge sends no set_weight. Each weight the
// controller declares (Declare) is a step: the per-step promotion tests and
// the SRM check start afresh at it, SRM against the declared weight. Until a
// controller declares one, the weight is the canary's observed share of the
// step's requests and SRM is not checked (there is nothing to check the
// split against). The rollback tests run over the whole release as in drive
// mode, and a rollback or a hold (SRM, a step's max_duration) is final and
// published on the control topic like any, so that it survives restarts. A
// step whose promotion tests pass (with its min_duration, min_canary_events
// and approval met) has its gate open (Gate "pass") until the controller
// moves on: it never closes again, as anytime-valid evidence once shown
// stays shown; a later rollback overrides it.

// Gate values: what a controller asks canaryd, at the current step.
const (
	GateWait = "wait" // not enough evidence yet: never a failure
	GatePass = "pass" // the step's gate holds (drive mode: promoted)
	GateFail = "fail" // rolled back
	GateHold = "hold" // experiment invalid or the step's budget ran out: a human decides
)

// Weight sources (Status.WeightSource).
const (
	WeightCanaryd  = "canaryd"  // drive mode: the weight canaryd sent
	WeightObserved = "observed" // judge mode, no controller declared one: the canary's share of the step's requests
	WeightNone     = "none"     // judge mode, nothing declared or observed yet
)

// Gate returns the rollout's gate: fail when rolled back, hold when held,
// pass when promoted or (judge mode) when the current step's gate is open,
// else wait.
func (j *Judge) Gate() string {
	switch j.final {
	case schemas.ActionRollback:
		return GateFail
	case schemas.ActionHold:
		return GateHold
	case schemas.ActionPromote:
		return GatePass
	}
	if j.spec.JudgeOnly() && j.step >= 0 && j.passed == j.step {
		return GatePass
	}
	return GateWait
}

// Declare records the canary weight (0..100) a controller (by: "argo",
// "flagger", a pipeline's name) has set now, in judge mode. A weight other
// than the current step's starts a new step at the newest decision time;
// weight 100 is the controller's promotion and ends the release as
// promoted. The same weight again changes nothing. It reports whether the
// judge changed.
func (j *Judge) Declare(weight int, by string, at time.Time) (bool, error) {
	switch {
	case !j.spec.JudgeOnly():
		return false, notNow("%s is in mode: drive (canaryd sets its weights; use mode: judge to let %s set them)", j.spec.Rollout, by)
	case weight < 0 || weight > 100:
		return false, fmt.Errorf("weight %d is outside 0..100", weight)
	case j.final != "":
		return false, nil // ended: what a controller does next is not this release's
	case by == "":
		by = "controller"
	}
	if weight == j.declared && j.wsource == by {
		return false, nil
	}
	prev := j.weight()
	j.declared, j.wsource = weight, by
	j.record(OpRecord{Op: OpWeight, By: by, Reason: fmt.Sprintf("weight %d%%", weight), At: at.UTC()})
	if weight == 100 {
		return true, j.End(schemas.ActionPromote, by, "set the canary's weight to 100%", at)
	}
	if j.step >= 0 && weight != prev {
		j.startStep(j.step+1, j.now)
	} else if j.step >= 0 {
		j.srm.W = float64(weight) / 100 // the step's weight is now declared, not observed
	}
	return true, nil
}

// End records that the controller ended the release (promoted or rolled it
// back on its own account: Flagger's post-rollout hook, its events): the
// judge stops, with no command of its own. A release that has ended
// already keeps its end.
func (j *Judge) End(a schemas.Action, by, why string, at time.Time) error {
	if !isFinal(a) {
		return fmt.Errorf("BUG: End with %q", a)
	}
	if j.final != "" {
		return nil
	}
	j.final = a
	now := max(at.UnixNano(), j.now)
	j.verdict(a, now, fmt.Sprintf("%s: %s %s", a, by, why))
	return nil
}

// judgeStep returns the requirements of the current step in judge mode:
// the spec step with the largest weight at or below the weight in force
// (the first step below them all), or none.
func (j *Judge) judgeStep() Step {
	w := j.weight()
	var st Step
	for i, s := range j.spec.Steps {
		if i == 0 || s.Weight <= w {
			st = s
		}
	}
	return st
}

// stepSpec returns the current step's requirements in either mode.
func (j *Judge) stepSpec() Step {
	if j.spec.JudgeOnly() {
		return j.judgeStep()
	}
	return j.spec.Steps[j.step]
}

// judgeWeight returns the weight in force in judge mode and where it comes
// from: the controller's declaration, else the canary's share of the
// step's requests (of the whole release's before a step started).
func (j *Judge) judgeWeight() (int, string) {
	if j.declared >= 0 {
		return j.declared, j.wsource
	}
	m := j.phase
	if len(m) == 0 {
		m = j.total
	}
	b, c := j.arm(m, j.spec.Baseline).Requests, j.arm(m, j.spec.Canary).Requests
	if b+c == 0 {
		return 0, WeightNone
	}
	return int(math.Round(100 * float64(c) / float64(b+c))), WeightObserved
}

// srmOn reports whether SRM is checked: in drive mode except during a step
// restricted to a cohort (Step.Cohort), in judge mode once a controller
// declared the weight.
func (j *Judge) srmOn() bool {
	if j.spec.JudgeOnly() {
		return j.declared >= 0
	}
	return j.step < 0 || j.spec.Steps[j.step].Cohort == nil
}

// cohort returns the cohort of the current step for a command with action
// a: set_weight and hold carry it; promote and rollback are for everyone.
func (j *Judge) cohort(a schemas.Action) *schemas.Cohort {
	if j.step < 0 || j.step >= len(j.spec.Steps) || isFinal(a) && a != schemas.ActionHold {
		return nil
	}
	return j.spec.Steps[j.step].Cohort
}

// decideJudge is Decide's judge-mode end after the validity and rollback
// tests found nothing: no set_weight, the step's gate instead.
func (j *Judge) decideJudge(now int64, tests []TestEvidence) (Verdict, *schemas.Command) {
	w, src := j.judgeWeight()
	at := fmt.Sprintf("step %d at %d%% (weight %s)", j.step+1, w, weightFrom(src))
	if j.passed == j.step {
		v := j.verdict(ActionContinue, now, "gate open: "+j.passedWhy+"; waiting for the controller to move on")
		v.Tests, j.last.Tests = tests, tests
		return v, nil
	}
	st := j.stepSpec()
	elapsed := time.Duration(now - j.stepStart)
	canaryN := j.arm(j.phase, j.spec.Canary).Requests
	waiting := j.waiting(st, elapsed, canaryN)
	if !j.spec.Metrics.SRM.Disabled && j.srmOn() && j.srm.XB+j.srm.XC == 0 {
		// A gate must not open on a split that was never checked: SRM
		// counts the windows from settle on.
		waiting = append(waiting, fmt.Sprintf("the split at %d%% is not checked yet (from %s into the step on: settle)", w, time.Duration(j.spec.Settle)))
	}
	notYet, proofs := j.promoteProgress(tests)
	gated := st.Approval == ApprovalRequired && j.approved != j.step
	if len(waiting) == 0 && len(notYet) == 0 && gated {
		waiting = append(waiting, fmt.Sprintf("step %d passed its checks and awaits approval (approve to go on)", j.step+1))
	}
	if len(waiting) == 0 && len(notYet) == 0 {
		j.passed = j.step
		j.passedWhy = fmt.Sprintf("%s passed (%d canary requests in %s): %s", at, canaryN, elapsed.Truncate(time.Second), strings.Join(proofs, "; "))
		v := j.verdict(ActionContinue, now, "gate open: "+j.passedWhy)
		v.Tests, j.last.Tests = tests, tests
		return v, nil
	}
	if st.MaxDuration > 0 && elapsed >= time.Duration(st.MaxDuration) {
		j.final = schemas.ActionHold
		v := j.verdict(schemas.ActionHold, now, fmt.Sprintf("hold at %d%%: step %d's time budget of %s ended without enough evidence to pass its gate (%s); %s",
			w, j.step+1, time.Duration(st.MaxDuration), strings.Join(notYet, ", "), j.powerNote()))
		v.Tests, j.last.Tests = tests, tests
		return v, j.command(v)
	}
	reason := "watching " + at
	if len(waiting) > 0 {
		reason += ": " + strings.Join(waiting, ", ")
	}
	if len(notYet) > 0 {
		reason += "; not yet shown: " + strings.Join(notYet, ", ")
	}
	v := j.verdict(ActionContinue, now, reason)
	v.Tests, j.last.Tests = tests, tests
	return v, nil
}

func weightFrom(src string) string {
	switch src {
	case WeightObserved:
		return "observed in the traffic"
	case WeightNone:
		return "not known yet"
	}
	return "set by " + src
}
