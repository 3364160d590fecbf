package judgebench

import (
	"fmt"
	"io"
	"maps"
	"math"
	"runtime"
	"slices"
	"strings"
	"time"
)

// Markdown writes the report: how the streams and judges are set up, the
// issue's targets with what was measured, and one table per scenario.
func (r *Report) Markdown(w io.Writer) {
	mode := "full"
	if r.Options.Quick {
		mode = "quick"
	}
	if r.Options.Runs > 0 {
		mode = fmt.Sprintf("%d runs per scenario", r.Options.Runs)
	}
	fmt.Fprintf(w, "# canaryd judge benchmark\n\n")
	fmt.Fprintf(w, "%s · seed %d · %d scenarios · %d workers · wall %s · CPU %s (≈ %s on %d dedicated cores) · %s/%s\n\n",
		mode, r.Options.Seed, len(r.Results), r.Parallel, r.Elapsed.Round(time.Second), r.CPU.Round(time.Second),
		(r.CPU / time.Duration(r.Parallel)).Round(time.Second), r.Parallel, runtime.GOOS, runtime.GOARCH)
	io.WriteString(w, setupText)
	var tests []string
	for _, res := range r.Results {
		for _, t := range res.CanarydTests {
			if !slices.Contains(tests, t) {
				tests = append(tests, t)
			}
		}
	}
	fmt.Fprintf(w, "canaryd's rollback and validity tests in these runs: %s.\n\n", strings.Join(tests, ", "))
	r.targets(w)
	for i := range r.Results {
		r.Results[i].markdown(w)
	}
	io.WriteString(w, columnsText)
}

const setupText = `Streams: simulated agent sessions (no Kafka). Sessions arrive as a Poisson process at the rate that gives
200 requests/s on average, swinging ±40% over a day (random phase); each is LLM, tool, LLM, …, LLM
(2·steps+1 requests, 2.5 tool steps on average, a request every ~2 s), sticky to one version. Requests of a
session share a frailty (error odds, log-sd 0.7) and a latency factor (log-sd 0.25). Baseline: 1% errors per
request; lognormal latencies per segment (llm 900 ms, run_sql 80 ms, search_docs 120 ms medians); tokens on
LLM calls. Each second of each version is one batch: 10% arrive 1–4 s late (out of order, within lateness),
1% arrive 5–30 s late and are dropped when their window has closed — the same data for every judge.

Judges, side by side on the same streams:
- canaryd: detector.Judge fed window.Closed values built from the simulated seconds (10 s windows closed 5 s
  after their end, as window.Partition does), deciding after every window ("looks every window"); the
  1 s variant decides after every second. Spec: alpha 0.05, one step at the configured weight with a
  1000 h minimum (so it only rolls back or continues), or, for the margin and promotion scenarios, one step
  of ≥10 min and ≥2,000 canary requests then 100%. The spec is parsed from YAML, so tests that the detector
  enables by default are included as they are added. Its conditional rollback e-values (errors, latency
  exceedances, session rates, incidents) mix over the regression's size (odds ×1.22–×6) and over when it
  began (a new start point every 8 units of Fisher information); the latency ones are tempered (LR^0.75)
  for requests correlated within a session. The "units: sessions" row runs the same judge with the spec's
  units: sessions (error rate and latency on session units, see the README).
- Oracle SPRT (error step regressions only; a yardstick, not a judge anyone can run): Wald's test of the
  canary's errors given each window's totals at the true odds ratio, from the window that holds the true
  onset, with all of alpha, on canaryd's 10 s windows. Its delay is the floor for any test of those windows;
  canaryd's delay above it is the price of not knowing the onset and the size and of sharing alpha with
  the other tests.
- Kayenta-like: per-minute values of error rate, p95, p99, tokens per LLM call and run_sql's share of tool
  calls, canary vs baseline since the start; Mann-Whitney 98% interval (Kayenta's normal approximation and
  root finding), High when its lower end > 0.25·|shift estimate| and the canary's mean ≥ the baseline's;
  every metric critical (one failure rolls back); judged every 1 or every 5 minutes, from the start or only
  once each arm has ≥10 points.
- Thresholds (Argo Rollouts / Flagger style): per-minute canary error rate, p95, p99 (and tokens per LLM
  call for the ×k rules) against a fixed limit; 3 consecutive failing minutes roll back. Limits: at the
  SLO (2.5% errors, 1.25× the baseline's usual p95 and p99), or at 1.5× and 2× the baseline's usual values
  (measured on a 30 min pilot without canary).

`

