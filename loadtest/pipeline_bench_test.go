package loadtest_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/inferensys/canaryd/detector"
	"github.com/inferensys/canaryd/internal/daemon"
	"github.com/inferensys/canaryd/internal/kafkatest"
	"github.com/inferensys/canaryd/loadtest"
	"github.com/inferensys/canaryd/schemas"
	"github.com/inferensys/canaryd/window"
)

func TestMain(m *testing.M) { kafkatest.Main(m) }

// benchRollouts are twelve rollouts at 10% canary, so records interleave
// rollouts as they do on a shared partition and spread over partitions (the
// key is the rollout). Each runs 1000 sessions per second of event time —
// about 66k events per event-second in all — so that a benchmark of 1M events
// replays a stream as dense as the throughput it measures: the detector runs
// once per closed window, and a sparse stream replayed at 1M events/s would
// close hundreds of windows a second that a live stream of that rate never
// would.
func benchRollouts() []loadtest.Rollout {
	var rs []loadtest.Rollout
	for i := range benchRolloutN {
		p := loadtest.DefaultProfile()
		rs = append(rs, loadtest.Rollout{Name: fmt.Sprintf("agent-%d", i), Baseline: "v1", Canary: "v2",
			BaselineProfile: p, CanaryProfile: p, InitialWeight: 10, Rate: 1000})
	}
	return rs
}

const benchRolloutN = 12

func benchSpecs() []detector.Spec {
	var b strings.Builder
	for i := range benchRolloutN {
		fmt.Fprintf(&b, "---\nrollout: agent-%d\nbaseline: v1\ncanary: v2\nsteps: [{weight: 10, min_duration: 1h}]\n", i)
	}
	ss, err := detector.ParseSpecs("bench", []byte(b.String()))
	if err != nil {
		panic(err)
	}
	return ss
}

var (
	recordsOnce sync.Once
	records     [][]byte
)

// benchRecords are 500k generated records (about 170 MB), made once.
func benchRecords() [][]byte {
	recordsOnce.Do(func() {
		records = loadtest.NewGenerator(1, benchRollouts()).Records(500_000)
	})
	return records
}

