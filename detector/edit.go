package detector

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
)

// Edit applies an edited spec of the same release (same rollout, baseline
// and canary) to a running judge, for what has not been decided yet: the
// steps after the current one (weights, durations, counts; added or
// removed), the current step's minimum and maximum durations and minimum
// canary events, and the deployment id and commit the commands carry. Every
// other field shapes the tests already running (alpha and its weights,
// metrics and margins, SLOs, units, settle): changing one is refused with
// the field's name, and the judge is left unchanged. A new release (another
// canary or baseline version) is not an edit: it gets a new judge.
func (j *Judge) Edit(s Spec) error {
	old := j.spec
	if s.Rollout != old.Rollout || s.Baseline != old.Baseline || s.Canary != old.Canary {
		return fmt.Errorf("BUG: Edit of %s %s→%s with a spec of %s %s→%s", old.Rollout, old.Baseline, old.Canary, s.Rollout, s.Baseline, s.Canary)
	}
	// Everything but the editable fields must be equal.
	a, b := old, s
	a.Steps, b.Steps = nil, nil
	a.DeploymentID, b.DeploymentID, a.Commit, b.Commit = "", "", "", ""
	a.File, b.File, a.Line, b.Line = "", "", 0, 0
	if f := firstDiff(a, b); f != "" {
		return fmt.Errorf("%s: cannot change %s of a running rollout (its tests are under way); roll out a new canary version to change it", s.Rollout, f)
	}
	if s.JudgeOnly() {
		// The controller's steps: the spec's only set requirements, which
		// apply from the next window on.
		j.spec = s
		j.specHash = specHash(s)
		return nil
	}
	if len(s.Steps) <= j.step {
		return fmt.Errorf("%s: the edit has %d steps, but the rollout is already at step %d", s.Rollout, len(s.Steps), j.step+1)
	}
	for i := 0; i < j.step; i++ {
		if s.Steps[i] != old.Steps[i] {
			return fmt.Errorf("%s: cannot change step %d: it is passed", s.Rollout, i+1)
		}
	}
	if j.step >= 0 && s.Steps[j.step].Weight != old.Steps[j.step].Weight {
		return fmt.Errorf("%s: cannot change the weight of the current step %d (%d%% in force); change the steps after it", s.Rollout, j.step+1, old.Steps[j.step].Weight)
	}
	j.spec = s
	j.specHash = specHash(s)
	return nil
}

// firstDiff names the first top-level spec field (by its YAML name) whose
// value differs between a and b, or "".
func firstDiff(a, b Spec) string {
	var ma, mb map[string]json.RawMessage
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	if json.Unmarshal(ja, &ma) != nil || json.Unmarshal(jb, &mb) != nil {
		panic("BUG: a spec does not round-trip through JSON")
	}
	keys := slices.Sorted(maps.Keys(ma))
	for _, k := range keys {
		if string(ma[k]) != string(mb[k]) {
			return yamlName(k)
		}
	}
	return ""
}

// yamlName maps a Spec field's Go name (its JSON name: Spec has no json
// tags) to its YAML name.
func yamlName(goName string) string {
	names := map[string]string{"Alpha": "alpha", "Settle": "settle", "Units": "units", "Metrics": "metrics",
		"AlphaWeights": "alpha_weights", "SLO": "slo", "Mode": "mode"}
	if n, ok := names[goName]; ok {
		return n
	}
	return goName
}

// SameSpec reports whether two specs say the same (where they were read
// from aside).
func SameSpec(a, b Spec) bool { return specHash(a) == specHash(b) }
