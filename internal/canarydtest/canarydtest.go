// Package canarydtest runs a real canaryd for the tests of the delivery
// controllers' integrations (the modules integrations/argo and
// integrations/flagger, and deploy's Spinnaker test): the canaryd binary
// built from this module, an in-process kfake broker, and JSON v1 events
// whose event time the test sets.
//
// Event time is the test's clock: windows close on it, so a test moves
// through minutes of a rollout in the time it takes to produce the events,
// and waits only for canaryd to have counted them ([Canaryd.Sync]), never
// for a fixed time. Events are stamped in the past (see [Traffic]), which
// canaryd accepts and which its minimum durations measure as they do live
// traffic.
package canarydtest

import (
	"bufio"
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// The flags every test daemon runs with: 1 s windows, so that a step's
// minimum duration is a few dozen windows of event time.
const (
	Window   = time.Second
	Lateness = 500 * time.Millisecond
)

// waitTimeout bounds every wait for canaryd: its start, its readiness and
// its counting of the events produced.
const waitTimeout = 90 * time.Second

var (
	buildOnce sync.Once
	buildBin  string
	buildErr  error
	binDir    string // holds buildBin; removed by Cleanup
)

// Binary builds cmd/canaryd of this module once per test process, in a
// directory that [Main] or [Cleanup] removes, and returns its path. It
// builds in this module's directory, with its own go.mod, not the caller's.
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		root, err := moduleRoot()
		if err != nil {
			buildErr = err
			return
		}
		dir, err := os.MkdirTemp("", "canarydtest-bin")
		if err != nil {
			buildErr = err
			return
		}
		binDir = dir
		buildBin = filepath.Join(dir, "canaryd")
		cmd := exec.Command("go", "build", "-o", buildBin, "./cmd/canaryd")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("canarydtest: go build ./cmd/canaryd in %s: %v\n%s", root, err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildBin
}

// moduleRoot returns the directory of this module's source: two up from
// this file's, or where the go command finds the module (a -trimpath build
// records no directory).
func moduleRoot() (string, error) {
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		return filepath.Join(filepath.Dir(file), "..", ".."), nil
	}
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/inferensys/canaryd").Output()
	if err != nil || len(strings.TrimSpace(string(out))) == 0 {
		return "", fmt.Errorf("canarydtest: cannot locate github.com/inferensys/canaryd's source: %v", err)
	}
	return strings.TrimSpace(string(out)), nil
}

// Main runs the tests and removes the binary [Binary] built:
//
//	func TestMain(m *testing.M) { canarydtest.Main(m) }
func Main(m *testing.M) {
	code := m.Run()
	Cleanup()
	os.Exit(code)
}

// Cleanup removes the binary [Binary] built, for a TestMain of its own.
func Cleanup() {
	if binDir != "" {
		os.RemoveAll(binDir)
	}
}

// Canaryd is a running canaryd process with its own kfake broker.
type Canaryd struct {
	URL     string // http://127.0.0.1:port
	Brokers []string

	t        testing.TB
	cmd      *exec.Cmd
	producer *kgo.Client
	logs     sync.WaitGroup

	mu  sync.Mutex
	log []string
}

