package sink_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/inferensys/canaryd/detector"
	"github.com/inferensys/canaryd/internal/kafkatest"
	"github.com/inferensys/canaryd/schemas"
	"github.com/inferensys/canaryd/sink"
	"github.com/inferensys/canaryd/stream"
)

func TestMain(m *testing.M) { kafkatest.Main(m) }

func cmd(seq uint64, action schemas.Action, weight int) *schemas.Command {
	return &schemas.Command{
		CommandID: schemas.CommandID("r", "v1", "v2", action, int(seq), weight), Seq: seq, Rollout: "r",
		Baseline: "v1", Canary: "v2", Action: action, Weight: weight, Step: int(seq) - 1, Reason: "test",
		DecidedAt: time.Unix(1_700_000_000, 0).UTC(),
	}
}

// TestControlDeduplicates: a command is sent once; a new Control that reads
// the topic back knows what was sent and does not send it again.
func TestControlDeduplicates(t *testing.T) {
	for _, kind := range kafkatest.Kinds() {
		t.Run(kind, func(t *testing.T) {
			brokers := kafkatest.Brokers(t, kind)
			topic := kafkatest.Topic(t)
			kafkatest.CreateTopics(t, brokers, 1, topic)
			cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			ctx := context.Background()
			key := []byte("secret")
			c := sink.NewControl(cl, topic, key, metrics.NewSet(), nil)
			for i, want := range []bool{true, false} {
				sent, err := c.Send(ctx, cmd(1, schemas.ActionSetWeight, 5))
				if err != nil || sent != want {
					t.Fatalf("send #%d: sent=%v err=%v; want sent=%v", i, sent, err, want)
				}
			}
			if sent, err := c.Send(ctx, cmd(2, schemas.ActionRollback, 0)); err != nil || !sent {
				t.Fatalf("second command: sent=%v err=%v", sent, err)
			}

			c2 := sink.NewControl(cl, topic, key, metrics.NewSet(), nil)
			n, err := c2.Load(ctx, kgo.SeedBrokers(brokers...))
			if err != nil || n != 2 {
				t.Fatalf("Load: %d commands, %v; want 2", n, err)
			}
			last := c2.Last("r")
			if last == nil || last.Action != schemas.ActionRollback || last.Seq != 2 {
				t.Fatalf("Last = %+v; want the rollback", last)
			}
			if !last.Verify(key) || last.Verify([]byte("other")) {
				t.Fatalf("signature does not verify under its key only")
			}
			if sent, _ := c2.Send(ctx, cmd(1, schemas.ActionSetWeight, 5)); sent {
				t.Fatalf("a command read back from the topic was sent again")
			}
			// Later loads read only what was added since (here by c).
			if sent, err := c.Send(ctx, cmd(3, schemas.ActionSetWeight, 50)); err != nil || !sent {
				t.Fatalf("third command: sent=%v err=%v", sent, err)
			}
			for i, want := range []int{1, 0} {
				if n, err := c2.Load(ctx, kgo.SeedBrokers(brokers...)); err != nil || n != want {
					t.Fatalf("Load #%d after the third command: %d commands, %v; want %d", i+2, n, err, want)
				}
			}
			if last := c2.Last("r"); last == nil || last.Seq != 3 || !c2.Sent(last.CommandID) {
				t.Fatalf("Last = %+v; want seq 3, known as sent", last)
			}
		})
	}
}

type statuses []detector.Status

func (s statuses) Statuses() []detector.Status { return s }
func (s statuses) Status(id string) (detector.Status, bool) {
	for _, st := range s {
		if st.Rollout == id {
			return st, true
		}
	}
	return detector.Status{}, false
}

func TestHTTP(t *testing.T) {
	ms := metrics.NewSet()
	ms.NewCounter("canaryd_test_total").Inc()
	ready := errors.New("starting")
	srv := httptest.NewServer(sink.Handler(statuses{{Rollout: "a", Final: "promote"}}, ms, func() error { return ready }))
	defer srv.Close()
	get := func(path string) (int, string) {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/readyz"); code != 503 || !strings.Contains(body, "starting") {
		t.Fatalf("/readyz while starting: %d %q", code, body)
	}
	ready = nil
	for _, tc := range []struct {
		path, want string
		code       int
	}{
		{"/readyz", "ready", 200},
		{"/healthz", "ok", 200},
		{"/metrics", "canaryd_test_total 1", 200},
		{"/v1/rollouts", `"rollout": "a"`, 200},
		{"/v1/rollouts/a", `"final": "promote"`, 200},
		{"/v1/rollouts/b", `no rollout \"b\"`, 404},
	} {
		code, body := get(tc.path)
		if code != tc.code || !strings.Contains(body, tc.want) {
			t.Errorf("GET %s = %d %q; want %d containing %q", tc.path, code, body, tc.code, tc.want)
		}
	}
	var st detector.Status
	_, body := get("/v1/rollouts/a")
	if err := json.Unmarshal([]byte(body), &st); err != nil || st.Rollout != "a" {
		t.Fatalf("status does not decode: %v", err)
	}
}

