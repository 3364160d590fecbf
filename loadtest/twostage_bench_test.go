package loadtest_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/inferensys/canaryd/internal/kafkatest"
	"github.com/inferensys/canaryd/loadtest"
	"github.com/inferensys/canaryd/schemas"
)

// BenchmarkTwoStage (issue 17) runs canaryd binaries on one pre-produced OTLP
// input — sessions keyed by trace id on 8 partitions, so every rollout is on
// every partition — as 1 process single-stage and 1, 2 and 4 processes with
// --two-stage, each on a fresh group and fresh control, partials and state
// topics, and reports per configuration: events (spans) per second from the
// first record consumed to the last, CPU seconds of all processes per
// million events (utime+stime from /proc, start-up and group joins
// included), the partials stage 1 published and their size (per partial:
// one rollout's window in one source partition; and per window × rollout,
// summed over the source partitions: what stage 2 reads per judged window),
// and the decision latency (canaryd_decision_latency_seconds: from a
// window's close in stage 1 to its command on the control topic) of the bad
// canary's rollback, the only command (tsSpecs).
//
// Each configuration runs tsRounds times, the configurations in turn; the
// sub-benchmarks report medians (ns/op: the wall time from the first record
// consumed to the last); the table on stdout shows every round. Run with
// -benchtime 1x (make bench does); KAFKA_BROKERS or a broker that kafkatest
// starts; CANARYD_KAFKA=kfake runs it on kfake instead.
//
// Figures (December 2026, 2 cores shared with other jobs — the load average
// was 6 throughout, so wall times vary 2× between rounds; CPU seconds less),
// Apache Kafka 4.4.0 on the same machine; 450k OTLP records, 3.14M spans,
// 228 s of event time, 199 windows of 1 s closed; medians of 3 rounds:
//
//	config        events/s  CPU s/1M events  partials  B/partial  B/window×rollout  rollback latency
//	1proc-single    532k        3.51               0         -             -          0.43 s (≤0.5)
//	1proc-2stage    260k        4.36           12735      11724         93789          0.99 s (≤1)
//	2proc-2stage    293k        4.40           12735      11724         93789          0.97 s (≤1)
//	4proc-2stage    249k        5.29           12735      11724         93789          1.96 s (≤2.5)
//
// An earlier run gave 3.73, 4.78, 5.71 and 6.46 CPU s per 1M events. The
// partials are windows × rollouts × source partitions (199 × 8 × 8, less one) in
// every configuration, whatever the processes: stage 2's load is per
// window. About 5.5 kB of each partial is its Arrow schema and metadata
// (an empty partial is 5480 B). The latency is of a replay that saturates
// the processes, not of a live stream.
func BenchmarkTwoStage(b *testing.B) {
	kind := kafkatest.KindReal
	if os.Getenv("CANARYD_KAFKA") == kafkatest.KindFake {
		kind = kafkatest.KindFake
	}
	brokers := kafkatest.Brokers(b, kind)
	base := kafkatest.Topic(b)
	spans := base + ".otlp"
	kafkatest.CreateTopics(b, brokers, tsPartitions, spans)
	in := produceOTLP(b, brokers, spans)
	bin := buildCanarydBin(b)
	specs := filepath.Join(b.TempDir(), "specs.yaml")
	if err := os.WriteFile(specs, []byte(tsSpecs()), 0o644); err != nil {
		b.Fatal(err)
	}

	configs := []tsConfig{
		{name: "1proc-single", procs: 1},
		{name: "1proc-2stage", procs: 1, twoStage: true},
		{name: "2proc-2stage", procs: 2, twoStage: true},
		{name: "4proc-2stage", procs: 4, twoStage: true},
	}
	// Rounds of all configurations in turn, so that what else the machine
	// runs meanwhile spreads over them; each reports its medians.
	results := make([][]tsResult, len(configs))
	for round := range tsRounds {
		for i, c := range configs {
			r := runTwoStage(b, bin, brokers, spans, specs, fmt.Sprintf("%s.%d.%d", base, round, i), c, in)
			results[i] = append(results[i], r)
		}
	}
	for i, c := range configs {
		b.Run(c.name, func(b *testing.B) {
			for range b.N {
				// Measured above: one run per configuration and round.
			}
			tsReport(b, in, results[i])
		})
	}
	// On stdout: the testing package prints at most 10 lines of a
	// benchmark's log, and none of a parent's.
	fmt.Printf("BenchmarkTwoStage: %s", tsTable(in, results))
}

