package router

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/inferensys/canaryd/internal/kafkatest"
	"github.com/inferensys/canaryd/schemas"
)

// python returns $CANARYD_PYTHON, an interpreter with confluent-kafka and
// pytest (make test sets it from scripts/pydeps.sh), or skips the test.
func python(t *testing.T) string {
	t.Helper()
	py := os.Getenv("CANARYD_PYTHON")
	if py == "" {
		t.Skip("CANARYD_PYTHON is unset: the Python subscriber's tests need confluent-kafka and pytest " +
			"(run `make test`, or CANARYD_PYTHON=$(scripts/pydeps.sh) go test ./router/)")
	}
	return py
}

const pyPackage = "../python/canaryd_router"

// TestPythonUnit runs the Python package's own tests: the shared vectors,
// the decoding rules and the assignment's properties.
func TestPythonUnit(t *testing.T) {
	py := python(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests")
	cmd.Dir = pyPackage
	out, err := cmd.CombinedOutput()
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	t.Logf("pytest: %s", lines[len(lines)-1])
	if err != nil {
		t.Fatalf("pytest: %v\n%s", err, out)
	}
}

// pyRequest is one request of the assignment comparison.
type pyRequest struct {
	Rollout string            `json:"rollout"`
	Key     string            `json:"key"`
	Attrs   map[string]string `json:"attrs"`
}

type pyResult struct {
	States []struct {
		Rollout   string          `json:"rollout"`
		Baseline  string          `json:"baseline"`
		Canary    string          `json:"canary"`
		Action    schemas.Action  `json:"action"`
		Weight    int             `json:"weight"`
		Cohort    *schemas.Cohort `json:"cohort"`
		Step      int             `json:"step"`
		Seq       uint64          `json:"seq"`
		CommandID string          `json:"command_id"`
		DeployID  string          `json:"deployment_id"`
		Commit    string          `json:"commit"`
		DecidedAt string          `json:"decided_at"`
	} `json:"states"`
	Changes []struct {
		Rollout string `json:"rollout"`
		Seq     uint64 `json:"seq"`
		Replay  bool   `json:"replay"`
	} `json:"changes"`
	Stats  map[string]uint64 `json:"stats"`
	Assign []string          `json:"assign"`
	Acks   map[string]uint64 `json:"acks"`
}

// TestPythonSubscriber runs the Python subscriber (python -m canaryd_router)
// and the Go one on the same control topic, signed by canaryd's own
// schemas.Command.Sign: a history read in the bootstrap, then commands
// followed live, with stale, duplicate, unsigned, forged and malformed
// records among them. Their states, counters, changes and the versions they
// assign to 3,000 requests must be equal.
func TestPythonSubscriber(t *testing.T) {
	py := python(t)
	t.Parallel()
	for _, kind := range kafkatest.Kinds() {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			brokers := kafkatest.Brokers(t, kind)
			topic := kafkatest.Topic(t)
			kafkatest.CreateTopicsConfig(t, brokers, 1, map[string]string{"cleanup.policy": "compact"}, topic)
			acks := topic + ".acks"
			kafkatest.CreateTopics(t, brokers, 1, acks)
			p := newProducer(t, brokers, topic)
			cohort := &schemas.Cohort{Attribute: "user_tier", Values: []string{"internal", "beta"}}

			// The history, read by both in their bootstrap.
			a1 := cmd("support-agent", 1, schemas.ActionSetWeight, 0, 10)
			a1.Cohort = cohort
			a1.Evidence = json.RawMessage(`{"metric":"error_rate","n_canary":1840}`)
			a1.DeploymentID, a1.Commit = "support-agent-7d9c6", "3f2c1ab"
			p.send(a1, testKey)
			p.send(cmd("billing-agent", 1, schemas.ActionSetWeight, 0, 5), testKey)
			p.send(cmd("search-agent", 4, schemas.ActionSetWeight, 1, 30), testKey)
			p.send(a1, testKey)                                                        // duplicate
			p.send(cmd("billing-agent", 1, schemas.ActionRollback, 0, 0), testKey)     // stale
			p.send(cmd("billing-agent", 2, schemas.ActionSetWeight, 1, 20), nil)       // unsigned
			p.send(cmd("search-agent", 5, schemas.ActionPromote, 2, 100), []byte("x")) // wrong key
			const history = 7

			var rec recorder
			s := start(t, append(rec.opts(), Brokers(brokers...), Topic(topic), SigningKey(testKey), Acks(acks, "go"))...)

			reqs := make([]pyRequest, 0, 3000)
			tiers := []string{"internal", "beta", "external", ""}
			for i := range 3000 {
				r := pyRequest{Rollout: []string{"support-agent", "billing-agent", "search-agent", "unknown"}[i%4],
					Key: fmt.Sprintf("sess-%d-ü", i*7919)}
				if tier := tiers[(i/4)%4]; tier != "" {
					r.Attrs = map[string]string{"user_tier": tier}
				}
				reqs = append(reqs, r)
			}
			reqFile := filepath.Join(t.TempDir(), "requests.json")
			b, err := json.Marshal(reqs)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(reqFile, b, 0o600); err != nil {
				t.Fatal(err)
			}

			const total = history + 9
			ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
			defer cancel()
			pc := exec.CommandContext(ctx, py, "-m", "canaryd_router", "--brokers", strings.Join(brokers, ","),
				"--topic", topic, "--signing-key-env", "ROUTER_TEST_KEY", "--records", fmt.Sprint(total),
				"--assign", reqFile, "--timeout", "120", "--acks-topic", acks, "--router-id", "py")
			pc.Dir = pyPackage
			pc.Env = append(os.Environ(), "ROUTER_TEST_KEY="+string(testKey))
			var stderr strings.Builder
			pc.Stderr = &stderr
			stdout, err := pc.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := pc.Start(); err != nil {
				t.Fatal(err)
			}
			out := bufio.NewReader(stdout)
			line, err := out.ReadString('\n')
			if err != nil || line != "ready\n" {
				_ = pc.Wait()
				t.Fatalf("python subscriber: first line %q, %v; want ready\n%s", line, err, stderr.String())
			}

			// Followed live by both.
			p.send(cmd("support-agent", 2, schemas.ActionSetWeight, 1, 50), testKey)
			p.send(cmd("support-agent", 1, schemas.ActionRollback, 1, 0), testKey) // seq back
			p.send(cmd("billing-agent", 3, schemas.ActionHold, 1, 5), testKey)
			forged := cmd("search-agent", 6, schemas.ActionRollback, 2, 0)
			_ = forged.Sign(testKey)
			forged.Reason = "changed after signing"
			fb, _ := json.Marshal(forged)
			p.raw("search-agent", fb)
			p.raw("search-agent", []byte(`{"seq":`))
			p.raw("search-agent", nil)
			p.send(cmd("search-agent", 7, schemas.ActionSetWeight, 2, 60), testKey)
			wrongKey := cmd("support-agent", 9, schemas.ActionPromote, 3, 100)
			_ = wrongKey.Sign(testKey)
			wb, _ := json.Marshal(wrongKey)
			p.raw("billing-agent", wb) // record key is another rollout
			p.send(cmd("support-agent", 3, schemas.ActionSetWeight, 2, 75), testKey)
			rec.wait(t, total)

			body, err := io.ReadAll(out)
			if werr := pc.Wait(); werr != nil || err != nil {
				t.Fatalf("python subscriber: %v, %v\n%s", werr, err, stderr.String())
			}
			var got pyResult
			if err := json.Unmarshal(body, &got); err != nil {
				t.Fatalf("python output %q: %v", body, err)
			}

			// States.
			states := s.States()
			if len(got.States) != len(states) || len(states) != 3 {
				t.Fatalf("python: %d states, go: %d; want 3 each", len(got.States), len(states))
			}
			for i, g := range states {
				pst := got.States[i]
				if pst.Rollout != g.Rollout || pst.Baseline != g.Baseline || pst.Canary != g.Canary || pst.Action != g.Action ||
					pst.Weight != g.Weight || pst.Step != g.Step || pst.Seq != g.Seq || pst.CommandID != g.CommandID ||
					pst.DeployID != g.DeploymentID || pst.Commit != g.Commit ||
					pst.DecidedAt != g.DecidedAt.Format(time.RFC3339Nano) || !equalCohort(pst.Cohort, g.Cohort) {
					t.Errorf("state %d: python %+v; go %+v", i, pst, g)
				}
			}
			checkState(t, s, "support-agent", schemas.ActionSetWeight, 75, 3)
			checkState(t, s, "billing-agent", schemas.ActionHold, 5, 3)
			checkState(t, s, "search-agent", schemas.ActionSetWeight, 60, 7)

			// Counters.
			if gs := statsMap(s.Stats()); !mapsEq(got.Stats, gs) {
				t.Errorf("stats: python %v; go %v", got.Stats, gs)
			}
			if got.Stats["records"] != total || got.Stats["applied"] != 7 {
				t.Errorf("python stats %v; want %d records, 7 applied", got.Stats, total)
			}

			// Changes, with the bootstrap's marked as replays.
			changes, _ := rec.get()
			if len(got.Changes) != len(changes) {
				t.Fatalf("changes: python %d, go %d", len(got.Changes), len(changes))
			}
			for i, c := range changes {
				pc := got.Changes[i]
				if pc.Rollout != c.State.Rollout || pc.Seq != c.State.Seq || pc.Replay != c.Replay {
					t.Errorf("change %d: python %+v; go %s seq %d replay %v", i, pc, c.State.Rollout, c.State.Seq, c.Replay)
				}
			}
			if !changes[0].Replay || changes[len(changes)-1].Replay {
				t.Errorf("the first change must be a replay, the last not")
			}

			// Assignments.
			if len(got.Assign) != len(reqs) {
				t.Fatalf("python assigned %d requests; want %d", len(got.Assign), len(reqs))
			}
			counts := map[string]int{}
			for i, r := range reqs {
				want := s.Assign(r.Rollout, r.Key, r.Attrs)
				if got.Assign[i] != want {
					t.Fatalf("request %+v: python %q; go %q", r, got.Assign[i], want)
				}
				counts[r.Rollout+"→"+want]++
			}
			t.Logf("assignments equal for %d requests: %v", len(reqs), counts)

			// Acknowledgements: the same commands, in the same order.
			if got.Acks["sent"] != 7 || got.Acks["failed"] != 0 {
				t.Errorf("python ack stats %v; want 7 sent", got.Acks)
			}
			all := readAcks(t, brokers, acks, func(as []schemas.Ack) bool { return len(as) >= 14 })
			byRouter := map[string][]string{}
			for _, a := range all {
				byRouter[a.Router] = append(byRouter[a.Router], fmt.Sprintf("%s %d %s %d %s", a.Rollout, a.Seq, a.Action, a.Weight, a.CommandID))
				if time.Since(a.AppliedAt) > 5*time.Minute || time.Until(a.AppliedAt) > time.Minute {
					t.Errorf("ack %+v: applied_at is not about now", a)
				}
			}
			if len(byRouter["go"]) != 7 || strings.Join(byRouter["py"], "\n") != strings.Join(byRouter["go"], "\n") {
				t.Errorf("acks: python\n%s\ngo\n%s", strings.Join(byRouter["py"], "\n"), strings.Join(byRouter["go"], "\n"))
			}
		})
	}
}

func equalCohort(a, b *schemas.Cohort) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Attribute == b.Attribute && slices.Equal(a.Values, b.Values)
}

func mapsEq(a, b map[string]uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}
