package judgebench

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/inferensys/canaryd/detector"
	"github.com/inferensys/canaryd/schemas"
	"github.com/inferensys/canaryd/window"
)

// Judges, in table order. Every judge sees the same stream in every run.
const (
	jCanaryd     = iota // canaryd's suite on 10-second windows
	jCanaryd1s          // canaryd's suite on 1-second windows (some scenarios)
	jCanarydSess        // canaryd with spec units: sessions (some scenarios)
	jCanarydErrA        // canaryd with (nearly) all of alpha on error_rate (diagnostic, some scenarios)
	jOracle             // the SPRT that knows the onset and size (error steps only; oracle.go)
	jKayenta1           // Kayenta-like, judged every minute
	jKayenta1Min
	jKayenta5 // judged every 5 minutes
	jKayenta5Min
	jThrSLO // threshold rules at the SLO
	jThr15  // at 1.5× the baseline's usual value
	jThr20  // at 2× the baseline's usual value
	numJudges
)

// JudgeNames are the judges' names in the table.
var JudgeNames = [numJudges]string{
	jCanaryd:     "canaryd, 10 s windows",
	jCanaryd1s:   "canaryd, 1 s windows",
	jCanarydSess: "canaryd, units: sessions",
	jCanarydErrA: "canaryd, error_rate given 98% of alpha (diagnostic)",
	jOracle:      "oracle SPRT: knows onset and size, all of alpha (not a real judge)",
	jKayenta1:    "Kayenta-like, every 1 min",
	jKayenta1Min: "Kayenta-like, every 1 min, ≥10 points",
	jKayenta5:    "Kayenta-like, every 5 min",
	jKayenta5Min: "Kayenta-like, every 5 min, ≥10 points",
	jThrSLO:      "threshold at the SLO, 3×1 min",
	jThr15:       "threshold 1.5× baseline, 3×1 min",
	jThr20:       "threshold 2× baseline, 3×1 min",
}

// outcome is what one judge did in one run. Times are seconds of event
// time since the run's start.
type outcome struct {
	action schemas.Action // rollback, promote, or "" when neither happened within the horizon
	at     int
	by     string // the tests or metric that decided, joined by "+"
	ran    bool   // the judge ran in this run
}

func newOutcome() outcome { return outcome{ran: true} }

func (o *outcome) decided() bool { return o.action != "" }

// canarydJudge feeds canaryd's detector.Judge with closed windows and reads
// its verdict after each one.
type canarydJudge struct {
	j     *detector.Judge
	out   outcome
	tests []string // names of the rollback and validity tests the judge ran
}

// specYAML is the spec the canaryd judges run. Parsed (not built by hand)
// so that every default the detector package applies — including those of
// tests added later — applies here too.
func specYAML(sc *Scenario) string {
	steps := fmt.Sprintf("  - {weight: %d, min_duration: 1000h}\n  - {weight: 100}\n", sc.Share)
	if sc.Kind == KindMargin || sc.Kind == KindPromote {
		steps = fmt.Sprintf("  - {weight: %d, min_duration: 10m, min_canary_events: 2000}\n  - {weight: 100}\n", sc.Share)
	}
	mode := ""
	if len(sc.Ramp) > 0 {
		// A controller moves the weights (the benchmark, at RampStepS).
		mode, steps = "mode: judge\n", ""
		for _, w := range sc.Ramp {
			steps += fmt.Sprintf("  - {weight: %d, min_duration: 1000h}\n", w)
		}
	}
	metrics := fmt.Sprintf("  incidents: {names: [%s]}\n", complaintName)
	if sc.SRMOnly {
		metrics = ""
		for _, m := range srmOnlyDisabled {
			metrics += fmt.Sprintf("  %s: {disabled: true}\n", m)
		}
	}
	return fmt.Sprintf("rollout: %s\nbaseline: %s\ncanary: %s\nalpha: 0.05\n%ssteps:\n%smetrics:\n%s%s",
		rolloutName, baseName, canaryName, mode, steps, metrics, SpecExtra)
}

// srmOnlyDisabled are the spec's rollback metrics, all disabled in
// Scenario.SRMOnly scenarios.
var srmOnlyDisabled = []string{"error_rate", "latency_p95", "latency_p50", "latency_p99", "session_failure", "tokens", "cost",
	"context_use", "tool_mix", "error_types", "tool_sequence", "tool_calls", "loops", "eval_score", "hallucination", "incidents"}

// errorAlphaDiagYAML gives error_rate 1000 of the rollback tests' alpha
// weights (the others keep theirs: 18 in the benchmark's spec), so it tests
// at 0.05·1000/1018 ≈ 0.049 instead of 0.05·8/26 ≈ 0.015: what the split of
// alpha across the tests costs its speed (Scenario.ErrorAlphaDiag).
const errorAlphaDiagYAML = "alpha_weights: {error_rate: 1000}\n"

