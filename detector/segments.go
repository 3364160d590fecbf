package detector

import (
	"fmt"

	"github.com/inferensys/canaryd/schemas"
	"github.com/inferensys/canaryd/window"
)

// A regression confined to one tool or one model dilutes in a test whose
// strata share one odds ratio: errors ×10 on a tool that carries 2% of the
// requests move the pooled odds by a few percent. So every rollback test on
// requests (error_rate, latency_p50/p95/p99) is a mixture of two halves:
//
//	E = ½·E_pooled + ½·Σ_k w_k·E_k
//
// E_pooled is the change-point e-value over all strata (Conditional.ERise);
// E_k is the same e-value over the strata of one segment (a tool or model
// name) only; w_k = 1/((k+1)(k+2)) is the prior weight of the segment that
// appeared k-th (k = 0, 1, …: ½, ⅙, 1/12, …, summing to 1), and a segment
// not seen yet counts at its weight with E_k = 1. Under H0 (the canary's
// odds no higher than the baseline's in every stratum) each E_k, started at
// 1 when its segment first appears, is a nonnegative supermartingale, and
// so is every fixed-weight average of them; the weights depend only on the
// order in which segments first have units in both arms — the totals the
// conditional test conditions on, never the outcomes — so the mixture is an
// e-process and Ville's inequality bounds its false alarms by alpha, as for
// E_pooled alone. The pooled half keeps the power for regressions
// everywhere at the price of a factor 2 (ln 2 nats); a segment's regression
// pays a factor 2/w_k (the popular segments appear first, so they pay least).
// Segments beyond maxSegTests per test get no test of their own (their
// weight stays at E_k = 1); the pooled half still sees them.

// maxSegTests bounds the per-segment tests of each rollback test.
const maxSegTests = 24

// segWeight is the prior weight of the k-th segment (from 0).
func segWeight(k int) float64 { return 1 / float64((k+1)*(k+2)) }

// segMix holds one rollback test's per-segment e-processes.
type segMix struct {
	order    []window.Segment
	tests    map[window.Segment]*Conditional
	discount float64
}

// observe adds a stratum of seg. A segment gets its test (and its weight)
// at its first stratum with units in both arms.
func (m *segMix) observe(at int64, seg window.Segment, nb, xb, nc, xc uint64) {
	t := m.tests[seg]
	if t == nil {
		if nb == 0 || nc == 0 || len(m.order) >= maxSegTests {
			return
		}
		if m.tests == nil {
			m.tests = map[window.Segment]*Conditional{}
		}
		t = &Conditional{Discount: m.discount}
		m.tests[seg] = t
		m.order = append(m.order, seg)
	}
	t.ObserveAt(at, nb, xb, nc, xc)
}

// segTop is the segment whose weighted e-value w·E is the largest.
type segTop struct {
	seg  window.Segment
	t    *Conditional // nil: no segment yet
	w, v float64      // its prior weight and w·E
}

// e returns Σ_k w_k·E_k over all segments (unseen ones at 1), and the
// segment whose weighted e-value is largest.
func (m *segMix) e() (e float64, top segTop) {
	e = 1
	for k, seg := range m.order {
		w := segWeight(k)
		t := m.tests[seg]
		v := w * t.ERise()
		e += v - w
		if top.t == nil || v > top.v {
			top = segTop{seg, t, w, v}
		}
	}
	return e, top
}

// segText names a segment for a reason: "tool search_docs", "llm gpt-4o".
func segText(s window.Segment) string {
	if s.Name == "" {
		return s.Kind.String()
	}
	return fmt.Sprintf("%s %s", s.Kind, s.Name)
}

type segMixState struct {
	Kinds []uint8
	Names []string
	Tests []condState
}

func (m *segMix) state() segMixState {
	var s segMixState
	for _, seg := range m.order {
		s.Kinds = append(s.Kinds, uint8(seg.Kind))
		s.Names = append(s.Names, seg.Name)
		s.Tests = append(s.Tests, m.tests[seg].state())
	}
	return s
}

func (m *segMix) setState(s segMixState) error {
	if len(s.Kinds) != len(s.Names) || len(s.Names) != len(s.Tests) {
		return fmt.Errorf("%w: segment tests of %d kinds, %d names, %d tests", ErrStateMismatch, len(s.Kinds), len(s.Names), len(s.Tests))
	}
	*m = segMix{discount: m.discount}
	for i := range s.Kinds {
		seg := window.Segment{Kind: schemas.Kind(s.Kinds[i]), Name: s.Names[i]}
		t := &Conditional{Discount: m.discount}
		if err := t.setState(s.Tests[i]); err != nil {
			return err
		}
		if m.tests == nil {
			m.tests = map[window.Segment]*Conditional{}
		}
		m.tests[seg] = t
		m.order = append(m.order, seg)
	}
	return nil
}
