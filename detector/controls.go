package detector

import (
	"errors"
	"fmt"
	"time"

	"github.com/inferensys/canaryd/schemas"
)

// Operator actions on a rollout, as the HTTP API and the CLI name them.
const (
	OpPause   = "pause"
	OpResume  = "resume"
	OpApprove = "approve"
	OpAbort   = "abort"
	OpRetry   = "retry"
	// OpWeight records a controller's declared weight (judge mode).
	OpWeight = "weight"
)

// ErrNotNow: the operator action does not apply in the rollout's present
// state (approve without a gate waiting, resume when not paused, retry of
// a rollout that has not ended, …). The judge is unchanged.
var ErrNotNow = errors.New("action does not apply now")

// OpRecord is one operator action in a rollout's audit trail: who, when,
// why. It is part of the judge's checkpointed state.
type OpRecord struct {
	Op     string    `json:"op"`
	By     string    `json:"by"`
	Reason string    `json:"reason,omitempty"`
	At     time.Time `json:"at"`
}

// maxAudit bounds a release's audit trail (the oldest records go first).
const maxAudit = 100

func (j *Judge) record(op OpRecord) {
	j.audit = append(j.audit, op)
	if len(j.audit) > maxAudit {
		j.audit = j.audit[len(j.audit)-maxAudit:]
	}
}

func notNow(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrNotNow, fmt.Sprintf(format, args...))
}

// Pause stops the rollout from passing steps (and from starting) until
// Resume; the evidence keeps accumulating and rollbacks still fire.
func (j *Judge) Pause(op OpRecord) error {
	switch {
	case j.final != "":
		return notNow("the rollout has ended (%s)", j.final)
	case j.paused:
		return notNow("already paused (%s)", j.lastOp(OpPause))
	}
	op.Op = OpPause
	j.paused = true
	j.record(op)
	return nil
}

// Resume ends a pause.
func (j *Judge) Resume(op OpRecord) error {
	if !j.paused {
		return notNow("not paused")
	}
	op.Op = OpResume
	j.paused = false
	j.record(op)
	return nil
}

// Approve opens the current step's approval gate: the step passes at the
// next window whose evidence passes it.
func (j *Judge) Approve(op OpRecord) error {
	switch {
	case j.final != "":
		return notNow("the rollout has ended (%s)", j.final)
	case j.step < 0:
		return notNow("the rollout has not started")
	case j.stepSpec().Approval != ApprovalRequired:
		return notNow("step %d has no approval gate (approval: required)", j.step+1)
	case j.approved == j.step:
		return notNow("step %d is approved already", j.step+1)
	}
	op.Op = OpApprove
	j.approved = j.step
	j.record(op)
	return nil
}

// Abort rolls the rollout back now and returns the rollback's verdict and
// command, which carry who aborted and why.
func (j *Judge) Abort(op OpRecord) (Verdict, *schemas.Command, error) {
	if j.final != "" {
		return Verdict{}, nil, notNow("the rollout has ended (%s)", j.final)
	}
	op.Op = OpAbort
	j.record(op)
	j.final = schemas.ActionRollback
	reason := "rollback: aborted by " + op.By
	if op.Reason != "" {
		reason += ": " + op.Reason
	}
	v := j.verdict(schemas.ActionRollback, max(op.At.UnixNano(), j.now), reason)
	return v, j.command(v), nil
}

// Retry starts an ended rollout (rolled back or held) again: a fresh judge
// of the same spec from its first step, with fresh evidence, the next
// attempt number (its command ids differ from the earlier attempts', so
// routers apply them) and seq continuing after the last command, the audit
// trail carried over. A promoted rollout is not retried.
func (j *Judge) Retry(op OpRecord) (*Judge, error) {
	if j.final != schemas.ActionRollback && j.final != schemas.ActionHold {
		return nil, notNow("only a rolled-back or held rollout is retried (this one: %s)", orRunning(j.final))
	}
	op.Op = OpRetry
	n := NewJudge(j.spec)
	n.attempt = j.attempt + 1
	n.expectAcks = j.expectAcks
	n.seqBase = j.seqBase + seqOffset(j.final, j.step)
	n.audit = append(n.audit, j.audit...)
	n.record(op)
	n.last.Reason = fmt.Sprintf("retry %d: waiting for the first window", n.attempt)
	return n, nil
}

func orRunning(a schemas.Action) string {
	if a == "" {
		return "running"
	}
	return string(a)
}

// lastOp describes the newest audit record of op.
func (j *Judge) lastOp(op string) string {
	for i := len(j.audit) - 1; i >= 0; i-- {
		if r := j.audit[i]; r.Op == op {
			s := op + " by " + r.By + " at " + r.At.UTC().Format(time.RFC3339)
			if r.Reason != "" {
				s += ": " + r.Reason
			}
			return s
		}
	}
	return op
}

// awaitingApproval reports whether the current step has a gate not yet
// opened.
func (j *Judge) awaitingApproval() bool {
	return j.final == "" && j.step >= 0 && j.stepSpec().Approval == ApprovalRequired && j.approved != j.step
}

// nextActions lists the operator actions that apply now.
func (j *Judge) nextActions() []string {
	switch j.final {
	case schemas.ActionPromote:
		return nil
	case schemas.ActionRollback, schemas.ActionHold:
		return []string{OpRetry}
	}
	out := []string{OpPause, OpAbort}
	if j.paused {
		out[0] = OpResume
	}
	if j.awaitingApproval() {
		out = append(out, OpApprove)
	}
	return out
}

// Note records an action taken on the rollout outside the judge (a start
// by an operator or a pipeline) in its audit trail.
func (j *Judge) Note(op OpRecord) { j.record(op) }
