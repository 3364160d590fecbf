// Package detector judges a canary against its baseline with anytime-valid
// sequential tests and turns the evidence into decisions: continue, the next
// traffic step (set_weight), promote, rollback or hold.
//
// Everything here is a pure function of the windows observed and the time
// passed in: no clock, no I/O. The same sequence of windows always yields the
// same verdicts and the same commands, which is what makes commands
// idempotent across a replay.
//
// Tests (each anytime-valid; the rollout's alpha is split evenly across the
// rollback tests that are enabled):
//   - error_rate: conditional (Fisher noncentral hypergeometric) mixture
//     e-value on canary errors given each stratum's total, strata = closed
//     window × segment (see conditional.go);
//   - latency_p95: the same conditional test on exceedances of a threshold
//     that is predictable — the baseline's p95 in that segment from earlier
//     windows — counted exactly on the shared sketch buckets;
//   - slo_error_rate, slo_latency_p95: one-sample Bernoulli mixture e-values
//     against absolute limits (guard rails), when the spec sets them.
//
// Rollback tests accumulate over the whole rollout (one experiment, one
// alpha). Promotion tests (non-inferiority at the spec's margins) restart at
// each step, so each step's promotion rests on that step's traffic.
package detector

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/inferensys/canaryd/schemas"
	"github.com/inferensys/canaryd/window"
)

// ActionContinue is the verdict when there is not enough evidence yet: never
// an error, never a rollback.
const ActionContinue schemas.Action = "continue"

// minBaselineForThreshold is how many baseline latencies a segment needs
// before its p95 is used as a latency threshold.
const minBaselineForThreshold = 100

// Judge holds the sequential state of one rollout. Not safe for concurrent
// use; its owner serialises Observe and Decide.
type Judge struct {
	spec Spec

	step      int   // index into spec.Steps; -1 before the first set_weight
	stepStart int64 // event time (unix ns) at which the step began
	final     schemas.Action
	now       int64 // newest watermark observed
	windows   int

	rbErr, rbLat     Conditional // rollback: whole rollout
	stepErr, stepLat Conditional // promotion: current step
	sloErr, sloLat   Bernoulli

	baseLat map[window.Segment]*window.Agg // baseline latency per segment, for thresholds

	total      map[string]*window.Agg // per version, request segments, whole rollout
	phase      map[string]*window.Agg // per version, request segments, current step
	sessions   map[string]*window.Agg // per version, agent/task segments, whole rollout
	errorTypes []string

	last Verdict
}

// NewJudge returns the judge of a validated spec.
func NewJudge(spec Spec) *Judge {
	j := &Judge{
		spec:     spec,
		step:     -1,
		baseLat:  map[window.Segment]*window.Agg{},
		total:    map[string]*window.Agg{},
		phase:    map[string]*window.Agg{},
		sessions: map[string]*window.Agg{},
	}
	j.sloErr.P0 = spec.SLO.MaxErrorRate
	j.sloLat.P0 = 0.05
	j.last = Verdict{Rollout: spec.Rollout, Action: ActionContinue, Step: -1, Reason: "waiting for the first events of " + spec.Rollout}
	return j
}

// Spec returns the judge's spec.
func (j *Judge) Spec() Spec { return j.spec }

// IsRequest reports whether a segment's events are requests (the unit of the
// error-rate and latency tests) rather than session summaries or evaluations.
func IsRequest(k schemas.Kind) bool {
	switch k {
	case schemas.KindLLM, schemas.KindTool, schemas.KindRetrieval, schemas.KindOther:
		return true
	}
	return false
}

