package daemon

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/VictoriaMetrics/metrics"

	"github.com/inferensys/canaryd/detector"
	"github.com/inferensys/canaryd/schemas"
	"github.com/inferensys/canaryd/stream"
	"github.com/inferensys/canaryd/window"
)

func TestExportWindowSeries(t *testing.T) {
	agg := func(evs ...schemas.Event) *window.Agg {
		a := window.NewAgg()
		for i := range evs {
			et := 0
			switch string(evs[i].ErrorType) {
			case "timeout":
				et = 1
			case "rate_limit":
				et = 2
			}
			a.Add(&evs[i], et)
		}
		return a
	}
	call := func(ms float64) schemas.Event { return schemas.Event{DurationMS: ms, HasDuration: true} }
	fail := func(ms float64, et string) schemas.Event {
		ev := call(ms)
		ev.Error, ev.ErrorType = true, []byte(et)
		return ev
	}
	llm := func(in, out int64, cost float64) schemas.Event {
		ev := call(100)
		ev.InputTokens, ev.OutputTokens, ev.CostUSD, ev.HasCost = in, out, cost, true
		return ev
	}
	var tools []schemas.Event
	for i := range 100 {
		tools = append(tools, call(float64(i+1)))
	}
	tools = append(tools, fail(1000, "timeout"), fail(1000, "timeout"), fail(5, "weird"))
	c := window.Closed{
		Rollout:    "travel-agent",
		ErrorTypes: []string{window.OtherName, "timeout", "rate_limit"},
		Series: []window.Series{
			{Version: "1.4.0", Segment: window.Segment{Kind: schemas.KindTool, Name: "get_weather"}, Agg: agg(tools...)},
			{Version: "1.5.0", Segment: window.Segment{Kind: schemas.KindLLM, Name: `gpt-4o "mini"`},
				Agg: agg(llm(1000, 200, 0.01), llm(3000, 100, 0.02), fail(50, "rate_limit"))},
			// Not a tool or model: no series.
			{Version: "1.4.0", Segment: window.Segment{Kind: schemas.KindAgent, Name: "travel-agent"}, Agg: agg(call(900))},
			{Version: "1.4.0", Segment: window.Segment{Kind: schemas.KindOther, Name: "POST /chat"}, Agg: agg(call(900))},
		},
	}
	ms := metrics.NewSet()
	lat := newLatencyHistograms()
	ms.RegisterMetricsWriter(lat.writeTo)
	exportWindowSeries(ms, lat, c)
	exportWindowSeries(ms, lat, c) // counters and histograms add up over windows
	var buf bytes.Buffer
	ms.WritePrometheus(&buf)
	got := buf.String()

	tool := `rollout="travel-agent",version="1.4.0",kind="tool",name="get_weather"`
	model := `rollout="travel-agent",version="1.5.0",kind="llm",name="gpt-4o \"mini\""`
	for _, want := range []string{
		`canaryd_agent_calls_total{` + tool + `} 206`,
		`canaryd_agent_errors_total{` + tool + `,error_type="timeout"} 4`,
		`canaryd_agent_errors_total{` + tool + `,error_type="_other"} 2`,
		`canaryd_agent_calls_total{` + model + `} 6`,
		`canaryd_agent_errors_total{` + model + `,error_type="rate_limit"} 2`,
		`canaryd_agent_tokens_total{` + model + `,direction="input"} 8000`,
		`canaryd_agent_tokens_total{` + model + `,direction="output"} 600`,
		`canaryd_agent_cost_usd_total{` + model + `} 0.06`,
	} {
		if !strings.Contains(got, want+"\n") {
			t.Errorf("missing %s\ngot:\n%s", want, got)
		}
	}
	// Latency histograms in seconds, per segment of any request kind:
	// 1..100 ms, 5 ms and 2×1000 ms per window, the buckets checked away
	// from those values (a sketch bucket's value is within 1% of them).
	other := `rollout="travel-agent",version="1.4.0",kind="other",name="POST /chat"`
	for _, want := range []string{
		`canaryd_latency_seconds_bucket{` + tool + `,le="0.25"} 202`,
		`canaryd_latency_seconds_bucket{` + tool + `,le="2.5"} 206`,
		`canaryd_latency_seconds_bucket{` + tool + `,le="+Inf"} 206`,
		`canaryd_latency_seconds_count{` + tool + `} 206`,
		`canaryd_latency_seconds_bucket{` + other + `,le="0.5"} 0`,
		`canaryd_latency_seconds_bucket{` + other + `,le="1"} 2`,
		`canaryd_requests_total{rollout="travel-agent",version="1.4.0"} 208`,
		`canaryd_errors_total{rollout="travel-agent",version="1.4.0"} 6`,
		`canaryd_requests_total{rollout="travel-agent",version="1.5.0"} 6`,
	} {
		if !strings.Contains(got, want+"\n") {
			t.Errorf("missing %s\ngot:\n%s", want, got)
		}
	}
	if i := strings.Index(got, `canaryd_latency_seconds_sum{`+tool+`} `); i < 0 {
		t.Errorf("no latency sum of the tool")
	} else {
		var v float64
		fmt.Sscan(got[i+len(`canaryd_latency_seconds_sum{`+tool+`} `):], &v)
		if want := 2 * (5050 + 2005) / 1000.0; math.Abs(v-want) > 0.01*want {
			t.Errorf("latency sum %v s; want %v ±1%%", v, want)
		}
	}
	for _, notWant := range []string{`kind="agent"`, `agent_calls_total{` + other, `tokens_total{` + tool, `_ms`} {
		if strings.Contains(got, notWant) {
			t.Errorf("exposition has %s; want none:\n%s", notWant, got)
		}
	}
	if err := metrics.ValidateMetric(`x{` + model + `}`); err != nil {
		t.Errorf("label quoting: %v", err)
	}
}

