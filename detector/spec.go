package detector

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/inferensys/canaryd/schemas"
)

// Spec declares one rollout: which versions to compare, the traffic steps,
// the false-rollback budget and the margins and SLO limits. It is read from
// YAML (see deploy/rollouts/*.yaml for examples).
type Spec struct {
	Rollout  string `yaml:"rollout"`
	Baseline string `yaml:"baseline"`
	Canary   string `yaml:"canary"`
	// Mode is who moves the traffic: "drive" (the default: canaryd sends
	// set_weight for each step and the final promote or rollback) or
	// "judge" (Argo Rollouts, Flagger or a pipeline owns the steps;
	// canaryd sends no set_weight, learns the weight in force from the
	// controller's calls, judges each weight as a step and answers whether
	// the step's gate holds; see judgemode.go). In judge mode Steps is
	// optional: a step there sets the requirements (min_duration,
	// min_canary_events, max_duration, approval) of the controller's
	// weights from its weight up to the next step's.
	Mode  string  `yaml:"mode" json:",omitempty"` // omitted when empty: drive specs hash as before modes existed (specHash)
	Steps []Step  `yaml:"steps"`
	Alpha float64 `yaml:"alpha"`
	// Settle is how long after each step starts the traffic split is not yet
	// steady: requests and sessions begun under the previous weight still
	// end in it, slow ones (timeouts) last. The tests that compare shares
	// across categories (tool_mix, error_types, tool_sequence) and the SRM
	// check skip windows that start within it; set it above your slowest
	// requests. Default 60s.
	Settle Duration `yaml:"settle"`
	// Units is the unit of the error_rate and latency tests: "requests"
	// (the default) or "sessions". Requests of one agent session share its
	// user, context, model and tools, so their errors and latencies are
	// correlated, and request-level tests overstate their evidence when
	// sessions are long and differ a lot from one another. With "sessions"
	// a unit is one session summary (an agent or task event) that carries
	// its requests' totals (schemas.Event.Requests, set by the producer or
	// by canaryd's OTLP session assembly): error_rate compares the share of
	// sessions with a failed request, the latency tests the sessions'
	// median request durations. Independent units, exact tests; a session
	// counts when it ends.
	Units   string  `yaml:"units"`
	Metrics Metrics `yaml:"metrics"`
	// AlphaWeights override the default split of alpha across the rollback
	// tests (error_rate 8, latency_p95 3, latency_p50 2, the others 1): a
	// test's share is its weight over the sum of the enabled tests' weights.
	// A team whose first concern is errors can give error_rate more, and it
	// then detects sooner while the sum stays alpha.
	AlphaWeights map[string]float64 `yaml:"alpha_weights"`
	SLO          SLO                `yaml:"slo"`
	DeploymentID string             `yaml:"deployment_id"`
	Commit       string             `yaml:"commit"`
	File         string             `yaml:"-"` // where the spec was read from
	Line         int                `yaml:"-"`
}

// Spec.Units values.
const (
	UnitsRequests = "requests"
	UnitsSessions = "sessions"
)

// Step is one traffic step of a rollout.
type Step struct {
	// Weight is the canary's share of traffic in percent (1..100).
	Weight int `yaml:"weight"`
	// MinDuration is the least event time the step lasts before promotion.
	MinDuration Duration `yaml:"min_duration"`
	// MinCanaryEvents is the least number of canary requests the step sees
	// before promotion.
	MinCanaryEvents uint64 `yaml:"min_canary_events"`
	// MaxDuration is the step's time budget: when it ends without a
	// decision the rollout holds at this weight, and the verdict reports
	// the power the step achieved. Zero: no budget.
	MaxDuration Duration `yaml:"max_duration"`
	// Approval "required" makes the step wait, once its evidence would pass
	// it, for an operator's approve (HTTP or canaryd approve) before the
	// next weight or the promotion. Default: no gate.
	Approval string `yaml:"approval" json:",omitempty"` // omitted when empty: specs without a gate hash as before it existed (specHash)
	// Cohort, in drive mode, restricts the step's canary share to the
	// requests whose attribute is one of the values (e.g. {attribute:
	// user_tier, values: [internal]}): the step's set_weight carries it,
	// and routers that assign per request (router.Assign) send Weight% of
	// that cohort, and nobody outside it, to the canary. The SRM check is
	// off during such a step, because the canary's share of all requests
	// then depends on the cohort's size, which canaryd does not know.
	Cohort *schemas.Cohort `yaml:"cohort" json:",omitempty"` // omitted when nil: specs without cohorts hash as before
}

