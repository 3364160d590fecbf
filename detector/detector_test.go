package detector

import (
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/inferensys/canaryd/schemas"
	"github.com/inferensys/canaryd/window"
)

// arm describes one version's traffic in the simulated windows.
type arm struct {
	version   string
	perWindow int     // requests per window
	errRate   float64 // probability of an error
	latMedian float64 // ms, lognormal median
	latSigma  float64
	tokens    float64 // mean tokens of an llm call made after each tool call; 0: none
	fetch     float64 // share of tool calls to "fetch" instead of "search"
}

// simWindow builds one closed window of requests for the given arms, one
// tool segment.
func simWindow(rng *rand.Rand, start time.Time, width time.Duration, arms ...arm) window.Closed {
	c := window.Closed{Rollout: "r", Start: start.UnixNano(), End: start.Add(width).UnixNano(), Watermark: start.Add(width).UnixNano(), ErrorTypes: []string{window.OtherName, "timeout"}}
	for _, a := range arms {
		search, fetch, llm := window.NewAgg(), window.NewAgg(), window.NewAgg()
		var ev schemas.Event
		for range a.perWindow {
			ev.Reset()
			ev.Kind = schemas.KindTool
			ev.Error = rng.Float64() < a.errRate
			ev.HasDuration = true
			ev.DurationMS = a.latMedian * math.Exp(a.latSigma*rng.NormFloat64())
			et := 0
			if ev.Error {
				et = 1
			}
			if rng.Float64() < a.fetch {
				fetch.Add(&ev, et)
			} else {
				search.Add(&ev, et)
			}
			if a.tokens > 0 {
				ev.Reset()
				ev.Kind = schemas.KindLLM
				ev.InputTokens = int64(a.tokens * math.Exp(0.5*rng.NormFloat64()-0.125))
				llm.Add(&ev, 0)
			}
		}
		for _, s := range []struct {
			name string
			kind schemas.Kind
			agg  *window.Agg
		}{{"search", schemas.KindTool, search}, {"fetch", schemas.KindTool, fetch}, {"gpt", schemas.KindLLM, llm}} {
			if s.agg.Count > 0 {
				c.Series = append(c.Series, window.Series{Version: a.version, Segment: window.Segment{Kind: s.kind, Name: s.name}, Agg: s.agg})
			}
		}
	}
	return c
}

func testSpec() Spec {
	s := Spec{
		Rollout: "r", Baseline: "v1", Canary: "v2",
		Steps: []Step{
			{Weight: 5, MinDuration: Duration(30 * time.Second), MinCanaryEvents: 200},
			{Weight: 50, MinDuration: Duration(30 * time.Second), MinCanaryEvents: 200},
			{Weight: 100},
		},
	}
	if err := s.validate(nilNode()); err != nil {
		panic(err)
	}
	return s
}

// run feeds windows until a final verdict or maxWindows, returning the
// final verdict and every command sent.
func run(t *testing.T, s Spec, seed uint64, maxWindows int, base, canary arm) (Verdict, []*schemas.Command) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 1))
	j := NewJudge(s)
	var cmds []*schemas.Command
	start := time.Unix(1_700_000_000, 0)
	var v Verdict
	total := base.perWindow + canary.perWindow
	for i := range maxWindows {
		// Traffic follows the judge's weight, as a router would.
		w := j.Status().Weight
		b, k := base, canary
		k.perWindow = total * w / 100
		b.perWindow = total - k.perWindow
		c := simWindow(rng, start.Add(time.Duration(i)*10*time.Second), 10*time.Second, b, k)
		j.Observe(c)
		var cmd *schemas.Command
		v, cmd = j.Decide(c.Watermark)
		if cmd != nil {
			if err := cmd.Validate(); err != nil {
				t.Fatalf("invalid command: %v", err)
			}
			cmds = append(cmds, cmd)
		}
		if j.Final() != "" {
			break
		}
	}
	return v, cmds
}

func TestNoTrafficContinues(t *testing.T) {
	j := NewJudge(testSpec())
	for _, now := range []int64{0, time.Now().UnixNano()} {
		v, cmd := j.Decide(now)
		if v.Action != ActionContinue || cmd != nil {
			t.Fatalf("Decide(%d) with no traffic = %v, %v; want continue, no command", now, v.Action, cmd)
		}
	}
	st := j.Status()
	if st.Step != -1 || st.Final != "" {
		t.Fatalf("status %+v; want not started", st)
	}
}

