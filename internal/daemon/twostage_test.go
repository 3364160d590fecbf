package daemon_test

// Tests of two-stage aggregation (issue 17): with OTLP spans keyed by trace
// id, every rollout is spread over every partition of the spans topic, and
// several canaryd processes in one group must still judge each rollout
// once — one judge, one set of commands — exactly as one process would.

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/inferensys/canaryd/detector"
	"github.com/inferensys/canaryd/internal/kafkatest"
	"github.com/inferensys/canaryd/loadtest"
	"github.com/inferensys/canaryd/schemas"
	"github.com/inferensys/canaryd/sink"
	"github.com/inferensys/canaryd/stream"
)

// The rollouts of the two-stage tests: an A/A rollout (canary and baseline
// run the same profile) and a bad canary (errors ×4).
const (
	tsAA  = "ts-aa"
	tsBad = "ts-bad"
)

// tsPartitions is the number of partitions of the spans topic.
const tsPartitions = 6

// tsLateness covers the longest session of the dataset: a session's spans
// are written together when it ends, so its first spans arrive as late as
// the session is long (tsProfile has no 30 s timeouts: its sessions last
// seconds). It also covers the start of the processes between the head of
// the dataset and the rest (tsHeadRecords): meanwhile the idle rule moves
// the watermark on from the head's event time at the pace of the wall
// clock. The tests check that no span is dropped late: the judged totals
// equal what the topic holds. The dataset's event time starts in January
// 2026, far behind the wall clock, so the idle rule never closes its last
// windows: closers do (tsClosers).
const tsLateness = "60s"

// tsSpecs are judge-mode specs: canaryd sends no set_weight, so the traffic
// (half to each version, fixed) does not depend on commands, and the only
// command is a rollback. The A/A rollout gets alpha 1e-5: a test that
// asserts it is not rolled back, on both kinds of Kafka, fails that way with
// chance ≤ 2e-5 per run it judges (TestTwoStageMatchesOneProcess judges it
// twice per kind: ≤ 4e-5; TestTwoStageKill9 once per kind: ≤ 2e-5). The bad
// one keeps alpha 0.001: its rollback needs power, not a small alpha.
func tsSpecs() string {
	var b strings.Builder
	for _, r := range []struct {
		name  string
		alpha string
	}{{tsAA, "0.00001"}, {tsBad, "0.001"}} {
		fmt.Fprintf(&b, "---\nrollout: %s\nbaseline: v1\ncanary: v2\nmode: judge\nalpha: %s\n", r.name, r.alpha)
	}
	return b.String()
}

// tsProfile is the default profile with one tool and one error type name,
// that of a failed session ("task_failed"), so that a judge's aggregates,
// and their digest, do not depend on the order in which it folds in the
// windows of the six partitions. A judge numbers error types and tool-call
// bigrams in the order it first sees them (detector's internNames), and
// the digest covers the counts by number: with the default profile's ten
// error types, two runs of one process over the same records gave ts-aa/v1
// digests 838a04f3… and b9841418… with equal counts. With one name of each
// the numbering is the same in every order, and every other part of the
// digest is order-independent (integer counts, sums of integer token counts,
// sketch bins).
func tsProfile() loadtest.Profile {
	p := loadtest.DefaultProfile()
	p.Tools = []loadtest.ToolProfile{{Name: "search_docs", Weight: 1, ErrorRate: 0.01, LatencyMedianMS: 150, LatencySigma: 0.6}}
	p.LLMErrorTypes = []loadtest.ErrorType{{Name: "task_failed", Weight: 1}}
	p.ToolErrorTypes = []loadtest.ErrorType{{Name: "task_failed", Weight: 1}}
	return p
}

// tsRollouts are the generator's rollouts: rate sessions per second of event
// time each, half of them to the canary.
func tsRollouts(rate float64) []loadtest.Rollout {
	ok := tsProfile()
	bad := tsProfile()
	bad.ErrorRateMult = 4
	return []loadtest.Rollout{
		{Name: tsAA, Baseline: "v1", Canary: "v2", BaselineProfile: ok, CanaryProfile: ok, InitialWeight: 50, Rate: rate},
		{Name: tsBad, Baseline: "v1", Canary: "v2", BaselineProfile: ok, CanaryProfile: bad, InitialWeight: 50, Rate: rate},
	}
}

