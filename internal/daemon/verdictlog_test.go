package daemon

import (
	"fmt"
	"testing"
	"time"

	"github.com/inferensys/canaryd/detector"
	"github.com/inferensys/canaryd/schemas"
	"github.com/inferensys/canaryd/sink"
)

// TestVerdictLog: the history stays within its bounds however long the
// release, covers all of it (first and latest verdict), keeps every
// decision, ignores a verdict repeated after the final one, starts afresh
// with a new release and evicts the rollout updated least recently.
func TestVerdictLog(t *testing.T) {
	var l verdictLog
	spec := detector.Spec{Rollout: "r", Baseline: "v1", Canary: "v2"}
	t0 := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	const n = 5000
	decisions := map[int]schemas.Action{0: schemas.ActionSetWeight, 1700: schemas.ActionSetWeight, 3300: schemas.ActionSetWeight, n - 1: schemas.ActionRollback}
	step := 0
	for i := range n {
		a, ok := decisions[i]
		if !ok {
			a = detector.ActionContinue
		}
		if a == schemas.ActionSetWeight && i > 0 {
			step++
		}
		v := detector.Verdict{Rollout: "r", Action: a, Step: step, Weight: 10 * (step + 1), Reason: fmt.Sprint("verdict ", i), At: t0.Add(time.Duration(i) * time.Second),
			Tests: []detector.TestEvidence{{Name: "error_rate", Role: "rollback", EValue: detector.Num(i), Threshold: 100}}}
		l.record(spec, v)
		if i == n-1 {
			l.record(spec, v) // Decide after the final verdict returns it again
		}
	}
	h, ok := l.history("r")
	if !ok {
		t.Fatal("no history")
	}
	if len(h.Points) > verdictPoints || len(h.Points) < verdictPoints/2 {
		t.Errorf("%d points; want between %d and %d", len(h.Points), verdictPoints/2, verdictPoints)
	}
	if got, want := h.Points[0].At, t0; !got.Equal(want) {
		t.Errorf("first point at %v; want the first verdict's %v", got, want)
	}
	lastP := h.Points[len(h.Points)-1]
	if !lastP.At.Equal(t0.Add((n-1)*time.Second)) || lastP.Action != "rollback" || lastP.Reason != fmt.Sprint("verdict ", n-1) {
		t.Errorf("last point %+v; want the rollback", lastP)
	}
	if len(h.Points) > 1 && h.Points[len(h.Points)-2].At.Equal(lastP.At) {
		t.Error("the final verdict is recorded twice")
	}
	seen := map[int]bool{}
	for i, p := range h.Points {
		if i > 0 && !p.At.After(h.Points[i-1].At) {
			t.Fatalf("point %d at %v is not after %v", i, p.At, h.Points[i-1].At)
		}
		if p.Action != "continue" {
			seen[int(p.At.Sub(t0)/time.Second)] = true
			if p.Reason == "" {
				t.Errorf("decision %+v has no reason", p)
			}
		} else if p.Reason != "" {
			t.Errorf("continue %+v carries a reason", p)
		}
		if len(p.Tests) != 1 || float64(p.Tests[0].EValue) != p.At.Sub(t0).Seconds() || p.Tests[0].Threshold != 100 {
			t.Errorf("point %d: tests %+v", i, p.Tests)
		}
	}
	for i := range decisions {
		if !seen[i] {
			t.Errorf("decision at verdict %d dropped", i)
		}
	}
	if h.Stride < 2 || h.Stride&(h.Stride-1) != 0 || h.Capacity != verdictPoints {
		t.Errorf("stride %d, capacity %d", h.Stride, h.Capacity)
	}

	// A new release starts afresh.
	next := spec
	next.Canary = "v3"
	l.record(next, detector.Verdict{Rollout: "r", Action: detector.ActionContinue, At: t0.Add(n * time.Second)})
	if h, _ := l.history("r"); len(h.Points) != 1 || h.Canary != "v3" || h.Stride != 1 {
		t.Errorf("after a new release: %d points, canary %s, stride %d; want 1, v3, 1", len(h.Points), h.Canary, h.Stride)
	}
	// No verdict yet: nothing recorded.
	l.record(detector.Spec{Rollout: "quiet"}, detector.Verdict{Rollout: "quiet", Action: detector.ActionContinue})
	if _, ok := l.history("quiet"); ok {
		t.Error("a verdict without a time was recorded")
	}
	// Eviction: r is the oldest once verdictRollouts others were recorded.
	for i := range verdictRollouts {
		id := fmt.Sprint("other-", i)
		l.record(detector.Spec{Rollout: id, Baseline: "v1", Canary: "v2"}, detector.Verdict{Rollout: id, Action: detector.ActionContinue, At: t0})
	}
	if _, ok := l.history("r"); ok || len(l.logs) != verdictRollouts {
		t.Errorf("after %d more rollouts: r kept %v, %d logs; want r evicted, %d", verdictRollouts, ok, len(l.logs), verdictRollouts)
	}
}

// TestVerdictLogEvents: operator actions and controller calls are kept per
// release, the last sink.HistoryEvents of them, oldest first, and a new
// release starts without them.
func TestVerdictLogEvents(t *testing.T) {
	var l verdictLog
	spec := detector.Spec{Rollout: "r", Baseline: "v1", Canary: "v2"}
	t0 := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	for i := range sink.HistoryEvents + 6 {
		w := i % 100
		l.event(spec, sink.HistoryEvent{At: t0.Add(time.Duration(i) * time.Second), Kind: "controller", Action: "declare", By: "argo", Weight: &w})
	}
	l.event(spec, sink.HistoryEvent{At: t0.Add(time.Hour), Kind: "operator", Action: "pause", By: "alice", Reason: "dashboards"})
	h, ok := l.history("r")
	if !ok || len(h.Events) != sink.HistoryEvents {
		t.Fatalf("%d events; want %d", len(h.Events), sink.HistoryEvents)
	}
	if first, last := h.Events[0], h.Events[len(h.Events)-1]; *first.Weight != 7 || last.Action != "pause" || last.By != "alice" {
		t.Errorf("events from weight %d to %s by %s; want the oldest dropped (first weight 7) and alice's pause last", *first.Weight, last.Action, last.By)
	}
	next := spec
	next.Canary = "v3"
	l.event(next, sink.HistoryEvent{At: t0.Add(2 * time.Hour), Kind: "operator", Action: "start", By: "bob"})
	if h, _ := l.history("r"); len(h.Events) != 1 || h.Canary != "v3" {
		t.Errorf("after a new release: %d events of canary %s; want 1 of v3", len(h.Events), h.Canary)
	}
}
