package daemon_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
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

// loopSpecs: alpha bounds a false rollback of the good rollout, which
// TestLoop, TestOTLPLoop and others assert is promoted: at 2e-5 a test that
// runs it on both kinds of Kafka fails that way with chance ≤ 4e-5. The bad
// rollout keeps alpha 0.01: its rollback needs power, not a small alpha.
const loopSpecs = `
rollout: good
baseline: v1
canary: v2
alpha: 0.00002
steps:
  - {weight: 20, min_duration: 3s, min_canary_events: 300}
  - {weight: 50, min_duration: 3s, min_canary_events: 300}
  - {weight: 100}
metrics: {error_rate: {margin: 2.0}}
---
rollout: bad
baseline: v1
canary: v2
alpha: 0.01
steps:
  - {weight: 20, min_duration: 3s, min_canary_events: 300}
  - {weight: 50, min_duration: 3s, min_canary_events: 300}
  - {weight: 100}
metrics: {error_rate: {margin: 2.0}}
`

type topics struct{ events, control, dlq string }

func newTopics(t *testing.T) topics {
	base := kafkatest.Topic(t)
	return topics{events: base + ".events", control: base + ".control", dlq: base + ".dlq"}
}

// startDaemon runs a daemon on the test's topics until the test ends;
// tweaks adjust its config first.
func startDaemon(t *testing.T, brokers []string, tp topics, specs string, ms *metrics.Set, tweaks ...func(*daemon.Config)) *daemon.Daemon {
	t.Helper()
	ss, err := detector.ParseSpecs("test.yaml", []byte(specs))
	if err != nil {
		t.Fatal(err)
	}
	cfg := daemon.Config{
		Brokers: brokers, EventsTopic: tp.events, ControlTopic: tp.control, DLQTopic: tp.dlq,
		Group: tp.events + ".group", Partitions: 3, Specs: ss, HTTPAddr: "127.0.0.1:0",
		Window:  window.Options{Width: time.Second, Lateness: 500 * time.Millisecond},
		Metrics: ms,
	}
	for _, f := range tweaks {
		f(&cfg)
	}
	d, err := daemon.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("daemon.Run: %v", err)
		}
	})
	waitReady(t, d)
	return d
}

func waitReady(t *testing.T, d *daemon.Daemon) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get("http://" + d.HTTPAddr() + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatal("daemon not ready after 60s")
}