// Observe folds one closed window in. Windows should arrive in order of
// their start per partition; each (window, segment) is one stratum.
func (j *Judge) Observe(c window.Closed) {
	j.windows++
	j.now = max(j.now, c.Watermark)
	j.errorTypes = c.ErrorTypes
	inStep := j.step >= 0 && c.Start >= j.stepStart
	bv, cv := j.spec.Baseline, j.spec.Canary
	for _, s := range c.Series {
		if !IsRequest(s.Segment.Kind) {
			mergeInto(j.sessions, s.Version, s.Agg)
			continue
		}
		mergeInto(j.total, s.Version, s.Agg)
		if inStep {
			mergeInto(j.phase, s.Version, s.Agg)
		}
		if s.Version != cv {
			continue
		}
		cAgg := s.Agg
		if j.spec.SLO.MaxErrorRate > 0 {
			j.sloErr.Observe(cAgg.Count, cAgg.Errors)
		}
		if j.spec.SLO.MaxP95MS > 0 {
			j.sloLat.Observe(cAgg.LatencyCount(), cAgg.CountAbove(window.Mapping.Index(j.spec.SLO.MaxP95MS)))
		}
		bAgg := findSeries(c.Series, bv, s.Segment)
		if bAgg == nil {
			continue
		}
		j.rbErr.Observe(bAgg.Count, bAgg.Errors, cAgg.Count, cAgg.Errors)
		if inStep {
			j.stepErr.Observe(bAgg.Count, bAgg.Errors, cAgg.Count, cAgg.Errors)
		}
		if ref := j.baseLat[s.Segment]; ref != nil && ref.LatencyCount() >= minBaselineForThreshold {
			q := ref.Quantile(0.95)
			k := window.Mapping.Index(q)
			nb, xb, nc := bAgg.LatencyCount(), bAgg.CountAbove(k), cAgg.LatencyCount()
			j.rbLat.Observe(nb, xb, nc, cAgg.CountAbove(k))
			if inStep {
				kc := window.Mapping.Index(q * (1 + j.spec.Metrics.Latency.Margin))
				j.stepLat.Observe(nb, xb, nc, cAgg.CountAbove(kc))
			}
		}
	}
	// Thresholds for later windows learn from this one only now, so that
	// each window's threshold was fixed before its data (predictable).
	for _, s := range c.Series {
		if s.Version == bv && IsRequest(s.Segment.Kind) {
			ref := j.baseLat[s.Segment]
			if ref == nil {
				ref = window.NewAgg()
				j.baseLat[s.Segment] = ref
			}
			ref.Merge(s.Agg)
		}
	}
}

// findSeries finds version v's series for seg in a window's series.
func findSeries(ss []window.Series, v string, seg window.Segment) *window.Agg {
	for _, s := range ss {
		if s.Version == v && s.Segment == seg {
			return s.Agg
		}
	}
	return nil
}

func mergeInto(m map[string]*window.Agg, v string, a *window.Agg) {
	t := m[v]
	if t == nil {
		t = window.NewAgg()
		m[v] = t
	}
	t.Merge(a)
}

// Num is a float64 that encodes NaN and ±Inf as JSON null.
type Num float64

// MarshalJSON implements json.Marshaler.
func (n Num) MarshalJSON() ([]byte, error) {
	f := float64(n)
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return []byte("null"), nil
	}
	return json.Marshal(f)
}

// TestEvidence is one test's state in a verdict.
type TestEvidence struct {
	Name      string `json:"name"` // error_rate, latency_p95, slo_error_rate, slo_latency_p95
	Role      string `json:"role"` // rollback or promote
	NBaseline uint64 `json:"n_baseline"`
	NCanary   uint64 `json:"n_canary"`
	// Baseline and Canary are the estimates compared: error rates, or the
	// share of requests above the p95 threshold.
	Baseline Num `json:"baseline"`
	Canary   Num `json:"canary"`
	// OddsRatio with its anytime-valid (1−alpha) interval [Lower, Upper].
	OddsRatio Num `json:"odds_ratio"`
	Lower     Num `json:"lower"`
	Upper     Num `json:"upper"`
	// Margin is the odds ratio the promotion test must get below (promote role).
	Margin    Num     `json:"margin,omitempty"`
	EValue    Num     `json:"e_value"`
	Threshold Num     `json:"threshold"` // 1/alpha
	Alpha     float64 `json:"alpha"`
	// Passed: for a rollback test, the test fired; for a promote test, the
	// margin is established.
	Passed bool `json:"passed"`
}

// ArmSummary summarises one version's requests.
type ArmSummary struct {
	Version      string  `json:"version"`
	Requests     uint64  `json:"requests"`
	Errors       uint64  `json:"errors"`
	ErrorRate    Num     `json:"error_rate"`
	P50MS        Num     `json:"p50_ms"`
	P95MS        Num     `json:"p95_ms"`
	P99MS        Num     `json:"p99_ms"`
	InputTokens  float64 `json:"input_tokens"`
	OutputTokens float64 `json:"output_tokens"`
	CostUSD      float64 `json:"cost_usd"`
	Sessions     uint64  `json:"sessions"`
	SessionOK    uint64  `json:"sessions_succeeded"`
	// ErrorTypes counts errors by type (top names, the rest as "_other").
	ErrorTypes map[string]uint64 `json:"error_types,omitempty"`
}

