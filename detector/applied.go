package detector

import (
	"time"

	"github.com/inferensys/canaryd/schemas"
)

// Routers' acknowledgements (drive mode). Once routers of a rollout are
// known to acknowledge what they apply (ExpectAcks: the daemon calls it at
// the rollout's first ack), each step waits for them: until every known
// router acknowledged the step's set_weight (Applied), the step does not
// pass, and when they have, the step starts again at that moment — its
// promotion tests, its SRM check (against the weight now really applied)
// and its minimum duration count from the acknowledgement, not from the
// decision. Rollback tests run over the whole release throughout.

// ExpectAcks makes the judge wait for routers' acknowledgements at each
// step from now on. It reports whether that is new.
func (j *Judge) ExpectAcks() bool {
	if j.expectAcks || j.spec.JudgeOnly() {
		return false
	}
	j.expectAcks = true
	return true
}

// StepCommandID returns the command id of the current step's set_weight,
// "" before the first step or after the end.
func (j *Judge) StepCommandID() string {
	if j.step < 0 || j.final != "" || j.spec.JudgeOnly() {
		return ""
	}
	return schemas.CommandID(j.spec.Rollout, j.spec.Baseline, j.idCanary(), schemas.ActionSetWeight, j.step, j.weight())
}

// Applied records that every known router acknowledged the command
// commandID at wall time at: if it is the current step's set_weight, the
// step starts again from then (see above). It reports whether it applied.
func (j *Judge) Applied(commandID string, at time.Time) bool {
	if commandID == "" || commandID != j.StepCommandID() || j.appliedStep == j.step {
		return false
	}
	j.appliedStep = j.step
	start := max(j.stepStart, at.UnixNano())
	wall := j.wall
	j.startStep(j.step, start)
	j.stepWall = max(wall, at.UnixNano())
	return true
}

// awaitingAcks reports whether the current step waits for routers.
func (j *Judge) awaitingAcks() bool {
	return j.expectAcks && j.step >= 0 && j.appliedStep != j.step
}
