package stream

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/inferensys/canaryd/internal/kafkatest"
	"github.com/inferensys/canaryd/schemas"
	"github.com/inferensys/canaryd/window"
)

// TestPartialsBeforeCommit: with Options.Partials (two-stage aggregation's
// stage 1), closed windows go there and not to OnClosed, and the group's
// committed offset does not pass the records of a window until Partials
// has accepted it: while it fails, the commit stays at the window's first
// record; once it succeeds, the commit moves on. Also: sessions the full
// session memory could not track are counted
// (canaryd_sessions_untracked_total).
func TestPartialsBeforeCommit(t *testing.T) {
	topic := "partials.events"
	brokers := kafkatest.Fake(t, topic)
	ms := metrics.NewSet()
	var (
		mu        sync.Mutex
		published []window.Closed
		fail      atomic.Bool
		calls     atomic.Int64
	)
	fail.Store(true)
	c, err := New(Options{Brokers: brokers, Topics: map[string]NewDecoder{topic: JSONDecoder}, Group: "partials",
		Window:   window.Options{Width: 10 * time.Second, Lateness: time.Second, MaxSessions: 4},
		OnClosed: func(c window.Closed) { t.Errorf("OnClosed called with Partials set: %s [%d]", c.Rollout, c.Start) },
		Partials: func(_ context.Context, cs []window.Closed) error {
			calls.Add(1)
			if fail.Load() {
				return errors.New("broker says no")
			}
			mu.Lock()
			published = append(published, cs...)
			mu.Unlock()
			return nil
		},
		DeadLetters: func(context.Context, []DeadLetter) error { return nil },
		Metrics:     ms})
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
	t0 := time.Now().Truncate(10 * time.Second).Add(-time.Minute)
	produce := func(ts time.Time, session string) {
		t.Helper()
		var ev schemas.Event
		ev.Rollout, ev.Version, ev.Kind, ev.Name, ev.TS, ev.SessionID = []byte("r"), []byte("v1"), schemas.KindTool, []byte("search"), ts.UnixNano(), []byte(session)
		if err := pcl.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: schemas.AppendEvent(nil, &ev)}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	// Window [t0, t0+10s): offsets 0–7, eight sessions within 0.8 s. The
	// memory holds 4; the fifth to eighth find it full, and it is swept at
	// most once a second of event time: 4 untracked. Then 3 events at
	// t0+12s close the window (the quorum).
	for i := range 8 {
		produce(t0.Add(time.Duration(i)*100*time.Millisecond), fmt.Sprint("s", i))
	}
	for range 3 {
		produce(t0.Add(12*time.Second), "s0")
	}
	adm := kadm.NewClient(pcl)
	committed := func() int64 {
		os, err := adm.FetchOffsets(ctx, "partials")
		if err != nil {
			t.Fatal(err)
		}
		o, ok := os.Lookup(topic, 0)
		if !ok {
			return -1
		}
		return o.At
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("after 30 s: %s", what)
			}
		}
	}
	// Failing: retried, and the commit (auto-committed every second) stays
	// at or before the window's first record.
	waitFor("Partials retried 3 times", func() bool { return calls.Load() >= 3 })
	if got := committed(); got > 0 {
		t.Fatalf("committed offset %d while the window's partial is not accepted; want ≤ 0", got)
	}
	fail.Store(false)
	waitFor("the window published", func() bool { mu.Lock(); defer mu.Unlock(); return len(published) == 1 })
	// The open window [t0+10s, t0+20s) starts at offset 8.
	waitFor("commit at offset 8", func() bool { return committed() == 8 })
	mu.Lock()
	p := published[0]
	mu.Unlock()
	if p.Rollout != "r" || p.Start != t0.UnixNano() || len(p.Series) != 1 || p.Series[0].Agg.Count != 8 {
		t.Fatalf("published %s [%d] with %d series; want r [%d] with one series of 8 events", p.Rollout, p.Start, len(p.Series), t0.UnixNano())
	}
	if n := ms.GetOrCreateCounter("canaryd_sessions_untracked_total").Get(); n < 4 {
		// (More when the group moved the partition and it was read again.)
		t.Fatalf("canaryd_sessions_untracked_total %d; want at least 4", n)
	}
}

