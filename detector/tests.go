package detector

import (
	"math"
)

// MeanTest is an asymptotic anytime-valid test on the difference of two
// means (tokens, cost, context-window use per request), with a relative
// margin built into the null:
//
//	H0: μ_canary ≤ (1+m)·μ_baseline.
//
// Each stratum (window) contributes z_w = (x̄_c − (1+m)·x̄_b) / se_w, which is
// asymptotically N(≤0, 1) under H0 by the central limit theorem; the sum S_t
// of t such z's is tested with a half-normal mixture of Gaussian
// martingales (Robbins), e-value
//
//	E_t = 2·sqrt(ρ/(t+ρ)) · exp(S_t²/(2(t+ρ))) · Φ(S_t/sqrt(t+ρ)),
//
// a closed form. Strata where an arm has fewer than minMeanN units are
// skipped (the CLT needs a few units per arm). Drift shared by both
// versions cancels within each stratum.
type MeanTest struct {
	Margin float64
	S      float64 // Σ z_w
	T      float64 // number of strata
	// Totals for evidence, and the pooled moments the variances come from.
	NB, NC     float64
	SumB, SumC float64
	SqB, SqC   float64
	dir        float64 // +1 tests "canary higher", −1 "canary lower"
}

// minMeanN is the fewest units per arm for a stratum to count, and
// minPooledN the fewest earlier units per arm before the variance is
// trusted.
const (
	minMeanN   = 5
	minPooledN = 30
)

// meanRho is the mixture's prior precision: tuned for effects of about 0.3–1
// standard errors per window.
const meanRho = 4.0

// Observe adds a stratum from each arm's count, sum and sum of squares.
//
// Each arm's variance comes from the strata before this one (pooled), not
// from the stratum itself: fixed before the stratum's data, and stable when
// a stratum holds few units (with a handful of units, a stratum's own
// variance makes z heavy-tailed and the test anti-conservative).
func (m *MeanTest) Observe(nb, sb, qb, nc, sc, qc float64) {
	pnb, pnc := m.NB, m.NC
	vb, vc := variance(m.NB, m.SumB, m.SqB), variance(m.NC, m.SumC, m.SqC)
	m.NB += nb
	m.NC += nc
	m.SumB += sb
	m.SumC += sc
	m.SqB += qb
	m.SqC += qc
	if nb < minMeanN || nc < minMeanN || pnb < minPooledN || pnc < minPooledN {
		return
	}
	mb, mc := sb/nb, sc/nc
	k := 1 + m.Margin
	se := math.Sqrt(vc/nc + k*k*vb/nb)
	if !(se > 0) {
		return
	}
	dir := m.dir
	if dir == 0 {
		dir = 1
	}
	m.S += dir * (mc - k*mb) / se
	m.T++
}

func variance(n, s, q float64) float64 {
	if n < 2 {
		return 0
	}
	mu := s / n
	return max((q-n*mu*mu)/(n-1), 0)
}

// E returns the mixture e-value.
func (m *MeanTest) E() float64 {
	if m.T == 0 {
		return 1
	}
	a := m.T + meanRho
	return 2 * math.Sqrt(meanRho/a) * math.Exp(m.S*m.S/(2*a)) * normCDF(m.S/math.Sqrt(a))
}

// Ratio returns canary mean / baseline mean − 1 over all strata.
func (m *MeanTest) Ratio() float64 {
	if m.NB == 0 || m.NC == 0 || m.SumB == 0 {
		return math.NaN()
	}
	return (m.SumC/m.NC)/(m.SumB/m.NB) - 1
}

func normCDF(x float64) float64 { return 0.5 * math.Erfc(-x/math.Sqrt2) }