// tsWindow is the window width. Its idle time (3 × the width) must outlast
// the start of a process: with --two-stage a process is assigned its input
// partitions about 5 s before it starts reading them ("partitions
// assigned" … "canaryd started"), and the idle rule, held only for the idle
// time after the assignment, then moves a partition that has read nothing
// to the wall clock, so its backlog (the dataset's head, from January 2026)
// is dropped late. With 1 s windows (3 s idle) that happened on kfake.
const tsWindow = "3s"

// tsClosers is how many closing spans end each partition: as many as the
// watermark's quorum (window.Options.Quorum, default 3).
const tsClosers = 3

// tsDataset returns a fixed OTLP dataset: span records of the seeded
// generator (FormatOTLPProto, one record per finished session, key = its
// trace id, each to the partition the default partitioner gives its key, as
// the Collector's Kafka exporter writes them), d of event time; then, on
// each partition, tsClosers
// records of one span each of an unjudged rollout 10 minutes later, which
// close every window of the dataset by event time (within the judges'
// eviction time of 1 h, so that the judged rollouts stay listed). It also
// returns what the records hold, as the generator counts.
func tsDataset(topic string, rate float64, d time.Duration) ([]*kgo.Record, tally) {
	g := loadtest.NewGenerator(17, tsRollouts(rate), loadtest.GeneratorFormat(loadtest.FormatOTLPProto))
	part := kgo.StickyKeyPartitioner(nil).ForTopic(topic)
	var (
		recs  []*kgo.Record
		start time.Time
	)
	for {
		key, v := g.NextKeyed(nil)
		if start.IsZero() {
			start = g.Now()
		}
		r := &kgo.Record{Topic: topic, Key: slices.Clone(key), Value: v}
		r.Partition = int32(part.Partition(r, tsPartitions))
		recs = append(recs, r)
		if g.Now().Sub(start) >= d {
			break
		}
	}
	end := g.Now().Add(10 * time.Minute)
	for p := range int32(tsPartitions) {
		for i := range tsClosers {
			recs = append(recs, &kgo.Record{Topic: topic, Partition: p, Value: otlpCloser(end, uint64(p)<<8|uint64(i))})
		}
	}
	want := tally{}
	for r, vs := range g.Counts() {
		for v, c := range vs {
			want.add(r, v, counts{c.Requests, c.Errors, c.Sessions})
		}
	}
	return recs, want
}

// tsHeadRecords is how many records of a dataset (about 2 s of event time,
// some on every partition) a test writes before it starts canaryd.
//
// Why: the dataset's event time is in January 2026. A partition that has
// read nothing for the idle time (3 s) after its assignment has observed no
// producer lag, so the idle rule moves its watermark to the wall clock minus
// the lateness, and every record of the dataset written to it afterwards is
// late. This happened on the real broker, where starting three processes
// takes longer than 3 s: one process dropped its two partitions' 13,000
// events as late. Read first, the head gives each partition the lag of its
// records (11 months), and the idle rule then stays that far behind the
// wall clock.
const tsHeadRecords = 160

// checkHead fails the test unless the head of recs reaches every partition.
func checkHead(t *testing.T, recs []*kgo.Record) {
	t.Helper()
	seen := map[int32]bool{}
	for _, r := range recs[:tsHeadRecords] {
		seen[r.Partition] = true
	}
	if len(seen) != tsPartitions {
		t.Fatalf("the first %d records reach partitions %v; want all %d", tsHeadRecords, slices.Sorted(maps.Keys(seen)), tsPartitions)
	}
}

