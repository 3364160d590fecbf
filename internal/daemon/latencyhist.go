package daemon

import (
	"io"
	"maps"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/DataDog/sketches-go/ddsketch"
	"github.com/VictoriaMetrics/metrics"

	"github.com/inferensys/canaryd/window"
)

// LatencyBuckets are the upper bounds, in seconds, of
// canaryd_latency_seconds: 5 ms to 2 min, about ×2.5 apart, for tool calls
// of milliseconds and model calls of tens of seconds.
var LatencyBuckets = [...]float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 60, 120}

const latencyFamily = "canaryd_latency_seconds"

// latencyHistograms is the family canaryd_latency_seconds: a Prometheus
// histogram per (rollout, version, kind, name), fed a closed window's
// latency sketch at a time. metrics.PrometheusHistogram takes one
// observation per Update (≈ 240 ns per event here); this adds each sketch
// bin's count to its bucket at once. Written by the metrics set's writer
// registered in New; safe for concurrent use.
type latencyHistograms struct {
	mu sync.Mutex
	m  map[string]*latencyHist // by labels, as in `rollout="r",version="v1",kind="tool",name="t"`
}

type latencyHist struct {
	counts [len(LatencyBuckets) + 1]uint64 // per bucket, not cumulative; the last is above every bound
	sum    float64                         // seconds
}

func newLatencyHistograms() *latencyHistograms {
	return &latencyHistograms{m: map[string]*latencyHist{}}
}

// add adds a latency sketch (milliseconds) to the series of labels: each
// sketch bin's count in the bucket of its representative value, within the
// sketch's 1% of the exact durations.
func (lh *latencyHistograms) add(labels string, sk *ddsketch.DDSketch) {
	lh.mu.Lock()
	defer lh.mu.Unlock()
	h := lh.m[labels]
	if h == nil {
		h = &latencyHist{}
		lh.m[strings.Clone(labels)] = h
	}
	h.counts[0] += uint64(sk.GetZeroCount() + 0.5)
	sk.GetPositiveValueStore().ForEach(func(i int, n float64) bool {
		v := window.Mapping.Value(i) / 1000
		h.counts[sort.SearchFloat64s(LatencyBuckets[:], v)] += uint64(n + 0.5)
		h.sum += v * n
		return false
	})
}

// writeTo writes the family in the text format, series sorted.
func (lh *latencyHistograms) writeTo(w io.Writer) {
	lh.mu.Lock()
	keys := slices.Sorted(maps.Keys(lh.m))
	hs := make([]latencyHist, len(keys))
	for i, k := range keys {
		hs[i] = *lh.m[k]
	}
	lh.mu.Unlock()
	if len(keys) == 0 {
		return
	}
	var b strings.Builder
	metrics.WriteMetadataIfNeeded(&b, latencyFamily, "histogram")
	for i, labels := range keys {
		var cum uint64
		for j, n := range hs[i].counts {
			cum += n
			le := "+Inf"
			if j < len(LatencyBuckets) {
				le = strconv.FormatFloat(LatencyBuckets[j], 'g', -1, 64)
			}
			b.WriteString(latencyFamily + "_bucket{" + labels + `,le="` + le + `"} ` + strconv.FormatUint(cum, 10) + "\n")
		}
		b.WriteString(latencyFamily + "_sum{" + labels + "} " + strconv.FormatFloat(hs[i].sum, 'g', -1, 64) + "\n")
		b.WriteString(latencyFamily + "_count{" + labels + "} " + strconv.FormatUint(cum, 10) + "\n")
	}
	io.WriteString(w, b.String())
}

// names returns the series' names as the metrics set would name them:
// family{labels}.
func (lh *latencyHistograms) names() []string {
	lh.mu.Lock()
	defer lh.mu.Unlock()
	out := make([]string, 0, len(lh.m))
	for k := range lh.m {
		out = append(out, latencyFamily+"{"+k+"}")
	}
	return out
}

// remove drops a series named as names names it, and reports whether it
// was one of these.
func (lh *latencyHistograms) remove(name string) bool {
	labels, ok := strings.CutPrefix(name, latencyFamily+"{")
	if !ok {
		return false
	}
	lh.mu.Lock()
	delete(lh.m, strings.TrimSuffix(labels, "}"))
	lh.mu.Unlock()
	return true
}