// SpecExtra is appended to canaryd's spec (top-level YAML lines, e.g.
// "alpha_weights: {error_rate: 40}\n"), to measure a spec's options.
var SpecExtra string

func newCanarydJudge(spec detector.Spec) *canarydJudge {
	return &canarydJudge{j: detector.NewJudge(spec), out: newOutcome()}
}

// declare tells a mode: judge judge the weight its controller set at event
// time t (seconds).
func (c *canarydJudge) declare(weight, t int) {
	if _, err := c.j.Declare(weight, "bench", time.Unix(0, epochNS+int64(t)*1e9)); err != nil {
		panic("judgebench: " + err.Error())
	}
}

// look folds a closed window in and decides at its watermark.
func (c *canarydJudge) look(cl window.Closed, now int) {
	if c.out.decided() {
		return
	}
	c.j.Observe(cl)
	v, _ := c.j.Decide(cl.Watermark)
	if c.tests == nil && len(v.Tests) > 0 {
		for _, t := range v.Tests {
			if t.Role != "promote" && !slices.Contains(c.tests, t.Name) {
				c.tests = append(c.tests, t.Name)
			}
		}
	}
	switch v.Action {
	case schemas.ActionRollback, schemas.ActionPromote, schemas.ActionHold:
		c.out.action, c.out.at, c.out.by = v.Action, now, decidingTests(v)
	}
	if f := c.j.Final(); f != "" && !c.out.decided() {
		// A final state this harness does not know: stop looking.
		c.out.action, c.out.at, c.out.by = f, now, "?"
	}
}

// decidingTests names the tests behind a final verdict, joined by "+": the
// rollback tests that fired, the validity test of a hold ("budget" for a
// step's time budget), or "promote".
func decidingTests(v detector.Verdict) string {
	if v.Action == schemas.ActionPromote {
		return "promote"
	}
	role := "rollback"
	if v.Action == schemas.ActionHold {
		role = "validity"
	}
	var names []string
	for _, t := range v.Tests {
		if t.Role == role && t.Passed {
			names = append(names, t.Name)
		}
	}
	if len(names) == 0 {
		if v.Action == schemas.ActionHold {
			return "budget"
		}
		return "?"
	}
	return strings.Join(names, "+")
}

// Metrics the interval judges read, one value per arm per minute.
const (
	mErr = iota
	mP95
	mP99
	mTokens
	mSQLShare
	numMetrics
)

var metricNames = [numMetrics]string{"error_rate", "latency_p95", "latency_p99", "tokens_per_llm_call", "tool_share_run_sql"}

// direction is which way a metric is bad.
type direction int

const (
	increase direction = iota
	either
)

var metricDirs = [numMetrics]direction{increase, increase, increase, increase, either}

// minuteStats is one minute of per-arm metric values; NaN when an arm had
// nothing to measure.
type minuteStats struct {
	val [numMetrics][2]float64
}

// kayentaJudge is a Kayenta-like judge (Netflix's ACA judge with its
// Mann-Whitney classifier): every metric's per-minute values since the start
// of the canary, canary against baseline, through a two-sided 98%
// Mann-Whitney interval for the shift; a metric is High when the interval's
// lower end is above 0.25 × |the shift estimate| and the canary's mean is at
// least the baseline's (Low symmetrically, for metrics where either
// direction is bad). Every metric is critical: one High (or Low) metric
// rolls back. It judges every Every minutes, from the first minute or only
// once each arm has MinPoints values.
type kayentaJudge struct {
	vals [numMetrics][2][]float64
	vars [4]kayentaVariant
	mw   mannWhitney
}

type kayentaVariant struct {
	judge     int
	every     int // minutes
	minPoints int
	out       outcome
}

const (
	kayentaAlpha     = 0.02 // 98% intervals
	kayentaTolerance = 0.25
	kayentaMinPoints = 10
)

func newKayentaJudge() *kayentaJudge {
	k := &kayentaJudge{}
	k.vars = [4]kayentaVariant{
		{judge: jKayenta1, every: 1, minPoints: 1},
		{judge: jKayenta1Min, every: 1, minPoints: kayentaMinPoints},
		{judge: jKayenta5, every: 5, minPoints: 1},
		{judge: jKayenta5Min, every: 5, minPoints: kayentaMinPoints},
	}
	for i := range k.vars {
		k.vars[i].out = newOutcome()
	}
	return k
}

// variants returns k's variants' count (0 for a nil k: a scenario without
// the interval judges).
func (k *kayentaJudge) variants() int {
	if k == nil {
		return 0
	}
	return len(k.vars)
}