// sameCohort reports whether two steps target the same audience.
func sameCohort(a, b *schemas.Cohort) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Attribute == b.Attribute && slices.Equal(a.Values, b.Values)
}

// CanaryAuto as a spec's canary: each version of the rollout that the events
// show, other than the baseline and versions judged before, starts a
// release of it (as Argo Rollouts and Flagger react to a new revision).
const CanaryAuto = "auto"

// Auto reports whether the spec is a template for releases of each new
// version (canary: auto).
func (s Spec) Auto() bool { return s.Canary == CanaryAuto }

// Release returns the spec of a release of canary: s with that canary.
func (s Spec) Release(canary string) Spec {
	s.Canary = canary
	return s
}

// Spec.Mode values.
const (
	ModeDrive = "drive"
	ModeJudge = "judge"
)

// JudgeOnly reports whether a controller owns the rollout's steps (mode:
// judge).
func (s Spec) JudgeOnly() bool { return s.Mode == ModeJudge }

// ModeName returns the spec's mode, "drive" when unset.
func (s Spec) ModeName() string {
	if s.Mode == "" {
		return ModeDrive
	}
	return s.Mode
}

// Step.Approval values.
const ApprovalRequired = "required"

// Metrics are the judged metrics and their margins. Every enabled metric can
// roll the canary back; promotion waits for the guarded ones: error_rate,
// latency_p95, and any other with guard: true.
type Metrics struct {
	ErrorRate ErrorRateMetric `yaml:"error_rate"`
	Latency   LatencyMetric   `yaml:"latency_p95"`
	// LatencyP50 and LatencyP99 test the median and the tail the same way.
	LatencyP50 LatencyMetric `yaml:"latency_p50"`
	LatencyP99 LatencyMetric `yaml:"latency_p99"`
	// SessionFailure tests failed sessions (agent/task events with status
	// error or outcome.success false): the session is the unit, so requests
	// correlated within a session do not inflate the evidence.
	SessionFailure ErrorRateMetric `yaml:"session_failure"`
	// Tokens (input+output per LLM call), Cost (USD per call that carries a
	// cost) and ContextUse (context_tokens/context_limit) compare means.
	Tokens     MeanMetric `yaml:"tokens"`
	Cost       MeanMetric `yaml:"cost"`
	ContextUse MeanMetric `yaml:"context_use"`
	// ToolMix compares the distribution of tool calls over tools; ErrorTypes
	// the distribution of errors over error types.
	ToolMix    Toggle `yaml:"tool_mix"`
	ErrorTypes Toggle `yaml:"error_types"`
	// ToolSequence compares the distribution of consecutive tool-call pairs
	// (bigrams) in sessions: reasoning-trace fidelity.
	ToolSequence Toggle `yaml:"tool_sequence"`
	// ToolCalls compares the mean number of tool calls per session; Loops
	// the rate of sessions that call the same tool twice in a row.
	ToolCalls MeanMetric      `yaml:"tool_calls"`
	Loops     ErrorRateMetric `yaml:"loops"`
	// EvalScore compares mean evaluation scores (eval events and outcome
	// scores; lower is worse); Hallucination the rate of outcomes flagged as
	// hallucinations.
	EvalScore     MeanMetric      `yaml:"eval_score"`
	Hallucination ErrorRateMetric `yaml:"hallucination"`
	// Incidents are counts without a denominator — events of kind "other"
	// whose name is listed (crashes, OOM kills, restarts) — compared with
	// each version's share of the traffic.
	Incidents IncidentMetric `yaml:"incidents"`
	// SRM checks the traffic split against the step's weight; when it fires
	// the experiment is invalid and the verdict is hold.
	SRM SRMMetric `yaml:"srm"`
}

