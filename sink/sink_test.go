package sink_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
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
		{"/v1/rollouts/b", "no rollout b", 404},
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
