package detector

import (
	"math"
	"testing"
	"time"

	"github.com/inferensys/canaryd/schemas"
)

// aaEps bounds the chance that one A/A assertion in this package fails by
// luck. Each compares a count of false alarms over independent runs with
// binomMax(runs, alpha, aaEps): a valid test raises a false alarm in at most
// alpha of the runs, so more than that bound happens by luck with chance
// ≤ aaEps, whatever the seeds. Five such assertions (TestJudgeAA,
// TestAAFalseRollbackRate, TestERiseAAValid ×2, TestMeanTestAA): ≤ 5e-5.
const aaEps = 1e-5

// binomPMF returns P(X = k) for X ~ Binomial(n, p), 0 < p < 1.
func binomPMF(n, k int, p float64) float64 {
	ln, _ := math.Lgamma(float64(n + 1))
	lk, _ := math.Lgamma(float64(k + 1))
	lnk, _ := math.Lgamma(float64(n - k + 1))
	return math.Exp(ln - lk - lnk + float64(k)*math.Log(p) + float64(n-k)*math.Log1p(-p))
}

// binomMax returns the smallest k with P(X > k) ≤ eps for X ~ Binomial(n,
// p), 0 < p < 1: a count of events of per-run probability ≤ p exceeds it by
// luck with chance ≤ eps.
func binomMax(n int, p, eps float64) int {
	le := 0.0
	for k := 0; k < n; k++ {
		le += binomPMF(n, k, p)
		if 1-le <= eps {
			return k
		}
	}
	return n
}

func TestBinomMax(t *testing.T) {
	// Exact tails from Python's math.comb: P(Bin(300, 0.05) > 33) = 9.2e-6,
	// P(Bin(300, 0.05) > 32) = 2.3e-5; P(Bin(60, 0.05) > 13) = 1.2e-6,
	// P(Bin(60, 0.05) > 12) = 6.8e-6, P(Bin(60, 0.05) > 11) = 3.6e-5.
	for _, c := range []struct {
		n    int
		p    float64
		eps  float64
		want int
	}{{300, 0.05, 1e-5, 33}, {60, 0.05, 5e-6, 13}, {60, 0.05, 1e-5, 12}} {
		if got := binomMax(c.n, c.p, c.eps); got != c.want {
			t.Errorf("binomMax(%d, %v, %v) = %d; want %d", c.n, c.p, c.eps, got, c.want)
		}
	}
}

// TestJudgeAA runs identical baseline and canary streams through the whole
// Judge (every test of the suite, alpha split between them, read after
// every window) and counts the runs it rolls back: at most alpha of them
// may be, so more than binomMax(runs, alpha, aaEps) fails the test, with
// chance ≤ aaEps of doing so by luck. The step's minimum duration is longer
// than a run, so no promotion ends a run early: each run is read after all
// of its windows.
func TestJudgeAA(t *testing.T) {
	s := Spec{
		Rollout: "r", Baseline: "v1", Canary: "v2",
		Steps: []Step{{Weight: 20, MinDuration: Duration(time.Hour)}, {Weight: 100}},
	}
	if err := s.validate(nilNode()); err != nil {
		t.Fatal(err)
	}
	runs, windows := 300, 60
	if testing.Short() {
		runs = 60
	}
	// Errors, latency, tokens per LLM call and the tool mix: the error
	// rate, latency quantile, mean and categorical tests all see data.
	same := arm{perWindow: 600, errRate: 0.02, latMedian: 300, latSigma: 0.6, tokens: 800, fetch: 0.3}
	base, canary := same, same
	base.version, canary.version = "v1", "v2"
	canary.perWindow = 0 // run sets the split from the judge's weight
	rollbacks, holds := 0, 0
	by := map[string]int{}
	for i := range runs {
		v, _ := run(t, s, uint64(1000+i), windows, base, canary)
		switch v.Action {
		case schemas.ActionRollback:
			rollbacks++
			by[v.Reason]++
		case schemas.ActionPromote:
			t.Fatalf("run %d promoted within %d windows of a 1 h step: %s", i, windows, v.Reason)
		case schemas.ActionHold:
			holds++
		}
	}
	limit := binomMax(runs, s.Alpha, aaEps)
	t.Logf("%d runs × %d windows: %d false rollbacks (limit %d at alpha %v), %d holds", runs, windows, rollbacks, limit, s.Alpha, holds)
	if rollbacks > limit {
		for r, n := range by {
			t.Logf("%d× %s", n, r)
		}
		t.Errorf("A/A: %d/%d runs rolled back; want ≤ %d (alpha %v; chance ≤ %g by luck)", rollbacks, runs, limit, s.Alpha, aaEps)
	}
}

// TestJudgeAACanFail shows that TestJudgeAA's bound catches a judge that
// breaks alpha: with a canary 15% slower (not identical), the same runs
// exceed the bound.
func TestJudgeAACanFail(t *testing.T) {
	s := Spec{
		Rollout: "r", Baseline: "v1", Canary: "v2",
		Steps: []Step{{Weight: 20, MinDuration: Duration(time.Hour)}, {Weight: 100}},
	}
	if err := s.validate(nilNode()); err != nil {
		t.Fatal(err)
	}
	runs, windows := 60, 60
	base := arm{version: "v1", perWindow: 600, errRate: 0.02, latMedian: 300, latSigma: 0.6, tokens: 800, fetch: 0.3}
	canary := base
	canary.version, canary.perWindow, canary.latMedian = "v2", 0, 345
	rollbacks := 0
	for i := range runs {
		if v, _ := run(t, s, uint64(1000+i), windows, base, canary); v.Action == schemas.ActionRollback {
			rollbacks++
		}
	}
	// Power: every one of these runs rolls back (60/60 with these seeds);
	// at a per-run power ≥ 0.8, fewer than limit+1 = 14 rollbacks in 60 runs
	// happen with chance < 1e-15.
	if limit := binomMax(runs, s.Alpha, aaEps); rollbacks <= limit {
		t.Errorf("canary 15%% slower: %d/%d runs rolled back; want > %d (the A/A bound must catch this)", rollbacks, runs, limit)
	} else {
		t.Logf("canary 15%% slower: %d/%d runs rolled back", rollbacks, runs)
	}
}
