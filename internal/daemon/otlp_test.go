package daemon_test

import (
	"strings"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/inferensys/canaryd/internal/daemon"
	"github.com/inferensys/canaryd/internal/kafkatest"
	"github.com/inferensys/canaryd/loadtest"
	"github.com/inferensys/canaryd/schemas"
)

// TestOTLPLoop: the fleet writes OTLP protobuf spans (one record per
// session, as the Collector's exporter batches them); canaryd maps them,
// assembles sessions from traces and judges: the bad canary is rolled back.
func TestOTLPLoop(t *testing.T) {
	t.Parallel()
	for _, kind := range kafkatest.Kinds() {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			brokers := kafkatest.Brokers(t, kind)
			tp := newTopics(t)
			spans := tp.events + ".otlp"
			kafkatest.CreateTopics(t, brokers, 3, spans)
			ms := metrics.NewSet()
			d := startDaemon(t, brokers, tp, loopSpecs, ms, func(c *daemon.Config) {
				c.OTLPSpansTopic = spans
				c.Window.Lateness = 8 * time.Second // a session's spans arrive together when it ends
			})

			good := loadtest.DefaultProfile()
			bad := loadtest.DefaultProfile()
			bad.ErrorRateMult = 4
			defer startFleet(t, loadtest.FleetConfig{
				Brokers: brokers, EventsTopic: spans, ControlTopic: tp.control, Seed: 3, Format: loadtest.FormatOTLPProto,
				Rollouts: []loadtest.Rollout{
					{Name: "good", Baseline: "v1", Canary: "v2", BaselineProfile: good, CanaryProfile: good, Rate: 200},
					{Name: "bad", Baseline: "v1", Canary: "v2", BaselineProfile: good, CanaryProfile: bad, Rate: 200},
				},
			})()

			cmds := readCommands(t, brokers, tp.control, 120*time.Second, func(m map[string][]schemas.Command) bool {
				return finalOf(m["bad"]) != "" && len(m["good"]) > 0
			})
			if got := finalOf(cmds["bad"]); got != schemas.ActionRollback {
				t.Fatalf("bad rollout ended %q; want rollback (commands %v)", got, cmds["bad"])
			}
			t.Logf("bad: %s", cmds["bad"][len(cmds["bad"])-1].Reason)
			if len(cmds["good"]) == 0 || cmds["good"][0].Action != schemas.ActionSetWeight {
				t.Fatalf("good rollout commands %v; want a set_weight first", cmds["good"])
			}
			st, _ := d.Status("good")
			var reqs, sessions uint64
			for _, a := range st.Totals {
				reqs += a.Requests
				sessions += a.Sessions
			}
			if reqs == 0 || sessions == 0 {
				t.Fatalf("good rollout judged %d requests and %d sessions from spans; want both > 0", reqs, sessions)
			}
			if n := ms.GetOrCreateCounter("canaryd_sessions_assembled_total").Get(); n == 0 {
				t.Fatalf("no session assembled from traces")
			}
			// /v1/rollouts shows the rules in force and what each resolved.
			var list struct {
				OTLPRules struct {
					Rules    string                                  `json:"rules"`
					Resolved map[string]map[string]map[string]uint64 `json:"resolved"`
				} `json:"otlp_rules"`
			}
			getJSON(t, "http://"+d.HTTPAddr()+"/v1/rollouts", &list)
			if r := list.OTLPRules; !strings.Contains(r.Rules, "service.name") || r.Resolved["spans"]["rollout"]["service.name"] == 0 {
				t.Errorf("otlp_rules in /v1/rollouts: %+v; want the rules and spans resolved by service.name", r)
			}
		})
	}
}
