package daemon_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
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
)

// literalRouter applies control commands exactly as
// schemas/control-command.v1.json tells routers to: verify the signature on
// the record's bytes as received (its final ,"signature":"…" member
// removed), apply a command only if its seq is above the last one applied
// for its rollout, and drop a command_id already applied.
type literalRouter struct {
	key     []byte
	lastSeq map[string]uint64
	seen    map[string]bool
	applied []schemas.Command
	dropped []string // why each dropped command was dropped
}

func (r *literalRouter) receive(value []byte) {
	var c schemas.Command
	if err := json.Unmarshal(value, &c); err != nil {
		r.dropped = append(r.dropped, "not JSON: "+err.Error())
		return
	}
	suffix := []byte(`,"signature":"` + c.Signature + `"}`)
	if c.Signature == "" || !bytes.HasSuffix(value, suffix) {
		r.dropped = append(r.dropped, c.CommandID+": unsigned")
		return
	}
	signed := append(bytes.Clone(value[:len(value)-len(suffix)]), '}')
	m := hmac.New(sha256.New, r.key)
	m.Write(signed)
	if !hmac.Equal([]byte(hex.EncodeToString(m.Sum(nil))), []byte(c.Signature)) {
		r.dropped = append(r.dropped, c.CommandID+": bad signature")
		return
	}
	switch {
	case c.Seq <= r.lastSeq[c.Rollout]:
		r.dropped = append(r.dropped, fmt.Sprintf("%s: stale seq %d ≤ %d (%s %s→%s)", c.CommandID, c.Seq, r.lastSeq[c.Rollout], c.Action, c.Baseline, c.Canary))
	case r.seen[c.CommandID]:
		r.dropped = append(r.dropped, c.CommandID+": seen")
	default:
		r.lastSeq[c.Rollout], r.seen[c.CommandID] = c.Seq, true
		r.applied = append(r.applied, c)
	}
}

// TestSeqAcrossReleases: three consecutive releases of one rollout (v1→v2,
// v2→v3, v3→v4, each rolled back: its canary fails 40% of requests), one
// canaryd run per release on the same topics and group. A router that
// applies the schema literally must apply every command of every release
// in order. Before seq bases, each release's seq started again at 1, and
// the router dropped every command of the second and third releases as
// stale.
func TestSeqAcrossReleases(t *testing.T) {
	t.Parallel()
	key := []byte("release key")
	releases := [][2]string{{"v1", "v2"}, {"v2", "v3"}, {"v3", "v4"}}
	for _, kind := range kafkatest.Kinds() {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			brokers := kafkatest.Brokers(t, kind)
			tp := newTopics(t)
			kafkatest.CreateTopics(t, brokers, 3, tp.events, tp.control, tp.dlq)
			cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.DefaultProduceTopic(tp.events))
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			for _, rel := range releases {
				cfg := testConfig(t, brokers, tp, fmt.Sprintf("rollout: rel\nbaseline: %s\ncanary: %s\nsteps: [{weight: 50, min_duration: 1h}, {weight: 100}]\n", rel[0], rel[1]))
				cfg.SignKey, cfg.Logger = key, slog.New(slog.DiscardHandler)
				in := runDaemon(t, cfg)
				d := in.d
				// Events until the release is rolled back and its rollback is
				// on the control topic.
				deadline := time.Now().Add(2 * time.Minute)
				for i := 0; ; i++ {
					if st, _ := d.Status("rel"); st.Final == string(schemas.ActionRollback) && len(readCommands(t, brokers, tp.control, 5*time.Second, func(cs map[string][]schemas.Command) bool {
						return finalOf(cs["rel"]) == schemas.ActionRollback && cs["rel"][len(cs["rel"])-1].Canary == rel[1]
					})["rel"]) > 0 {
						break
					}
					if time.Now().After(deadline) {
						t.Fatalf("release %s→%s not rolled back after 2 minutes", rel[0], rel[1])
					}
					now := time.Now()
					var recs []*kgo.Record
					for k := range 400 {
						v, status := rel[0], "ok"
						if k%2 == 0 {
							v = rel[1]
							if k%5 < 2 {
								status = "error"
							}
						}
						recs = append(recs, &kgo.Record{Key: []byte("rel"), Value: fmt.Appendf(nil,
							`{"rollout":"rel","version":%q,"kind":"llm","name":"m","ts":%d,"duration_ms":20,"status":%q}`, v, now.Add(time.Duration(k)*time.Microsecond).UnixNano(), status)})
					}
					if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
						t.Fatal(err)
					}
					time.Sleep(200 * time.Millisecond) // pacing the producer, not deciding the outcome
				}
				if err := in.stop(t); err != nil {
					t.Fatalf("release %s→%s: Run: %v", rel[0], rel[1], err)
				}
			}

			// The router reads the whole control topic, in order.
			rd, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(tp.control), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
			if err != nil {
				t.Fatal(err)
			}
			defer rd.Close()
			r := &literalRouter{key: key, lastSeq: map[string]uint64{}, seen: map[string]bool{}}
			n := 0
			rctx, rcancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer rcancel()
			for n < 2*len(releases)+len(r.dropped) && rctx.Err() == nil {
				rd.PollFetches(rctx).EachRecord(func(rec *kgo.Record) {
					n++
					r.receive(rec.Value)
				})
				if len(r.applied) == 2*len(releases) {
					break
				}
			}
			if len(r.dropped) > 0 {
				t.Errorf("the router dropped %d commands: %v", len(r.dropped), r.dropped)
			}
			var got []string
			for _, c := range r.applied {
				got = append(got, fmt.Sprintf("%d %s %s→%s", c.Seq, c.Action, c.Baseline, c.Canary))
			}
			want := []string{"1 set_weight v1→v2", "2 rollback v1→v2", "3 set_weight v2→v3", "4 rollback v2→v3", "5 set_weight v3→v4", "6 rollback v3→v4"}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("commands applied:\n  got  %q\n  want %q", got, want)
			}
		})
	}
}

