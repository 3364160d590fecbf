package daemon

import (
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/inferensys/canaryd/detector"
)

// Per-rollout series, read from the judges at each scrape (so that they
// always show the judge's state, restored after a restart, and vanish with
// it):
//
//	canaryd_rollout_info{rollout,baseline,canary,deployment_id,commit,phase,mode}  1
//	canaryd_rollout_step{rollout}                    index of the current step
//	canaryd_rollout_weight{rollout}                  the canary's traffic percentage
//	canaryd_rollout_final{rollout,final}             1 once the release ended
//	canaryd_test_evalue{rollout,test,role}           each test's e-value at the last verdict
//	canaryd_test_threshold{rollout,test,role}        the e-value at which it fires (1/alpha)
//
// An ended release's series, these and the ones its windows added to the
// metrics set (requests, errors, latency, per tool and model, verdicts,
// commands, operator actions), are removed EvictAfter after this instance
// first saw it ended; a version that left the rollout (an earlier release's)
// loses its series EvictAfter after that. canaryd_judge_verdict, read by
// controllers, stays while the rollout is in the specs, and
// canaryd_events_late_total is not removed (the consumer holds its
// counters; bounded by the partition's rollout limit).

// Phases of canaryd_rollout_info besides the final actions (promote,
// rollback, hold).
const (
	phasePending     = "pending" // no step started
	phaseProgressing = "progressing"
	phasePaused      = "paused"
	phaseApproval    = "awaiting_approval"
)

// rolloutMetrics is the state of the per-rollout series between scrapes.
type rolloutMetrics struct {
	evictAfter time.Duration
	// mu guards endedAt and staleAt. Taken after d.mu is released: the
	// sweep calls into the metrics set.
	mu sync.Mutex
	// endedAt: per release (rolloutKey), when a scrape first saw it ended.
	endedAt map[string]time.Time
	// staleAt: per series name of the set, when a scrape first saw it
	// belong to no current release.
	staleAt map[string]time.Time
}

func rolloutKey(st *detector.Status) string {
	return st.Rollout + "\x00" + st.Baseline + "\x00" + st.Canary
}

// phase names where a rollout is, for canaryd_rollout_info.
func phase(st *detector.Status) string {
	switch {
	case st.Final != "":
		return st.Final
	case st.Paused:
		return phasePaused
	case st.AwaitingApproval:
		return phaseApproval
	case st.Step < 0:
		return phasePending
	}
	return phaseProgressing
}

// writeRolloutMetrics is the metrics set's writer of the per-rollout
// series (registered in New); it then sweeps the set's series of ended
// releases. It runs on the scraping goroutine.
func (d *Daemon) writeRolloutMetrics(w io.Writer) {
	now := time.Now()
	d.mu.Lock()
	sts := make([]detector.Status, 0, len(d.judges))
	for id, j := range d.judges {
		if !d.judgedHere(id) {
			continue // two stages: its judge runs on another instance, which exports it
		}
		sts = append(sts, j.Status())
	}
	auto := make(map[string]bool, len(d.autoSpecs))
	for id := range d.autoSpecs {
		auto[id] = true
	}
	d.mu.Unlock()
	slices.SortFunc(sts, func(a, b detector.Status) int { return strings.Compare(a.Rollout, b.Rollout) })

	rm := d.rolloutMetrics
	rm.mu.Lock()
	defer rm.mu.Unlock()
	live := sts[:0]
	seen := map[string]bool{}
	for _, st := range sts {
		if st.Final == "" {
			live = append(live, st)
			continue
		}
		k := rolloutKey(&st)
		seen[k] = true
		at, ok := rm.endedAt[k]
		if !ok {
			at = now
			rm.endedAt[k] = now
		}
		if now.Sub(at) < rm.evictAfter {
			live = append(live, st)
		}
	}
	for k := range rm.endedAt {
		if !seen[k] {
			delete(rm.endedAt, k)
		}
	}
	writeRolloutSeries(w, live)
	rm.sweep(d.cfg.Metrics, d.latency, live, auto, now)
}

