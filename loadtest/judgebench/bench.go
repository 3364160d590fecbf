package judgebench

import (
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/inferensys/canaryd/detector"
	"github.com/inferensys/canaryd/schemas"
	"github.com/inferensys/canaryd/window"
)

// Window geometry of the simulated canaryd: 10-second event-time windows
// closed 5 seconds after their end (window.Partition's defaults).
const (
	windowS   = 10
	latenessS = 5
	minuteS   = 60
)

// Options configure Run. The zero value runs every scenario's full run
// count with one worker per CPU.
type Options struct {
	// Runs, when > 0, overrides every scenario's run count.
	Runs int
	// Quick uses each scenario's QuickRuns instead of Runs.
	Quick bool
	// Seed of every run's random stream (each run also mixes in its
	// scenario's name and index, so results do not depend on Parallel).
	Seed uint64
	// Parallel is the number of worker goroutines. Default GOMAXPROCS.
	Parallel int
	// OneSecondRuns, when > 0, runs canaryd on 1-second windows too in the
	// first OneSecondRuns runs of every scenario (by default only the
	// scenarios that set Scenario.OneSecondRuns do).
	OneSecondRuns int
	// Progress, when set, receives one line per finished scenario.
	Progress io.Writer
}

// JudgeResult sums one judge's runs of one scenario.
type JudgeResult struct {
	Name string
	Runs int // runs the judge took part in
	// Rollbacks counts every rollback; False those that are false (all in
	// A/A and promotion scenarios, those before the onset in regressions).
	Rollbacks, False int
	// Detections: rollbacks at or after the onset (regressions), or any
	// rollback at the margin.
	Detections int
	Promotes   int
	Holds      int // runs that ended in a hold
	// HoldS: per hold, the seconds from the start to it.
	HoldS []float64
	// DelayReq and DelayS are, per detection, the canary requests served and
	// the seconds elapsed from the onset to the rollback (for promotion
	// scenarios: from the start to the promote).
	DelayReq, DelayS []float64
	// Exposed sums, over all runs, the canary requests served after the onset
	// until the rollback or the end of the horizon.
	Exposed float64
	// By counts the tests or metrics behind the rollbacks (a rollback on
	// two tests counts for both); HoldBy those behind the holds.
	By, HoldBy map[string]int
}

// Result is one scenario's outcome.
type Result struct {
	Scenario Scenario
	Runs     int
	Nominal  Nominal
	Judges   [numJudges]JudgeResult
	// CanarydTests are the rollback and validity tests canaryd's judge ran.
	CanarydTests []string
	// CPU is the summed CPU time of the scenario's runs (their threads').
	CPU time.Duration
}

// Report is a whole benchmark.
type Report struct {
	Options Options
	Results []Result
	Elapsed time.Duration
	// CPU is the process's CPU time (user+system) during the runs: with
	// other work on the machine, CPU/Parallel estimates the wall time on
	// that many dedicated cores better than Elapsed does.
	CPU      time.Duration
	Parallel int
}

// judgeRun is one judge's outcome in one run, with its delays.
type judgeRun struct {
	outcome
	delayReq, delayS, exposed float64
}

type runOut struct {
	judges [numJudges]judgeRun
	tests  []string // canaryd's tests
	cpu    time.Duration
}

// ErrNoScenario is returned by Run when there is nothing to run.
var ErrNoScenario = errors.New("judgebench: no scenario to run")

