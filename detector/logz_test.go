package detector

import (
	"math"
	"math/rand/v2"
	"strconv"
	"testing"
)

// logZDirect is the O(k) reference: log-sum-exp over the whole support.
func logZDirect(nb, nc, k, lo, hi uint64, lt float64) float64 {
	m := math.Inf(-1)
	var ws []float64
	for y := lo; y <= hi; y++ {
		w := logChoose(nc, y) + logChoose(nb, k-y) + float64(y)*lt
		ws = append(ws, w)
		m = max(m, w)
	}
	s := 0.0
	for _, w := range ws {
		s += math.Exp(w - m)
	}
	return m + math.Log(s)
}

func logChoose(n, k uint64) float64 {
	a, _ := math.Lgamma(float64(n) + 1)
	b, _ := math.Lgamma(float64(k) + 1)
	d, _ := math.Lgamma(float64(n-k) + 1)
	return a - b - d
}

func TestLogZMatchesDirectSum(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for n := range 3000 {
		nb := uint64(1 + rng.IntN(5000))
		nc := uint64(1 + rng.IntN(500))
		if n%3 == 0 {
			// Big strata: the mode jumps far between grid points.
			nb, nc = uint64(1+rng.IntN(50000)), uint64(1+rng.IntN(20000))
		}
		k := uint64(1 + rng.IntN(int(nb+nc-1)))
		lo := uint64(0)
		if k > nb {
			lo = k - nb
		}
		hi := min(k, nc)
		var lz [gridLen]float64
		logZGrid(nb, nc, k, &lz)
		// logZGrid is exact up to one constant per stratum: compare
		// differences from θ = 1.
		ref := logZDirect(nb, nc, k, lo, hi, 0)
		for _, i := range []int{0, 7, gridHalf - 1, gridHalf + 3, gridHalf + 10, gridLen - 1} {
			got := lz[i] - lz[gridHalf]
			want := logZDirect(nb, nc, k, lo, hi, gridLT[i]) - ref
			if math.Abs(got-want) > 1e-9*max(1, math.Abs(want)) {
				t.Fatalf("logZGrid(nb=%d nc=%d k=%d θ=e^%.3f) − logZ(1) = %.12g; direct sum %.12g", nb, nc, k, gridLT[i], got, want)
			}
		}
	}
}

func BenchmarkConditionalObserve(b *testing.B) {
	for _, k := range []uint64{20, 1000, 20000} {
		b.Run("k="+strconv.FormatUint(k, 10), func(b *testing.B) {
			var c Conditional
			for range b.N {
				c.Observe(10*k, 9*k/10, 2*k, 2*k/10)
			}
		})
	}
}

// TestBoundsBisectionMatchesScan: the bisection finds the same bounds as a
// scan of the whole grid.
func TestBoundsBisectionMatchesScan(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for range 200 {
		var c Conditional
		or := math.Exp((rng.Float64()*2 - 1) * 1.5)
		for range 1 + rng.IntN(30) {
			nb, nc := uint64(500+rng.IntN(2000)), uint64(50+rng.IntN(500))
			pb := 0.02
			pc := or * pb / (1 - pb + or*pb)
			c.Observe(nb, binomial(rng, nb, pb), nc, binomial(rng, nc, pc))
		}
		lo, hi := c.Bounds(0.05)
		slo, shi := 0.0, math.Inf(1)
		for i := gridLen - 1; i >= 0; i-- {
			if c.mix(i, true) >= 20 {
				slo = gridTheta(i)
				break
			}
		}
		for i := 0; i < gridLen; i++ {
			if c.mix(i, false) >= 20 {
				shi = gridTheta(i)
				break
			}
		}
		if lo != slo || hi != shi {
			t.Fatalf("bisection bounds [%v, %v]; scan [%v, %v]", lo, hi, slo, shi)
		}
	}
}

func binomial(rng *rand.Rand, n uint64, p float64) uint64 {
	var x uint64
	for range n {
		if rng.Float64() < p {
			x++
		}
	}
	return x
}
