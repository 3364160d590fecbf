package sink_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/inferensys/canaryd/internal/kafkatest"
	"github.com/inferensys/canaryd/schemas"
	"github.com/inferensys/canaryd/sink"
)

// TestControlIgnoresForgedCommands: with a sign key, a command on the
// control topic without a valid signature (a writer without the key) is
// neither taken as the rollout's latest command (which would end or move
// it in canaryd's view at start) nor as sent (which would suppress a real
// decision with that id).
func TestControlIgnoresForgedCommands(t *testing.T) {
	for _, kind := range kafkatest.Kinds() {
		t.Run(kind, func(t *testing.T) {
			brokers := kafkatest.Brokers(t, kind)
			topic := kafkatest.Topic(t)
			kafkatest.CreateTopics(t, brokers, 1, topic)
			key := []byte("the key")
			cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.DefaultProduceTopic(topic))
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			put := func(c schemas.Command, signKey []byte) {
				t.Helper()
				if err := c.Sign(signKey); err != nil {
					t.Fatal(err)
				}
				b, _ := json.Marshal(c)
				if err := cl.ProduceSync(context.Background(), &kgo.Record{Key: []byte(c.Rollout), Value: b}).FirstErr(); err != nil {
					t.Fatal(err)
				}
			}
			at := time.Unix(1_800_000_000, 0).UTC()
			real := schemas.Command{CommandID: "real-1", Seq: 1, Rollout: "r", Baseline: "v1", Canary: "v2", Action: schemas.ActionSetWeight, Weight: 10, DecidedAt: at}
			put(real, key)
			forged := schemas.Command{CommandID: "forged-2", Seq: 2, Rollout: "r", Baseline: "v1", Canary: "v2", Action: schemas.ActionRollback, DecidedAt: at}
			put(forged, nil) // unsigned
			put(schemas.Command{CommandID: "forged-3", Seq: 3, Rollout: "r", Baseline: "v1", Canary: "v2", Action: schemas.ActionPromote, Weight: 100, DecidedAt: at}, []byte("another key"))

			ms := metrics.NewSet()
			c := sink.NewControl(cl, topic, key, ms, nil)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			n, err := c.Load(ctx, kgo.SeedBrokers(brokers...))
			if err != nil {
				t.Fatal(err)
			}
			if n != 1 {
				t.Errorf("commands read: %d; want 1 (the signed one)", n)
			}
			if last := c.Last("r"); last == nil || last.CommandID != "real-1" {
				t.Errorf("latest command of r: %+v; want real-1", last)
			}
			if c.Sent("forged-2") || c.Sent("forged-3") {
				t.Error("a forged command id counts as sent")
			}
			if got := ms.GetOrCreateCounter("canaryd_commands_unsigned_ignored_total").Get(); got != 2 {
				t.Errorf("canaryd_commands_unsigned_ignored_total = %d; want 2", got)
			}
		})
	}
}
