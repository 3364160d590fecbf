package daemon_test

// Integration tests of GitHub issue 3: canaryd against third-party clients
// (kcat), a broker outage, topics missing at start, and two instances sharing
// one consumer group. They reuse the helpers of daemon_test.go.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/inferensys/canaryd/detector"
	"github.com/inferensys/canaryd/internal/daemon"
	"github.com/inferensys/canaryd/internal/kafkatest"
	"github.com/inferensys/canaryd/loadtest"
	"github.com/inferensys/canaryd/schemas"
	"github.com/inferensys/canaryd/window"
)

// instance is one canaryd that a test runs in-process and may stop the way
// SIGTERM stops the binary: by cancelling Run's context.
type instance struct {
	d      *daemon.Daemon
	ms     *metrics.Set
	cancel context.CancelFunc
	done   chan error
	err    error
	exited bool
}

// testConfig is startDaemon's configuration: 1 s windows, 500 ms lateness.
func testConfig(t *testing.T, brokers []string, tp topics, specs string) daemon.Config {
	t.Helper()
	ss, err := detector.ParseSpecs("test.yaml", []byte(specs))
	if err != nil {
		t.Fatal(err)
	}
	return daemon.Config{
		Brokers: brokers, EventsTopic: tp.events, ControlTopic: tp.control, DLQTopic: tp.dlq,
		Group: tp.events + ".group", Partitions: 3, Specs: ss, HTTPAddr: "127.0.0.1:0",
		Window:  window.Options{Width: time.Second, Lateness: 500 * time.Millisecond},
		Metrics: metrics.NewSet(),
	}
}

// runDaemon starts canaryd with cfg and waits until it is ready. It is
// stopped when the test ends unless the test stops it first.
func runDaemon(t *testing.T, cfg daemon.Config) *instance {
	t.Helper()
	if cfg.Metrics == nil {
		cfg.Metrics = metrics.NewSet()
	}
	d, err := daemon.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	in := &instance{d: d, ms: cfg.Metrics, cancel: cancel, done: make(chan error, 1)}
	go func() { in.done <- d.Run(ctx) }()
	t.Cleanup(func() {
		if err := in.stop(t); err != nil {
			t.Errorf("daemon.Run: %v", err)
		}
	})
	waitReady(t, d)
	return in
}

// stop cancels Run's context, as SIGTERM does, and waits for Run to return:
// the partitions' windows are flushed to the judges and the offsets
// committed. It returns Run's error; the judges can still be read.
func (in *instance) stop(t *testing.T) error {
	t.Helper()
	if in.exited {
		return in.err
	}
	in.cancel()
	select {
	case in.err = <-in.done:
	case <-time.After(2 * time.Minute):
		t.Fatal("daemon.Run did not return within 2 minutes of its context's end")
	}
	in.exited = true
	return in.err
}

func (in *instance) metric(name string) float64 {
	var sb strings.Builder
	in.ms.WritePrometheus(&sb)
	return sumMetric(sb.String(), name)
}

// counts is what a test compares per rollout and version: requests, their
// errors, and sessions (agent events).
type counts struct{ Requests, Errors, Sessions int64 }

func (c counts) String() string {
	return fmt.Sprintf("%d requests, %d errors, %d sessions", c.Requests, c.Errors, c.Sessions)
}

// tally is rollout → version → counts.
type tally map[string]map[string]counts

func (t tally) add(rollout, version string, c counts) {
	m := t[rollout]
	if m == nil {
		m = map[string]counts{}
		t[rollout] = m
	}
	o := m[version]
	m[version] = counts{o.Requests + c.Requests, o.Errors + c.Errors, o.Sessions + c.Sessions}
}

func (t tally) merge(o tally) tally {
	out := tally{}
	for _, src := range []tally{t, o} {
		for r, vs := range src {
			for v, c := range vs {
				out.add(r, v, c)
			}
		}
	}
	return out
}

func (t tally) events() int64 {
	var n int64
	for _, vs := range t {
		for _, c := range vs {
			n += c.Requests + c.Sessions
		}
	}
	return n
}