// TestDLQTooLarge: a dead letter too large for the DLQ topic (its
// max.message.bytes) is written truncated to its first 64 KiB, with a
// canaryd.truncated header giving its original length, next to its reason
// and source; a dead letter that fits, sent in its own batch, arrives whole
// with no such header. Both count in canaryd_dlq_records_total.
func TestDLQTooLarge(t *testing.T) {
	const limit, big = 100_000, 300_000
	for _, kind := range kafkatest.Kinds() {
		t.Run(kind, func(t *testing.T) {
			brokers := kafkatest.Brokers(t, kind)
			topic := kafkatest.Topic(t)
			kafkatest.CreateTopicsConfig(t, brokers, 1, map[string]string{"max.message.bytes": fmt.Sprint(limit)}, topic)
			// Retries would only repeat MESSAGE_TOO_LARGE; the client's own
			// limit is above the topic's so that the broker is the one to refuse.
			cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ProducerBatchMaxBytes(4<<20), kgo.RecordRetries(1))
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			ms := metrics.NewSet()
			dlq := sink.NewDLQ(cl, topic, ms)
			// Incompressible, so that the batch the broker sees stays too large.
			value := make([]byte, big)
			rand.NewChaCha8([32]byte{1}).Read(value)
			ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
			defer cancel()
			src := &kgo.Record{Topic: "agent.events", Partition: 2, Offset: 41, Key: []byte("r"), Value: value,
				Headers: []kgo.RecordHeader{{Key: "traceparent", Value: []byte("00-ab")}}}
			if err := dlq.Send(ctx, []stream.DeadLetter{{Record: src, Reason: "decode: too long"}}); err != nil {
				t.Fatalf("Send(too large): %v", err)
			}
			small := &kgo.Record{Topic: "agent.events", Partition: 0, Offset: 7, Key: []byte("s"), Value: []byte("{bad json")}
			if err := dlq.Send(ctx, []stream.DeadLetter{{Record: small, Reason: "decode: bad json"}}); err != nil {
				t.Fatalf("Send(small): %v", err)
			}
			if got := ms.GetOrCreateCounter("canaryd_dlq_records_total").Get(); got != 2 {
				t.Errorf("canaryd_dlq_records_total = %d; want 2", got)
			}

			cons, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
			if err != nil {
				t.Fatal(err)
			}
			defer cons.Close()
			var got []*kgo.Record
			for len(got) < 2 {
				fs := cons.PollFetches(ctx)
				if err := ctx.Err(); err != nil {
					t.Fatalf("read the DLQ: %d of 2 records before %v", len(got), err)
				}
				fs.EachError(func(_ string, _ int32, err error) { t.Fatalf("fetch: %v", err) })
				got = append(got, fs.Records()...)
			}
			headers := func(r *kgo.Record) map[string]string {
				h := map[string]string{}
				for _, x := range r.Headers {
					h[x.Key] = string(x.Value)
				}
				return h
			}
			h := headers(got[0])
			if len(got[0].Value) != 64<<10 || !bytes.Equal(got[0].Value, value[:64<<10]) {
				t.Errorf("too large record: value of %d bytes; want its first %d bytes", len(got[0].Value), 64<<10)
			}
			for k, want := range map[string]string{"canaryd.truncated": fmt.Sprint(big), "canaryd.reason": "decode: too long",
				"canaryd.source": "agent.events/2/41", "traceparent": "00-ab"} {
				if h[k] != want {
					t.Errorf("too large record: header %s = %q; want %q", k, h[k], want)
				}
			}
			if string(got[0].Key) != "r" {
				t.Errorf("too large record: key %q; want %q", got[0].Key, "r")
			}
			h = headers(got[1])
			if string(got[1].Value) != "{bad json" || h["canaryd.reason"] != "decode: bad json" || h["canaryd.source"] != "agent.events/0/7" {
				t.Errorf("small record: value %q, headers %v; want it whole with its reason and source", got[1].Value, h)
			}
			if _, ok := h["canaryd.truncated"]; ok {
				t.Errorf("small record: canaryd.truncated header %q; want none", h["canaryd.truncated"])
			}
		})
	}
}
