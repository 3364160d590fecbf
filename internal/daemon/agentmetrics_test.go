package daemon

import (
	"bytes"
	"strings"
	"testing"

	"github.com/VictoriaMetrics/metrics"

	"github.com/inferensys/canaryd/detector"
	"github.com/inferensys/canaryd/schemas"
	"github.com/inferensys/canaryd/stream"
	"github.com/inferensys/canaryd/window"
)

func TestExportAgentSeries(t *testing.T) {
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
	exportAgentSeries(ms, c)
	exportAgentSeries(ms, c) // counters add up over windows; gauges hold the last window
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
	// Quantiles within the sketch's 1% of the exact ones (1..100 ms, then 5, 1000, 1000).
	for _, q := range []struct {
		quantile string
		lo, hi   float64
	}{{"0.5", 50, 53}, {"0.95", 95, 98}, {"0.99", 99, 1011}} {
		name := `canaryd_agent_latency_ms{` + tool + `,quantile="` + q.quantile + `"}`
		v := ms.GetOrCreateGauge(name, nil).Get()
		if v < q.lo || v > q.hi {
			t.Errorf("%s = %v; want in [%v, %v]", name, v, q.lo, q.hi)
		}
	}
	for _, notWant := range []string{`kind="agent"`, `kind="other"`, `tokens_total{` + tool} {
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
