package daemon_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/inferensys/canaryd/detector"
	"github.com/inferensys/canaryd/internal/daemon"
	"github.com/inferensys/canaryd/internal/kafkatest"
	"github.com/inferensys/canaryd/window"
)

// syncBuffer is a log sink the daemon's goroutines write concurrently.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// outageDaemon starts a daemon (not through startDaemon: the test ends its
// Run itself) and returns it with a function that stops it and reports how
// long Run took to return.
func outageDaemon(t *testing.T, brokers []string, tp topics, shutdown time.Duration, logs *syncBuffer) (*daemon.Daemon, *metrics.Set, func() (time.Duration, error)) {
	t.Helper()
	ss, err := detector.ParseSpecs("test.yaml", []byte("rollout: outage\nbaseline: v1\ncanary: v2\nsteps: [{weight: 10}, {weight: 100}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	ms := metrics.NewSet()
	d, err := daemon.New(daemon.Config{
		Brokers: brokers, EventsTopic: tp.events, ControlTopic: tp.control, DLQTopic: tp.dlq,
		Group: tp.events + ".group", Partitions: 3, Specs: ss, HTTPAddr: "127.0.0.1:0",
		Window: window.Options{Width: time.Second, Lateness: 200 * time.Millisecond}, ShutdownTimeout: shutdown,
		Metrics: ms, Logger: slog.New(slog.NewTextHandler(logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	var once sync.Once
	var took time.Duration
	var runErr error
	stop := func() (time.Duration, error) {
		once.Do(func() {
			start := time.Now()
			cancel()
			select {
			case runErr = <-done:
				took = time.Since(start)
			case <-time.After(shutdown + time.Minute):
				t.Fatalf("Run did not return %s after its shutdown timeout of %s", time.Minute, shutdown)
			}
		})
		return took, runErr
	}
	t.Cleanup(func() { stop() })
	waitReady(t, d)
	return d, ms, stop
}

// produceOutage writes n good events of both versions stamped now, and
// malformed records that go to the DLQ.
func produceOutage(t *testing.T, brokers []string, topic string, n int) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.DefaultProduceTopic(topic))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	now := time.Now()
	var recs []*kgo.Record
	for i := range n {
		v := "v1"
		if i%4 == 0 {
			v = "v2"
		}
		recs = append(recs, &kgo.Record{Key: []byte("outage"), Value: fmt.Appendf(nil,
			`{"rollout":"outage","version":%q,"kind":"llm","name":"m","ts":%d,"duration_ms":20,"status":"ok"}`, v, now.Add(time.Duration(i)*time.Millisecond).UnixNano())})
		if i%50 == 0 {
			recs = append(recs, &kgo.Record{Key: []byte("outage"), Value: []byte(`{"rollout": oops`)})
		}
	}
	if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatalf("produce: %v", err)
	}
}

// timedGets fetches each path n times and returns the slowest answer and
// the 95th percentile; an error or a status other than want fails the test.
func timedGets(t *testing.T, addr string, n int, want map[string]int) (slowest, p95 time.Duration) {
	t.Helper()
	cl := &http.Client{Timeout: 10 * time.Second}
	var took []time.Duration
	for range n {
		for path, code := range want {
			start := time.Now()
			resp, err := cl.Get("http://" + addr + path)
			d := time.Since(start)
			if err != nil {
				t.Fatalf("GET %s with the broker away: %v (after %s)", path, err, d)
			}
			resp.Body.Close()
			if code != 0 && resp.StatusCode != code {
				t.Fatalf("GET %s with the broker away: status %d; want %d", path, resp.StatusCode, code)
			}
			took = append(took, d)
		}
	}
	slices.Sort(took)
	return took[len(took)-1], took[len(took)*95/100]
}

// checkLatency asserts the answers' 95th percentile under 100 ms and the
// slowest under 1 s (the fault was "never": a GC pause or a busy shared
// machine may cost tens of ms, not a second).
func checkLatency(t *testing.T, what string, slowest, p95 time.Duration) {
	t.Helper()
	t.Logf("GETs %s: 95th percentile %s, slowest %s", what, p95, slowest)
	if p95 > 100*time.Millisecond || slowest > time.Second {
		t.Errorf("GETs %s: 95th percentile %s, slowest %s; want under 100ms and 1s", what, p95, slowest)
	}
}

// TestBrokerRefusesWrites: a broker that refuses every write to the control
// and dead-letter topics (an ACL refusal: TOPIC_AUTHORIZATION_FAILED, which
// the client does not retry) while events keep coming. Before the outbox,
// the judge's lock was held across the command's endless retries and the
// partition goroutine retried its dead letters forever with
// context.Background: /v1/rollouts hung and shutdown never ended.
// Asserted: the HTTP API answers while commands and dead letters are stuck
// (each GET under 1 s: the fault was "never"; the figures are logged), the
// stuck work is visible in /metrics, and Run returns within its shutdown
// timeout saying what it could not flush.
func TestBrokerRefusesWrites(t *testing.T) {
	tp := newTopics(t)
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, tp.events, tp.control, tp.dlq), kfake.AllowAutoTopicCreation(), kfake.DefaultNumPartitions(3))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	brokers := c.ListenAddrs()
	// Produce requests name topics by id (v13+): learn the ids.
	adm, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	td, err := kadm.NewClient(adm).ListTopics(context.Background(), tp.control, tp.dlq)
	adm.Close()
	if err != nil {
		t.Fatal(err)
	}
	deny := map[[16]byte]bool{td[tp.control].ID: true, td[tp.dlq].ID: true}
	var refusing atomic.Bool
	var refused atomic.Int64
	c.ControlKey(int16(kmsg.Produce), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		req := kreq.(*kmsg.ProduceRequest)
		if !refusing.Load() {
			return nil, nil, false
		}
		resp := req.ResponseKind().(*kmsg.ProduceResponse)
		denied := false
		for _, rt := range req.Topics {
			st := kmsg.NewProduceResponseTopic()
			st.Topic, st.TopicID = rt.Topic, rt.TopicID
			for _, rp := range rt.Partitions {
				sp := kmsg.NewProduceResponseTopicPartition()
				sp.Partition = rp.Partition
				if rt.Topic == tp.control || rt.Topic == tp.dlq || deny[rt.TopicID] {
					sp.ErrorCode = kerr.TopicAuthorizationFailed.Code
					denied = true
				}
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		if !denied {
			return nil, nil, false
		}
		refused.Add(1)
		return resp, nil, true
	})

	logs := &syncBuffer{}
	const shutdown = 4 * time.Second
	d, _, stop := outageDaemon(t, brokers, tp, shutdown, logs)
	refusing.Store(true)
	produceOutage(t, brokers, tp.events, 2000)

	// The first window closes, its start command is decided and refused;
	// the malformed records' dead letters are refused too.
	defer func() {
		if t.Failed() {
			t.Logf("refused %d; logs:\n%s", refused.Load(), tail(logs.String(), 60))
		}
	}()
	waitFor(t, 20*time.Second, "a refused command and a refused dead letter", func() bool {
		m := get(t, "http://"+d.HTTPAddr()+"/metrics")
		return sumMetric(m, "canaryd_outbox_commands") >= 1 && sumMetric(m, "canaryd_command_send_errors_total") >= 1 &&
			strings.Contains(logs.String(), "dead-letter write failed")
	})
	slowest, p95 := timedGets(t, d.HTTPAddr(), 20, map[string]int{"/metrics": 200, "/v1/rollouts": 200, "/v1/rollouts/outage": 200, "/healthz": 200})
	checkLatency(t, fmt.Sprintf("while writes are refused (%d produce requests refused)", refused.Load()), slowest, p95)

	took, err := stop()
	t.Logf("Run returned %s after the stop (shutdown timeout %s): %v", took, shutdown, err)
	if took > shutdown+2*time.Second {
		t.Errorf("Run took %s to return; want at most the shutdown timeout %s (+2s)", took, shutdown)
	}
	out := logs.String()
	for _, want := range []string{"command not sent", "dead letters not written"} {
		if !strings.Contains(out, want) {
			t.Errorf("logs do not say %q:\n%s", want, tail(out, 40))
		}
	}
}

// TestBrokerDown: the real broker is killed (SIGKILL) under a running
// daemon. /metrics and /v1 keep answering, /readyz turns 503 saying that
// the broker does not answer, and Run returns within its shutdown timeout.
func TestBrokerDown(t *testing.T) {
	if testing.Short() || !slices.Contains(kafkatest.Kinds(), kafkatest.KindReal) {
		t.Skip("needs its own real broker (not in -short or with CANARYD_KAFKA=kfake)")
	}
	b := kafkatest.Own(t)
	brokers := b.Addrs()
	tp := newTopics(t)
	kafkatest.CreateTopics(t, brokers, 3, tp.events, tp.control, tp.dlq)
	logs := &syncBuffer{}
	const shutdown = 5 * time.Second
	d, _, stop := outageDaemon(t, brokers, tp, shutdown, logs)
	produceOutage(t, brokers, tp.events, 2000)
	waitFor(t, 60*time.Second, "the start command sent", func() bool {
		return strings.Contains(logs.String(), `msg="command sent"`)
	})
	b.Kill(t)
	killed := time.Now()
	waitFor(t, 90*time.Second, "/readyz 503 with the broker down", func() bool {
		resp, err := http.Get("http://" + d.HTTPAddr() + "/readyz")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		return resp.StatusCode == http.StatusServiceUnavailable
	})
	t.Logf("/readyz turned 503 %s after the broker was killed", time.Since(killed).Round(100*time.Millisecond))
	slowest, p95 := timedGets(t, d.HTTPAddr(), 20, map[string]int{"/metrics": 200, "/v1/rollouts": 200, "/readyz": 503})
	checkLatency(t, "with the broker down", slowest, p95)
	took, err := stop()
	t.Logf("Run returned %s after the stop (shutdown timeout %s): %v", took, shutdown, err)
	if took > shutdown+2*time.Second {
		t.Errorf("Run took %s to return; want at most the shutdown timeout %s (+2s)", took, shutdown)
	}
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// TestBrokerLateAtStart: canaryd started before its broker (a pod scheduled
// before Kafka is up) waits for it, not ready meanwhile, instead of exiting
// at once; once the broker answers it creates its topics and becomes ready.
func TestBrokerLateAtStart(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close() // nothing listens there until the broker starts
	tp := newTopics(t)
	logs := &syncBuffer{}
	cfg := testConfig(t, []string{fmt.Sprintf("127.0.0.1:%d", port)}, tp, "rollout: late\nbaseline: v1\ncanary: v2\nsteps: [{weight: 10}]\n")
	cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
	d, err := daemon.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	waitFor(t, time.Minute, "a retry logged", func() bool { return strings.Contains(logs.String(), "Kafka unreachable at start; retrying") })
	select {
	case err := <-done:
		t.Fatalf("Run returned with the broker away: %v; want it to wait", err)
	default:
	}
	resp, err := http.Get("http://" + d.HTTPAddr() + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("/readyz with the broker away: %d; want 503", resp.StatusCode)
	}
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(port), kfake.AllowAutoTopicCreation(), kfake.DefaultNumPartitions(3))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	waitReady(t, d)
}