// tsRounds: each configuration runs this often; the medians are reported.
const tsRounds = 3

func median(rs []tsResult, f func(tsResult) float64) float64 {
	vs := make([]float64, len(rs))
	for i, r := range rs {
		vs[i] = f(r)
	}
	slices.Sort(vs)
	if n := len(vs); n%2 == 0 {
		return (vs[n/2-1] + vs[n/2]) / 2
	}
	return vs[len(vs)/2]
}

func tsTable(in tsInput, results [][]tsResult) string {
	var t strings.Builder
	fmt.Fprintf(&t, "input: %d OTLP records (%.0f MB, produced in %v), %d events (spans), %.0f s of event time, %d rollouts on %d partitions; %d windows of 1 s close\n",
		in.records, float64(in.bytes)/1e6, in.produced.Round(time.Millisecond), in.events, in.span.Seconds(), tsRolloutN, tsPartitions, in.closed())
	fmt.Fprintf(&t, "%-13s %-6s %7s %9s %7s %9s %7s %9s %9s %11s %-20s %s\n",
		"config", "round", "wall s", "events/s", "CPU s", "CPU s/1M", "scrape%", "partials", "B/partial", "B/win×roll", "decision latency", "commands")
	for _, rs := range results {
		for i, r := range rs {
			fmt.Fprintf(&t, "%-13s %-6d %7.2f %9.0f %7.2f %9.2f %7.1f %9.0f %9.0f %11.0f %-20s %s\n",
				r.cfg.name, i+1, r.wall.Seconds(), r.eventsPerSec(in), r.cpu, r.cpuPerM(in), r.scrapeShare(), r.published,
				r.bytesPerPartial(), r.bytesPerWindowRollout(in), r.lat, strings.Join(r.commands, " "))
		}
		fmt.Fprintf(&t, "%-13s %-6s %7.2f %9.0f %7.2f %9.2f %7.1f %9.0f %9.0f %11.0f %.3fs\n",
			rs[0].cfg.name, "median", median(rs, func(r tsResult) float64 { return r.wall.Seconds() }),
			median(rs, func(r tsResult) float64 { return r.eventsPerSec(in) }), median(rs, func(r tsResult) float64 { return r.cpu }),
			median(rs, func(r tsResult) float64 { return r.cpuPerM(in) }), median(rs, tsResult.scrapeShare), median(rs, func(r tsResult) float64 { return r.published }),
			median(rs, tsResult.bytesPerPartial), median(rs, func(r tsResult) float64 { return r.bytesPerWindowRollout(in) }),
			median(rs, tsResult.latencyMean))
	}
	return t.String()
}

const (
	tsPartitions = 8
	tsRolloutN   = 8
	tsBad        = "agent-7" // its canary errs 4× as often: rolled back
	// tsRecords sessions (1.3 GB of OTLP) at tsRate sessions per
	// event-second per rollout: about 7 spans a session, 14k spans per
	// event-second in all; 228 s of event time, so 198 closed windows × 8
	// rollouts × 8 source partitions of partials.
	tsRecords = 450_000
	tsRate    = 250
	// tsLateness: a session's spans arrive together when it ends, so its
	// first span is as old as the session is long: with 10 s, 0.5% of the
	// spans (those of sessions with a 30 s LLM timeout) were dropped as
	// late. The last tsLateness of event time stays open: the input's
	// arrival lag holds the idle rule back.
	tsLateness = 30 * time.Second
)