// Start starts a kfake broker and canaryd reading specs (the YAML of one or
// more rollout specs), and waits until canaryd is ready. Both stop when the
// test ends. args are extra flags of `canaryd run`.
func Start(t testing.TB, specs string, args ...string) *Canaryd {
	t.Helper()
	bin := Binary(t)
	cluster, err := kfake.NewCluster(
		kfake.NumBrokers(1),
		kfake.SeedTopics(3, "agent.events"),
		kfake.AllowAutoTopicCreation(),
		kfake.DefaultNumPartitions(3),
	)
	if err != nil {
		t.Fatalf("canarydtest: start kfake: %v", err)
	}
	t.Cleanup(cluster.Close)
	c := &Canaryd{Brokers: cluster.ListenAddrs(), t: t}

	file := filepath.Join(t.TempDir(), "specs.yaml")
	if err := os.WriteFile(file, []byte(specs), 0o644); err != nil {
		t.Fatal(err)
	}
	args = append([]string{"run", "--brokers", strings.Join(c.Brokers, ","), "--specs", file,
		"--http", "127.0.0.1:0", "--window", Window.String(), "--lateness", Lateness.String()}, args...)
	c.cmd = exec.Command(bin, args...)
	c.cmd.Env = cleanEnv()
	stderr, err := c.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addr := make(chan string, 1)
	c.logs.Go(func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			line := sc.Text()
			c.mu.Lock()
			c.log = append(c.log, line)
			c.mu.Unlock()
			if strings.Contains(line, `msg="serving HTTP"`) {
				if _, a, ok := strings.Cut(line, " addr="); ok {
					addr <- a
				}
			}
		}
	})
	t.Cleanup(func() {
		_ = c.cmd.Process.Kill()
		_ = c.cmd.Wait()
		c.logs.Wait()
		if t.Failed() {
			c.mu.Lock()
			for _, l := range c.log {
				t.Log("canaryd: " + l)
			}
			c.mu.Unlock()
		}
	})
	select {
	case a := <-addr:
		c.URL = "http://" + a
	case <-time.After(waitTimeout):
		t.Fatalf("canarydtest: canaryd logged no HTTP address within %v", waitTimeout)
	}
	c.waitFor("ready", func() bool {
		resp, err := http.Get(c.URL + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	c.producer, err = kgo.NewClient(kgo.SeedBrokers(c.Brokers...), kgo.DefaultProduceTopic("agent.events"),
		kgo.ProducerLinger(0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.producer.Close)
	return c
}

// cleanEnv is the environment without CANARYD_ variables, so that a
// developer's settings do not change the daemon the tests run.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CANARYD_") {
			env = append(env, kv)
		}
	}
	return env
}

// waitFor polls cond every 50 ms until it holds, and fails the test after
// waitTimeout. It waits for canaryd to reach a state; it decides nothing.
func (c *Canaryd) waitFor(what string, cond func() bool) {
	c.t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			c.t.Fatalf("canarydtest: %s: not after %v", what, waitTimeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Produce writes events to the events topic, keyed by their rollout.
func (c *Canaryd) Produce(events []Event) {
	c.t.Helper()
	recs := make([]*kgo.Record, len(events))
	for i, e := range events {
		recs[i] = &kgo.Record{Key: []byte(e.Rollout), Value: e.JSON(nil)}
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := c.producer.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		c.t.Fatalf("canarydtest: produce: %v", err)
	}
}

// Requests returns canaryd_requests_total of the rollout, summed over its
// versions: the requests canaryd counted in closed windows.
func (c *Canaryd) Requests(rollout string) (int, error) {
	resp, err := http.Get(c.URL + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	prefix := fmt.Sprintf(`canaryd_requests_total{rollout=%q,`, rollout)
	n := 0
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, prefix) {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			return 0, fmt.Errorf("metric line %q: %v", line, err)
		}
		n += int(v)
	}
	return n, sc.Err()
}

// Sync waits until canaryd has counted the requests of every window of tr
// that the events produced so far closed, so that what it answers next
// reflects them. canaryd counts and judges a window under one lock, so a
// judgement asked for after Sync sees the window.
func (c *Canaryd) Sync(tr *Traffic) {
	c.t.Helper()
	want := tr.Closed()
	c.waitFor(fmt.Sprintf("canaryd counting %d requests of %s", want, tr.Rollout), func() bool {
		n, err := c.Requests(tr.Rollout)
		return err == nil && n >= want
	})
}

// Log returns the lines canaryd has logged so far.
func (c *Canaryd) Log() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.log...)
}

// Unreachable returns a URL where nothing listens: a port that was just
// free on the loopback interface.
func Unreachable(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "http://" + addr
}

// Arm is how one version behaves: its error probability and the median of
// its log-normal request latency.
type Arm struct {
	Version   string
	ErrorRate float64
	MedianMS  float64
}

// Traffic produces the events of one rollout one second of event time at a
// time, at a traffic split the test sets, from a seeded generator: the same
// seed gives the same events.
type Traffic struct {
	Rollout          string
	Baseline, Canary Arm
	// PerSecond is the rollout's requests per second of event time, split
	// between the arms by Weight (the canary's percentage) exactly, so the
	// split never departs from the weight by chance.
	PerSecond int
	Weight    int
	// FromCanary says that canaryd counts the rollout's windows only from
	// the first with canary requests: a canary: auto spec whose release
	// starts from the events (a window with at least 10 requests of a new
	// version), not from a controller's call.
	FromCanary bool

	rng      *rand.Rand
	now      time.Time // event time of the next second
	produced []second  // the seconds produced, in order
	lastWall time.Time // wall clock of the last Second
	seq      int
}