// diff describes how got differs from want, or returns "".
func (t tally) diff(want tally) string {
	var out []string
	rs := slices.Sorted(maps.Keys(want.merge(t)))
	for _, r := range rs {
		vs := slices.Sorted(maps.Keys(want.merge(t)[r]))
		for _, v := range vs {
			if g, w := t[r][v], want[r][v]; g != w {
				out = append(out, fmt.Sprintf("%s/%s: got %v; want %v", r, v, g, w))
			}
		}
	}
	return strings.Join(out, "\n")
}

// lostAndTwice describes, per rollout and version, what got lacks from
// want and what it counts beyond want; "" when nothing.
func (t tally) lostAndTwice(want tally) (lost, twice string) {
	var ls, ts []string
	all := want.merge(t)
	for _, r := range slices.Sorted(maps.Keys(all)) {
		for _, v := range slices.Sorted(maps.Keys(all[r])) {
			g, w := t[r][v], want[r][v]
			d := counts{g.Requests - w.Requests, g.Errors - w.Errors, g.Sessions - w.Sessions}
			neg := counts{max(-d.Requests, 0), max(-d.Errors, 0), max(-d.Sessions, 0)}
			pos := counts{max(d.Requests, 0), max(d.Errors, 0), max(d.Sessions, 0)}
			if neg != (counts{}) {
				ls = append(ls, fmt.Sprintf("%s/%s: %v fewer (judged %v; produced %v)", r, v, neg, g, w))
			}
			if pos != (counts{}) {
				ts = append(ts, fmt.Sprintf("%s/%s: %v more (judged %v; produced %v)", r, v, pos, g, w))
			}
		}
	}
	return strings.Join(ls, "\n"), strings.Join(ts, "\n")
}

// judged returns canaryd's per-version totals of the rollouts: the events of
// every window that reached its judges.
func judged(d *daemon.Daemon, rollouts ...string) tally {
	out := tally{}
	for _, r := range rollouts {
		st, ok := d.Status(r)
		if !ok {
			continue
		}
		for _, a := range st.Totals {
			out.add(r, a.Version, counts{int64(a.Requests), int64(a.Errors), int64(a.Sessions)})
		}
	}
	return out
}

// producedBy converts a fleet's acknowledged counts.
func producedBy(f *loadtest.Fleet) tally {
	out := tally{}
	for r, vs := range f.Produced() {
		for v, c := range vs {
			if c.Events > 0 {
				out.add(r, v, counts{c.Requests, c.Errors, c.Sessions})
			}
		}
	}
	return out
}

// waitJudged waits until canaryd's totals equal want.
func waitJudged(t *testing.T, d *daemon.Daemon, want tally, timeout time.Duration) {
	t.Helper()
	rollouts := slices.Sorted(maps.Keys(want))
	deadline := time.Now().Add(timeout)
	for {
		got := judged(d, rollouts...)
		diff := got.diff(want)
		if diff == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v canaryd's totals differ from what was produced:\n%s", timeout, diff)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// controlRecord is one record of the control topic, decoded.
type controlRecord struct {
	Key    string
	Value  []byte
	Offset int64
	Cmd    schemas.Command
}

// readControl reads the whole control topic (one partition) with a client of
// its own until stop says enough or the timeout passes.
func readControl(t *testing.T, brokers []string, topic string, timeout time.Duration, stop func([]controlRecord) bool) []controlRecord {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var got []controlRecord
	for ctx.Err() == nil && !stop(got) {
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
			cr := controlRecord{Key: string(r.Key), Value: r.Value, Offset: r.Offset}
			if err := json.Unmarshal(r.Value, &cr.Cmd); err != nil {
				t.Errorf("control record at offset %d does not decode: %v: %s", r.Offset, err, r.Value)
				return
			}
			got = append(got, cr)
		})
	}
	return got
}

// readAllControl reads the control topic up to its current end.
func readAllControl(t *testing.T, brokers []string, topic string) []controlRecord {
	t.Helper()
	end := endOffset(t, brokers, topic)
	return readControl(t, brokers, topic, 60*time.Second, func(rs []controlRecord) bool {
		return end == 0 || len(rs) > 0 && rs[len(rs)-1].Offset+1 >= end
	})
}

// endOffset returns the end offset of a one-partition topic.
func endOffset(t *testing.T, brokers []string, topic string) int64 {
	t.Helper()
	return endOffsets(t, brokers, topic)[0]
}