func TestGoodCanaryIsPromoted(t *testing.T) {
	base := arm{version: "v1", perWindow: 2000, errRate: 0.01, latMedian: 200, latSigma: 0.5}
	canary := arm{version: "v2", perWindow: 500, errRate: 0.01, latMedian: 200, latSigma: 0.5}
	v, cmds := run(t, testSpec(), 1, 400, base, canary)
	if v.Action != schemas.ActionPromote {
		t.Fatalf("final action %s (%s); want promote", v.Action, v.Reason)
	}
	t.Logf("promote after %.0fs of the last step: %s", v.StepElapsedS, v.Reason)
	var actions []string
	for _, c := range cmds {
		actions = append(actions, string(c.Action))
	}
	if got, want := strings.Join(actions, ","), "set_weight,set_weight,promote"; got != want {
		t.Fatalf("commands %s; want %s", got, want)
	}
	for i, c := range cmds {
		if c.Seq != uint64(i+1) {
			t.Fatalf("command %d has seq %d; want %d", i, c.Seq, i+1)
		}
	}
	if cmds[2].Weight != 100 || cmds[0].Weight != 5 || cmds[1].Weight != 50 {
		t.Fatalf("weights %d,%d,%d; want 5,50,100", cmds[0].Weight, cmds[1].Weight, cmds[2].Weight)
	}
}

func TestErrorRegressionRollsBack(t *testing.T) {
	base := arm{version: "v1", perWindow: 2000, errRate: 0.01, latMedian: 200, latSigma: 0.5}
	canary := arm{version: "v2", perWindow: 200, errRate: 0.03, latMedian: 200, latSigma: 0.5}
	v, cmds := run(t, testSpec(), 2, 400, base, canary)
	if v.Action != schemas.ActionRollback {
		t.Fatalf("final action %s (%s); want rollback", v.Action, v.Reason)
	}
	t.Logf("%s", v.Reason)
	if !strings.Contains(v.Reason, "error rate") {
		t.Fatalf("reason %q; want the error-rate test named", v.Reason)
	}
	last := cmds[len(cmds)-1]
	if last.Action != schemas.ActionRollback || last.Weight != 0 {
		t.Fatalf("last command %+v; want rollback at weight 0", last)
	}
	for i, c := range cmds {
		if c.Seq != uint64(i+1) {
			t.Fatalf("command %d (%s) has seq %d; want %d (no gaps)", i, c.Action, c.Seq, i+1)
		}
	}
}

func TestLatencyRegressionRollsBack(t *testing.T) {
	base := arm{version: "v1", perWindow: 2000, errRate: 0.01, latMedian: 200, latSigma: 0.5}
	canary := arm{version: "v2", perWindow: 200, errRate: 0.01, latMedian: 260, latSigma: 0.5} // 30% slower
	v, _ := run(t, testSpec(), 3, 400, base, canary)
	if v.Action != schemas.ActionRollback {
		t.Fatalf("final action %s (%s); want rollback", v.Action, v.Reason)
	}
	t.Logf("%s", v.Reason)
	if !strings.Contains(v.Reason, "latency") {
		t.Fatalf("reason %q; want the latency test named", v.Reason)
	}
}

func TestSLOGuardRail(t *testing.T) {
	s := testSpec()
	s.SLO.MaxErrorRate = 0.02
	// Both versions at 5% errors: no difference, but the canary breaks the SLO.
	base := arm{version: "v1", perWindow: 2000, errRate: 0.05, latMedian: 200, latSigma: 0.5}
	canary := arm{version: "v2", perWindow: 200, errRate: 0.05, latMedian: 200, latSigma: 0.5}
	v, _ := run(t, s, 4, 400, base, canary)
	if v.Action != schemas.ActionRollback || !strings.Contains(v.Reason, "SLO") {
		t.Fatalf("verdict %s (%s); want an SLO rollback", v.Action, v.Reason)
	}
}