const columnsText = `
Columns: *false rollback* — A/A and promotion scenarios: share of runs rolled back, with its Wilson 95%
interval; regressions: share rolled back before the onset. *detected* — regressions: share rolled back after
the onset within the horizon; at the margin: share rolled back. *delay* — from the onset to the rollback, in
canary requests served and in seconds, median / p90 over detected runs (promotion: from the start to the
promote). *exposed* — mean canary requests served after the onset until the rollback or the horizon, over
all runs (undetected runs count in full). *promote* — at the margin: share promoted (false promotes; the
interval judges promote when the horizon ends clean); promotion: share promoted (canaryd when its step spec
is satisfied, the interval judges at the end of the horizon when clean). *hold* — share of runs
that ended in a hold (canaryd only: srm = sample ratio mismatch, budget = a step's time budget). *rolled back
by* — the tests or metrics behind the rollbacks (a rollback on two tests counts for both).
`

// targets writes the targets with what was measured.
func (r *Report) targets(w io.Writer) {
	fmt.Fprintf(w, "## Targets\n\n| target | measured | |\n|---|---|---|\n")
	for _, res := range r.Results {
		sc := &res.Scenario
		cd := &res.Judges[jCanaryd]
		switch {
		case sc.Kind == KindAA && sc.SRMOnly:
			// Nothing can roll back: the SRM rows below.
		case sc.Kind == KindAA:
			lo, hi := Wilson(cd.Rollbacks, cd.Runs)
			ok := hi <= 0.05
			mark := pass(ok)
			if sc.AssumptionBroken && !ok {
				mark = "✗ (assumption broken, expected)"
			}
			fmt.Fprintf(w, "| A/A false rollback, upper 95%% ≤ 0.05: %s | %d/%d = %.2f%% [%.2f%%, %.2f%%] | %s |\n",
				sc.Name, cd.Rollbacks, cd.Runs, 100*frac(cd.Rollbacks, cd.Runs), 100*lo, 100*hi, mark)
			if cs := &res.Judges[jCanarydSess]; cs.Runs > 0 {
				lo, hi := Wilson(cs.Rollbacks, cs.Runs)
				fmt.Fprintf(w, "| A/A false rollback, upper 95%% ≤ 0.05: %s, canaryd with units: sessions | %d/%d = %.2f%% [%.2f%%, %.2f%%] | %s |\n",
					sc.Name, cs.Rollbacks, cs.Runs, 100*frac(cs.Rollbacks, cs.Runs), 100*lo, 100*hi, pass(hi <= 0.05))
			}
		case sc.TargetMedianReq > 0:
			med := quantile(cd.DelayReq, 0.5)
			others := []string{}
			for _, j := range []int{jCanarydErrA, jOracle, jKayenta1Min, jKayenta5Min, jThr15, jThr20} {
				o := &res.Judges[j]
				if o.Runs == 0 {
					continue
				}
				others = append(others, fmt.Sprintf("%s %s", shortName(j), fmtNum(quantile(o.DelayReq, 0.5))))
			}
			fmt.Fprintf(w, "| %s: canaryd median ≤ %s canary requests | %s (detected %.0f%%; %s) | %s |\n",
				sc.Name, fmtNum(sc.TargetMedianReq), fmtNum(med), 100*frac(cd.Detections, cd.Runs), strings.Join(others, ", "),
				pass(med <= sc.TargetMedianReq && cd.Detections*2 > cd.Runs))
		case sc.TargetMedianS > 0:
			med := quantile(cd.DelayS, 0.5)
			fmt.Fprintf(w, "| %s: canaryd median ≤ %s s | %s s (detected %.0f%%) | %s |\n",
				sc.Name, fmtNum(sc.TargetMedianS), fmtNum(med), 100*frac(cd.Detections, cd.Runs),
				pass(med <= sc.TargetMedianS && cd.Detections*2 > cd.Runs))
		case sc.TargetDetected > 0:
			d := frac(cd.Detections, cd.Runs)
			fmt.Fprintf(w, "| %s: canaryd detects ≥ %.0f%% within %s s | %.0f%% (%d/%d; median %s s) | %s |\n",
				sc.Name, 100*sc.TargetDetected, fmtNum(float64(sc.Horizon)), 100*d, cd.Detections, cd.Runs,
				fmtNum(quantile(cd.DelayS, 0.5)), pass(d >= sc.TargetDetected))
		}
	}
	for _, res := range r.Results {
		sc := &res.Scenario
		cd := &res.Judges[jCanaryd]
		lo, hi := Wilson(cd.Holds, cd.Runs)
		by := ""
		if cd.Holds > 0 {
			by = "; " + byText(cd.HoldBy)
		}
		if sc.TargetMaxHold > 0 && len(cd.HoldS) > 0 {
			at := slices.Sorted(slices.Values(cd.HoldS))
			if len(at) > 12 {
				at = at[:12]
			}
			var t []string
			for _, v := range at {
				t = append(t, fmtNum(v))
			}
			by += "; at " + strings.Join(t, ", ") + " s"
		}
		if sc.TargetMaxHold > 0 {
			// The rate against the target, with its interval: the runs
			// a benchmark can afford cannot put the upper bound of a
			// 1.5% rate below 2%.
			fmt.Fprintf(w, "| A/A held (experiment invalid) ≤ %.0f%%: %s | %d/%d = %.2f%% [%.2f%%, %.2f%%]%s | %s |\n",
				100*sc.TargetMaxHold, sc.Name, cd.Holds, cd.Runs, 100*frac(cd.Holds, cd.Runs), 100*lo, 100*hi, by, passUpper(frac(cd.Holds, cd.Runs), hi, sc.TargetMaxHold))
		}
		if sc.TargetHeld > 0 {
			fmt.Fprintf(w, "| misrouted split held in ≥ %.0f%% of runs: %s | %d/%d = %.1f%% [%.1f%%, %.1f%%]%s; time to hold median %s s, p90 %s s | %s |\n",
				100*sc.TargetHeld, sc.Name, cd.Holds, cd.Runs, 100*frac(cd.Holds, cd.Runs), 100*lo, 100*hi, by,
				fmtNum(quantile(cd.HoldS, 0.5)), fmtNum(quantile(cd.HoldS, 0.9)), pass(frac(cd.Holds, cd.Runs) >= sc.TargetHeld))
		}
	}
	if !r.Options.Quick && r.Options.Runs == 0 && len(r.Results) == len(Scenarios()) {
		est := r.CPU / time.Duration(r.Parallel)
		fmt.Fprintf(w, "| full benchmark under 10 minutes on 2 cores | wall %s on %d workers; CPU %s ≈ %s on %d dedicated cores | %s |\n",
			r.Elapsed.Round(time.Second), r.Parallel, r.CPU.Round(time.Second), est.Round(time.Second), r.Parallel, pass(r.Parallel <= 2 && est < 10*time.Minute))
	}
	fmt.Fprintln(w)
}

