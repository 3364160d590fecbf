package daemon

import (
	"strings"

	"github.com/VictoriaMetrics/metrics"

	"github.com/inferensys/canaryd/schemas"
	"github.com/inferensys/canaryd/window"
)

// Per-tool and per-model series, from closed windows. Labels: rollout,
// version, kind (tool or llm) and name (the tool or model name, as the
// window segments it).
//
//	canaryd_agent_calls_total{rollout,version,kind,name}              calls
//	canaryd_agent_errors_total{rollout,version,kind,name,error_type}  failed calls by error type
//	canaryd_agent_latency_ms{rollout,version,kind,name,quantile}      p50/p95/p99 of the last closed window
//	canaryd_agent_tokens_total{rollout,version,kind,name,direction}   llm only: input/output tokens
//	canaryd_agent_cost_usd_total{rollout,version,kind,name}           llm only: cost of the calls that carry one
//
// Cardinality is bounded by the window's caps, not by the input: per
// partition at most Options.MaxRollouts rollouts, each with
// Options.MaxVersions versions (further ones are "_other"),
// Options.MaxSegments (kind, name) pairs (further names are "_other") and
// Options.MaxErrorTypes error types (further ones are "_other"). Series of
// versions that are gone are not removed, as for canaryd_requests_total.
//
// The quantile gauges hold the latest closed window's quantiles. When a
// rollout's events are spread over several partitions, each partition's
// windows set them in turn: for step-long quantiles use canaryd_latency_ms
// (per version, over the current step), or rate the counters.

// exportAgentSeries adds the tool and llm series of one closed window.
// Called on partition goroutines; metrics.Set is safe for concurrent use.
func exportAgentSeries(ms *metrics.Set, c window.Closed) {
	var b strings.Builder
	for _, s := range c.Series {
		k := s.Segment.Kind
		if k != schemas.KindTool && k != schemas.KindLLM || s.Agg == nil || s.Agg.Count == 0 {
			continue
		}
		b.Reset()
		b.WriteString(`rollout=`)
		quoteLabel(&b, c.Rollout)
		b.WriteString(`,version=`)
		quoteLabel(&b, s.Version)
		b.WriteString(`,kind=`)
		quoteLabel(&b, k.String())
		b.WriteString(`,name=`)
		quoteLabel(&b, s.Segment.Name)
		labels := b.String()
		a := s.Agg
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
		if a.LatencyCount() > 0 {
			for _, q := range [...]struct {
				label string
				q     float64
			}{{"0.5", 0.5}, {"0.95", 0.95}, {"0.99", 0.99}} {
				ms.GetOrCreateGauge(`canaryd_agent_latency_ms{`+labels+`,quantile="`+q.label+`"}`, nil).Set(a.Quantile(q.q))
			}
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
