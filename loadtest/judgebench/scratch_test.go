package judgebench

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/inferensys/canaryd/detector"
	"github.com/inferensys/canaryd/schemas"
	"github.com/inferensys/canaryd/window"
)

func TestScratchCost(t *testing.T) {
	for _, width := range []int{10, 1} {
	spec := detector.Spec{Rollout: "r", Baseline: "v1", Canary: "v2", Alpha: 0.05,
		Steps: []detector.Step{{Weight: 5, MinDuration: detector.Duration(10 * time.Hour)}, {Weight: 100}}}
	spec.Metrics.ErrorRate.Margin = 1.5
	spec.Metrics.Latency.Margin = 0.1
	j := detector.NewJudge(spec)
	rng := rand.New(rand.NewPCG(1, 2))
	segs := []window.Segment{{schemas.KindLLM, "m"}, {schemas.KindTool, "search"}, {schemas.KindTool, "sql"}, {schemas.KindTool, "browse"}}
	med := []float64{800, 150, 40, 1200}
	var obs, dec, gen time.Duration
	var ev schemas.Event
	nw := 3600 / width
	for w := 0; w < nw; w++ {
		t0 := time.Now()
		c := window.Closed{Rollout: "r", Start: int64(w*width) * 1e9, End: int64((w+1)*width) * 1e9, Watermark: int64((w+1)*width) * 1e9, ErrorTypes: []string{"_other"}}
		for _, v := range []string{"v1", "v2"} {
			share := 0.95
			if v == "v2" { share = 0.05 }
			for si, sg := range segs {
				a := window.NewAgg()
				n := int(200 * float64(width) * share / 4)
				for range n {
					ev.Reset()
					ev.Kind = sg.Kind
					ev.Error = rng.Float64() < 0.01
					ev.HasDuration = true
					ev.DurationMS = med[si] * math.Exp(0.5*rng.NormFloat64())
					a.Add(&ev, 0)
				}
				c.Series = append(c.Series, window.Series{Version: v, Segment: sg, Agg: a})
			}
		}
		t1 := time.Now()
		j.Observe(c)
		t2 := time.Now()
		v, _ := j.Decide(c.Watermark)
		t3 := time.Now()
		gen += t1.Sub(t0); obs += t2.Sub(t1); dec += t3.Sub(t2)
		if v.Action == "rollback" { t.Logf("rollback at %d", w) ; break}
	}
	t.Logf("width %d: gen %v observe %v decide %v per hour", width, gen, obs, dec)
	}
}
