package daemon_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/inferensys/canaryd/internal/kafkatest"
	"github.com/inferensys/canaryd/schemas"
)

// judgeSpecs: two judge-mode rollouts whose releases controllers start
// (canary: auto), and a drive-mode one. jgood's alpha bounds a false
// rollback of its healthy canary: 2e-5 per run, ≤ 4e-5 over both kinds of
// Kafka.
const judgeSpecs = `
rollout: jgood
mode: judge
baseline: v1
canary: auto
alpha: 0.00002
settle: 1s
steps: [{weight: 1, min_duration: 2s, min_canary_events: 300}]
metrics: {error_rate: {margin: 5.0}}
---
rollout: jbad
mode: judge
baseline: v1
canary: auto
alpha: 0.01
settle: 1s
metrics: {error_rate: {margin: 2.0}}
---
rollout: jflag
mode: judge
baseline: v1
canary: auto
---
rollout: drv
baseline: v1
canary: v2
steps: [{weight: 20, min_duration: 1h}, {weight: 100}]
`

// produceSplit writes n events of rollout, the canary's share of them
// weight percent, each failing with its version's rate, stamped now.
func produceSplit(t *testing.T, cl *kgo.Client, rng *rand.Rand, rollout, canary string, weight int, errB, errC float64) {
	t.Helper()
	now := time.Now()
	var recs []*kgo.Record
	for k := range 2000 {
		v, p := "v1", errB
		if rng.IntN(100) < weight {
			v, p = canary, errC
		}
		status := "ok"
		if rng.Float64() < p {
			status = "error"
		}
		recs = append(recs, &kgo.Record{Key: []byte(rollout), Value: fmt.Appendf(nil,
			`{"rollout":%q,"version":%q,"kind":"llm","name":"m","ts":%d,"duration_ms":%.1f,"status":%q}`,
			rollout, v, now.Add(time.Duration(k)*time.Microsecond).UnixNano(), 20+5*rng.NormFloat64(), status)})
	}
	if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

func judgeCall(t *testing.T, method, url, body string) (int, map[string]any, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(b, &out); err != nil {
			t.Fatalf("%s %s: %v: %s", method, url, err, b)
		}
	}
	return resp.StatusCode, out, string(b)
}