// TestThreeReleases is issue 12's whole story on one rollout through Kafka:
// a release started by a spec change (v1→v2, its first step gated), paused,
// resumed, approved, aborted and retried; the next started by canary: auto
// when v3 shows up in the events; the third started over HTTP (v4, with
// its deployment id and commit) and aborted. A router that applies the
// schema literally applies every command once, in order, signatures
// verified.
func TestThreeReleases(t *testing.T) {
	t.Parallel()
	for _, kind := range kafkatest.Kinds() {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			brokers := kafkatest.Brokers(t, kind)
			tp := newTopics(t)
			kafkatest.CreateTopics(t, brokers, 3, tp.events, tp.control, tp.dlq)
			key := []byte("three releases")
			tokens := filepath.Join(t.TempDir(), "tokens")
			const token = "ops-token-0123456789abcdef"
			if err := os.WriteFile(tokens, []byte("ops "+token+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			steps := "steps: [{weight: 20, min_duration: 1h, approval: required}, {weight: 100}]\n"
			dir, swap := configMapDir(t, map[string]string{"rel.yaml": "rollout: three\nbaseline: v0\ncanary: v9\n" + steps})
			cfg := testConfig(t, brokers, tp, "rollout: three\nbaseline: v0\ncanary: v9\n"+steps)
			cfg.SpecsPath, cfg.SpecsPoll, cfg.SignKey, cfg.HTTPTokenFile, cfg.Logger = dir, 50*time.Millisecond, key, tokens, slog.New(slog.DiscardHandler)
			d := runDaemon(t, cfg).d
			cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.DefaultProduceTopic(tp.events))
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			canary := "v2"
			until := func(n int) []schemas.Command {
				t.Helper()
				deadline := time.Now().Add(time.Minute)
				for {
					produceRollout(t, cl, "three", canary, 0)
					cs := readCommands(t, brokers, tp.control, time.Second, func(cs map[string][]schemas.Command) bool { return len(cs["three"]) >= n })
					if len(cs["three"]) >= n {
						return cs["three"]
					}
					if time.Now().After(deadline) {
						t.Fatalf("fewer than %d commands after a minute: %+v", n, cs["three"])
					}
				}
			}
			act := func(action, body string) {
				t.Helper()
				if code, out := post(t, d.HTTPAddr(), token, "/v1/rollouts/three/"+action, body); code != http.StatusOK {
					t.Fatalf("POST %s: %d %v", action, code, out)
				}
			}

			// Release 1, by a spec change: the spec now says v1 → v2.
			swap(map[string]string{"rel.yaml": "rollout: three\nbaseline: v1\ncanary: v2\n" + steps})
			waitFor(t, 30*time.Second, "the spec's release", func() bool { st, _ := d.Status("three"); return st.Canary == "v2" })
			until(1)
			act("pause", `{"reason":"freeze"}`)
			act("resume", "")
			act("approve", `{"reason":"first step looks fine"}`)
			act("abort", `{"reason":"pager"}`)
			until(2)
			act("retry", "")
			until(3)

			// Release 2, by canary: auto: v3 shows up in the events.
			swap(map[string]string{"rel.yaml": "rollout: three\nbaseline: v1\ncanary: auto\n" + steps})
			waitFor(t, 30*time.Second, "the template in force", func() bool {
				st, _ := d.Status("three")
				return st.SpecError == "" && sumMetric(get(t, "http://"+d.HTTPAddr()+"/metrics"), `canaryd_spec_reloads_total{result="ok"}`) >= 2
			})
			canary = "v3"
			until(4)

			// Release 3, by the HTTP call, then aborted.
			act("start", `{"canary":"v4","deployment_id":"deploy-4","commit":"c0ffee"}`)
			canary = "v4"
			until(5)
			act("abort", "")
			cmds := until(6)

			// The router reads the records' bytes as received.
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
				got = append(got, fmt.Sprintf("%d %s %s %s", c.Seq, c.Action, c.Canary, c.DeploymentID))
			}
			want := []string{"1 set_weight v2 ", "2 rollback v2 ", "3 set_weight v2 ", "4 set_weight v3 ", "5 set_weight v4 deploy-4", "6 rollback v4 deploy-4"}
			if fmt.Sprint(got) != fmt.Sprint(want) || len(r.dropped) != 0 {
				t.Errorf("router applied %q, dropped %v; want %q and none dropped", got, r.dropped, want)
			}
			st, _ := d.Status("three")
			// v9, the spec's release before the change (no events), v2, v3.
			if p := st.Previous; len(p) != 3 || p[1].Canary != "v2" || !strings.Contains(p[1].Reason, "v3 in the events") ||
				p[2].Canary != "v3" || !strings.Contains(p[2].Reason, "start of v4 by ops") {
				t.Errorf("previous releases: %+v; want v9, v2 (superseded by v3 in the events), v3 (superseded by the start of v4)", p)
			}
			// One info series: the current release's; the earlier ones' are gone.
			var info []string
			for line := range strings.Lines(get(t, "http://"+d.HTTPAddr()+"/metrics")) {
				if strings.HasPrefix(line, `canaryd_rollout_info{rollout="three",`) {
					info = append(info, strings.TrimSpace(line))
				}
			}
			if want := `canaryd_rollout_info{rollout="three",baseline="v1",canary="v4",deployment_id="deploy-4",commit="c0ffee",phase="rollback",mode="drive"} 1`; len(info) != 1 || info[0] != want {
				t.Errorf("info series %q; want only %s", info, want)
			}
		})
	}
}