// Run runs the scenarios and sums their outcomes.
func Run(scs []Scenario, opt Options) (*Report, error) {
	if len(scs) == 0 {
		return nil, ErrNoScenario
	}
	par := opt.Parallel
	if par <= 0 {
		par = runtime.GOMAXPROCS(0)
	}
	type prepared struct {
		sc    *Scenario
		oneS  int // runs with the 1-second judge
		spec  detector.Spec
		sess  *detector.Spec // canaryd with session units, when the scenario runs it
		errA  *detector.Spec // canaryd with (nearly) all of alpha on error_rate (Scenario.ErrorAlphaDiag)
		nom   Nominal
		seed  uint64
		runs  int
		outs  []runOut
		left  int
		start time.Time
	}
	preps := make([]*prepared, len(scs))
	for i := range scs {
		sc := &scs[i]
		specs, err := detector.ParseSpecs(sc.Name, []byte(specYAML(sc)))
		if err != nil {
			return nil, fmt.Errorf("scenario %q: %w", sc.Name, err)
		}
		var sess *detector.Spec
		if sc.SessionUnits {
			ss, err := detector.ParseSpecs(sc.Name, []byte(specYAML(sc)+"units: sessions\n"))
			if err != nil {
				return nil, fmt.Errorf("scenario %q (session units): %w", sc.Name, err)
			}
			sess = &ss[0]
		}
		var errA *detector.Spec
		if sc.ErrorAlphaDiag {
			ss, err := detector.ParseSpecs(sc.Name, []byte(specYAML(sc)+errorAlphaDiagYAML))
			if err != nil {
				return nil, fmt.Errorf("scenario %q (error_rate alpha): %w", sc.Name, err)
			}
			errA = &ss[0]
		}
		runs := sc.Runs
		if opt.Quick {
			runs = sc.QuickRuns
		}
		if opt.Runs > 0 {
			runs = opt.Runs
		}
		runs = max(runs, 1)
		oneS := sc.OneSecondRuns
		if oneS < 0 {
			oneS = runs
		}
		if opt.OneSecondRuns > 0 {
			oneS = max(oneS, opt.OneSecondRuns)
		}
		oneS = min(oneS, runs)
		h := fnv.New64a()
		h.Write([]byte(sc.Name))
		preps[i] = &prepared{sc: sc, spec: specs[0], sess: sess, errA: errA, nom: pilot(sc), seed: h.Sum64() ^ opt.Seed*0x9e3779b97f4a7c15, runs: runs, oneS: oneS, outs: make([]runOut, runs), left: runs}
	}

	start, cpu0 := time.Now(), processCPU()
	type job struct{ p, run int }
	jobs := make(chan job)
	var mu sync.Mutex // guards preps[*].left and .start, and Progress
	var wg sync.WaitGroup
	for range par {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Locked to its thread so that the thread's CPU time is the run's.
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			for jb := range jobs {
				p := preps[jb.p]
				c0 := threadCPU()
				out := runOne(p.sc, p.spec, p.sess, p.errA, p.nom, p.seed, jb.run, jb.run < p.oneS)
				out.cpu = time.Duration(threadCPU() - c0)
				p.outs[jb.run] = out
				mu.Lock()
				p.left--
				if p.left == 0 && opt.Progress != nil {
					fmt.Fprintf(opt.Progress, "%-60s %5d runs  %6.1fs\n", p.sc.Name, p.runs, time.Since(p.start).Seconds())
				}
				mu.Unlock()
			}
		}()
	}
	for i, p := range preps {
		mu.Lock()
		p.start = time.Now()
		mu.Unlock()
		for r := range p.runs {
			jobs <- job{i, r}
		}
	}
	close(jobs)
	wg.Wait()

	rep := &Report{Options: opt, Elapsed: time.Since(start), CPU: time.Duration(processCPU() - cpu0), Parallel: par}
	for _, p := range preps {
		rep.Results = append(rep.Results, summarise(p.sc, p.nom, p.outs))
	}
	return rep, nil
}

func summarise(sc *Scenario, nom Nominal, outs []runOut) Result {
	res := Result{Scenario: *sc, Runs: len(outs), Nominal: nom}
	for j := range numJudges {
		jr := &res.Judges[j]
		jr.Name = JudgeNames[j]
		jr.By, jr.HoldBy = map[string]int{}, map[string]int{}
		for _, o := range outs {
			r := o.judges[j]
			if !r.ran {
				continue
			}
			jr.Runs++
			jr.Exposed += r.exposed
			switch r.action {
			case schemas.ActionHold:
				jr.Holds++
				jr.HoldS = append(jr.HoldS, float64(r.at))
				for _, b := range strings.Split(r.by, "+") {
					jr.HoldBy[b]++
				}
			case schemas.ActionRollback:
				jr.Rollbacks++
				for _, b := range strings.Split(r.by, "+") {
					jr.By[b]++
				}
				switch {
				case sc.Kind == KindMargin || (sc.Kind == KindRegression && !math.IsNaN(r.delayS)):
					jr.Detections++
					if sc.Kind == KindRegression {
						jr.DelayReq = append(jr.DelayReq, r.delayReq)
						jr.DelayS = append(jr.DelayS, r.delayS)
					}
				default:
					jr.False++
				}
			case schemas.ActionPromote:
				jr.Promotes++
				if sc.Kind == KindPromote {
					jr.DelayReq = append(jr.DelayReq, r.delayReq)
					jr.DelayS = append(jr.DelayS, r.delayS)
				}
			}
		}
	}
	for _, o := range outs {
		res.CPU += o.cpu
		for _, t := range o.tests {
			if !slices.Contains(res.CanarydTests, t) {
				res.CanarydTests = append(res.CanarydTests, t)
			}
		}
	}
	return res
}