// startFleet starts the load generator cfg describes (runFleet) and returns
// the function that stops it.
func startFleet(t *testing.T, cfg loadtest.FleetConfig) (stop func()) {
	t.Helper()
	f, err := loadtest.NewFleet(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return runFleet(t, f)
}

// readCommands reads every command on the control topic with a client of
// its own until stop says enough or the timeout passes.
func readCommands(t *testing.T, brokers []string, topic string, timeout time.Duration, stop func(map[string][]schemas.Command) bool) map[string][]schemas.Command {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	got := map[string][]schemas.Command{}
	for ctx.Err() == nil && !stop(got) {
		fs := cl.PollFetches(ctx)
		fs.EachRecord(func(r *kgo.Record) {
			var c schemas.Command
			if err := json.Unmarshal(r.Value, &c); err != nil {
				t.Errorf("command does not decode: %v: %s", err, r.Value)
				return
			}
			if string(r.Key) != c.Rollout {
				t.Errorf("command key %q; want the rollout %q", r.Key, c.Rollout)
			}
			got[c.Rollout] = append(got[c.Rollout], c)
		})
	}
	return got
}

func finalOf(cs []schemas.Command) schemas.Action {
	if len(cs) == 0 {
		return ""
	}
	a := cs[len(cs)-1].Action
	if a == schemas.ActionPromote || a == schemas.ActionRollback {
		return a
	}
	return ""
}

// TestLoop drives the whole loop through Kafka: a simulated fleet (its own
// clients) produces events and follows the commands; canaryd judges; a
// separate consumer reads the commands back.
func TestLoop(t *testing.T) {
	t.Parallel()
	for _, kind := range kafkatest.Kinds() {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			brokers := kafkatest.Brokers(t, kind)
			tp := newTopics(t)
			ms := metrics.NewSet()
			d := startDaemon(t, brokers, tp, loopSpecs, ms, func(c *daemon.Config) { c.EvictAfter = 5 * time.Second })

			good := loadtest.DefaultProfile()
			bad := loadtest.DefaultProfile()
			bad.ErrorRateMult = 4
			bad.ToolLatencyMult = 1.5
			defer startFleet(t, loadtest.FleetConfig{
				Brokers: brokers, EventsTopic: tp.events, ControlTopic: tp.control, Seed: 7,
				Rollouts: []loadtest.Rollout{
					{Name: "good", Baseline: "v1", Canary: "v2", BaselineProfile: good, CanaryProfile: good, Rate: 300},
					{Name: "bad", Baseline: "v1", Canary: "v2", BaselineProfile: good, CanaryProfile: bad, Rate: 300},
				},
			})()

			cmds := readCommands(t, brokers, tp.control, 120*time.Second, func(m map[string][]schemas.Command) bool {
				return finalOf(m["good"]) != "" && finalOf(m["bad"]) != ""
			})
			for _, r := range []string{"good", "bad"} {
				var desc []string
				for _, c := range cmds[r] {
					desc = append(desc, fmt.Sprintf("%d:%s@%d", c.Seq, c.Action, c.Weight))
				}
				t.Logf("%s: %s", r, strings.Join(desc, " "))
				if len(cmds[r]) > 0 {
					t.Logf("%s final reason: %s", r, cmds[r][len(cmds[r])-1].Reason)
				}
			}
			if got := finalOf(cmds["good"]); got != schemas.ActionPromote {
				t.Errorf("good rollout ended %q; want promote", got)
			}
			if got := finalOf(cmds["bad"]); got != schemas.ActionRollback {
				t.Errorf("bad rollout ended %q; want rollback", got)
			}
			for r, cs := range cmds {
				seen := map[string]bool{}
				for i, c := range cs {
					if err := c.Validate(); err != nil {
						t.Errorf("%s command %d invalid: %v", r, i, err)
					}
					if seen[c.CommandID] {
						t.Errorf("%s: command_id %s sent twice", r, c.CommandID)
					}
					seen[c.CommandID] = true
					if i > 0 && c.Seq <= cs[i-1].Seq {
						t.Errorf("%s: seq %d after %d; want increasing", r, c.Seq, cs[i-1].Seq)
					}
					if c.Evidence == nil || c.Reason == "" {
						t.Errorf("%s: command %d without reason or evidence", r, i)
					}
				}
			}
			if want := []int{20, 50, 100}; len(cmds["good"]) == 3 {
				for i, c := range cmds["good"] {
					if c.Weight != want[i] {
						t.Errorf("good command %d weight %d; want %d", i, c.Weight, want[i])
					}
				}
			} else {
				t.Errorf("good rollout sent %d commands; want 3 (20%%, 50%%, promote)", len(cmds["good"]))
			}

			// The HTTP API and the metrics tell the same story.
			var body struct{ Rollouts []detector.Status }
			getJSON(t, "http://"+d.HTTPAddr()+"/v1/rollouts", &body)
			finals := map[string]string{}
			for _, s := range body.Rollouts {
				finals[s.Rollout] = s.Final
			}
			if finals["good"] != "promote" || finals["bad"] != "rollback" {
				t.Errorf("/v1/rollouts finals %v; want good=promote bad=rollback", finals)
			}
			m := get(t, "http://"+d.HTTPAddr()+"/metrics")
			for _, want := range []string{`canaryd_requests_total{rollout="good",version="v2"}`, `canaryd_verdicts_total{rollout="bad",action="rollback"}`, "canaryd_records_total", `canaryd_test_evalue{rollout="bad",test="error_rate",role="rollback"}`} {
				if !strings.Contains(m, want) {
					t.Errorf("/metrics lacks %s", want)
				}
			}

			// A rollout that ended more than EvictAfter (5 s of event time)
			// ago has its export history evicted; one still going keeps it.
			rows := func(r string) int {
				rs, _, err := window.ReadIPC(strings.NewReader(get(t, "http://"+d.HTTPAddr()+"/v1/rollouts/"+r+"/windows")))
				if err != nil {
					t.Fatal(err)
				}
				return len(rs)
			}
			waitFor(t, 30*time.Second, "bad's history evicted after its rollback", func() bool { return rows("bad") == 0 })
		})
	}
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %s: %s", url, resp.Status, b)
	}
	return string(b)
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(get(t, url)), v); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
}