// otlpCloser encodes an OTLP ExportTraceServiceRequest in protobuf holding
// one execute_tool span, ending at end, of the unjudged rollout ts-close.
func otlpCloser(end time.Time, id uint64) []byte {
	msg := func(dst []byte, field int, b []byte) []byte {
		dst = binary.AppendUvarint(dst, uint64(field)<<3|2)
		dst = binary.AppendUvarint(dst, uint64(len(b)))
		return append(dst, b...)
	}
	str := func(dst []byte, field int, s string) []byte { return msg(dst, field, []byte(s)) }
	fixed64 := func(dst []byte, field int, v uint64) []byte {
		dst = binary.AppendUvarint(dst, uint64(field)<<3|1)
		return binary.LittleEndian.AppendUint64(dst, v)
	}
	kv := func(dst []byte, field int, k, v string) []byte {
		// KeyValue{key: 1, value: AnyValue{string_value: 1}}
		return msg(dst, field, msg(str(nil, 1, k), 2, str(nil, 1, v)))
	}
	var traceID [16]byte
	binary.BigEndian.PutUint64(traceID[:8], 0xc105e)
	binary.BigEndian.PutUint64(traceID[8:], id+1)
	var spanID [8]byte
	binary.BigEndian.PutUint64(spanID[:], id+1)
	// Span: trace_id 1, span_id 2, name 5, kind 6, start 7, end 8, attributes 9.
	var span []byte
	span = msg(span, 1, traceID[:])
	span = msg(span, 2, spanID[:])
	span = str(span, 5, "execute_tool close")
	span = append(span, 6<<3, 1) // SPAN_KIND_INTERNAL
	span = fixed64(span, 7, uint64(end.Add(-time.Millisecond).UnixNano()))
	span = fixed64(span, 8, uint64(end.UnixNano()))
	span = kv(span, 9, "gen_ai.operation.name", "execute_tool")
	span = kv(span, 9, "gen_ai.tool.name", "close")
	// Resource: attributes 1. ScopeSpans: spans 2. ResourceSpans: resource 1,
	// scope_spans 2. ExportTraceServiceRequest: resource_spans 1.
	res := kv(kv(nil, 1, "service.name", "ts-close"), 1, "service.version", "v1")
	rs := msg(msg(nil, 1, res), 2, msg(nil, 2, span))
	return msg(nil, 1, rs)
}

// countOTLP reads topic's partitions from their start up to (not including)
// the given offsets, decodes the spans as canaryd does, and counts the
// events of the rollouts named: llm and tool spans as requests (errors when
// their status is error), agent spans as sessions.
func countOTLP(t *testing.T, brokers []string, topic string, upTo map[int32]int64, rollouts ...string) tally {
	t.Helper()
	out := tally{}
	dec := stream.OTLPTraces(stream.DefaultOTLPConfig())()
	emit := func(ev *schemas.Event) {
		if !slices.Contains(rollouts, string(ev.Rollout)) {
			return
		}
		var c counts
		switch {
		case detector.IsSession(ev.Kind):
			c.Sessions = 1
		case detector.IsRequest(ev.Kind):
			c.Requests = 1
			if ev.Error {
				c.Errors = 1
			}
		}
		out.add(string(ev.Rollout), string(ev.Version), c)
	}
	readUpTo(t, brokers, topic, upTo, func(r *kgo.Record) {
		if err := dec.Decode(r.Value, emit); err != nil {
			t.Fatalf("span record at %d/%d: %v", r.Partition, r.Offset, err)
		}
	})
	return out
}

// tsRun is one judging of a spans topic: its own group and control, DLQ,
// state and partials topics.
type tsRun struct {
	name     string
	brokers  []string
	spans    string
	tp       topics
	twoStage bool
	ps       map[string]*process // by name
}

func newTSRun(t *testing.T, name string, brokers []string, twoStage bool) *tsRun {
	t.Helper()
	tp := newTopics(t)
	tp.events += "." + name
	tp.control += "." + name
	tp.dlq += "." + name
	r := &tsRun{name: name, brokers: brokers, spans: tp.events + ".spans", tp: tp, twoStage: twoStage, ps: map[string]*process{}}
	// The (unused) events topic with as many partitions as the spans topic:
	// canaryd consumes both.
	kafkatest.CreateTopics(t, brokers, tsPartitions, tp.events, r.spans)
	return r
}

// start starts canaryd process i of the run; with two-stage aggregation
// (--two-stage) it has a state directory of its own.
func (r *tsRun) start(t *testing.T, bin string, i int) *process {
	t.Helper()
	args := []string{"run", "--brokers", strings.Join(r.brokers, ","), "--events-topic", r.tp.events,
		"--otlp-spans-topic", r.spans, "--control-topic", r.tp.control, "--dlq-topic", r.tp.dlq,
		"--group", r.tp.events + ".group", "--partitions", strconv.Itoa(tsPartitions),
		"--http", "127.0.0.1:0", "--window", tsWindow, "--lateness", tsLateness, "--session-timeout", "6s"}
	if r.twoStage {
		args = append(args, "--two-stage", "--partials-topic", r.tp.events+".partials",
			"--state-dir", t.TempDir(), "--state-topic", r.tp.events+".state", "--checkpoint-interval", "500ms")
	}
	name := fmt.Sprintf("%s%d", r.name, i)
	p := startProcess(t, name, bin, tsSpecs(), args...)
	r.ps[name] = p
	return p
}

