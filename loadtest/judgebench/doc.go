// Package judgebench is the detector benchmark (issue 4): canaryd's suite of
// sequential tests, a Kayenta-like judge and Argo Rollouts / Flagger style
// threshold rules, side by side on the same simulated canary streams, with a
// markdown table of false rollbacks, detections, delays, exposure, false
// promotes and holds. No Kafka: streams are simulated at one-second
// granularity and handed to the judges as the window package would.
//
//	go run ./cmd/judgebench            # full benchmark (make bench-detector)
//	go run ./cmd/judgebench -quick     # each scenario's smaller run count
//	go test ./loadtest/judgebench/     # small version with assertions (make test)
//
// # Streams (stream.go)
//
// Agent sessions arrive as a Poisson process whose rate gives Scenario.Rate
// requests per second (200 by default), swinging ±40% over a day from a
// random phase. The router assigns a session to the canary with probability
// Scenario.ActualShare, and the session keeps its version. A session is an
// agent loop: LLM call, tool call, LLM call, …, final LLM call (2·steps+1
// requests, steps 1 + geometric, 2.5 on average), one request every 1 +
// geometric seconds (2 on average). Requests of one session share a frailty
// that multiplies their error probability (lognormal, mean 1) and a factor
// that multiplies their latency (Clustering). Segments: llm/gpt-4o-mini,
// tool/run_sql, tool/search_docs (requests), agent/support-agent (one
// session summary per session with tool_calls, tokens, cost, outcome
// success, score, hallucination flag and the session's request totals) and other/user_complaint (a count
// with no denominator, declared as an incident in canaryd's spec). Errors are 1% per request in the baseline, with
// typed error_types; latencies are lognormal per segment; LLM calls carry
// input/output tokens, cost and context use.
//
// Every request carries its session's id, and a session counts once in
// Agg.NewSessions — on the series of its first event that reaches a window,
// as window.Partition counts sessions first seen (the SRM check's units).
// Low-traffic scenarios (issue 16): 2 requests/s over 6 hours, with and
// without session summaries (NoSummaries: requests only), through a
// 5→25→50% ramp that the benchmark declares as a controller would (Ramp:
// canaryd in mode: judge), and a 6%-routed-vs-5%-configured split; they
// run canaryd alone (CanarydOnly) with its rollback tests disabled
// (SRMOnly: a false rollback would end a run before the SRM check could
// hold it) and have hold targets (TargetMaxHold, TargetHeld).
//
// Every event goes through window.Agg.Add, and tool-call bigrams through
// Agg.AddBigram with ids assigned the way window.Partition assigns them, so
// whatever the window package aggregates — and whatever test the detector
// builds on it — sees the same data it would see from Kafka. New detector
// tests light up in the table without changes here; specs are parsed from
// YAML so that their defaults apply.
//
// Each second of each version is one batch (a producer flush). A batch
// normally arrives within a second; 10% arrive 1–4 s late (out of order,
// within the allowed lateness) and 1% arrive 5–30 s late and are dropped
// when their window has already closed (window.Partition's rule: a window
// [s, s+W) closes at s+W+lateness). Every judge sees the same surviving data.
//
// Nuisances (Scenario): a shared incident (both versions' errors ×4 for 10
// minutes), a shared drift (errors and latency growing over the hour), a
// router that sends 6% when 5% is configured, strong session clustering.
// Regressions (Regression) start at a random onset as a step or a ramp:
// errors ×k, latency ×k, a latency tail (+4 s on 2% of requests), tokens
// ×k, a tool-mix shift, more user complaints.
//
// # Judges (judges.go, mannwhitney.go)
//
//   - canaryd: detector.Judge fed window.Closed values built from the
//     simulated seconds — 10 s windows closed 5 s after their end — and
//     asked for a verdict (Decide at the window's watermark) after every
//     window; optionally also on 1 s windows. Rollback scenarios use a spec
//     with one long step (it can only roll back, hold or continue); margin
//     and promotion scenarios a step of ≥10 min and ≥2,000 canary requests
//     followed by 100%. Its conditional rollback e-values mix over when the
//     regression began (detector.Conditional.ERise), so a regression after
//     a clean period is not slowed by the clean data before it.
//   - canaryd, units: sessions (scenarios with SessionUnits): the same judge
//     with the spec's units: sessions, where error_rate and the latency
//     tests count sessions (the summaries carry their requests' totals, as
//     canaryd's session assembly sets them) instead of requests.
//   - oracle SPRT (error step regressions only; oracle.go): Wald's test at the
//     true odds ratio from the window that holds the true onset, with all
//     of alpha — the floor for any test of the same windows, not a judge
//     anyone can run.
//   - Kayenta-like: Netflix's ACA judge with its Mann-Whitney classifier on
//     per-minute values since the start (error rate, p95, p99, tokens per
//     LLM call, run_sql's share of tool calls): Kayenta's normal-approximation
//     98% interval for the shift found by root finding (clamped to the range
//     of differences, as Kayenta does), High when its lower end exceeds
//     0.25·|estimate| and the canary's mean is at least the baseline's.
//     Every metric is critical. Judged every 1 or every 5 minutes, from the
//     first minute or only once each arm has 10 values.
//   - thresholds: per-minute canary values against fixed limits, rollback
//     after 3 consecutive failing minutes; limits at the SLO or at 1.5× and
//     2× the baseline's usual values (measured on a 30-minute pilot).
//
// # Measures (bench.go, table.go)
//
// Per judge and scenario: the false-rollback rate with its Wilson 95%
// interval (A/A runs; in regressions, rollbacks before the onset), the
// detection rate within the horizon, the delay from the onset to the
// rollback in canary requests served and in seconds (median and p90), the
// canary requests exposed to the regression before rollback (mean over all
// runs, undetected runs counting in full), the false-promote rate when the
// true effect equals the margin, and the hold rate with its reasons. A
// run's seed derives from Options.Seed, the scenario's name and the run's
// index, so results do not depend on parallelism.
//
// Cost: the judges dominate. CPU time is measured per run on its thread and
// per process, so the table states the time the benchmark would take on
// dedicated cores even when the machine is shared.
package judgebench
