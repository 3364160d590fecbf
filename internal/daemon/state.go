package daemon

import (
	"errors"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/inferensys/canaryd/detector"
	"github.com/inferensys/canaryd/window"
)

// judgeKeyPrefix prefixes a judge's state among the checkpoint's side entries.
const judgeKeyPrefix = "judge/"

func (d *Daemon) closeStore() {
	if d.store == nil {
		return
	}
	if err := d.store.Close(); err != nil {
		d.cfg.Logger.Error("closing the checkpoint store", "err", err)
	}
	d.store = nil
}

// restoreJudges loads the judges' states from the checkpoint store and
// returns the rollouts restored. A state written under another spec, or
// corrupt, is reported and skipped: that judge starts afresh (and resumes its
// step from the control topic).
func (d *Daemon) restoreJudges() map[string]bool {
	restored := map[string]bool{}
	if d.store == nil {
		return restored
	}
	side, bad, err := d.store.Side()
	if err != nil {
		d.cfg.Logger.Error("reading judge states from the checkpoint store", "err", err)
		return restored
	}
	ms := d.cfg.Metrics
	for _, k := range bad {
		ms.GetOrCreateCounter(`canaryd_judge_restores_total{result="corrupt"}`).Inc()
		d.cfg.Logger.Error("judge state corrupt (checksum): starting that judge afresh", "key", k)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for k, b := range side {
		id, ok := strings.CutPrefix(k, judgeKeyPrefix)
		j := d.judges[id]
		if !ok || j == nil {
			continue
		}
		if err := j.UnmarshalState(b); err != nil {
			result := "corrupt"
			if errors.Is(err, detector.ErrStateMismatch) {
				result = "mismatch"
			}
			ms.GetOrCreateCounter(`canaryd_judge_restores_total{result="` + result + `"}`).Inc()
			d.cfg.Logger.Warn("judge state not restored: starting that judge afresh", "rollout", id, "err", err)
			continue
		}
		ms.GetOrCreateCounter(`canaryd_judge_restores_total{result="restored"}`).Inc()
		d.saved[id] = j.Observed()
		restored[id] = true
		d.restoreOutbox(id, side)
		st := j.Status()
		d.cfg.Logger.Info("judge resumed from its checkpoint", "rollout", id, "windows", st.Windows, "step", st.Step, "final", st.Final)
	}
	return restored
}

// sideState is the stream's Options.SideState: the state of every judge
// that observed a window since its last checkpoint.
func (d *Daemon) sideState() (map[string][]byte, func()) {
	d.mu.Lock()
	defer d.mu.Unlock()
	side := map[string][]byte{}
	observed := map[string]int{}
	for id, j := range d.judges {
		n := j.Observed()
		if n == d.saved[id] {
			continue
		}
		b, err := j.MarshalState()
		if err != nil {
			panic("BUG: judge state does not encode: " + err.Error())
		}
		side[judgeKeyPrefix+id] = b
		d.outbox.side(side, id)
		observed[id] = n
	}
	return side, func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		for id, n := range observed {
			d.saved[id] = n
		}
	}
}

// history keeps a rollout's recent closed windows for the Arrow export, and
// folds older ones into one row per (version, segment), so its memory is
// bounded whatever the rollout's length.
type history struct {
	max    int
	recent []window.Closed
	folded map[foldKey]*window.Agg
	start  int64 // event time span of the folded windows
	end    int64
}

type foldKey struct {
	version string
	seg     window.Segment
}

func (d *Daemon) historyOf(rollout string) *history {
	h := d.history[rollout]
	if h == nil {
		h = &history{max: d.cfg.HistoryWindows, folded: map[foldKey]*window.Agg{}}
		d.history[rollout] = h
	}
	return h
}

func (h *history) add(c window.Closed) {
	h.recent = append(h.recent, c)
	if len(h.recent) <= h.max {
		return
	}
	old := h.recent[0]
	h.recent = slices.Delete(h.recent, 0, 1)
	if len(h.folded) == 0 {
		h.start = old.Start
	}
	h.end = old.End
	for _, s := range old.Series {
		k := foldKey{s.Version, s.Segment}
		a := h.folded[k]
		if a == nil {
			a = window.NewAgg()
			h.folded[k] = a
		}
		a.Merge(s.Agg)
	}
}