// MeanMetric guards a mean.
type MeanMetric struct {
	// Margin is the relative increase of the canary's mean that promotion
	// tolerates. Default 0.10.
	Margin   float64 `yaml:"margin"`
	Guard    bool    `yaml:"guard"`
	Disabled bool    `yaml:"disabled"`
}

// IncidentMetric names the events counted as incidents.
type IncidentMetric struct {
	Names    []string `yaml:"names"`
	Disabled bool     `yaml:"disabled"`
}

// Toggle is a test without parameters.
type Toggle struct {
	Disabled bool `yaml:"disabled"`
}

// SRMMetric configures the sample-ratio-mismatch check.
type SRMMetric struct {
	Disabled bool `yaml:"disabled"`
}

// ErrorRateMetric guards the rate of failed units (requests or sessions).
type ErrorRateMetric struct {
	// Margin is the odds ratio (canary over baseline) below which the canary's
	// error rate is acceptable: promotion needs an anytime upper bound on the
	// odds ratio below it. Default 1.5.
	Margin float64 `yaml:"margin"`
	// Disabled turns the test off.
	Disabled bool `yaml:"disabled"`
	// Guard makes promotion wait for the margin (always on for error_rate).
	Guard bool `yaml:"guard"`
}

// LatencyMetric guards a latency quantile of requests, per segment.
type LatencyMetric struct {
	// Margin is the relative slowdown of the canary's p95 that is acceptable:
	// promotion needs evidence that canary p95 < baseline p95 × (1+Margin).
	// Default 0.10.
	Margin float64 `yaml:"margin"`
	// Disabled turns the test off.
	Disabled bool `yaml:"disabled"`
	// Guard makes promotion wait for the margin (always on for latency_p95).
	Guard bool `yaml:"guard"`
}

// SLO holds absolute guard rails on the canary; zero means unset.
type SLO struct {
	// MaxErrorRate: roll back once the canary's error rate is above it with
	// confidence (an anytime lower bound above the limit).
	MaxErrorRate float64 `yaml:"max_error_rate"`
	// MaxP95MS: roll back once more than 5% of canary requests are slower
	// than this, with confidence.
	MaxP95MS float64 `yaml:"max_p95_ms"`
}

// Duration is a time.Duration that reads "30s", "2m" or a number of seconds.
type Duration time.Duration

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return err
	}
	if v, err := time.ParseDuration(s); err == nil {
		*d = Duration(v)
		return nil
	}
	var f float64
	if _, err := fmt.Sscanf(s, "%g", &f); err == nil && !strings.ContainsAny(s, " \t") {
		*d = Duration(f * float64(time.Second))
		return nil
	}
	return fmt.Errorf("line %d: %q is not a duration (use e.g. 30s, 2m)", n.Line, s)
}

// MarshalYAML implements yaml.Marshaler.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// SpecError is a spec that cannot be used: it names the file, the line and
// the field, and says what is wrong.
type SpecError struct {
	File   string
	Line   int
	Field  string
	Reason string
}

func (e *SpecError) Error() string {
	loc := e.File
	if e.Line > 0 {
		loc = fmt.Sprintf("%s:%d", e.File, e.Line)
	}
	if e.Field == "" {
		return fmt.Sprintf("%s: %s", loc, e.Reason)
	}
	return fmt.Sprintf("%s: %s: %s", loc, e.Field, e.Reason)
}

// Defaults applied to unset fields.
const (
	DefaultAlpha           = 0.05
	DefaultErrorRateMargin = 1.5
	DefaultLatencyMargin   = 0.10
	DefaultMeanMargin      = 0.10
	DefaultSettle          = 60 * time.Second
)

// LoadSpecs reads every rollout spec from path: a YAML file (one or more
// documents) or a directory of *.yaml/*.yml files (see specFiles for what a
// directory listing skips). Any error names the file, line and field;
// rollouts must be unique.
func LoadSpecs(path string) ([]Spec, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("rollout specs: %w", err)
	}
	files := []string{path}
	if st.IsDir() {
		if files, err = specFiles(path); err != nil {
			return nil, err
		}
	}
	var specs []Spec
	seen := map[string]string{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("rollout specs: %w", err)
		}
		ss, err := ParseSpecs(f, b)
		if err != nil {
			return nil, err
		}
		for _, s := range ss {
			if prev, ok := seen[s.Rollout]; ok {
				return nil, &SpecError{File: f, Line: s.Line, Field: "rollout", Reason: fmt.Sprintf("%q is already declared in %s", s.Rollout, prev)}
			}
			seen[s.Rollout] = fmt.Sprintf("%s:%d", f, s.Line)
			specs = append(specs, s)
		}
	}
	return specs, nil
}

