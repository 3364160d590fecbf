package judgebench

import (
	"math"
	"slices"
)

// mannWhitney is Kayenta's Mann-Whitney comparison of an experiment sample x
// (the canary's per-interval values) with a control sample y (the
// baseline's): the two-sided normal-approximation Wilcoxon rank-sum
// confidence interval for the location shift x−y, with continuity and tie
// corrections, and the shift estimate, each found as the root of the
// standardised statistic the way Kayenta's MannWhitney.calculateConfidenceInterval
// does (a bound whose root lies outside [min x − max y, max x − min y] is
// clamped to that range, which is what makes tiny samples dangerous: with
// 2–4 points per arm the interval is the whole range of differences).
//
// The roots are found by bisection on the step function, to a relative
// precision far below anything the classification depends on.
type mannWhitney struct {
	xs, ys []float64 // sorted copies
}

// interval returns the (1−alpha) interval [lo, hi] for the shift and its
// estimate; ok is false when the statistic is degenerate (every value tied,
// or fewer than three values), which Kayenta reports as an error and this
// judge as a pass.
func (w *mannWhitney) interval(x, y []float64, alpha float64) (lo, hi, est float64, ok bool) {
	if len(x) == 0 || len(y) == 0 || len(x)+len(y) < 3 {
		return 0, 0, 0, false
	}
	w.xs = append(w.xs[:0], x...)
	w.ys = append(w.ys[:0], y...)
	slices.Sort(w.xs)
	slices.Sort(w.ys)
	muMin := w.xs[0] - w.ys[len(w.ys)-1]
	muMax := w.xs[len(w.xs)-1] - w.ys[0]
	zq := normalQuantile(alpha / 2) // negative
	var okAll = true
	root := func(q float64) float64 {
		fLo, ok1 := w.diff(muMin, q)
		fHi, ok2 := w.diff(muMax, q)
		if !ok1 || !ok2 {
			okAll = false
			return math.NaN()
		}
		if fLo <= 0 {
			return muMin
		}
		if fHi >= 0 {
			return muMax
		}
		// The step function may sit exactly at q on a plateau (the
		// estimate of a small sample often does): return the plateau's
		// middle, as Brent's method on Kayenta's bracket does.
		return (w.edge(muMin, muMax, q, true, &okAll) + w.edge(muMin, muMax, q, false, &okAll)) / 2
	}
	lo, hi, est = root(-zq), root(zq), root(0)
	return lo, hi, est, okAll
}

// edge bisects [a, b] for the right end of {mu: diff > 0} (strict) or of
// {mu: diff ≥ 0} (!strict).
func (w *mannWhitney) edge(a, b, q float64, strict bool, ok *bool) float64 {
	for range 80 {
		m := a + (b-a)/2
		if m <= a || m >= b || b-a <= 1e-9*(math.Abs(a)+math.Abs(b)) {
			break
		}
		f, fine := w.diff(m, q)
		if !fine {
			*ok = false
			return math.NaN()
		}
		if f > 0 || (!strict && f == 0) {
			a = m
		} else {
			b = m
		}
	}
	return a + (b-a)/2
}

// diff is Kayenta's wilcoxonDiff: the standardised rank-sum statistic of
// x−mu against y (continuity- and tie-corrected) minus q. It decreases in mu.
func (w *mannWhitney) diff(mu, q float64) (float64, bool) {
	n, m := float64(len(w.xs)), float64(len(w.ys))
	// Merge x−mu and y in order, counting for each x how many y are below
	// it (ties count half) and the tie groups of the merged sample.
	var u, ties float64
	i, j := 0, 0
	for i < len(w.xs) || j < len(w.ys) {
		var v float64
		switch {
		case j == len(w.ys) || (i < len(w.xs) && w.xs[i]-mu < w.ys[j]):
			v = w.xs[i] - mu
		default:
			v = w.ys[j]
		}
		// The group of values equal to v.
		nx, ny := 0, 0
		for i < len(w.xs) && w.xs[i]-mu == v {
			nx++
			i++
		}
		for j < len(w.ys) && w.ys[j] == v {
			ny++
			j++
		}
		// Every x in the group is above the y seen before the group and
		// ties with the group's y.
		u += float64(nx) * (float64(j-ny) + float64(ny)/2)
		if t := float64(nx + ny); t > 1 {
			ties += t*t*t - t
		}
	}
	dz := u - n*m/2
	corr := 0.0
	if dz > 0 {
		corr = 0.5
	} else if dz < 0 {
		corr = -0.5
	}
	sigma := math.Sqrt(n * m / 12 * ((n + m + 1) - ties/((n+m)*(n+m-1))))
	if !(sigma > 0) {
		return 0, false
	}
	return (dz-corr)/sigma - q, true
}

// normalQuantile returns the standard normal quantile at p (0 < p < 1),
// Acklam's rational approximation refined by one Halley step.
func normalQuantile(p float64) float64 {
	if p <= 0 {
		return math.Inf(-1)
	}
	if p >= 1 {
		return math.Inf(1)
	}
	a := [...]float64{-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02, 1.383577518672690e+02, -3.066479806614716e+01, 2.506628277459239e+00}
	b := [...]float64{-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02, 6.680131188771972e+01, -1.328068155288572e+01}
	c := [...]float64{-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00, -2.549732539343734e+00, 4.374664141464968e+00, 2.938163982698783e+00}
	d := [...]float64{7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00, 3.754408661907416e+00}
	var x float64
	switch {
	case p < 0.02425:
		q := math.Sqrt(-2 * math.Log(p))
		x = (((((c[0]*q+c[1])*q+c[2])*q+c[3])*q+c[4])*q + c[5]) / ((((d[0]*q+d[1])*q+d[2])*q+d[3])*q + 1)
	case p > 1-0.02425:
		q := math.Sqrt(-2 * math.Log(1-p))
		x = -(((((c[0]*q+c[1])*q+c[2])*q+c[3])*q+c[4])*q + c[5]) / ((((d[0]*q+d[1])*q+d[2])*q+d[3])*q + 1)
	default:
		q := p - 0.5
		r := q * q
		x = (((((a[0]*r+a[1])*r+a[2])*r+a[3])*r+a[4])*r + a[5]) * q / (((((b[0]*r+b[1])*r+b[2])*r+b[3])*r+b[4])*r + 1)
	}
	e := 0.5*math.Erfc(-x/math.Sqrt2) - p
	u := e * math.Sqrt(2*math.Pi) * math.Exp(x*x/2)
	return x - u/(1+x*u/2)
}