// writeRolloutSeries writes the per-rollout families of sts (sorted by
// rollout), family by family, each with its metadata before its first
// sample.
func writeRolloutSeries(w io.Writer, sts []detector.Status) {
	var b strings.Builder
	last := ""
	sample := func(name string, v float64, labels ...string) {
		if name != last {
			metrics.WriteMetadataIfNeeded(&b, name, "gauge")
			last = name
		}
		b.WriteString(name)
		b.WriteByte('{')
		for i := 0; i < len(labels); i += 2 {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(labels[i])
			b.WriteByte('=')
			quoteLabel(&b, labels[i+1])
		}
		b.WriteString("} ")
		b.WriteString(strconv.FormatFloat(v, 'g', -1, 64))
		b.WriteByte('\n')
	}
	for _, st := range sts {
		if st.Final != "" {
			sample("canaryd_rollout_final", 1, "rollout", st.Rollout, "final", st.Final)
		}
	}
	for _, st := range sts {
		sample("canaryd_rollout_info", 1, "rollout", st.Rollout, "baseline", st.Baseline, "canary", st.Canary,
			"deployment_id", st.DeploymentID, "commit", st.Commit, "phase", phase(&st), "mode", st.Mode)
	}
	for _, st := range sts {
		sample("canaryd_rollout_step", float64(st.Step), "rollout", st.Rollout)
	}
	for _, st := range sts {
		sample("canaryd_rollout_weight", float64(st.Weight), "rollout", st.Rollout)
	}
	for _, st := range sts {
		for _, t := range st.Verdict.Tests {
			sample("canaryd_test_evalue", float64(t.EValue), "rollout", st.Rollout, "test", t.Name, "role", t.Role)
		}
	}
	for _, st := range sts {
		for _, t := range st.Verdict.Tests {
			sample("canaryd_test_threshold", float64(t.Threshold), "rollout", st.Rollout, "test", t.Name, "role", t.Role)
		}
	}
	io.WriteString(w, b.String())
}

// sweptNever: families with a rollout label that are never swept.
var sweptNever = map[string]bool{
	"canaryd_judge_verdict":     true, // registered once per spec; controllers read it
	"canaryd_events_late_total": true, // the consumer holds the counter
}

// sweep removes from ms and lat the series of rollouts that are not live
// (ended and past evictAfter, or gone from the specs) and of versions that
// are not their release's, once they have been so for evictAfter. Called
// with rm.mu held.
func (rm *rolloutMetrics) sweep(ms *metrics.Set, lat *latencyHistograms, live []detector.Status, auto map[string]bool, now time.Time) {
	byRollout := make(map[string]*detector.Status, len(live))
	for i := range live {
		byRollout[live[i].Rollout] = &live[i]
	}
	names := append(ms.ListMetricNames(), lat.names()...)
	seen := make(map[string]bool, len(rm.staleAt))
	for _, name := range names {
		fam, labels, ok := strings.Cut(name, "{")
		if !ok || sweptNever[fam] {
			continue
		}
		r, ok := labelValue(labels, "rollout")
		if !ok {
			continue
		}
		st := byRollout[r]
		stale := st == nil && !auto[r]
		if st != nil {
			if v, ok := labelValue(labels, "version"); ok && v != st.Baseline && v != st.Canary && v != "_other" {
				stale = true
			}
		}
		if !stale {
			continue
		}
		seen[name] = true
		at, ok := rm.staleAt[name]
		if !ok {
			// An ended release was already kept evictAfter: its series go now.
			at = now
			if st == nil {
				at = now.Add(-rm.evictAfter)
			}
			rm.staleAt[name] = at
		}
		if now.Sub(at) >= rm.evictAfter {
			if !lat.remove(name) {
				ms.UnregisterMetric(name)
			}
			delete(rm.staleAt, name)
		}
	}
	for name := range rm.staleAt {
		if !seen[name] {
			delete(rm.staleAt, name)
		}
	}
}

// labelValue returns the value of label key in labels, the part of a
// series name after its '{' as the metrics set holds it (values quoted,
// with \\, \" and \n escaped).
func labelValue(labels, key string) (string, bool) {
	for len(labels) > 0 {
		k, rest, ok := strings.Cut(labels, `="`)
		if !ok {
			return "", false
		}
		var v strings.Builder
		i := 0
		for ; i < len(rest) && rest[i] != '"'; i++ {
			if rest[i] == '\\' && i+1 < len(rest) {
				i++
				switch rest[i] {
				case 'n':
					v.WriteByte('\n')
				default:
					v.WriteByte(rest[i])
				}
				continue
			}
			v.WriteByte(rest[i])
		}
		if strings.TrimLeft(k, ", ") == key {
			return v.String(), true
		}
		if i >= len(rest) {
			return "", false
		}
		labels = rest[i+1:]
	}
	return "", false
}