// minute takes minute m's values and judges, at event time now, the
// variants whose turn it is.
func (k *kayentaJudge) minute(m int, ms *minuteStats, now int) {
	for i := range numMetrics {
		for a := range 2 {
			if v := ms.val[i][a]; !math.IsNaN(v) {
				k.vals[i][a] = append(k.vals[i][a], v)
			}
		}
	}
	var fails [numMetrics]int8 // 0 not computed, 1 pass, 2 fail
	for vi := range k.vars {
		kv := &k.vars[vi]
		if kv.out.decided() || (m+1)%kv.every != 0 {
			continue
		}
		for i := range numMetrics {
			x, y := k.vals[i][vCanary], k.vals[i][vBase]
			if min(len(x), len(y)) < kv.minPoints {
				continue
			}
			if fails[i] == 0 {
				fails[i] = 1
				if k.fails(x, y, metricDirs[i]) {
					fails[i] = 2
				}
			}
			if fails[i] == 2 {
				kv.out.action, kv.out.at, kv.out.by = schemas.ActionRollback, now, metricNames[i]
				break
			}
		}
	}
}

// fails classifies one metric as Kayenta's MannWhitneyClassifier does.
func (k *kayentaJudge) fails(x, y []float64, dir direction) bool {
	if sameValues(x, y) {
		return false
	}
	lo, hi, est, ok := k.mw.interval(x, y, kayentaAlpha)
	if !ok {
		return false
	}
	dev := 1.0
	if my := mean(y); my != 0 {
		dev = mean(x) / my
	}
	crit := kayentaTolerance * math.Abs(est)
	high := lo > crit && dev >= 1
	low := dir == either && hi < -crit && dev <= 1
	return high || low
}

// sameValues reports whether x and y hold the same multiset, or a single
// distinct value between them (Kayenta passes both).
func sameValues(x, y []float64) bool {
	v := x[0]
	for _, s := range [2][]float64{x, y} {
		for _, w := range s {
			if w != v {
				goto differ
			}
		}
	}
	return true
differ:
	if len(x) != len(y) {
		return false
	}
	// Cheap multiset check only for small samples; larger ones differ in
	// practice (continuous values).
	if len(x) > 8 {
		return false
	}
	used := make([]bool, len(y))
	for _, a := range x {
		found := false
		for j, b := range y {
			if !used[j] && a == b {
				used[j], found = true, true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

func mean(v []float64) float64 {
	s := 0.0
	for _, x := range v {
		s += x
	}
	return s / float64(len(v))
}

// thresholdJudge is an Argo Rollouts / Flagger style analysis: each minute
// every metric of the canary is compared with a fixed limit; a metric over
// its limit 3 minutes in a row rolls back.
type thresholdJudge struct {
	judge  int
	limit  [numMetrics]float64 // NaN: metric not checked
	consec [numMetrics]int
	out    outcome
}

const thresholdConsecutive = 3

// Nominal are the baseline's usual values, from which fixed thresholds are
// set, as an SRE would from its history.
type Nominal struct {
	ErrorRate, P95, P99, Tokens float64
}

// SLO limits of the threshold judge at the SLO: an absolute error rate and
// latencies at 1.25× the baseline's usual p95 and p99, rounded up to 100 ms.
const (
	sloErrorRate  = 0.025
	sloLatencyMul = 1.25
)

func newThresholdJudges(nom Nominal) [3]*thresholdJudge {
	nan := math.NaN()
	slo := &thresholdJudge{judge: jThrSLO, limit: [numMetrics]float64{
		sloErrorRate, roundUp100(sloLatencyMul * nom.P95), roundUp100(sloLatencyMul * nom.P99), nan, nan,
	}}
	k := func(j int, f float64) *thresholdJudge {
		return &thresholdJudge{judge: j, limit: [numMetrics]float64{f * nom.ErrorRate, f * nom.P95, f * nom.P99, f * nom.Tokens, nan}}
	}
	out := [3]*thresholdJudge{slo, k(jThr15, 1.5), k(jThr20, 2)}
	for _, t := range out {
		t.out = newOutcome()
	}
	return out
}

func roundUp100(ms float64) float64 { return math.Ceil(ms/100) * 100 }

func (t *thresholdJudge) minute(ms *minuteStats, now int) {
	if t.out.decided() {
		return
	}
	for i := range numMetrics {
		lim := t.limit[i]
		if math.IsNaN(lim) {
			continue
		}
		v := ms.val[i][vCanary]
		if math.IsNaN(v) {
			continue // no data: neither a failure nor a success
		}
		if v > lim {
			t.consec[i]++
		} else {
			t.consec[i] = 0
		}
		if t.consec[i] >= thresholdConsecutive {
			t.out.action, t.out.at, t.out.by = schemas.ActionRollback, now, metricNames[i]
			return
		}
	}
}