// TestAAFalseRollbackRate checks the anytime validity of the error-rate
// test: identical versions, read after every window for 100 windows, roll
// back in at most alpha of the runs: more than binomMax(300, alpha, aaEps)
// rollbacks fail the test, by luck with chance ≤ aaEps.
func TestAAFalseRollbackRate(t *testing.T) {
	if testing.Short() {
		t.Skip("statistical test")
	}
	runs, rollbacks := 300, 0
	for i := range runs {
		rng := rand.New(rand.NewPCG(uint64(i), 7))
		var c Conditional
		for range 100 {
			nb, nc := uint64(1000), uint64(50)
			xb, xc := binom(rng, nb, 0.02), binom(rng, nc, 0.02)
			c.Observe(nb, xb, nc, xc)
			if c.EUpper(1) >= 1/0.05 {
				rollbacks++
				break
			}
		}
	}
	if lim := binomMax(runs, 0.05, aaEps); rollbacks > lim {
		t.Fatalf("A/A false rollbacks %d/%d; want ≤ %d (alpha 0.05; chance ≤ %g by luck)", rollbacks, runs, lim, aaEps)
	}
}

func binom(rng *rand.Rand, n uint64, p float64) uint64 {
	var x uint64
	for range n {
		if rng.Float64() < p {
			x++
		}
	}
	return x
}

func TestConditionalKnownCases(t *testing.T) {
	// No informative strata: every e-value is 1.
	var c Conditional
	c.Observe(0, 0, 10, 1)
	c.Observe(10, 0, 10, 0)
	if e := c.EUpper(1); e != 1 {
		t.Fatalf("EUpper with no information = %v; want 1", e)
	}
	if c.Strata() != 0 {
		t.Fatalf("strata = %d; want 0", c.Strata())
	}
	// A strong, clean difference: canary 10× the baseline's error rate.
	for range 20 {
		c.Observe(1000, 10, 1000, 100)
	}
	if e := c.EUpper(1); e < 1e6 {
		t.Fatalf("EUpper for 10× errors = %v; want huge", e)
	}
	if or := c.OddsRatio(); or < 8 || or > 14 {
		t.Fatalf("odds ratio %v; want ≈ 11", or)
	}
	lo, hi := c.Bounds(0.05)
	if !(lo > 5 && hi < 20 && lo < hi) {
		t.Fatalf("bounds [%v, %v]; want around 11", lo, hi)
	}
	if e := c.ELower(1.5); e > 1 {
		t.Fatalf("ELower(1.5) for a worse canary = %v; want ≤ 1", e)
	}
}

func TestBernoulli(t *testing.T) {
	b := Bernoulli{P0: 0.01}
	if b.E() != 1 {
		t.Fatalf("empty E = %v; want 1", b.E())
	}
	b.Observe(1000, 10)
	if e := b.E(); e > 2 {
		t.Fatalf("E at the limit = %v; want small", e)
	}
	b.Observe(1000, 60)
	if e := b.E(); e < 100 {
		t.Fatalf("E at 3.5× the limit = %v; want large", e)
	}
}

func TestCommandIDsDeterministic(t *testing.T) {
	base := arm{version: "v1", perWindow: 2000, errRate: 0.01, latMedian: 200, latSigma: 0.5}
	canary := arm{version: "v2", perWindow: 500, errRate: 0.01, latMedian: 200, latSigma: 0.5}
	_, a := run(t, testSpec(), 9, 400, base, canary)
	_, b := run(t, testSpec(), 9, 400, base, canary)
	if len(a) != len(b) {
		t.Fatalf("replay sent %d commands; first run %d", len(b), len(a))
	}
	for i := range a {
		if a[i].CommandID != b[i].CommandID || a[i].Seq != b[i].Seq || string(a[i].Evidence) != string(b[i].Evidence) {
			t.Fatalf("command %d differs on replay: %+v vs %+v", i, a[i], b[i])
		}
	}
}

func TestTokensIncreaseRollsBack(t *testing.T) {
	base := arm{version: "v1", perWindow: 2000, errRate: 0.01, latMedian: 200, latSigma: 0.5, tokens: 1000}
	canary := arm{version: "v2", perWindow: 200, errRate: 0.01, latMedian: 200, latSigma: 0.5, tokens: 1200}
	v, _ := run(t, testSpec(), 5, 400, base, canary)
	t.Logf("%s", v.Reason)
	if v.Action != schemas.ActionRollback || !strings.Contains(v.Reason, "tokens") {
		t.Fatalf("verdict %s (%s); want a tokens rollback", v.Action, v.Reason)
	}
}

