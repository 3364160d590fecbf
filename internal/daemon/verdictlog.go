package daemon

import (
	"slices"
	"sync"

	"github.com/inferensys/canaryd/detector"
	"github.com/inferensys/canaryd/sink"
)

// Bounds of the verdict history (GET /v1/rollouts/{id}/history, which the
// status page plots). A point holds about 50 bytes per test: with ten tests,
// a full rollout's history is about 130 kB, and all of them at most 35 MB.
const (
	verdictPoints   = 240 // points kept per rollout; then every other one is dropped
	verdictRollouts = 256 // rollouts kept; then the one updated least recently is dropped
)

// verdictLog keeps each rollout's verdicts over time, one per closed window
// judged, for the status page's plots: the status carries the latest verdict
// only. Each rollout's log covers its current release (a new release starts
// afresh) and is bounded: when full, every other continue is dropped and the
// stride doubles, so the whole release stays covered at a coarser grain;
// decisions other than continue are always kept, and the last point is
// always the latest verdict.
//
// Its zero value is ready to use. mu guards every field; it is taken after
// Daemon.mu (onClosed records under it) and held for in-memory work only.
type verdictLog struct {
	mu    sync.Mutex
	logs  map[string]*rolloutVerdicts
	clock uint64 // bumped per record: the least recently updated log is evicted first
}

type rolloutVerdicts struct {
	baseline, canary string
	stride           int  // verdicts per kept point
	skipped          int  // continues since the last kept point
	tentative        bool // the last point is the latest verdict, not a kept one: the next verdict replaces it
	used             uint64
	points           []sink.HistoryPoint
	events           []sink.HistoryEvent // the last sink.HistoryEvents
}

// record adds the verdict v of a judge with spec s.
func (l *verdictLog) record(s detector.Spec, v detector.Verdict) {
	if v.At.IsZero() {
		return // no decision yet
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.logOf(s).add(point(v))
}

// logOf returns the log of s's release, a new one when the release is new
// (evicting the least recently updated log when full), marked as just
// used. l.mu is held.
func (l *verdictLog) logOf(s detector.Spec) *rolloutVerdicts {
	if l.logs == nil {
		l.logs = map[string]*rolloutVerdicts{}
	}
	l.clock++
	r := l.logs[s.Rollout]
	if r == nil || r.baseline != s.Baseline || r.canary != s.Canary {
		if r == nil && len(l.logs) >= verdictRollouts {
			l.evict()
		}
		r = &rolloutVerdicts{baseline: s.Baseline, canary: s.Canary, stride: 1}
		l.logs[s.Rollout] = r
	}
	r.used = l.clock
	return r
}

// evict drops the log updated least recently.
func (l *verdictLog) evict() {
	var oldest string
	var used uint64
	for id, r := range l.logs {
		if oldest == "" || r.used < used {
			oldest, used = id, r.used
		}
	}
	delete(l.logs, oldest)
}

func (r *rolloutVerdicts) add(p sink.HistoryPoint) {
	if n := len(r.points); n > 0 {
		prev := r.points[n-1]
		if prev.At.Equal(p.At) && prev.Action == p.Action && prev.Step == p.Step {
			return // the same verdict again (Decide after the final one)
		}
	}
	if r.tentative {
		r.points = r.points[:len(r.points)-1]
		r.tentative = false
	}
	r.skipped++
	keep := p.Action != string(detector.ActionContinue) || r.skipped >= r.stride ||
		len(r.points) == 0 || r.points[len(r.points)-1].Step != p.Step
	if keep {
		r.skipped = 0
	} else {
		r.tentative = true
	}
	r.points = append(r.points, p)
	if len(r.points) > verdictPoints {
		r.thin()
	}
}

// thin halves the points: every other continue goes (the newest point and
// decisions stay), and the stride doubles.
func (r *rolloutVerdicts) thin() {
	last := len(r.points) - 1
	odd := false
	kept := r.points[:0] // in place: readers get copies (history)
	for i, p := range r.points {
		if p.Action == string(detector.ActionContinue) && i != last && i != 0 {
			odd = !odd
			if odd {
				continue
			}
		}
		kept = append(kept, p)
	}
	// Decisions alone may fill it (a judge-mode rollout's many weights):
	// then the oldest points go.
	if len(kept) > verdictPoints {
		kept = kept[len(kept)-verdictPoints:]
	}
	r.points = kept
	r.stride *= 2
}

// point is the part of a verdict the history keeps.
func point(v detector.Verdict) sink.HistoryPoint {
	p := sink.HistoryPoint{At: v.At.UTC(), Step: v.Step, Weight: v.Weight, Action: string(v.Action),
		Tests:    make([]sink.HistoryTest, len(v.Tests)),
		Baseline: sink.HistoryArm{Requests: v.Baseline.Requests, ErrorRate: v.Baseline.ErrorRate, P95MS: v.Baseline.P95MS},
		Canary:   sink.HistoryArm{Requests: v.Canary.Requests, ErrorRate: v.Canary.ErrorRate, P95MS: v.Canary.P95MS}}
	if p.Action == "" {
		p.Action = string(detector.ActionContinue)
	}
	if v.Action != detector.ActionContinue && v.Action != "" {
		p.Reason = v.Reason
	}
	for i, t := range v.Tests {
		p.Tests[i] = sink.HistoryTest{Name: t.Name, Role: t.Role, EValue: t.EValue, Threshold: t.Threshold, Passed: t.Passed}
	}
	return p
}

// event adds an operator action or controller call on the release of s.
func (l *verdictLog) event(s detector.Spec, e sink.HistoryEvent) {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.logOf(s)
	if len(r.events) >= sink.HistoryEvents {
		r.events = slices.Delete(r.events, 0, len(r.events)-sink.HistoryEvents+1)
	}
	r.events = append(r.events, e)
}

// history returns a copy of the rollout's log.
func (l *verdictLog) history(rollout string) (sink.History, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.logs[rollout]
	if r == nil {
		return sink.History{}, false
	}
	return sink.History{Rollout: rollout, Baseline: r.baseline, Canary: r.canary, Capacity: verdictPoints, Stride: r.stride,
		Points: slices.Clone(r.points), Events: append([]sink.HistoryEvent{}, r.events...)}, true
}

var _ sink.HistorySource = (*Daemon)(nil)

// History implements sink.HistorySource: the rollout's verdicts over time.
// A rollout canaryd judges but has no verdict of yet has an empty history.
func (d *Daemon) History(rollout string) (sink.History, bool) {
	if h, ok := d.verdicts.history(rollout); ok {
		return h, true
	}
	st, ok := d.Status(rollout)
	if !ok {
		return sink.History{}, false
	}
	return sink.History{Rollout: rollout, Baseline: st.Baseline, Canary: st.Canary, Capacity: verdictPoints, Stride: 1,
		Points: []sink.HistoryPoint{}, Events: []sink.HistoryEvent{}}, true
}
