package judgebench

import (
	"math"
	"math/rand/v2"
)

// The simulator draws a few hundred thousand lognormal values per run; an
// inverse-CDF table with linear interpolation replaces NormFloat64+Exp in
// the body of the distribution, and the exact quantile function serves the
// two outer cells, so tails are exact.

const lnCells = 4096

// lognormal draws exp(sigma·Z) for a standard normal Z.
type lognormal struct {
	sigma float64
	tab   [lnCells + 1]float64 // exp(sigma·Φ⁻¹(i/lnCells)), ends unused
}

func newLognormal(sigma float64) *lognormal {
	l := &lognormal{sigma: sigma}
	for i := 1; i < lnCells; i++ {
		l.tab[i] = math.Exp(sigma * normalQuantile(float64(i)/lnCells))
	}
	return l
}

func (l *lognormal) draw(rng *rand.Rand) float64 {
	u := rng.Float64() * lnCells
	i := int(u)
	if i == 0 || i >= lnCells-1 {
		p := u / lnCells
		if p <= 0 {
			p = 0.5 / (1 << 53)
		}
		return math.Exp(l.sigma * normalQuantile(p))
	}
	f := u - float64(i)
	return l.tab[i] + f*(l.tab[i+1]-l.tab[i])
}

// geomTable draws a geometric count (failures before a success) with a given
// mean by inverse CDF over its first values; the rare rest falls back to
// the closed form.
type geomTable struct {
	mean float64
	cdf  []float64
}

func newGeomTable(mean float64) *geomTable {
	g := &geomTable{mean: mean}
	if mean <= 0 {
		return g
	}
	p := 1 / (1 + mean)
	c, q := 0.0, p
	for k := 0; k < 64; k++ {
		c += q
		g.cdf = append(g.cdf, c)
		q *= 1 - p
	}
	return g
}

func (g *geomTable) draw(rng *rand.Rand) int {
	if g.mean <= 0 {
		return 0
	}
	u := rng.Float64()
	for k, c := range g.cdf {
		if u < c {
			return k
		}
	}
	return geometric(rng, g.mean)
}