// winBuf holds one open window's aggregates per version and segment.
type winBuf struct {
	start int
	aggs  [2][numSegs]*window.Agg
}

func newAggs() (a [2][numSegs]*window.Agg) {
	for v := range a {
		for g := range a[v] {
			a[v][g] = window.NewAgg()
		}
	}
	return a
}

// closed returns the window as window.Partition would emit it, at event
// time now (its close), with the series of the versions in keep.
func closedOf(start, width, now int, aggs *[2][numSegs]*window.Agg, keep [2]bool, bigrams []string) window.Closed {
	c := window.Closed{
		Rollout: rolloutName, Start: epochNS + int64(start)*1e9, End: epochNS + int64(start+width)*1e9,
		Watermark: epochNS + int64(now)*1e9, ErrorTypes: errorTypeNames, Bigrams: bigrams[:len(bigrams):len(bigrams)],
	}
	for v := range aggs {
		if !keep[v] {
			continue
		}
		for _, g := range seriesOrder {
			if a := aggs[v][g]; a.Count > 0 {
				c.Series = append(c.Series, window.Series{Version: versionNames[v], Segment: segments[g], Agg: a})
			}
		}
	}
	return c
}

// minuteAcc gathers a minute's windows for the interval judges.
type minuteAcc struct {
	all    [2]*window.Agg // every request segment, merged
	llmN   [2]uint64
	tokens [2]float64
	sql    [2]uint64
	tools  [2]uint64
}

func newMinuteAcc() *minuteAcc {
	return &minuteAcc{all: [2]*window.Agg{window.NewAgg(), window.NewAgg()}}
}

func (m *minuteAcc) add(aggs *[2][numSegs]*window.Agg) {
	for v := range aggs {
		for g := range numReqSegs {
			if a := aggs[v][g]; a.Count > 0 {
				m.all[v].Merge(a)
			}
		}
		l := aggs[v][segLLM]
		m.llmN[v] += l.Count
		m.tokens[v] += l.InputTokens + l.OutputTokens
		m.sql[v] += aggs[v][segSQL].Count
		m.tools[v] += aggs[v][segSQL].Count + aggs[v][segSearch].Count + aggs[v][segLookup].Count
	}
}

func (m *minuteAcc) stats() *minuteStats {
	ms := &minuteStats{}
	for v := range 2 {
		a := m.all[v]
		ms.val[mErr][v] = ratio(a.Errors, a.Count)
		ms.val[mP95][v] = a.Quantile(0.95)
		ms.val[mP99][v] = a.Quantile(0.99)
		ms.val[mTokens][v] = math.NaN()
		if m.llmN[v] > 0 {
			ms.val[mTokens][v] = m.tokens[v] / float64(m.llmN[v])
		}
		ms.val[mSQLShare][v] = ratio(m.sql[v], m.tools[v])
	}
	return ms
}

func ratio(x, n uint64) float64 {
	if n == 0 {
		return math.NaN()
	}
	return float64(x) / float64(n)
}

