// Package kafkatest gives tests a Kafka to talk to: an in-process kfake
// cluster, or a real Apache Kafka broker (KRaft, one node) that
// scripts/kafka.sh runs from jars fetched with Maven.
//
// Integration tests run against both kinds:
//
//	for _, kind := range kafkatest.Kinds() {
//		t.Run(kind, func(t *testing.T) {
//			brokers := kafkatest.Brokers(t, kind)
//			topic := kafkatest.Topic(t)
//			kafkatest.CreateTopics(t, brokers, 3, topic)
//			...
//		})
//	}
//
// A package whose tests call [Real] (directly or through [Brokers]) must stop
// the broker that Real may start, from its TestMain:
//
//	func TestMain(m *testing.M) { kafkatest.Main(m) }
//
// Without it the broker is still stopped, by a watchdog of scripts/kafka.sh,
// about a second after the test process exits; Main stops it at once and
// reports a failure to stop.
//
// The real broker is shared by every test of the process, so tests must use
// topics and groups of their own ([Topic] makes such names).
//
// Environment:
//
//	KAFKA_BROKERS  comma-separated brokers of a running Kafka: Real uses them and starts nothing
//	               (make test starts one broker for all packages and sets this)
//	KAFKA_VERSION  the version of that Kafka, for the log; scripts/kafka.sh prints it
//	CANARYD_KAFKA  "kfake" or "kafka": Kinds returns only that kind
package kafkatest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// The kinds of Kafka that [Brokers] returns.
const (
	KindFake = "kfake" // in-process github.com/twmb/franz-go/pkg/kfake
	KindReal = "kafka" // Apache Kafka, see [Real]
)

const (
	// startTimeout bounds scripts/kafka.sh start, including a cold Maven fetch
	// of the broker's jars.
	startTimeout = 10 * time.Minute
	// stopTimeout bounds scripts/kafka.sh stop: SIGTERM, 30 s, SIGKILL.
	stopTimeout = 2 * time.Minute
	// readyTimeout bounds how long CreateTopics waits for leaders.
	readyTimeout = 60 * time.Second
)

// Kinds returns the kinds of Kafka integration tests should run against:
// [KindFake] and [KindReal], or only the one named by env CANARYD_KAFKA.
// A CANARYD_KAFKA naming neither is returned as is, and [Brokers] then fails
// the test, so a typo never silently skips the real broker.
func Kinds() []string {
	if k := os.Getenv("CANARYD_KAFKA"); k != "" {
		return []string{k}
	}
	return []string{KindFake, KindReal}
}

// Brokers returns seed brokers of the given kind: [Fake] for [KindFake],
// [Real] for [KindReal]. Any other kind fails the test.
func Brokers(t testing.TB, kind string) []string {
	t.Helper()
	switch kind {
	case KindFake:
		return Fake(t)
	case KindReal:
		return Real(t)
	default:
		t.Fatalf("kafkatest: unknown Kafka kind %q (CANARYD_KAFKA=%q); want %q or %q",
			kind, os.Getenv("CANARYD_KAFKA"), KindFake, KindReal)
		return nil
	}
}

// Fake starts an in-process kfake cluster of one broker, closed when the test
// ends, and returns its address. Like the real broker of scripts/kafka.sh it
// creates missing topics on use with 3 partitions; the given topics are
// created up front with 3 partitions each.
func Fake(t testing.TB, topics ...string) []string {
	t.Helper()
	c, err := kfake.NewCluster(
		kfake.NumBrokers(1),
		kfake.SeedTopics(3, topics...),
		kfake.AllowAutoTopicCreation(),
		kfake.DefaultNumPartitions(3),
	)
	if err != nil {
		t.Fatalf("kafkatest: start kfake: %v", err)
	}
	t.Cleanup(c.Close)
	return c.ListenAddrs()
}

// shared is the real broker of this test process. It is process-wide on
// purpose: a JVM broker takes seconds to start, so every test shares one.
var shared struct {
	once    sync.Once
	brokers []string
	version string // "4.4.0 (api versions of v4.4)" or the like, for the log
	err     error  // why there is no broker; every Real call fails with it

	logOnce sync.Once

	// Set only when this process started the broker; Main stops it.
	root string
	dir  string
}

// Real returns the seed brokers of a real Apache Kafka: those of env
// KAFKA_BROKERS when set, otherwise those of a single-node broker that it
// starts once per test process with scripts/kafka.sh start (which fetches
// the jars on first use). Call [Main] from TestMain to stop that broker.
//
// If there is no broker to be had, Real fails the test; it never skips.
func Real(t testing.TB) []string {
	t.Helper()
	shared.once.Do(startShared)
	if shared.err != nil {
		t.Fatalf("kafkatest: no real Kafka broker: %v", shared.err)
	}
	shared.logOnce.Do(func() {
		t.Logf("kafkatest: Apache Kafka %s at %s", shared.version, strings.Join(shared.brokers, ","))
	})
	return slices.Clone(shared.brokers)
}

