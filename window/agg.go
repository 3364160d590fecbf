// Package window keeps canaryd's per-series state: for every (rollout,
// version, segment) it aggregates events into event-time tumbling windows,
// closes them behind a per-partition watermark with allowed lateness, and
// hands each closed window to the detector. How event time, the watermark
// (a quorum of events), future and late events and the idle rule work is
// written down in eventtime.md.
//
// A Partition is owned by one goroutine (the one consuming its Kafka
// partition) and is not safe for concurrent use; closed windows leave it
// through the Options.Emit callback, which transfers ownership of their Aggs.
package window

import (
	"math"

	"github.com/DataDog/sketches-go/ddsketch"
	"github.com/DataDog/sketches-go/ddsketch/mapping"
	"github.com/DataDog/sketches-go/ddsketch/store"

	"github.com/inferensys/canaryd/schemas"
)

// RelativeAccuracy of every latency sketch. All sketches share one mapping so
// that their buckets have the same edges: counts above an edge are exact and
// merges are order-independent.
const RelativeAccuracy = 0.01

// maxSketchBins bounds a sketch's memory; the store collapses only its lowest
// buckets (the fastest calls), never the tail that canary judgement reads.
// 2048 bins at 1% accuracy span 1e-3 ms to ~5e14 ms.
const maxSketchBins = 2048

// Mapping is the index mapping every sketch uses.
var Mapping = func() mapping.IndexMapping {
	m, err := mapping.NewLogarithmicMapping(RelativeAccuracy)
	if err != nil {
		panic("BUG: " + err.Error())
	}
	return m
}()

// NewSketch returns an empty latency sketch on the shared mapping.
func NewSketch() *ddsketch.DDSketch {
	return ddsketch.NewDDSketch(Mapping, store.NewCollapsingLowestDenseStore(maxSketchBins), store.NewCollapsingLowestDenseStore(8))
}

// Agg is the aggregate of one series over one window (or over many, merged).
type Agg struct {
	Count  uint64 // events
	Errors uint64 // events with status error
	// ErrorTypes counts errors by the rollout's error-type id (see
	// Rollout.ErrorTypes); index 0 is "other" (unnamed or beyond the cap).
	ErrorTypes []uint64
	Latency    *ddsketch.DDSketch // duration_ms of events that carry one

	// Failed counts events that failed as a unit: status error, or an
	// outcome with success false (a session's verdict on itself).
	Failed uint64

	InputTokens   float64
	OutputTokens  float64
	Tokens2       float64 // sum of (input+output)², for variance
	CostUSD       float64
	CostUSD2      float64 // sum of squares, for variance
	CostN         uint64  // events that carry a cost
	ContextTokens float64 // sum of context_tokens
	ContextUse    float64 // sum of context_tokens/context_limit where both are set
	ContextUse2   float64 // sum of squares of the same
	ContextN      uint64  // events with a context limit

	Successes     uint64 // outcome.success == true
	Failures      uint64 // outcome.success == false
	Hallucination uint64 // outcome.hallucination == true
	HallucN       uint64 // events that carry outcome.hallucination
	ScoreSum      float64
	Score2        float64
	ScoreN        uint64

	// Sessions (agent/task events with tool_calls): the tool-call sequence.
	ToolCalls  float64 // sum of tool calls per event
	ToolCalls2 float64 // sum of squares
	Loops      uint64  // events whose sequence calls the same tool twice in a row
	// Bigrams counts consecutive tool-call pairs by the rollout's bigram id
	// (see Closed.Bigrams); index 0 is "_other".
	Bigrams []uint64

	// Session units: session summaries (agent/task events) that carry their
	// requests' totals (schemas.Event.Requests > 0).
	UnitSessions  uint64 // such summaries
	ErrSessions   uint64 // of those, sessions with at least one failed request
	SessRequests  uint64 // Σ Requests
	SessReqErrors uint64 // Σ RequestErrors
	// SessMedian holds the sessions' median request durations
	// (RequestMedianMS of the summaries that carry one), on the shared
	// Mapping; nil until the first. nil and empty mean the same: the
	// encodings write both as absent and decode that as nil.
	SessMedian *ddsketch.DDSketch

	// NewSessions counts the sessions first seen in this window: events
	// whose session_id the rollout had not seen in the partition within
	// Options.SessionTimeout, each counted on the series (version, segment)
	// of its first event. A session is counted once, in the window of its
	// first event, so a window's NewSessions per version are the sessions
	// the router assigned — the units of the SRM check (detector). Set by
	// Partition.Add, not by Agg.Add (it needs the partition's memory of
	// session ids).
	NewSessions uint64
}

// NewAgg returns an empty aggregate.
func NewAgg() *Agg { return &Agg{Latency: NewSketch()} }

