package daemon_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/inferensys/canaryd/detector"
	"github.com/inferensys/canaryd/internal/kafkatest"
	"github.com/inferensys/canaryd/loadtest"
	"github.com/inferensys/canaryd/schemas"
)

// testLogger logs to t, each line prefixed with name.
func testLogger(t *testing.T, name string) *slog.Logger {
	return slog.New(slog.NewTextHandler(tLogWriter{t, name}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type tLogWriter struct {
	t    *testing.T
	name string
}

func (w tLogWriter) Write(p []byte) (int, error) {
	w.t.Log(w.name + ": " + strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// groupRollouts names good and bad rollouts whose keys the default
// partitioner sends to the given partitions of a topic of n partitions (one
// rollout each), and returns each one's partition. In a group of two the
// first instance keeps partitions 0–2 and the second gets 3–5 (the tests
// work whatever the split; they exercise more with this one).
func groupRollouts(n int, goodParts, badParts []int) (good, bad []string, partition map[string]int32) {
	p := kgo.StickyKeyPartitioner(nil).ForTopic("")
	partition = map[string]int32{}
	pick := func(prefix string, parts []int) []string {
		var out []string
		for _, want := range parts {
			for i := 0; ; i++ {
				name := fmt.Sprintf("%s-%d", prefix, i)
				if p.Partition(&kgo.Record{Key: []byte(name)}, n) == want {
					partition[name] = int32(want)
					out = append(out, name)
					break
				}
			}
		}
		return out
	}
	return pick("good", goodParts), pick("bad", badParts), partition
}

// groupSpecs are three-step specs (50%, 75%, promote) with short steps and
// wide margins, so that a good canary is promoted within seconds at the
// fleet's rate. Alpha bounds the chance that a good canary is rolled back,
// which would fail the test: a good rollout (named good-*) gets alpha 1e-5,
// so that each test that asserts its promotion (one good rollout per kind
// of Kafka) fails that way with chance ≤ 2e-5. (At 0.01 a CI run failed on
// "good-7 rolled back: error rate 1.67% vs 0.59%, e=371 ≥ 312".) A bad one
// keeps alpha 0.001: its rollback (errors ×4, tool latency ×1.5) needs power,
// not a small alpha.
func groupSpecs(rollouts ...string) string {
	var b strings.Builder
	for _, r := range rollouts {
		alpha := "0.001"
		if strings.HasPrefix(r, "good") {
			alpha = "0.00001"
		}
		fmt.Fprintf(&b, `---
rollout: %s
baseline: v1
canary: v2
alpha: %s
steps:
  - {weight: 50, min_duration: 2s, min_canary_events: 200}
  - {weight: 75, min_duration: 2s, min_canary_events: 200}
  - {weight: 100}
metrics: {error_rate: {margin: 4.0}, latency_p95: {margin: 0.3}}
`, r, alpha)
	}
	return b.String()
}

// groupFleet is a fleet of the good and bad rollouts at a modest rate.
func groupFleet(t *testing.T, brokers []string, tp topics, good, bad []string, rate float64) *loadtest.Fleet {
	t.Helper()
	okP := loadtest.DefaultProfile()
	badP := loadtest.DefaultProfile()
	badP.ErrorRateMult = 4
	badP.ToolLatencyMult = 1.5
	var rs []loadtest.Rollout
	for _, r := range good {
		rs = append(rs, loadtest.Rollout{Name: r, Baseline: "v1", Canary: "v2", BaselineProfile: okP, CanaryProfile: okP, Rate: rate})
	}
	for _, r := range bad {
		rs = append(rs, loadtest.Rollout{Name: r, Baseline: "v1", Canary: "v2", BaselineProfile: okP, CanaryProfile: badP, Rate: rate})
	}
	f, err := loadtest.NewFleet(loadtest.FleetConfig{Brokers: brokers, EventsTopic: tp.events, ControlTopic: tp.control, Seed: 11, Rollouts: rs})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// runFleet runs f until the returned stop is called; stop waits for Run
// (which flushes) and fails the test on a produce error.
func runFleet(t *testing.T, f *loadtest.Fleet) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := f.Run(ctx); err != nil {
			t.Errorf("fleet: %v", err)
		}
	})
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			wg.Wait()
			if n := f.Failed(); n > 0 {
				t.Errorf("fleet: %d records failed to produce", n)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// waitFor polls cond every 100 ms until it holds or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > timeout {
			t.Fatalf("%s: not after %v", what, timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return time.Since(start)
}

func allFinal(f *loadtest.Fleet, rollouts []string) bool {
	for _, r := range rollouts {
		cs := f.Commands(r)
		if len(cs) == 0 || !isFinal(cs[len(cs)-1]) {
			return false
		}
	}
	return true
}

// checkFinals checks each rollout's last command after deduplication:
// promote for good, rollback for bad.
func checkFinals(t *testing.T, cmds map[string][]schemas.Command, good, bad []string) {
	t.Helper()
	for _, r := range slices.Concat(good, bad) {
		want := schemas.ActionPromote
		if slices.Contains(bad, r) {
			want = schemas.ActionRollback
		}
		t.Logf("%s: %s", r, describeCmds(cmds[r]))
		if got := finalOf(cmds[r]); got != want {
			t.Errorf("%s ended %q; want %s", r, got, want)
		}
	}
}

// groupRate is each rollout's session rate (≈ 5.5 requests per session).
const groupRate = 150

// group is the scenario of TestTwoInstances and TestTwoInstancesKill9: two
// canaryd, a and b, in one consumer group on a 6-partition events topic,
// while a fleet writes three rollouts, each to its own partition: a good and
// a bad one in a's half, a bad one in b's.
type group struct {
	brokers   []string
	tp        topics
	name      string // consumer group
	specs     string
	good, bad []string
	partOf    map[string]int32
	fleet     *loadtest.Fleet
	stopFleet func()
}

func newGroup(t *testing.T, kind string) *group {
	const partitions = 6
	g := &group{brokers: kafkatest.Brokers(t, kind), tp: newTopics(t)}
	g.name = g.tp.events + ".group"
	g.good, g.bad, g.partOf = groupRollouts(partitions, []int{0}, []int{1, 4})
	g.specs = groupSpecs(g.all()...)
	kafkatest.CreateTopics(t, g.brokers, partitions, g.tp.events)
	return g
}

func (g *group) all() []string { return slices.Concat(g.good, g.bad) }

// startB starts the surviving instance, in-process.
func (g *group) startB(t *testing.T) *instance {
	cfg := testConfig(t, g.brokers, g.tp, g.specs)
	cfg.Partitions = 6
	cfg.Logger = testLogger(t, "b")
	return runDaemon(t, cfg)
}

// run starts the fleet once both instances own partitions (aOwns reports
// how many a owns), then waits until a, whose rollouts owned() lists, has
// moved a good rollout to its second step (or, owning no good one, ended a
// rollout): b's judges of a's rollouts are then behind the control topic
// when b takes them over.
func (g *group) run(t *testing.T, b *instance, aOwns func() float64, owned func() []string) {
	t.Helper()
	waitFor(t, 60*time.Second, "both instances own partitions", func() bool {
		na, nb := aOwns(), b.metric("canaryd_partitions_assigned")
		return na > 0 && nb > 0 && na+nb == 6
	})
	g.fleet = groupFleet(t, g.brokers, g.tp, g.good, g.bad, groupRate)
	g.stopFleet = runFleet(t, g.fleet)
	waitFor(t, 60*time.Second, "a rollout of a past its first step", func() bool {
		rs := owned()
		ownsGood := slices.ContainsFunc(rs, func(r string) bool { return slices.Contains(g.good, r) })
		for _, r := range rs {
			cs := g.fleet.Commands(r)
			if len(cs) >= 2 && (!ownsGood || slices.Contains(g.good, r)) {
				return true
			}
		}
		return false
	})
}

// finish waits for b to own every partition and for every rollout's final
// command, then stops the fleet and returns what it produced.
func (g *group) finish(t *testing.T, b *instance, since time.Time) tally {
	t.Helper()
	waitFor(t, 60*time.Second, "b owns every partition", func() bool {
		return b.metric("canaryd_partitions_assigned") == 6
	})
	t.Logf("b owned every partition %v after a went", time.Since(since).Round(time.Millisecond))
	waitFor(t, 90*time.Second, "every rollout's final command", func() bool { return allFinal(g.fleet, g.all()) })
	g.stopFleet()
	return producedBy(g.fleet)
}

// stopB waits until b has consumed every record (no lag: it may be far
// behind on a loaded machine), then (up to 10 s) until its totals reach want,
// as its last windows close on idle, and stops it, flushing the rest. It
// returns b's totals at exit.
func (g *group) stopB(t *testing.T, b *instance, want func(tally) bool) tally {
	t.Helper()
	waitFor(t, 90*time.Second, "b has no lag", func() bool { return b.metric("canaryd_consumer_lag") == 0 })
	deadline := time.Now().Add(10 * time.Second)
	for !want(judged(b.d, g.all()...)) && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
	}
	if err := b.stop(t); err != nil {
		t.Fatalf("b: Run: %v", err)
	}
	return judged(b.d, g.all()...)
}

// checkControl checks the control topic: each command once, every rollout
// ended as a single instance ends it.
//
// Not even a duplicate with the same content is allowed: sink.Control reads
// the topic to its end before each send and skips an id already there; the
// instance that takes a rollout over does so only after its previous owner
// stopped (revoke, or death and the session timeout), so the owner's
// commands are on the topic before the new owner's first read; and the
// producer is idempotent, so its own retries are not written twice.
func (g *group) checkControl(t *testing.T) {
	t.Helper()
	cmds, dups := checkOnce(t, readAllControl(t, g.brokers, g.tp.control))
	if dups != 0 {
		t.Errorf("%d duplicate commands with the same content on the control topic; want 0", dups)
	}
	checkFinals(t, cmds, g.good, g.bad)
}

// TestTwoInstances runs the group scenario with a stopped as SIGTERM stops
// it (its Run context cancelled: it flushes its windows and commits on
// revoke) once it has moved a good rollout to its second step; b takes over
// its partitions. Together they count every event exactly once: a's totals
// at its exit plus b's equal what the fleet produced. Every rollout ends as
// a single instance ends it (good → promote, bad → rollback), and no
// command_id is sent twice with different content.
func TestTwoInstances(t *testing.T) {
	t.Parallel()
	for _, kind := range kafkatest.Kinds() {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			g := newGroup(t, kind)
			cfg := testConfig(t, g.brokers, g.tp, g.specs)
			cfg.Partitions = 6
			cfg.Logger = testLogger(t, "a")
			a := runDaemon(t, cfg)
			b := g.startB(t)
			var owned []string
			g.run(t, b, func() float64 { return a.metric("canaryd_partitions_assigned") }, func() []string {
				owned = owned[:0]
				for _, r := range g.all() {
					if st, _ := a.d.Status(r); st.Windows > 0 {
						owned = append(owned, r)
					}
				}
				return owned
			})
			t0 := time.Now()
			if err := a.stop(t); err != nil {
				t.Fatalf("a: Run: %v", err)
			}
			aTotals := judged(a.d, g.all()...)
			t.Logf("a judged %v; stopped in %v with %d events judged", owned, time.Since(t0).Round(time.Millisecond), aTotals.events())

			produced := g.finish(t, b, t0)
			bTotals := g.stopB(t, b, func(bt tally) bool { return bt.merge(aTotals).diff(produced) == "" })
			if diff := bTotals.merge(aTotals).diff(produced); diff != "" {
				t.Errorf("a's totals at its exit + b's differ from what the fleet produced:\n%s", diff)
			}
			t.Logf("produced %d events; judged %d by a + %d by b", produced.events(), aTotals.events(), bTotals.events())
			g.checkControl(t)
		})
	}
}

// TestTwoInstancesKill9 runs the group scenario with a a canaryd process
// killed with SIGKILL: no flush, no commit, no leaving the group; b gets its
// partitions when its session times out (6 s). Without a state directory
// (this test; TestGroupStopThenKill9 has one) what a judged after its last
// commit is judged again by b, so totals are checked where they are exact: b counts precisely the events of a's
// partitions from a's last committed offsets on, plus all of its own, so
// nothing is lost. Commands as in TestTwoInstances: each once, every
// rollout ending as a single instance ends it.
func TestTwoInstancesKill9(t *testing.T) {
	t.Parallel()
	bin := buildCanaryd(t)
	for _, kind := range kafkatest.Kinds() {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			g := newGroup(t, kind)
			a := startProcess(t, "a", bin, g.specs, "run", "--brokers", strings.Join(g.brokers, ","),
				"--events-topic", g.tp.events, "--control-topic", g.tp.control, "--dlq-topic", g.tp.dlq, "--group", g.name,
				"--http", "127.0.0.1:0", "--window", "1s", "--lateness", "500ms", "--session-timeout", "6s")
			b := g.startB(t)
			var owned []string
			var aSeen tally // a's totals at its last scrape
			g.run(t, b, func() float64 { return sumMetric(a.get(t, "/metrics"), "canaryd_partitions_assigned") }, func() []string {
				var body struct{ Rollouts []detector.Status }
				if err := json.Unmarshal([]byte(a.get(t, "/v1/rollouts")), &body); err != nil {
					t.Fatal(err)
				}
				owned, aSeen = owned[:0], tally{}
				for _, st := range body.Rollouts {
					if st.Windows > 0 {
						owned = append(owned, st.Rollout)
					}
					for _, v := range st.Totals {
						aSeen.add(st.Rollout, v.Version, counts{int64(v.Requests), int64(v.Errors), int64(v.Sessions)})
					}
				}
				return owned
			})
			a.kill(t)
			killed := time.Now()

			// a's last commits, read before b can own (and commit) its
			// partitions: the session timeout has not passed yet.
			time.Sleep(300 * time.Millisecond)
			committed := committedOffsets(t, g.brokers, g.name, g.tp.events)
			if time.Since(killed) > 5*time.Second {
				t.Fatal("reading a's committed offsets took longer than the session timeout")
			}
			resumeAt := map[int32]int64{}
			for _, r := range owned {
				resumeAt[g.partOf[r]] = committed[g.partOf[r]]
			}
			t.Logf("a judged %v (%d events at its last scrape); killed; its partitions resume at %v", owned, aSeen.events(), resumeAt)

			produced := g.finish(t, b, killed)
			before := countEvents(t, g.brokers, g.tp.events, resumeAt) // judged by a alone
			want := tally{}
			for r, vs := range produced {
				for v, c := range vs {
					p := before[r][v]
					want.add(r, v, counts{c.Requests - p.Requests, c.Errors - p.Errors, c.Sessions - p.Sessions})
				}
			}
			bTotals := g.stopB(t, b, func(bt tally) bool { return bt.diff(want) == "" })
			if diff := bTotals.diff(want); diff != "" {
				t.Errorf("b's totals differ from the events of its partitions and of a's from a's last commit on:\n%s", diff)
			}
			// a judged at least the events before its last commit; what it
			// judged after it, b judged again.
			t.Logf("produced %d events; b judged %d; a ≥ %d before its last commit (%d at its last scrape: ≥ %d judged twice)",
				produced.events(), bTotals.events(), before.events(), aSeen.events(), max(aSeen.events()-before.events(), 0))
			g.checkControl(t)
		})
	}
}