func tsRollouts() []loadtest.Rollout {
	var rs []loadtest.Rollout
	for i := range tsRolloutN {
		good := loadtest.DefaultProfile()
		canary := good
		name := fmt.Sprintf("agent-%d", i)
		if name == tsBad {
			canary.ErrorRateMult = 4
		}
		rs = append(rs, loadtest.Rollout{Name: name, Baseline: "v1", Canary: "v2",
			BaselineProfile: good, CanaryProfile: canary, InitialWeight: 10, Rate: tsRate})
	}
	return rs
}

// tsSpecs: judge mode (no controller here: the judges take the weight
// they observe), so that the only command is the bad canary's rollback and
// canaryd_decision_latency_seconds holds its latency alone. (In drive mode
// each rollout's start, a set_weight at its first window, is sent too; they
// queue in the outbox ahead of the rollback.) The good ones' alpha makes a
// false rollback unlikely (loopSpecs in internal/daemon).
func tsSpecs() string {
	var s strings.Builder
	for i := range tsRolloutN {
		name := fmt.Sprintf("agent-%d", i)
		alpha := "0.00002"
		if name == tsBad {
			alpha = "0.01"
		}
		fmt.Fprintf(&s, "---\nrollout: %s\nmode: judge\nbaseline: v1\ncanary: v2\nalpha: %s\nmetrics: {error_rate: {margin: 2.0}}\n", name, alpha)
	}
	return s.String()
}

// tsInput is what produceOTLP wrote.
type tsInput struct {
	records  int
	events   int64         // spans
	span     time.Duration // event time from the first session to the last
	windows  int           // 1 s windows in span
	bytes    int64         // of the records' values
	produced time.Duration // time to produce them
}

// closed is the number of windows that close: all but the last tsLateness.
func (in tsInput) closed() int { return in.windows - int(tsLateness/time.Second) }

func produceOTLP(b *testing.B, brokers []string, topic string) tsInput {
	b.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.DefaultProduceTopic(topic),
		kgo.ProducerLinger(5*time.Millisecond), kgo.MaxBufferedRecords(50_000), kgo.ProducerBatchMaxBytes(4<<20))
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	g := loadtest.NewGenerator(17, tsRollouts(), loadtest.GeneratorFormat(loadtest.FormatOTLPProto))
	ctx := context.Background()
	var (
		mu     sync.Mutex
		failed error
		bytes  int64
		first  time.Time
	)
	start := time.Now()
	for i := range tsRecords {
		key, rec := g.NextKeyed(nil)
		if i == 0 {
			first = g.Now()
		}
		bytes += int64(len(rec))
		cl.Produce(ctx, &kgo.Record{Key: slices.Clone(key), Value: rec}, func(_ *kgo.Record, err error) {
			if err != nil {
				mu.Lock()
				failed = err
				mu.Unlock()
			}
		})
	}
	if err := cl.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	if failed != nil {
		b.Fatal(failed)
	}
	in := tsInput{records: tsRecords, span: g.Now().Sub(first), bytes: bytes, produced: time.Since(start)}
	for _, vs := range g.Counts() {
		for _, c := range vs {
			in.events += c.Events
		}
	}
	in.windows = int(math.Ceil(in.span.Seconds()))
	return in
}

// buildCanarydBin builds the canaryd binary into a temp dir (as
// internal/daemon's buildCanaryd does).
func buildCanarydBin(b *testing.B) string {
	b.Helper()
	bin := filepath.Join(b.TempDir(), "canaryd")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/inferensys/canaryd/cmd/canaryd").CombinedOutput()
	if err != nil {
		b.Fatalf("go build canaryd: %v\n%s", err, out)
	}
	return bin
}

type tsConfig struct {
	name     string
	procs    int
	twoStage bool
}

