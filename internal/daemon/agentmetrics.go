package daemon

import (
	"strings"

	"github.com/VictoriaMetrics/metrics"

	"github.com/inferensys/canaryd/detector"
	"github.com/inferensys/canaryd/schemas"
	"github.com/inferensys/canaryd/window"
)

// Series from closed windows (judged rollouts only).
//
// Per version, over the request segments (kind llm, tool, retrieval or
// other):
//
//	canaryd_requests_total{rollout,version}              requests
//	canaryd_errors_total{rollout,version}                failed requests
//	canaryd_latency_seconds{rollout,version,kind,name}   durations, a histogram per segment (latencyhist.go)
//
// Per tool and per model (kind tool or llm; name: the tool or model name,
// as the window segments it):
//
//	canaryd_agent_calls_total{rollout,version,kind,name}              calls
//	canaryd_agent_errors_total{rollout,version,kind,name,error_type}  failed calls by error type
//	canaryd_agent_tokens_total{rollout,version,kind,name,direction}   llm only: input/output tokens
//	canaryd_agent_cost_usd_total{rollout,version,kind,name}           llm only: cost of the calls that carry one
//
// Cardinality is bounded by the window's caps, not by the input: per
// partition at most Options.MaxRollouts rollouts, each with
// Options.MaxVersions versions (further ones are "_other"),
// Options.MaxSegments (kind, name) pairs (further names are "_other") and
// Options.MaxErrorTypes error types (further ones are "_other"). The series
// of an ended release, and of versions no longer in the release, are
// removed after Config.EvictAfter (rolloutmetrics.go).
//
// Latency is a histogram, not quantiles: its buckets add up across windows,
// partitions and instances, so histogram_quantile over rate() gives the
// quantile of any range, per segment or summed per version.

// exportWindowSeries adds the series of one closed window to ms and lat.
// Called on partition goroutines; both are safe for concurrent use.
func exportWindowSeries(ms *metrics.Set, lat *latencyHistograms, c window.Closed) {
	var b strings.Builder
	for _, s := range c.Series {
		k := s.Segment.Kind
		if !detector.IsRequest(k) || s.Agg == nil || s.Agg.Count == 0 {
			continue
		}
		b.Reset()
		b.WriteString(`rollout=`)
		quoteLabel(&b, c.Rollout)
		b.WriteString(`,version=`)
		quoteLabel(&b, s.Version)
		version := b.String()
		a := s.Agg
		ms.GetOrCreateCounter(`canaryd_requests_total{` + version + `}`).Add(int(a.Count))
		ms.GetOrCreateCounter(`canaryd_errors_total{` + version + `}`).Add(int(a.Errors))
		b.WriteString(`,kind=`)
		quoteLabel(&b, k.String())
		b.WriteString(`,name=`)
		quoteLabel(&b, s.Segment.Name)
		labels := b.String()
		if a.LatencyCount() > 0 {
			lat.add(labels, a.Latency)
		}
		if k != schemas.KindTool && k != schemas.KindLLM {
			continue
		}
		ms.GetOrCreateCounter(`canaryd_agent_calls_total{` + labels + `}`).Add(int(a.Count))
		for i, n := range a.ErrorTypes {
			if n == 0 {
				continue
			}
			name := window.OtherName
			if i > 0 && i < len(c.ErrorTypes) {
				name = c.ErrorTypes[i]
			}
			ms.GetOrCreateCounter(`canaryd_agent_errors_total{` + labels + `,error_type=` + quote(name) + `}`).Add(int(n))
		}
		if k == schemas.KindLLM {
			ms.GetOrCreateFloatCounter(`canaryd_agent_tokens_total{` + labels + `,direction="input"}`).Add(a.InputTokens)
			ms.GetOrCreateFloatCounter(`canaryd_agent_tokens_total{` + labels + `,direction="output"}`).Add(a.OutputTokens)
			if a.CostN > 0 {
				ms.GetOrCreateFloatCounter(`canaryd_agent_cost_usd_total{` + labels + `}`).Add(a.CostUSD)
			}
		}
	}
}

func quote(s string) string {
	var b strings.Builder
	quoteLabel(&b, s)
	return b.String()
}

// quoteLabel writes s as a Prometheus label value: in double quotes, with
// backslash, double quote and newline escaped, the only escapes the text
// exposition format knows (Go's %q would also write \x and \u escapes,
// which Prometheus reads literally). Names are valid UTF-8: the decoders
// check them.
func quoteLabel(b *strings.Builder, s string) {
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '\\':
			b.WriteString(`\\`)
		case '"':
			b.WriteString(`\"`)
		case '\n':
			b.WriteString(`\n`)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
}
