package daemon

import (
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/inferensys/canaryd/detector"
	"github.com/inferensys/canaryd/window"
)

// autoMinRequests is how many requests a new version needs in one window
// before canary: auto starts a release of it: a stray event with a
// mistyped version does not start (or supersede) one.
const autoMinRequests = 10

// maxJudged bounds the versions remembered per rollout as judged.
const maxJudged = 64

// autoFromControl gives each canary: auto rollout the release its latest
// command on the control topic names, so that a restart continues that
// release (and restores its judge's checkpoint) rather than waiting for a
// version it already judges. Called at start, before the judges' states
// are restored.
func (d *Daemon) autoFromControl() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for id, tpl := range d.autoSpecs {
		last := d.control.Last(id)
		if d.judges[id] != nil || last == nil || last.Baseline != tpl.Baseline || last.Canary == tpl.Baseline {
			continue
		}
		d.judges[id] = detector.NewJudge(tpl.Release(last.Canary))
		d.markJudged(id, last.Canary)
		d.cfg.Logger.Info("canary: auto: continuing the release on the control topic", "rollout", id, "canary", last.Canary)
	}
}

// autoRelease returns the judge of a canary: auto rollout's window: the
// running release's, or a new one when the window shows a version other
// than the baseline that no release of the rollout has judged (the most
// requests first, then by name), with at least autoMinRequests requests.
// A running release that the new version supersedes ends as superseded.
// Called with d.mu held.
func (d *Daemon) autoRelease(tpl detector.Spec, j *detector.Judge, c window.Closed) *detector.Judge {
	counts := map[string]uint64{}
	for _, s := range c.Series {
		if detector.IsRequest(s.Segment.Kind) {
			counts[s.Version] += s.Agg.Count
		}
	}
	best, bestN := "", uint64(0)
	for _, v := range slices.Sorted(maps.Keys(counts)) {
		n := counts[v]
		if v == tpl.Baseline || v == window.OtherName || d.judgedVersion(c.Rollout, v) || (j != nil && (v == j.Spec().Canary || v == j.Spec().Baseline)) {
			continue
		}
		if n >= autoMinRequests && n > bestN {
			best, bestN = v, n
		}
	}
	if best == "" {
		return j
	}
	if j != nil {
		d.endRelease(j, "superseded", "superseded by version "+best+" in the events (canary: auto)", time.Unix(0, c.End).UTC())
	}
	n := d.newJudge(tpl.Release(best))
	d.judges[c.Rollout] = n
	d.markJudged(c.Rollout, best)
	d.applyPendingWeight(c.Rollout, n)
	d.cfg.Logger.Info("canary: auto: a new version starts a release", "rollout", c.Rollout, "baseline", tpl.Baseline, "canary", best, "requests", bestN)
	return n
}

func (d *Daemon) markJudged(rollout, version string) {
	vs := append(d.judged[rollout], version)
	if len(vs) > maxJudged {
		vs = vs[len(vs)-maxJudged:]
	}
	d.judged[rollout] = vs
}

func (d *Daemon) judgedVersion(rollout, version string) bool {
	return slices.Contains(d.judged[rollout], version)
}

// autoStatus is the status of a canary: auto rollout with no release yet.
func autoStatus(tpl detector.Spec) detector.Status {
	return detector.Status{Rollout: tpl.Rollout, Baseline: tpl.Baseline, Canary: tpl.Canary, Step: -1,
		Mode: tpl.ModeName(), Gate: detector.GateWait, WeightSource: weightSourceNone(tpl),
		Verdict: detector.Verdict{Rollout: tpl.Rollout, Action: detector.ActionContinue, Step: -1,
			Reason: fmt.Sprintf("canary: auto: waiting for events of a version other than the baseline %s", tpl.Baseline)}}
}

func weightSourceNone(tpl detector.Spec) string {
	if tpl.JudgeOnly() {
		return detector.WeightNone
	}
	return detector.WeightCanaryd
}
