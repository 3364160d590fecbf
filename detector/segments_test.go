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
	return toolsWindowLat(rng, i, n, perB, perC, bad, errBad, 1)
}

// toolsWindowLat is toolsWindow with the bad tool's canary latencies
// (every tool's when bad < 0) multiplied by latBad.
func toolsWindowLat(rng *rand.Rand, i, n, perB, perC, bad int, errBad, latBad float64) window.Closed {
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
			p, lat := 0.01, 1.0
			if arm.v == "v2" && k == bad {
				p = errBad
			}
			if arm.v == "v2" && (k == bad || bad < 0) {
				lat = latBad
			}
			ev.Reset()
			ev.Kind = schemas.KindTool
			ev.Error = rng.Float64() < p
			ev.HasDuration = true
			ev.DurationMS = 100 * lat * math.Exp(0.5*rng.NormFloat64())
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

// judgeTools judges the windows next makes (an hour of 10 s windows at
// most, 10% canary in one step) until a final verdict, and returns the
// judge, its last verdict and how many windows it saw.
func judgeTools(next func(i int) window.Closed) (*Judge, Verdict, int) {
	s := testSpec()
	s.Steps = []Step{{Weight: 10, MinDuration: Duration(time.Hour)}, {Weight: 100}}
	j := NewJudge(s)
	var v Verdict
	i := 0
	for ; i < 360 && j.Final() == ""; i++ {
		j.Observe(next(i))
		v, _ = j.Decide(j.now)
	}
	return j, v, i
}

// TestSegmentRegressionFound: errors 1% → 10% on one tool of 20 that
// carries 4.4% of the requests (Zipf, the 5th most used). The pooled
// error-rate e-value barely moves; the per-segment half of the mixture
// finds it, and the reason names the tool with its own rates. Fixed seed:
// the outcome is deterministic.
func TestSegmentRegressionFound(t *testing.T) {
	rng := rand.New(rand.NewPCG(31, 1))
	j, v, i := judgeTools(func(i int) window.Closed { return toolsWindow(rng, i, 20, 900, 100, 4, 0.10) })
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

// TestSegmentLatencyReason: one tool's canary requests 1.5× slower, every
// quantile (the tool carries 11% of the requests), errors unchanged. The
// rollback names the tool and gives the quantile its test fired on, in
// time, for both versions, as the tool's own whole-rollout sketches have
// them. Fixed seed: the outcome is deterministic.
func TestSegmentLatencyReason(t *testing.T) {
	rng := rand.New(rand.NewPCG(32, 1))
	j, v, i := judgeTools(func(i int) window.Closed { return toolsWindowLat(rng, i, 20, 900, 100, 1, 0.01, 1.5) })
	if v.Action != schemas.ActionRollback {
		t.Fatalf("after %d windows: %s (%s)", i, v.Action, v.Reason)
	}
	t.Logf("rolled back after %d windows: %s", i, v.Reason)
	var ev *TestEvidence
	for k := range v.Tests {
		if x := &v.Tests[k]; x.Role == "rollback" && x.Passed && strings.HasPrefix(x.Name, "latency_") && ev == nil {
			ev = x
		}
	}
	if ev == nil || ev.Segment != "tool t1" {
		t.Fatalf("no latency test fired on tool t1: %+v", v.Tests)
	}
	q := map[string]float64{"latency_p50": 0.5, "latency_p95": 0.95, "latency_p99": 0.99}[ev.Name]
	key := func(v string) string { return segTotalKey(v, window.Segment{Kind: schemas.KindTool, Name: "t1"}) }
	wantB, wantC := j.segTotal[key("v1")].Quantile(q), j.segTotal[key("v2")].Quantile(q)
	if float64(ev.BaselineMS) != wantB || float64(ev.CanaryMS) != wantC {
		t.Errorf("%s of tool t1: evidence %v vs %v ms; want the segment's own %v vs %v", ev.Name, ev.CanaryMS, ev.BaselineMS, wantC, wantB)
	}
	// Lognormal latencies ×1.5: every quantile 50% higher, within the
	// sketches' 1% and the sample's spread.
	if r := wantC / wantB; r < 1.3 || r > 1.7 {
		t.Errorf("canary/baseline %s of tool t1 = %.2f; want about 1.5", ev.Name, r)
	}
	want := fmt.Sprintf("%s latency of tool t1: %+.0f%% (%s vs %s over the rollout);", strings.TrimPrefix(ev.Name, "latency_"), 100*(wantC/wantB-1), msText(wantC), msText(wantB))
	if !strings.Contains(v.Reason, want) {
		t.Errorf("reason %q; want it to contain %q", v.Reason, want)
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

// TestPooledLatencyNoMS: every tool's canary requests 1.5× slower. The
// pooled test carries the rollback, and its evidence gives no quantile in
// time: one pooled over segments mixes their shares and can point the
// other way (the test compares each segment with its own threshold).
func TestPooledLatencyNoMS(t *testing.T) {
	rng := rand.New(rand.NewPCG(34, 1))
	_, v, i := judgeTools(func(i int) window.Closed { return toolsWindowLat(rng, i, 20, 900, 100, -1, 0.01, 1.5) })
	if v.Action != schemas.ActionRollback {
		t.Fatalf("after %d windows: %s (%s)", i, v.Action, v.Reason)
	}
	t.Logf("rolled back after %d windows: %s", i, v.Reason)
	pooled := 0
	for _, x := range v.Tests {
		if x.Role != "rollback" || !strings.HasPrefix(x.Name, "latency_") || x.Segment != "all" {
			continue
		}
		pooled++
		if x.BaselineMS != 0 || x.CanaryMS != 0 {
			t.Errorf("%s on all segments gives %v vs %v ms; want none", x.Name, x.CanaryMS, x.BaselineMS)
		}
	}
	if pooled == 0 {
		t.Fatalf("no pooled latency evidence: %+v", v.Tests)
	}
	if strings.Contains(v.Reason, "over the rollout") {
		t.Errorf("reason %q gives a pooled quantile", v.Reason)
	}
}

func TestMsText(t *testing.T) {
	for _, c := range []struct {
		ms   float64
		want string
	}{{7.214, "7.21 ms"}, {85.3, "85.3 ms"}, {99.96, "100 ms"}, {840.2, "840 ms"}, {999.4, "999 ms"}, {999.6, "1.00 s"}, {1940, "1.94 s"}, {9994, "9.99 s"}, {9996, "10.0 s"}, {123456, "123.5 s"}} {
		if got := msText(c.ms); got != c.want {
			t.Errorf("msText(%v) = %q; want %q", c.ms, got, c.want)
		}
	}
}
