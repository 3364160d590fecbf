package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/inferensys/canaryd/detector"
	"github.com/inferensys/canaryd/internal/daemon"
	"github.com/inferensys/canaryd/loadtest"
	"github.com/inferensys/canaryd/schemas"
	"github.com/inferensys/canaryd/window"
)

// demoSpecs are the demo's two rollouts. The margins and step durations are
// set for a two-minute demo; see deploy/rollouts/ for production-like specs.
const demoSpecs = `
rollout: support-agent
baseline: v1.4.0
canary: v1.5.0
alpha: 0.05
settle: 12s
steps:
  - {weight: 10, min_duration: 20s, min_canary_events: 500}
  - {weight: 25, min_duration: 15s, min_canary_events: 500}
  - {weight: 50, min_duration: 15s, min_canary_events: 500}
  - {weight: 100}
metrics:
  error_rate: {margin: 2.0}
  latency_p95: {margin: 0.10}
  # The simulated LLM timeouts last 30 s, longer than these steps' settle
  # time: errors of sessions begun before a weight change would still skew
  # the error-type mix for 30 s. Production specs keep the default 60 s.
  error_types: {disabled: true}
slo: {max_error_rate: 0.05}
---
rollout: billing-agent
baseline: v2.0.3
canary: v2.1.0
alpha: 0.05
settle: 12s
steps:
  - {weight: 10, min_duration: 20s, min_canary_events: 500}
  - {weight: 25, min_duration: 15s, min_canary_events: 500}
  - {weight: 50, min_duration: 15s, min_canary_events: 500}
  - {weight: 100}
metrics:
  error_rate: {margin: 2.0}
  latency_p95: {margin: 0.10}
  # The simulated LLM timeouts last 30 s, longer than these steps' settle
  # time: errors of sessions begun before a weight change would still skew
  # the error-type mix for 30 s. Production specs keep the default 60 s.
  error_types: {disabled: true}
slo: {max_error_rate: 0.05}
`

type demoOpts struct {
	timeout  time.Duration
	rate     float64
	httpAddr string
	verbose  bool
	seed     int64
	fault    string
	format   string
}

// demoFault is what is wrong with the bad canary.
type demoFault struct {
	describe string
	apply    func(*loadtest.Profile)
}

var demoFaults = map[string]demoFault{
	"errors": {"errors ×3, tool calls 30% slower", func(p *loadtest.Profile) {
		p.ErrorRateMult = 3
		p.ToolLatencyMult = 1.3
	}},
	"tool-sequence": {"a new prompt that leans on run_sql and rarely searches the docs", func(p *loadtest.Profile) {
		for i := range p.Tools {
			switch p.Tools[i].Name {
			case "search_docs":
				p.Tools[i].Weight = 1
			case "run_sql":
				p.Tools[i].Weight = 6
			}
		}
	}},
	"cost": {"a longer prompt: +25% tokens, so +25% cost", func(p *loadtest.Profile) {
		p.TokensMult = 1.25
	}},
}

func demoCmd(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `canaryd demo — the whole loop in one process, no set-up

Starts an embedded Kafka broker (kfake), canaryd, and a simulated fleet of AI
agents that follows canaryd's commands on the control topic. Two rollouts run
side by side:

  support-agent v1.4.0 → v1.5.0   a good canary: same behaviour as its baseline;
                                  canaryd ramps it 10% → 25% → 50% and promotes it
  billing-agent v2.0.3 → v2.1.0   a bad canary: by default error rate 1% → 3% and
                                  tool calls 30% slower (--fault errors); or a shifted
                                  tool-call sequence (--fault tool-sequence); or +25%
                                  tokens and cost (--fault cost); canaryd rolls it back

The terminal shows each rollout's progress live, and every decision with its
evidence in one line. The demo exits 0 when both rollouts reached the expected
verdict, 1 otherwise (so it doubles as a smoke test).

Flags:
`)
		fs.PrintDefaults()
	}
	var o demoOpts
	fs.DurationVar(&o.timeout, "timeout", 110*time.Second, "give up after this long")
	fs.Float64Var(&o.rate, "rate", 300, "agent sessions per second per rollout (≈5.5 requests each)")
	fs.StringVar(&o.httpAddr, "http", "127.0.0.1:0", "HTTP address of canaryd's API and /metrics (empty: none)")
	fs.BoolVar(&o.verbose, "v", false, "log canaryd's and the fleet's internals to stderr")
	fs.Int64Var(&o.seed, "seed", 1, "random seed of the simulated fleet")
	fs.StringVar(&o.fault, "fault", "errors", "what is wrong with the bad canary: errors, tool-sequence or cost")
	fs.StringVar(&o.format, "format", "json", "what the fleet writes: json (canaryd's events) or otlp (OTLP protobuf spans, as the OpenTelemetry Collector's Kafka exporter writes them)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if _, ok := demoFaults[o.fault]; !ok {
		return fmt.Errorf("demo: --fault %q: want errors, tool-sequence or cost", o.fault)
	}
	if o.format != "json" && o.format != "otlp" {
		return fmt.Errorf("demo: --format %q: want json or otlp", o.format)
	}
	return runDemo(ctx, o, out)
}