// TestPartialsRevokeKeepsWindowsWhole: with two stages and no checkpoints,
// a partition revoked with a window open does not publish that window cut
// short (the one judge would then ignore the rest of it, published by the
// next owner under the same identity, as a replay): the next owner
// rebuilds it from the commit and publishes it whole. The first partial
// published of each (partition, window) holds all of the window's events.
func TestPartialsRevokeKeepsWindowsWhole(t *testing.T) {
	topic := "partials.revoke"
	brokers := kafkatest.Fake(t, topic)
	var (
		mu    sync.Mutex
		first = map[string]uint64{} // "partition/start" → events in the first partial of window [t0, t0+10s)
		t0    = time.Now().Truncate(10 * time.Second).Add(-time.Minute)
	)
	publish := func(_ context.Context, cs []window.Closed) error {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range cs {
			k := fmt.Sprint(c.Partition, "/", c.Start)
			if c.Start != t0.UnixNano() {
				continue
			}
			if _, ok := first[k]; ok {
				continue
			}
			var n uint64
			for _, s := range c.Series {
				n += s.Agg.Count
			}
			first[k] = n
		}
		return nil
	}
	start := func(name string, ms *metrics.Set) func() {
		c, err := New(Options{Brokers: brokers, Topics: map[string]NewDecoder{topic: JSONDecoder}, Group: "revoke",
			Window:   window.Options{Width: 10 * time.Second, Lateness: time.Second},
			OnClosed: func(window.Closed) {}, Partials: publish,
			DeadLetters: func(context.Context, []DeadLetter) error { return nil }, Metrics: ms})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- c.Run(ctx, context.WithoutCancel(ctx)) }()
		return func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("%s: %v", name, err)
			}
		}
	}
	pcl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer pcl.Close()
	ctx := context.Background()
	produce := func(p int32, ts time.Time, n int) {
		t.Helper()
		var ev schemas.Event
		ev.Rollout, ev.Version, ev.Kind, ev.Name, ev.TS = []byte("r"), []byte("v1"), schemas.KindTool, []byte("search"), ts.UnixNano()
		for range n {
			if err := pcl.ProduceSync(ctx, &kgo.Record{Topic: topic, Partition: p, Value: schemas.AppendEvent(nil, &ev)}).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("after 30 s: %s", what)
			}
		}
	}
	msA, msB := metrics.NewSet(), metrics.NewSet()
	stopA := start("a", msA)
	// Window [t0, t0+10s) open on the three partitions in a: 5 events each.
	for p := range int32(3) {
		produce(p, t0.Add(time.Second), 5)
	}
	waitFor("a read the 15 events", func() bool { return msA.GetOrCreateCounter("canaryd_records_total").Get() >= 15 })
	// b joins: a partition moves from a to b with the window open.
	stopB := start("b", msB)
	// Every partition holds the open window: the one b gets, a had.
	waitFor("b assigned a partition", func() bool { return gaugeOf(msB, "canaryd_partitions_assigned") > 0 })
	// The rest of the window, then 3 events at t0+12s that close it (the
	// quorum), on every partition.
	for p := range int32(3) {
		produce(p, t0.Add(2*time.Second), 4)
		produce(p, t0.Add(12*time.Second), 3)
	}
	waitFor("every partition's window [t0, t0+10s) published", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(first) == 3
	})
	stopB()
	stopA()
	mu.Lock()
	defer mu.Unlock()
	for k, n := range first {
		if n != 9 {
			t.Errorf("window %s first published with %d events; want all 9", k, n)
		}
	}
}

// gaugeOf reads an unlabelled gauge's value from the set's exposition.
func gaugeOf(ms *metrics.Set, name string) float64 {
	var b strings.Builder
	ms.WritePrometheus(&b)
	for _, l := range strings.Split(b.String(), "\n") {
		if v, ok := strings.CutPrefix(l, name+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return 0
}
