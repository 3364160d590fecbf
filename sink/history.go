package sink

import (
	"time"

	"github.com/inferensys/canaryd/detector"
)

// HistorySource is what a StatusSource also implements when it keeps each
// rollout's recent verdicts: GET /v1/rollouts/{id}/history serves them (the
// status page plots the e-values from it). The status gives the latest
// verdict only.
type HistorySource interface {
	// History returns the rollout's verdicts, oldest first, and reports
	// false for a rollout it keeps none of.
	History(rollout string) (History, bool)
}

// History is a rollout's recent verdicts, as the judge decided them (one
// per closed window), thinned to a bounded number of points.
type History struct {
	Rollout  string `json:"rollout"`
	Baseline string `json:"baseline"` // the release's versions: a new release starts a new history
	Canary   string `json:"canary"`
	// Capacity is how many points are kept at most; Stride is how many
	// verdicts each kept point stands for now (it doubles each time the
	// history is full, so the whole release stays covered). Decisions
	// other than continue are always kept, and the last point is always
	// the latest verdict.
	Capacity int            `json:"capacity"`
	Stride   int            `json:"stride"`
	Points   []HistoryPoint `json:"points"`
	// Events are what people and controllers did to the release, oldest
	// first (the last HistoryEvents): operator actions and controllers'
	// judge calls that changed its weight or ended it.
	Events []HistoryEvent `json:"events"`
}

// HistoryEvents bounds the events a history keeps per release.
const HistoryEvents = 64

// HistoryEvent is one operator action or controller call on a release.
type HistoryEvent struct {
	At time.Time `json:"at"` // canaryd's clock when it was accepted
	// Kind is "operator" (pause, resume, approve, abort, retry, start) or
	// "controller" (a judge call that declared a weight or ended the
	// release).
	Kind   string `json:"kind"`
	Action string `json:"action"` // the operator action, or declare / promote / rollback / abort
	By     string `json:"by"`     // who: the operator (or token name), or the controller (argo, flagger, …)
	Reason string `json:"reason,omitempty"`
	Weight *int   `json:"weight,omitempty"` // the weight a controller declared
}

// HistoryPoint is one verdict: its tests' e-values and the step's two arms.
type HistoryPoint struct {
	At     time.Time `json:"at"` // event time of the verdict (detector.Verdict.At)
	Step   int       `json:"step"`
	Weight int       `json:"weight"`
	Action string    `json:"action"`
	// Reason is set on decisions other than continue.
	Reason   string        `json:"reason,omitempty"`
	Tests    []HistoryTest `json:"tests"`
	Baseline HistoryArm    `json:"baseline"`
	Canary   HistoryArm    `json:"canary"`
}

// HistoryTest is one test's e-value against its threshold at a verdict.
type HistoryTest struct {
	Name      string       `json:"name"`
	Role      string       `json:"role"`
	EValue    detector.Num `json:"e_value"`
	Threshold detector.Num `json:"threshold"`
	Passed    bool         `json:"passed"`
}

// HistoryArm is one version's requests in the step so far at a verdict.
type HistoryArm struct {
	Requests  uint64       `json:"requests"`
	ErrorRate detector.Num `json:"error_rate"`
	P95MS     detector.Num `json:"p95_ms"`
}