// runOne simulates one run of a scenario and lets every judge look at it.
func runOne(sc *Scenario, spec detector.Spec, sess, errA *detector.Spec, nom Nominal, seed uint64, run int, oneSec bool) runOut {
	rng := rand.New(rand.NewPCG(seed, uint64(run)))
	s := newSim(sc, rng)

	cd := newCanarydJudge(spec)
	if len(sc.Ramp) > 0 {
		cd.declare(sc.Ramp[0], 0)
	}
	var cd1, cdS, cdE *canarydJudge
	if oneSec {
		cd1 = newCanarydJudge(spec)
	}
	if sess != nil {
		cdS = newCanarydJudge(*sess)
	}
	if errA != nil {
		cdE = newCanarydJudge(*errA)
	}
	var or *oracleJudge
	if r := sc.Regression; sc.Kind == KindRegression && r.ErrMult > 0 && r.RampS == 0 &&
		r == (Regression{OnsetMin: r.OnsetMin, OnsetMax: r.OnsetMax, ErrMult: r.ErrMult}) {
		or = newOracleJudge(s.onset, r.ErrMult, reqProfiles[segLLM].errP, 0.05)
	}
	var ky *kayentaJudge
	var th []*thresholdJudge
	if !sc.CanarydOnly {
		ky = newKayentaJudge()
		t3 := newThresholdJudges(nom)
		th = t3[:]
	}
	allDecided := func() bool {
		if !cd.out.decided() || (cd1 != nil && !cd1.out.decided()) || (cdS != nil && !cdS.out.decided()) || (cdE != nil && !cdE.out.decided()) || (or != nil && !or.out.decided()) {
			return false
		}
		for i := range ky.variants() {
			if !ky.vars[i].out.decided() {
				return false
			}
		}
		for _, t := range th {
			if !t.out.decided() {
				return false
			}
		}
		return true
	}

	var open [2]*winBuf
	var discard *[2][numSegs]*window.Agg
	type secBuf struct {
		aggs  [2][numSegs]*window.Agg
		keep1 [2]bool
	}
	var secQ [latenessS + 2]*secBuf
	acc := newMinuteAcc()

	end := sc.Horizon
	for t := 0; t < sc.Horizon; t++ {
		ws := t - t%windowS
		slot := (ws / windowS) % 2
		wb := open[slot]
		if wb == nil || wb.start != ws {
			wb = &winBuf{start: ws, aggs: newAggs()}
			open[slot] = wb
		}
		var sink [2][numSegs]*window.Agg
		var keep10 [2]bool
		var sb *secBuf
		if oneSec {
			sb = &secBuf{aggs: newAggs()}
		}
		for v := range 2 {
			d := s.batchDelay()
			keep10[v] = float64(t+1)+d <= float64(ws+windowS+latenessS)
			s.lost[v] = !keep10[v]
			switch {
			case oneSec:
				sink[v] = sb.aggs[v]
				sb.keep1[v] = d <= latenessS
			case keep10[v]:
				sink[v] = wb.aggs[v]
			default:
				if discard == nil {
					a := newAggs()
					discard = &a
				}
				sink[v] = discard[v]
			}
		}
		s.second(t, &sink)
		if oneSec {
			for v := range 2 {
				if keep10[v] {
					for g := range numSegs {
						if a := sb.aggs[v][g]; a.Count > 0 {
							wb.aggs[v][g].Merge(a)
						}
					}
				}
			}
			secQ[t%len(secQ)] = sb
		}

		now := t + 1
		if len(sc.Ramp) > 0 && now%sc.RampStepS == 0 && now/sc.RampStepS < len(sc.Ramp) {
			// The router sends the next step's weight from the next
			// second on.
			s.share = sc.ActualShare / float64(sc.Share) * float64(sc.Ramp[now/sc.RampStepS])
		}
		if cd1 != nil {
			if st := now - 1 - latenessS; st >= 0 {
				b := secQ[st%len(secQ)]
				cd1.look(closedOf(st, 1, now, &b.aggs, b.keep1, s.bigrams), now)
			}
		}
		if e := now - latenessS; e > 0 && e%windowS == 0 {
			w := open[((e-windowS)/windowS)%2]
			if !cd.out.decided() || (cdS != nil && !cdS.out.decided()) || (cdE != nil && !cdE.out.decided()) || (or != nil && !or.out.decided()) {
				cl := closedOf(w.start, windowS, now, &w.aggs, [2]bool{true, true}, s.bigrams)
				cd.look(cl, now)
				if k := e / max(sc.RampStepS, 1); len(sc.Ramp) > 0 && e%sc.RampStepS == 0 && k < len(sc.Ramp) && !cd.out.decided() {
					// The controller declares the weight the router sends
					// from e on, once the windows before e are in.
					cd.declare(sc.Ramp[k], e)
				}
				if cdS != nil {
					cdS.look(cl, now)
				}
				if cdE != nil {
					cdE.look(cl, now)
				}
				if or != nil {
					or.look(w.start, windowS, cl, now)
				}
			}
			acc.add(&w.aggs)
			if e%minuteS == 0 {
				ms := acc.stats()
				if ky != nil {
					ky.minute(e/minuteS-1, ms, now)
				}
				for _, tj := range th {
					tj.minute(ms, now)
				}
				acc = newMinuteAcc()
			}
		}
		if allDecided() {
			end = now
			break
		}
	}

	out := runOut{tests: cd.tests}
	outs := [numJudges]*outcome{jCanaryd: &cd.out}
	if cd1 != nil {
		outs[jCanaryd1s] = &cd1.out
	}
	if cdS != nil {
		outs[jCanarydSess] = &cdS.out
	}
	if cdE != nil {
		outs[jCanarydErrA] = &cdE.out
	}
	if or != nil {
		outs[jOracle] = &or.out
	}
	for i := range ky.variants() {
		outs[ky.vars[i].judge] = &ky.vars[i].out
	}
	for _, t := range th {
		outs[t.judge] = &t.out
	}
	served := s.served // served[t]: canary requests before second t
	at := func(t int) float64 { return float64(served[min(t, len(served)-1)]) }
	onset := s.onset
	for j, o := range outs {
		if o == nil {
			continue
		}
		r := judgeRun{outcome: *o, delayReq: math.NaN(), delayS: math.NaN()}
		interval := j != jCanaryd && j != jCanaryd1s && j != jCanarydSess && j != jCanarydErrA && j != jOracle
		if (sc.Kind == KindMargin || sc.Kind == KindPromote) && interval && !o.decided() {
			// Interval judges promote when their analysis ends clean.
			r.action, r.at = schemas.ActionPromote, sc.Horizon
		}
		switch sc.Kind {
		case KindRegression:
			stop := end
			if r.action == schemas.ActionRollback {
				stop = r.at
				if r.at >= onset {
					r.delayS = float64(r.at - onset)
					r.delayReq = at(r.at) - at(onset)
				}
			}
			r.exposed = max(0, at(stop)-at(onset))
		case KindPromote:
			// Time to promote is canaryd's alone: the interval judges
			// promote at the end of the horizon by construction.
			if r.action == schemas.ActionPromote && !interval {
				r.delayS, r.delayReq = float64(r.at), at(r.at)
			}
		}
		out.judges[j] = r
	}
	return out
}