// second is one second of event time that Second produced.
type second struct {
	start  time.Time
	n      int
	canary int
}

// idleSkip is how long the test may leave the stream quiet before Second
// moves event time on by the wall time that passed. canaryd closes a quiet
// partition's windows by the wall clock after 3 windows (3 s) of it, as far
// as the wall clock minus the lag with which events arrived: a stream that
// fast-forwards event time and then pauses would find its next events
// behind that watermark, dropped as late.
const idleSkip = 2 * time.Second

// NewTraffic returns traffic whose event time starts at start (truncated to
// the second). Start it in the past, at most --evict-after (1 h) ago, so
// that the test can run event time forward without producing events ahead
// of the wall clock, which canaryd refuses beyond --max-future (1 min).
func NewTraffic(rollout string, baseline, canary Arm, perSecond, weight int, start time.Time, seed uint64) *Traffic {
	start = start.Truncate(time.Second)
	return &Traffic{Rollout: rollout, Baseline: baseline, Canary: canary, PerSecond: perSecond, Weight: weight,
		rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), now: start}
}

// Now is the event time of the next second Second produces.
func (tr *Traffic) Now() time.Time { return tr.now }

// Second returns the events of the next second of event time: PerSecond
// llm requests, Weight% of them (rounded) of the canary, in random order
// and at random times within the second. After a pause of the test longer
// than idleSkip, the second starts later by the pause and a second more
// (see idleSkip): a gap of event time without events.
func (tr *Traffic) Second() []Event {
	if wall := time.Now(); !tr.lastWall.IsZero() && wall.Sub(tr.lastWall) > idleSkip {
		tr.now = tr.now.Add(wall.Sub(tr.lastWall).Truncate(time.Second) + time.Second)
	}
	nc := int(math.Round(float64(tr.PerSecond) * float64(tr.Weight) / 100))
	events := make([]Event, 0, tr.PerSecond)
	for i := range tr.PerSecond {
		arm := tr.Baseline
		if i < nc {
			arm = tr.Canary
		}
		tr.seq++
		e := Event{
			Rollout:  tr.Rollout,
			Version:  arm.Version,
			TS:       tr.now.Add(time.Duration(tr.rng.Int64N(int64(time.Second)))),
			Duration: arm.MedianMS * math.Exp(0.5*tr.rng.NormFloat64()),
			Error:    tr.rng.Float64() < arm.ErrorRate,
			Session:  fmt.Sprintf("s%d", tr.seq),
		}
		events = append(events, e)
	}
	tr.rng.Shuffle(len(events), func(i, j int) { events[i], events[j] = events[j], events[i] })
	tr.produced = append(tr.produced, second{tr.now, tr.PerSecond, nc})
	tr.now = tr.now.Add(time.Second)
	tr.lastWall = time.Now()
	return events
}

// Closed returns how many of the requests produced are in windows that the
// newest of them has closed: those more than a window and the lateness
// before the newest event time.
func (tr *Traffic) Closed() int {
	// The newest events are in the last second produced; its start bounds
	// the watermark (newest - lateness) from below. A 1 s window [s, s+1)
	// closes once the watermark passes s+1.
	if len(tr.produced) == 0 {
		return 0
	}
	last := tr.produced[len(tr.produced)-1].start
	n, counted := 0, !tr.FromCanary
	for _, s := range tr.produced {
		counted = counted || s.canary >= 10
		if counted && !s.start.Add(Window+Lateness).After(last) {
			n += s.n
		}
	}
	return n
}

// Event is one JSON v1 agent event (schemas/agent-event.v1.json): an llm
// request of a session.
type Event struct {
	Rollout, Version string
	TS               time.Time
	Duration         float64 // ms
	Error            bool
	Session          string
}

// JSON appends the event as a JSON v1 record to dst.
func (e Event) JSON(dst []byte) []byte {
	status := "ok"
	if e.Error {
		status = "error"
	}
	dst = fmt.Appendf(dst, `{"rollout":%q,"version":%q,"kind":"llm","name":"gpt-test","ts":%d,"duration_ms":%.3f,"status":%q,"session_id":%q`,
		e.Rollout, e.Version, e.TS.UnixNano(), e.Duration, status, e.Session)
	if e.Error {
		dst = append(dst, `,"error_type":"timeout"`...)
	}
	return append(dst, '}')
}