// TestNewWiresModelsAndTraceIndex: with a model table and both OTLP topics,
// New wraps the decoders and shares a trace index (their metrics appear).
func TestNewWiresModelsAndTraceIndex(t *testing.T) {
	ss, err := detector.ParseSpecs("test.yaml", []byte("rollout: r\nbaseline: v1\ncanary: v2\nsteps:\n  - {weight: 100}\n"))
	if err != nil {
		t.Fatal(err)
	}
	models, err := stream.ParseModelTable("models.yaml", []byte("models:\n  - name: gpt-4o*\n    context_limit: 128000\n"))
	if err != nil {
		t.Fatal(err)
	}
	ms := metrics.NewSet()
	d, err := New(Config{
		Brokers: []string{"127.0.0.1:1"}, Specs: ss, Metrics: ms, Models: models,
		OTLPSpansTopic: "otlp_spans", OTLPLogsTopic: "otlp_logs",
	})
	if err != nil {
		t.Fatal(err)
	}
	d.consumer.Client().Close()
	d.producer.Close()
	var buf bytes.Buffer
	ms.WritePrometheus(&buf)
	for _, want := range []string{"canaryd_models_cost_filled_total", "canaryd_otlp_trace_index_traces", `canaryd_otlp_trace_joins_total{result="joined"}`} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// BenchmarkLatencyAdd: the cost of putting a window's latency sketch into
// canaryd_latency_seconds, per event of the window.
func BenchmarkLatencyAdd(b *testing.B) {
	a := window.NewAgg()
	const n = 1000
	for i := range n {
		ev := schemas.Event{DurationMS: float64(1 + i%997*7), HasDuration: true}
		a.Add(&ev, 0)
	}
	lat := newLatencyHistograms()
	b.ReportAllocs()
	for b.Loop() {
		lat.add(`rollout="r"`, a.Latency)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/event")
}

// TestLatencyHistogramsMatchPrometheusHistogram checks the bulk histogram
// against the plain reference: metrics.PrometheusHistogram given one
// Update per event at its sketch bin's value. Same buckets, same count,
// the same sum within rounding.
func TestLatencyHistogramsMatchPrometheusHistogram(t *testing.T) {
	a := window.NewAgg()
	rng := rand.New(rand.NewPCG(1, 2))
	for range 20000 {
		ev := schemas.Event{DurationMS: math.Exp(rng.NormFloat64()*2 + 5), HasDuration: true}
		if rng.IntN(100) == 0 {
			ev.DurationMS = 0
		}
		a.Add(&ev, 0)
	}
	for _, ms := range []float64{5, 10, 1000, 120_000, 500_000} { // on and beyond the bounds
		ev := schemas.Event{DurationMS: ms, HasDuration: true}
		a.Add(&ev, 0)
	}
	lat := newLatencyHistograms()
	lat.add(`rollout="r"`, a.Latency)
	var got strings.Builder
	lat.writeTo(&got)

	ref := metrics.NewSet()
	h := ref.GetOrCreatePrometheusHistogramExt(`canaryd_latency_seconds{rollout="r"}`, LatencyBuckets[:])
	for range int(a.Latency.GetZeroCount()) {
		h.Update(0)
	}
	a.Latency.GetPositiveValueStore().ForEach(func(i int, n float64) bool {
		for range int(n) {
			h.Update(window.Mapping.Value(i) / 1000)
		}
		return false
	})
	var want strings.Builder
	ref.WritePrometheus(&want)
	lines := func(s string) (buckets []string, sum float64) {
		for l := range strings.Lines(s) {
			switch {
			case strings.HasPrefix(l, "#"):
			case strings.Contains(l, "_sum{"):
				fmt.Sscan(l[strings.LastIndexByte(l, ' ')+1:], &sum)
			default:
				buckets = append(buckets, l)
			}
		}
		return buckets, sum
	}
	gb, gs := lines(got.String())
	wb, ws := lines(want.String())
	if !slices.Equal(gb, wb) {
		t.Errorf("buckets:\n%s\nwant (PrometheusHistogram):\n%s", strings.Join(gb, ""), strings.Join(wb, ""))
	}
	if math.Abs(gs-ws) > 1e-9*ws {
		t.Errorf("sum %v; want %v", gs, ws)
	}
	if len(gb) != len(LatencyBuckets)+2 {
		t.Errorf("%d bucket and count lines; want %d", len(gb), len(LatencyBuckets)+2)
	}
}