// endOffsets returns the end offset of each partition of topic.
func endOffsets(t *testing.T, brokers []string, topic string) map[int32]int64 {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	offs, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	if err == nil {
		err = offs.Error()
	}
	if err != nil {
		t.Fatalf("end offsets of %s: %v", topic, err)
	}
	out := map[int32]int64{}
	offs.Each(func(o kadm.ListedOffset) { out[o.Partition] = o.Offset })
	return out
}

// checkOnce checks the control topic as a router that drops duplicate
// command_ids sees it: every command is valid and keyed by its rollout; a
// command_id that appears twice has the same content both times (otherwise
// the duplicate is a different decision under the same id); and after
// dropping duplicates, each rollout's set_weight seqs run 1, 2, 3, … without
// a gap, in topic order, and a final command (promote or rollback) comes last,
// alone, with a higher seq. It returns the deduplicated commands per rollout
// and how many duplicates with the same content it dropped (those with
// different content are errors).
func checkOnce(t *testing.T, recs []controlRecord) (map[string][]schemas.Command, int) {
	t.Helper()
	first := map[string]controlRecord{}
	out := map[string][]schemas.Command{}
	dups := 0
	for _, r := range recs {
		c := r.Cmd
		if err := c.Validate(); err != nil {
			t.Errorf("offset %d: invalid command: %v", r.Offset, err)
		}
		if r.Key != c.Rollout {
			t.Errorf("offset %d: key %q; want the rollout %q", r.Offset, r.Key, c.Rollout)
		}
		if f, ok := first[c.CommandID]; ok {
			if !bytes.Equal(f.Value, r.Value) {
				t.Errorf("command_id %s at offsets %d and %d with different content:\n  %s %s seq %d weight %d decided %s: %s\n  %s %s seq %d weight %d decided %s: %s",
					c.CommandID, f.Offset, r.Offset,
					f.Cmd.Rollout, f.Cmd.Action, f.Cmd.Seq, f.Cmd.Weight, f.Cmd.DecidedAt.Format(time.RFC3339Nano), f.Cmd.Reason,
					c.Rollout, c.Action, c.Seq, c.Weight, c.DecidedAt.Format(time.RFC3339Nano), c.Reason)
			} else {
				dups++
				t.Logf("duplicate command_id %s (same content) at offsets %d and %d", c.CommandID, f.Offset, r.Offset)
			}
			continue
		}
		first[c.CommandID] = r
		out[c.Rollout] = append(out[c.Rollout], c)
	}
	for r, cs := range out {
		for i, c := range cs {
			switch {
			case i > 0 && isFinal(cs[i-1]):
				t.Errorf("%s: %s seq %d after the final %s", r, c.Action, c.Seq, cs[i-1].Action)
			case !isFinal(c) && c.Seq != uint64(i+1):
				t.Errorf("%s: command %d is %s seq %d; want seq %d (gap-free from 1)", r, i, c.Action, c.Seq, i+1)
			case isFinal(c) && i > 0 && c.Seq <= cs[i-1].Seq:
				t.Errorf("%s: final %s seq %d after seq %d; want increasing", r, c.Action, c.Seq, cs[i-1].Seq)
			}
		}
	}
	return out, dups
}

func isFinal(c schemas.Command) bool {
	return c.Action == schemas.ActionPromote || c.Action == schemas.ActionRollback
}

func describeCmds(cs []schemas.Command) string {
	var desc []string
	for _, c := range cs {
		desc = append(desc, fmt.Sprintf("%d:%s@%d", c.Seq, c.Action, c.Weight))
	}
	return strings.Join(desc, " ")
}

// kcatEvents writes n events of rollout as kcat -K '\t' input lines (key,
// tab, JSON value), at event times from ts on, 1 ms apart, and counts them.
// Versions alternate v1/v2; every 5th event is an llm call, every 7th a
// session (agent) event, every 9th request fails.
func kcatEvents(buf *bytes.Buffer, rollout string, ts time.Time, n int, sent tally) {
	for i := range n {
		v := []string{"v1", "v2"}[i%2]
		at := ts.Add(time.Duration(i) * time.Millisecond).UnixNano()
		switch {
		case i%7 == 0:
			ok := i%3 != 0
			fmt.Fprintf(buf, "%s\t{\"rollout\":%q,\"version\":%q,\"kind\":\"agent\",\"name\":%q,\"ts\":%d,\"duration_ms\":%d,\"outcome\":{\"success\":%t}}\n",
				rollout, rollout, v, rollout, at, 100+i%50, ok)
			sent.add(rollout, v, counts{Sessions: 1})
		default:
			kind, name := "tool", "search"
			if i%5 == 0 {
				kind, name = "llm", "gpt-x"
			}
			status, c := "ok", counts{Requests: 1}
			if i%9 == 0 {
				status, c.Errors = "error", 1
			}
			fmt.Fprintf(buf, "%s\t{\"rollout\":%q,\"version\":%q,\"kind\":%q,\"name\":%q,\"ts\":%d,\"duration_ms\":%d.5,\"status\":%q}\n",
				rollout, rollout, v, kind, name, at, 10+i%40, status)
			sent.add(rollout, v, c)
		}
	}
}

