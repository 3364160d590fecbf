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