// BenchmarkDecodeAggregate measures the per-event hot path without Kafka:
// decode a JSON record and count it into its window. Closed windows go to
// the detector as in the daemon. Target: ≥ 1.5M events/s on one core, 0
// allocations per event.
func BenchmarkDecodeAggregate(b *testing.B) {
	recs := benchRecords()
	judges := map[string]*detector.Judge{}
	for _, s := range benchSpecs() {
		judges[s.Rollout] = detector.NewJudge(s)
	}
	emit := func(c window.Closed) {
		if j := judges[c.Rollout]; j != nil {
			j.Observe(c)
			j.Decide(c.Watermark)
		}
	}
	newPart := func() *window.Partition { return window.NewPartition(0, window.Options{Emit: emit}) }
	part := newPart()
	var dec schemas.Decoder
	var ev schemas.Event
	b.ReportAllocs()
	b.ResetTimer()
	var bytes int64
	for i := 0; i < b.N; i++ {
		k := i % len(recs)
		if k == 0 && i > 0 {
			// The records repeat: start a fresh partition so that they are
			// not late. Amortised over 500k events.
			part.Flush()
			part = newPart()
		}
		r := recs[k]
		bytes += int64(len(r))
		if err := dec.Decode(r, &ev); err != nil {
			b.Fatal(err)
		}
		if err := part.Add(&ev, int64(i)); err != nil {
			b.Fatal(err)
		}
		if k%1000 == 999 {
			part.Advance()
		}
	}
	b.StopTimer()
	b.SetBytes(bytes / int64(b.N))
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkStateMemory reports the bytes of state per series (one version ×
// segment of one window, with a latency sketch of realistic spread) and
// checks that RSS stays flat over a 10M-event run once warm.
func BenchmarkStateMemory(b *testing.B) {
	for range b.N {
		// Bytes per series: open 10k series in one window.
		var m0, m1 runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&m0)
		part := window.NewPartition(0, window.Options{MaxSegments: 10_000, Width: time.Hour})
		ev := schemas.Event{Rollout: []byte("r"), Version: []byte("v1"), Kind: schemas.KindTool, TS: time.Now().UnixNano(), HasDuration: true}
		name := make([]byte, 0, 16)
		const series = 10_000
		for s := range series {
			name = strconv.AppendInt(name[:0], int64(s), 10)
			ev.Name = name
			for k := range 50 {
				ev.DurationMS = float64(20 + (s*7+k*37)%2000)
				part.Add(&ev, 0)
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&m1)
		perSeries := float64(m1.HeapAlloc-m0.HeapAlloc) / series
		runtime.KeepAlive(part)
		b.ReportMetric(perSeries, "bytes/series")

		// RSS over 10M events: generated on the fly (event time advances),
		// decoded and aggregated; windows close into judges.
		g := loadtest.NewGenerator(2, benchRollouts())
		judges := map[string]*detector.Judge{}
		for _, s := range benchSpecs() {
			judges[s.Rollout] = detector.NewJudge(s)
		}
		p := window.NewPartition(0, window.Options{Emit: func(c window.Closed) {
			judges[c.Rollout].Observe(c)
			judges[c.Rollout].Decide(c.Watermark)
		}})
		var dec schemas.Decoder
		var e schemas.Event
		buf := make([]byte, 0, 4096)
		const total = 10_000_000
		var warm, peak float64
		for i := range total {
			buf = g.Next(buf[:0])
			if err := dec.Decode(buf, &e); err != nil {
				b.Fatal(err)
			}
			p.Add(&e, int64(i))
			if i%1000 == 999 {
				p.Advance()
			}
			if i%1_000_000 == 999_999 {
				rss := rssMB()
				if i+1 == 2_000_000 {
					warm = rss
				}
				if i+1 >= 2_000_000 {
					peak = max(peak, rss)
				}
				b.Logf("after %2dM events: RSS %.1f MB, open windows %d", (i+1)/1_000_000, rss, p.OpenWindows())
			}
		}
		b.ReportMetric(warm, "MB-RSS-at-2M")
		b.ReportMetric(peak, "MB-RSS-peak-2M..10M")
		if peak > warm*1.5+20 {
			b.Errorf("RSS grew from %.1f MB (2M events) to %.1f MB: state is not bounded", warm, peak)
		}
	}
}

func rssMB() float64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	pages, _ := strconv.ParseFloat(f[1], 64)
	return pages * float64(os.Getpagesize()) / (1 << 20)
}

// BenchmarkEndToEnd measures, in one run and on the same topic, the
// throughput of a consume-and-discard franz-go consumer and of canaryd
// (consume, decode, aggregate, detect), on kfake and on Apache Kafka. Target:
// canaryd at ≥ 50% of the discard consumer.
func BenchmarkEndToEnd(b *testing.B) {
	const n = 1_000_000
	for _, kind := range kafkatest.Kinds() {
		b.Run(kind, func(b *testing.B) {
			brokers := kafkatest.Brokers(b, kind)
			topic := kafkatest.Topic(b)
			kafkatest.CreateTopics(b, brokers, 3, topic)
			produceN(b, brokers, topic, n)
			for range b.N {
				discard := consumeDiscard(b, brokers, topic, n)
				judged := runCanaryd(b, brokers, topic, n, "")
				// Checkpoints every 200 ms (the default is 5 s) so that a run of
				// well under a second writes several: the worst case.
				ckpt := runCanaryd(b, brokers, topic, n, b.TempDir())
				b.ReportMetric(discard, "discard-events/s")
				b.ReportMetric(judged, "canaryd-events/s")
				b.ReportMetric(judged/discard, "ratio")
				b.ReportMetric(ckpt, "canaryd-ckpt-events/s")
				b.ReportMetric(ckpt/judged, "ckpt-on/off")
				b.Logf("%s: %d events: consume-and-discard %.0f events/s, canaryd %.0f events/s (%.0f%%); with checkpoints every 200 ms %.0f events/s (%.0f%% of without)",
					kind, n, discard, judged, 100*judged/discard, ckpt, 100*ckpt/judged)
				if kind == kafkatest.KindReal {
					if kc := kcatRate(b, brokers, topic, n); kc > 0 {
						b.ReportMetric(kc, "kcat-events/s")
						b.Logf("%s: kcat -C %.0f events/s", kind, kc)
					}
				}
			}
		})
	}
}

func produceN(b *testing.B, brokers []string, topic string, n int) {
	b.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.DefaultProduceTopic(topic), kgo.ProducerLinger(5*time.Millisecond), kgo.MaxBufferedRecords(100_000))
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	g := loadtest.NewGenerator(3, benchRollouts())
	ctx := context.Background()
	var failed error
	var mu sync.Mutex
	for range n {
		key, rec := g.NextKeyed(nil)
		cl.Produce(ctx, &kgo.Record{Key: key, Value: rec}, func(_ *kgo.Record, err error) {
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
}

func consumeDiscard(b *testing.B, brokers []string, topic string, n int) float64 {
	b.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxPartitionBytes(4<<20))
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	// Timed from the first record, as canaryd is: connection set-up is not
	// throughput.
	var start time.Time
	got := 0
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for got < n {
		fs := cl.PollRecords(ctx, 10_000)
		if ctx.Err() != nil {
			b.Fatalf("discard consumer got %d of %d", got, n)
		}
		if got == 0 {
			start = time.Now()
		}
		got += fs.NumRecords()
	}
	return float64(n) / time.Since(start).Seconds()
}

// runCanaryd runs canaryd on topic until it consumed n records and returns
// its events/s; with stateDir set, it checkpoints every 200 ms.
func runCanaryd(b *testing.B, brokers []string, topic string, n int, stateDir string) float64 {
	b.Helper()
	ms := metrics.NewSet()
	d, err := daemon.New(daemon.Config{Brokers: brokers, EventsTopic: topic, ControlTopic: topic + ".control", DLQTopic: topic + ".dlq",
		Group: kafkatest.Topic(b), Specs: benchSpecs(), Metrics: ms,
		Window:   window.Options{MaxFuture: 100 * 365 * 24 * time.Hour},
		StateDir: stateDir, StateTopic: topic + ".state", CheckpointInterval: 200 * time.Millisecond})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	records := ms.GetOrCreateCounter("canaryd_records_total")
	deadline := time.Now().Add(5 * time.Minute)
	// Timed from the first record counted (after topic checks, the control
	// topic read-back and the group join): the 2 ms polling of the counter
	// costs both ends the same.
	var start time.Time
	last := time.Now()
	for records.Get() < uint64(n) {
		if os.Getenv("BENCH_TRACE") != "" && time.Since(last) > 100*time.Millisecond {
			last = time.Now()
			b.Logf("%s %d", time.Now().Format("15:04:05.000"), records.Get())
		}
		if start.IsZero() && records.Get() > 0 {
			start = time.Now()
		}
		if time.Now().After(deadline) {
			b.Fatalf("canaryd consumed %d of %d", records.Get(), n)
		}
		time.Sleep(2 * time.Millisecond)
	}
	el := time.Since(start)
	cancel()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	if stateDir != "" {
		ck := ms.GetOrCreateCounter("canaryd_checkpoints_total").Get()
		b.Logf("checkpoints written: %d (last %v bytes)", ck, gaugeValue(ms, "canaryd_checkpoint_bytes"))
	}
	return float64(n) / el.Seconds()
}

// kcatRate times Debian's kcat reading the topic's n records to /dev/null
// (librdkafka, a third-party consumer), or returns 0 when kcat is missing.
func kcatRate(b *testing.B, brokers []string, topic string, n int) float64 {
	b.Helper()
	path, err := exec.LookPath("kcat")
	if err != nil {
		b.Logf("kcat not installed: no kcat figure (apt-get install kcat)")
		return 0
	}
	cmd := exec.Command(path, "-C", "-b", strings.Join(brokers, ","), "-t", topic, "-o", "beginning", "-e", "-q", "-f", "%o\n")
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, out)
	if err := cmd.Wait(); err != nil {
		b.Fatalf("kcat: %v", err)
	}
	el := time.Since(start)
	return float64(n) / el.Seconds()
}

func gaugeValue(ms *metrics.Set, name string) string {
	var sb strings.Builder
	ms.WritePrometheus(&sb)
	for _, l := range strings.Split(sb.String(), "\n") {
		if strings.HasPrefix(l, name+" ") {
			return strings.TrimPrefix(l, name+" ")
		}
	}
	return "?"
}