func runDemo(ctx context.Context, o demoOpts, out io.Writer) error {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()

	// kfake keeps every record in memory: the fleet's rate and the timeout
	// bound what the demo writes (300 sessions/s × 2 rollouts × 110 s ≈ 400k
	// records, ≈ 200 MB).
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, "agent.events", "otlp_spans"))
	if err != nil {
		return fmt.Errorf("embedded broker: %w", err)
	}
	defer cluster.Close()
	brokers := cluster.ListenAddrs()

	specs, err := detector.ParseSpecs("demo", []byte(demoSpecs))
	if err != nil {
		return fmt.Errorf("BUG: demo specs: %w", err)
	}
	log := slog.New(slog.DiscardHandler)
	if o.verbose {
		log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	ui := newDemoUI(out, start, specs)
	wopts := window.Options{Width: 2 * time.Second, Lateness: time.Second}
	otlpTopic := ""
	if o.format == "otlp" {
		// A session's spans reach Kafka together when it ends, so its first
		// spans are seconds behind the newest: allow for most of them (the
		// rest are counted in canaryd_events_late_total{rollout}).
		wopts.Lateness = 8 * time.Second
		otlpTopic = "otlp_spans"
	}
	ms := metrics.NewSet()
	d, err := daemon.New(daemon.Config{
		Brokers: brokers, Specs: specs, HTTPAddr: o.httpAddr, Partitions: 3, OTLPSpansTopic: otlpTopic,
		Window:    wopts,
		Metrics:   ms,
		Logger:    log.With("component", "canaryd"),
		OnVerdict: ui.verdict,
	})
	if err != nil {
		return err
	}

	good := loadtest.DefaultProfile()
	bad := loadtest.DefaultProfile()
	fault := demoFaults[o.fault]
	fault.apply(&bad)
	format := loadtest.FormatJSON
	if o.format == "otlp" {
		format = loadtest.FormatOTLPProto
	}
	fleet, err := loadtest.NewFleet(loadtest.FleetConfig{
		Brokers: brokers, Seed: o.seed, Logger: log.With("component", "fleet"), Format: format,
		Rollouts: []loadtest.Rollout{
			{Name: "support-agent", Baseline: "v1.4.0", Canary: "v1.5.0", BaselineProfile: good, CanaryProfile: good, Rate: o.rate},
			{Name: "billing-agent", Baseline: "v2.0.3", Canary: "v2.1.0", BaselineProfile: good, CanaryProfile: bad, Rate: o.rate},
		},
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "canaryd demo: embedded Kafka at %s, HTTP API at http://%s/v1/rollouts\n", strings.Join(brokers, ","), d.HTTPAddr())
	fmt.Fprintf(out, "  support-agent v1.4.0 → v1.5.0: good canary (same behaviour)    expect: promote\n")
	fmt.Fprintf(out, "  billing-agent v2.0.3 → v2.1.0: %s  expect: rollback\n", fault.describe)
	fmt.Fprintf(out, "  events: %s\n\n", map[string]string{"json": "canaryd JSON v1 on agent.events", "otlp": "OTLP protobuf spans on otlp_spans (GenAI conventions), sessions assembled from traces"}[o.format])

	dctx, stopDaemon := context.WithCancel(ctx)
	fctx, stopFleet := context.WithCancel(ctx)
	var wg, fwg sync.WaitGroup
	var derr, ferr error
	wg.Go(func() { derr = d.Run(dctx) })
	fwg.Go(func() { ferr = fleet.Run(fctx) })

	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var outcome error
loop:
	for {
		select {
		case <-ctx.Done():
			outcome = fmt.Errorf("demo did not finish within %s", o.timeout)
			break loop
		case <-tick.C:
			sts := d.Statuses()
			ui.progress(sts, fleet)
			if allFinal(sts) {
				break loop
			}
		}
	}
	stopFleet()
	fwg.Wait()
	// Let canaryd read what the fleet wrote last (up to 5 s), so that the
	// summary's judged and produced totals can be compared.
	waitCaughtUp(ms, 5*time.Second)
	stopDaemon()
	wg.Wait()
	sts := d.Statuses()
	ui.summary(sts, fleet)
	if outcome == nil {
		outcome = checkDemo(sts)
	}
	if err := errors.Join(derr, ferr); err != nil && outcome == nil && ctx.Err() == nil {
		outcome = err
	}
	if outcome == nil {
		fmt.Fprintf(out, "\ndemo passed in %s: the good canary was promoted, the bad one rolled back.\n", time.Since(start).Round(100*time.Millisecond))
	}
	return outcome
}

// waitCaughtUp waits until canaryd's consumer lag is zero on every
// partition and its record count stopped moving, or timeout.
func waitCaughtUp(ms *metrics.Set, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	last := -1.0
	for time.Now().Before(deadline) {
		var sb strings.Builder
		ms.WritePrometheus(&sb)
		lag, records := 0.0, 0.0
		for _, l := range strings.Split(sb.String(), "\n") {
			var v float64
			if i := strings.LastIndexByte(l, ' '); i > 0 {
				fmt.Sscan(l[i+1:], &v)
			}
			switch {
			case strings.HasPrefix(l, "canaryd_consumer_lag{"):
				lag += v
			case strings.HasPrefix(l, "canaryd_records_total "):
				records = v
			}
		}
		if lag == 0 && records == last {
			return
		}
		last = records
		time.Sleep(300 * time.Millisecond)
	}
}

func allFinal(sts []detector.Status) bool {
	for _, s := range sts {
		if s.Final == "" {
			return false
		}
	}
	return len(sts) > 0
}

func checkDemo(sts []detector.Status) error {
	want := map[string]string{"support-agent": "promote", "billing-agent": "rollback"}
	var errs []error
	for _, s := range sts {
		if s.Final != want[s.Rollout] {
			errs = append(errs, fmt.Errorf("%s ended %q; want %q", s.Rollout, s.Final, want[s.Rollout]))
		}
	}
	return errors.Join(errs...)
}

// demoUI prints the demo's progress. On a terminal it redraws one line per
// rollout in place; otherwise it prints progress every 5 seconds.
type demoUI struct {
	mu      sync.Mutex
	out     io.Writer
	start   time.Time
	tty     bool
	drawn   int // progress lines currently on screen (tty)
	ticks   int
	order   []string
	pending []string // verdict lines to print above the progress
}

func newDemoUI(out io.Writer, start time.Time, specs []detector.Spec) *demoUI {
	ui := &demoUI{out: out, start: start}
	if f, ok := out.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 && os.Getenv("TERM") != "dumb" {
			ui.tty = true
		}
	}
	for _, s := range specs {
		ui.order = append(ui.order, s.Rollout)
	}
	return ui
}