// passUpper marks a rate against a maximum: ✓ when its upper 95% bound is
// within it, "✓ (rate; upper bound above)" when only the rate is, else ✗.
func passUpper(rate, hi, target float64) string {
	switch {
	case hi <= target:
		return "✓"
	case rate <= target:
		return "✓ (rate; upper 95% above)"
	}
	return "✗"
}

func pass(ok bool) string {
	if ok {
		return "✓"
	}
	return "✗"
}

func shortName(j int) string {
	switch j {
	case jKayenta1:
		return "Kayenta 1m"
	case jKayenta1Min:
		return "Kayenta 1m≥10"
	case jKayenta5:
		return "Kayenta 5m"
	case jKayenta5Min:
		return "Kayenta 5m≥10"
	case jThrSLO:
		return "thr SLO"
	case jThr15:
		return "thr 1.5×"
	case jThr20:
		return "thr 2×"
	case jOracle:
		return "oracle SPRT"
	case jCanarydErrA:
		return "canaryd with error_rate at 98% of alpha"
	}
	return JudgeNames[j]
}

func (res *Result) markdown(w io.Writer) {
	sc := &res.Scenario
	fmt.Fprintf(w, "## %s\n\n", sc.Name)
	fmt.Fprintf(w, "%s · %d runs · horizon %s · canary %d%% configured", sc.Kind, res.Runs, time.Duration(sc.Horizon)*time.Second, sc.Share)
	if sc.ActualShare*100 != float64(sc.Share) {
		fmt.Fprintf(w, ", %.0f%% routed", 100*sc.ActualShare)
	}
	if sc.Kind == KindRegression {
		if r := sc.Regression; r.RampS > 0 {
			fmt.Fprintf(w, " · onset in [%s, %s], ramp %s", secs(r.OnsetMin), secs(r.OnsetMax), secs(r.RampS))
		} else {
			fmt.Fprintf(w, " · step at an onset in [%s, %s]", secs(r.OnsetMin), secs(r.OnsetMax))
		}
	}
	fmt.Fprintf(w, " · CPU %s\n\n", res.CPU.Round(100*time.Millisecond))
	n := res.Nominal
	fmt.Fprintf(w, "Baseline's usual values (30 min pilot): %.2f%% errors, p95 %.0f ms, p99 %.0f ms, %.0f tokens per LLM call.\n\n",
		100*n.ErrorRate, n.P95, n.P99, n.Tokens)
	if sc.Note != "" {
		fmt.Fprintf(w, "%s\n\n", sc.Note)
	}
	if sc.Needs != "" {
		var have []string
		for _, t := range sc.NeedsTests {
			if slices.Contains(res.CanarydTests, t) {
				have = append(have, t)
			}
		}
		if len(have) == 0 {
			fmt.Fprintf(w, "canaryd: **no test yet** (%s) — until the detector has one, canaryd cannot see this; "+
				"its row measures only side effects.\n\n", sc.Needs)
		} else {
			fmt.Fprintf(w, "canaryd tests for this: %s.\n\n", strings.Join(have, ", "))
		}
	}
	fmt.Fprintf(w, "| judge | false rollback [95%% CI] | detected | delay, canary req (med / p90) | delay, s (med / p90) | exposed | promote [95%% CI] | hold | rolled back by |\n")
	fmt.Fprintf(w, "|---|---|---|---|---|---|---|---|---|\n")
	for j := range numJudges {
		jr := &res.Judges[j]
		if jr.Runs == 0 {
			continue
		}
		name := jr.Name
		if jr.Runs != res.Runs {
			name += fmt.Sprintf(" (%d runs)", jr.Runs)
		}
		fr, det, dReq, dS, exp, prom, hold := "—", "—", "—", "—", "—", "—", "—"
		switch sc.Kind {
		case KindAA, KindPromote:
			lo, hi := Wilson(jr.False, jr.Runs)
			fr = fmt.Sprintf("%.1f%% [%.1f, %.1f]", 100*frac(jr.False, jr.Runs), 100*lo, 100*hi)
		case KindRegression:
			fr = fmt.Sprintf("%.1f%%", 100*frac(jr.False, jr.Runs))
			det = fmt.Sprintf("%.0f%%", 100*frac(jr.Detections, jr.Runs))
			exp = fmtNum(jr.Exposed / float64(jr.Runs))
		case KindMargin:
			det = fmt.Sprintf("%.0f%%", 100*frac(jr.Detections, jr.Runs))
		}
		if sc.Kind == KindRegression || sc.Kind == KindPromote {
			dReq = fmt.Sprintf("%s / %s", fmtNum(quantile(jr.DelayReq, 0.5)), fmtNum(quantile(jr.DelayReq, 0.9)))
			dS = fmt.Sprintf("%s / %s", fmtNum(quantile(jr.DelayS, 0.5)), fmtNum(quantile(jr.DelayS, 0.9)))
		}
		if sc.Kind == KindMargin || sc.Kind == KindPromote {
			lo, hi := Wilson(jr.Promotes, jr.Runs)
			prom = fmt.Sprintf("%.1f%% [%.1f, %.1f]", 100*frac(jr.Promotes, jr.Runs), 100*lo, 100*hi)
		}
		if j == jCanaryd || j == jCanaryd1s || j == jCanarydSess || j == jCanarydErrA {
			hold = fmt.Sprintf("%.1f%%", 100*frac(jr.Holds, jr.Runs))
			if jr.Holds > 0 {
				hold += " (" + byText(jr.HoldBy) + ")"
			}
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", name, fr, det, dReq, dS, exp, prom, hold, byText(jr.By))
	}
	fmt.Fprintln(w)
}

func byText(by map[string]int) string {
	keys := slices.Collect(maps.Keys(by))
	slices.SortFunc(keys, func(a, b string) int {
		if by[a] != by[b] {
			return by[b] - by[a]
		}
		return strings.Compare(a, b)
	})
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %d", k, by[k]))
	}
	return strings.Join(parts, ", ")
}

func frac(k, n int) float64 {
	if n == 0 {
		return math.NaN()
	}
	return float64(k) / float64(n)
}

func fmtNum(v float64) string {
	switch {
	case math.IsNaN(v):
		return "—"
	case v >= 10_000:
		return fmt.Sprintf("%.1fk", v/1000)
	case v >= 1000:
		return fmt.Sprintf("%.0f", math.Round(v))
	case v == math.Trunc(v):
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.1f", v)
}

func secs(s int) string { return (time.Duration(s) * time.Second).String() }
