package daemon_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/inferensys/canaryd/internal/kafkatest"
	"github.com/inferensys/canaryd/schemas"
	"github.com/inferensys/canaryd/sink"
)

// post sends an operator action and returns the status code and the reply.
func post(t *testing.T, addr, token, path, body string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest("POST", "http://"+addr+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

// TestOperatorActions drives one rollout through the HTTP actions against
// a real daemon on Kafka — pause, resume, abort, retry, and a start of
// another canary with its deployment id and commit — checks the refusals
// (no token, unknown rollout and action, a start of the baseline, a resume
// when not paused), and has a router that applies the schema literally
// read every command: each is applied once, in order, signed.
func TestOperatorActions(t *testing.T) {
	t.Parallel()
	for _, kind := range kafkatest.Kinds() {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			brokers := kafkatest.Brokers(t, kind)
			tp := newTopics(t)
			kafkatest.CreateTopics(t, brokers, 3, tp.events, tp.control, tp.dlq)
			const token = "ops-token-0123456789abcdef"
			tokens := filepath.Join(t.TempDir(), "tokens")
			if err := os.WriteFile(tokens, []byte("alice "+token+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			key := []byte("actions key")
			cfg := testConfig(t, brokers, tp, relSpec("v1", "v2", ""))
			cfg.SignKey, cfg.HTTPTokenFile, cfg.Logger = key, tokens, slog.New(slog.DiscardHandler)
			d := runDaemon(t, cfg).d
			addr := d.HTTPAddr()
			cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.DefaultProduceTopic(tp.events))
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			// until produces traffic until the control topic holds n commands.
			until := func(n int) []schemas.Command {
				t.Helper()
				deadline := time.Now().Add(time.Minute)
				for {
					produceRel(t, cl, "v1", "v2", "v3")
					cs := readCommands(t, brokers, tp.control, 2*time.Second, func(cs map[string][]schemas.Command) bool { return len(cs["rel"]) >= n })
					if len(cs["rel"]) >= n {
						return cs["rel"]
					}
					if time.Now().After(deadline) {
						t.Fatalf("%d commands after a minute; want %d: %+v", len(cs["rel"]), n, cs["rel"])
					}
				}
			}
			act := func(action, body string, want int) map[string]any {
				t.Helper()
				code, out := post(t, addr, token, "/v1/rollouts/rel/"+action, body)
				if code != want {
					t.Fatalf("POST %s: %d %v; want %d", action, code, out, want)
				}
				return out
			}
			until(1) // the start

			if code, _ := post(t, addr, "", "/v1/rollouts/rel/pause", ""); code != http.StatusUnauthorized {
				t.Errorf("pause without a token: %d; want 401", code)
			}
			if code, _ := post(t, addr, "wrong-token-0123456789", "/v1/rollouts/rel/pause", ""); code != http.StatusUnauthorized {
				t.Errorf("pause with a wrong token: %d; want 401", code)
			}
			act("resume", "", http.StatusConflict) // not paused
			out := act("pause", `{"reason":"checking the dashboards"}`, http.StatusOK)
			if st, _ := out["status"].(map[string]any); st["paused"] != true {
				t.Errorf("pause reply: %v; want a paused status", out)
			}
			act("pause", "", http.StatusConflict)
			act("resume", "", http.StatusOK)
			// The history shows who did what (the status page marks it).
			var h sink.History
			getJSON(t, "http://"+addr+"/v1/rollouts/rel/history", &h)
			if n := len(h.Events); n != 2 || h.Events[0].Action != "pause" || h.Events[0].By != "alice" || h.Events[0].Reason != "checking the dashboards" || h.Events[1].Action != "resume" {
				t.Errorf("history events %+v; want alice's pause (with its reason), then resume", h.Events)
			}
			act("abort", `{"reason":"pager went off"}`, http.StatusOK)
			cmds := until(2)
			if c := cmds[1]; c.Action != schemas.ActionRollback || !strings.Contains(c.Reason, "aborted by alice: pager went off") {
				t.Errorf("abort's command: %s %q; want a rollback naming alice and why", c.Action, c.Reason)
			}
			act("abort", "", http.StatusConflict)
			act("retry", `{"reason":"fixed the pager"}`, http.StatusOK)
			cmds = until(3)
			if c := cmds[2]; c.Action != schemas.ActionSetWeight || c.CommandID == cmds[0].CommandID {
				t.Errorf("retry's start: %s %s; want a set_weight with a new id", c.Action, c.CommandID)
			}
			act("start", `{"canary":"v1"}`, http.StatusBadRequest)
			act("nope", "", http.StatusBadRequest)
			if code, _ := post(t, addr, token, "/v1/rollouts/ghost/pause", ""); code != http.StatusNotFound {
				t.Errorf("pause of an unknown rollout: %d; want 404", code)
			}
			act("start", `{"canary":"v3","deployment_id":"d-9","commit":"abc123"}`, http.StatusOK)
			cmds = until(4)
			if c := cmds[3]; c.Canary != "v3" || c.DeploymentID != "d-9" || c.Commit != "abc123" {
				t.Errorf("the started release's command: canary %s deployment %s commit %s; want v3 d-9 abc123", c.Canary, c.DeploymentID, c.Commit)
			}
			st, _ := d.Status("rel")
			if len(st.Previous) != 1 || st.Previous[0].Canary != "v2" || len(st.Audit) != 1 || st.Audit[0].Op != "start" || st.Audit[0].By != "alice" {
				t.Errorf("status after the start: previous %+v audit %+v", st.Previous, st.Audit)
			}

			// The router's view of everything sent.
			rd, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(tp.control), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
			if err != nil {
				t.Fatal(err)
			}
			defer rd.Close()
			r := &literalRouter{key: key, lastSeq: map[string]uint64{}, seen: map[string]bool{}}
			rctx, rcancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer rcancel()
			for len(r.applied)+len(r.dropped) < len(cmds) && rctx.Err() == nil {
				rd.PollFetches(rctx).EachRecord(func(rec *kgo.Record) { r.receive(rec.Value) })
			}
			var got []string
			for _, c := range r.applied {
				got = append(got, fmt.Sprintf("%d %s %s", c.Seq, c.Action, c.Canary))
			}
			if want := []string{"1 set_weight v2", "2 rollback v2", "3 set_weight v2", "4 set_weight v3"}; fmt.Sprint(got) != fmt.Sprint(want) || len(r.dropped) > 0 {
				t.Errorf("router applied %q, dropped %v; want %q and none dropped", got, r.dropped, want)
			}
		})
	}
}
