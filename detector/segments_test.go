package detector

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/inferensys/canaryd/schemas"
	"github.com/inferensys/canaryd/window"
)

// toolsWindow builds a window of tool calls over tools t0..t{n-1} with Zipf
// popularity (share ∝ 1/(i+1)), the canary's errors on tool bad at errBad.
func toolsWindow(rng *rand.Rand, i, n, perB, perC, bad int, errBad float64) window.Closed {
	start := time.Unix(1_700_000_000, 0).Add(time.Duration(i) * 10 * time.Second)
	c := window.Closed{Rollout: "r", Source: "t", Start: start.UnixNano(), End: start.Add(10 * time.Second).UnixNano(),
		Watermark: start.Add(10 * time.Second).UnixNano(), ErrorTypes: []string{window.OtherName}}
	h := 0.0
	for k := range n {
		h += 1 / float64(k+1)
	}
	for _, arm := range []struct {
		v   string
		per int
	}{{"v1", perB}, {"v2", perC}} {
		aggs := make([]*window.Agg, n)
		var ev schemas.Event
		for range arm.per {
			u, k := rng.Float64()*h, 0
			for u -= 1; u > 0 && k < n-1; k++ {
				u -= 1 / float64(k+2)
			}
			p := 0.01
			if arm.v == "v2" && k == bad {
				p = errBad
			}
			ev.Reset()
			ev.Kind = schemas.KindTool
			ev.Error = rng.Float64() < p
			ev.HasDuration = true
			ev.DurationMS = 100 * math.Exp(0.5*rng.NormFloat64())
			if aggs[k] == nil {
				aggs[k] = window.NewAgg()
			}
			aggs[k].Add(&ev, 0)
		}
		for k, a := range aggs {
			if a != nil {
				c.Series = append(c.Series, window.Series{Version: arm.v, Segment: window.Segment{Kind: schemas.KindTool, Name: fmt.Sprintf("t%d", k)}, Agg: a})
			}
		}
	}
	return c
}

// TestSegmentRegressionFound: errors 1% → 10% on one tool of 20 that
// carries 4.4% of the requests (Zipf, the 5th most used). The pooled
// error-rate e-value barely moves; the per-segment half of the mixture
// finds it, and the reason names the tool with its own rates. Fixed seed:
// the outcome is deterministic.
func TestSegmentRegressionFound(t *testing.T) {
	s := testSpec()
	s.Steps = []Step{{Weight: 10, MinDuration: Duration(time.Hour)}, {Weight: 100}}
	j := NewJudge(s)
	rng := rand.New(rand.NewPCG(31, 1))
	var v Verdict
	i := 0
	for ; i < 360 && j.Final() == ""; i++ { // an hour of 10 s windows at 100 requests/s, 10% canary
		j.Observe(toolsWindow(rng, i, 20, 900, 100, 4, 0.10))
		v, _ = j.Decide(j.now)
	}
	if v.Action != schemas.ActionRollback {
		t.Fatalf("after %d windows: %s (%s)", i, v.Action, v.Reason)
	}
	if !strings.Contains(v.Reason, "error rate of tool t4") {
		t.Fatalf("reason does not name the tool: %s", v.Reason)
	}
	pooled := j.rbErr.ERise()
	t.Logf("rolled back after %d windows (%d canary requests); pooled e-value alone %.3g; %s", i, 100*i, pooled, v.Reason)
	if pooled >= 1/j.alphaFor("error_rate") {
		t.Fatalf("the pooled e-value %.3g fired too: this case does not show the segment half at work", pooled)
	}
}

