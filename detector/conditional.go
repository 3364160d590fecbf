package detector

import (
	"math"
)

// The conditional test compares the rate of a binary outcome (an error, or a
// latency above a threshold) between canary and baseline through their odds
// ratio θ. Data arrive in strata — one stratum per closed window and segment —
// each a 2×2 table: n_b, x_b baseline units and events, n_c, x_c canary units
// and events. Given the stratum's total K = x_b + x_c, x_c follows Fisher's
// noncentral hypergeometric law,
//
//	P_θ(x_c = y | K) = C(n_c, y) C(n_b, K−y) θ^y / Σ_z C(n_c, z) C(n_b, K−z) θ^z,
//
// whatever the two rates' common level: a traffic split of any size, one that
// changes between strata, or a drift or incident that moves both versions
// alike cancels out. The likelihood ratio L(θ1)/L(θ0) multiplied over strata is
// a test martingale under θ0 and — because the family has a monotone
// likelihood ratio in y — a supermartingale under every θ ≤ θ0 when θ1 > θ0.
// A mixture over a grid of alternatives is again one, so by Ville's inequality
// P(sup_t E_t ≥ 1/α) ≤ α: the test may be read after every window without
// inflating its error (an e-process, "anytime-valid").
//
// The same accumulator serves both directions: a rollback test (H0: θ ≤ θr,
// alternatives above) and a non-inferiority test for promotion (H0: θ ≥ θp,
// alternatives below), and their inversions give anytime confidence bounds on θ.

// gridStep is the spacing of the θ grid in log units (≈5% per step), gridHalf
// the number of points on each side of θ = 1: the grid spans θ ∈ [e^-3, e^3].
const (
	gridStep = 0.05
	gridHalf = 60
	gridLen  = 2*gridHalf + 1
)

// gridTheta returns the odds ratio at grid index i.
func gridTheta(i int) float64 { return math.Exp(float64(i-gridHalf) * gridStep) }

// gridIndex returns the grid index of θ rounded up (up) or down, clamped to
// the grid. Tests round their null boundary outwards — H0: θ ≤ θ0 up, H0:
// θ ≥ θ0 down — so that snapping to the grid only makes them conservative.
func gridIndex(theta float64, up bool) int {
	if !(theta > 0) {
		return 0
	}
	x := math.Log(theta) / gridStep
	// A margin given on the grid (θ = 1, or exp(k·step)) must not move.
	if r := math.Round(x); math.Abs(x-r) < 1e-9 {
		x = r
	} else if up {
		x = math.Ceil(x)
	} else {
		x = math.Floor(x)
	}
	return min(max(int(x)+gridHalf, 0), gridLen-1)
}

// altStride is the spacing, in grid points, of the alternatives mixed over:
// every second point (≈10% apart) keeps the prior's cost low without losing
// alternatives between them (neighbouring likelihoods differ little).
const altStride = 2

// Conditional accumulates the log-likelihood of θ on the grid over strata.
// The zero value is an empty accumulator.
type Conditional struct {
	logL   [gridLen]float64
	strata int
	// Totals over strata, for evidence.
	NB, XB, NC, XC uint64
}

// Observe adds one stratum. Strata where the outcome cannot be compared (no
// units in one arm, or no events at all) carry no information and are skipped.
func (c *Conditional) Observe(nb, xb, nc, xc uint64) {
	c.NB += nb
	c.XB += xb
	c.NC += nc
	c.XC += xc
	k := xb + xc
	if nb == 0 || nc == 0 || k == 0 || k == nb+nc {
		return
	}
	if xb > nb || xc > nc {
		panic("BUG: conditional stratum with more events than units")
	}
	c.strata++
	lo := uint64(0)
	if k > nb {
		lo = k - nb
	}
	hi := min(k, nc)
	for i := 0; i < gridLen; i++ {
		lt := float64(i-gridHalf) * gridStep
		c.logL[i] += float64(xc)*lt - logZ(nb, nc, k, lo, hi, lt)
	}
}

// logZ returns log Σ_y C(nc, y) C(nb, k−y) θ^y over y ∈ [lo, hi], θ = e^lt.
// Terms are unimodal in y: it finds the mode by bisection on the ratio of
// consecutive terms, then sums outwards with that ratio until the terms no
// longer matter (below 1e-17 of the sum) — O(√k) multiplications and three
// log-gamma calls instead of O(k) of each, which keeps a stratum with many
// events (a p50 test at high traffic) cheap.
func logZ(nb, nc, k, lo, hi uint64, lt float64) float64 {
	theta := math.Exp(lt)
	fb, fc, fk := float64(nb), float64(nc), float64(k)
	// r(y) = t(y+1)/t(y), decreasing in y.
	r := func(y uint64) float64 {
		fy := float64(y)
		return theta * (fc - fy) * (fk - fy) / ((fy + 1) * (fb - fk + fy + 1))
	}
	a, b := lo, hi
	for a < b {
		m := a + (b-a)/2
		if r(m) < 1 {
			b = m
		} else {
			a = m + 1
		}
	}
	mode := a
	sum, t := 1.0, 1.0
	for y := mode; y < hi; y++ {
		t *= r(y)
		sum += t
		if t < 1e-17*sum {
			break
		}
	}
	t = 1.0
	for y := mode; y > lo; y-- {
		t /= r(y - 1)
		sum += t
		if t < 1e-17*sum {
			break
		}
	}
	return logChoose(nc, mode) + logChoose(nb, k-mode) + float64(mode)*lt + math.Log(sum)
}

