package judgebench

import (
	"math"

	"github.com/inferensys/canaryd/detector"
	"github.com/inferensys/canaryd/schemas"
	"github.com/inferensys/canaryd/window"
)

// oracleJudge is the yardstick of the error-rate scenarios, not a judge
// anyone can run: Wald's sequential probability ratio test of the canary's
// errors given each stratum's total (the Fisher noncentral hypergeometric
// law canaryd's conditional test uses, strata = window × request segment) at
// the true odds ratio, counted from the window that holds the true onset,
// with all of alpha. It knows what no real judge knows — when the
// regression began and how large it is — and guards nothing else, so its
// delay is a lower bound for any test of the same windows at that alpha:
// canaryd's delay above it is the price of not knowing the onset (a mixture
// over start points), not knowing the size (a mixture over odds ratios),
// and sharing alpha with the other tests. The issue's reference "exact
// conditional sequential test" (≈950 canary requests for errors ×2 at 5%)
// is of this kind.
type oracleJudge struct {
	onset    int     // second the regression starts
	logTheta float64 // log of the true odds ratio
	bound    float64 // log(1/alpha)
	llr      float64
	out      outcome
}

// newOracleJudge returns the oracle of a step error regression with error
// probabilities multiplied by mult at a baseline error probability p.
func newOracleJudge(onset int, mult, p, alpha float64) *oracleJudge {
	odds := mult * (1 - p) / (1 - mult*p)
	return &oracleJudge{onset: onset, logTheta: math.Log(odds), bound: math.Log(1 / alpha), out: newOutcome()}
}

// look folds the window [start, start+width) in at event time now.
func (o *oracleJudge) look(start, width int, cl window.Closed, now int) {
	if o.out.decided() || start+width <= o.onset {
		return
	}
	for _, s := range cl.Series {
		if s.Version != canaryName || !detector.IsRequest(s.Segment.Kind) {
			continue
		}
		for _, b := range cl.Series {
			if b.Version == baseName && b.Segment == s.Segment {
				o.llr += hyperLogLR(b.Agg.Count, b.Agg.Errors, s.Agg.Count, s.Agg.Errors, o.logTheta)
			}
		}
	}
	if o.llr >= o.bound {
		o.out.action, o.out.at, o.out.by = schemas.ActionRollback, now, "error_rate"
	}
}

// hyperLogLR is log P_θ(x_c | K)/P_1(x_c | K) for one 2×2 table under the
// Fisher noncentral hypergeometric law (K = x_b + x_c events among n_b
// baseline and n_c canary units).
func hyperLogLR(nb, xb, nc, xc uint64, logTheta float64) float64 {
	k := xb + xc
	if nb == 0 || nc == 0 || k == 0 || k == nb+nc {
		return 0
	}
	lo := uint64(0)
	if k > nb {
		lo = k - nb
	}
	hi := min(k, nc)
	// log Σ_y C(nc,y) C(nb,k−y) θ^y − log Σ_y C(nc,y) C(nb,k−y), each by a
	// log-sum-exp over the support, shifted by its largest term.
	l := func(y uint64) float64 { return lchoose(nc, y) + lchoose(nb, k-y) }
	m0, m1 := math.Inf(-1), math.Inf(-1)
	for y := lo; y <= hi; y++ {
		m0 = max(m0, l(y))
		m1 = max(m1, l(y)+float64(y)*logTheta)
	}
	s0, s1 := 0.0, 0.0
	for y := lo; y <= hi; y++ {
		s0 += math.Exp(l(y) - m0)
		s1 += math.Exp(l(y) + float64(y)*logTheta - m1)
	}
	return float64(xc)*logTheta - (m1 + math.Log(s1)) + (m0 + math.Log(s0))
}

func lchoose(n, k uint64) float64 {
	a, _ := math.Lgamma(float64(n) + 1)
	b, _ := math.Lgamma(float64(k) + 1)
	c, _ := math.Lgamma(float64(n-k) + 1)
	return a - b - c
}