// TestSegmentMixtureAA: the mixture of the pooled and per-segment error-rate
// e-values over 20 tools (Zipf) stays an e-process: over 300 identical-
// version runs of 120 windows, no more rollbacks than a binomial at alpha
// allows (chance of failing by luck ≤ aaEps).
func TestSegmentMixtureAA(t *testing.T) {
	if testing.Short() {
		t.Skip("statistical test")
	}
	runs, fired := 300, 0
	for r := range runs {
		rng := rand.New(rand.NewPCG(uint64(r), 41))
		var pooled Conditional
		var seg segMix
		for i := range 120 {
			c := toolsWindow(rng, i, 20, 450, 50, -1, 0)
			for _, s := range c.Series {
				if s.Version != "v2" {
					continue
				}
				b := findSeries(c.Series, "v1", s.Segment)
				if b == nil {
					continue
				}
				pooled.Observe(b.Count, b.Errors, s.Agg.Count, s.Agg.Errors)
				seg.observe(c.Start, s.Segment, b.Count, b.Errors, s.Agg.Count, s.Agg.Errors)
			}
			es, _ := seg.e()
			if pooled.ERise()/2+es/2 >= 1/0.05 {
				fired++
				break
			}
		}
	}
	if lim := binomMax(runs, 0.05, aaEps); fired > lim {
		t.Fatalf("A/A rollbacks %d/%d; want ≤ %d (alpha 0.05; chance ≤ %g by luck)", fired, runs, lim, aaEps)
	}
	t.Logf("A/A rollbacks %d/%d at alpha 0.05", fired, runs)
}

// TestErrorTypesStratified: the canary calls tool a (whose errors are
// timeouts) 80% of the time where the baseline calls it 50%, and tool b
// (rate limits) the rest; within each tool both versions fail alike (5%,
// same type). The error-type mix pooled over tools shifts a lot; within
// every tool it does not, and error_types (stratified by segment) must not
// fire. Fixed seed: deterministic.
func TestErrorTypesStratified(t *testing.T) {
	s := testSpec()
	s.Settle = 0
	s.Steps = []Step{{Weight: 20, MinDuration: Duration(time.Hour)}, {Weight: 100}}
	s.Metrics.ToolMix.Disabled = true // the tool mix did change: not what this test is about
	j := NewJudge(s)
	rng := rand.New(rand.NewPCG(51, 1))
	var pooled Categorical // what error_types saw before it was stratified
	for i := range 200 {
		start := time.Unix(1_700_000_000, 0).Add(time.Duration(i) * 10 * time.Second)
		c := window.Closed{Rollout: "r", Source: "t", Start: start.UnixNano(), End: start.Add(10 * time.Second).UnixNano(),
			Watermark: start.Add(10 * time.Second).UnixNano(), ErrorTypes: []string{window.OtherName, "timeout", "rate_limit"}}
		for _, arm := range []struct {
			v      string
			n      int
			shareA float64
		}{{"v1", 800, 0.5}, {"v2", 200, 0.8}} {
			a, b := window.NewAgg(), window.NewAgg()
			var ev schemas.Event
			for range arm.n {
				ev.Reset()
				ev.Kind = schemas.KindTool
				ev.Error = rng.Float64() < 0.05
				ev.HasDuration, ev.DurationMS = true, 100
				if rng.Float64() < arm.shareA {
					a.Add(&ev, map[bool]int{true: 1, false: 0}[ev.Error])
				} else {
					b.Add(&ev, map[bool]int{true: 2, false: 0}[ev.Error])
				}
			}
			c.Series = append(c.Series,
				window.Series{Version: arm.v, Segment: window.Segment{Kind: schemas.KindTool, Name: "a"}, Agg: a},
				window.Series{Version: arm.v, Segment: window.Segment{Kind: schemas.KindTool, Name: "b"}, Agg: b})
		}
		var pb, pc []uint64
		for _, sr := range c.Series {
			if sr.Version == "v1" {
				pb = addCounts(pb, sr.Agg.ErrorTypes)
			} else {
				pc = addCounts(pc, sr.Agg.ErrorTypes)
			}
		}
		n := max(len(pb), len(pc))
		pooled.Observe(c.ErrorTypes[:n], pad(pb, n), pad(pc, n))
		j.Observe(c)
		if v, _ := j.Decide(c.Watermark); v.Action == schemas.ActionRollback {
			t.Fatalf("window %d: %s", i, v.Reason)
		}
	}
	if e, _, _ := pooled.E(); e < 1/j.alphaFor("error_types") {
		t.Fatalf("the pooled error-type test would not fire either (e=%.3g): the case shows nothing", e)
	}
	for _, te := range j.tests() {
		if te.Name == "error_types" {
			t.Logf("error_types e=%.3g (threshold %.3g), top %s: %.1f%% vs %.1f%%", float64(te.EValue), float64(te.Threshold), te.Detail, 100*float64(te.Canary), 100*float64(te.Baseline))
		}
	}
}