// startAll starts n processes and waits until each owns partitions: the
// records produced afterwards are spread over all of them.
func (r *tsRun) startAll(t *testing.T, bin string, n int) {
	t.Helper()
	for i := range n {
		r.start(t, bin, i)
	}
	waitFor(t, 60*time.Second, r.name+": every process owns partitions", func() bool {
		var sum float64
		for _, p := range r.ps {
			a := sumMetric(p.get(t, "/metrics"), "canaryd_partitions_assigned")
			if a == 0 {
				return false
			}
			sum += a
		}
		return sum >= 2*tsPartitions // the events and spans topics (and, two-stage, partials)
	})
}

// statuses returns p's /v1/rollouts.
func statuses(t *testing.T, p *process) []detector.Status {
	t.Helper()
	var body struct{ Rollouts []detector.Status }
	if err := json.Unmarshal([]byte(p.get(t, "/v1/rollouts")), &body); err != nil {
		t.Fatal(err)
	}
	return body.Rollouts
}

// judgedBy returns the totals of the rollouts judged (windows > 0) by the
// live processes of the run, summed; per rollout the names of the processes
// that judged it and their window counts; and per rollout/version each
// judge's whole-rollout summary (every field order-independent: counts,
// sketch quantiles, integer token sums) in JSON.
func (r *tsRun) judgedBy(t *testing.T) (tally, map[string]map[string]int, map[string]string) {
	t.Helper()
	got, who, arms := tally{}, map[string]map[string]int{}, map[string]string{}
	for name, p := range r.ps {
		if p.cmd.ProcessState != nil {
			continue // killed or stopped
		}
		for _, st := range statuses(t, p) {
			if st.Windows == 0 || (st.Rollout != tsAA && st.Rollout != tsBad) {
				continue
			}
			if who[st.Rollout] == nil {
				who[st.Rollout] = map[string]int{}
			}
			who[st.Rollout][name] = st.Windows
			for _, v := range st.Totals {
				got.add(st.Rollout, v.Version, counts{int64(v.Requests), int64(v.Errors), int64(v.Sessions)})
				b, err := json.Marshal(v)
				if err != nil {
					t.Fatal(err)
				}
				arms[st.Rollout+"/"+v.Version] += string(b)
			}
		}
	}
	return got, who, arms
}

// checkForwarding: every live process answers GET /v1/rollouts/{rollout}
// with the status of the rollout's one judge (judged: process → windows),
// the others by forwarding the call to it (sink.JudgedByHeader names it).
func (r *tsRun) checkForwarding(t *testing.T, rollout string, judged map[string]int) {
	t.Helper()
	for _, name := range slices.Sorted(maps.Keys(r.ps)) {
		p := r.ps[name]
		var by string
		waitFor(t, 30*time.Second, name+" answers about "+rollout+" with its judge's status", func() bool {
			resp, err := http.Get("http://" + p.addr + "/v1/rollouts/" + rollout)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var st detector.Status
			if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&st) != nil {
				return false // 503 while the instances learn who owns what
			}
			by = resp.Header.Get(sink.JudgedByHeader)
			for _, w := range judged {
				return st.Windows == w
			}
			return false
		})
		_, here := judged[name]
		if here != (by == "") {
			t.Errorf("%s: judges %s here: %v, yet its reply names %q as the judge", name, rollout, here, by)
		}
		t.Logf("%s answers about %s (judged by: %q)", name, rollout, by)
	}
}