func TestToolMixShiftRollsBack(t *testing.T) {
	base := arm{version: "v1", perWindow: 2000, errRate: 0.01, latMedian: 200, latSigma: 0.5, fetch: 0.3}
	canary := arm{version: "v2", perWindow: 200, errRate: 0.01, latMedian: 200, latSigma: 0.5, fetch: 0.5}
	v, _ := run(t, testSpec(), 6, 400, base, canary)
	t.Logf("%s", v.Reason)
	if v.Action != schemas.ActionRollback || !strings.Contains(v.Reason, "tool_mix") {
		t.Fatalf("verdict %s (%s); want a tool_mix rollback", v.Action, v.Reason)
	}
}

// TestSampleRatioMismatchHolds: a router that sends 2× the configured share
// makes the experiment invalid: hold, never rollback or promote.
func TestSampleRatioMismatchHolds(t *testing.T) {
	rng := rand.New(rand.NewPCG(8, 1))
	s := testSpec()
	s.Settle = -1 // validated specs have ≥ 0; the judge reads it as is
	j := NewJudge(s)
	start := time.Unix(1_700_000_000, 0)
	var v Verdict
	var cmd *schemas.Command
	for i := range 200 {
		w := j.Status().Weight * 2 // misrouted
		c := simWindow(rng, start.Add(time.Duration(i)*10*time.Second), 10*time.Second,
			arm{version: "v1", perWindow: 2000 - 20*w, errRate: 0.01, latMedian: 200, latSigma: 0.5},
			arm{version: "v2", perWindow: 20 * w, errRate: 0.01, latMedian: 200, latSigma: 0.5})
		j.Observe(c)
		v, cmd = j.Decide(c.Watermark)
		if j.Final() != "" {
			break
		}
	}
	if v.Action != schemas.ActionHold || cmd == nil || cmd.Action != schemas.ActionHold {
		t.Fatalf("verdict %s (%s); want hold with a command", v.Action, v.Reason)
	}
	t.Logf("%s", v.Reason)
}

func TestTimeBudgetHolds(t *testing.T) {
	s := testSpec()
	s.Steps[0].MaxDuration = Duration(60 * time.Second)
	s.Steps[0].MinCanaryEvents = 1_000_000 // never reached
	base := arm{version: "v1", perWindow: 2000, errRate: 0.01, latMedian: 200, latSigma: 0.5}
	canary := arm{version: "v2", perWindow: 100, errRate: 0.01, latMedian: 200, latSigma: 0.5}
	v, _ := run(t, s, 9, 100, base, canary)
	if v.Action != schemas.ActionHold || !strings.Contains(v.Reason, "power") {
		t.Fatalf("verdict %s (%s); want hold with the achieved power", v.Action, v.Reason)
	}
	t.Logf("%s", v.Reason)
}

// TestMeanTestAA checks the mean test's validity: identical arms, 100
// looks, false alarms in at most alpha of the runs (more than
// binomMax(300, alpha, aaEps) fail the test, by luck with chance ≤ aaEps;
// the confidence sequence is asymptotic, 220 lognormal values per look make
// it accurate here).
func TestMeanTestAA(t *testing.T) {
	if testing.Short() {
		t.Skip("statistical test")
	}
	runs, fired := 300, 0
	for i := range runs {
		rng := rand.New(rand.NewPCG(uint64(i), 11))
		m := MeanTest{dir: 1}
		for range 100 {
			var s [2][3]float64
			for a, n := range []int{200, 20} {
				for range n {
					x := 1000 * math.Exp(0.6*rng.NormFloat64())
					s[a][0]++
					s[a][1] += x
					s[a][2] += x * x
				}
			}
			m.Observe(s[0][0], s[0][1], s[0][2], s[1][0], s[1][1], s[1][2])
			if m.E() >= 20 {
				fired++
				break
			}
		}
	}
	if lim := binomMax(runs, 0.05, aaEps); fired > lim {
		t.Fatalf("A/A false alarms %d/%d; want ≤ %d (alpha 0.05; chance ≤ %g by luck)", fired, runs, lim, aaEps)
	}
}

