// Package detector judges a canary against its baseline with anytime-valid
// sequential tests and turns the evidence into decisions: continue, the next
// traffic step (set_weight), promote, rollback or hold.
//
// Everything here is a pure function of the windows observed and the time
// passed in: no clock, no I/O. The same sequence of windows always yields the
// same verdicts and the same commands, which is what makes commands
// idempotent across a replay.
//
// Tests (each anytime-valid; the rollout's alpha is split across the
// rollback tests by fixed weights, see rollbackWeights):
//   - error_rate, session_failure: conditional (Fisher noncentral
//     hypergeometric) mixture e-values on failed units given each stratum's
//     total, strata = closed window × segment (conditional.go); the
//     rollback e-value mixes over the regression's size and over when it
//     began (Conditional.ERise), so clean traffic before it costs little;
//   - latency_p50/p95/p99: the same conditional test on exceedances of a
//     threshold that is predictable — the baseline's quantile in that segment
//     from earlier windows — counted exactly on the shared sketch buckets,
//     tempered for requests correlated within a session (latencyDiscount);
//   - tokens, cost, context_use: asymptotic confidence-sequence tests on
//     means (tests.go, MeanTest);
//   - tool_mix, error_types: categorical tests, averaged per-category
//     conditional e-values (tests.go, Categorical);
//   - slo_error_rate, slo_latency_p95: one-sample Bernoulli mixtures against
//     absolute limits (guard rails), when the spec sets them;
//   - srm: the Lindon–Malek test of the traffic split; when it fires the
//     verdict is hold — the experiment is invalid — never rollback or promote.
//
// Rollback tests accumulate over the whole rollout (one experiment, one
// alpha). Promotion tests (non-inferiority at the spec's margins) restart at
// each step, so each step's promotion rests on that step's traffic.
package detector

import (
	"cmp"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/inferensys/canaryd/schemas"
	"github.com/inferensys/canaryd/window"
)

// ActionContinue is the verdict when there is not enough evidence yet: never
// an error, never a rollback.
const ActionContinue schemas.Action = "continue"

// minBaselineForThreshold is how many baseline latencies a segment needs
// before its quantiles are used as latency thresholds.
const minBaselineForThreshold = 100

// rollbackWeights split the rollout's alpha across the rollback tests that
// are enabled, in proportion: the error rate and latency, the metrics most
// releases break, get the largest shares (with the default tests enabled,
// error_rate has about 30% of alpha: a test's delay grows with
// log(1/its alpha), so the others lose little).
var rollbackWeights = map[string]float64{
	"error_rate": 8, "latency_p95": 3, "latency_p50": 2, "latency_p99": 1, "session_failure": 1,
	"tokens": 1, "cost": 1, "context_use": 1, "tool_mix": 1, "error_types": 1,
	"tool_sequence": 1, "tool_calls": 1, "loops": 1, "eval_score": 1, "hallucination": 1, "incidents": 1,
	"slo_error_rate": 1, "slo_latency_p95": 1,
}

// latencyDiscount tempers the latency rollback tests (Conditional.Discount):
// a session's requests share its latency (same model, same context size,
// same tools), so the counts above a threshold are overdispersed relative to
// independent requests; 0.25 keeps the tests valid up to an overdispersion
// of 1.33.
const latencyDiscount = 0.25

// rateTest is a conditional test of a session- or outcome-level rate.
type rateTest struct {
	name   string
	spec   *ErrorRateMetric
	rb, ni Conditional
	// counts picks (units, events) from an arm's pooled aggregate.
	counts func(sess, eval *window.Agg) (n, x uint64)
}

// quantileTest is one latency quantile's pair of tests.
type quantileTest struct {
	seg    segMix // the rollback test's per-segment half (segments.go)
	name   string
	q      float64
	spec   *LatencyMetric
	rb, ni Conditional
}

// meanPair is one mean's rollback and promotion tests.
type meanPair struct {
	name   string
	spec   *MeanMetric
	rb, ni MeanTest
}

// higherIsBetter lists the means where the canary regresses by going down.
var higherIsBetter = map[string]bool{"eval_score": true}

// fresh returns new rollback and promotion tests: rollback tests "canary
// worse than baseline", promotion "canary within the margin".
func (p *meanPair) fresh() (rb, ni MeanTest) {
	if higherIsBetter[p.name] {
		// Worse = lower: rollback H0 μc ≥ μb; promotion H0 μc ≤ (1−m)μb.
		return MeanTest{Margin: 0, dir: -1}, MeanTest{Margin: -p.spec.Margin, dir: 1}
	}
	return MeanTest{Margin: 0, dir: 1}, MeanTest{Margin: p.spec.Margin, dir: -1}
}

// Judge holds the sequential state of one rollout. Not safe for concurrent
// use; its owner serialises Observe and Decide.
type Judge struct {
	spec Spec

	step      int   // index into spec.Steps; -1 before the first set_weight
	stepStart int64 // event time (unix ns) at which the step began
	// stepWall is the wall clock (unix ns) when the step began: the newest
	// window's Closed.Wall then; 0 when unknown (no wall clock in the
	// windows, or a state of version 1).
	stepWall int64
	final    schemas.Action
	now      int64 // newest decision time observed (Closed.Watermark: a window's end)
	wall     int64 // newest wall clock observed (Closed.Wall); 0: none
	windows  int

	// seqBase is added to every command's seq: the seq of the rollout's
	// commands before this release (SetSeqBase), so that seq increases
	// across releases as the schema promises.
	seqBase uint64
	// Operator controls (controls.go).
	paused   bool
	approved int // the step an operator approved (its gate is open), -1 none
	attempt  int // 0, then +1 per retry: part of the command ids
	audit    []OpRecord
	// Judge mode (judgemode.go): the weight a controller declared (-1:
	// none) and who; the step whose gate opened (-1: none) and why.
	declared int
	wsource  string
	// Routers' acknowledgements (applied.go): whether steps wait for
	// them, and the step they were last all in for (-1 none).
	expectAcks  bool
	appliedStep int
	passed      int
	passedWhy   string

	rbErr, stepErr  Conditional // requests: rollback over the rollout, promotion per step
	segErr          segMix      // rbErr's per-segment half (segments.go)
	rates           []*rateTest // session failures, loops, hallucinations
	lat             []*quantileTest
	means           []*meanPair
	toolMix, errMix Categorical
	bigrams         Categorical
	incidents       Conditional // incident counts against request counts
	srm             SRM
	srmUnits        string // what the SRM check counts (srmUnits*); sticky once set
	at              int64  // Start of the window being observed (not state: set by each Observe)
	sloErr, sloLat  Bernoulli

	baseLat map[window.Segment]*window.Agg // baseline latency per segment, for thresholds

	total       map[string]*window.Agg // per version, request segments, whole rollout
	segTotal    map[string]*window.Agg // per version and request segment (segTotalKey), whole rollout; at most maxStatusSegments segments
	phase       map[string]*window.Agg // per version, request segments, current step
	sessions    map[string]*window.Agg // per version, agent/task segments, whole rollout
	phaseSess   map[string]*window.Agg // per version, agent/task segments, current step
	errorTypes  []string               // names of the totals' ErrorTypes ids (0: "_other")
	bigramNames []string               // names of the totals' Bigrams ids (0: "_other")

	last Verdict

	specHash [32]byte
	// seen maps a source partition (topic/partition) to the end of the
	// newest window observed from it: a window replayed after a restart (it
	// starts before that end) is not counted twice.
	seen map[string]int64
}

