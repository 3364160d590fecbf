package daemon_test

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/inferensys/canaryd/internal/kafkatest"
	"github.com/inferensys/canaryd/schemas"
)

// produceVersions writes a batch of rollout "auto" stamped now: 150
// healthy baseline (v1) requests and 150 of canary, failing with
// probability errP.
func produceVersions(t *testing.T, cl *kgo.Client, canary string, errP float64) {
	produceRollout(t, cl, "auto", canary, errP)
}

// produceRollout is produceVersions for any rollout.
func produceRollout(t *testing.T, cl *kgo.Client, rollout, canary string, errP float64) {
	t.Helper()
	now := time.Now()
	var recs []*kgo.Record
	for k := range 300 {
		v, status := "v1", "ok"
		if k%2 == 1 {
			v = canary
			if float64(k%100)/100 < errP {
				status = "error"
			}
		}
		recs = append(recs, &kgo.Record{Key: []byte(rollout), Value: fmt.Appendf(nil,
			`{"rollout":%q,"version":%q,"kind":"llm","name":"m","ts":%d,"duration_ms":20,"status":%q}`, rollout, v, now.Add(time.Duration(k)*time.Microsecond).UnixNano(), status)})
	}
	if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

// TestCanaryAuto: a rollout whose spec says canary: auto waits (no
// command, a status saying so) while only the baseline runs; the first new
// version starts a release of it, which a failing canary rolls back; a
// second new version starts the next release, whose seq continues; the
// rolled-back version showing up again starts nothing. A literal-schema
// router applies every command.
func TestCanaryAuto(t *testing.T) {
	t.Parallel()
	for _, kind := range kafkatest.Kinds() {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			brokers := kafkatest.Brokers(t, kind)
			tp := newTopics(t)
			kafkatest.CreateTopics(t, brokers, 3, tp.events, tp.control, tp.dlq)
			key := []byte("auto key")
			cfg := testConfig(t, brokers, tp, "rollout: auto\nbaseline: v1\ncanary: auto\nsteps: [{weight: 20, min_duration: 1h}, {weight: 100}]\n")
			cfg.SignKey, cfg.Logger = key, slog.New(slog.DiscardHandler)
			d := runDaemon(t, cfg).d
			cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.DefaultProduceTopic(tp.events))
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			commands := func() []schemas.Command {
				return readCommands(t, brokers, tp.control, time.Second, func(map[string][]schemas.Command) bool { return false })["auto"]
			}
			// until produces batches until the control topic holds n commands.
			until := func(n int, canary string, errP float64) []schemas.Command {
				t.Helper()
				deadline := time.Now().Add(time.Minute)
				for {
					produceVersions(t, cl, canary, errP)
					if cs := commands(); len(cs) >= n {
						return cs
					}
					if time.Now().After(deadline) {
						t.Fatalf("fewer than %d commands after a minute: %+v", n, commands())
					}
				}
			}

			// Only the baseline: nothing starts.
			for range 5 {
				produceVersions(t, cl, "v1", 0)
			}
			waitFor(t, 30*time.Second, "the baseline judged as unjudged windows", func() bool {
				return sumMetric(get(t, "http://"+d.HTTPAddr()+"/metrics"), "canaryd_unjudged_windows_total") > 0
			})
			if st, ok := d.Status("auto"); !ok || st.Canary != "auto" || len(commands()) != 0 {
				t.Fatalf("before a new version: status %+v (found %v), %d commands; want canary auto, none", st, ok, len(commands()))
			}

			cs := until(2, "v2", 0.4) // v2 starts, fails, is rolled back
			if cs[0].Canary != "v2" || cs[1].Action != schemas.ActionRollback {
				t.Fatalf("v2's release: %+v", cs)
			}
			cs = until(3, "v3", 0) // v3 starts the next release
			if c := cs[2]; c.Canary != "v3" || c.Seq != 3 || c.Action != schemas.ActionSetWeight {
				t.Fatalf("v3's start: %+v; want set_weight seq 3 for v3", c)
			}
			// The rolled-back version again, for several windows.
			st0, _ := d.Status("auto")
			waitFor(t, time.Minute, "windows with v2 again judged", func() bool {
				produceVersions(t, cl, "v2", 0)
				st, _ := d.Status("auto")
				return st.Windows >= st0.Windows+3
			})
			st, _ := d.Status("auto")
			if st.Canary != "v3" || len(st.Previous) != 1 || st.Previous[0].Canary != "v2" || st.Previous[0].Final != "rollback" {
				t.Errorf("status: canary %s, previous %+v; want v3 running after v2 rolled back", st.Canary, st.Previous)
			}
			r := &literalRouter{key: key, lastSeq: map[string]uint64{}, seen: map[string]bool{}}
			rd, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(tp.control), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
			if err != nil {
				t.Fatal(err)
			}
			defer rd.Close()
			all := commands()
			rctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			for len(r.applied)+len(r.dropped) < len(all) && rctx.Err() == nil {
				rd.PollFetches(rctx).EachRecord(func(rec *kgo.Record) { r.receive(rec.Value) })
			}
			if len(all) != 3 || len(r.applied) != 3 || len(r.dropped) != 0 {
				t.Errorf("commands %d; router applied %d, dropped %v; want 3, 3 and none", len(all), len(r.applied), r.dropped)
			}
		})
	}
}
