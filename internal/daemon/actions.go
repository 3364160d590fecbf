package daemon

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/inferensys/canaryd/detector"
	"github.com/inferensys/canaryd/sink"
)

var _ sink.ActionSource = (*Daemon)(nil)

// Act carries out an operator action (sink.ActionSource): pause, resume,
// approve, abort, retry, or start a release of a known rollout with another
// canary version. It changes the judge under d.mu (between two windows),
// records who, when and why in the judge's audit trail (checkpointed with
// its state), queues the command an abort decides, and returns the
// rollout's status. Refusals wrap sink's errors: unknown rollout (404),
// invalid request (400), not applicable now (409).
func (d *Daemon) Act(_ context.Context, rollout, action string, req sink.ActionRequest) (detector.Status, error) {
	op := detector.OpRecord{By: req.By, Reason: req.Reason, At: time.Now().UTC()}
	if op.By == "" {
		op.By = req.Token
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	j := d.judges[rollout]
	if tpl, ok := d.autoSpecs[rollout]; ok && j == nil {
		if action != "start" {
			return detector.Status{}, fmt.Errorf("%w: %s has no release yet (canary: auto waits for a new version, or start one)", sink.ErrConflict, rollout)
		}
		j = detector.NewJudge(tpl) // a stand-in that startRelease replaces
	}
	if j == nil {
		return detector.Status{}, fmt.Errorf("%w: %s is not in the specs", sink.ErrUnknownRollout, rollout)
	}
	if req.Canary != "" && action != "start" && req.Canary != j.Spec().Canary {
		return detector.Status{}, fmt.Errorf("%w: %s judges canary %s, not %s", sink.ErrConflict, rollout, j.Spec().Canary, req.Canary)
	}
	var err error
	switch action {
	case detector.OpPause:
		err = j.Pause(op)
	case detector.OpResume:
		err = j.Resume(op)
	case detector.OpApprove:
		err = j.Approve(op)
	case detector.OpAbort:
		v, cmd, aerr := j.Abort(op)
		if err = aerr; err == nil {
			d.outbox.push(pending{cmd: cmd, v: v, gen: d.gen[rollout]})
		}
	case detector.OpRetry:
		var n *detector.Judge
		if n, err = j.Retry(op); err == nil {
			d.judges[rollout] = n
		}
	case "start":
		err = d.startRelease(j, "", req, op)
	default:
		return detector.Status{}, fmt.Errorf("%w: %s", sink.ErrUnknownAction, action)
	}
	switch {
	case errors.Is(err, detector.ErrNotNow):
		return detector.Status{}, fmt.Errorf("%w: %s: %v", sink.ErrConflict, rollout, err)
	case err != nil:
		return detector.Status{}, err
	}
	delete(d.saved, rollout) // the next checkpoint holds the change
	d.verdicts.event(d.judges[rollout].Spec(), sink.HistoryEvent{At: op.At, Kind: "operator", Action: action, By: op.By, Reason: op.Reason})
	d.cfg.Metrics.GetOrCreateCounter(fmt.Sprintf(`canaryd_operator_actions_total{rollout=%q,action=%q}`, rollout, action)).Inc()
	d.cfg.Logger.Info("operator action", "rollout", rollout, "action", action, "by", op.By, "token", req.Token, "reason", op.Reason)
	st := d.judges[rollout].Status()
	d.decorate(&st)
	return st, nil
}

// startRelease starts a release of j's rollout with the request's canary version,
// deployment id and commit (a pipeline's explicit start): j ends as
// superseded, and the new release's commands carry what is rolled out. A
// baseline other than "" replaces the spec's (a controller's call in judge
// mode). Called with d.mu held.
func (d *Daemon) startRelease(j *detector.Judge, baseline string, req sink.ActionRequest, op detector.OpRecord) error {
	s := j.Spec()
	if baseline != "" {
		s.Baseline = baseline
	}
	switch {
	case req.Canary == "":
		return fmt.Errorf("%w: start needs the canary version to roll out (\"canary\")", sink.ErrInvalidAction)
	case req.Canary == s.Baseline:
		return fmt.Errorf("%w: canary %s is the baseline of %s", sink.ErrInvalidAction, req.Canary, s.Rollout)
	case req.Canary == s.Canary && j.Final() == "":
		return fmt.Errorf("%w: %s is rolling out %s already", sink.ErrConflict, s.Rollout, s.Canary)
	}
	if !s.Auto() { // a canary: auto rollout's stand-in had no release to end
		d.endRelease(j, "superseded", fmt.Sprintf("superseded by the start of %s by %s", req.Canary, op.By), op.At)
	}
	if _, ok := d.autoSpecs[s.Rollout]; ok {
		d.markJudged(s.Rollout, req.Canary)
	}
	s.Canary, s.DeploymentID, s.Commit = req.Canary, req.DeploymentID, req.Commit
	n := d.newJudge(s)
	op.Op = "start"
	n.Note(op)
	d.judges[s.Rollout] = n
	delete(d.specErrs, s.Rollout)
	return nil
}