// pilot estimates the baseline's usual values (the figures fixed
// thresholds are set from) on 30 minutes of the scenario's stream without
// canary, regression or nuisance.
func pilot(sc *Scenario) Nominal {
	p := *sc
	p.ActualShare = 0
	p.Regression, p.Incident, p.Drift = Regression{}, Incident{}, Drift{}
	p.Horizon = 1800
	s := newSim(&p, rand.New(rand.NewPCG(1, 1)))
	aggs := newAggs()
	for t := range p.Horizon {
		s.second(t, &aggs)
	}
	acc := newMinuteAcc()
	acc.add(&aggs)
	ms := acc.stats()
	return Nominal{ErrorRate: ms.val[mErr][vBase], P95: ms.val[mP95][vBase], P99: ms.val[mP99][vBase], Tokens: ms.val[mTokens][vBase]}
}

// quantile returns the q-quantile of v (nearest rank), NaN when empty.
func quantile(v []float64, q float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	s := slices.Clone(v)
	slices.Sort(s)
	i := int(math.Ceil(q*float64(len(s)))) - 1
	return s[min(max(i, 0), len(s)-1)]
}

// Wilson returns the Wilson score 95% interval of k successes in n trials.
func Wilson(k, n int) (lo, hi float64) {
	if n == 0 {
		return 0, 1
	}
	const z = 1.959963984540054
	p, nf := float64(k)/float64(n), float64(n)
	den := 1 + z*z/nf
	c := (p + z*z/(2*nf)) / den
	h := z * math.Sqrt(p*(1-p)/nf+z*z/(4*nf*nf)) / den
	return max(0, c-h), min(1, c+h)
}
