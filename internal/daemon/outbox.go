package daemon

import (
	"encoding/json"
	"sync"

	"github.com/inferensys/canaryd/detector"
	"github.com/inferensys/canaryd/schemas"
)

// outboxKeyPrefix prefixes a rollout's unsent commands among the
// checkpoint's side entries, beside its judge state (judgeKeyPrefix): a
// judge restored from a checkpoint has decided them, so they are sent
// after a restart even though their windows are not judged again.
const outboxKeyPrefix = "outbox/"

// outboxClosedKeyPrefix prefixes, beside a rollout's unsent commands, the
// wall times their deciding windows closed (pending.closedAt), in the same
// order, so that a command sent after a restart or a hand-over is still
// measured by canaryd_decision_latency_seconds. Absent in checkpoints of
// earlier versions: those commands are not measured.
const outboxClosedKeyPrefix = "outbox-closed/"

// pending is a decided command waiting for the sender, or (cmd nil) a
// verdict without a command that must be reported after the rollout's
// commands ahead of it (Config.OnVerdict keeps each rollout's order).
type pending struct {
	cmd *schemas.Command
	v   detector.Verdict
	gen uint64 // the judge's generation when it decided (Daemon.gen)
	// closedAt is the wall time (unix ns) the deciding window closed in
	// its partition (window.Closed.Wall; 0 unknown): the start of
	// canaryd_decision_latency_seconds.
	closedAt int64
}

// outbox is the queue between the judges (onClosed, on partition
// goroutines) and the sender goroutine (Daemon.sendLoop). Its mutex guards
// only the slice: nothing waits on Kafka while holding it. Commands leave in
// the order they were pushed, so each rollout's commands keep their order.
type outbox struct {
	mu   sync.Mutex
	q    []pending
	wake chan struct{} // a token when something was pushed
}

func newOutbox() *outbox { return &outbox{wake: make(chan struct{}, 1)} }

func (o *outbox) push(p pending) {
	o.mu.Lock()
	o.q = append(o.q, p)
	o.mu.Unlock()
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// peek returns the oldest command without removing it: it leaves only once
// delivered (pop), so a checkpoint taken meanwhile still holds it.
func (o *outbox) peek() (pending, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.q) == 0 {
		return pending{}, false
	}
	return o.q[0], true
}

// note queues a verdict without a command behind the rollout's commands
// waiting, replacing a note of the rollout that is already last in the
// rollout's line (only the newest matters), and reports whether it did:
// with no command of the rollout waiting, the caller reports the verdict
// itself.
func (o *outbox) note(v detector.Verdict, gen uint64) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	last := -1
	for i, p := range o.q {
		if p.v.Rollout == v.Rollout {
			last = i
		}
	}
	switch {
	case last < 0:
		return false
	case o.q[last].cmd == nil:
		o.q[last].v = v
		return true
	}
	o.q = append(o.q, pending{v: v, gen: gen})
	return true
}

func (o *outbox) pop() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.q[0] = pending{}
	o.q = o.q[1:]
}

// len returns how many commands wait (notes aside).
func (o *outbox) len() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := 0
	for _, p := range o.q {
		if p.cmd != nil {
			n++
		}
	}
	return n
}

// empty reports whether nothing at all waits.
func (o *outbox) empty() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.q) == 0
}

// commands returns the rollout's commands waiting, oldest first, and the
// wall times their windows closed.
func (o *outbox) commands(rollout string) ([]*schemas.Command, []int64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []*schemas.Command
	var closed []int64
	for _, p := range o.q {
		if p.cmd != nil && p.cmd.Rollout == rollout {
			out = append(out, p.cmd)
			closed = append(closed, p.closedAt)
		}
	}
	return out, closed
}

// side sets the side entries of rollout's unsent commands.
func (o *outbox) side(side map[string][]byte, rollout string) {
	cmds, closed := o.commands(rollout)
	side[outboxKeyPrefix+rollout] = encodeOutbox(cmds)
	b, err := json.Marshal(closed)
	if err != nil {
		panic("BUG: times do not encode: " + err.Error())
	}
	side[outboxClosedKeyPrefix+rollout] = b
}

// encodeOutbox encodes a rollout's unsent commands for a side entry (an
// empty list too: it replaces an older entry that held some).
func encodeOutbox(cmds []*schemas.Command) []byte {
	if cmds == nil {
		cmds = []*schemas.Command{}
	}
	b, err := json.Marshal(cmds)
	if err != nil {
		panic("BUG: commands do not encode: " + err.Error())
	}
	return b
}

// restoreOutbox queues the commands of a side entry again, for the judge
// of rollout at generation gen. The sender skips those already on the
// control topic. Called with d.mu held.
func (d *Daemon) restoreOutbox(rollout string, side map[string][]byte) {
	b, ok := side[outboxKeyPrefix+rollout]
	if !ok {
		return
	}
	var cmds []*schemas.Command
	if err := json.Unmarshal(b, &cmds); err != nil {
		d.cfg.Logger.Error("unsent commands in the checkpoint unreadable: they are not sent", "rollout", rollout, "err", err)
		return
	}
	var closed []int64
	if b, ok := side[outboxClosedKeyPrefix+rollout]; ok && json.Unmarshal(b, &closed) != nil || len(closed) != len(cmds) {
		closed = nil // not measured
	}
	for i, c := range cmds {
		if c == nil || c.Rollout != rollout {
			continue
		}
		v := detector.Verdict{Rollout: c.Rollout, Action: c.Action, Step: c.Step, Weight: c.Weight, Reason: c.Reason, At: c.DecidedAt}
		p := pending{cmd: c, v: v, gen: d.gen[rollout]}
		if closed != nil {
			p.closedAt = closed[i]
		}
		d.outbox.push(p)
	}
	if len(cmds) > 0 {
		d.cfg.Logger.Info("unsent commands restored from the checkpoint", "rollout", rollout, "commands", len(cmds))
	}
}
