package stream

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/inferensys/canaryd/internal/kafkatest"
	"github.com/inferensys/canaryd/schemas"
	"github.com/inferensys/canaryd/window"
)

// logLines collects log records as "msg k=v k=v" lines.
type logLines struct {
	mu    sync.Mutex
	lines []string
}

func (l *logLines) Enabled(context.Context, slog.Level) bool { return true }
func (l *logLines) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logLines) WithGroup(string) slog.Handler            { return l }
func (l *logLines) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Message)
	r.Attrs(func(a slog.Attr) bool {
		b.WriteString(" " + a.Key + "=" + a.Value.String())
		return true
	})
	l.mu.Lock()
	l.lines = append(l.lines, b.String())
	l.mu.Unlock()
	return nil
}

func (l *logLines) matching(s string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, line := range l.lines {
		if strings.Contains(line, s) {
			out = append(out, line)
		}
	}
	return out
}

// TestLateEventsPerRollout: late events are counted per rollout
// (canaryd_events_late_total{rollout}) and logged at most once per 10 s of
// wall time per partition, with how many, of which rollouts and how far
// behind the watermark; the rest of a burst is logged by the partition's
// ticks once 10 s have passed. They used to be one unlabelled counter, never
// logged. The consumer's clock is a fake one: the test decides when 10 s
// have passed.
func TestLateEventsPerRollout(t *testing.T) {
	topic := "late.events"
	brokers := kafkatest.Fake(t, topic)
	t0 := time.Date(2026, 12, 3, 13, 0, 0, 0, time.UTC)
	var clock atomic.Int64
	clock.Store(t0.UnixNano())
	ms := metrics.NewSet()
	logs := &logLines{}
	c, err := New(Options{Brokers: brokers, Topics: map[string]NewDecoder{topic: JSONDecoder}, Group: "late",
		Window:   window.Options{Width: 10 * time.Second, Lateness: 5 * time.Second},
		OnClosed: func(window.Closed) {}, DeadLetters: func(context.Context, []DeadLetter) error { return nil },
		Metrics: ms, Logger: slog.New(logs), Clock: func() time.Time { return time.Unix(0, clock.Load()) }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx, context.WithoutCancel(ctx)) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()

	pcl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer pcl.Close()
	produce := func(rollout string, ts time.Time, n int) {
		t.Helper()
		var ev schemas.Event
		ev.Rollout, ev.Version, ev.Kind, ev.Name, ev.TS = []byte(rollout), []byte("v1"), schemas.KindTool, []byte("search"), ts.UnixNano()
		for range n {
			if err := pcl.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: schemas.AppendEvent(nil, &ev)}).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
	}
	late := func(r string) uint64 {
		return ms.GetOrCreateCounter(`canaryd_events_late_total{rollout="` + r + `"}`).Get()
	}
	waitLate := func(n uint64) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); late("a")+late("b") < n; {
			if time.Now().After(deadline) {
				t.Fatalf("%d late events counted after 30 s; want %d", late("a")+late("b"), n)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	// 3 events at t0 (the quorum) move the watermark to t0−5s; then 7 of a
	// and 4 of b at t0−30s, 25 s behind it.
	produce("a", t0, 3)
	produce("a", t0.Add(-30*time.Second), 7)
	produce("b", t0.Add(-30*time.Second), 4)
	waitLate(11)
	if a, b := late("a"), late("b"); a != 7 || b != 4 {
		t.Fatalf("late events a %d, b %d; want 7, 4", a, b)
	}
	// The wall clock has not moved: one line, the first late event's.
	lines := logs.matching("late events dropped")
	if len(lines) != 1 || !strings.Contains(lines[0], "events=1 rollouts=a: 1 ") {
		t.Fatalf("log lines about late events %q; want one, about the first event", lines)
	}
	// 10 s later, the partition's next tick logs the rest; a late event
	// right after it is not logged until 10 s more have passed.
	clock.Add(int64(10 * time.Second))
	for deadline := time.Now().Add(30 * time.Second); len(logs.matching("late events dropped")) < 2; {
		if time.Now().After(deadline) {
			t.Fatalf("no second line 30 s after the clock moved 10 s: %q", logs.matching("late events dropped"))
		}
		time.Sleep(10 * time.Millisecond)
	}
	produce("b", t0.Add(-30*time.Second), 1)
	waitLate(12)
	lines = logs.matching("late events dropped")
	if len(lines) != 2 {
		t.Fatalf("log lines about late events %q; want two", lines)
	}
	for _, want := range []string{"in the last 10s", "events=10 rollouts=a: 6, b: 4 ", "max_behind_watermark=25s", "watermark=2026-12-03T12:59:55Z"} {
		if !strings.Contains(lines[1], want) {
			t.Fatalf("second line %q; want it to say %q", lines[1], want)
		}
	}
	clock.Add(int64(10 * time.Second))
	for deadline := time.Now().Add(30 * time.Second); len(logs.matching("late events dropped")) < 3; {
		if time.Now().After(deadline) {
			t.Fatalf("no third line 30 s after the clock moved 10 s more: %q", logs.matching("late events dropped"))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if l := logs.matching("late events dropped")[2]; !strings.Contains(l, "events=1 rollouts=b: 1 ") {
		t.Fatalf("third line %q; want the one late event of b", l)
	}
	var sb strings.Builder
	ms.WritePrometheus(&sb)
	if strings.Contains(sb.String(), "canaryd_events_late_total ") {
		t.Fatalf("an unlabelled late counter besides the per-rollout ones:\n%s", sb.String())
	}
}