// needReal skips a test of the real broker only when CANARYD_KAFKA excludes
// it (make test-short), as kafkatest's TestOwnRestart does; otherwise
// kafkatest.Real and Own fail the test when there is no broker.
func needReal(t *testing.T) {
	t.Helper()
	if !slices.Contains(kafkatest.Kinds(), kafkatest.KindReal) {
		t.Skipf("CANARYD_KAFKA=%s excludes %s", os.Getenv("CANARYD_KAFKA"), kafkatest.KindReal)
	}
}

// kcatPath returns Debian's kcat. Its absence fails the test: these tests
// are part of make test, and .ci/run installs kcat.
func kcatPath(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("kcat")
	if err != nil {
		t.Fatalf("kcat is required by this test and is not installed (%v): apt-get install kcat (.ci/run installs it)", err)
	}
	return p
}

func runKcat(t *testing.T, kcat string, stdin []byte, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, kcat, args...)
	cmd.Stdin = bytes.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("kcat %s: %v\nstderr: %s", strings.Join(args, " "), err, stderr.Bytes())
	}
	if s := strings.TrimSpace(stderr.String()); s != "" {
		t.Logf("kcat %s: stderr: %s", args[0], s)
	}
	return stdout.Bytes()
}

// TestKcat has Debian's kcat (librdkafka) on both sides of canaryd: it
// produces JSON-lines events with lz4 and with zstd compression, keyed by
// rollout, which canaryd counts exactly and judges (the first set_weight of
// each rollout goes out); and kcat -C reads canaryd's commands back, which
// decode as schemas.Command.
func TestKcat(t *testing.T) {
	t.Parallel()
	needReal(t)
	kcat := kcatPath(t)
	brokers := kafkatest.Real(t)
	tp := newTopics(t)
	codecs := []string{"lz4", "zstd"}
	var specs strings.Builder
	for _, c := range codecs {
		fmt.Fprintf(&specs, "---\nrollout: kcat-%s\nbaseline: v1\ncanary: v2\nsteps: [{weight: 10, min_duration: 1h}]\n", c)
	}
	in := runDaemon(t, testConfig(t, brokers, tp, specs.String()))

	// One time line for both runs, so that no event is behind a partition's
	// watermark whichever partitions the two rollouts hash to.
	const n = 700
	start := time.Now()
	sent := tally{}
	for i, c := range codecs {
		var buf bytes.Buffer
		kcatEvents(&buf, "kcat-"+c, start.Add(time.Duration(i*n)*time.Millisecond), n, sent)
		runKcat(t, kcat, buf.Bytes(), "-P", "-b", strings.Join(brokers, ","), "-t", tp.events, "-K", `\t`, "-z", c)
	}
	waitJudged(t, in.d, sent, 30*time.Second)
	for _, r := range slices.Sorted(maps.Keys(sent)) {
		t.Logf("%s: kcat sent and canaryd counted %v", r, sent[r])
	}
	// The HTTP API says the same.
	var body struct{ Rollouts []detector.Status }
	getJSON(t, "http://"+in.d.HTTPAddr()+"/v1/rollouts", &body)
	api := tally{}
	for _, st := range body.Rollouts {
		for _, a := range st.Totals {
			api.add(st.Rollout, a.Version, counts{int64(a.Requests), int64(a.Errors), int64(a.Sessions)})
		}
	}
	if diff := api.diff(sent); diff != "" {
		t.Errorf("/v1/rollouts totals differ from what kcat sent:\n%s", diff)
	}
	if rej := in.metric("canaryd_records_rejected_total"); rej != 0 {
		t.Errorf("%v of kcat's records rejected; want 0", rej)
	}

	// The records are as kcat wrote them: keyed by rollout, compressed with
	// the codec asked for.
	codecOf := map[string]uint8{"lz4": 3, "zstd": 4} // Kafka's record batch compression attribute
	rd, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(tp.events), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	seen := 0
	for seen < len(codecs)*n && ctx.Err() == nil {
		rd.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
			seen++
			codec, ok := strings.CutPrefix(string(r.Key), "kcat-")
			if !ok || !bytes.Contains(r.Value, []byte(`"rollout":"`+string(r.Key)+`"`)) {
				t.Fatalf("record key %q does not name the rollout of %s", r.Key, r.Value)
			}
			if got := r.Attrs.CompressionType(); got != codecOf[codec] {
				t.Fatalf("record of %s stored with compression %d; want %d (%s)", r.Key, got, codecOf[codec], codec)
			}
		})
	}
	if seen != len(codecs)*n {
		t.Fatalf("read back %d of kcat's records; want %d", seen, len(codecs)*n)
	}

	// kcat reads the commands back; each rollout's first set_weight is there.
	var cmds map[string]schemas.Command
	deadline := time.Now().Add(30 * time.Second)
	for len(cmds) < len(codecs) {
		if time.Now().After(deadline) {
			t.Fatalf("kcat -C read commands for %d rollouts after 30s; want %d", len(cmds), len(codecs))
		}
		out := runKcat(t, kcat, nil, "-C", "-b", strings.Join(brokers, ","), "-t", tp.control, "-o", "beginning", "-e", "-q", "-J")
		cmds = map[string]schemas.Command{}
		for line := range bytes.Lines(out) {
			var env struct {
				Key     *string `json:"key"`
				Payload *string `json:"payload"`
			}
			if err := json.Unmarshal(line, &env); err != nil || env.Payload == nil || env.Key == nil {
				t.Fatalf("kcat -J line does not decode (%v): %s", err, line)
			}
			dec := json.NewDecoder(strings.NewReader(*env.Payload))
			dec.DisallowUnknownFields()
			var c schemas.Command
			if err := dec.Decode(&c); err != nil {
				t.Fatalf("command read by kcat does not decode as schemas.Command: %v: %s", err, *env.Payload)
			}
			if err := c.Validate(); err != nil {
				t.Errorf("command read by kcat is invalid: %v: %s", err, *env.Payload)
			}
			if *env.Key != c.Rollout {
				t.Errorf("command key %q; want the rollout %q", *env.Key, c.Rollout)
			}
			if _, dup := cmds[c.Rollout]; dup {
				t.Errorf("%s: more than one command: %s", c.Rollout, *env.Payload)
			}
			cmds[c.Rollout] = c
		}
		if len(cmds) < len(codecs) {
			time.Sleep(500 * time.Millisecond)
		}
	}
	for _, c := range codecs {
		r := "kcat-" + c
		got := cmds[r]
		if got.Action != schemas.ActionSetWeight || got.Weight != 10 || got.Seq != 1 || got.Step != 0 || got.Baseline != "v1" || got.Canary != "v2" {
			t.Errorf("%s: kcat read %s seq %d step %d weight %d (%s→%s); want set_weight seq 1 step 0 weight 10 (v1→v2)",
				r, got.Action, got.Seq, got.Step, got.Weight, got.Baseline, got.Canary)
		}
		t.Logf("%s: kcat read %s %d%% seq %d: %s", r, got.Action, got.Weight, got.Seq, got.Reason)
	}
}

