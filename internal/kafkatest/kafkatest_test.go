package kafkatest_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/inferensys/canaryd/internal/kafkatest"
)

func TestMain(m *testing.M) { kafkatest.Main(m) }

// TestRoundTrip produces records with one client and consumes them in a
// consumer group with another, against every kind of Kafka.
func TestRoundTrip(t *testing.T) {
	t.Parallel()
	const n = 1000
	for _, kind := range kafkatest.Kinds() {
		t.Run(kind, func(t *testing.T) {
			brokers := kafkatest.Brokers(t, kind)
			topic := kafkatest.Topic(t)
			kafkatest.CreateTopics(t, brokers, 3, topic)
			ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
			defer cancel()

			produce(ctx, t, brokers, topic, n)
			got := consume(ctx, t, brokers, topic, n)

			if len(got) != n {
				t.Fatalf("consumed %d records; want %d", len(got), n)
			}
			seen := make(map[int]bool, n)
			last := make(map[int32]int) // partition -> index of its last record
			for _, r := range got {
				i, err := strconv.Atoi(string(r.Key))
				if err != nil || i < 0 || i >= n {
					t.Fatalf("record key %q: not an index below %d", r.Key, n)
				}
				if seen[i] {
					t.Fatalf("record %d consumed twice", i)
				}
				seen[i] = true
				if want := value(i); string(r.Value) != want {
					t.Fatalf("record %d value %q; want %q", i, r.Value, want)
				}
				if j, ok := last[r.Partition]; ok && i <= j {
					t.Fatalf("partition %d: record %d after %d; want produce order", r.Partition, i, j)
				}
				last[r.Partition] = i
			}
			if len(last) != 3 {
				t.Errorf("records landed in %d partitions; want 3", len(last))
			}
		})
	}
}

// TestOwnRestart crashes and then cleanly stops an own broker, restarting it
// each time, with one producer client open throughout: no acknowledged record
// may be lost and the client must find the broker on the same port again.
func TestOwnRestart(t *testing.T) {
	t.Parallel()
	if !slices.Contains(kafkatest.Kinds(), kafkatest.KindReal) {
		t.Skipf("CANARYD_KAFKA=%s excludes %s", os.Getenv("CANARYD_KAFKA"), kafkatest.KindReal)
	}
	b := kafkatest.Own(t)
	brokers := b.Addrs()
	topic := kafkatest.Topic(t)
	kafkatest.CreateTopics(t, brokers, 3, topic)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()

	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.DefaultProduceTopic(topic))
	if err != nil {
		t.Fatalf("new producer: %v", err)
	}
	defer cl.Close()
	const batch = 100
	next := 0
	produceBatch := func() {
		t.Helper()
		recs := make([]*kgo.Record, batch)
		for i := range recs {
			recs[i] = &kgo.Record{Key: []byte(strconv.Itoa(next)), Value: []byte(value(next))}
			next++
		}
		if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			t.Fatalf("produce records %d..%d: %v", next-batch, next-1, err)
		}
	}

	produceBatch()
	b.Kill(t)
	b.Restart(t)
	produceBatch()
	b.Shutdown(t)
	b.Restart(t)
	produceBatch()

	got := consume(ctx, t, brokers, topic, next)
	if len(got) != next {
		t.Fatalf("consumed %d records; want %d", len(got), next)
	}
}

func value(i int) string { return fmt.Sprintf("value-%04d", i) }

func produce(ctx context.Context, t *testing.T, brokers []string, topic string, n int) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.DefaultProduceTopic(topic))
	if err != nil {
		t.Fatalf("new producer: %v", err)
	}
	defer cl.Close()
	recs := make([]*kgo.Record, n)
	for i := range recs {
		recs[i] = &kgo.Record{Key: []byte(strconv.Itoa(i)), Value: []byte(value(i))}
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatalf("produce: %v", err)
	}
}

func consume(ctx context.Context, t *testing.T, brokers []string, topic string, n int) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(brokers...),
		kgo.ConsumeTopics(topic),
		kgo.ConsumerGroup(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
	)
	if err != nil {
		t.Fatalf("new consumer: %v", err)
	}
	defer cl.Close()
	var got []*kgo.Record
	for len(got) < n {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("consumed %d of %d records: %v", len(got), n, err)
		}
		fs.EachError(func(topic string, p int32, err error) {
			t.Fatalf("fetch %s/%d: %v", topic, p, err)
		})
		got = append(got, fs.Records()...)
	}
	// Anything past n would be a duplicate; give it a moment to show up.
	extra, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	got = append(got, cl.PollFetches(extra).Records()...)
	return got
}