// sessionRun drives a judge with agent sessions built through a real
// window.Partition: each session has a tool-call sequence and an outcome.
func sessionRun(t *testing.T, seed uint64, loopB, loopC, scoreB, scoreC float64) Verdict {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 3))
	s := testSpec()
	s.Metrics.SRM.Disabled = true
	j := NewJudge(s)
	var v Verdict
	p := window.NewPartition(0, window.Options{Width: 10 * time.Second, Lateness: time.Second, Emit: func(c window.Closed) {
		j.Observe(c)
		v, _ = j.Decide(c.Watermark)
	}})
	start := time.Unix(1_700_000_000, 0)
	search, fetch := []byte("search"), []byte("fetch")
	for i := 0; i < 400_000 && j.Final() == ""; i++ {
		ts := start.Add(time.Duration(i) * 5 * time.Millisecond)
		p.SetNow(ts)
		canary := rng.Float64() < 0.2
		ev := schemas.Event{Rollout: []byte("r"), Version: []byte("v1"), Kind: schemas.KindAgent, Name: []byte("agent"), TS: ts.UnixNano(),
			HasOutcome: true, HasOutcomeScore: true, HasOutcomeSuccess: true, OutcomeSuccess: true}
		loop, score := loopB, scoreB
		if canary {
			ev.Version = []byte("v2")
			loop, score = loopC, scoreC
		}
		ev.OutcomeScore = min(max(score+0.15*rng.NormFloat64(), 0), 1)
		if rng.Float64() < loop {
			ev.ToolCalls = [][]byte{search, search, fetch}
		} else {
			ev.ToolCalls = [][]byte{search, fetch}
		}
		if err := p.Add(&ev, int64(i)); err != nil {
			t.Fatal(err)
		}
		if i%100 == 99 {
			p.Advance()
		}
	}
	return v
}

func TestToolSequenceShiftRollsBack(t *testing.T) {
	v := sessionRun(t, 1, 0.1, 0.3, 0.8, 0.8)
	t.Logf("%s", v.Reason)
	if v.Action != schemas.ActionRollback || !(strings.Contains(v.Reason, "tool_sequence") || strings.Contains(v.Reason, "loop")) {
		t.Fatalf("verdict %s (%s); want a tool-sequence or loop rollback", v.Action, v.Reason)
	}
}

func TestEvalScoreDropRollsBack(t *testing.T) {
	v := sessionRun(t, 2, 0.1, 0.1, 0.8, 0.75)
	t.Logf("%s", v.Reason)
	if v.Action != schemas.ActionRollback || !strings.Contains(v.Reason, "evaluation score") {
		t.Fatalf("verdict %s (%s); want an evaluation-score rollback", v.Action, v.Reason)
	}
}

// TestIncidentsWithoutDenominator: crash events carry no request count; the
// canary's share of crashes against its share of traffic rolls it back.
func TestIncidentsWithoutDenominator(t *testing.T) {
	s := testSpec()
	s.Metrics.Incidents.Names = []string{"crash"}
	s.Metrics.SRM.Disabled = true
	rng := rand.New(rand.NewPCG(12, 1))
	j := NewJudge(s)
	start := time.Unix(1_700_000_000, 0)
	var v Verdict
	for i := range 300 {
		c := simWindow(rng, start.Add(time.Duration(i)*10*time.Second), 10*time.Second,
			arm{version: "v1", perWindow: 1800, errRate: 0.01, latMedian: 200, latSigma: 0.5},
			arm{version: "v2", perWindow: 200, errRate: 0.01, latMedian: 200, latSigma: 0.5})
		// Crashes: Poisson-ish, 1 per 1000 requests on the baseline, 5 on the canary.
		for _, a := range []struct {
			v    string
			n    int
			rate float64
		}{{"v1", 1800, 0.001}, {"v2", 200, 0.005}} {
			agg := window.NewAgg()
			for range binom(rng, uint64(a.n), a.rate) {
				agg.Add(&schemas.Event{Kind: schemas.KindOther}, 0)
			}
			if agg.Count > 0 {
				c.Series = append(c.Series, window.Series{Version: a.v, Segment: window.Segment{Kind: schemas.KindOther, Name: "crash"}, Agg: agg})
			}
		}
		j.Observe(c)
		v, _ = j.Decide(c.Watermark)
		if j.Final() != "" {
			break
		}
	}
	t.Logf("%s", v.Reason)
	if v.Action != schemas.ActionRollback || !strings.Contains(v.Reason, "incidents") {
		t.Fatalf("verdict %s (%s); want an incidents rollback", v.Action, v.Reason)
	}
}