// TestTopicsMissingAtStart starts canaryd on topics that do not exist: it
// creates them (the control topic compacted); with NoCreateTopics it refuses
// to start and says what to create, and starts once they exist.
func TestTopicsMissingAtStart(t *testing.T) {
	t.Parallel()
	for _, kind := range kafkatest.Kinds() {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			brokers := kafkatest.Brokers(t, kind)
			tp := newTopics(t)
			cfg := testConfig(t, brokers, tp, "rollout: topics\nbaseline: v1\ncanary: v2\nsteps: [{weight: 10}]\n")
			cfg.Partitions = 4
			in := runDaemon(t, cfg)

			cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			adm := kadm.NewClient(cl)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			td, err := adm.ListTopics(ctx, tp.events, tp.control, tp.dlq)
			if err != nil {
				t.Fatal(err)
			}
			for name, want := range map[string]int{tp.events: 4, tp.control: 1, tp.dlq: 1} {
				d, ok := td[name]
				switch {
				case !ok || d.Err != nil:
					t.Errorf("topic %s not created (%v)", name, d.Err)
				case len(d.Partitions) != want:
					t.Errorf("topic %s has %d partitions; want %d", name, len(d.Partitions), want)
				}
			}
			rcs, err := adm.DescribeTopicConfigs(ctx, tp.control, tp.dlq)
			if err != nil {
				t.Fatal(err)
			}
			policy := func(topic string) string {
				rc, err := rcs.On(topic, nil)
				if err != nil || rc.Err != nil {
					t.Fatalf("describe configs of %s: %v %v", topic, err, rc.Err)
				}
				for _, c := range rc.Configs {
					if c.Key == "cleanup.policy" {
						return c.MaybeValue()
					}
				}
				return ""
			}
			if got := policy(tp.control); got != "compact" {
				t.Errorf("control topic cleanup.policy=%q; want compact", got)
			}
			if got := policy(tp.dlq); got != "delete" {
				t.Errorf("DLQ topic cleanup.policy=%q; want delete", got)
			}
			if err := in.stop(t); err != nil {
				t.Fatal(err)
			}

			// NoCreateTopics on fresh names: Run fails at once, naming each
			// topic and how to create it, and creates nothing (not even
			// through the broker's auto-creation).
			fresh := newTopics(t)
			cfg = testConfig(t, brokers, fresh, "rollout: topics\nbaseline: v1\ncanary: v2\nsteps: [{weight: 10}]\n")
			cfg.NoCreateTopics = true
			d, err := daemon.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			rctx, rcancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer rcancel()
			err = d.Run(rctx)
			if err == nil || rctx.Err() != nil {
				t.Fatalf("Run with NoCreateTopics on missing topics returned %v (context: %v); want an error at once", err, rctx.Err())
			}
			msg := err.Error()
			t.Logf("Run: %v", msg)
			for _, want := range []string{
				"kafka-topics.sh --create --topic " + fresh.events + " --partitions 3",
				"kafka-topics.sh --create --topic " + fresh.control + " --partitions 1",
				"cleanup.policy=compact",
				"kafka-topics.sh --create --topic " + fresh.dlq + " --partitions 1",
			} {
				if !strings.Contains(msg, want) {
					t.Errorf("error does not say %q", want)
				}
			}
			td, err = adm.ListTopics(ctx, fresh.events, fresh.control, fresh.dlq)
			if err != nil {
				t.Fatal(err)
			}
			for _, d := range td {
				if d.Err == nil {
					t.Errorf("topic %s exists after a run with NoCreateTopics", d.Topic)
				}
			}

			// NoCreateTopics on the topics made above: it starts.
			cfg = testConfig(t, brokers, tp, "rollout: topics\nbaseline: v1\ncanary: v2\nsteps: [{weight: 10}]\n")
			cfg.NoCreateTopics = true
			cfg.Group += ".again"
			runDaemon(t, cfg)
		})
	}
}