// Verdict is a decision with its evidence.
type Verdict struct {
	Rollout string         `json:"rollout"`
	Action  schemas.Action `json:"action"`
	// Step is the index of the step the verdict was taken in (-1: not started).
	Step   int       `json:"step"`
	Weight int       `json:"weight"`
	Reason string    `json:"reason"`
	At     time.Time `json:"at"` // event time of the decision
	// StepElapsed is how long the current step has run, in event time.
	StepElapsedS float64        `json:"step_elapsed_s"`
	Tests        []TestEvidence `json:"tests,omitempty"`
	Baseline     ArmSummary     `json:"baseline_step"`
	Canary       ArmSummary     `json:"canary_step"`
}

// Status is a rollout's state for the HTTP API and the terminal.
type Status struct {
	Rollout   string       `json:"rollout"`
	Baseline  string       `json:"baseline"`
	Canary    string       `json:"canary"`
	Step      int          `json:"step"`
	Steps     int          `json:"steps"` // judged steps (a final 100% step is the promotion)
	Weight    int          `json:"weight"`
	Final     string       `json:"final,omitempty"`
	Windows   int          `json:"windows"`
	Watermark time.Time    `json:"watermark"`
	Verdict   Verdict      `json:"verdict"`
	Totals    []ArmSummary `json:"totals"` // every version seen, whole rollout
}

// Status returns the rollout's current state.
func (j *Judge) Status() Status {
	st := Status{
		Rollout: j.spec.Rollout, Baseline: j.spec.Baseline, Canary: j.spec.Canary,
		Step: j.step, Steps: j.judgedSteps(), Weight: j.weight(), Final: string(j.final),
		Windows: j.windows, Verdict: j.last,
	}
	if j.now != 0 {
		st.Watermark = time.Unix(0, j.now).UTC()
	}
	for _, v := range sortedKeys(j.total, j.sessions) {
		st.Totals = append(st.Totals, j.summary(v, j.total[v], j.sessions[v]))
	}
	return st
}

// Final returns the final action (promote or rollback), or "" while the
// rollout goes on.
func (j *Judge) Final() schemas.Action { return j.final }

func (j *Judge) weight() int {
	switch {
	case j.final == schemas.ActionPromote:
		return 100
	case j.final == schemas.ActionRollback || j.step < 0:
		return 0
	}
	return j.spec.Steps[j.step].Weight
}

// judgedSteps is how many steps are judged: a step at weight 100 is the
// promotion itself, so it is not judged (there is no baseline left to compare).
func (j *Judge) judgedSteps() int {
	n := len(j.spec.Steps)
	if j.spec.Steps[n-1].Weight == 100 {
		n--
	}
	return max(n, 1)
}

