package daemon_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/inferensys/canaryd/detector"
	"github.com/inferensys/canaryd/internal/daemon"
	"github.com/inferensys/canaryd/internal/kafkatest"
	"github.com/inferensys/canaryd/loadtest"
	"github.com/inferensys/canaryd/schemas"
	"github.com/inferensys/canaryd/sink"
)

// TestTwoStageInProcess: OTLP spans keyed by trace id, so each rollout is
// spread over all six partitions, read by two canaryd instances in one
// group with two-stage aggregation. Each rollout is judged by one instance
// only (the other shows no window of it), the bad canary is rolled back,
// each command is sent once, and the decision latency is measured. The good
// rollout's alpha (loopSpecs, 2e-5) bounds its false rollback by luck.
// (TestTwoStageMatchesOneProcess and TestTwoStageKill9 run canaryd
// processes and check the totals exactly.)
func TestTwoStageInProcess(t *testing.T) {
	t.Parallel()
	// kfake only: TestTwoStageMatchesOneProcess and TestTwoStageKill9 run
	// three processes on both kinds of Kafka; this one adds the drive
	// mode's loop (commands the fleet obeys) through two stages.
	for _, kind := range []string{kafkatest.KindFake} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			brokers := kafkatest.Brokers(t, kind)
			tp := newTopics(t)
			spans := tp.events + ".otlp"
			kafkatest.CreateTopics(t, brokers, 6, spans)
			tweak := func(c *daemon.Config) {
				c.OTLPSpansTopic = spans
				c.Window.Lateness = 8 * time.Second // a session's spans arrive together when it ends
				c.TwoStage = true
				c.PartialsTopic = tp.events + ".partials"
				c.StateTopic = tp.events + ".state"
				c.PartialsPartitions = 4
				c.SessionTimeout = 6 * time.Second
			}
			var ds []*daemon.Daemon
			var sets []*metrics.Set
			for range 2 {
				ms := metrics.NewSet()
				sets = append(sets, ms)
				ds = append(ds, startDaemon(t, brokers, tp, loopSpecs, ms, tweak))
			}

			good := loadtest.DefaultProfile()
			bad := loadtest.DefaultProfile()
			bad.ErrorRateMult = 4
			defer startFleet(t, loadtest.FleetConfig{
				Brokers: brokers, EventsTopic: spans, ControlTopic: tp.control, Seed: 5, Format: loadtest.FormatOTLPProto,
				Rollouts: []loadtest.Rollout{
					{Name: "good", Baseline: "v1", Canary: "v2", BaselineProfile: good, CanaryProfile: good, Rate: 200},
					{Name: "bad", Baseline: "v1", Canary: "v2", BaselineProfile: good, CanaryProfile: bad, Rate: 200},
				},
			})()

			cmds := readCommands(t, brokers, tp.control, 150*time.Second, func(m map[string][]schemas.Command) bool {
				return finalOf(m["bad"]) != "" && len(m["good"]) > 0
			})
			for _, r := range []string{"good", "bad"} {
				var desc []string
				seen := map[string]bool{}
				for _, c := range cmds[r] {
					desc = append(desc, fmt.Sprintf("%d:%s@%d", c.Seq, c.Action, c.Weight))
					if seen[c.CommandID] {
						t.Errorf("%s: command %s sent twice", r, c.CommandID)
					}
					seen[c.CommandID] = true
				}
				t.Logf("%s: %s", r, strings.Join(desc, " "))
			}
			if got := finalOf(cmds["bad"]); got != schemas.ActionRollback {
				t.Errorf("bad rollout ended %q; want rollback", got)
			}
			if got := finalOf(cmds["good"]); got == schemas.ActionRollback {
				t.Errorf("good rollout rolled back")
			}
			for _, r := range []string{"good", "bad"} {
				judging := 0
				for i, d := range ds {
					st, _ := d.Status(r)
					if st.Windows > 0 {
						judging++
						t.Logf("%s judged by instance %d: %d windows", r, i, st.Windows)
					}
				}
				if judging != 1 {
					t.Errorf("%s judged by %d instances; want 1", r, judging)
				}
				// Either instance answers about the rollout with its judge's
				// status: the other forwards the call to the judging one.
				for i, d := range ds {
					resp, err := http.Get("http://" + d.HTTPAddr() + "/v1/rollouts/" + r)
					if err != nil {
						t.Fatal(err)
					}
					var st detector.Status
					err = json.NewDecoder(resp.Body).Decode(&st)
					resp.Body.Close()
					if err != nil || resp.StatusCode != 200 {
						t.Fatalf("GET /v1/rollouts/%s from instance %d: %s %v", r, i, resp.Status, err)
					}
					if st.Windows == 0 {
						t.Errorf("instance %d answered about %s with a judge that saw no window (judged by: %q)", i, r, resp.Header.Get(sink.JudgedByHeader))
					}
					if by := resp.Header.Get(sink.JudgedByHeader); by != "" {
						t.Logf("instance %d forwarded %s to %s", i, r, by)
					}
				}
			}
			var published, received uint64
			for _, ms := range sets {
				published += ms.GetOrCreateCounter("canaryd_partials_published_total").Get()
				received += ms.GetOrCreateCounter(`canaryd_partials_received_total{result="ok"}`).Get()
			}
			var lat strings.Builder
			for i, d := range ds {
				for _, l := range strings.Split(get(t, "http://"+d.HTTPAddr()+"/metrics"), "\n") {
					if strings.HasPrefix(l, "canaryd_decision_latency_seconds_sum") || strings.HasPrefix(l, "canaryd_decision_latency_seconds_count") {
						fmt.Fprintf(&lat, " [%d] %s", i, l)
					}
				}
			}
			t.Logf("partials published %v, received %v; decision latency:%s", published, received, lat.String())
			if published == 0 || received == 0 {
				t.Errorf("partials published %v, received %v; want both > 0", published, received)
			}
		})
	}
}