// waitConsumed waits until in has consumed every record of topic: as many
// records as the topic holds, and no lag on any partition.
func waitConsumed(t *testing.T, in *instance, brokers []string, topic string, timeout time.Duration) {
	t.Helper()
	var total int64
	for _, end := range endOffsets(t, brokers, topic) {
		total += end
	}
	waitFor(t, timeout, fmt.Sprintf("canaryd consumed the %d records of %s", total, topic), func() bool {
		return in.metric("canaryd_records_total") >= float64(total) && in.metric("canaryd_consumer_lag") == 0
	})
}

// closeWindows writes, to each of the topic's partitions, three events (the
// watermark's quorum) of an unjudged rollout 30 s ahead (inside the
// 1-minute future limit): the watermark passes every window of the stream
// before them, which then closes (with checkpoints, open windows are saved
// at shutdown rather than flushed).
func closeWindows(t *testing.T, brokers []string, topic string, partitions int32) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var ev schemas.Event
	ev.Rollout, ev.Version, ev.Kind, ev.Name, ev.TS = []byte("zz-close"), []byte("v1"), schemas.KindOther, []byte("close"), time.Now().Add(30*time.Second).UnixNano()
	for p := range partitions {
		for range 3 {
			if err := cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Partition: p, Value: schemas.AppendEvent(nil, &ev)}).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// TestBrokerOutage stops canaryd's (own) broker for 20 seconds mid-stream,