// terminate stops the run's live processes with SIGTERM, one after the
// other, and returns the totals they logged at exit: rollout/version → the
// line. A rollout's line from two processes is an error unless both say the
// same: a judge handed over while the processes stop (its state published
// by the one leaving the group, continued by the next) is logged by both.
func (r *tsRun) terminate(t *testing.T) map[string]exitTotals {
	t.Helper()
	out := map[string]exitTotals{}
	for _, name := range slices.Sorted(maps.Keys(r.ps)) {
		p := r.ps[name]
		if p.cmd.ProcessState != nil {
			continue
		}
		for k, v := range exitTotalsOf(p.terminate(t)) {
			if !strings.HasPrefix(k, tsAA+"/") && !strings.HasPrefix(k, tsBad+"/") {
				continue
			}
			if o, ok := out[k]; ok {
				if o != v {
					t.Errorf("%s: %s logged at exit with different totals: %+v, and %+v by %s", r.name, k, o, v, name)
				} else {
					t.Logf("%s: %s logged at exit again by %s (handed over while stopping), with the same totals", r.name, k, name)
				}
			}
			out[k] = v
		}
	}
	return out
}

// exitTotals is one "final totals" line that a canaryd logged at exit.
type exitTotals struct {
	counts
	windows       int
	final, digest string
}

// exitTotalsOf parses the per-version totals lines in a process's log:
// rollout/version → its line.
func exitTotalsOf(lines []string) map[string]exitTotals {
	out := map[string]exitTotals{}
	for _, l := range lines {
		if !strings.Contains(l, `msg="final totals"`) && !strings.Contains(l, `msg="rollout totals"`) {
			continue
		}
		f := map[string]string{}
		for _, kv := range strings.Fields(l) {
			if k, v, ok := strings.Cut(kv, "="); ok {
				f[k] = strings.Trim(v, `"`)
			}
		}
		n := func(k string) int64 { v, _ := strconv.ParseInt(f[k], 10, 64); return v }
		out[f["rollout"]+"/"+f["version"]] = exitTotals{counts{n("requests"), n("errors"), n("sessions")}, int(n("windows")), f["final"], f["digest"]}
	}
	return out
}

// controlOf reads a run's control topic and checks it: each command_id with
// one content (duplicates with the same content are counted, not errors),
// gap-free seqs; the A/A rollout has no command, the bad one exactly one
// distinct command, a rollback. It returns the bad rollout's rollback and
// how many records carry it.
func controlOf(t *testing.T, r *tsRun) (schemas.Command, int) {
	t.Helper()
	recs := readAllControl(t, r.brokers, r.tp.control)
	cmds, _ := checkOnce(t, recs)
	if cs := cmds[tsAA]; len(cs) != 0 {
		t.Errorf("%s: the A/A rollout got commands %s; want none", r.name, describeCmds(cs))
	}
	cs := cmds[tsBad]
	if len(cs) != 1 || cs[0].Action != schemas.ActionRollback {
		t.Errorf("%s: the bad rollout got commands %s; want one rollback", r.name, describeCmds(cs))
		return schemas.Command{}, 0
	}
	n := 0
	for _, rec := range recs {
		if rec.Cmd.CommandID == cs[0].CommandID {
			n++
		}
	}
	return cs[0], n
}