// Decide returns the verdict at event time now (normally the newest
// watermark) and, when it changes the rollout's state, the command to send.
// A nil command means nothing to send.
func (j *Judge) Decide(now int64) (Verdict, *schemas.Command) {
	now = max(now, j.now)
	if j.final != "" {
		return j.last, nil
	}
	if j.windows == 0 {
		// No traffic yet: nothing to judge, nothing to start.
		return j.last, nil
	}
	if j.step < 0 {
		j.startStep(0, now)
		v := j.verdict(schemas.ActionSetWeight, now, fmt.Sprintf("start: canary %s at %d%% (step 1 of %d)", j.spec.Canary, j.weight(), j.judgedSteps()))
		return v, j.command(v)
	}
	alphaRB := j.spec.Alpha / float64(j.rollbackTests())
	tests := j.tests(alphaRB)
	for _, t := range tests {
		if t.Role == "rollback" && t.Passed {
			j.final = schemas.ActionRollback
			v := j.verdict(schemas.ActionRollback, now, "rollback: "+describe(t, j.spec)+fmt.Sprintf(" after %d canary requests", j.arm(j.total, j.spec.Canary).Requests))
			v.Tests = tests
			return v, j.command(v)
		}
	}
	st := j.spec.Steps[j.step]
	elapsed := time.Duration(now - j.stepStart)
	canaryN := j.arm(j.phase, j.spec.Canary).Requests
	var waiting []string
	if elapsed < time.Duration(st.MinDuration) {
		waiting = append(waiting, fmt.Sprintf("%s of %s", elapsed.Truncate(time.Second), time.Duration(st.MinDuration)))
	}
	if canaryN < st.MinCanaryEvents {
		waiting = append(waiting, fmt.Sprintf("%d of %d canary requests", canaryN, st.MinCanaryEvents))
	}
	var notYet []string
	var proofs []string
	for _, t := range tests {
		if t.Role != "promote" {
			continue
		}
		if !t.Passed {
			notYet = append(notYet, fmt.Sprintf("%s e=%.3g<%.3g", t.Name, float64(t.EValue), float64(t.Threshold)))
		} else {
			proofs = append(proofs, describe(t, j.spec))
		}
	}
	if len(waiting) == 0 && len(notYet) == 0 {
		next := j.step + 1
		if next >= j.judgedSteps() {
			j.final = schemas.ActionPromote
			v := j.verdict(schemas.ActionPromote, now, fmt.Sprintf("promote %s to 100%% after %d steps: %s", j.spec.Canary, j.judgedSteps(), strings.Join(proofs, "; ")))
			v.Tests = tests
			return v, j.command(v)
		}
		reason := fmt.Sprintf("step %d of %d passed at %d%% (%d canary requests in %s): %s", j.step+1, j.judgedSteps(), st.Weight, canaryN, elapsed.Truncate(time.Second), strings.Join(proofs, "; "))
		j.startStep(next, now)
		v := j.verdict(schemas.ActionSetWeight, now, reason+fmt.Sprintf(" → %d%%", j.weight()))
		v.Tests = tests
		return v, j.command(v)
	}
	reason := fmt.Sprintf("watching step %d of %d at %d%%", j.step+1, j.judgedSteps(), st.Weight)
	if len(waiting) > 0 {
		reason += ": " + strings.Join(waiting, ", ")
	}
	if len(notYet) > 0 {
		reason += "; not yet shown: " + strings.Join(notYet, ", ")
	}
	v := j.verdict(ActionContinue, now, reason)
	v.Tests = tests
	j.last = v
	return v, nil
}

func (j *Judge) rollbackTests() int {
	n := 0
	if !j.spec.Metrics.ErrorRate.Disabled {
		n++
	}
	if !j.spec.Metrics.Latency.Disabled {
		n++
	}
	if j.spec.SLO.MaxErrorRate > 0 {
		n++
	}
	if j.spec.SLO.MaxP95MS > 0 {
		n++
	}
	return max(n, 1)
}

func (j *Judge) startStep(i int, now int64) {
	j.step = i
	j.stepStart = now
	j.stepErr = Conditional{}
	j.stepLat = Conditional{}
	j.phase = map[string]*window.Agg{}
}