// specFiles lists the spec files of a directory, sorted: the *.yaml and
// *.yml entries (regular files or symlinks to them), not in subdirectories.
// It skips what is not a spec although its name may end in .yaml:
//   - names starting with '.': hidden files, editor swap files
//     (.foo.yaml.swp) and lock symlinks (.#foo.yaml, dangling, from Emacs),
//     and the ..data and ..2026_12_03_… entries of a Kubernetes ConfigMap
//     volume, whose files are symlinks name.yaml -> ..data/name.yaml, so
//     each is read once, through its name;
//   - names starting with '#' (Emacs auto-save) or ending in '~' (backups).
func specFiles(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("rollout specs: %w", err)
	}
	var files []string
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".") || strings.HasPrefix(name, "#") || strings.HasSuffix(name, "~") {
			continue
		}
		if ext := filepath.Ext(name); ext != ".yaml" && ext != ".yml" {
			continue
		}
		files = append(files, filepath.Join(dir, name))
	}
	slices.Sort(files)
	if len(files) == 0 {
		return nil, fmt.Errorf("rollout specs: no *.yaml or *.yml file in %s", dir)
	}
	return files, nil
}

// ParseSpecs parses the YAML documents of one file; name is used in errors.
func ParseSpecs(name string, b []byte) ([]Spec, error) {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	var specs []Spec
	for {
		var doc yaml.Node
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, &SpecError{File: name, Reason: strings.TrimPrefix(err.Error(), "yaml: ")}
		}
		if len(doc.Content) == 0 {
			continue
		}
		root := doc.Content[0]
		var s Spec
		if err := decodeStrict(root, &s); err != nil {
			return nil, &SpecError{File: name, Line: root.Line, Reason: err.Error()}
		}
		s.File, s.Line = name, root.Line
		if err := s.validate(root); err != nil {
			return nil, err
		}
		specs = append(specs, s)
	}
	if len(specs) == 0 {
		return nil, &SpecError{File: name, Reason: "no rollout spec in file"}
	}
	return specs, nil
}

// decodeStrict decodes n into v, refusing fields v does not have.
func decodeStrict(n *yaml.Node, v any) error {
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	if err := enc.Encode(n); err != nil {
		return err
	}
	dec := yaml.NewDecoder(&buf)
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil {
		// Line numbers from the re-encoded node match the source: yaml.v3
		// keeps the structure; report the message without its prefix.
		msg := strings.TrimPrefix(err.Error(), "yaml: unmarshal errors:\n")
		return errors.New(strings.TrimSpace(strings.ReplaceAll(msg, "\n ", ";")))
	}
	return nil
}

// nodeAt returns the map value at path (keys only) under n, or nil. It
// follows aliases but not merge keys (<<).
func nodeAt(n *yaml.Node, path ...string) *yaml.Node {
	for _, p := range path {
		if n.Kind == yaml.AliasNode && n.Alias != nil {
			n = n.Alias
		}
		if n.Kind != yaml.MappingNode {
			return nil
		}
		var next *yaml.Node
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == p {
				next = n.Content[i+1]
				break
			}
		}
		if next == nil {
			return nil
		}
		n = next
	}
	return n
}

// lineOf returns the line of the value at path (map keys and sequence
// indexes as decimal strings) under n, or n's line when not found.
func lineOf(n *yaml.Node, path ...string) int {
	line := n.Line
	for _, p := range path {
		var next *yaml.Node
		switch n.Kind {
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				if n.Content[i].Value == p {
					next = n.Content[i+1]
					break
				}
			}
		case yaml.SequenceNode:
			var idx int
			if _, err := fmt.Sscanf(p, "%d", &idx); err == nil && idx >= 0 && idx < len(n.Content) {
				next = n.Content[idx]
			}
		}
		if next == nil {
			return line
		}
		n, line = next, next.Line
	}
	return line
}

