package router

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/inferensys/canaryd/internal/kafkatest"
	"github.com/inferensys/canaryd/schemas"
)

// readAcks reads the acks topic from the start until stop says enough, or
// fails the test after 60 s.
func readAcks(t *testing.T, brokers []string, topic string, stop func([]schemas.Ack) bool) []schemas.Ack {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var got []schemas.Ack
	for !stop(got) {
		if ctx.Err() != nil {
			t.Fatalf("acks after 60s: %+v", got)
		}
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
			var a schemas.Ack
			if err := json.Unmarshal(r.Value, &a); err != nil {
				t.Errorf("ack does not decode: %v: %s", err, r.Value)
				return
			}
			if err := a.Validate(); err != nil {
				t.Errorf("ack %s: %v", r.Value, err)
			}
			if string(r.Key) != a.Rollout {
				t.Errorf("ack key %q; want the rollout %q", r.Key, a.Rollout)
			}
			got = append(got, a)
		})
	}
	return got
}

// TestAcks: two routers follow the same control topic; one acknowledges
// every command, the other's Apply fails after the first, so it
// acknowledges only that one. Replayed commands are acknowledged too: a
// router that starts says where it is. On kfake and a real broker.
func TestAcks(t *testing.T) {
	t.Parallel()
	for _, kind := range kafkatest.Kinds() {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			brokers := kafkatest.Brokers(t, kind)
			topic, acks := kafkatest.Topic(t), kafkatest.Topic(t)+".acks"
			kafkatest.CreateTopics(t, brokers, 1, topic, acks)
			p := newProducer(t, brokers, topic)
			p.send(cmd("a", 1, schemas.ActionSetWeight, 0, 5), testKey) // replayed by both

			clock := func() time.Time { return time.Date(2026, 12, 3, 17, 0, 0, 0, time.UTC) }
			good := start(t, Brokers(brokers...), Topic(topic), SigningKey(testKey), Acks(acks, "good"), Clock(clock))
			failing := errors.New("proxy refused")
			bad := start(t, Brokers(brokers...), Topic(topic), SigningKey(testKey), Acks(acks, "bad"), Clock(clock),
				Apply(func(c Change) error {
					if c.State.Seq > 1 {
						return failing
					}
					return nil
				}))
			p.send(cmd("a", 2, schemas.ActionSetWeight, 1, 25), testKey)
			p.send(cmd("a", 3, schemas.ActionRollback, 1, 0), testKey)
			p.raw("a", []byte("not json")) // refused: no ack

			got := readAcks(t, brokers, acks, func(got []schemas.Ack) bool { return len(got) >= 4 })
			want := map[string][]string{"good": {"1 set_weight 5", "2 set_weight 25", "3 rollback 0"}, "bad": {"1 set_weight 5"}}
			seen := map[string][]string{}
			for _, a := range got {
				seen[a.Router] = append(seen[a.Router], fmt.Sprintf("%d %s %d", a.Seq, a.Action, a.Weight))
				if a.Rollout != "a" || !a.AppliedAt.Equal(clock()) {
					t.Errorf("ack %+v; want rollout a applied at %v", a, clock())
				}
				if a.CommandID != schemas.CommandID("a", "v1", "v2", a.Action, map[uint64]int{1: 0, 2: 1, 3: 1}[a.Seq], a.Weight) {
					t.Errorf("ack %+v: not its command's id", a)
				}
			}
			for r, w := range want {
				if strings.Join(seen[r], ", ") != strings.Join(w, ", ") {
					t.Errorf("router %s acknowledged %q; want %q", r, seen[r], w)
				}
			}
			// The acks are on the broker, so their callbacks have run.
			if st := good.AckStats(); st != (AckStats{Sent: 3}) {
				t.Errorf("good router: %+v; want 3 sent", st)
			}
			if st := bad.AckStats(); st != (AckStats{Sent: 1, NotApplied: 2}) {
				t.Errorf("bad router: %+v; want 1 sent, 2 not applied", st)
			}
			// Not applied is not acknowledged, but the table moved on.
			checkState(t, bad, "a", schemas.ActionRollback, 0, 3)
		})
	}
}

func TestAcksInvalid(t *testing.T) {
	for name, opts := range map[string][]Opt{
		"no router id":       {Brokers("localhost:1"), Acks("", "")},
		"router id too long": {Brokers("localhost:1"), Acks("x", strings.Repeat("r", schemas.MaxRouterBytes+1))},
		"negative flush":     {Brokers("localhost:1"), Acks("x", "r"), AckFlushTimeout(-time.Second)},
	} {
		if _, err := New(opts...); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%s: New() error %v; want ErrInvalidConfig", name, err)
		}
	}
	s, err := New(Brokers("localhost:1"), Acks("", "r"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.cfg.acksTopic != schemas.DefaultAcksTopic {
		t.Errorf("acks topic %q; want the default %q", s.cfg.acksTopic, schemas.DefaultAcksTopic)
	}
}