func (ui *demoUI) elapsed() string {
	return fmt.Sprintf("%5.1fs", time.Since(ui.start).Seconds())
}

// verdict is called by the daemon for every verdict; it queues the ones that
// sent a command.
func (ui *demoUI) verdict(v detector.Verdict, sent bool) {
	if !sent {
		return
	}
	mark := map[schemas.Action]string{schemas.ActionSetWeight: "→", schemas.ActionPromote: "✔", schemas.ActionRollback: "✖", schemas.ActionHold: "‖"}[v.Action]
	label := strings.ToUpper(string(v.Action))
	if v.Action == schemas.ActionSetWeight {
		label = fmt.Sprintf("SET_WEIGHT %d%%", v.Weight)
	}
	line := fmt.Sprintf("%s %s %-14s %-15s %s", ui.elapsed(), mark, v.Rollout, label, v.Reason)
	ui.mu.Lock()
	ui.pending = append(ui.pending, line)
	ui.mu.Unlock()
}

func (ui *demoUI) progress(sts []detector.Status, fleet *loadtest.Fleet) {
	ui.mu.Lock()
	defer ui.mu.Unlock()
	ui.ticks++
	if ui.tty && ui.drawn > 0 {
		fmt.Fprintf(ui.out, "\x1b[%dA\x1b[J", ui.drawn) // up and clear
		ui.drawn = 0
	}
	for _, l := range ui.pending {
		fmt.Fprintln(ui.out, l)
	}
	ui.pending = ui.pending[:0]
	if !ui.tty && ui.ticks%5 != 0 {
		return
	}
	for _, s := range sts {
		fmt.Fprintln(ui.out, progressLine(ui.elapsed(), s, fleet.Weight(s.Rollout)))
		ui.drawn++
	}
	if !ui.tty {
		ui.drawn = 0
	}
}