// Add folds one event in. errType is the rollout's id for ev.ErrorType.
func (a *Agg) Add(ev *schemas.Event, errType int) {
	a.Count++
	if ev.Error {
		a.Errors++
		for len(a.ErrorTypes) <= errType {
			a.ErrorTypes = append(a.ErrorTypes, 0)
		}
		a.ErrorTypes[errType]++
	}
	if ev.HasDuration {
		// Durations are validated finite, non-negative and bounded by the
		// decoder, so Add cannot fail.
		_ = a.Latency.Add(ev.DurationMS)
	}
	if ev.Error || ev.HasOutcomeSuccess && !ev.OutcomeSuccess {
		a.Failed++
	}
	tok := float64(ev.InputTokens + ev.OutputTokens)
	a.InputTokens += float64(ev.InputTokens)
	a.OutputTokens += float64(ev.OutputTokens)
	a.Tokens2 += tok * tok
	if ev.HasCost {
		a.CostUSD += ev.CostUSD
		a.CostUSD2 += ev.CostUSD * ev.CostUSD
		a.CostN++
	}
	a.ContextTokens += float64(ev.ContextTokens)
	if ev.ContextLimit > 0 {
		u := float64(ev.ContextTokens) / float64(ev.ContextLimit)
		a.ContextUse += u
		a.ContextUse2 += u * u
		a.ContextN++
	}
	if ev.HasOutcome {
		if ev.HasOutcomeSuccess {
			if ev.OutcomeSuccess {
				a.Successes++
			} else {
				a.Failures++
			}
		}
		if ev.HasHallucination {
			a.HallucN++
			if ev.OutcomeHallucinated {
				a.Hallucination++
			}
		}
		if ev.HasOutcomeScore {
			a.ScoreSum += ev.OutcomeScore
			a.Score2 += ev.OutcomeScore * ev.OutcomeScore
			a.ScoreN++
		}
	}
	if n := len(ev.ToolCalls); n > 0 {
		a.ToolCalls += float64(n)
		a.ToolCalls2 += float64(n * n)
		for i := 1; i < n; i++ {
			if string(ev.ToolCalls[i]) == string(ev.ToolCalls[i-1]) {
				a.Loops++
				break
			}
		}
	}
	if ev.Requests > 0 {
		errs := min(ev.RequestErrors, ev.Requests)
		a.UnitSessions++
		a.SessRequests += uint64(ev.Requests)
		a.SessReqErrors += uint64(errs)
		if errs > 0 {
			a.ErrSessions++
		}
	}
	if ev.HasRequestMedian {
		// Lazily: only session summaries carry a median, and most series
		// are request series.
		if a.SessMedian == nil {
			a.SessMedian = NewSketch()
		}
		// Validated like durations (finite, non-negative, bounded by
		// schemas.MaxDurationMS), so Add cannot fail.
		_ = a.SessMedian.Add(ev.RequestMedianMS)
	}
}

// AddBigram counts one tool-call pair by its rollout bigram id.
func (a *Agg) AddBigram(id int) {
	for len(a.Bigrams) <= id {
		a.Bigrams = append(a.Bigrams, 0)
	}
	a.Bigrams[id]++
}

// Merge adds b into a.
func (a *Agg) Merge(b *Agg) {
	a.Count += b.Count
	a.Errors += b.Errors
	for len(a.ErrorTypes) < len(b.ErrorTypes) {
		a.ErrorTypes = append(a.ErrorTypes, 0)
	}
	for i, v := range b.ErrorTypes {
		a.ErrorTypes[i] += v
	}
	if err := a.Latency.MergeWith(b.Latency); err != nil {
		panic("BUG: merging sketches with different mappings: " + err.Error())
	}
	a.Failed += b.Failed
	a.InputTokens += b.InputTokens
	a.OutputTokens += b.OutputTokens
	a.Tokens2 += b.Tokens2
	a.CostUSD += b.CostUSD
	a.CostUSD2 += b.CostUSD2
	a.CostN += b.CostN
	a.ContextTokens += b.ContextTokens
	a.ContextUse += b.ContextUse
	a.ContextUse2 += b.ContextUse2
	a.ContextN += b.ContextN
	a.Successes += b.Successes
	a.Failures += b.Failures
	a.Hallucination += b.Hallucination
	a.HallucN += b.HallucN
	a.ScoreSum += b.ScoreSum
	a.Score2 += b.Score2
	a.ScoreN += b.ScoreN
	a.ToolCalls += b.ToolCalls
	a.ToolCalls2 += b.ToolCalls2
	a.Loops += b.Loops
	for len(a.Bigrams) < len(b.Bigrams) {
		a.Bigrams = append(a.Bigrams, 0)
	}
	for i, v := range b.Bigrams {
		a.Bigrams[i] += v
	}
	a.UnitSessions += b.UnitSessions
	a.ErrSessions += b.ErrSessions
	a.SessRequests += b.SessRequests
	a.SessReqErrors += b.SessReqErrors
	a.NewSessions += b.NewSessions
	if b.SessMedian != nil && !b.SessMedian.IsEmpty() {
		// A sketch of a's own, never b's: the caller may go on adding to b.
		if a.SessMedian == nil {
			a.SessMedian = NewSketch()
		}
		if err := a.SessMedian.MergeWith(b.SessMedian); err != nil {
			panic("BUG: merging sketches with different mappings: " + err.Error())
		}
	}
}

// Quantile returns the latency at q in ms, or NaN when there is none.
func (a *Agg) Quantile(q float64) float64 {
	if a.Latency == nil || a.Latency.IsEmpty() {
		return math.NaN()
	}
	v, err := a.Latency.GetValueAtQuantile(q)
	if err != nil {
		return math.NaN()
	}
	return v
}

// CountAbove returns how many latencies fall in buckets whose index is above
// idx (of the shared Mapping): exact, because every sketch shares the edges.
func (a *Agg) CountAbove(idx int) uint64 {
	if a.Latency == nil {
		return 0
	}
	var n float64
	a.Latency.GetPositiveValueStore().ForEach(func(i int, c float64) bool {
		if i > idx {
			n += c
		}
		return false
	})
	return uint64(n + 0.5)
}

// LatencyCount returns how many latencies the sketch holds.
func (a *Agg) LatencyCount() uint64 {
	if a.Latency == nil {
		return 0
	}
	return uint64(a.Latency.GetCount() + 0.5)
}