// Main runs the tests of a package that uses [Real], then stops the broker
// that Real started, if any, and exits. Call it from TestMain:
//
//	func TestMain(m *testing.M) { kafkatest.Main(m) }
//
// cleanups run after the tests, before the broker stops.
func Main(m *testing.M, cleanups ...func()) {
	code := m.Run()
	for _, f := range cleanups {
		f()
	}
	if err := stopShared(); err != nil {
		fmt.Fprintf(os.Stderr, "kafkatest: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

func startShared() {
	if env := os.Getenv("KAFKA_BROKERS"); env != "" {
		for b := range strings.SplitSeq(env, ",") {
			if b = strings.TrimSpace(b); b != "" {
				shared.brokers = append(shared.brokers, b)
			}
		}
		if len(shared.brokers) == 0 {
			shared.err = fmt.Errorf("KAFKA_BROKERS=%q names no broker", env)
			return
		}
		shared.version = os.Getenv("KAFKA_VERSION")
	} else if err := startBroker(); err != nil {
		shared.err = err
		return
	}

	// Ask the broker itself: this checks that it answers, and says which
	// version it looks like when KAFKA_VERSION is not set.
	guess, err := apiVersionGuess(shared.brokers)
	if err != nil {
		shared.err = fmt.Errorf("broker %s does not answer: %w", strings.Join(shared.brokers, ","), err)
		return
	}
	if shared.version == "" {
		shared.version = "(KAFKA_VERSION unset)"
	}
	shared.version += " (api versions of " + guess + ")"
}

// startBroker starts the shared broker in a new temp dir.
func startBroker() error {
	b, err := startScript()
	if err != nil {
		return err
	}
	shared.root, shared.dir = b.root, b.dir
	shared.brokers, shared.version = b.addrs, b.version
	return nil
}

// startScript runs scripts/kafka.sh start in a new temp dir. The script's
// watchdog stops the broker if this process dies before it is stopped.
func startScript() (*Broker, error) {
	root, err := repoRoot()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "canaryd-kafka-")
	if err != nil {
		return nil, fmt.Errorf("make broker dir: %w", err)
	}
	out, err := runScript(root, startTimeout, "start", dir)
	if err != nil {
		// start cleans up after itself but leaves its log in dir.
		return nil, fmt.Errorf("%w; the broker's log is in %s", err, dir)
	}
	env := make(map[string]string)
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			env[k] = v
		}
	}
	b := &Broker{root: root, dir: dir, version: env["KAFKA_VERSION"]}
	if env["KAFKA_BROKERS"] == "" {
		return nil, errors.Join(
			fmt.Errorf("scripts/kafka.sh start printed no KAFKA_BROKERS: %q", out),
			b.stop())
	}
	b.addrs = strings.Split(env["KAFKA_BROKERS"], ",")
	return b, nil
}

func stopShared() error {
	if shared.dir == "" {
		return nil
	}
	b := &Broker{root: shared.root, dir: shared.dir}
	shared.dir = ""
	return b.stop()
}

// Broker is a real Apache Kafka broker that belongs to one test, which may
// crash, stop and restart it. [Own] starts one.
type Broker struct {
	addrs   []string
	version string
	root    string // the repository, where scripts/kafka.sh is
	dir     string // the broker's dir: config, data, log
}

// Own starts a real single-node Apache Kafka broker for t alone, whatever
// KAFKA_BROKERS says, and stops it and removes its data when t ends. Use it
// for tests that stop or crash the broker; others should share [Real].
func Own(t testing.TB) *Broker {
	t.Helper()
	b, err := startScript()
	if err != nil {
		t.Fatalf("kafkatest: start an own Kafka broker: %v", err)
	}
	t.Cleanup(func() {
		if err := b.stop(); err != nil {
			t.Errorf("kafkatest: %v", err)
		}
	})
	t.Logf("kafkatest: own Apache Kafka %s at %s", b.version, strings.Join(b.addrs, ","))
	return b
}

// Addrs returns the broker's seed addresses. They stay the same across
// [Broker.Kill], [Broker.Shutdown] and [Broker.Restart].
func (b *Broker) Addrs() []string { return slices.Clone(b.addrs) }

// Kill crashes the broker with SIGKILL, keeping its data and ports.
func (b *Broker) Kill(t testing.TB) {
	t.Helper()
	if _, err := runScript(b.root, stopTimeout, "kill", b.dir, "KILL"); err != nil {
		t.Fatalf("kafkatest: %v", err)
	}
}

// Shutdown stops the broker cleanly (SIGTERM; SIGKILL after 30 s), keeping
// its data and ports.
func (b *Broker) Shutdown(t testing.TB) {
	t.Helper()
	if _, err := runScript(b.root, stopTimeout, "kill", b.dir, "TERM"); err != nil {
		t.Fatalf("kafkatest: %v", err)
	}
}

// Restart stops the broker if it runs and starts it again on the same ports
// and data, and returns once it answers.
func (b *Broker) Restart(t testing.TB) {
	t.Helper()
	if _, err := runScript(b.root, startTimeout, "restart", b.dir); err != nil {
		t.Fatalf("kafkatest: %v", err)
	}
}

