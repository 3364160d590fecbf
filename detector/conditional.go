package detector

import (
	"fmt"
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

// gridStep is the spacing of the θ grid in log units (≈10% per step), gridHalf
// the number of points on each side of θ = 1: the grid spans θ ∈ [e^-3, e^3].
// Neighbouring likelihoods differ little at this spacing, and every stratum
// costs one logarithm per grid point.
const (
	gridStep = 0.1
	gridHalf = 30
	gridLen  = 2*gridHalf + 1
)

// gridLT and gridTh are log θ and θ at each grid index.
var gridLT, gridTh = func() (lt, th [gridLen]float64) {
	for i := range lt {
		lt[i] = float64(i-gridHalf) * gridStep
		th[i] = math.Exp(lt[i])
	}
	return lt, th
}()

// gridTheta returns the odds ratio at grid index i.
func gridTheta(i int) float64 { return gridTh[i] }

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
// every point (≈10% apart). Bounds relies on it being 1.
const altStride = 1

// The rollback e-value (ERise) is a mixture over when a regression starts
// as well as over how large it is. A test that accumulates from the start
// of the rollout pays for every clean request before a regression: a
// release that breaks after twenty minutes must first climb out of the
// deficit those minutes left at every alternative θ > 1 (about 10 nats for
// errors ×2 five minutes in, hundreds for a latency shift, whose tests see
// many more events). ERise mixes test martingales that start at successive
// points: component n starts at the first stratum after the Fisher
// information at θ = 1 (Σ of the strata's hypergeometric variances, a
// function of the totals only — never of the outcomes) has grown by
// riseInfo since component n−1 started, and before it starts it is worth 1.
// Each component is a mixture of likelihood ratios L(θ)/L(1) over riseN
// alternatives θ ∈ [1.22, 6.05] (log-uniform, every other grid point, ≈22%
// apart): the regressions worth a rollback, from subtle to gross. (Weights
// tilted towards the subtle ones made errors ×1.5 and ×2 and latency +10%
// about 5% faster in the benchmark, but raised the A/A false rollbacks under
// a shared error incident from 2.9% to 3.5–3.8% in 1000 runs, against the
// default stream's mild session frailty: not worth it.)
// Component 0 (the release is bad from the start: most regressions) has
// prior weight 1/2, component n ≥ 1 weight 1/(2·ζ(1.5)·n^1.5); the weights
// sum to 1, so the mixture — components not yet started counted at their
// weight, components dropped counted at 0 — is a nonnegative
// supermartingale under θ ≤ 1 in every stratum, and Ville's inequality
// applies as for EUpper.
//
// riseInfo is the spacing of the starts in Fisher information: a start
// falls at most riseInfo·δ²/2 nats short of the onset (δ the log odds
// ratio: ≈2 nats at δ = ln 2), while the starts' prior weights fall like
// n^-1.5. Spacing by information rather than time makes the cost of a
// late onset the same for a test that sees 20 events a window (errors) and
// one that sees 1,000 (a median latency). 8 was a few percent faster than 16
// on the benchmark's late regressions (more starts, each nearer the onset,
// outweigh their smaller weights there), with the same A/A rates.
const (
	riseInfo   = 8.0
	riseLo     = gridHalf + 2 // θ = e^0.2 ≈ 1.22
	riseStride = 2            // ≈22% apart
	riseN      = 9            // up to gridHalf+18: θ = e^1.8 ≈ 6.05
	maxRise    = 40           // components kept; the least valuable is dropped beyond
	zeta15     = 2.612375348685488
)

// riseComp is one component of ERise: the likelihood ratios L(θ_j)/L(1)
// since its start, as m[j]·e^scale.
type riseComp struct {
	logW  float64 // log of the prior weight
	scale float64
	m     [riseN]float64
	// start is the At of the component's first stratum (0: unknown, a
	// state from before onsets were kept); base the totals NB, XB, NC, XC
	// before it, so that the data since the start can be described.
	start int64
	base  [4]uint64
}

// logValue returns log(w · mean_j LR_j) of the component.
func (r *riseComp) logValue() float64 {
	s := 0.0
	for _, v := range r.m {
		s += v
	}
	return r.logW + r.scale + math.Log(s/riseN)
}

// riseWeight is the prior weight of component n.
func riseWeight(n int) float64 {
	if n == 0 {
		return 0.5
	}
	return 0.5 / (zeta15 * math.Pow(float64(n), 1.5))
}

// Conditional accumulates the log-likelihood of θ on the grid over strata.
// The zero value is an empty accumulator.
type Conditional struct {
	logL   [gridLen]float64
	strata int
	// Totals over strata, for evidence.
	NB, XB, NC, XC uint64
	// Discount tempers the evidence of every stratum: its likelihood
	// ratios are raised to the power 1−Discount. For independent units the
	// test is exact either way (E[LR^a] ≤ E[LR]^a = 1 for a ≤ 1, Jensen);
	// units that come in correlated clusters (requests of one session)
	// make counts overdispersed, and a discount of 1−1/φ keeps the test
	// valid under an overdispersion φ, at the cost of a delay ×φ. Set
	// before the first stratum; zero is no discount.
	Discount float64

	// at is the time of the stratum being observed (ObserveAt), recorded
	// as the start of a change-point component that starts with it.
	at int64

	// Change-point components of ERise (see riseInfo), unless noRise:
	// tests that never read ERise (promotion, categories) skip them.
	noRise    bool
	info      float64    // Fisher information at θ = 1 so far
	nextStart float64    // info at which the next component starts
	started   int        // components started so far
	wStarted  float64    // sum of their prior weights
	rise      []riseComp // those not dropped
}

// ObserveAt is Observe of a stratum of time at (a window's start, Unix
// ns): a change-point component that starts with it records at as its
// onset (Onset).
func (c *Conditional) ObserveAt(at int64, nb, xb, nc, xc uint64) {
	c.at = at
	c.Observe(nb, xb, nc, xc)
}

// Observe adds one stratum. Strata where the outcome cannot be compared (no
// units in one arm, or no events at all) carry no information and are skipped.
func (c *Conditional) Observe(nb, xb, nc, xc uint64) {
	base := [4]uint64{c.NB, c.XB, c.NC, c.XC}
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
	var lz [gridLen]float64
	logZGrid(nb, nc, k, &lz)
	fx := float64(xc)
	if a := 1 - c.Discount; a < 1 {
		// Tempered: every stratum's likelihood ratio to the power a.
		fx *= a
		for i := range lz {
			lz[i] *= a
		}
	}
	for i := range lz {
		c.logL[i] += fx*gridLT[i] - lz[i]
	}
	if !c.noRise {
		c.observeRise(fx, &lz, base)
	}
	n := float64(nb + nc)
	fk := float64(k)
	c.info += fk * (float64(nc) / n) * (float64(nb) / n) * (n - fk) / (n - 1)
}

// observeRise starts a component when its turn has come, then multiplies
// every component by the stratum's likelihood ratios.
func (c *Conditional) observeRise(fx float64, lz *[gridLen]float64, base [4]uint64) {
	if c.info >= c.nextStart {
		w := riseWeight(c.started)
		c.started++
		c.wStarted += w
		c.nextStart = c.info + riseInfo
		if len(c.rise) >= maxRise {
			// Dropping a component (counting it at 0 from now on) keeps
			// the mixture a supermartingale; drop the least valuable.
			low := 0
			for i := range c.rise {
				if c.rise[i].logValue() < c.rise[low].logValue() {
					low = i
				}
			}
			c.rise = append(c.rise[:low], c.rise[low+1:]...)
		}
		r := riseComp{logW: math.Log(w), start: c.at, base: base}
		for j := range r.m {
			r.m[j] = 1
		}
		c.rise = append(c.rise, r)
	}
	// log LR_j of this stratum, shifted by its maximum so that the factors
	// are ≤ 1 and never overflow.
	var g [riseN]float64
	top := math.Inf(-1)
	for j := range g {
		i := riseLo + j*riseStride
		g[j] = fx*gridLT[i] - lz[i] + lz[gridHalf]
		top = max(top, g[j])
	}
	for j := range g {
		g[j] = math.Exp(g[j] - top)
	}
	for i := 0; i < len(c.rise); i++ {
		r := &c.rise[i]
		r.scale += top
		big := 0.0
		for j := range r.m {
			r.m[j] *= g[j]
			big = max(big, r.m[j])
		}
		switch {
		case big == 0:
			// Every alternative underflowed: the component is worth 0.
			c.rise = append(c.rise[:i], c.rise[i+1:]...)
			i--
		case big < 1e-200:
			for j := range r.m {
				r.m[j] /= big
			}
			r.scale += math.Log(big)
		}
	}
}

// ERise is the rollback e-value against H0: θ ≤ 1 in every stratum — the
// canary's odds of the outcome never above the baseline's — mixing over
// alternatives θ ∈ [1.22, 6.05] and over when the rise began (see
// riseInfo). Components not yet started count at their prior weight. A
// Conditional without change-point components (noRise) returns EUpper(1).
func (c *Conditional) ERise() float64 {
	if c.noRise {
		return c.EUpper(1)
	}
	cash := max(0, 1-c.wStarted)
	if len(c.rise) == 0 {
		return cash
	}
	m := math.Inf(-1)
	var lv [maxRise]float64
	for i := range c.rise {
		lv[i] = c.rise[i].logValue()
		m = max(m, lv[i])
	}
	s := 0.0
	for i := range c.rise {
		s += math.Exp(lv[i] - m)
	}
	if m > 700 {
		return math.Inf(1)
	}
	return cash + math.Exp(m)*s
}

// riseState is the change-point part of a Conditional's state, as
// snapshots (state.go) carry it.
type riseState struct {
	Off                       bool // noRise
	Info, NextStart, WStarted float64
	Started                   int
	LogW, Scale               []float64 // per component
	M                         []float64 // riseN per component
	Starts                    []int64   // per component; absent in states from before onsets were kept
	Bases                     []uint64  // 4 per component (NB, XB, NC, XC before its start); likewise
}

func (c *Conditional) riseState() riseState {
	s := riseState{Off: c.noRise, Info: c.info, NextStart: c.nextStart, WStarted: c.wStarted, Started: c.started}
	for _, r := range c.rise {
		s.LogW = append(s.LogW, r.logW)
		s.Scale = append(s.Scale, r.scale)
		s.M = append(s.M, r.m[:]...)
		s.Starts = append(s.Starts, r.start)
		s.Bases = append(s.Bases, r.base[:]...)
	}
	return s
}

func (c *Conditional) setRiseState(s riseState) error {
	n := len(s.LogW)
	if len(s.Scale) != n || len(s.M) != n*riseN || n > maxRise {
		return fmt.Errorf("%w: %d change-point components with %d scales and %d ratios", ErrStateMismatch, n, len(s.Scale), len(s.M))
	}
	c.noRise, c.info, c.nextStart, c.wStarted, c.started = s.Off, s.Info, s.NextStart, s.WStarted, s.Started
	c.rise = make([]riseComp, n)
	onsets := len(s.Starts) == n && len(s.Bases) == 4*n // else unknown (0)
	for i := range c.rise {
		c.rise[i].logW, c.rise[i].scale = s.LogW[i], s.Scale[i]
		copy(c.rise[i].m[:], s.M[i*riseN:])
		if onsets {
			c.rise[i].start = s.Starts[i]
			copy(c.rise[i].base[:], s.Bases[4*i:])
		}
	}
	return nil
}

// Onset describes the change-point component that weighs most in ERise:
// where the evidence of a rise begins, and the data since then.
type Onset struct {
	At int64 // the At of the component's first stratum (Unix ns)
	// Units and events of each arm since At.
	NB, XB, NC, XC uint64
	// Odds is the odds ratio among the component's alternatives {1} ∪
	// [1.22, 6.05] (≈22% apart) that fits the data since At best; Lower and
	// Upper bound it at alpha on that grid (0 when even θ ≤ 1 is not
	// rejected, +Inf when no alternative above is rejected). The onset is
	// chosen by the data (the component with the most evidence), so these
	// bounds describe that stretch; they are not a confidence interval for a
	// fixed stretch with the nominal coverage, unlike Bounds.
	Odds, Lower, Upper float64
}

// Onset returns the Onset of the component with the largest weighted
// value, and false when there is none (no component started, or one
// restored from a state that did not keep its start).
func (c *Conditional) Onset(alpha float64) (Onset, bool) {
	best := -1
	for i := range c.rise {
		if best < 0 || c.rise[i].logValue() > c.rise[best].logValue() {
			best = i
		}
	}
	if best < 0 || c.rise[best].start == 0 {
		return Onset{}, false
	}
	r := &c.rise[best]
	o := Onset{At: r.start, NB: c.NB - r.base[0], XB: c.XB - r.base[1], NC: c.NC - r.base[2], XC: c.XC - r.base[3]}
	// Likelihoods relative to θ = 1 on {1, θ_0..θ_{riseN-1}}: r.m is
	// L(θ_j)/L(1) up to the common factor e^scale.
	var l [riseN + 1]float64
	theta := func(i int) float64 {
		if i == 0 {
			return 1
		}
		return gridTheta(riseLo + (i-1)*riseStride)
	}
	l[0] = math.Exp(-r.scale) // L(1)/L(1) in r.m's units
	copy(l[1:], r.m[:])
	if math.IsInf(l[0], 1) || l[0] == 0 {
		// L(1) is astronomically far from the alternatives': keep the
		// ratio in logs by capping it (the comparisons below only need
		// which side of 1/alpha each mean falls).
		l[0] = math.Min(math.Max(l[0], 1e-300), 1e300)
	}
	top := 0
	for i := range l {
		if l[i] > l[top] {
			top = i
		}
	}
	o.Odds = theta(top)
	thr := 1 / alpha
	o.Lower, o.Upper = 0, math.Inf(1)
	for i := range l { // H0: θ ≤ θ_i rejected by the alternatives above it
		n, s := 0, 0.0
		for j := i + 1; j < len(l); j++ {
			n++
			s += l[j]
		}
		if n > 0 && s >= thr*float64(n)*l[i] {
			o.Lower = theta(i)
		}
	}
	for i := len(l) - 1; i >= 0; i-- { // H0: θ ≥ θ_i rejected by those below it
		n, s := 0, 0.0
		for j := 0; j < i; j++ {
			n++
			s += l[j]
		}
		if n > 0 && s >= thr*float64(n)*l[i] {
			o.Upper = theta(i)
		}
	}
	return o, true
}

// logZGrid sets lz[i] to log Σ_y C(nc, y) C(nb, k−y) θ_i^y over the support
// for every grid θ_i, up to one additive constant per stratum (it cancels in
// every likelihood ratio). Terms are unimodal in y with ratio
// t(y+1)/t(y) = θ·r0(y), r0 decreasing; the mode rises with θ, so it is
// walked up the grid, and the sum runs outwards from the mode until the
// terms no longer matter (below 1e-17 of the sum): O(√k) multiplications
// and one logarithm per θ, a few log-gamma calls per stratum.
func logZGrid(nb, nc, k uint64, lz *[gridLen]float64) {
	lo := uint64(0)
	if k > nb {
		lo = k - nb
	}
	hi := min(k, nc)
	fb, fc, fk := float64(nb), float64(nc), float64(k)
	ratio := func(y uint64) float64 {
		fy := float64(y)
		return (fc - fy) * (fk - fy) / ((fy + 1) * (fb - fk + fy + 1))
	}
	// Most strata have a small support (the canary's units in a window):
	// their ratios are computed once, not once per θ.
	var tab [256]float64
	small := hi-lo <= uint64(len(tab))
	if small {
		for y := lo; y < hi; y++ {
			tab[y-lo] = ratio(y)
		}
	}
	r0 := func(y uint64) float64 {
		if small {
			return tab[y-lo]
		}
		return ratio(y)
	}
	// logT(y) = log t(y) at θ = 1, up to the constant log(nb! nc!).
	logT := func(y uint64) float64 {
		a, _ := math.Lgamma(float64(y) + 1)
		b, _ := math.Lgamma(fc - float64(y) + 1)
		d, _ := math.Lgamma(fk - float64(y) + 1)
		e, _ := math.Lgamma(fb - fk + float64(y) + 1)
		return -a - b - d - e
	}
	// firstBelow returns the smallest y in [a, hi] with θ·r0(y) < 1, or hi.
	firstBelow := func(a uint64, th float64) uint64 {
		b := hi
		for a < b {
			m := a + (b-a)/2
			if th*r0(m) < 1 {
				b = m
			} else {
				a = m + 1
			}
		}
		return a
	}
	mode := firstBelow(lo, gridTh[0])
	lt := logT(mode)
	for i := range lz {
		th := gridTh[i]
		if mode < hi && th*r0(mode) >= 1 {
			// The mode moved up: walk a few steps with the ratios, or
			// jump there by bisection and log-gamma.
			next := mode + 1
			for next < hi && next-mode < 8 && th*r0(next) >= 1 {
				next++
			}
			if next < hi && th*r0(next) >= 1 {
				next = firstBelow(next, th)
				lt = logT(next)
			} else {
				for y := mode; y < next; y++ {
					lt += math.Log(r0(y))
				}
			}
			mode = next
		}
		sum, t := 1.0, 1.0
		for y := mode; y < hi; y++ {
			t *= th * r0(y)
			sum += t
			if t < 1e-17*sum {
				break
			}
		}
		t = 1.0
		for y := mode; y > lo; y-- {
			t /= th * r0(y-1)
			sum += t
			if t < 1e-17*sum {
				break
			}
		}
		lz[i] = lt + float64(mode)*gridLT[i] + math.Log(sum)
	}
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
// They bound the odds ratio common to every stratum since the start (a
// rise that began later shows in ERise, not here).
func (c *Conditional) Bounds(alpha float64) (lo, hi float64) {
	thr := 1 / alpha
	// With altStride 1, the e-value against H0: θ ≤ θ_i is the mean of
	// L(θ_j)/L(θ_i) over j > i: prefix sums of L/L_max give every grid
	// point's e-values at once (one exp per point). A point whose
	// likelihood underflows against the maximum is rejected on the side
	// whose alternatives do not underflow too (its e-value is
	// astronomically large there).
	m := math.Inf(-1)
	for _, v := range c.logL {
		m = max(m, v)
	}
	// above[i] = Σ_{j ≥ i} e_j and below[i] = Σ_{j < i} e_j, each summed
	// from its own end (no cancellation).
	var e, above, below [gridLen + 1]float64
	for i, v := range c.logL {
		e[i] = math.Exp(v - m)
		below[i+1] = below[i] + e[i]
	}
	for i := gridLen - 1; i >= 0; i-- {
		above[i] = above[i+1] + e[i]
	}
	upper := func(i int) bool { // H0: θ ≤ θ_i rejected
		n := gridLen - 1 - i
		return n > 0 && above[i+1] > 0 && above[i+1] >= thr*float64(n)*e[i]
	}
	lower := func(i int) bool { // H0: θ ≥ θ_i rejected
		return i > 0 && below[i] > 0 && below[i] >= thr*float64(i)*e[i]
	}
	// Each e-value is monotone in θ_i, so each bound is found by bisection.
	lo, hi = 0, math.Inf(1)
	if i := lastTrue(upper); i >= 0 {
		lo = gridTheta(i)
	}
	if i := firstTrue(lower); i < gridLen {
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