// tests evaluates every enabled test.
func (j *Judge) tests(alphaRB float64) []TestEvidence {
	var out []TestEvidence
	alphaP := j.spec.Alpha / 2 // promotion: split over its two tests
	cond := func(name, role string, c *Conditional, alpha, margin float64) TestEvidence {
		t := TestEvidence{Name: name, Role: role, NBaseline: c.NB, NCanary: c.NC, Alpha: alpha, Threshold: Num(1 / alpha),
			Baseline: Num(ratio(c.XB, c.NB)), Canary: Num(ratio(c.XC, c.NC)), OddsRatio: Num(c.OddsRatio())}
		lo, hi := c.Bounds(alpha)
		t.Lower, t.Upper = Num(lo), Num(hi)
		if role == "rollback" {
			t.EValue = Num(c.EUpper(1))
		} else {
			t.Margin = Num(margin)
			t.EValue = Num(c.ELower(margin))
		}
		t.Passed = float64(t.EValue) >= 1/alpha
		return t
	}
	if !j.spec.Metrics.ErrorRate.Disabled {
		out = append(out, cond("error_rate", "rollback", &j.rbErr, alphaRB, 0))
		out = append(out, cond("error_rate", "promote", &j.stepErr, alphaP, j.spec.Metrics.ErrorRate.Margin))
	}
	if !j.spec.Metrics.Latency.Disabled {
		out = append(out, cond("latency_p95", "rollback", &j.rbLat, alphaRB, 0))
		// The margin is built into the canary's threshold (p95 × (1+margin)),
		// so non-inferiority is "odds ratio below 1" on those counts.
		out = append(out, cond("latency_p95", "promote", &j.stepLat, alphaP, 1))
	}
	slo := func(name string, b *Bernoulli, alpha float64) TestEvidence {
		e := b.E()
		return TestEvidence{Name: name, Role: "rollback", NCanary: b.N, Canary: Num(ratio(b.X, b.N)), Baseline: Num(b.P0),
			OddsRatio: Num(math.NaN()), Lower: Num(math.NaN()), Upper: Num(math.NaN()),
			EValue: Num(e), Threshold: Num(1 / alpha), Alpha: alpha, Passed: e >= 1/alpha}
	}
	if j.spec.SLO.MaxErrorRate > 0 {
		out = append(out, slo("slo_error_rate", &j.sloErr, alphaRB))
	}
	if j.spec.SLO.MaxP95MS > 0 {
		out = append(out, slo("slo_latency_p95", &j.sloLat, alphaRB))
	}
	return out
}

// describe renders one test's evidence as a readable phrase.
func describe(t TestEvidence, s Spec) string {
	switch t.Name {
	case "error_rate":
		if t.Role == "rollback" {
			return fmt.Sprintf("error rate %.2f%% vs %.2f%% (odds ×%.2f, bounds ×%.2f–%s), e=%.3g ≥ %.3g",
				100*float64(t.Canary), 100*float64(t.Baseline), float64(t.OddsRatio), float64(t.Lower), fmtUpper(t.Upper), float64(t.EValue), float64(t.Threshold))
		}
		return fmt.Sprintf("error rate %.2f%% vs %.2f%%, odds ≤ ×%.2f < ×%.2f margin (e=%.3g)",
			100*float64(t.Canary), 100*float64(t.Baseline), float64(t.Upper), float64(t.Margin), float64(t.EValue))
	case "latency_p95":
		if t.Role == "rollback" {
			return fmt.Sprintf("p95 latency: %.1f%% of canary requests above the baseline's p95 vs %.1f%% (odds ×%.2f, bounds ×%.2f–%s), e=%.3g ≥ %.3g",
				100*float64(t.Canary), 100*float64(t.Baseline), float64(t.OddsRatio), float64(t.Lower), fmtUpper(t.Upper), float64(t.EValue), float64(t.Threshold))
		}
		return fmt.Sprintf("p95 latency within +%.0f%% of baseline (e=%.3g)", 100*s.Metrics.Latency.Margin, float64(t.EValue))
	case "slo_error_rate":
		return fmt.Sprintf("SLO: canary error rate %.2f%% above the %.2f%% limit, e=%.3g ≥ %.3g",
			100*float64(t.Canary), 100*float64(t.Baseline), float64(t.EValue), float64(t.Threshold))
	case "slo_latency_p95":
		return fmt.Sprintf("SLO: %.1f%% of canary requests slower than %.0f ms (limit 5%%), e=%.3g ≥ %.3g",
			100*float64(t.Canary), s.SLO.MaxP95MS, float64(t.EValue), float64(t.Threshold))
	}
	return t.Name
}

func fmtUpper(u Num) string {
	if math.IsInf(float64(u), 1) {
		return "∞"
	}
	return fmt.Sprintf("×%.2f", float64(u))
}

func (j *Judge) verdict(a schemas.Action, now int64, reason string) Verdict {
	v := Verdict{
		Rollout: j.spec.Rollout, Action: a, Step: j.step, Weight: j.weight(), Reason: reason,
		At: time.Unix(0, now).UTC(), Baseline: j.arm(j.phase, j.spec.Baseline), Canary: j.arm(j.phase, j.spec.Canary),
	}
	if j.step >= 0 {
		v.StepElapsedS = time.Duration(now - j.stepStart).Seconds()
	}
	j.last = v
	return v
}

func (j *Judge) arm(m map[string]*window.Agg, version string) ArmSummary {
	return j.summary(version, m[version], nil)
}

