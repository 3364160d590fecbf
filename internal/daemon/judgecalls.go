package daemon

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/inferensys/canaryd/detector"
	"github.com/inferensys/canaryd/schemas"
	"github.com/inferensys/canaryd/sink"
)

var _ sink.JudgeSource = (*Daemon)(nil)

// Judge applies a delivery controller's call (sink.JudgeSource): Argo
// Rollouts' web metric, Flagger's webhooks, a pipeline's polling. Under
// d.mu, between two windows, like an operator action:
//   - a canary version other than the running release's starts a new
//     release of a judge-mode rollout (its baseline from the call, else
//     the spec's); when the call's baseline is the running release's
//     canary, that release ended as promoted by the controller;
//   - a weight is declared to the judge (detector.Judge.Declare), which
//     starts a new step when it changed;
//   - an end the controller reports (Flagger's post-rollout, its events)
//     ends the release without a command.
//
// A drive-mode rollout only answers: a weight or versions that are not
// its own are refused (409), because canaryd sets its weights itself.
func (d *Daemon) Judge(_ context.Context, rollout string, call sink.JudgeCall) (detector.Status, error) {
	by := call.Controller
	if by == "" {
		by = "controller"
	}
	now := time.Now().UTC()
	d.mu.Lock()
	defer d.mu.Unlock()
	j := d.judges[rollout]
	tpl, auto := d.autoSpecs[rollout]
	if j == nil && !auto {
		return detector.Status{}, fmt.Errorf("%w: %s is not in the specs", sink.ErrUnknownRollout, rollout)
	}
	spec := tpl
	if j != nil {
		spec = j.Spec()
	}
	baseline := call.Baseline
	if baseline == "" {
		baseline = spec.Baseline
	}
	newRelease := call.Canary != "" && (j == nil || call.Canary != spec.Canary || baseline != spec.Baseline)
	changed := false
	if newRelease {
		switch {
		case !spec.JudgeOnly():
			return detector.Status{}, fmt.Errorf("%w: %s is in mode: drive and rolls out %s → %s; %s names %s → %s (start a release with POST /v1/rollouts/%s/start, or set mode: judge)",
				sink.ErrConflict, rollout, spec.Baseline, spec.Canary, by, baseline, call.Canary, rollout)
		case call.Canary == baseline:
			return detector.Status{}, fmt.Errorf("%w: canary and baseline are both %s", sink.ErrInvalidAction, baseline)
		case j != nil && call.Canary != spec.Canary && d.judgedVersion(rollout, call.Canary):
			return detector.Status{}, fmt.Errorf("%w: %s judged %s before and now judges %s; an older analysis is still calling (retry a release with POST /v1/rollouts/%s/retry)",
				sink.ErrConflict, rollout, call.Canary, spec.Canary, rollout)
		}
		op := detector.OpRecord{By: by, Reason: "a new release named by " + by, At: now}
		if j == nil {
			j = detector.NewJudge(tpl) // a stand-in that startRelease replaces
		} else if j.Final() == "" && baseline == spec.Canary {
			_ = j.End(schemas.ActionPromote, by, "made "+spec.Canary+" the baseline", now)
		}
		req := sink.ActionRequest{Canary: call.Canary, DeploymentID: call.DeploymentID, Commit: call.Commit, By: by}
		if err := d.startRelease(j, baseline, req, op); err != nil {
			return detector.Status{}, err
		}
		d.markJudged(rollout, call.Canary)
		j, changed = d.judges[rollout], true
		d.applyPendingWeight(rollout, j)
		d.cfg.Logger.Info("controller: new release", "rollout", rollout, "controller", by, "baseline", baseline, "canary", call.Canary)
	}
	if j == nil { // canary: auto with no release yet: the weight waits for it
		d.holdWeight(rollout, call, by)
		st := autoStatus(tpl)
		d.decorate(&st)
		return st, nil
	}
	if call.Revision != "" && !newRelease {
		r := d.revisions[rollout]
		switch {
		case r.j != j:
			d.revisions[rollout] = revision{j: j, rev: call.Revision} // the first call about this release
		case r.rev != call.Revision && j.Final() != "":
			// A new revision while the last release has ended: its events
			// will start its release (canary: auto); until then the ended
			// release's verdict is not this revision's.
			d.holdWeight(rollout, call, by)
			st := autoStatus(j.Spec())
			st.Baseline = j.Spec().Baseline
			st.Verdict.Reason = fmt.Sprintf("a new revision (%s) of %s: waiting for its version's events (the last release, %s, ended: %s)",
				call.Revision, rollout, j.Spec().Canary, j.Final())
			d.decorate(&st)
			return st, nil
		}
	}
	if call.Weight != nil {
		if !j.Spec().JudgeOnly() {
			if w := j.Status().Weight; *call.Weight != w {
				return detector.Status{}, fmt.Errorf("%w: %s is in mode: drive at %d%%: canaryd sets its weights (%s declared %d%%; set mode: judge to let %s set them)",
					sink.ErrConflict, rollout, w, by, *call.Weight, by)
			}
		} else {
			c, err := j.Declare(*call.Weight, by, now)
			switch {
			case errors.Is(err, detector.ErrNotNow):
				return detector.Status{}, fmt.Errorf("%w: %v", sink.ErrConflict, err)
			case err != nil:
				return detector.Status{}, fmt.Errorf("%w: %v", sink.ErrInvalidAction, err)
			}
			if c {
				changed = true
				w := *call.Weight
				d.verdicts.event(j.Spec(), sink.HistoryEvent{At: time.Now().UTC(), Kind: "controller", Action: "declare", By: by, Weight: &w})
				d.cfg.Logger.Info("controller: weight", "rollout", rollout, "controller", by, "weight", *call.Weight, "step", j.Status().Step)
			}
		}
	}
	if call.Ended != "" && j.Spec().JudgeOnly() && j.Final() == "" {
		if err := j.End(schemas.Action(call.Ended), by, call.Why, now); err != nil {
			return detector.Status{}, err
		}
		changed = true
		d.verdicts.event(j.Spec(), sink.HistoryEvent{At: time.Now().UTC(), Kind: "controller", Action: call.Ended, By: by, Reason: call.Why})
		d.cfg.Logger.Info("controller: release ended", "rollout", rollout, "controller", by, "final", call.Ended, "why", call.Why)
	}
	if changed {
		delete(d.saved, rollout) // the next checkpoint holds the change
	}
	st := j.Status()
	d.decorate(&st)
	return st, nil
}