// Categorical tests whether the canary's distribution over categories (tools
// called, error types) differs from the baseline's. For each category k it
// runs the conditional test on the 2×2 table (in k / not in k) × (canary /
// baseline), two-sided (the mean of the upper and lower e-values), and
// averages the categories' e-values with fixed weights 1/MaxCategories — an
// average of e-processes is one, so no alpha is split across categories.
// Categories never seen count as 1.
type Categorical struct {
	cats  map[string]*Conditional
	order []string
	// NB and NC count every stratum's events per arm, so that a
	// category's share is over all of them, not only over the strata
	// since the category first appeared.
	NB, NC uint64
}

// MaxCategories is how many categories a Categorical tracks; more fold into
// the last one ("_other").
const MaxCategories = 16

// Observe adds one stratum: per category, the baseline's and canary's counts.
func (c *Categorical) Observe(names []string, b, k []uint64) {
	var nb, nc uint64
	for i := range names {
		nb += b[i]
		nc += k[i]
	}
	if nb == 0 || nc == 0 {
		return
	}
	c.NB += nb
	c.NC += nc
	if c.cats == nil {
		c.cats = map[string]*Conditional{}
	}
	for i, name := range names {
		t := c.cats[name]
		if t == nil {
			if len(c.cats) >= MaxCategories-1 {
				name = "_other"
				t = c.cats[name]
			}
			if t == nil {
				t = &Conditional{noRise: true} // two-sided whole-history e-values only
				c.cats[name] = t
				c.order = append(c.order, name)
			}
		}
		t.Observe(nb, b[i], nc, k[i])
	}
}

// E returns the averaged two-sided e-value and the category contributing most.
func (c *Categorical) E() (e float64, top string, topE float64) {
	sum := float64(MaxCategories - len(c.cats))
	topE = 0
	for _, name := range c.order {
		t := c.cats[name]
		v := (t.EUpper(1) + t.ELower(1)) / 2
		sum += v
		if v > topE {
			top, topE = name, v
		}
	}
	return sum / MaxCategories, top, topE
}

// Share returns a category's share among the baseline's and canary's events.
func (c *Categorical) Share(name string) (b, k float64) {
	t := c.cats[name]
	if t == nil {
		return math.NaN(), math.NaN()
	}
	if c.NB == 0 { // a state from before NB and NC were kept
		return ratio(t.XB, t.NB), ratio(t.XC, t.NC)
	}
	return ratio(t.XB, c.NB), ratio(t.XC, c.NC)
}

// SRM is the Lindon–Malek sequential test for sample ratio mismatch: are
// units (sessions, or requests without sessions) split between canary and
// baseline as configured? Under H0 each unit is canary with probability w;
// the e-value is the Dirichlet-multinomial (here beta-binomial) Bayes factor
//
//	E = B(a+x_c, b+x_b) / B(a, b) / (w^x_c (1−w)^x_b),  a = c·w, b = c·(1−w),
//
// a test martingale under H0 for any prior concentration c.
type SRM struct {
	W      float64 // configured canary share
	XB, XC float64
}

// srmConcentration centres the prior on w with the strength of this many units.
const srmConcentration = 200.0

// Observe adds units.
func (s *SRM) Observe(xb, xc float64) { s.XB += xb; s.XC += xc }

// E returns the Bayes factor against the configured split.
func (s *SRM) E() float64 {
	if !(s.W > 0 && s.W < 1) || s.XB+s.XC == 0 {
		return 1
	}
	a, b := srmConcentration*s.W, srmConcentration*(1-s.W)
	l := lbeta(a+s.XC, b+s.XB) - lbeta(a, b) - s.XC*math.Log(s.W) - s.XB*math.Log(1-s.W)
	return math.Exp(min(l, 700))
}

// Share returns the observed canary share.
func (s *SRM) Share() float64 { return ratio(uint64(s.XC), uint64(s.XB+s.XC)) }

func lbeta(a, b float64) float64 {
	x, _ := math.Lgamma(a)
	y, _ := math.Lgamma(b)
	z, _ := math.Lgamma(a + b)
	return x + y - z
}