// TestJudgeMode: controllers own the steps of judge-mode rollouts. An
// Argo-style caller starts a release by naming its canary and declares
// each weight; canaryd judges each weight as a step (the gate opens, a new
// weight closes it until its own evidence is in), sends no set_weight, and
// publishes only the rollback of the bad canary, which Flagger's hooks
// read as rollback yes / promotion no. A drive-mode rollout refuses
// another weight. The verdict gauge follows.
func TestJudgeMode(t *testing.T) {
	t.Parallel()
	for _, kind := range kafkatest.Kinds() {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			brokers := kafkatest.Brokers(t, kind)
			tp := newTopics(t)
			kafkatest.CreateTopics(t, brokers, 3, tp.events, tp.control, tp.dlq)
			cfg := testConfig(t, brokers, tp, judgeSpecs)
			cfg.Logger = slog.New(slog.DiscardHandler)
			in := runDaemon(t, cfg)
			base := "http://" + in.d.HTTPAddr()
			cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.DefaultProduceTopic(tp.events))
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			rng := rand.New(rand.NewPCG(21, 1))
			argo := func(rollout, query string) map[string]any {
				t.Helper()
				code, out, body := judgeCall(t, "GET", base+"/v1/rollouts/"+rollout+"/judge?controller=argo&"+query, "")
				if code != http.StatusOK {
					t.Fatalf("judge %s?%s: %d %s", rollout, query, code, body)
				}
				return out
			}
			// untilVerdict produces traffic at weight until the verdict is want.
			untilVerdict := func(rollout string, weight int, errC float64, want string) map[string]any {
				t.Helper()
				deadline := time.Now().Add(90 * time.Second)
				for {
					st, _ := in.d.Status(rollout)
					produceSplit(t, cl, rng, rollout, "v2", weight, 0.02, errC)
					for s := st; s.Windows == st.Windows && time.Now().Before(deadline); s, _ = in.d.Status(rollout) {
						time.Sleep(20 * time.Millisecond) // until the next window of rollout is judged
					}
					out := argo(rollout, "")
					if out["verdict"] == want {
						return out
					}
					if out["verdict"] != "wait" || time.Now().After(deadline) {
						t.Fatalf("%s at %d%%: verdict %v (%v); want %s", rollout, weight, out["verdict"], out["reason"], want)
					}
				}
			}

			out := argo("jgood", "canary=v2&weight=20")
			if out["verdict"] != "wait" || out["mode"] != "judge" || out["weight"] != 20.0 || out["weight_source"] != "argo" || out["canary"] != "v2" || out["final"] != "" {
				t.Fatalf("first call: %v", out)
			}
			out = untilVerdict("jgood", 20, 0.02, "pass")
			t.Logf("jgood at 20%%: %v", out["reason"])
			out = argo("jgood", "canary=v2&weight=50")
			if out["verdict"] != "wait" || out["step"] != 1.0 {
				t.Fatalf("after 50%%: verdict %v step %v; want wait at step 1", out["verdict"], out["step"])
			}
			untilVerdict("jgood", 50, 0.02, "pass")

			argo("jbad", "canary=v2&weight=20")
			out = untilVerdict("jbad", 20, 0.3, "fail")
			if out["final"] != "rollback" || out["e_values"].(map[string]any)["error_rate"].(float64) < out["thresholds"].(map[string]any)["error_rate"].(float64) {
				t.Fatalf("jbad: %v", out)
			}
			flagger := func(hook, rollout, extra string) (int, string) {
				t.Helper()
				code, _, body := judgeCall(t, "POST", base+"/v1/flagger/"+hook,
					fmt.Sprintf(`{"name":%q,"namespace":"agents","phase":"Progressing","checksum":"abc"%s}`, rollout, extra))
				return code, body
			}
			for _, h := range []struct {
				hook, rollout string
				want          int
			}{
				{"rollback", "jbad", 200}, {"rollout", "jbad", 409}, {"confirm-promotion", "jbad", 409},
				{"rollback", "jgood", 409}, {"rollout", "jgood", 200}, {"confirm-promotion", "jgood", 200},
				{"confirm-traffic-increase", "jgood", 200}, {"pre-rollout", "ghost", 404},
			} {
				if code, body := flagger(h.hook, h.rollout, ""); code != h.want {
					t.Errorf("flagger %s on %s: %d %q; want %d", h.hook, h.rollout, code, body, h.want)
				}
			}
			// A new revision of jbad (another checksum) is not the ended
			// release: until its version's events start its release, its
			// checks wait rather than fail.
			code, _, body := judgeCall(t, "POST", base+"/v1/flagger/rollout", `{"name":"jbad","namespace":"agents","phase":"Progressing","checksum":"def"}`)
			if code != 200 || !strings.Contains(body, "canaryd: wait: a new revision (def)") {
				t.Errorf("rollout hook of a new revision after a rollback: %d %q; want 200 wait", code, body)
			}
			// Flagger's events declare its weights.
			if code, body := flagger("event", "jgood", `,"metadata":{"eventMessage":"Advance jgood.agents canary weight 70","eventType":"Normal"}`); code != 200 {
				t.Fatalf("event: %d %s", code, body)
			}
			if st, _ := in.d.Status("jgood"); st.Weight != 70 || st.WeightSource != "flagger" || st.Gate != "wait" {
				t.Errorf("after Flagger's event: weight %d from %s, gate %s; want 70 from flagger, wait", st.Weight, st.WeightSource, st.Gate)
			}
			if code, _ := flagger("confirm-promotion", "jgood", ""); code != 409 {
				t.Errorf("confirm-promotion at a new step: %d; want 409", code)
			}
			// Flagger's first weight arrives before the events start the
			// release (canary: auto): it is kept for that release.
			if code, body := flagger("event", "jflag", `,"metadata":{"eventMessage":"Advance jflag.agents canary weight 10","eventType":"Normal"}`); code != 200 {
				t.Fatalf("event before the release: %d %s", code, body)
			}
			deadline := time.Now().Add(60 * time.Second)
			for st, _ := in.d.Status("jflag"); st.Canary != "v2"; st, _ = in.d.Status("jflag") {
				if time.Now().After(deadline) {
					t.Fatalf("jflag's release did not start: %+v", st.Verdict)
				}
				produceSplit(t, cl, rng, "jflag", "v2", 10, 0.02, 0.02)
				time.Sleep(50 * time.Millisecond) // until the window with v2 is judged
			}
			if st, _ := in.d.Status("jflag"); st.Weight != 10 || st.WeightSource != "flagger" {
				t.Errorf("jflag after its release started: weight %d from %s; want 10 from flagger (declared before the release)", st.Weight, st.WeightSource)
			}
			// A drive-mode rollout refuses a weight that is not its own.
			if code, _, body := judgeCall(t, "GET", base+"/v1/rollouts/drv/judge?weight=50", ""); code != http.StatusConflict {
				t.Errorf("drive mode with weight 50: %d %s; want 409", code, body)
			}
			if g := in.metric(`canaryd_judge_verdict{rollout="jbad"}`); g != 3 {
				t.Errorf("canaryd_judge_verdict of jbad: %v; want 3 (fail)", g)
			}
			// The control topic: one rollback of jbad, nothing else of judge mode.
			cmds := readCommands(t, brokers, tp.control, 20*time.Second, func(cs map[string][]schemas.Command) bool { return len(cs["jbad"]) >= 1 })
			if n := len(cmds["jgood"]); n != 0 {
				t.Errorf("jgood sent %d commands; want none in judge mode", n)
			}
			if cs := cmds["jbad"]; len(cs) != 1 || cs[0].Action != schemas.ActionRollback || cs[0].Canary != "v2" {
				t.Errorf("jbad's commands: %+v; want one rollback of v2", cs)
			}
		})
	}
}