// TestERiseAAValid: the change-point rollback e-value keeps its anytime
// guarantee — identical versions read after every stratum cross 1/alpha in
// at most alpha of the runs (more than binomMax(300, alpha, aaEps) fail the
// test, by luck with chance ≤ aaEps) — for exact and for tempered
// (Discount) evidence.
func TestERiseAAValid(t *testing.T) {
	if testing.Short() {
		t.Skip("statistical test")
	}
	for _, discount := range []float64{0, 0.25} {
		runs, rollbacks := 300, 0
		for i := range runs {
			rng := rand.New(rand.NewPCG(uint64(i), 11))
			c := Conditional{Discount: discount}
			for range 150 {
				nb, nc := uint64(1000), uint64(50)
				c.Observe(nb, binom(rng, nb, 0.02), nc, binom(rng, nc, 0.02))
				if c.ERise() >= 1/0.05 {
					rollbacks++
					break
				}
			}
		}
		if lim := binomMax(runs, 0.05, aaEps); rollbacks > lim {
			t.Errorf("discount %v: A/A false rollbacks %d/%d; want ≤ %d (alpha 0.05; chance ≤ %g by luck)", discount, rollbacks, runs, lim, aaEps)
		}
	}
}

// TestERiseLateRise: a regression that starts after a long clean period is
// caught sooner by the mixture over start points than by the test that
// accumulates from the start (which must first climb out of the clean
// period's deficit).
func TestERiseLateRise(t *testing.T) {
	const runs, clean = 60, 150
	var rise, whole []float64
	for i := range runs {
		rng := rand.New(rand.NewPCG(uint64(i), 13))
		var c Conditional
		dRise, dWhole := math.Inf(1), math.Inf(1)
		for s := range clean + 400 {
			pc := 0.02
			if s >= clean {
				pc = 0.05
			}
			c.Observe(1000, binom(rng, 1000, 0.02), 50, binom(rng, 50, pc))
			if s < clean {
				continue
			}
			if math.IsInf(dRise, 1) && c.ERise() >= 20 {
				dRise = float64(s - clean)
			}
			if math.IsInf(dWhole, 1) && c.EUpper(1) >= 20 {
				dWhole = float64(s - clean)
			}
		}
		rise, whole = append(rise, dRise), append(whole, dWhole)
	}
	slices.Sort(rise)
	slices.Sort(whole)
	if r, w := rise[runs/2], whole[runs/2]; !(r < 0.7*w) {
		t.Fatalf("median delay after %d clean strata: ERise %v strata, EUpper %v; want ERise clearly sooner", clean, r, w)
	}
}

// sessionWindow adds to c one agent-session series per arm: n sessions that
// carry their requests' totals, a share errP of them with a failed request,
// and lognormal session medians around medMS.
func sessionWindow(rng *rand.Rand, c *window.Closed, version string, n int, errP, medMS float64) {
	a := window.NewAgg()
	a.SessMedian = window.NewSketch()
	for range n {
		a.Count++
		a.UnitSessions++
		a.SessRequests += 6
		if rng.Float64() < errP {
			a.ErrSessions++
			a.SessReqErrors++
		}
		if err := a.SessMedian.Add(medMS * math.Exp(0.3*rng.NormFloat64())); err != nil {
			panic(err)
		}
	}
	c.Series = append(c.Series, window.Series{Version: version, Segment: window.Segment{Kind: schemas.KindAgent, Name: "agent"}, Agg: a})
}

