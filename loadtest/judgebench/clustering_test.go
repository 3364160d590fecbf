package judgebench

import (
	"math/rand/v2"
	"testing"
)

// TestErrorsPerFailingSession measures, on 30 minutes of the baseline's
// session summaries, how many failed requests a failing session holds:
// about 1 + (r−1)·p/2 when a session's r requests fail independently at
// rate p, more when they fail together. It is the error side of a
// clustering check that canaryd does not make yet (the request-level tests
// assume independence; `units: sessions` is the remedy): the default
// stream stays near independence, the strongly clustered one does not.
// Fixed seeds: the figures are deterministic.
//
//	go test -run TestErrorsPerFailingSession -v ./loadtest/judgebench/
func TestErrorsPerFailingSession(t *testing.T) {
	for _, c := range []struct {
		scenario string
		lo, hi   float64
	}{
		{"A/A, 5%, independent requests", 1.0, 1.1},
		{"A/A, 5% canary", 1.0, 1.15},
		{"A/A, 5%, strong session clustering", 1.4, 2},
	} {
		sc := Filter(Scenarios(), c.scenario)[0]
		for seed := uint64(1); seed <= 3; seed++ {
			s := newSim(&sc, rand.New(rand.NewPCG(seed, seed)))
			aggs := newAggs()
			for sec := range 1800 {
				s.second(sec, &aggs)
			}
			a := aggs[vBase][segAgent]
			perFailing := float64(a.SessReqErrors) / float64(a.ErrSessions)
			r, p := float64(a.SessRequests)/float64(a.UnitSessions), float64(a.SessReqErrors)/float64(a.SessRequests)
			t.Logf("%s, seed %d: %d sessions of %.1f requests, %d failing; %.2f failed requests per failing session (independent: %.3f)",
				c.scenario, seed, a.UnitSessions, r, a.ErrSessions, perFailing, 1+(r-1)*p/2)
			if perFailing < c.lo || perFailing > c.hi {
				t.Errorf("%s, seed %d: %.2f failed requests per failing session; want %.2f–%.2f", c.scenario, seed, perFailing, c.lo, c.hi)
			}
		}
	}
}