// WriteWindows writes a rollout's closed windows as an Arrow IPC stream
// (window.Schema): first the folded older windows (one row per series
// spanning their time), then the recent ones in order. It reports false
// when canaryd does not judge the rollout.
func (d *Daemon) WriteWindows(w io.Writer, rollout string) (bool, error) {
	t := window.NewTable()
	defer t.Release()
	d.mu.Lock()
	if d.judges[rollout] == nil {
		d.mu.Unlock()
		return false, nil
	}
	if h := d.history[rollout]; h != nil {
		keys := make([]foldKey, 0, len(h.folded))
		for k := range h.folded {
			keys = append(keys, k)
		}
		slices.SortFunc(keys, func(a, b foldKey) int {
			if c := strings.Compare(a.version, b.version); c != 0 {
				return c
			}
			return strings.Compare(a.seg.String(), b.seg.String())
		})
		for _, k := range keys {
			t.Append(window.Row{Rollout: rollout, Version: k.version, Segment: k.seg, Start: h.start, End: h.end, MinOffset: -1, Agg: h.folded[k]})
		}
		for _, c := range h.recent {
			for _, r := range window.ClosedRows(c) {
				t.Append(r)
			}
		}
	}
	d.mu.Unlock()
	return true, t.WriteIPC(w, map[string]string{"canaryd.rollout": rollout})
}

// handoverSide is the stream's Options.HandoverSide: the state of the judges
// of a revoked partition's rollouts.
func (d *Daemon) handoverSide(rollouts []string) map[string][]byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	side := map[string][]byte{}
	for _, id := range rollouts {
		j := d.judges[id]
		if j == nil || j.Observed() == 0 {
			continue
		}
		b, err := j.MarshalState()
		if err != nil {
			panic("BUG: judge state does not encode: " + err.Error())
		}
		side[judgeKeyPrefix+id] = b
		d.outbox.side(side, id)
	}
	return side
}

// onHandover is the stream's Options.OnHandover: a partition continues here
// from the checkpoint its previous owner published, and the judges of its
// rollouts continue from the states published with it. A judge that observed
// windows of other partitions too (a rollout keyed by trace id, spread over
// partitions) is not replaced: its state is not this partition's alone.
func (d *Daemon) onHandover(topic string, p int32, side map[string][]byte) {
	src := topic + "/" + strconv.Itoa(int(p))
	d.mu.Lock()
	defer d.mu.Unlock()
	d.continueJudges(side, "handed_over", func(id string, n *detector.Judge) bool {
		if srcs := n.Sources(); len(srcs) != 1 || srcs[0] != src {
			d.cfg.Logger.Warn("handed-over judge state not used: the rollout spans partitions", "rollout", id, "sources", srcs)
			return false
		}
		d.cfg.Logger.Info("judge continues from the state handed over", "rollout", id, "partition", src, "windows", n.Observed())
		return true
	})
}

// continueJudges replaces the judges whose state side holds (as published
// by another instance: handoverSide) by judges continuing from it, with
// their unsent commands, when use accepts the state, and returns their
// rollouts; result labels canaryd_judge_restores_total. Called with d.mu
// held.
func (d *Daemon) continueJudges(side map[string][]byte, result string, use func(id string, n *detector.Judge) bool) []string {
	var ids []string
	for k, b := range side {
		id, ok := strings.CutPrefix(k, judgeKeyPrefix)
		old := d.judges[id]
		if !ok || old == nil {
			continue
		}
		n := detector.NewJudge(old.Spec())
		if err := n.UnmarshalState(b); err != nil {
			d.cfg.Logger.Warn("published judge state not used: the judge goes on as it was", "rollout", id, "err", err)
			continue
		}
		if !use(id, n) {
			continue
		}
		n.SetSeqBase(d.seqBase(n.Spec()))
		d.judges[id] = n
		d.gen[id]++ // the old judge's unsent commands are replaced by the new one's
		d.restoreOutbox(id, side)
		delete(d.saved, id) // checkpoint it with the next one
		d.cfg.Metrics.GetOrCreateCounter(`canaryd_judge_restores_total{result="` + result + `"}`).Inc()
		ids = append(ids, id)
	}
	return ids
}
