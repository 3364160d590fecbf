package daemon

import (
	"log/slog"
	"testing"

	"github.com/inferensys/canaryd/schemas"
)

// TestOutboxSideKeepsClosedAt: a rollout's unsent commands saved in a side
// entry (a checkpoint, a hand-over, stage 2's state) come back in order
// with the wall time their windows closed, so that the instance that sends
// them still measures canaryd_decision_latency_seconds; a side entry of an
// earlier version, without those times, restores the commands unmeasured.
func TestOutboxSideKeepsClosedAt(t *testing.T) {
	from := newOutbox()
	for i, at := range []int64{111, 222} {
		from.push(pending{cmd: &schemas.Command{Rollout: "r", Seq: uint64(i + 1), CommandID: string(rune('a' + i))}, closedAt: at})
	}
	from.push(pending{cmd: &schemas.Command{Rollout: "other", Seq: 9}, closedAt: 999})
	side := map[string][]byte{}
	from.side(side, "r")

	d := &Daemon{cfg: Config{Logger: slog.New(slog.DiscardHandler)}, gen: map[string]uint64{}, outbox: newOutbox()}
	d.restoreOutbox("r", side)
	if len(d.outbox.q) != 2 {
		t.Fatalf("%d commands restored; want 2", len(d.outbox.q))
	}
	for i, want := range []int64{111, 222} {
		if p := d.outbox.q[i]; p.cmd.Seq != uint64(i+1) || p.closedAt != want {
			t.Errorf("command %d: seq %d closed at %d; want seq %d closed at %d", i, p.cmd.Seq, p.closedAt, i+1, want)
		}
	}

	delete(side, outboxClosedKeyPrefix+"r") // as an earlier version wrote it
	d.outbox = newOutbox()
	d.restoreOutbox("r", side)
	if len(d.outbox.q) != 2 || d.outbox.q[0].closedAt != 0 || d.outbox.q[1].closedAt != 0 {
		t.Fatalf("restored from an entry without times: %+v; want 2 commands, unmeasured", d.outbox.q)
	}
}
