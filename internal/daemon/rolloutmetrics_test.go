package daemon

import (
	"slices"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/inferensys/canaryd/detector"
	"github.com/inferensys/canaryd/window"
)

func TestLabelValue(t *testing.T) {
	for _, tc := range []struct {
		labels, key, want string
		ok                bool
	}{
		{`rollout="a",version="v1"}`, "rollout", "a", true},
		{`rollout="a",version="v1"}`, "version", "v1", true},
		{`rollout="a \"b\" \\c",version="x,y=\"z\""}`, "rollout", `a "b" \c`, true},
		{`rollout="a \"b\" \\c",version="x,y=\"z\""}`, "version", `x,y="z"`, true},
		{`name="version=\"v9\"",rollout="r"}`, "version", "", false},
		{`name="version=\"v9\"",rollout="r"}`, "rollout", "r", true},
		{`topic="t",partition="0"}`, "rollout", "", false},
		{`rollout="line\nbreak"}`, "rollout", "line\nbreak", true},
	} {
		got, ok := labelValue(tc.labels, tc.key)
		if got != tc.want || ok != tc.ok {
			t.Errorf("labelValue(%s, %s) = %q, %v; want %q, %v", tc.labels, tc.key, got, ok, tc.want, tc.ok)
		}
	}
}

// TestSweep: series of versions that left a rollout go evictAfter after a
// sweep first saw them stale; those of a rollout that is no longer live go
// at once (its release was kept evictAfter already); canaryd_judge_verdict
// and series without a rollout stay.
func TestSweep(t *testing.T) {
	ms := metrics.NewSet()
	for _, name := range []string{
		`canaryd_requests_total{rollout="r",version="v1"}`,
		`canaryd_requests_total{rollout="r",version="v2"}`,
		`canaryd_requests_total{rollout="r",version="_other"}`,
		`canaryd_requests_total{rollout="r",version="v0"}`,
		`canaryd_commands_sent_total{rollout="r",action="set_weight"}`,
		`canaryd_requests_total{rollout="ended",version="v1"}`,
		`canaryd_commands_sent_total{rollout="ended",action="rollback"}`,
		`canaryd_requests_total{rollout="auto",version="v1"}`,
		`canaryd_records_total`,
	} {
		ms.GetOrCreateCounter(name).Inc()
	}
	ms.GetOrCreateGauge(`canaryd_judge_verdict{rollout="ended"}`, func() float64 { return 3 })
	lat := newLatencyHistograms()
	sk := window.NewSketch()
	sk.Add(1000)
	lat.add(`rollout="r",version="v0",kind="tool",name="t"`, sk)
	names := func() []string { return slices.Sorted(slices.Values(append(ms.ListMetricNames(), lat.names()...))) }
	rm := &rolloutMetrics{evictAfter: 10 * time.Second, endedAt: map[string]time.Time{}, staleAt: map[string]time.Time{}}
	live := []detector.Status{{Rollout: "r", Baseline: "v1", Canary: "v2"}}
	auto := map[string]bool{"auto": true}
	t0 := time.Unix(1e9, 0)
	kept := []string{
		`canaryd_commands_sent_total{rollout="r",action="set_weight"}`,
		`canaryd_judge_verdict{rollout="ended"}`,
		`canaryd_records_total`,
		`canaryd_requests_total{rollout="auto",version="v1"}`,
		`canaryd_requests_total{rollout="r",version="_other"}`,
		`canaryd_requests_total{rollout="r",version="v1"}`,
		`canaryd_requests_total{rollout="r",version="v2"}`,
	}
	rm.sweep(ms, lat, live, auto, t0)
	want := append(slices.Clone(kept), `canaryd_latency_seconds{rollout="r",version="v0",kind="tool",name="t"}`, `canaryd_requests_total{rollout="r",version="v0"}`)
	slices.Sort(want)
	if got := names(); !slices.Equal(got, want) {
		t.Errorf("after the first sweep:\n%q\nwant\n%q", got, want)
	}
	rm.sweep(ms, lat, live, auto, t0.Add(9*time.Second))
	if got := names(); !slices.Equal(got, want) {
		t.Errorf("9 s later:\n%q\nwant\n%q", got, want)
	}
	rm.sweep(ms, lat, live, auto, t0.Add(10*time.Second))
	if got := names(); !slices.Equal(got, kept) {
		t.Errorf("10 s later:\n%q\nwant\n%q", got, kept)
	}
	if len(rm.staleAt) != 0 {
		t.Errorf("staleAt holds %v after the sweep; want nothing", rm.staleAt)
	}
}