// stop stops the broker and removes its dir.
func (b *Broker) stop() error {
	_, err := runScript(b.root, stopTimeout, "stop", b.dir)
	return errors.Join(err, os.RemoveAll(b.dir))
}

// runScript runs scripts/kafka.sh and returns its stdout. Its stderr is
// passed through so a slow Maven fetch or a failed start shows up in the test
// output.
func runScript(root string, timeout time.Duration, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	script := filepath.Join(root, "scripts", "kafka.sh")
	cmd := exec.CommandContext(ctx, "bash", append([]string{script}, args...)...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "KAFKA_OWNER_PID="+strconv.Itoa(os.Getpid()))
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = os.Stderr
	// The broker and the watchdog close our pipes; this bounds Wait if a
	// killed script leaves a child holding them.
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("scripts/kafka.sh %s: %w (its output is above)", strings.Join(args, " "), err)
	}
	return stdout.Bytes(), nil
}

// repoRoot walks up from the working directory to the go.mod beside
// scripts/kafka.sh.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			if _, err := os.Stat(filepath.Join(dir, "scripts", "kafka.sh")); err != nil {
				return "", fmt.Errorf("found %s/go.mod but no scripts/kafka.sh beside it: %w", dir, err)
			}
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory: cannot find scripts/kafka.sh")
		}
		dir = parent
	}
}

func apiVersionGuess(brokers []string) (string, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		return "", err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	vs, err := kadm.NewClient(cl).ApiVersions(ctx)
	if err != nil {
		return "", err
	}
	sorted := vs.Sorted()
	if len(sorted) == 0 {
		return "", errors.New("metadata lists no broker")
	}
	if v := sorted[0]; v.Err != nil {
		return "", fmt.Errorf("broker %d: %w", v.NodeID, v.Err)
	} else {
		return v.VersionGuess(), nil
	}
}

// Topic returns a topic name for t that no other test uses: t's name made
// legal for Kafka, and a random suffix. It is also a fine consumer group name.
func Topic(t testing.TB) string {
	t.Helper()
	name := []byte(t.Name())
	for i, c := range name {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_':
		default:
			name[i] = '_'
		}
	}
	const maxName = 200 // Kafka allows 249 characters
	if len(name) > maxName {
		name = name[:maxName]
	}
	return string(name) + "." + strings.ToLower(rand.Text()[:10])
}

// CreateTopics creates the topics with the given number of partitions and the
// broker's default replication factor, and waits until every partition has a
// leader that answers. Topics that already exist are left as they are.
func CreateTopics(t testing.TB, brokers []string, partitions int32, topics ...string) {
	t.Helper()
	CreateTopicsConfig(t, brokers, partitions, nil, topics...)
}

// CreateTopicsConfig is [CreateTopics] with topic configs, e.g.
// {"max.message.bytes": "100000"}.
func CreateTopicsConfig(t testing.TB, brokers []string, partitions int32, configs map[string]string, topics ...string) {
	t.Helper()
	var cfg map[string]*string
	for k, v := range configs {
		if cfg == nil {
			cfg = map[string]*string{}
		}
		cfg[k] = &v
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatalf("kafkatest: create topics: new client: %v", err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ctx, cancel := context.WithTimeout(t.Context(), readyTimeout)
	defer cancel()

	resps, err := adm.CreateTopics(ctx, partitions, -1, cfg, topics...)
	if err != nil {
		t.Fatalf("kafkatest: create topics %v: %v", topics, err)
	}
	for _, r := range resps.Sorted() {
		if r.Err != nil && !errors.Is(r.Err, kerr.TopicAlreadyExists) {
			t.Fatalf("kafkatest: create topic %q: %v (%s)", r.Topic, r.Err, r.ErrMessage)
		}
	}

	for {
		err := topicsReady(ctx, adm, topics)
		if err == nil {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("kafkatest: topics %v not ready after %v: %v", topics, readyTimeout, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// topicsReady reports why the topics cannot be used yet, or nil.
func topicsReady(ctx context.Context, adm *kadm.Client, topics []string) error {
	md, err := adm.Metadata(ctx, topics...)
	if err != nil {
		return err
	}
	for _, topic := range topics {
		td, ok := md.Topics[topic]
		switch {
		case !ok:
			return fmt.Errorf("topic %q not in metadata", topic)
		case td.Err != nil:
			return fmt.Errorf("topic %q: %w", topic, td.Err)
		case len(td.Partitions) == 0:
			return fmt.Errorf("topic %q has no partitions yet", topic)
		}
		for _, p := range td.Partitions.Sorted() {
			if p.Err != nil || p.Leader < 0 {
				return fmt.Errorf("partition %s/%d: leader %d: %v", topic, p.Partition, p.Leader, p.Err)
			}
		}
	}
	// A leader in metadata may not serve yet; listing offsets asks it.
	offsets, err := adm.ListEndOffsets(ctx, topics...)
	if err != nil {
		return err
	}
	return offsets.Error()
}
