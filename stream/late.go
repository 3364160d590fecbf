package stream

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/inferensys/canaryd/schemas"
	"github.com/inferensys/canaryd/window"
)

// lateLogEvery is the least wall time between two log lines about one
// partition's late events.
const lateLogEvery = 10 * time.Second

// lateEvents counts one partition's late events per rollout
// (canaryd_events_late_total{rollout}) and reports them in the log, at most
// one line per lateLogEvery: how many, of which rollouts, how far behind the
// watermark. Owned by the partition's goroutine.
type lateEvents struct {
	// counters: rollout → its counter, for at most the partition's rollout
	// limit of rollouts; later ones count under "_other" (other).
	counters map[string]*metrics.Counter
	other    *metrics.Counter
	// Since the last line: events, per rollout label (bounded like
	// counters), the furthest behind the watermark.
	n       int
	pending map[string]int
	behind  time.Duration
	logged  time.Time // when the last line was logged
}

// countLate counts a late event and logs the late events since the last
// line when lateLogEvery has passed.
func (pc *partConsumer) countLate(ev *schemas.Event) {
	l := &pc.late
	label := string(ev.Rollout) // no allocation in the map lookups below
	ctr := l.counters[label]
	if ctr == nil {
		if l.counters == nil {
			l.counters, l.pending = map[string]*metrics.Counter{}, map[string]int{}
		}
		if len(l.counters) < pc.part.RolloutLimit() {
			label = strings.Clone(label)
			ctr = pc.c.opts.Metrics.GetOrCreateCounter(fmt.Sprintf(`canaryd_events_late_total{rollout=%q}`, metricLabel(label)))
			l.counters[label] = ctr
		} else {
			label = window.OtherName
			if l.other == nil {
				l.other = pc.c.opts.Metrics.GetOrCreateCounter(fmt.Sprintf(`canaryd_events_late_total{rollout=%q}`, window.OtherName))
			}
			ctr = l.other
		}
	}
	ctr.Inc()
	l.n++
	l.pending[label]++
	l.behind = max(l.behind, time.Duration(pc.part.Watermark()-ev.TS))
	pc.reportLate()
}

// reportLate logs the late events counted since the last line, if any and
// if lateLogEvery has passed since it.
func (pc *partConsumer) reportLate() {
	l := &pc.late
	if l.n == 0 {
		return
	}
	now := pc.c.opts.Clock()
	if now.Sub(l.logged) < lateLogEvery {
		return
	}
	type rc struct {
		name string
		n    int
	}
	rs := make([]rc, 0, len(l.pending))
	for name, n := range l.pending {
		rs = append(rs, rc{name, n})
	}
	slices.SortFunc(rs, func(a, b rc) int { return cmp.Or(b.n-a.n, strings.Compare(a.name, b.name)) })
	var b strings.Builder
	for i, r := range rs {
		if i == 5 {
			fmt.Fprintf(&b, " and %d more", len(rs)-i)
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s: %d", r.name, r.n)
	}
	since := "since the partition was assigned"
	if !l.logged.IsZero() {
		since = "in the last " + now.Sub(l.logged).Round(time.Second).String()
	}
	pc.c.opts.Logger.Warn("late events dropped "+since+": their windows had closed (raise the window lateness if producers lag this much)",
		"topic", pc.topic, "partition", pc.id, "events", l.n, "rollouts", b.String(),
		"max_behind_watermark", l.behind.Round(time.Millisecond).String(),
		"watermark", time.Unix(0, pc.part.Watermark()).UTC().Format(time.RFC3339Nano))
	l.n, l.behind, l.logged = 0, 0, now
	clear(l.pending)
}

// metricLabel reduces a rollout name from an event to a safe label value:
// bytes other than letters, digits and _ . : / - become '_', at most 128.
func metricLabel(s string) string {
	b := []byte(s[:min(len(s), 128)])
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("_.:/-", c) >= 0) {
			b[i] = '_'
		}
	}
	return string(b)
}