// TestMalformedToDLQ sends a table of bad records between good ones: each
// bad record lands in the DLQ with its reason in a header and is counted;
// the good records after them are still judged.
func TestMalformedToDLQ(t *testing.T) {
	t.Parallel()
	now := time.Now()
	good := func(i int) string {
		return fmt.Sprintf(`{"rollout":"dlq","version":"v1","kind":"tool","name":"search","ts":%d,"duration_ms":12,"status":"ok"}`, now.Add(time.Duration(i)*time.Millisecond).UnixNano())
	}
	ts := now.UnixNano()
	bad := []struct {
		name, value, reason string
	}{
		{"not json", `{"rollout": "dlq", oops`, ""},
		{"not an object", `[1,2,3]`, ""},
		{"wrong type", fmt.Sprintf(`{"rollout":"dlq","version":"v1","ts":%d,"duration_ms":"12"}`, ts), "duration_ms"},
		{"missing rollout", fmt.Sprintf(`{"version":"v1","ts":%d}`, ts), "rollout"},
		{"missing version", fmt.Sprintf(`{"rollout":"dlq","ts":%d}`, ts), "version"},
		{"missing ts", `{"rollout":"dlq","version":"v1"}`, "ts"},
		{"negative duration", fmt.Sprintf(`{"rollout":"dlq","version":"v1","ts":%d,"duration_ms":-5}`, ts), "duration_ms"},
		{"NaN duration", fmt.Sprintf(`{"rollout":"dlq","version":"v1","ts":%d,"duration_ms":"NaN"}`, ts), "duration_ms"},
		{"absurd tokens", fmt.Sprintf(`{"rollout":"dlq","version":"v1","ts":%d,"input_tokens":99999999999999}`, ts), "input_tokens"},
		{"invalid utf-8", fmt.Sprintf("{\"rollout\":\"dl\xffq\",\"version\":\"v1\",\"ts\":%d}", ts), "rollout"},
		{"far future", fmt.Sprintf(`{"rollout":"dlq","version":"v1","ts":%d}`, now.Add(24*time.Hour).UnixNano()), "future"},
		{"2 MB record", fmt.Sprintf(`{"rollout":"dlq","version":"v1","ts":%d,"name":"%s"}`, ts, strings.Repeat("x", 2<<20)), ""},
	}
	for _, kind := range kafkatest.Kinds() {
		t.Run(kind, func(t *testing.T) {
			brokers := kafkatest.Brokers(t, kind)
			tp := newTopics(t)
			ms := metrics.NewSet()
			d := startDaemon(t, brokers, tp, "rollout: dlq\nbaseline: v1\ncanary: v2\nsteps: [{weight: 10}]\n", ms)

			cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ProducerBatchMaxBytes(4<<20), kgo.DefaultProduceTopic(tp.events))
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			ctx := context.Background()
			var recs []*kgo.Record
			n := 0
			for _, b := range bad {
				recs = append(recs, &kgo.Record{Key: []byte("dlq"), Value: []byte(good(n))})
				n++
				recs = append(recs, &kgo.Record{Key: []byte("dlq"), Value: []byte(b.value), Headers: []kgo.RecordHeader{{Key: "case", Value: []byte(b.name)}}})
			}
			for range 10 {
				recs = append(recs, &kgo.Record{Key: []byte("dlq"), Value: []byte(good(n))})
				n++
			}
			for _, r := range recs {
				if err := cl.ProduceSync(ctx, r).FirstErr(); err != nil {
					t.Fatalf("produce: %v", err)
				}
			}

			// Read the DLQ back with a separate consumer.
			rd, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(tp.dlq), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxPartitionBytes(8<<20))
			if err != nil {
				t.Fatal(err)
			}
			defer rd.Close()
			got := map[string]string{}
			rctx, cancel := context.WithTimeout(ctx, 60*time.Second)
			defer cancel()
			for len(got) < len(bad) && rctx.Err() == nil {
				rd.PollFetches(rctx).EachRecord(func(r *kgo.Record) {
					var c, reason string
					for _, h := range r.Headers {
						switch h.Key {
						case "case":
							c = string(h.Value)
						case "canaryd.reason":
							reason = string(h.Value)
						}
					}
					got[c] = reason
				})
			}
			for _, b := range bad {
				reason, ok := got[b.name]
				switch {
				case !ok:
					t.Errorf("%s: not in the DLQ", b.name)
				case reason == "":
					t.Errorf("%s: no canaryd.reason header", b.name)
				case !strings.Contains(reason, b.reason):
					t.Errorf("%s: reason %q; want it to mention %q", b.name, reason, b.reason)
				default:
					t.Logf("%-18s → %s", b.name, reason)
				}
			}
			// Every rejected record is counted, and the good records after the
			// bad ones were judged (the partition kept flowing).
			deadline := time.Now().Add(30 * time.Second)
			for {
				var sb strings.Builder
				ms.WritePrometheus(&sb)
				rejected := sumMetric(sb.String(), "canaryd_records_rejected_total")
				st, _ := d.Status("dlq")
				judged := uint64(0)
				for _, a := range st.Totals {
					judged += a.Requests
				}
				if rejected == float64(len(bad)) && judged == uint64(n) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("rejected %v (want %d), judged %d good events (want %d)", rejected, len(bad), judged, n)
				}
				time.Sleep(200 * time.Millisecond)
			}
		})
	}
}

func sumMetric(text, name string) float64 {
	var sum float64
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, name) {
			var v float64
			if _, err := fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &v); err == nil {
				sum += v
			}
		}
	}
	return sum
}