// buildCanaryd builds the canaryd binary into a temp dir.
func buildCanaryd(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "canaryd")
	start := time.Now()
	out, err := exec.Command("go", "build", "-o", bin, "github.com/inferensys/canaryd/cmd/canaryd").CombinedOutput()
	if err != nil {
		t.Fatalf("go build canaryd: %v\n%s", err, out)
	}
	t.Logf("built canaryd in %v", time.Since(start).Round(time.Millisecond))
	return bin
}

// process is a canaryd binary run by a test.
type process struct {
	cmd  *exec.Cmd
	addr string // HTTP
	logs sync.WaitGroup

	mu  sync.Mutex
	log []string // stderr lines
}

// lines returns the lines the process logged so far.
func (p *process) lines() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.log)
}

// startProcess runs bin with args and the specs in a file (--specs; none
// when specs is empty: args name them), logs
// its stderr to t, and waits until it is ready.
func startProcess(t *testing.T, name, bin, specs string, args ...string) *process {
	t.Helper()
	file := filepath.Join(t.TempDir(), "specs.yaml")
	if err := os.WriteFile(file, []byte(specs), 0o644); err != nil {
		t.Fatal(err)
	}
	if specs != "" {
		args = append(args, "--specs", file)
	}
	p := &process{cmd: exec.Command(bin, args...)}
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addr := make(chan string, 1)
	p.logs.Go(func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			t.Log(name + ": " + line)
			p.mu.Lock()
			p.log = append(p.log, line)
			p.mu.Unlock()
			if strings.Contains(line, `msg="serving HTTP"`) {
				if _, a, ok := strings.Cut(line, " addr="); ok {
					addr <- a
				}
			}
		}
	})
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			_ = p.cmd.Process.Kill()
			_ = p.cmd.Wait()
		}
		p.logs.Wait()
	})
	select {
	case p.addr = <-addr:
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: no HTTP address logged within 30s", name)
	}
	waitFor(t, 60*time.Second, name+" ready", func() bool {
		resp, err := http.Get("http://" + p.addr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	return p
}

func (p *process) get(t *testing.T, path string) string { return get(t, "http://"+p.addr+path) }

// kill sends SIGKILL and reaps the process.
func (p *process) kill(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("kill canaryd: %v", err)
	}
	_ = p.cmd.Wait()
	p.logs.Wait()
}

// committedOffsets returns the group's committed offsets of topic by
// partition.
func committedOffsets(t *testing.T, brokers []string, group, topic string) map[int32]int64 {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	// A coordinator that moves or is loading answers with a retriable
	// error (COORDINATOR_NOT_AVAILABLE seen on a loaded machine), and a
	// client whose metadata does not list the coordinator yet says so
	// ("has broker coordinator 1, but did not reply with that broker in the
	// broker list", seen after a broker restart): ask again until the
	// deadline.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var offs kadm.OffsetResponses
	for {
		offs, err = kadm.NewClient(cl).FetchOffsets(ctx, group)
		if err == nil {
			err = offs.Error()
		}
		if err == nil || !kerr.IsRetriable(err) && !strings.Contains(err.Error(), "coordinator") || ctx.Err() != nil {
			break
		}
		time.Sleep(100 * time.Millisecond) // between retries of a retriable error, not deciding anything
	}
	if err != nil {
		t.Fatalf("committed offsets of %s: %v", group, err)
	}
	out := map[int32]int64{}
	for p, o := range offs[topic] {
		out[p] = o.At
	}
	return out
}

// countEvents reads the given partitions of topic from their start up to
// (not including) the given offsets and counts the events as canaryd does.
func countEvents(t *testing.T, brokers []string, topic string, upTo map[int32]int64) tally {
	t.Helper()
	out := tally{}
	readUpTo(t, brokers, topic, upTo, func(r *kgo.Record) {
		var ev struct{ Rollout, Version, Kind, Status string }
		if err := json.Unmarshal(r.Value, &ev); err != nil {
			t.Fatalf("event at %d/%d: %v", r.Partition, r.Offset, err)
		}
		var c counts
		switch ev.Kind {
		case "agent", "task", "eval":
			c.Sessions = 1
		default:
			c.Requests = 1
			if ev.Status == "error" {
				c.Errors = 1
			}
		}
		out.add(ev.Rollout, ev.Version, c)
	})
	return out
}

// readUpTo hands each record of the given partitions of topic, from their
// start up to (not including) the given offsets, to each, in order per
// partition; it fails the test when a partition is not read that far
// within 60 s.
func readUpTo(t *testing.T, brokers []string, topic string, upTo map[int32]int64, each func(*kgo.Record)) {
	t.Helper()
	start := map[int32]kgo.Offset{}
	for p, end := range upTo {
		if end > 0 {
			start[p] = kgo.NewOffset().AtStart()
		}
	}
	if len(start) == 0 {
		return
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: start}))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for len(start) > 0 && ctx.Err() == nil {
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
			if _, ok := start[r.Partition]; !ok || r.Offset >= upTo[r.Partition] {
				return
			}
			each(r)
			if r.Offset+1 >= upTo[r.Partition] {
				delete(start, r.Partition)
			}
		})
	}
	if len(start) > 0 {
		t.Fatalf("partitions %v not read up to %v", slices.Collect(maps.Keys(start)), upTo)
	}
}