func (j *Judge) summary(version string, a, sess *window.Agg) ArmSummary {
	s := ArmSummary{Version: version, ErrorRate: Num(math.NaN()), P50MS: Num(math.NaN()), P95MS: Num(math.NaN()), P99MS: Num(math.NaN())}
	if sess != nil {
		s.Sessions = sess.Count
		s.SessionOK = sess.Successes
	}
	if a == nil {
		return s
	}
	s.Requests, s.Errors = a.Count, a.Errors
	s.ErrorRate = Num(ratio(a.Errors, a.Count))
	s.P50MS, s.P95MS, s.P99MS = Num(a.Quantile(0.5)), Num(a.Quantile(0.95)), Num(a.Quantile(0.99))
	s.InputTokens, s.OutputTokens, s.CostUSD = a.InputTokens, a.OutputTokens, a.CostUSD
	for i, n := range a.ErrorTypes {
		if n == 0 {
			continue
		}
		if s.ErrorTypes == nil {
			s.ErrorTypes = map[string]uint64{}
		}
		name := window.OtherName
		if i < len(j.errorTypes) {
			name = j.errorTypes[i]
		}
		s.ErrorTypes[name] += n
	}
	return s
}

func (j *Judge) command(v Verdict) *schemas.Command {
	ev, err := json.Marshal(struct {
		Tests    []TestEvidence `json:"tests,omitempty"`
		Baseline ArmSummary     `json:"baseline_step"`
		Canary   ArmSummary     `json:"canary_step"`
	}{v.Tests, v.Baseline, v.Canary})
	if err != nil {
		panic("BUG: evidence does not encode: " + err.Error())
	}
	step := j.step
	seq := uint64(step + 1)
	if v.Action == schemas.ActionPromote || v.Action == schemas.ActionRollback {
		// Final commands come after every set_weight a rollout can send.
		step = len(j.spec.Steps)
		seq = uint64(j.judgedSteps() + 1)
	}
	return &schemas.Command{
		CommandID:    schemas.CommandID(j.spec.Rollout, j.spec.Baseline, j.spec.Canary, v.Action, step, v.Weight),
		Seq:          seq,
		Rollout:      j.spec.Rollout,
		Baseline:     j.spec.Baseline,
		Canary:       j.spec.Canary,
		Action:       v.Action,
		Weight:       v.Weight,
		Step:         step,
		Reason:       v.Reason,
		Evidence:     ev,
		DecidedAt:    v.At,
		DeploymentID: j.spec.DeploymentID,
		Commit:       j.spec.Commit,
	}
}

func ratio(x, n uint64) float64 {
	if n == 0 {
		return math.NaN()
	}
	return float64(x) / float64(n)
}

func sortedKeys(ms ...map[string]*window.Agg) []string {
	seen := map[string]bool{}
	var out []string
	for _, m := range ms {
		for k := range m {
			if !seen[k] {
				seen[k] = true
				out = append(out, k)
			}
		}
	}
	slices.Sort(out)
	return out
}

// Restore resumes the rollout from the latest command an earlier run sent
// (read back from the control topic): a final command ends the rollout
// again; a set_weight resumes at its step, from its decision time. Evidence
// gathered before the restart is not restored (checkpoints will carry it).
// It reports whether the command applied to this rollout's versions.
func (j *Judge) Restore(last *schemas.Command) bool {
	if last.Baseline != j.spec.Baseline || last.Canary != j.spec.Canary {
		return false
	}
	at := last.DecidedAt.UnixNano()
	switch last.Action {
	case schemas.ActionPromote, schemas.ActionRollback:
		j.final = last.Action
		j.step = min(max(last.Step, 0), len(j.spec.Steps)-1)
		j.last = Verdict{Rollout: j.spec.Rollout, Action: last.Action, Step: j.step, Weight: last.Weight, Reason: last.Reason, At: last.DecidedAt}
	case schemas.ActionSetWeight:
		if last.Step < 0 || last.Step >= len(j.spec.Steps) {
			return false
		}
		j.startStep(last.Step, at)
		j.last = Verdict{Rollout: j.spec.Rollout, Action: last.Action, Step: j.step, Weight: last.Weight, Reason: last.Reason, At: last.DecidedAt}
	default:
		return false
	}
	return true
}