// TestTwoStageMatchesOneProcess judges a fixed OTLP dataset (90 s of event
// time of an A/A rollout and a bad canary, 40 sessions/s each, spread over
// six partitions by trace id) twice: by one canaryd, and by three canaryd in
// one group with two-stage aggregation, which all own partitions before the
// records are written. The three must judge as the one does: each rollout
// judged by exactly one of them (windows > 0); the same per-version totals
// (those the dataset holds), whole-rollout summaries (/v1/rollouts: counts,
// quantiles, tokens, error types) and aggregate digests (counts, sums and
// latency sketches, bit for bit); the A/A rollout not rolled back, the bad
// one rolled back; and the control topic holds that rollback once — not
// once per process. Windows close on event time (the dataset ends with
// closers), never on the wall clock. What the rollback says (its reason,
// evidence and decided_at) is not compared: a judge folds in the windows of
// six partitions in the order they arrive, which differs from run to run
// even with one process (decided at 00:00:49 in one run, 00:01:31 in
// another), so it is only logged.
//
// The test can fail: run (b) without --two-stage (newTSRun's twoStage
// false), it found each rollout judged by all three processes (windows
// 182, 182 and 181 of 551), each with about a third of the totals.
func TestTwoStageMatchesOneProcess(t *testing.T) {
	t.Parallel()
	bin := buildCanaryd(t)
	for _, kind := range kafkatest.Kinds() {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			brokers := kafkatest.Brokers(t, kind)
			judge := func(r *tsRun, n int) (map[string]exitTotals, map[string]string) {
				recs, want := tsDataset(r.spans, 40, 90*time.Second)
				checkHead(t, recs)
				produceRecords(t, brokers, recs[:tsHeadRecords])
				r.startAll(t, bin, n)
				ends := produceRecords(t, brokers, recs[tsHeadRecords:])
				if got := countOTLP(t, brokers, r.spans, ends, tsAA, tsBad); got.diff(want) != "" {
					t.Fatalf("%s: the spans topic holds other events than the generator counted:\n%s", r.name, got.diff(want))
				}
				start := time.Now()
				var (
					who  map[string]map[string]int
					arms map[string]string
				)
				waitFor(t, 90*time.Second, r.name+": every event judged", func() bool {
					var got tally
					got, who, arms = r.judgedBy(t)
					return got.diff(want) == ""
				})
				t.Logf("%s: %d events judged %v after the last was written; windows per process: %v", r.name, want.events(), time.Since(start).Round(time.Millisecond), who)
				for _, rollout := range []string{tsAA, tsBad} {
					if len(who[rollout]) != 1 {
						t.Errorf("%s: %s judged by %d processes %v; want 1", r.name, rollout, len(who[rollout]), who[rollout])
					}
				}
				if r.twoStage {
					r.checkForwarding(t, tsBad, who[tsBad])
				}
				return r.terminate(t), arms
			}
			// Without two stages, two processes each judge their share of
			// both rollouts, and each says so (Daemon.warnSplit).
			split := newTSRun(t, "split", brokers, false)
			recs, want := tsDataset(split.spans, 40, 90*time.Second)
			produceRecords(t, brokers, recs[:tsHeadRecords])
			split.startAll(t, bin, 2)
			produceRecords(t, brokers, recs[tsHeadRecords:])
			waitFor(t, 90*time.Second, "split: every event judged", func() bool {
				got, _, _ := split.judgedBy(t)
				return got.diff(want) == ""
			})
			for _, name := range slices.Sorted(maps.Keys(split.ps)) {
				p := split.ps[name]
				// Checked at each listing of the group (every 2 s).
				waitFor(t, 30*time.Second, "split: "+name+" counts both rollouts judged in shares", func() bool {
					return sumMetric(p.get(t, "/metrics"), "canaryd_rollouts_split") == 2
				})
				warned := 0
				for _, l := range p.lines() {
					if strings.Contains(l, "rollout spread over partitions that several instances share") {
						warned++
					}
				}
				if warned != 2 {
					t.Errorf("split: %s logged %d warnings about rollouts judged in shares; want 2", name, warned)
				}
			}
			for _, p := range split.ps {
				p.terminate(t) // each logs its own share's totals: not compared
			}

			one := newTSRun(t, "one", brokers, false)
			ref, refArms := judge(one, 1)
			two := newTSRun(t, "two", brokers, true)
			got, arms := judge(two, 3)

			if len(ref) != 4 {
				t.Fatalf("one process logged %d totals %v; want 4 (two rollouts, two versions)", len(ref), ref)
			}
			for _, k := range slices.Sorted(maps.Keys(ref)) {
				w, g := ref[k], got[k]
				t.Logf("%s: one process %v, %d windows, final %q, digest %s; two-stage %v, %d windows, final %q, digest %s",
					k, w.counts, w.windows, w.final, w.digest, g.counts, g.windows, g.final, g.digest)
				if g.counts != w.counts || g.digest != w.digest || g.final != w.final {
					t.Errorf("%s two-stage: %v, final %q, digest %s; want %v, final %q, digest %s as one process", k, g.counts, g.final, g.digest, w.counts, w.final, w.digest)
				}
				if arms[k] != refArms[k] {
					t.Errorf("%s two-stage summary in /v1/rollouts:\n  %s\nwant as one process:\n  %s", k, arms[k], refArms[k])
				}
				rollout, _, _ := strings.Cut(k, "/")
				if wantFinal := map[string]string{tsAA: "", tsBad: string(schemas.ActionRollback)}[rollout]; w.final != wantFinal {
					t.Errorf("%s: one process ended it %q; want %q", k, w.final, wantFinal)
				}
			}
			refCmd, _ := controlOf(t, one)
			cmd, n := controlOf(t, two)
			if n != 1 {
				t.Errorf("two-stage: the rollback is on the control topic %d times; want once", n)
			}
			if cmd.Action != refCmd.Action {
				t.Errorf("two-stage: the bad rollout ended %q; want %q as one process", cmd.Action, refCmd.Action)
			}
			t.Logf("one process: %s at %s; two-stage: %s at %s", refCmd.Reason, refCmd.DecidedAt.Format(time.TimeOnly), cmd.Reason, cmd.DecidedAt.Format(time.TimeOnly))
		})
	}
}