func progressLine(at string, s detector.Status, fleetWeight int) string {
	v := s.Verdict
	state := fmt.Sprintf("step %d/%d at %3d%%", s.Step+1, s.Steps, s.Weight)
	switch {
	case s.Final != "":
		state = fmt.Sprintf("%-8s at %3d%%", strings.ToUpper(s.Final), s.Weight)
	case s.Step < 0:
		state = "waiting for traffic"
	}
	c, b := v.Canary, v.Baseline
	line := fmt.Sprintf("%s   %-14s %-18s router %3d%% | canary %6d req, err %5.2f%% (base %5.2f%%), p95 %5.0f ms (base %5.0f ms)",
		at, s.Rollout, state, fleetWeight, c.Requests, 100*nz(c.ErrorRate), 100*nz(b.ErrorRate), nz(c.P95MS), nz(b.P95MS))
	for _, t := range v.Tests {
		if t.Role == "rollback" && (t.Name == "error_rate" || t.Name == "latency_p95") {
			line += fmt.Sprintf(" | %s e=%.3g/%.0f", t.Name, float64(t.EValue), float64(t.Threshold))
			if t.Segment != "" && t.Segment != "all" {
				// The segment whose own evidence drives the test, with its values.
				line += fmt.Sprintf(" in %s (%.3g vs %.3g)", t.Segment, float64(t.Canary), float64(t.Baseline))
			}
		}
	}
	return line
}

func nz(n detector.Num) float64 {
	f := float64(n)
	if f != f {
		return 0
	}
	return f
}

func (ui *demoUI) summary(sts []detector.Status, fleet *loadtest.Fleet) {
	ui.mu.Lock()
	defer ui.mu.Unlock()
	for _, l := range ui.pending {
		fmt.Fprintln(ui.out, l)
	}
	ui.pending = nil
	fmt.Fprintln(ui.out, "\nsummary")
	produced := fleet.Produced()
	for _, s := range sts {
		fmt.Fprintf(ui.out, "  %-14s %s → %s: %s\n", s.Rollout, s.Baseline, s.Canary, orDash(strings.ToUpper(s.Final), "UNDECIDED"))
		for _, c := range fleet.Commands(s.Rollout) {
			fmt.Fprintf(ui.out, "    command seq %d %-10s weight %3d  id %s\n", c.Seq, c.Action, c.Weight, c.CommandID)
		}
		for _, t := range s.Totals {
			p := produced[s.Rollout][t.Version]
			fmt.Fprintf(ui.out, "    %-8s judged %7d requests (%d errors, p95 %.0f ms); fleet produced %d requests\n",
				t.Version, t.Requests, t.Errors, nz(t.P95MS), p.Requests)
		}
	}
}

func orDash(s, d string) string {
	if s == "" {
		return d
	}
	return s
}