// with SIGKILL, and starts it again on the same ports and data. canaryd
// reconnects by itself and loses no event: its per-version totals equal what
// the fleet's producer had acknowledged, none fewer, none judged twice (the
// client reports the partitions lost; canaryd saves their checkpoints and,
// given them back, resumes from there); and the control topic holds every
// command once: no command_id with two contents, gap-free seqs. Windows of
// 1 s with the default idle rule (3 s): the rule is held while fetches fail,
// so the backlog the producers deliver after the outage is not dropped late.
func TestBrokerOutage(t *testing.T) {
	t.Parallel()
	needReal(t)
	const outage = 20 * time.Second
	b := kafkatest.Own(t)
	brokers := b.Addrs()
	tp := newTopics(t)
	good, bad, _ := groupRollouts(3, []int{0}, []int{1})
	all := slices.Concat(good, bad)
	cfg := testConfig(t, brokers, tp, groupSpecs(all...))
	cfg.StateDir, cfg.StateTopic, cfg.CheckpointInterval = t.TempDir(), tp.events+".state", 500*time.Millisecond
	cfg.Logger = testLogger(t, "canaryd")
	in := runDaemon(t, cfg)
	// 15 sessions/s per rollout: ≈ 200 events/s, so that the fleet's
	// producer buffers (MaxInFlight 10000) the whole outage, restart
	// included, without blocking.
	fleet := groupFleet(t, brokers, tp, good, bad, 15)
	stopFleet := runFleet(t, fleet)
	waitFor(t, 30*time.Second, "every rollout's first command", func() bool {
		for _, r := range all {
			if len(fleet.Commands(r)) == 0 {
				return false
			}
		}
		return true
	})
	time.Sleep(2 * time.Second)

	before := in.metric("canaryd_records_total")
	down := time.Now()
	b.Kill(t)
	t.Logf("broker killed after %.0f records consumed (kill took %v)", before, time.Since(down).Round(time.Millisecond))
	time.Sleep(outage - time.Since(down))
	atRestart := in.metric("canaryd_records_total")
	t0 := time.Now()
	b.Restart(t)
	up := time.Now()
	t.Logf("broker down %v; restart took %v; canaryd consumed %.0f records meanwhile", up.Sub(down).Round(time.Millisecond), up.Sub(t0).Round(time.Millisecond), atRestart-before)
	reconnect := waitFor(t, 60*time.Second, "canaryd consuming again", func() bool {
		return in.metric("canaryd_records_total") > atRestart
	})
	t.Logf("canaryd consuming again %v after the broker answered", reconnect.Round(time.Millisecond))

	time.Sleep(5 * time.Second)
	stopFleet()
	produced := producedBy(fleet)
	closeWindows(t, brokers, tp.events, 3)
	waitConsumed(t, in, brokers, tp.events, 60*time.Second)
	waitFor(t, 30*time.Second, "every produced event judged", func() bool {
		lost, _ := judged(in.d, all...).lostAndTwice(produced)
		return lost == ""
	})
	if err := in.stop(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
	got := judged(in.d, all...)
	t.Logf("produced %d events (acknowledged), judged %d; %v late, %v fetch errors", produced.events(), got.events(),
		in.metric("canaryd_events_late_total"), in.metric("canaryd_fetch_errors_total"))
	lost, twice := got.lostAndTwice(produced)
	if lost != "" {
		t.Errorf("events lost (canaryd's totals below what the fleet produced):\n%s", lost)
	}
	if twice != "" {
		t.Errorf("events judged twice (canaryd's totals above what the fleet produced):\n%s", twice)
	}

	// No command twice, not even with the same content: the command
	// producer is idempotent and retries on its own client until the broker
	// has the record (the broker keeps its producer state across the
	// restart), and sink.Control reads the topic before each send.
	cmds, dups := checkOnce(t, readAllControl(t, brokers, tp.control))
	if dups != 0 {
		t.Errorf("%d duplicate commands with the same content after the outage; want 0", dups)
	}
	for _, r := range all {
		t.Logf("%s: %s", r, describeCmds(cmds[r]))
	}
}