// paceRecords writes recs in order, each to its partition, spread evenly
// over about d of wall time, from a goroutine of its own. written counts the
// records acknowledged so far; done is closed once every record is (or
// writing failed, which fails the test). The goroutine is stopped and
// waited for when the test ends.
func paceRecords(t *testing.T, brokers []string, recs []*kgo.Record, d time.Duration) (written *atomic.Int64, done <-chan struct{}) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerLinger(5*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	written = new(atomic.Int64)
	ch := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		defer close(ch)
		start := time.Now()
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		next := 0
		for next < len(recs) {
			due := min(len(recs), int(float64(len(recs))*float64(time.Since(start))/float64(d))+1)
			if due > next {
				if err := cl.ProduceSync(ctx, recs[next:due]...).FirstErr(); err != nil {
					if ctx.Err() == nil {
						t.Errorf("writing the dataset: %v", err)
					}
					return
				}
				written.Store(int64(due))
				next = due
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	})
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		cl.Close()
	})
	return written, ch
}

// TestTwoStageKill9: three canaryd with two-stage aggregation in one group
// judge the fixed OTLP dataset (120 s of event time, written over 20 s of
// wall time). Once the bad rollout's judge has observed two windows of each
// partition (in the runs so far, before it decided the rollback), the process
// that owns it (windows > 0 in its /v1/rollouts) is killed with SIGKILL: no
// flush, no commit, no leaving the group. Another process continues that
// judge from the state it published — its window count goes on from the
// killed one's, not from zero — and at the end the surviving judges' totals
// equal the events of the topic exactly (nothing lost, nothing counted
// twice: what the killed process had read after its last commit is read
// again, and its partials again, and must be ignored); each rollout has one
// judge; the A/A rollout is not rolled back and gets no command; the bad
// one is rolled back; and the control topic holds one command per decision
// (a command_id twice is allowed only with the same content).
//
// The test can fail: without --two-stage (and without state directories),
// the survivors' totals lacked what the killed process had judged (304 to
// 374 requests of each rollout and version).
func TestTwoStageKill9(t *testing.T) {
	t.Parallel()
	bin := buildCanaryd(t)
	for _, kind := range kafkatest.Kinds() {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			brokers := kafkatest.Brokers(t, kind)
			r := newTSRun(t, "kill", brokers, true)
			recs, _ := tsDataset(r.spans, 40, 120*time.Second)
			checkHead(t, recs)
			produceRecords(t, brokers, recs[:tsHeadRecords])
			r.startAll(t, bin, 3)
			recs = recs[tsHeadRecords:]
			written, done := paceRecords(t, brokers, recs, 20*time.Second)

			// The bad rollout's judge, once it has observed windows.
			var (
				owner     string
				atKill    int
				finalKill string
			)
			var before map[string]map[string]int
			waitFor(t, 60*time.Second, "the bad rollout's judge has observed windows", func() bool {
				_, before, _ = r.judgedBy(t)
				for name, w := range before[tsBad] {
					if w >= 2*tsPartitions { // two windows of each partition: usually before the rollback

						owner, atKill = name, w
						return true
					}
				}
				return false
			})
			for _, st := range statuses(t, r.ps[owner]) {
				if st.Rollout == tsBad {
					finalKill = st.Final
				}
			}
			for _, rollout := range []string{tsAA, tsBad} {
				if len(before[rollout]) != 1 {
					t.Errorf("before the kill, %s judged by %d processes %v; want 1", rollout, len(before[rollout]), before[rollout])
				}
			}
			r.ps[owner].kill(t)
			killed := time.Now()
			t.Logf("killed %s, the bad rollout's judge, at %d windows (final %q), %d of %d records written",
				owner, atKill, finalKill, written.Load(), len(recs))
			if written.Load() == int64(len(recs)) {
				t.Errorf("the whole dataset was written before the kill; want the kill mid-stream")
			}

			// Another process continues the judge.
			var (
				next    string
				resumed int
			)
			waitFor(t, 60*time.Second, "another process judges the bad rollout", func() bool {
				_, who, _ := r.judgedBy(t)
				for name, w := range who[tsBad] {
					next, resumed = name, w
					return true
				}
				return false
			})
			t.Logf("%s continued the bad rollout's judge %v after the kill, at %d windows (the killed one had %d)",
				next, time.Since(killed).Round(time.Millisecond), resumed, atKill)
			// It continued from the state the killed one published, not from
			// zero: it says with how many windows.
			if n := continuedAt(r.ps[next].lines(), tsBad); n <= 0 {
				t.Errorf("%s did not log that it continued the bad rollout's judge from the published stage-2 state with windows > 0 (got %d)", next, n)
			} else {
				t.Logf("%s continued the judge from the published state at %d windows", next, n)
			}

			select {
			case <-done:
			case <-time.After(60 * time.Second):
				t.Fatal("the dataset not written within 60 s")
			}
			want := countOTLP(t, brokers, r.spans, endOffsets(t, brokers, r.spans), tsAA, tsBad)
			var (
				who  map[string]map[string]int
				last tally
			)
			if !pollUntil(90*time.Second, func() bool {
				last, who, _ = r.judgedBy(t)
				return last.diff(want) == ""
			}) {
				lost, twice := last.lostAndTwice(want)
				t.Fatalf("after 90 s the judges' totals differ from the events of the topic:\nlost:\n%s\ntwice:\n%s", lost, twice)
			}
			t.Logf("every one of the %d events judged %v after the kill; windows per process: %v", want.events(), time.Since(killed).Round(time.Millisecond), who)
			for _, rollout := range []string{tsAA, tsBad} {
				if len(who[rollout]) != 1 {
					t.Errorf("%s judged by %d processes %v; want 1", rollout, len(who[rollout]), who[rollout])
				}
			}
			if w := who[tsBad][next]; w < atKill {
				t.Errorf("%s ended the bad rollout's judge at %d windows, fewer than the killed %s had observed (%d): it did not continue from its state", next, w, owner, atKill)
			}
			got := r.terminate(t)
			for _, k := range slices.Sorted(maps.Keys(got)) {
				g := got[k]
				rollout, version, _ := strings.Cut(k, "/")
				t.Logf("%s: %v, %d windows, final %q, digest %s", k, g.counts, g.windows, g.final, g.digest)
				if g.counts != want[rollout][version] {
					t.Errorf("%s: totals at exit %v; the topic holds %v", k, g.counts, want[rollout][version])
				}
				if wantFinal := map[string]string{tsAA: "", tsBad: string(schemas.ActionRollback)}[rollout]; g.final != wantFinal {
					t.Errorf("%s: ended %q; want %q", k, g.final, wantFinal)
				}
			}
			if len(got) != 4 {
				t.Errorf("the survivors logged %d totals; want 4 (two rollouts, two versions)", len(got))
			}
			cmd, n := controlOf(t, r)
			t.Logf("the rollback (%d records with its id): %s at %s", n, cmd.Reason, cmd.DecidedAt.Format(time.TimeOnly))
		})
	}
}

// continuedAt returns the windows with which a process's log says it
// continued a rollout's judge from the published stage-2 state (the last
// such line), or -1.
func continuedAt(lines []string, rollout string) int {
	n := -1
	for _, l := range lines {
		if !strings.Contains(l, `msg="judge continues from the published stage-2 state"`) || !strings.Contains(l, " rollout="+rollout+" ") {
			continue
		}
		if _, w, ok := strings.Cut(l, " windows="); ok {
			if v, err := strconv.Atoi(strings.Fields(w)[0]); err == nil {
				n = v
			}
		}
	}
	return n
}

// pollUntil polls cond every 100 ms until it holds (true) or timeout passes
// (false).
func pollUntil(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(100 * time.Millisecond)
	}
	return true
}