// tsResult is one configuration's figures, summed over its processes.
type tsResult struct {
	cfg     tsConfig
	startup time.Duration // launch to the first record consumed
	wall    time.Duration // first record consumed to the last
	cpu     float64       // CPU seconds of all processes when the last record was consumed

	published, received   float64 // partials
	partialSum, partialN  float64 // canaryd_partial_bytes
	lat                   hist    // all commands: the rollback alone (tsSpecs)
	commands              []string
	stage2Parts, s1Parts  []float64 // partitions assigned per process: stage 1, stage 2
	errLines, recordsSeen float64
	// Windows the judges ignored as already seen (a partition's window
	// published again, e.g. by its next owner after a rebalance), events
	// dropped as late, records dead-lettered.
	replayed, late, rejected float64
	slowestScrape            time.Duration // of /metrics
	scrapes                  int           // of all processes until the last record was consumed
	scrapeCPU                float64       // CPU seconds of one scrape of an idle process
}

func (r tsResult) eventsPerSec(in tsInput) float64 { return float64(in.events) / r.wall.Seconds() }
func (r tsResult) cpuPerM(in tsInput) float64      { return r.cpu / (float64(in.events) / 1e6) }
func (r tsResult) bytesPerPartial() float64 {
	if r.partialN == 0 {
		return 0
	}
	return r.partialSum / r.partialN
}

// bytesPerWindowRollout: what stage 2 reads to judge one rollout's window,
// summed over the source partitions.
func (r tsResult) bytesPerWindowRollout(in tsInput) float64 {
	return r.partialSum / float64(in.closed()*tsRolloutN)
}

// scrapeShare is the percent of r.cpu that the benchmark's scrapes of
// /metrics cost, estimated from an idle process's.
func (r tsResult) scrapeShare() float64 { return 100 * float64(r.scrapes) * r.scrapeCPU / r.cpu }

func (r tsResult) latencyMean() float64 {
	if r.lat.count == 0 {
		return math.NaN()
	}
	return r.lat.sum / r.lat.count
}

// tsReport reports a configuration's medians over its rounds, and logs
// each round.
func tsReport(b *testing.B, in tsInput, rs []tsResult) {
	med := func(f func(tsResult) float64) float64 { return median(rs, f) }
	b.ReportMetric(med(func(r tsResult) float64 { return float64(r.wall.Nanoseconds()) }), "ns/op")
	b.ReportMetric(med(func(r tsResult) float64 { return r.eventsPerSec(in) }), "events/s")
	b.ReportMetric(med(func(r tsResult) float64 { return r.cpuPerM(in) }), "CPU-s/M-events")
	b.ReportMetric(med(func(r tsResult) float64 { return r.published }), "partials")
	b.ReportMetric(med(tsResult.bytesPerPartial), "B/partial")
	b.ReportMetric(med(func(r tsResult) float64 { return r.bytesPerWindowRollout(in) }), "B/window×rollout")
	b.ReportMetric(med(tsResult.latencyMean), "decision-latency-s")
	for i, r := range rs {
		b.Logf("%s round %d: %d process(es): start-up %v, all %d records consumed in %v: %.0f events/s, %.2f CPU s (%.2f per 1M events); "+
			"partials published %.0f, received %.0f (%.1f per window × rollout), %.0f B each, %.0f B per window × rollout; "+
			"decision latency (sum/count ≤ median bucket) %s; commands %v; partitions per process: stage 1 %v, stage 2 %v; windows ignored as replayed %.0f, late events %.0f, dead-lettered %.0f; error log lines %.0f; slowest /metrics %v; %d scrapes of /metrics until the last record at %.1f ms CPU each (idle)",
			r.cfg.name, i+1, r.cfg.procs, r.startup.Round(time.Millisecond), in.records, r.wall.Round(time.Millisecond), r.eventsPerSec(in), r.cpu, r.cpuPerM(in),
			r.published, r.received, r.published/float64(in.closed()*tsRolloutN), r.bytesPerPartial(), r.bytesPerWindowRollout(in),
			r.lat, r.commands, r.s1Parts, r.stage2Parts, r.replayed, r.late, r.rejected, r.errLines, r.slowestScrape.Round(time.Millisecond), r.scrapes, 1000*r.scrapeCPU)
	}
}