// statusesOwned returns the rollouts of sts with judged windows.
func statusesOwned(sts []detector.Status) []string {
	var owned []string
	for _, st := range sts {
		if st.Windows > 0 {
			owned = append(owned, st.Rollout)
		}
	}
	return owned
}

// TestGroupStopThenKill9 is the group scenario with durable state, as the
// issue describes it: a (a canaryd process) and b (in-process) share the
// group while the fleet writes; b is stopped as SIGTERM stops it (it hands
// its partitions over through the state topic, and a continues them); later
// a is killed with SIGKILL and restarted on the same state directory (it
// resumes from its checkpoints). At the end the restarted a's per-version
// totals equal what the fleet produced — nothing lost, nothing counted twice
// — and every rollout ends as a single instance ends it, each command once.
func TestGroupStopThenKill9(t *testing.T) {
	t.Parallel()
	bin := buildCanaryd(t)
	for _, kind := range kafkatest.Kinds() {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			g := newGroup(t, kind)
			dirA := t.TempDir()
			argsA := []string{"run", "--brokers", strings.Join(g.brokers, ","),
				"--events-topic", g.tp.events, "--control-topic", g.tp.control, "--dlq-topic", g.tp.dlq, "--group", g.name,
				"--state-dir", dirA, "--state-topic", g.tp.events + ".state", "--checkpoint-interval", "500ms",
				"--http", "127.0.0.1:0", "--window", "1s", "--lateness", "500ms", "--session-timeout", "6s"}
			a := startProcess(t, "a", bin, g.specs, argsA...)
			cfg := testConfig(t, g.brokers, g.tp, g.specs)
			cfg.Partitions, cfg.Group, cfg.Logger = 6, g.name, testLogger(t, "b")
			cfg.StateDir, cfg.StateTopic, cfg.CheckpointInterval = t.TempDir(), g.tp.events+".state", 500*time.Millisecond
			b := runDaemon(t, cfg)
			statuses := func(p *process) []detector.Status {
				var body struct{ Rollouts []detector.Status }
				if err := json.Unmarshal([]byte(p.get(t, "/v1/rollouts")), &body); err != nil {
					t.Fatal(err)
				}
				return body.Rollouts
			}
			g.run(t, b, func() float64 { return sumMetric(a.get(t, "/metrics"), "canaryd_partitions_assigned") }, func() []string {
				return statusesOwned(statuses(a))
			})
			// The partitions with data that each instance judged: b hands
			// over exactly those of its own (a partition it never read from
			// is not published), a continues each of them from b's checkpoint.
			dataParts := func(judgedBy func(r string) bool) map[int32]bool {
				ps := map[int32]bool{}
				for _, r := range g.all() {
					if judgedBy(r) {
						ps[g.partOf[r]] = true
					}
				}
				return ps
			}
			aParts := dataParts(func(r string) bool { return slices.Contains(statusesOwned(statuses(a)), r) })
			bParts := dataParts(func(r string) bool { st, _ := b.d.Status(r); return st.Windows > 0 })
			if err := b.stop(t); err != nil {
				t.Fatalf("b: Run: %v", err)
			}
			waitFor(t, 60*time.Second, "a owns every partition", func() bool {
				return sumMetric(a.get(t, "/metrics"), "canaryd_partitions_assigned") == 6
			})
			// Partitions with data: b's (windows judged) ⊆ handed over ⊆ those
			// a did not judge. Read once the count reaches b's: a counts a
			// handover when it resumes the partition, after the assignment.
			handedOver := func() float64 {
				return sumMetric(a.get(t, "/metrics"), `canaryd_checkpoint_restores_total{result="handed_over"}`)
			}
			waitFor(t, 30*time.Second, fmt.Sprintf("a continues b's %d partitions with data from b's handovers", len(bParts)), func() bool {
				return handedOver() >= float64(len(bParts))
			})
			handed := handedOver()
			if maxHanded := 3 - len(aParts); handed < float64(len(bParts)) || handed > float64(maxHanded) {
				t.Errorf("a continued %v partitions from b's handovers; want between %d (b judged %v) and %d (3 partitions with data, a judged %v)",
					handed, len(bParts), slices.Sorted(maps.Keys(bParts)), maxHanded, slices.Sorted(maps.Keys(aParts)))
			}
			// Let a judge and checkpoint (every 500 ms) what it continued
			// before killing it; the outcome does not depend on how long.
			time.Sleep(2 * time.Second)
			a.kill(t)
			t.Logf("b stopped (a continued %v partitions from its handovers: b judged %v, a %v); a killed", handed,
				slices.Sorted(maps.Keys(bParts)), slices.Sorted(maps.Keys(aParts)))
			a = startProcess(t, "a2", bin, g.specs, argsA...)
			waitFor(t, 90*time.Second, "every rollout's final command", func() bool { return allFinal(g.fleet, g.all()) })
			g.stopFleet()
			produced := producedBy(g.fleet)
			closeWindows(t, g.brokers, g.tp.events, 6)
			totals := func() tally {
				got := tally{}
				for _, st := range statuses(a) {
					for _, v := range st.Totals {
						got.add(st.Rollout, v.Version, counts{int64(v.Requests), int64(v.Errors), int64(v.Sessions)})
					}
				}
				return got
			}
			waitFor(t, 60*time.Second, "a's totals reach what the fleet produced", func() bool {
				lost, _ := totals().lostAndTwice(produced)
				return lost == ""
			})
			// Anything judged twice shows once a has read every record (the
			// lag gauge is set after a batch's windows are closed and judged).
			waitFor(t, 60*time.Second, "a has no lag", func() bool {
				return sumMetric(a.get(t, "/metrics"), "canaryd_consumer_lag") == 0
			})
			got := totals()
			lost, twice := got.lostAndTwice(produced)
			if lost != "" || twice != "" {
				t.Errorf("a's totals differ from what the fleet produced:\nlost:\n%s\ntwice:\n%s", lost, twice)
			}
			t.Logf("produced %d events; a judged %d after b's stop, its own kill and restart", produced.events(), got.events())
			a.terminate(t)
			g.checkControl(t)
		})
	}
}