// Strata returns how many informative strata were observed.
func (c *Conditional) Strata() int { return c.strata }

// EUpper is the e-value against H0: θ ≤ theta0, mixing uniformly over the
// grid alternatives above theta0. Large values are evidence that the canary's
// odds of the outcome exceed theta0 times the baseline's.
func (c *Conditional) EUpper(theta0 float64) float64 {
	i0 := gridIndex(theta0, true)
	return c.mix(i0, true)
}

// ELower is the e-value against H0: θ ≥ theta0, mixing uniformly over the
// grid alternatives below theta0. Large values are evidence that the canary's
// odds are below theta0 times the baseline's (non-inferiority at margin theta0).
func (c *Conditional) ELower(theta0 float64) float64 {
	i0 := gridIndex(theta0, false)
	return c.mix(i0, false)
}

// mix returns Σ_j π_j L(θ_j)/L(θ_i0) over every altStride-th grid point
// above i0 (up) or below it, with uniform π over the points visited.
func (c *Conditional) mix(i0 int, up bool) float64 {
	start, step := i0+1, altStride
	if !up {
		start, step = i0-1, -altStride
	}
	n, m := 0, math.Inf(-1)
	for j := start; j >= 0 && j < gridLen; j += step {
		n++
		m = max(m, c.logL[j])
	}
	if n == 0 {
		return 1
	}
	s := 0.0
	for j := start; j >= 0 && j < gridLen; j += step {
		s += math.Exp(c.logL[j] - m)
	}
	return math.Exp(m-c.logL[i0]) * s / float64(n)
}

// Bounds returns anytime-valid one-sided (1−alpha) confidence bounds for θ
// from the grid, consistent with the tests: lo is the largest grid θ0 whose
// test H0: θ ≤ θ0 rejects at alpha (0 if none), hi the smallest θ0 whose
// H0: θ ≥ θ0 rejects (+Inf if none). Together they form a (1−2·alpha) interval.
func (c *Conditional) Bounds(alpha float64) (lo, hi float64) {
	thr := 1 / alpha
	// The e-value against H0: θ ≤ θ0 falls as θ0 rises (and the one against
	// H0: θ ≥ θ0 rises with it), so each bound is found by bisection over
	// the grid: 7 mixtures per side instead of 121.
	lo, hi = 0, math.Inf(1)
	if i := lastTrue(func(i int) bool { return c.mix(i, true) >= thr }); i >= 0 {
		lo = gridTheta(i)
	}
	if i := firstTrue(func(i int) bool { return c.mix(i, false) >= thr }); i < gridLen {
		hi = gridTheta(i)
	}
	return lo, hi
}

// firstTrue returns the smallest grid index where f holds, for f false then
// true over the grid, or gridLen.
func firstTrue(f func(int) bool) int {
	a, b := 0, gridLen
	for a < b {
		m := (a + b) / 2
		if f(m) {
			b = m
		} else {
			a = m + 1
		}
	}
	return a
}

// lastTrue returns the largest grid index where f holds, for f true then
// false over the grid, or −1.
func lastTrue(f func(int) bool) int {
	return firstTrue(func(i int) bool { return !f(i) }) - 1
}

// OddsRatio is the pooled estimate of θ (grid maximum-likelihood), or NaN
// when no informative stratum was seen.
func (c *Conditional) OddsRatio() float64 {
	if c.strata == 0 {
		return math.NaN()
	}
	best := 0
	for i := range c.logL {
		if c.logL[i] > c.logL[best] {
			best = i
		}
	}
	return gridTheta(best)
}

func logChoose(n, k uint64) float64 {
	a, _ := math.Lgamma(float64(n) + 1)
	b, _ := math.Lgamma(float64(k) + 1)
	d, _ := math.Lgamma(float64(n-k) + 1)
	return a - b - d
}

// Bernoulli is a one-sample e-process for an SLO guard rail on a rate:
// H0: p ≤ p0 against a mixture of alternatives p0·(1+10% steps) up to 1. It
// accumulates the log-likelihood ratios for each alternative.
type Bernoulli struct {
	P0   float64
	N, X uint64
}

// Observe adds n trials with x successes (events).
func (b *Bernoulli) Observe(n, x uint64) { b.N += n; b.X += x }

// E returns the mixture e-value against H0: p ≤ P0.
func (b *Bernoulli) E() float64 {
	if b.P0 <= 0 || b.P0 >= 1 || b.N == 0 {
		return 1
	}
	var ls []float64
	n, x := float64(b.N), float64(b.X)
	for p := b.P0 * 1.1; p < 1; p *= 1.1 {
		ls = append(ls, x*math.Log(p/b.P0)+(n-x)*math.Log((1-p)/(1-b.P0)))
	}
	if len(ls) == 0 {
		return 1
	}
	m := math.Inf(-1)
	for _, v := range ls {
		m = max(m, v)
	}
	s := 0.0
	for _, v := range ls {
		s += math.Exp(v - m)
	}
	return math.Exp(m) * s / float64(len(ls))
}
