package detector

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// TestOnset: a rise that begins after a long clean stretch is described by
// the data since the onset that ERise's strongest component points at, not
// by the whole release: the onset falls near the true one, and the bounds,
// which over the whole release still include ×1 when the test fires, exclude
// it (and include the true ×2.58 odds of 5% vs 2%). Fixed seeds: the outcome
// is deterministic; the assertions hold for every one of 20 seeds.
func TestOnset(t *testing.T) {
	const clean, alpha = 300, 0.01
	for seed := range uint64(20) {
		rng := rand.New(rand.NewPCG(seed, 29))
		var c Conditional
		fired := false
		for s := range clean + 1000 {
			pc := 0.02
			if s >= clean {
				pc = 0.05
			}
			c.ObserveAt(int64(s+1), 1000, binom(rng, 1000, 0.02), 50, binom(rng, 50, pc))
			if s >= clean && c.ERise() >= 1/alpha {
				fired = true
				break
			}
		}
		if !fired {
			t.Fatalf("seed %d: ERise did not fire", seed)
		}
		lo, _ := c.Bounds(alpha)
		o, ok := c.Onset(alpha)
		if !ok {
			t.Fatalf("seed %d: no onset", seed)
		}
		t.Logf("seed %d: onset at stratum %d (true %d); since then odds ×%.2f, bounds ×%.2f–×%.2f; whole release lower bound ×%.2f",
			seed, o.At-1, clean, o.Odds, o.Lower, o.Upper, lo)
		if at := o.At - 1; at < clean-60 || at > clean+120 {
			t.Errorf("seed %d: onset at stratum %d; want near %d", seed, at, clean)
		}
		if !(o.Lower > 1) || !(o.Upper > 2.58) && !math.IsInf(o.Upper, 1) {
			t.Errorf("seed %d: bounds since the onset ×%.2f–×%.2f; want above ×1 and covering ×2.58", seed, o.Lower, o.Upper)
		}
		if o.NC == 0 || o.NC >= c.NC {
			t.Errorf("seed %d: %d canary units since the onset of %d", seed, o.NC, c.NC)
		}
	}
}

// TestOnsetInReason: a judge rolling back a late regression names the onset
// and the rates since it, with bounds above ×1.
func TestOnsetInReason(t *testing.T) {
	s := testSpec()
	s.Steps[0].MinDuration = Duration(time.Hour) // stay at 5% while the regression comes
	j := NewJudge(s)
	rng := rand.New(rand.NewPCG(4, 1))
	start := time.Unix(1_700_000_000, 0)
	const onset = 120 // windows of 10 s: 20 minutes clean
	var v Verdict
	for i := range 600 {
		w := j.Status().Weight
		k := 4000 * w / 100
		errC := 0.01
		if i >= onset {
			errC = 0.03
		}
		c := simWindow(rng, start.Add(time.Duration(i)*10*time.Second), 10*time.Second,
			arm{version: "v1", perWindow: 4000 - k, errRate: 0.01, latMedian: 100, latSigma: 0.5},
			arm{version: "v2", perWindow: k, errRate: errC, latMedian: 100, latSigma: 0.5})
		j.Observe(c)
		v, _ = j.Decide(c.Watermark)
		if j.Final() != "" {
			break
		}
	}
	if j.Final() != "rollback" {
		t.Fatalf("final %q: %s; want rollback", j.Final(), v.Reason)
	}
	t.Log(v.Reason)
	var found bool
	for _, te := range v.Tests {
		if te.Name != "error_rate" || te.Role != "rollback" || !te.Passed {
			continue
		}
		found = true
		if te.Onset == nil {
			t.Fatalf("error_rate fired without an onset: %+v", te)
		}
		d := te.Onset.Sub(start) / (10 * time.Second)
		if d < onset-30 || d > onset+60 {
			t.Errorf("onset at window %d; want near %d", d, onset)
		}
		if !(float64(te.Lower) > 1) || float64(te.Canary) < 0.02 {
			t.Errorf("since the onset: canary %.3f, bounds ×%.2f–×%.2f; want ≈3%% and bounds above ×1", float64(te.Canary), float64(te.Lower), float64(te.Upper))
		}
	}
	if !found {
		t.Fatalf("no fired error_rate test in %+v", v.Tests)
	}
	if !strings.Contains(v.Reason, "since the rise began at") || strings.Contains(v.Reason, "which includes ×1") {
		t.Errorf("reason %q; want the onset named and no interval that includes ×1", v.Reason)
	}
}

// TestSegmentSummaries: the status compares the two versions per request
// segment, the busiest first, with each segment's own counts, and keeps
// them across a checkpoint.
func TestSegmentSummaries(t *testing.T) {
	j := NewJudge(testSpec())
	rng := rand.New(rand.NewPCG(8, 1))
	start := time.Unix(1_700_000_000, 0)
	var wantB, wantC [2]uint64 // search, fetch requests
	for i := range 20 {
		c := simWindow(rng, start.Add(time.Duration(i)*10*time.Second), 10*time.Second,
			arm{version: "v1", perWindow: 900, errRate: 0.01, latMedian: 100, latSigma: 0.5, fetch: 0.2},
			arm{version: "v2", perWindow: 100, errRate: 0.01, latMedian: 100, latSigma: 0.5, fetch: 0.2})
		for _, s := range c.Series {
			i := 0
			if s.Segment.Name == "fetch" {
				i = 1
			}
			if s.Version == "v1" {
				wantB[i] += s.Agg.Count
			} else {
				wantC[i] += s.Agg.Count
			}
		}
		j.Observe(c)
		j.Decide(c.Watermark)
	}
	check := func(j *Judge, when string) {
		segs := j.Status().Segments
		if len(segs) != 2 || segs[0].Segment != "tool search" || segs[1].Segment != "tool fetch" {
			t.Fatalf("%s: segments %+v; want tool search, then tool fetch", when, segs)
		}
		for i, s := range segs {
			if s.Baseline.Requests != wantB[i] || s.Canary.Requests != wantC[i] || s.Baseline.Version != "v1" || s.Canary.Version != "v2" {
				t.Errorf("%s: %s: baseline %d canary %d requests; want %d, %d", when, s.Segment, s.Baseline.Requests, s.Canary.Requests, wantB[i], wantC[i])
			}
			if !(float64(s.Canary.P95MS) > 0) {
				t.Errorf("%s: %s: canary p95 %v", when, s.Segment, s.Canary.P95MS)
			}
		}
	}
	check(j, "live")
	b, err := j.MarshalState()
	if err != nil {
		t.Fatal(err)
	}
	n := NewJudge(testSpec())
	if err := n.UnmarshalState(b); err != nil {
		t.Fatal(err)
	}
	check(n, "restored")
}
