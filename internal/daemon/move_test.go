package daemon_test

import (
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/inferensys/canaryd/internal/daemon"
	"github.com/inferensys/canaryd/internal/kafkatest"
	"github.com/inferensys/canaryd/schemas"
)

// totalsOf returns each judged rollout/version's counts, windows, final
// action and aggregate digest.
func totalsOf(d *daemon.Daemon) map[string]string {
	out := map[string]string{}
	for _, st := range d.Statuses() {
		if st.Windows == 0 {
			continue
		}
		for _, a := range st.Totals {
			out[st.Rollout+"/"+a.Version] = fmt.Sprintf("requests=%d errors=%d sessions=%d windows=%d final=%s digest=%s",
				a.Requests, a.Errors, a.Sessions, st.Windows, st.Final, d.Digest(st.Rollout, a.Version))
		}
	}
	return out
}

// TestPartitionMove moves partitions between two instances that do not share
// a disk, and checks that they continue exactly from the checkpoints handed
// over through the state topic. a consumes the first third of a fixed
// stream alone; b joins and takes some of a's partitions (a publishes them
// on revoke); the second third is consumed by both; a stops (publishing the
// rest) and b finishes alone. b's totals, windows, digests and the commands
// sent must equal those of one instance reading the whole stream.
func TestPartitionMove(t *testing.T) {
	t.Parallel()
	for _, kind := range kafkatest.Kinds() {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			brokers := kafkatest.Brokers(t, kind)
			tp := newTopics(t)
			kafkatest.CreateTopics(t, brokers, int32(len(crashRollouts)), tp.events)
			const n = 150_000
			t0 := time.Now().Add(-n*10*time.Millisecond - 3*time.Hour).Truncate(10 * time.Second)
			recs := crashRecords(tp.events, n, t0)
			config := func(name, group, control string) daemon.Config {
				cfg := testConfig(t, brokers, tp, crashSpecs())
				cfg.Group, cfg.ControlTopic, cfg.StateDir, cfg.StateTopic = group, control, t.TempDir(), tp.events+".state"
				cfg.CheckpointInterval = 200 * time.Millisecond
				cfg.Logger = testLogger(t, name)
				return cfg
			}
			group := tp.events + ".move"
			// consumed: every partition's commit within 200 records (a few
			// open windows) of its end.
			consumed := func(group string, ends map[int32]int64, slack int64) func() bool {
				return func() bool {
					c := committedOffsets(t, brokers, group, tp.events)
					for p, end := range ends {
						if c[p] < end-slack {
							return false
						}
					}
					return true
				}
			}

			ends := produceRecords(t, brokers, recs[:n/3])
			a := runDaemon(t, config("a", group, tp.control))
			waitFor(t, 2*time.Minute, "a consumed the first third", consumed(group, ends, 200))
			b := runDaemon(t, config("b", group, tp.control))
			waitFor(t, time.Minute, "a and b own partitions", func() bool {
				na, nb := a.metric("canaryd_partitions_assigned"), b.metric("canaryd_partitions_assigned")
				return na > 0 && nb > 0 && na+nb == float64(len(crashRollouts))
			})
			ends = produceRecords(t, brokers, recs[n/3:2*n/3])
			waitFor(t, 2*time.Minute, "a and b consumed the second third", consumed(group, ends, 200))
			if err := a.stop(t); err != nil {
				t.Fatalf("a: %v", err)
			}
			waitFor(t, time.Minute, "b owns every partition", func() bool {
				return b.metric("canaryd_partitions_assigned") == float64(len(crashRollouts))
			})
			ends = produceRecords(t, brokers, recs[2*n/3:])
			waitFor(t, 2*time.Minute, "b consumed the stream", consumed(group, ends, crashClosers))
			got := totalsOf(b.d)
			handed := b.metric(`canaryd_checkpoint_restores_total{result="handed_over"}`)
			judges := b.metric(`canaryd_judge_restores_total{result="handed_over"}`)
			if err := b.stop(t); err != nil {
				t.Fatalf("b: %v", err)
			}
			t.Logf("b continued %v partitions and %v judges from handed-over checkpoints", handed, judges)
			if handed < float64(len(crashRollouts)) || judges < float64(len(crashRollouts)) {
				t.Errorf("b took over %v partitions and %v judges; want every one of the %d (a owned them all first)", handed, judges, len(crashRollouts))
			}

			// The reference: one instance, the whole stream.
			ref := runDaemon(t, config("ref", tp.events+".ref", tp.control+".ref"))
			waitFor(t, 2*time.Minute, "the reference consumed the stream", consumed(tp.events+".ref", ends, crashClosers))
			want := totalsOf(ref.d)
			if err := ref.stop(t); err != nil {
				t.Fatalf("ref: %v", err)
			}
			if len(want) != 2*len(crashRollouts) {
				t.Fatalf("reference totals %v", want)
			}
			for _, k := range slices.Sorted(maps.Keys(want)) {
				t.Logf("%s: %s", k, want[k])
				if got[k] != want[k] {
					t.Errorf("%s after two moves:\n  got  %s\n  want %s", k, got[k], want[k])
				}
			}
			moved, dups := checkOnce(t, readAllControl(t, brokers, tp.control))
			refCmds, _ := checkOnce(t, readAllControl(t, brokers, tp.control+".ref"))
			if dups != 0 {
				t.Errorf("%d commands sent twice", dups)
			}
			for _, r := range crashRollouts {
				w, g := describeCmds(refCmds[r.name]), describeCmds(moved[r.name])
				if g != w || !slices.EqualFunc(refCmds[r.name], moved[r.name], func(a, b schemas.Command) bool { return a.CommandID == b.CommandID }) {
					t.Errorf("%s: commands %s; want %s (same ids)", r.name, g, w)
				}
			}
		})
	}
}