func (s *Spec) validate(root *yaml.Node) error {
	bad := func(reason string, path ...string) error {
		return &SpecError{File: s.File, Line: lineOf(root, path...), Field: strings.Join(path, "."), Reason: reason}
	}
	if s.Rollout == "" {
		return bad("required: the rollout's name (events' \"rollout\" field)", "rollout")
	}
	if s.Baseline == "" {
		return bad("required: the stable version", "baseline")
	}
	if s.Canary == "" {
		return bad("required: the new version, or auto (a release starts for each new version the events show)", "canary")
	}
	if s.Canary == s.Baseline {
		return bad(fmt.Sprintf("canary and baseline are both %q", s.Canary), "canary")
	}
	switch s.Mode {
	case "", ModeJudge:
	case ModeDrive:
		s.Mode = "" // the default, stored empty (specHash)
	default:
		return bad(fmt.Sprintf("%q: want %q (canaryd sends the steps' weights) or %q (Argo Rollouts, Flagger or a pipeline sets them)", s.Mode, ModeDrive, ModeJudge), "mode")
	}
	if len(s.Steps) == 0 && !s.JudgeOnly() {
		return bad("at least one step is required, e.g. [{weight: 5, min_duration: 1m}, {weight: 100, min_duration: 5m}]", "steps")
	}
	prev := 0
	for i, st := range s.Steps {
		f := func(name string) []string { return []string{"steps", fmt.Sprint(i), name} }
		if st.Weight < 1 || st.Weight > 100 {
			return bad(fmt.Sprintf("weight %d is outside 1..100", st.Weight), f("weight")...)
		}
		if st.Weight == 100 && s.JudgeOnly() {
			return bad("weight 100 in mode: judge: the controller's promotion ends the rollout; a step here sets the requirements of weights below 100", f("weight")...)
		}
		// Weights increase within a run of steps with the same cohort; a
		// step that widens the audience (a cohort's 100%, then 5% of
		// everyone) starts its own run.
		if i > 0 && !sameCohort(st.Cohort, s.Steps[i-1].Cohort) {
			prev = 0
		}
		if st.Weight <= prev {
			return bad(fmt.Sprintf("weight %d does not increase over the previous step's %d", st.Weight, prev), f("weight")...)
		}
		prev = st.Weight
		if st.MinDuration < 0 {
			return bad("negative duration", f("min_duration")...)
		}
		if st.Approval != "" && st.Approval != ApprovalRequired {
			return bad(fmt.Sprintf("approval %q: want %q or nothing", st.Approval, ApprovalRequired), f("approval")...)
		}
		if c := st.Cohort; c != nil {
			switch {
			case s.JudgeOnly():
				return bad("a cohort in mode: judge: the controller routes the traffic; set the cohort there", f("cohort")...)
			case c.Attribute == "":
				return bad("cohort without attribute, e.g. {attribute: user_tier, values: [internal]}", "steps", fmt.Sprint(i), "cohort", "attribute")
			case len(c.Values) == 0 || slices.Contains(c.Values, ""):
				return bad(fmt.Sprintf("cohort %q needs non-empty values", c.Attribute), "steps", fmt.Sprint(i), "cohort", "values")
			}
		}
		if st.MaxDuration != 0 && st.MaxDuration < st.MinDuration {
			return bad(fmt.Sprintf("max_duration %s is shorter than min_duration %s", time.Duration(st.MaxDuration), time.Duration(st.MinDuration)), f("max_duration")...)
		}
	}
	// Defaults fill absent (or null) fields only: an explicit 0 (alpha: 0,
	// margin: 0) is refused below, not silently replaced.
	absent := func(path ...string) bool {
		n := nodeAt(root, path...)
		return n == nil || n.Tag == "!!null"
	}
	if s.Alpha == 0 && absent("alpha") {
		s.Alpha = DefaultAlpha
	}
	for name, w := range s.AlphaWeights {
		if _, ok := rollbackWeights[name]; !ok {
			known := make([]string, 0, len(rollbackWeights))
			for k := range rollbackWeights {
				known = append(known, k)
			}
			slices.Sort(known)
			return bad(fmt.Sprintf("%q is not a rollback test; known: %s", name, strings.Join(known, ", ")), "alpha_weights", name)
		}
		if !(w > 0) || math.IsInf(w, 0) {
			return bad(fmt.Sprintf("weight %g must be a positive number", w), "alpha_weights", name)
		}
	}
	if s.Units == "" {
		s.Units = UnitsRequests
	}
	switch s.Units {
	case UnitsRequests, UnitsSessions:
	default:
		return bad(fmt.Sprintf("%q: want %q or %q", s.Units, UnitsRequests, UnitsSessions), "units")
	}
	if !(s.Alpha > 0 && s.Alpha < 0.5) {
		return bad(fmt.Sprintf("%g is outside (0, 0.5)", s.Alpha), "alpha")
	}
	if s.Metrics.ErrorRate.Margin == 0 && absent("metrics", "error_rate", "margin") {
		s.Metrics.ErrorRate.Margin = DefaultErrorRateMargin
	}
	if m := s.Metrics.ErrorRate.Margin; !(m > 1 && m < 20) {
		return bad(fmt.Sprintf("odds-ratio margin %g must be in (1, 20)", m), "metrics", "error_rate", "margin")
	}
	if s.Metrics.Latency.Margin == 0 && absent("metrics", "latency_p95", "margin") {
		s.Metrics.Latency.Margin = DefaultLatencyMargin
	}
	if m := s.Metrics.Latency.Margin; !(m > 0 && m < 10) {
		return bad(fmt.Sprintf("relative margin %g must be in (0, 10)", m), "metrics", "latency_p95", "margin")
	}
	for _, lm := range []struct {
		m    *LatencyMetric
		name string
	}{{&s.Metrics.LatencyP50, "latency_p50"}, {&s.Metrics.LatencyP99, "latency_p99"}} {
		if lm.m.Margin == 0 && absent("metrics", lm.name, "margin") {
			lm.m.Margin = DefaultLatencyMargin
		}
		if m := lm.m.Margin; !(m > 0 && m < 10) {
			return bad(fmt.Sprintf("relative margin %g must be in (0, 10)", m), "metrics", lm.name, "margin")
		}
	}
	for _, em := range []struct {
		m    *ErrorRateMetric
		name string
	}{{&s.Metrics.SessionFailure, "session_failure"}, {&s.Metrics.Loops, "loops"}, {&s.Metrics.Hallucination, "hallucination"}} {
		if em.m.Margin == 0 && absent("metrics", em.name, "margin") {
			em.m.Margin = DefaultErrorRateMargin
		}
		if m := em.m.Margin; !(m > 1 && m < 20) {
			return bad(fmt.Sprintf("odds-ratio margin %g must be in (1, 20)", m), "metrics", em.name, "margin")
		}
	}
	for _, mm := range []struct {
		m    *MeanMetric
		name string
	}{{&s.Metrics.Tokens, "tokens"}, {&s.Metrics.Cost, "cost"}, {&s.Metrics.ContextUse, "context_use"},
		{&s.Metrics.ToolCalls, "tool_calls"}, {&s.Metrics.EvalScore, "eval_score"}} {
		if mm.m.Margin == 0 && absent("metrics", mm.name, "margin") {
			mm.m.Margin = DefaultMeanMargin
		}
		if m := mm.m.Margin; !(m > 0 && m < 10) {
			return bad(fmt.Sprintf("relative margin %g must be in (0, 10)", m), "metrics", mm.name, "margin")
		}
	}
	if s.Settle == 0 {
		s.Settle = Duration(DefaultSettle)
	}
	if s.Settle < 0 {
		return bad("negative duration", "settle")
	}
	if v := s.SLO.MaxErrorRate; v < 0 || v >= 1 || math.IsNaN(v) {
		return bad(fmt.Sprintf("%g is outside [0, 1)", v), "slo", "max_error_rate")
	}
	if v := s.SLO.MaxP95MS; v < 0 || math.IsNaN(v) {
		return bad(fmt.Sprintf("%g is negative", v), "slo", "max_p95_ms")
	}
	return nil
}