// TestSessionUnitsMissing: with units: sessions and requests but no session
// summary carrying request totals, the verdict says why nothing is judged.
func TestSessionUnitsMissing(t *testing.T) {
	s := testSpec()
	s.Units = UnitsSessions
	j := NewJudge(s)
	rng := rand.New(rand.NewPCG(1, 7))
	start := time.Unix(1_700_000_000, 0)
	var v Verdict
	for w := range 10 {
		c := simWindow(rng, start.Add(time.Duration(w)*10*time.Second), 10*time.Second,
			arm{version: "v1", perWindow: 950, errRate: 0.01, latMedian: 200, latSigma: 0.5},
			arm{version: "v2", perWindow: 50, errRate: 0.2, latMedian: 200, latSigma: 0.5})
		j.Observe(c)
		v, _ = j.Decide(c.Watermark)
	}
	if v.Action != ActionContinue || !strings.Contains(v.Reason, "no canary session summary with request totals") {
		t.Fatalf("%s (%s); want continue, saying that session totals are missing", v.Action, v.Reason)
	}
}

// TestSessionUnits: with units: sessions the error_rate and latency tests
// count sessions (failed-request shares, session medians) and ignore the
// request series; with the default request units the same windows judge
// requests.
func TestSessionUnits(t *testing.T) {
	cases := []struct {
		name             string
		units            string
		reqErrC, sessErr float64 // canary: request error rate, sessions with a failed request
		sessMedC         float64 // canary session median, ms (baseline 300)
		want             schemas.Action
		wantIn           string
	}{
		{"sessions: more sessions fail", UnitsSessions, 0.01, 0.15, 300, schemas.ActionRollback, "sessions with a failed request"},
		{"sessions: slower sessions", UnitsSessions, 0.01, 0.05, 420, schemas.ActionRollback, "sessions' median request latencies"},
		{"sessions: request errors alone are not read", UnitsSessions, 0.05, 0.05, 300, ActionContinue, ""},
		{"requests: request errors", UnitsRequests, 0.05, 0.05, 300, schemas.ActionRollback, "error rate"},
		{"requests: session errors alone are not read", UnitsRequests, 0.01, 0.15, 300, ActionContinue, ""},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := testSpec()
			s.Units = tc.units
			s.Steps = []Step{{Weight: 10, MinDuration: Duration(1000 * time.Hour)}, {Weight: 100}}
			// Only the tests this case is about.
			m := &s.Metrics
			for _, off := range []*bool{&m.SessionFailure.Disabled, &m.Loops.Disabled, &m.Hallucination.Disabled, &m.ToolMix.Disabled,
				&m.ErrorTypes.Disabled, &m.ToolSequence.Disabled, &m.SRM.Disabled, &m.Tokens.Disabled, &m.Cost.Disabled,
				&m.ContextUse.Disabled, &m.ToolCalls.Disabled, &m.EvalScore.Disabled} {
				*off = true
			}
			j := NewJudge(s)
			rng := rand.New(rand.NewPCG(uint64(i), 7))
			start := time.Unix(1_700_000_000, 0)
			var v Verdict
			for w := range 200 {
				c := simWindow(rng, start.Add(time.Duration(w)*10*time.Second), 10*time.Second,
					arm{version: "v1", perWindow: 900, errRate: 0.01, latMedian: 200, latSigma: 0.5},
					arm{version: "v2", perWindow: 100, errRate: tc.reqErrC, latMedian: 200, latSigma: 0.5})
				sessionWindow(rng, &c, "v1", 150, 0.05, 300)
				sessionWindow(rng, &c, "v2", 17, tc.sessErr, tc.sessMedC)
				j.Observe(c)
				v, _ = j.Decide(c.Watermark)
				if j.Final() != "" {
					break
				}
			}
			if v.Action != tc.want || !strings.Contains(v.Reason, tc.wantIn) {
				t.Fatalf("%s (%s); want %s naming %q", v.Action, v.Reason, tc.want, tc.wantIn)
			}
			t.Logf("%s: %s", v.Action, v.Reason)
			for _, te := range v.Tests {
				if te.Name == "error_rate" && te.Role == "rollback" {
					if got := te.Detail == "units: sessions"; got != (tc.units == UnitsSessions) {
						t.Errorf("error_rate evidence detail %q with units %s", te.Detail, tc.units)
					}
					if tc.units == UnitsSessions && te.NCanary > 17*200 {
						t.Errorf("error_rate counted %d canary units: more than the sessions", te.NCanary)
					}
				}
			}
		})
	}
}