// watchGate registers canaryd_judge_verdict{rollout}: the rollout's gate
// as a number (sink.GateCode: 0 wait, 1 pass, 2 hold, 3 fail), read at
// each scrape, so that a Flagger MetricTemplate (or any alert) can read
// the verdict; NaN once the rollout left the specs.
func (d *Daemon) watchGate(rollout string) {
	d.cfg.Metrics.GetOrCreateGauge(fmt.Sprintf(`canaryd_judge_verdict{rollout=%q}`, rollout), func() float64 {
		d.mu.Lock()
		defer d.mu.Unlock()
		if j := d.judges[rollout]; j != nil {
			return sink.GateCode(j.Gate())
		}
		if _, ok := d.autoSpecs[rollout]; ok {
			return 0
		}
		return math.NaN()
	})
}

// revision is the controller's revision (Flagger's checksum) a release
// was first called about.
type revision struct {
	j   *detector.Judge
	rev string
}

// pendingWeight is a weight a controller declared for a canary: auto
// rollout before the release it is about started (Flagger's first
// "Advance … canary weight N" comes before the new version's events).
type pendingWeight struct {
	weight int
	by     string
	at     time.Time
}

// holdWeight keeps a call's weight for the next release of a canary: auto
// judge-mode rollout. Called with d.mu held.
func (d *Daemon) holdWeight(rollout string, call sink.JudgeCall, by string) {
	if call.Weight == nil {
		return
	}
	d.pendingWeights[rollout] = pendingWeight{*call.Weight, by, time.Now().UTC()}
}

// applyPendingWeight declares a held weight to a release that has just
// started. Called with d.mu held.
func (d *Daemon) applyPendingWeight(rollout string, j *detector.Judge) {
	p, ok := d.pendingWeights[rollout]
	if !ok {
		return
	}
	delete(d.pendingWeights, rollout)
	if !j.Spec().JudgeOnly() {
		return
	}
	if _, err := j.Declare(p.weight, p.by, p.at); err == nil {
		d.cfg.Logger.Info("controller: weight declared before the release started", "rollout", rollout, "controller", p.by, "weight", p.weight)
	}
}