// hist is canaryd_decision_latency_seconds summed over processes.
type hist struct {
	sum, count float64
	le         []float64 // bucket bounds, ascending, +Inf last
	cum        []float64 // cumulative counts
}

// median returns the upper bound of the bucket the median falls in.
func (h hist) median() float64 {
	for i, c := range h.cum {
		if c >= math.Ceil(h.count/2) {
			return h.le[i]
		}
	}
	return math.NaN()
}

func (h hist) String() string {
	if h.count == 0 {
		return "-"
	}
	return fmt.Sprintf("%.3fs/%.0f≤%gs", h.sum/h.count, h.count, h.median())
}

// scrape is one /metrics page: series (name with labels) → value.
type scrape map[string]float64

func (s scrape) add(o scrape) {
	for k, v := range o {
		s[k] += v
	}
}

// family sums the series of a metric family.
func (s scrape) family(name string) float64 {
	var sum float64
	for k, v := range s {
		if k == name || strings.HasPrefix(k, name+"{") {
			sum += v
		}
	}
	return sum
}

func (s scrape) hist(name string) hist {
	h := hist{sum: s[name+"_sum"], count: s[name+"_count"]}
	byLE := map[float64]float64{}
	for k, v := range s {
		if b, ok := strings.CutPrefix(k, name+`_bucket{le="`); ok {
			if le, err := strconv.ParseFloat(strings.TrimSuffix(b, `"}`), 64); err == nil {
				byLE[le] = v
			}
		}
	}
	for le := range byLE {
		h.le = append(h.le, le)
	}
	slices.Sort(h.le)
	for _, le := range h.le {
		h.cum = append(h.cum, byLE[le])
	}
	return h
}

// tsProc is one canaryd process of a configuration.
type tsProc struct {
	name  string
	cmd   *exec.Cmd
	addrc chan string
	addr  string
	logs  sync.WaitGroup

	mu  sync.Mutex
	log []string
}

func (p *tsProc) lines() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.log)
}

// startTS starts a canaryd process, killed when b ends if it still runs;
// waitAddr reads its HTTP address from its log.
func startTS(b *testing.B, name, bin string, args ...string) *tsProc {
	b.Helper()
	p := &tsProc{name: name, cmd: exec.Command(bin, args...), addrc: make(chan string, 1)}
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		b.Fatal(err)
	}
	p.logs.Go(func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.log = append(p.log, line)
			p.mu.Unlock()
			if strings.Contains(line, `msg="serving HTTP"`) {
				if _, a, ok := strings.Cut(line, " addr="); ok {
					p.addrc <- a
				}
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
	})
	b.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			_ = p.cmd.Process.Kill()
			_ = p.cmd.Wait()
		}
		p.logs.Wait()
	})
	return p
}

func (p *tsProc) waitAddr(b *testing.B) {
	b.Helper()
	select {
	case p.addr = <-p.addrc:
	case <-time.After(30 * time.Second):
		b.Fatalf("%s: no HTTP address logged within 30s:\n%s", p.name, strings.Join(p.lines(), "\n"))
	}
}

// stop sends SIGTERM and waits up to 20 s for a clean exit, then kills.
func (p *tsProc) stop(b *testing.B) {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			b.Logf("%s: exit: %v", p.name, err)
		}
	case <-time.After(20 * time.Second):
		b.Logf("%s: no exit 20 s after SIGTERM: killed", p.name)
		_ = p.cmd.Process.Kill()
		<-done
	}
	p.logs.Wait()
}

var tsClient = &http.Client{Timeout: 30 * time.Second}

func (p *tsProc) scrape() (scrape, error) {
	resp, err := tsClient.Get("http://" + p.addr + "/metrics")
	if err != nil {
		return nil, fmt.Errorf("%s: scrape: %w", p.name, err)
	}
	defer resp.Body.Close()
	s := scrape{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		s[line[:i]] = v
	}
	return s, sc.Err()
}