// NewJudge returns the judge of a validated spec.
func NewJudge(spec Spec) *Judge {
	j := &Judge{
		spec:        spec,
		step:        -1,
		baseLat:     map[window.Segment]*window.Agg{},
		total:       map[string]*window.Agg{},
		segTotal:    map[string]*window.Agg{},
		phase:       map[string]*window.Agg{},
		phaseSess:   map[string]*window.Agg{},
		sessions:    map[string]*window.Agg{},
		seen:        map[string]int64{},
		specHash:    specHash(spec),
		approved:    -1,
		declared:    -1,
		passed:      -1,
		appliedStep: -1,
	}
	m := &j.spec.Metrics
	for _, q := range []struct {
		name string
		q    float64
		m    *LatencyMetric
	}{{"latency_p50", 0.5, &m.LatencyP50}, {"latency_p95", 0.95, &m.Latency}, {"latency_p99", 0.99, &m.LatencyP99}} {
		if !q.m.Disabled {
			t := &quantileTest{name: q.name, q: q.q, spec: q.m, rb: Conditional{Discount: latencyDiscount}}
			if j.bySession() {
				t.rb.Discount = 0 // sessions are independent units
			}
			t.seg.discount = t.rb.Discount
			j.lat = append(j.lat, t)
		}
	}
	for _, mm := range []struct {
		name string
		m    *MeanMetric
	}{{"tokens", &m.Tokens}, {"cost", &m.Cost}, {"context_use", &m.ContextUse}, {"tool_calls", &m.ToolCalls}, {"eval_score", &m.EvalScore}} {
		if !mm.m.Disabled {
			p := &meanPair{name: mm.name, spec: mm.m}
			p.rb, p.ni = p.fresh()
			j.means = append(j.means, p)
		}
	}
	for _, rt := range []*rateTest{
		{name: "session_failure", spec: &m.SessionFailure, counts: func(s, _ *window.Agg) (uint64, uint64) { return s.Count, s.Failed }},
		{name: "loops", spec: &m.Loops, counts: func(s, _ *window.Agg) (uint64, uint64) { return s.Count, s.Loops }},
		{name: "hallucination", spec: &m.Hallucination, counts: func(s, e *window.Agg) (uint64, uint64) {
			return s.HallucN + e.HallucN, s.Hallucination + e.Hallucination
		}},
	} {
		if !rt.spec.Disabled {
			j.rates = append(j.rates, rt)
		}
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

// IsSession reports whether a segment's events summarise sessions.
func IsSession(k schemas.Kind) bool { return k == schemas.KindAgent || k == schemas.KindTask }

// Observe folds one closed window in. Windows should arrive in order of
// their start per partition; each (window, segment) is one stratum. A window
// that starts before the end of one already observed from the same source
// partition is a replay (after a restart from an older checkpoint or from
// the committed offsets): it is ignored, and Observe returns false.
func (j *Judge) Observe(c window.Closed) bool {
	k := seenKey(c)
	if c.Start < j.seen[k] {
		return false
	}
	j.seen[k] = c.End
	j.at = c.Start
	j.windows++
	j.now = max(j.now, c.Watermark)
	j.wall = max(j.wall, c.Wall)
	// A window's error-type and bigram ids are its partition's; a partition
	// rebuilt (a replay from the commit, a move, an eviction) numbers them
	// anew, so totals are kept in the judge's own numbering, by name.
	errMap := internNames(&j.errorTypes, c.ErrorTypes)
	bigMap := internNames(&j.bigramNames, c.Bigrams)
	inStep := j.step >= 0 && c.Start >= j.stepStart
	// Windows of a steady split: see Spec.Settle.
	settled := j.step >= 0 && c.Start >= j.stepStart+int64(j.spec.Settle)
	bv, cv := j.spec.Baseline, j.spec.Canary
	var (
		toolNames  []string
		toolB      []uint64
		toolC      []uint64
		errB, errC []uint64
		sessB      = window.NewAgg()
		sessC      = window.NewAgg()
		evalB      = window.NewAgg()
		evalC      = window.NewAgg()
		llmB       = window.NewAgg()
		llmC       = window.NewAgg()
		unitsB     uint64
		unitsC     uint64
		incB, incC uint64
		newB, newC uint64 // sessions first seen in this window (window.Agg.NewSessions)
	)
	for _, s := range c.Series {
		if s.Version == bv {
			newB += s.Agg.NewSessions
		} else if s.Version == cv {
			newC += s.Agg.NewSessions
		}
	}
	for _, s := range c.Series {
		switch {
		case IsSession(s.Segment.Kind):
			mergeMapped(j.sessions, s.Version, s.Agg, errMap, bigMap)
			if inStep {
				mergeMapped(j.phaseSess, s.Version, s.Agg, errMap, bigMap)
			}
			if s.Version == bv {
				sessB.Merge(s.Agg)
			} else if s.Version == cv {
				sessC.Merge(s.Agg)
			}
			continue
		case s.Segment.Kind == schemas.KindEval:
			if s.Version == bv {
				evalB.Merge(s.Agg)
			} else if s.Version == cv {
				evalC.Merge(s.Agg)
			}
			continue
		case !IsRequest(s.Segment.Kind):
			continue
		case j.isIncident(s.Segment):
			if s.Version == bv {
				incB += s.Agg.Count
			} else if s.Version == cv {
				incC += s.Agg.Count
			}
			continue
		}
		mergeMapped(j.total, s.Version, s.Agg, errMap, bigMap)
		if inStep {
			mergeMapped(j.phase, s.Version, s.Agg, errMap, bigMap)
		}
		if s.Version != bv && s.Version != cv {
			continue
		}
		j.addSegTotal(s, errMap, bigMap)
		// Pools across segments for the means, error types and tool mix.
		isB := s.Version == bv
		if s.Segment.Kind == schemas.KindLLM {
			if isB {
				llmB.Merge(s.Agg)
			} else {
				llmC.Merge(s.Agg)
			}
		}
		if isB {
			errB = addCounts(errB, s.Agg.ErrorTypes)
			unitsB += s.Agg.Count
		} else {
			errC = addCounts(errC, s.Agg.ErrorTypes)
			unitsC += s.Agg.Count
		}
		if s.Segment.Kind == schemas.KindTool {
			i := slices.Index(toolNames, s.Segment.Name)
			if i < 0 {
				toolNames = append(toolNames, s.Segment.Name)
				toolB, toolC = append(toolB, 0), append(toolC, 0)
				i = len(toolNames) - 1
			}
			if isB {
				toolB[i] += s.Agg.Count
			} else {
				toolC[i] += s.Agg.Count
			}
		}
		if isB {
			continue
		}
		cAgg := s.Agg
		if j.spec.SLO.MaxErrorRate > 0 {
			j.sloErr.Observe(cAgg.Count, cAgg.Errors)
		}
		if j.spec.SLO.MaxP95MS > 0 {
			j.sloLat.Observe(cAgg.LatencyCount(), cAgg.CountAbove(window.Mapping.Index(j.spec.SLO.MaxP95MS)))
		}
		if bAgg := findSeries(c.Series, bv, s.Segment); bAgg != nil && !j.bySession() {
			j.observeUnits(s.Segment, bAgg.Count, bAgg.Errors, cAgg.Count, cAgg.Errors, bAgg, cAgg, j.baseLat[s.Segment], inStep)
		}
	}
	if j.bySession() {
		j.observeSessionUnits(c, inStep)
	}
	// Sessions: the unit whose failures are independent.
	for _, rt := range j.rates {
		nb, xb := rt.counts(sessB, evalB)
		nc, xc := rt.counts(sessC, evalC)
		rt.rb.ObserveAt(j.at, nb, xb, nc, xc)
		if inStep {
			rt.ni.Observe(nb, xb, nc, xc)
		}
	}
	// Incidents against traffic: given a window's incidents, the canary's
	// share of them follows its share of requests when it is no worse. A
	// window with more incidents than requests in an arm cannot be read
	// this way and is skipped.
	if j.incidentsOn() && incB <= unitsB && incC <= unitsC {
		j.incidents.Observe(unitsB, incB, unitsC, incC)
	}
	if settled && !j.spec.Metrics.ToolSequence.Disabled && len(sessB.Bigrams)+len(sessC.Bigrams) > 1 {
		n := max(len(sessB.Bigrams), len(sessC.Bigrams))
		names := make([]string, n)
		for i := range names {
			names[i] = window.OtherName
			if i < len(c.Bigrams) {
				names[i] = c.Bigrams[i]
			}
		}
		j.bigrams.Observe(names, pad(slices.Clone(sessB.Bigrams), n), pad(slices.Clone(sessC.Bigrams), n))
	}
	for _, mp := range j.means {
		b, k := meanInputs(mp.name, llmB, sessB, evalB), meanInputs(mp.name, llmC, sessC, evalC)
		mp.rb.Observe(b[0], b[1], b[2], k[0], k[1], k[2])
		if inStep {
			mp.ni.Observe(b[0], b[1], b[2], k[0], k[1], k[2])
		}
	}
	if settled && !j.spec.Metrics.ToolMix.Disabled && len(toolNames) > 1 {
		j.toolMix.Observe(toolNames, toolB, toolC)
	}
	if settled && !j.spec.Metrics.ErrorTypes.Disabled && max(len(errB), len(errC)) > 1 {
		// Stratified by segment: a canary that calls a tool with other
		// error types more often, but fails like the baseline within every
		// tool, moves no stratum.
		names := func(n int) []string {
			out := make([]string, n)
			for i := range out {
				out[i] = window.OtherName
				if i < len(c.ErrorTypes) {
					out[i] = c.ErrorTypes[i]
				}
			}
			return out
		}
		for _, s := range c.Series {
			if s.Version != cv || !IsRequest(s.Segment.Kind) || j.isIncident(s.Segment) {
				continue
			}
			if b := findSeries(c.Series, bv, s.Segment); b != nil {
				n := max(len(b.ErrorTypes), len(s.Agg.ErrorTypes))
				j.errMix.Observe(names(n), pad(slices.Clone(b.ErrorTypes), n), pad(slices.Clone(s.Agg.ErrorTypes), n))
			}
		}
	}
	// SRM: sessions are what the router assigns; requests only in a
	// rollout where no session was ever seen. The units follow what the
	// stream carries in every window, checked or not: a window of the
	// settle time holds the first sessions of a step, and the windows after
	// it may hold none new yet — only those sessions' requests.
	j.noteSRMUnits(newB+newC, sessB.Count+sessC.Count, unitsB+unitsC)
	if settled && !j.spec.Metrics.SRM.Disabled && j.srmOn() {
		xb, xc := j.srmCounts(newB, newC, sessB.Count, sessC.Count, unitsB, unitsC)
		j.srm.Observe(float64(xb), float64(xc))
	}
	// Thresholds for later windows learn from this one only now, so that
	// each window's threshold was fixed before its data (predictable).
	for _, s := range c.Series {
		if j.bySession() && s.Version == bv && IsSession(s.Segment.Kind) && s.Agg.SessMedian != nil {
			ref := j.baseLat[s.Segment]
			if ref == nil {
				ref = window.NewAgg()
				j.baseLat[s.Segment] = ref
			}
			if err := ref.Latency.MergeWith(s.Agg.SessMedian); err != nil {
				panic("BUG: merging sketches with different mappings: " + err.Error())
			}
			continue
		}
		if !j.bySession() && s.Version == bv && IsRequest(s.Segment.Kind) {
			ref := j.baseLat[s.Segment]
			if ref == nil {
				ref = window.NewAgg()
				j.baseLat[s.Segment] = ref
			}
			ref.Merge(s.Agg)
		}
	}
	return true
}

// What the SRM check counts (Judge.srmUnits).
const (
	srmUnitsSessions  = "sessions"          // sessions first seen (window.Agg.NewSessions)
	srmUnitsSummaries = "session summaries" // agent/task events, one per session
	srmUnitsRequests  = "requests"          // no session seen in the rollout yet
)

// srmCounts returns a window's baseline and canary units for the SRM check:
// sessions first seen in the window (newB, newC) once any window of the
// rollout had one, else session summaries (sumB, sumC) once any had one,
// else requests (reqB, reqC) (noteSRMUnits). The choice is sticky: a window
// of a session stream with no new session counts zero sessions, never its
// requests.
//
// Why this keeps the Lindon–Malek e-value valid: its null is that the
// units are independent Bernoulli(w) draws, each canary with probability
// w, independent of everything before them. A router assigns sessions
// (sticky) to the canary with probability w, independently of one another,
// and whether and when a session is first seen does not depend on which
// version serves it when the versions are the same — so, given the number
// of sessions first seen in a window, the canary's count is
// Binomial(n, w), independent of earlier windows: the mixture over the
// canary's share is a test martingale, as for any Bernoulli sequence. Each
// session counts once (the window partition remembers its id for
// SessionTimeout; a summary is emitted once), so no draw is repeated.
// Requests are not such draws: a session's requests all share its one draw,
// so their counts vary with the session sizes (a session of 17 requests
// moves the canary's count by 17 at once) and the binomial e-value, blind
// to that, grows under the null. A step starts the test afresh (startStep)
// at its weight; sessions that began before it were first seen before it
// (and the settle time skips those whose first windows straddle it).
// Unit changes are one-way (requests → summaries → sessions) and depend
// only on which events carry session ids, never on the versions: counts
// from before a change stay in the test, whose later increments are
// binomial again.
func (j *Judge) srmCounts(newB, newC, sumB, sumC, reqB, reqC uint64) (uint64, uint64) {
	j.noteSRMUnits(newB+newC, sumB+sumC, reqB+reqC)
	switch j.srmUnits {
	case srmUnitsSessions:
		return newB, newC
	case srmUnitsSummaries:
		return sumB, sumC
	}
	return reqB, reqC
}

// noteSRMUnits moves the SRM check's units, one way, to the best a window
// holds: sessions first seen, else session summaries, else requests.
func (j *Judge) noteSRMUnits(newSess, summaries, requests uint64) {
	switch {
	case newSess > 0 || j.srmUnits == srmUnitsSessions:
		j.srmUnits = srmUnitsSessions
	case summaries > 0 || j.srmUnits == srmUnitsSummaries:
		j.srmUnits = srmUnitsSummaries
	case requests > 0:
		j.srmUnits = srmUnitsRequests
	}
}

// bySession reports whether the error_rate and latency tests count sessions
// (Spec.Units "sessions"): sessions with a failed request, and the sessions'
// median request latencies (baseLat then holds, per session segment, the
// baseline's session medians as Latency).
func (j *Judge) bySession() bool { return j.spec.Units == UnitsSessions }

// observeSessionUnits feeds the error_rate and latency tests with session
// units (Spec.Units "sessions"), one stratum per window and session segment
// (agent or task name): sessions with a failed request among those that
// carry their requests' totals, and the sessions' median request latencies
// above the baseline's quantile of them from earlier windows.
func (j *Judge) observeSessionUnits(c window.Closed, inStep bool) {
	bv, cv := j.spec.Baseline, j.spec.Canary
	for _, s := range c.Series {
		if s.Version != cv || !IsSession(s.Segment.Kind) {
			continue
		}
		bAgg := findSeries(c.Series, bv, s.Segment)
		if bAgg == nil {
			continue
		}
		cAgg := s.Agg
		// Session medians as the Latency of throwaway aggregates, for the
		// counting methods (same shared mapping).
		j.observeUnits(s.Segment, bAgg.UnitSessions, bAgg.ErrSessions, cAgg.UnitSessions, cAgg.ErrSessions,
			&window.Agg{Latency: bAgg.SessMedian}, &window.Agg{Latency: cAgg.SessMedian}, j.baseLat[s.Segment], inStep)
	}
}

// observeUnits adds one stratum to the error_rate tests (nb, xb, nc, xc:
// units and failed units per arm) and to the latency tests (the arms'
// Latency sketches, counted above thresholds from ref, the baseline's
// earlier latencies in the stratum's segment).
func (j *Judge) observeUnits(seg window.Segment, nb, xb, nc, xc uint64, bLat, cLat, ref *window.Agg, inStep bool) {
	if !j.spec.Metrics.ErrorRate.Disabled {
		j.rbErr.ObserveAt(j.at, nb, xb, nc, xc)
		j.segErr.observe(j.at, seg, nb, xb, nc, xc)
		if inStep {
			j.stepErr.Observe(nb, xb, nc, xc)
		}
	}
	if ref == nil || ref.LatencyCount() < minBaselineForThreshold {
		return
	}
	lb, lc := bLat.LatencyCount(), cLat.LatencyCount()
	for _, lt := range j.lat {
		thr := ref.Quantile(lt.q)
		k := window.Mapping.Index(thr)
		above := bLat.CountAbove(k)
		ac := cLat.CountAbove(k)
		lt.rb.ObserveAt(j.at, lb, above, lc, ac)
		lt.seg.observe(j.at, seg, lb, above, lc, ac)
		if inStep {
			// The margin is built into the canary's threshold: under
			// "canary = baseline × (1+margin)" both exceed with the same odds.
			kc := window.Mapping.Index(thr * (1 + lt.spec.Margin))
			lt.ni.Observe(lb, above, lc, cLat.CountAbove(kc))
		}
	}
}

func (j *Judge) incidentsOn() bool {
	return !j.spec.Metrics.Incidents.Disabled && len(j.spec.Metrics.Incidents.Names) > 0
}

func (j *Judge) isIncident(seg window.Segment) bool {
	return seg.Kind == schemas.KindOther && j.incidentsOn() && slices.Contains(j.spec.Metrics.Incidents.Names, seg.Name)
}

// meanInputs returns (n, sum, sum of squares) of one mean metric from an
// arm's pooled LLM calls (a), sessions and evaluation events.
func meanInputs(name string, a, sess, eval *window.Agg) [3]float64 {
	switch name {
	case "tool_calls":
		return [3]float64{float64(sess.Count), sess.ToolCalls, sess.ToolCalls2}
	case "eval_score":
		return [3]float64{float64(sess.ScoreN + eval.ScoreN), sess.ScoreSum + eval.ScoreSum, sess.Score2 + eval.Score2}
	case "tokens":
		return [3]float64{float64(a.Count), a.InputTokens + a.OutputTokens, a.Tokens2}
	case "cost":
		return [3]float64{float64(a.CostN), a.CostUSD, a.CostUSD2}
	case "context_use":
		return [3]float64{float64(a.ContextN), a.ContextUse, a.ContextUse2}
	}
	panic("BUG: unknown mean metric " + name)
}

func addCounts(dst, src []uint64) []uint64 {
	dst = pad(dst, len(src))
	for i, v := range src {
		dst[i] += v
	}
	return dst
}

func pad(s []uint64, n int) []uint64 {
	for len(s) < n {
		s = append(s, 0)
	}
	return s
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

// maxJudgeNames caps the judge's own error-type and bigram numbering; names
// beyond it count as "_other".
const maxJudgeNames = 128

// internNames adds names (a window's, index = its id) to the judge's list
// and returns, for each window id, the judge's id.
func internNames(list *[]string, names []string) []int {
	if len(*list) == 0 {
		*list = append(*list, window.OtherName)
	}
	ids := make([]int, len(names))
	for i, n := range names {
		if i == 0 || n == window.OtherName {
			continue // 0: "_other"
		}
		id := slices.Index(*list, n)
		if id < 0 && len(*list) < maxJudgeNames {
			*list = append(*list, n)
			id = len(*list) - 1
		}
		ids[i] = max(id, 0)
	}
	return ids
}

// mergeMapped merges a into m[v] with its error-type and bigram counts
// renumbered by errMap and bigMap (window id → judge id).
func mergeMapped(m map[string]*window.Agg, v string, a *window.Agg, errMap, bigMap []int) {
	b := *a
	b.ErrorTypes = remapCounts(a.ErrorTypes, errMap)
	b.Bigrams = remapCounts(a.Bigrams, bigMap)
	mergeInto(m, v, &b)
}

func remapCounts(c []uint64, ids []int) []uint64 {
	if len(c) == 0 {
		return nil
	}
	n := 0
	for i := range c {
		if i < len(ids) {
			n = max(n, ids[i]+1)
		}
	}
	out := make([]uint64, max(n, 1))
	for i, v := range c {
		id := 0
		if i < len(ids) {
			id = ids[i]
		}
		out[id] += v
	}
	return out
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

// UnmarshalJSON implements json.Unmarshaler (null is NaN).
func (n *Num) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*n = Num(math.NaN())
		return nil
	}
	var f float64
	err := json.Unmarshal(b, &f)
	*n = Num(f)
	return err
}

// TestEvidence is one test's state in a verdict.
type TestEvidence struct {
	Name string `json:"name"`
	Role string `json:"role"` // rollback, promote or validity (srm)
	// NBaseline, NCanary: units compared (requests, sessions, observations).
	NBaseline uint64 `json:"n_baseline"`
	NCanary   uint64 `json:"n_canary"`
	// Baseline and Canary are the estimates compared: rates of failure,
	// shares above a latency threshold, means, category shares.
	Baseline Num `json:"baseline"`
	Canary   Num `json:"canary"`
	// OddsRatio (conditional tests; for means, canary/baseline − 1) with its
	// anytime-valid bounds [Lower, Upper] at the test's alpha.
	OddsRatio Num `json:"odds_ratio"`
	Lower     Num `json:"lower"`
	Upper     Num `json:"upper"`
	// Margin the promotion test must show the canary within.
	Margin    Num     `json:"margin,omitempty"`
	EValue    Num     `json:"e_value"`
	Threshold Num     `json:"threshold"` // 1/alpha
	Alpha     float64 `json:"alpha"`
	// Passed: for a rollback or validity test, the test fired; for a promote
	// test, the margin is established.
	Passed bool `json:"passed"`
	// Detail names what drives the evidence (e.g. the category that moved).
	Detail string `json:"detail,omitempty"`
	// Segment is what the estimates and bounds describe, for the tests
	// of requests: "all" (pooled over tools and models) or the segment
	// ("tool search_docs", "llm gpt-4o") whose own e-value weighs most in
	// the rollback test's mixture (segments.go).
	Segment string `json:"segment,omitempty"`
	// Onset, for a rollback test that fired on a rise that began after
	// the start (its change-point mixture's strongest component began
	// later): the start of the first window of that evidence. The counts,
	// estimates, odds ratio and bounds then describe the data since Onset
	// (Conditional.Onset), the data the e-value fired on.
	Onset *time.Time `json:"onset,omitempty"`
	// BaselineMS and CanaryMS, for a latency rollback test on requests
	// whose evidence is one segment, are the quantile it tests of each
	// version's requests in Segment, over the whole rollout: the values an
	// operator compares (the counts above describe the exceedances the
	// e-value weighs). Absent when they would not show a slowdown.
	BaselineMS Num `json:"baseline_ms,omitempty"`
	CanaryMS   Num `json:"canary_ms,omitempty"`
}

// SegmentSummary is one request segment (a tool, a model, a route) of the
// baseline and the canary, whole rollout.
type SegmentSummary struct {
	Segment  string     `json:"segment"` // as tests name it: "tool search_docs", "llm gpt-4o"
	Kind     string     `json:"kind"`
	Name     string     `json:"name"`
	Baseline ArmSummary `json:"baseline"`
	Canary   ArmSummary `json:"canary"`
}

// maxStatusSegments bounds the segments a judge keeps totals of for its
// status; later segments are left out (the pooled totals still count them).
const maxStatusSegments = 48

func segTotalKey(version string, seg window.Segment) string {
	return version + "\x00" + strconv.Itoa(int(seg.Kind)) + "\x00" + seg.Name
}

// addSegTotal adds a series of the baseline or the canary to segTotal.
func (j *Judge) addSegTotal(s window.Series, errMap, bigMap []int) {
	k := segTotalKey(s.Version, s.Segment)
	if _, ok := j.segTotal[k]; !ok {
		other := segTotalKey(j.spec.Baseline, s.Segment)
		if s.Version == j.spec.Baseline {
			other = segTotalKey(j.spec.Canary, s.Segment)
		}
		if _, seen := j.segTotal[other]; !seen && len(j.segTotal) >= 2*maxStatusSegments {
			return
		}
	}
	mergeMapped(j.segTotal, k, s.Agg, errMap, bigMap)
}

// segments returns the per-segment summaries, the busiest first (at most
// 20, as a status shows them).
func (j *Judge) segments() []SegmentSummary {
	by := map[string]*SegmentSummary{}
	var out []*SegmentSummary
	for k, a := range j.segTotal {
		parts := strings.SplitN(k, "\x00", 3)
		if len(parts) != 3 {
			continue
		}
		kind, _ := strconv.Atoi(parts[1])
		seg := window.Segment{Kind: schemas.Kind(kind), Name: parts[2]}
		sk := segText(seg)
		ss := by[sk]
		if ss == nil {
			ss = &SegmentSummary{Segment: sk, Kind: seg.Kind.String(), Name: seg.Name,
				Baseline: j.summary(j.spec.Baseline, nil, nil), Canary: j.summary(j.spec.Canary, nil, nil)}
			by[sk] = ss
			out = append(out, ss)
		}
		switch parts[0] {
		case j.spec.Baseline:
			ss.Baseline = j.summary(parts[0], a, nil)
		case j.spec.Canary:
			ss.Canary = j.summary(parts[0], a, nil)
		}
	}
	slices.SortFunc(out, func(a, b *SegmentSummary) int {
		na, nb := a.Baseline.Requests+a.Canary.Requests, b.Baseline.Requests+b.Canary.Requests
		if na != nb {
			return cmp.Compare(nb, na)
		}
		return strings.Compare(a.Segment, b.Segment)
	})
	res := make([]SegmentSummary, 0, min(len(out), 20))
	for _, ss := range out[:min(len(out), 20)] {
		res = append(res, *ss)
	}
	return res
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
	At     time.Time `json:"at"` // event time of the decision: the end of the window observed last (Closed.Watermark)
	// WallAt is canaryd's own clock when that window closed (Closed.Wall):
	// during a replay At is hours behind it. Absent when unknown.
	WallAt *time.Time `json:"wall_at,omitempty"`
	// StepElapsed is how long the current step has run, in event time.
	StepElapsedS float64        `json:"step_elapsed_s"`
	Tests        []TestEvidence `json:"tests,omitempty"`
	Baseline     ArmSummary     `json:"baseline_step"`
	Canary       ArmSummary     `json:"canary_step"`
}

// Status is a rollout's state for the HTTP API and the terminal.
type Status struct {
	Rollout  string `json:"rollout"`
	Baseline string `json:"baseline"`
	Canary   string `json:"canary"`
	Step     int    `json:"step"`
	Steps    int    `json:"steps"` // judged steps (a final 100% step is the promotion)
	Weight   int    `json:"weight"`
	// Mode is "drive" (canaryd sends the weights) or "judge" (a
	// controller sets them: see WeightSource).
	Mode string `json:"mode"`
	// Final is the final action (promote, rollback, hold), "" while the
	// rollout goes on: always present, for controllers' JSON paths.
	Final string `json:"final"`
	// Gate answers a controller: wait, pass, fail or hold (Judge.Gate).
	Gate string `json:"gate"`
	// WeightSource says where Weight comes from: canaryd (drive mode), the
	// controller that declared it (judge mode: argo, flagger, …), observed
	// (the canary's share of the step's requests) or none.
	WeightSource string       `json:"weight_source"`
	Windows      int          `json:"windows"`
	Watermark    time.Time    `json:"watermark"`
	Verdict      Verdict      `json:"verdict"`
	Totals       []ArmSummary `json:"totals"` // every version seen, whole rollout
	// Segments compares the baseline and the canary per tool, model and
	// route (request segments), whole rollout, the busiest first.
	Segments []SegmentSummary `json:"segments,omitempty"`
	// DeploymentID and Commit of the release (from its spec or its start),
	// as its commands carry them.
	DeploymentID string `json:"deployment_id,omitempty"`
	Commit       string `json:"commit,omitempty"`
	// SpecError says why the rollout's spec as it now stands in the spec
	// files is not in force (an invalid file, or an edit that cannot apply
	// to a running rollout): the judge goes on with the last valid spec.
	SpecError string `json:"spec_error,omitempty"`
	// Paused: an operator paused the rollout (no step passes, rollbacks
	// still fire). AwaitingApproval: the current step's gate waits for an
	// approve. Attempt counts retries of this release.
	Paused           bool `json:"paused,omitempty"`
	AwaitingApproval bool `json:"awaiting_approval,omitempty"`
	Attempt          int  `json:"attempt,omitempty"`
	// Next lists the operator actions that apply now (pause, resume,
	// approve, abort, retry): how to leave a hold, for one.
	Next []string `json:"next_actions,omitempty"`
	// Audit is the trail of operator actions on this release, oldest first.
	Audit []OpRecord `json:"audit,omitempty"`
	// Previous lists the rollout's earlier releases that this instance
	// judged since it started, newest last, each with how it ended.
	Previous []Release `json:"previous_releases,omitempty"`
	// Routers: what the routers' acknowledgements say (filled by canaryd's
	// daemon when it reads an acks topic; the judge leaves it empty).
	Routers []schemas.RouterAck `json:"routers,omitempty"`
}

// Release is how an earlier release of a rollout ended.
type Release struct {
	Baseline string    `json:"baseline"`
	Canary   string    `json:"canary"`
	Final    string    `json:"final"` // promote, rollback, hold, or superseded / removed when the spec moved on first
	Step     int       `json:"step"`
	Weight   int       `json:"weight"`
	Reason   string    `json:"reason"`
	EndedAt  time.Time `json:"ended_at"`
}

// Status returns the rollout's current state.
func (j *Judge) Status() Status {
	st := Status{
		Rollout: j.spec.Rollout, Baseline: j.spec.Baseline, Canary: j.spec.Canary,
		Step: j.step, Steps: j.judgedSteps(), Weight: j.weight(), Final: string(j.final),
		Windows: j.windows, Verdict: j.last, Mode: j.spec.ModeName(), Gate: j.Gate(), WeightSource: WeightCanaryd,
	}
	if j.spec.JudgeOnly() {
		_, st.WeightSource = j.judgeWeight()
	}
	if j.now != 0 {
		st.Watermark = time.Unix(0, j.now).UTC()
	}
	st.Paused, st.Attempt, st.Audit = j.paused, j.attempt, j.audit
	st.DeploymentID, st.Commit = j.spec.DeploymentID, j.spec.Commit
	st.AwaitingApproval = j.awaitingApproval()
	st.Next = j.nextActions()
	st.Segments = j.segments()
	for _, v := range sortedKeys(j.total, j.sessions) {
		st.Totals = append(st.Totals, j.summary(v, j.total[v], j.sessions[v]))
	}
	return st
}

// Final returns the final action (promote, rollback or hold), or "" while
// the rollout goes on.
func (j *Judge) Final() schemas.Action { return j.final }

func (j *Judge) weight() int {
	switch {
	case j.final == schemas.ActionPromote:
		return 100
	case j.final == schemas.ActionRollback:
		return 0
	case j.spec.JudgeOnly():
		w, _ := j.judgeWeight()
		return w
	case j.step < 0:
		return 0
	}
	return j.spec.Steps[j.step].Weight
}

// judgedSteps is how many steps are judged: a step at weight 100 is the
// promotion itself, so it is not judged (there is no baseline left to compare).
func (j *Judge) judgedSteps() int {
	if j.spec.JudgeOnly() {
		return max(j.step+1, 1) // the controller's steps so far
	}
	n := len(j.spec.Steps)
	if last := j.spec.Steps[n-1]; last.Weight == 100 && last.Cohort == nil { // a cohort's 100% is a step, not the promotion
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
		if j.paused {
			return j.last, nil // not started while paused
		}
		j.startStep(0, now)
		if j.spec.JudgeOnly() {
			w, src := j.judgeWeight()
			v := j.verdict(ActionContinue, now, fmt.Sprintf("start: judging canary %s at %d%% (weight %s)", j.spec.Canary, w, weightFrom(src)))
			return v, nil
		}
		v := j.verdict(schemas.ActionSetWeight, now, fmt.Sprintf("start: canary %s at %d%% (step 1 of %d)", j.spec.Canary, j.weight(), j.judgedSteps()))
		return v, j.command(v)
	}
	tests := j.tests()
	for _, t := range tests {
		if t.Role == "validity" && t.Passed {
			j.final = schemas.ActionHold
			v := j.verdict(schemas.ActionHold, now, "hold: experiment invalid: "+describe(t, j.spec))
			v.Tests, j.last.Tests = tests, tests
			return v, j.command(v)
		}
	}
	var fired []TestEvidence
	for _, t := range tests {
		if t.Role == "rollback" && t.Passed {
			fired = append(fired, t)
		}
	}
	if len(fired) > 0 {
		j.final = schemas.ActionRollback
		var why []string
		for _, t := range fired {
			why = append(why, describe(t, j.spec))
		}
		exposed := fmt.Sprintf(" after %d canary requests", j.arm(j.total, j.spec.Canary).Requests)
		if sess := j.sessions[j.spec.Canary]; sess != nil && sess.Count > 0 {
			exposed += fmt.Sprintf(" and %d sessions", sess.Count)
		}
		v := j.verdict(schemas.ActionRollback, now, "rollback: "+strings.Join(why, "; ")+exposed)
		v.Tests, j.last.Tests = tests, tests
		return v, j.command(v)
	}
	if j.spec.JudgeOnly() {
		return j.decideJudge(now, tests)
	}
	st := j.spec.Steps[j.step]
	elapsed := time.Duration(now - j.stepStart)
	canaryN := j.arm(j.phase, j.spec.Canary).Requests
	waiting := j.waiting(st, elapsed, canaryN)
	gated := st.Approval == ApprovalRequired && j.approved != j.step
	return j.decideDrive(now, tests, st, elapsed, canaryN, waiting, gated)
}

// waiting lists what the current step still waits for besides its
// promotion tests: its minimum duration (in event time and on the wall
// clock), its minimum canary requests, an operator's resume.
func (j *Judge) waiting(st Step, elapsed time.Duration, canaryN uint64) []string {
	var waiting []string
	if elapsed < time.Duration(st.MinDuration) {
		waiting = append(waiting, fmt.Sprintf("%s of %s", elapsed.Truncate(time.Second), time.Duration(st.MinDuration)))
	} else if wall, ok := j.stepWallElapsed(); ok && wall < time.Duration(st.MinDuration) {
		waiting = append(waiting, fmt.Sprintf("%s of %s on canaryd's wall clock (event time ran %s ahead of it: producers' clocks fast?)",
			wall.Truncate(time.Second), time.Duration(st.MinDuration), (elapsed-wall).Truncate(time.Second)))
	}
	if canaryN < st.MinCanaryEvents {
		waiting = append(waiting, fmt.Sprintf("%d of %d canary requests", canaryN, st.MinCanaryEvents))
	}
	if j.paused {
		waiting = append(waiting, "paused ("+j.lastOp("pause")+"; resume to go on)")
	}
	if j.awaitingAcks() {
		waiting = append(waiting, fmt.Sprintf("the routers' acknowledgement of %d%% (the step counts from it)", j.weight()))
	}
	return waiting
}

// Decide, continued: drive mode's step.
func (j *Judge) decideDrive(now int64, tests []TestEvidence, st Step, elapsed time.Duration, canaryN uint64, waiting []string, gated bool) (Verdict, *schemas.Command) {
	notYet, proofs := j.promoteProgress(tests)
	if len(waiting) == 0 && len(notYet) == 0 && gated {
		waiting = append(waiting, fmt.Sprintf("step %d passed its checks and awaits approval (approve to go on)", j.step+1))
	}
	if len(waiting) == 0 && len(notYet) == 0 {
		next := j.step + 1
		if next >= j.judgedSteps() {
			j.final = schemas.ActionPromote
			v := j.verdict(schemas.ActionPromote, now, fmt.Sprintf("promote %s to 100%% after %d steps: %s", j.spec.Canary, j.judgedSteps(), strings.Join(proofs, "; ")))
			v.Tests, j.last.Tests = tests, tests
			return v, j.command(v)
		}
		reason := fmt.Sprintf("step %d of %d passed at %d%% (%d canary requests in %s): %s", j.step+1, j.judgedSteps(), st.Weight, canaryN, elapsed.Truncate(time.Second), strings.Join(proofs, "; "))
		j.startStep(next, now)
		v := j.verdict(schemas.ActionSetWeight, now, reason+fmt.Sprintf(" → %d%%", j.weight()))
		v.Tests, j.last.Tests = tests, tests
		return v, j.command(v)
	}
	if st.MaxDuration > 0 && elapsed >= time.Duration(st.MaxDuration) {
		j.final = schemas.ActionHold
		v := j.verdict(schemas.ActionHold, now, fmt.Sprintf("hold at %d%%: step %d's time budget of %s ended without enough evidence to promote (%s); %s",
			st.Weight, j.step+1, time.Duration(st.MaxDuration), strings.Join(notYet, ", "), j.powerNote()))
		v.Tests, j.last.Tests = tests, tests
		return v, j.command(v)
	}
	reason := fmt.Sprintf("watching step %d of %d at %d%%", j.step+1, j.judgedSteps(), st.Weight)
	if len(waiting) > 0 {
		reason += ": " + strings.Join(waiting, ", ")
	}
	if j.bySession() && j.rbErr.NC == 0 && j.total[j.spec.Canary] != nil {
		// Requests arrive but no unit: the summaries lack their totals.
		reason += "; units: sessions, but no canary session summary with request totals yet (agent/task events with requests, request_errors, request_median_ms)"
	}
	if len(notYet) > 0 {
		reason += "; not yet shown: " + strings.Join(notYet, ", ")
	}
	v := j.verdict(ActionContinue, now, reason)
	v.Tests, j.last.Tests = tests, tests
	return v, nil
}

// promoteProgress splits the promotion tests into those not yet shown
// (with their e-values) and the proofs of those shown.
func (j *Judge) promoteProgress(tests []TestEvidence) (notYet, proofs []string) {
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
	return notYet, proofs
}

// idCanary is the canary as command ids hash it: a retried release's
// commands must differ from the earlier attempts' (routers drop ids they
// applied), so attempt n ≥ 1 hashes "<canary>#<n>".
func (j *Judge) idCanary() string {
	if j.attempt > 0 {
		return fmt.Sprintf("%s#%d", j.spec.Canary, j.attempt)
	}
	return j.spec.Canary
}

// powerNote approximates the power the step achieved: the probability that
// the error-rate rollback test would have fired by now had the canary's
// error odds been the margin times the baseline's (normal approximation of
// the log odds ratio, against the anytime boundary sqrt(2·ln(1/α))).
func (j *Judge) powerNote() string {
	c := &j.stepErr
	if c.XB == 0 || c.XC == 0 {
		return "power: no errors observed in an arm yet"
	}
	se := math.Sqrt(1/float64(c.XB) + 1/float64(c.XC))
	a := j.alphaFor("error_rate")
	power := normCDF(math.Log(j.spec.Metrics.ErrorRate.Margin)/se - math.Sqrt(2*math.Log(1/a)))
	return fmt.Sprintf("achieved power ≈ %.0f%% to detect error odds ×%.2f with %d canary requests", 100*power, j.spec.Metrics.ErrorRate.Margin, c.NC)
}

// enabledRollback lists the rollback tests the spec enables.
func (j *Judge) enabledRollback() []string {
	m := j.spec.Metrics
	var out []string
	add := func(on bool, name string) {
		if on {
			out = append(out, name)
		}
	}
	add(!m.ErrorRate.Disabled, "error_rate")
	for _, lt := range j.lat {
		out = append(out, lt.name)
	}
	for _, rt := range j.rates {
		out = append(out, rt.name)
	}
	for _, mp := range j.means {
		out = append(out, mp.name)
	}
	add(!m.ToolSequence.Disabled, "tool_sequence")
	add(j.incidentsOn(), "incidents")
	add(!m.ToolMix.Disabled, "tool_mix")
	add(!m.ErrorTypes.Disabled, "error_types")
	add(j.spec.SLO.MaxErrorRate > 0, "slo_error_rate")
	add(j.spec.SLO.MaxP95MS > 0, "slo_latency_p95")
	return out
}

// alphaFor returns a rollback test's share of the rollout's alpha.
func (j *Judge) alphaFor(name string) float64 {
	total := 0.0
	for _, n := range j.enabledRollback() {
		total += j.weightOf(n)
	}
	return j.spec.Alpha * j.weightOf(name) / total
}

// weightOf returns a rollback test's alpha weight: the spec's, or the default.
func (j *Judge) weightOf(name string) float64 {
	if w, ok := j.spec.AlphaWeights[name]; ok {
		return w
	}
	return rollbackWeights[name]
}

// promoteGuards lists the promotion tests: error_rate, latency_p95, and the
// metrics marked guard.
func (j *Judge) promoteGuards() int {
	m := j.spec.Metrics
	n := 0
	for _, on := range []bool{!m.ErrorRate.Disabled, !m.Latency.Disabled, !m.LatencyP50.Disabled && m.LatencyP50.Guard,
		!m.LatencyP99.Disabled && m.LatencyP99.Guard} {
		if on {
			n++
		}
	}
	for _, rt := range j.rates {
		if rt.spec.Guard {
			n++
		}
	}
	for _, mp := range j.means {
		if mp.spec.Guard {
			n++
		}
	}
	return max(n, 1)
}

// stepWallElapsed returns how long the step has run on the wall clock, from
// the earlier of its start's event time and the wall clock when it started:
// the minimum duration holds in wall time too, so that producers' clocks
// running ahead (up to the partition's MaxFuture) cannot shorten a step.
// With clocks that do not run ahead a window ends before the wall clock at
// which it closes, so this never binds before the event-time duration does,
// and a replay (whose wall clock is only later) decides at the same windows.
// ok is false without a wall clock (windows that carry none, a step started
// under state version 1).
func (j *Judge) stepWallElapsed() (d time.Duration, ok bool) {
	if j.wall == 0 || j.stepWall == 0 {
		return 0, false
	}
	return time.Duration(j.wall - min(j.stepWall, j.stepStart)), true
}

func (j *Judge) startStep(i int, now int64) {
	j.step = i
	j.stepStart = now
	j.stepWall = j.wall
	// Promotion tests read ELower only: no change-point components.
	j.stepErr = Conditional{noRise: true}
	for _, rt := range j.rates {
		rt.ni = Conditional{noRise: true}
	}
	for _, lt := range j.lat {
		lt.ni = Conditional{noRise: true}
	}
	for _, mp := range j.means {
		_, mp.ni = mp.fresh()
	}
	j.srm = SRM{}
	if j.srmOn() {
		j.srm.W = float64(j.weight()) / 100
	}
	j.phase = map[string]*window.Agg{}
	j.phaseSess = map[string]*window.Agg{}
}

// tests evaluates every enabled test.
func (j *Judge) tests() []TestEvidence {
	var out []TestEvidence
	alphaP := j.spec.Alpha / float64(j.promoteGuards())
	cond := func(name, role string, c *Conditional, alpha, margin float64) TestEvidence {
		t := TestEvidence{Name: name, Role: role, NBaseline: c.NB, NCanary: c.NC, Alpha: alpha, Threshold: Num(1 / alpha),
			Baseline: Num(ratio(c.XB, c.NB)), Canary: Num(ratio(c.XC, c.NC)), OddsRatio: Num(c.OddsRatio())}
		lo, hi := c.Bounds(alpha)
		t.Lower, t.Upper = Num(lo), Num(hi)
		if role == "rollback" {
			// A mixture over when the rise began as well as its size
			// (Conditional.ERise): clean traffic before a regression
			// does not delay its detection.
			t.EValue = Num(c.ERise())
		} else {
			t.Segment = "all"
			t.Margin = Num(margin)
			t.EValue = Num(c.ELower(margin))
		}
		t.Passed = float64(t.EValue) >= 1/alpha
		if j.bySession() && (name == "error_rate" || strings.HasPrefix(name, "latency_")) {
			t.Detail = "units: sessions"
		}
		return t
	}
	// A rollback test on requests mixes the pooled e-value with the
	// per-segment ones (segments.go); its evidence is the half and the
	// segment that weigh most in the mixture.
	mixed := func(name string, q float64, c *Conditional, seg *segMix, alpha float64) TestEvidence {
		t := cond(name, "rollback", c, alpha, 0)
		pooled := float64(t.EValue)
		es, top := seg.e()
		t.EValue = Num(pooled/2 + es/2)
		t.Passed = float64(t.EValue) >= 1/alpha
		t.Segment = "all"
		var base, canary *window.Agg
		if top.t != nil && top.v > pooled && top.v > 1 { // else the pooled half carries the evidence
			// Bounds at the segment's share of alpha in the mixture.
			a := alpha * top.w / 2
			st := cond(name, "rollback", top.t, a, 0)
			t.NBaseline, t.NCanary, t.Baseline, t.Canary = st.NBaseline, st.NCanary, st.Baseline, st.Canary
			t.OddsRatio, t.Lower, t.Upper = st.OddsRatio, st.Lower, st.Upper
			t.Segment = segText(top.seg)
			base, canary = j.segTotal[segTotalKey(j.spec.Baseline, top.seg)], j.segTotal[segTotalKey(j.spec.Canary, top.seg)]
			if t.Passed {
				sinceOnset(&t, top.t, a)
			}
		} else if t.Passed {
			sinceOnset(&t, c, alpha/2)
		}
		// The quantile in time, of a named segment only: the pooled test
		// compares each segment with its own baseline threshold, so a
		// quantile pooled over segments mixes their shares and can point
		// the other way (seen in TestCrashRecovery: a rollback on p50 with
		// the canary's pooled p50 13% below the baseline's). Left out too
		// when the whole rollout's quantiles do not show the slowdown the
		// exceedances do (a late onset diluted by faster data before it).
		if q > 0 && !j.bySession() && base != nil && canary != nil && base.Count > 0 && canary.Count > 0 {
			if b, c := base.Quantile(q), canary.Quantile(q); c > b {
				t.BaselineMS, t.CanaryMS = Num(b), Num(c)
			}
		}
		return t
	}
	m := j.spec.Metrics
	if !m.ErrorRate.Disabled {
		out = append(out, mixed("error_rate", 0, &j.rbErr, &j.segErr, j.alphaFor("error_rate")))
		out = append(out, cond("error_rate", "promote", &j.stepErr, alphaP, m.ErrorRate.Margin))
	}
	for _, lt := range j.lat {
		out = append(out, mixed(lt.name, lt.q, &lt.rb, &lt.seg, j.alphaFor(lt.name)))
		if lt.name == "latency_p95" || lt.spec.Guard {
			// The margin is in the canary's threshold: non-inferiority is
			// "odds ratio below 1" on those counts.
			t := cond(lt.name, "promote", &lt.ni, alphaP, 1)
			// The margin as the spec gives it (a relative slowdown); the
			// test itself is "odds below 1" at the baseline's threshold
			// stretched by it.
			t.Margin = Num(lt.spec.Margin)
			t.Detail = fmt.Sprintf("canary requests above the baseline's %s threshold ×%.2f, odds ratio below 1", strings.TrimPrefix(lt.name, "latency_"), 1+lt.spec.Margin)
			out = append(out, t)
		}
	}
	for _, rt := range j.rates {
		t := cond(rt.name, "rollback", &rt.rb, j.alphaFor(rt.name), 0)
		if t.Passed {
			sinceOnset(&t, &rt.rb, t.Alpha)
		}
		out = append(out, t)
		if rt.spec.Guard {
			out = append(out, cond(rt.name, "promote", &rt.ni, alphaP, rt.spec.Margin))
		}
	}
	mean := func(mp *meanPair, t *MeanTest, role string, alpha float64) TestEvidence {
		e := t.E()
		ev := TestEvidence{Name: mp.name, Role: role, NBaseline: uint64(t.NB), NCanary: uint64(t.NC),
			Baseline: Num(t.SumB / t.NB), Canary: Num(t.SumC / t.NC), OddsRatio: Num(t.Ratio()),
			Lower: Num(math.NaN()), Upper: Num(math.NaN()),
			EValue: Num(e), Threshold: Num(1 / alpha), Alpha: alpha, Passed: e >= 1/alpha}
		if role == "promote" {
			ev.Margin = Num(mp.spec.Margin)
		}
		return ev
	}
	for _, mp := range j.means {
		out = append(out, mean(mp, &mp.rb, "rollback", j.alphaFor(mp.name)))
		if mp.spec.Guard {
			out = append(out, mean(mp, &mp.ni, "promote", alphaP))
		}
	}
	cat := func(name string, c *Categorical) TestEvidence {
		a := j.alphaFor(name)
		e, top, _ := c.E()
		t := TestEvidence{Name: name, Role: "rollback", EValue: Num(e), Threshold: Num(1 / a), Alpha: a, Passed: e >= 1/a,
			Baseline: Num(math.NaN()), Canary: Num(math.NaN()), OddsRatio: Num(math.NaN()), Lower: Num(math.NaN()), Upper: Num(math.NaN())}
		if top != "" {
			b, k := c.Share(top)
			t.Baseline, t.Canary, t.Detail = Num(b), Num(k), top
			if ct := c.cats[top]; ct != nil {
				t.NBaseline, t.NCanary = ct.NB, ct.NC
			}
		}
		return t
	}
	if !m.ToolMix.Disabled {
		out = append(out, cat("tool_mix", &j.toolMix))
	}
	if !m.ToolSequence.Disabled {
		out = append(out, cat("tool_sequence", &j.bigrams))
	}
	if j.incidentsOn() {
		out = append(out, cond("incidents", "rollback", &j.incidents, j.alphaFor("incidents"), 0))
	}
	if !m.ErrorTypes.Disabled {
		out = append(out, cat("error_types", &j.errMix))
	}
	slo := func(name string, b *Bernoulli) TestEvidence {
		alpha := j.alphaFor(name)
		e := b.E()
		return TestEvidence{Name: name, Role: "rollback", NCanary: b.N, Canary: Num(ratio(b.X, b.N)), Baseline: Num(b.P0),
			OddsRatio: Num(math.NaN()), Lower: Num(math.NaN()), Upper: Num(math.NaN()),
			EValue: Num(e), Threshold: Num(1 / alpha), Alpha: alpha, Passed: e >= 1/alpha}
	}
	if j.spec.SLO.MaxErrorRate > 0 {
		out = append(out, slo("slo_error_rate", &j.sloErr))
	}
	if j.spec.SLO.MaxP95MS > 0 {
		out = append(out, slo("slo_latency_p95", &j.sloLat))
	}
	if !m.SRM.Disabled && j.step >= 0 {
		// One alpha budget across the rollout's steps: step i's check
		// (which starts afresh at its weight) gets alpha/2^(i+1), so that
		// a ramp of healthy steps is held by chance at most alpha in all.
		a := j.spec.Alpha * math.Exp2(-float64(j.step+1))
		e := j.srm.E()
		units := j.srmUnits
		if units == "" {
			units = "nothing yet"
		}
		out = append(out, TestEvidence{Name: "srm", Role: "validity", NBaseline: uint64(j.srm.XB), NCanary: uint64(j.srm.XC),
			Baseline: Num(1 - j.srm.W), Canary: Num(j.srm.Share()), OddsRatio: Num(math.NaN()), Lower: Num(math.NaN()), Upper: Num(math.NaN()),
			EValue: Num(e), Threshold: Num(1 / a), Alpha: a, Passed: e >= 1/a,
			Detail: fmt.Sprintf("configured canary share %.1f%%, counting %s", 100*j.srm.W, units)})
	}
	return out
}

// sinceOnset makes a fired rollback test's evidence describe the data its
// e-value fired on: the data since the onset of c's strongest change-point
// component, with bounds on that component's grid at alpha (the same
// alternatives the e-value mixes), and Onset set when that component began
// after the release's first stratum.
func sinceOnset(t *TestEvidence, c *Conditional, alpha float64) {
	o, ok := c.Onset(alpha)
	if !ok {
		return
	}
	if o.NB != c.NB || o.NC != c.NC { // a later start: say since when
		at := time.Unix(0, o.At).UTC()
		t.Onset = &at
	}
	t.NBaseline, t.NCanary = o.NB, o.NC
	t.Baseline, t.Canary = Num(ratio(o.XB, o.NB)), Num(ratio(o.XC, o.NC))
	t.OddsRatio, t.Lower, t.Upper = Num(o.Odds), Num(o.Lower), Num(o.Upper)
}

// boundsText renders a conditional rollback test's bounds on the odds
// ratio. For a test that fired they are those of the data since its onset
// (sinceOnset), on the alternatives its e-value mixes, and name the onset
// when the rise began later; should they still include ×1 (the mixture
// fired on several stretches together, none enough alone), the text says
// so rather than contradict the decision silently.
func boundsText(t TestEvidence) string {
	s := fmt.Sprintf("bounds ×%.2f–%s", float64(t.Lower), fmtUpper(t.Upper))
	if t.Onset != nil {
		return fmt.Sprintf("%s, since the rise began at %s", s, t.Onset.Format(time.TimeOnly))
	}
	if t.Role == "rollback" && t.Passed && float64(t.Lower) <= 1 {
		s += ", which includes ×1: the e-value mixes over when the rise began, and no single stretch shows it alone"
	}
	return s
}

// describe renders one test's evidence as a readable phrase.
func describe(t TestEvidence, s Spec) string {
	f := func(n Num) float64 { return float64(n) }
	switch t.Name {
	case "error_rate", "session_failure", "loops", "hallucination", "incidents":
		what := map[string]string{"error_rate": "error rate", "session_failure": "failed sessions",
			"loops": "sessions looping on a tool", "hallucination": "hallucinations", "incidents": "incidents per request"}[t.Name]
		if t.Name == "error_rate" && s.Units == UnitsSessions {
			what = "sessions with a failed request"
		}
		if t.Segment != "" && t.Segment != "all" {
			what += " of " + t.Segment
		}
		if t.Role == "rollback" {
			return fmt.Sprintf("%s %.2f%% vs %.2f%% (odds ×%.2f, %s), e=%.3g ≥ %.3g",
				what, 100*f(t.Canary), 100*f(t.Baseline), f(t.OddsRatio), boundsText(t), f(t.EValue), f(t.Threshold))
		}
		return fmt.Sprintf("%s %.2f%% vs %.2f%%, odds ≤ ×%.2f < ×%.2f margin (e=%.3g)",
			what, 100*f(t.Canary), 100*f(t.Baseline), f(t.Upper), f(t.Margin), f(t.EValue))
	case "latency_p50", "latency_p95", "latency_p99":
		q := strings.TrimPrefix(t.Name, "latency_")
		if t.Role == "rollback" {
			units := "canary requests"
			if s.Units == UnitsSessions {
				units = "canary sessions' median request latencies"
			}
			of := ""
			if t.Segment != "" && t.Segment != "all" {
				of = " of " + t.Segment
			}
			values := ""
			if b, c := f(t.BaselineMS), f(t.CanaryMS); b > 0 && c > 0 {
				// The quantiles themselves, whole rollout: what the
				// exceedance counts below mean in time.
				values = fmt.Sprintf(" %+.0f%% (%s vs %s over the rollout);", 100*(c/b-1), msText(c), msText(b))
			}
			return fmt.Sprintf("%s latency%s:%s %.1f%% of %s above the baseline's %s vs %.1f%% (odds ×%.2f, %s), e=%.3g ≥ %.3g",
				q, of, values, 100*f(t.Canary), units, q, 100*f(t.Baseline), f(t.OddsRatio), boundsText(t), f(t.EValue), f(t.Threshold))
		}
		return fmt.Sprintf("%s latency within +%.0f%% of baseline (e=%.3g)", q, 100*f(t.Margin), f(t.EValue))
	case "tokens", "cost", "context_use", "tool_calls", "eval_score":
		per := map[string]string{"tokens": "tokens per LLM call", "cost": "cost per LLM call (USD)", "context_use": "context-window use",
			"tool_calls": "tool calls per session", "eval_score": "evaluation score"}[t.Name]
		if t.Role == "rollback" {
			return fmt.Sprintf("%s %.4g vs %.4g (%+.1f%%), e=%.3g ≥ %.3g", per, f(t.Canary), f(t.Baseline), 100*f(t.OddsRatio), f(t.EValue), f(t.Threshold))
		}
		return fmt.Sprintf("%s within +%.0f%% (%+.1f%%, e=%.3g)", t.Name, 100*f(t.Margin), 100*f(t.OddsRatio), f(t.EValue))
	case "tool_mix", "error_types", "tool_sequence":
		return fmt.Sprintf("%s shifted: %q is %.1f%% of the canary's vs %.1f%% of the baseline's, e=%.3g ≥ %.3g",
			t.Name, t.Detail, 100*f(t.Canary), 100*f(t.Baseline), f(t.EValue), f(t.Threshold))
	case "srm":
		return fmt.Sprintf("sample ratio mismatch: canary has %.2f%% of units, %s (n=%d), e=%.3g ≥ %.3g",
			100*f(t.Canary), t.Detail, t.NBaseline+t.NCanary, f(t.EValue), f(t.Threshold))
	case "slo_error_rate":
		return fmt.Sprintf("SLO: canary error rate %.2f%% above the %.2f%% limit, e=%.3g ≥ %.3g",
			100*f(t.Canary), 100*f(t.Baseline), f(t.EValue), f(t.Threshold))
	case "slo_latency_p95":
		return fmt.Sprintf("SLO: %.1f%% of canary requests slower than %.0f ms (limit 5%%), e=%.3g ≥ %.3g",
			100*f(t.Canary), s.SLO.MaxP95MS, f(t.EValue), f(t.Threshold))
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
		At: time.Unix(0, now).UTC(), Baseline: j.stepArm(j.spec.Baseline), Canary: j.stepArm(j.spec.Canary),
	}
	if j.step >= 0 {
		v.StepElapsedS = time.Duration(now - j.stepStart).Seconds()
	}
	if j.wall != 0 {
		w := time.Unix(0, j.wall).UTC()
		v.WallAt = &w
	}
	j.last = v
	return v
}

// stepArm summarises a version's requests and sessions in the current step.
func (j *Judge) stepArm(version string) ArmSummary {
	return j.summary(version, j.phase[version], j.phaseSess[version])
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
	// seq counts the commands of the rollout after the seq base (the
	// earlier releases' commands): the set_weight of step i is base+i+1,
	// and the final command (promote, rollback, hold) follows the last
	// set_weight sent, so the sequence has no gap (SeqBase inverts this).
	// The id of a final command does not depend on the step it was decided
	// in: a replay that reaches the same end at another step is still the
	// same decision.
	idStep := j.step
	if isFinal(v.Action) {
		idStep = -1
	}
	return &schemas.Command{
		CommandID:    schemas.CommandID(j.spec.Rollout, j.spec.Baseline, j.idCanary(), v.Action, idStep, v.Weight),
		Seq:          j.seqBase + seqOffset(v.Action, j.step),
		Rollout:      j.spec.Rollout,
		Baseline:     j.spec.Baseline,
		Canary:       j.spec.Canary,
		Action:       v.Action,
		Weight:       v.Weight,
		Step:         j.step,
		Reason:       v.Reason,
		Evidence:     ev,
		DecidedAt:    v.At,
		DeploymentID: j.spec.DeploymentID,
		Commit:       j.spec.Commit,
		Cohort:       j.cohort(v.Action),
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

func isFinal(a schemas.Action) bool {
	return a == schemas.ActionPromote || a == schemas.ActionRollback || a == schemas.ActionHold
}

// seqOffset is a command's seq after the release's seq base: step+1 for a
// set_weight, step+2 for a final command.
func seqOffset(a schemas.Action, step int) uint64 {
	if isFinal(a) {
		return uint64(step + 2)
	}
	return uint64(step + 1)
}

// SeqBase returns the seq base of the release that sent cmd (its seq
// without the release's own offset), so that a judge of the same release
// numbers its commands as cmd's sender did. A command whose seq is below
// its offset (sent before seq bases existed) gives 0.
func SeqBase(cmd *schemas.Command) uint64 {
	if off := seqOffset(cmd.Action, cmd.Step); cmd.Seq > off {
		return cmd.Seq - off
	}
	return 0
}

// SetSeqBase sets the seq base of this release: derive it from the control
// topic with SeqBase when the rollout's latest command there is of this
// release (same baseline and canary), else take that command's seq (the
// release starts after it), else 0. It is not part of the judge's state:
// the control topic is its source after every restart.
func (j *Judge) SetSeqBase(base uint64) { j.seqBase = base }

// Restore resumes the rollout from the latest command an earlier run sent
// (read back from the control topic): a final command — promote, rollback
// or hold — ends the rollout again (a hold keeps it held at its step, the
// weight it was held at); a set_weight resumes at its step, from its
// decision time. Evidence gathered before the restart is not restored
// (checkpoints carry it). It reports whether the command applied to this
// rollout's versions.
func (j *Judge) Restore(last *schemas.Command) bool {
	if last.Baseline != j.spec.Baseline || last.Canary != j.spec.Canary {
		return false
	}
	at := last.DecidedAt.UnixNano()
	if j.spec.JudgeOnly() {
		// Judge mode publishes only its final commands.
		if !isFinal(last.Action) || last.Step < 0 {
			return false
		}
		j.final, j.step, j.stepStart = last.Action, last.Step, at
		j.last = Verdict{Rollout: j.spec.Rollout, Action: last.Action, Step: j.step, Weight: last.Weight, Reason: last.Reason, At: last.DecidedAt}
		return true
	}
	switch last.Action {
	case schemas.ActionPromote, schemas.ActionRollback, schemas.ActionHold:
		if last.Action == schemas.ActionHold && (last.Step < 0 || last.Step >= len(j.spec.Steps)) {
			return false
		}
		j.final = last.Action
		j.step = min(max(last.Step, 0), len(j.spec.Steps)-1)
		j.stepStart = at
	case schemas.ActionSetWeight:
		if last.Step < 0 || last.Step >= len(j.spec.Steps) {
			return false
		}
		j.startStep(last.Step, at)
		// The wall clock of the step's start is not on the topic: its
		// decision time stands in (the step's wall-clock duration is then
		// counted from it, which only errs towards a longer step).
		j.stepWall = at
	default:
		return false
	}
	j.last = Verdict{Rollout: j.spec.Rollout, Action: last.Action, Step: j.step, Weight: last.Weight, Reason: last.Reason, At: last.DecidedAt}
	return true
}

// msText renders a duration in milliseconds for a reason: "840 ms",
// "1.94 s", "12.3 s".
func msText(ms float64) string {
	switch {
	case ms < 100:
		return fmt.Sprintf("%.3g ms", ms)
	case ms < 999.5:
		return fmt.Sprintf("%.0f ms", ms)
	case ms < 9995:
		return fmt.Sprintf("%.2f s", ms/1000)
	}
	return fmt.Sprintf("%.1f s", ms/1000)
}