// cpuSeconds is the process's utime+stime.
func (p *tsProc) cpuSeconds(b *testing.B) float64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		b.Fatalf("%s: %v", p.name, err)
	}
	// Fields after the command name, which is in parentheses: state is
	// field 3, utime 14, stime 15.
	f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+1:]))
	ut, _ := strconv.ParseFloat(f[14-3], 64)
	st, _ := strconv.ParseFloat(f[15-3], 64)
	return (ut + st) / clockTicks()
}

var clockTicks = sync.OnceValue(func() float64 {
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if err == nil {
		if v, err := strconv.ParseFloat(strings.TrimSpace(string(out)), 64); err == nil && v > 0 {
			return v
		}
	}
	return 100
})

// runTwoStage runs one configuration on the input topic until every record
// is consumed (and stage 2 has judged every partial published by then and
// the rollback is sent, for the latency), and returns its figures.
func runTwoStage(b *testing.B, bin string, brokers []string, spans, specs, base string, c tsConfig, in tsInput) tsResult {
	b.Helper()
	args := []string{"run", "--brokers", strings.Join(brokers, ","), "--specs", specs,
		"--events-topic", base + ".events", "--control-topic", base + ".control", "--dlq-topic", base + ".dlq",
		"--group", base, "--otlp-spans-topic", spans, "--otlp-encoding", "otlp_proto",
		"--window", "1s", "--lateness", tsLateness.String(), "--http", "127.0.0.1:0"}
	if c.twoStage {
		args = append(args, "--two-stage", "--partials-topic", base+".partials", "--state-topic", base+".state",
			"--partials-partitions", strconv.Itoa(tsPartitions))
	}
	// Launched together, so that the group's first assignment is close to
	// its last: the data is already there, and a late joiner takes
	// partitions that the others have started on.
	launched := time.Now()
	procs := make([]*tsProc, c.procs)
	for i := range procs {
		procs[i] = startTS(b, fmt.Sprintf("%s[%d]", c.name, i), bin, args...)
	}
	for _, p := range procs {
		p.waitAddr(b)
	}
	dump := func() {
		for _, p := range procs {
			ls := p.lines()
			b.Logf("%s: last log lines:\n%s", p.name, strings.Join(ls[max(len(ls)-30, 0):], "\n"))
		}
	}
	// total scrapes every process; a scrape that fails is retried at the
	// next poll (a process starved of CPU answers late: slowest tells).
	var slowest time.Duration
	scrapes := 0 // until the last record is consumed
	total := func() (scrape, []scrape, bool) {
		sum, each := scrape{}, make([]scrape, len(procs))
		for i, p := range procs {
			start := time.Now()
			var err error
			each[i], err = p.scrape()
			slowest = max(slowest, time.Since(start))
			scrapes++
			if err != nil {
				b.Logf("%v", err)
				return nil, nil, false
			}
			sum.add(each[i])
		}
		return sum, each, true
	}
	rolled := fmt.Sprintf(`canaryd_verdicts_total{rollout=%q,action="rollback"}`, tsBad)
	r := tsResult{cfg: c}
	var first time.Time
	deadline := time.Now().Add(5 * time.Minute)
	for {
		s, _, ok := total()
		if !ok {
			if time.Now().After(deadline) {
				dump()
				b.Fatalf("%s: no metrics in 5 minutes", c.name)
			}
			continue
		}
		n := s["canaryd_records_total"]
		if first.IsZero() && n > 0 {
			first = time.Now()
			r.startup = first.Sub(launched)
		}
		if n >= float64(in.records) {
			r.wall = time.Since(first)
			r.recordsSeen = n
			break
		}
		if time.Now().After(deadline) {
			dump()
			b.Fatalf("%s: consumed %.0f of %d records in 5 minutes", c.name, n, in.records)
		}
		// A page of /metrics is some 240 kB that takes the process CPU to
		// write: polled at 10 Hz it would be part of what is measured.
		// Polled each second, and every 50 ms at the start and near the
		// end (at half the time the current rate needs for the rest).
		wait := 50 * time.Millisecond
		if n > 0 {
			rate := n / time.Since(first).Seconds()
			wait = min(max(time.Duration((float64(in.records)-n)/rate/2*float64(time.Second)), 50*time.Millisecond), time.Second)
		}
		time.Sleep(wait)
	}
	for _, p := range procs {
		r.cpu += p.cpuSeconds(b)
	}
	r.scrapes = scrapes

	// Until stage 2 has judged what stage 1 published and the rollback is
	// sent.
	var s scrape
	var each []scrape
	deadline = time.Now().Add(60 * time.Second)
	for {
		var ok bool
		if s, each, ok = total(); !ok {
			if time.Now().After(deadline) {
				dump()
				b.Fatalf("%s: no metrics 60 s after the last record", c.name)
			}
			continue
		}
		caughtUp := !c.twoStage || s[`canaryd_partials_received_total{result="ok"}`] >= s["canaryd_partials_published_total"]
		if s[rolled] > 0 && caughtUp {
			break
		}
		if time.Now().After(deadline) {
			dump()
			b.Errorf("%s: no rollback of %s, or stage 2 behind stage 1 (received %.0f of %.0f partials), 60 s after the last record",
				c.name, tsBad, s[`canaryd_partials_received_total{result="ok"}`], s["canaryd_partials_published_total"])
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	r.published, r.received = s["canaryd_partials_published_total"], s[`canaryd_partials_received_total{result="ok"}`]
	r.partialSum, r.partialN = s["canaryd_partial_bytes_sum"], s["canaryd_partial_bytes_count"]
	r.lat = s.hist("canaryd_decision_latency_seconds")
	r.replayed, r.late, r.rejected = s.family("canaryd_replayed_windows_total"), s.family("canaryd_events_late_total"), s.family("canaryd_records_rejected_total")
	r.slowestScrape = slowest
	// What a scrape costs the process, once it is idle: the measurement's
	// share of r.cpu is about r.scrapes times that.
	const probes = 20
	cpu0 := procs[0].cpuSeconds(b)
	for range probes {
		if _, err := procs[0].scrape(); err != nil {
			b.Logf("%v", err)
		}
	}
	r.scrapeCPU = (procs[0].cpuSeconds(b) - cpu0) / probes
	for _, e := range each {
		r.s1Parts = append(r.s1Parts, e["canaryd_partitions_assigned"])
		r.stage2Parts = append(r.stage2Parts, e["canaryd_stage2_partitions_assigned"])
	}
	for _, p := range procs {
		p.stop(b)
		for _, l := range p.lines() {
			if strings.Contains(l, "level=ERROR") {
				r.errLines++
			}
		}
	}
	if r.recordsSeen != float64(in.records) {
		b.Logf("%s: records counted %.0f; produced %d (replayed after a rebalance?)", c.name, r.recordsSeen, in.records)
	}
	r.commands = readCommandsTS(b, brokers, base+".control")
	return r
}

// readCommandsTS returns the commands on the control topic as
// rollout:action@weight.
func readCommandsTS(b *testing.B, brokers []string, topic string) []string {
	b.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	if err != nil {
		b.Fatal(err)
	}
	var want, got int64
	ends.Each(func(o kadm.ListedOffset) { want += o.Offset })
	var out []string
	for got < want {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			b.Errorf("read %d of %d commands from %s", got, want, topic)
			break
		}
		fs.EachRecord(func(r *kgo.Record) {
			got++
			var c schemas.Command
			switch err := json.Unmarshal(r.Value, &c); {
			case err != nil:
				out = append(out, "?")
			default:
				out = append(out, fmt.Sprintf("%s:%s@%d", c.Rollout, c.Action, c.Weight))
			}
		})
	}
	return out
}
