package stream

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"

	"github.com/VictoriaMetrics/metrics"

	"github.com/inferensys/canaryd/schemas"
)

// logsJSON builds an OTLP/JSON logs record of one resource.
func logsJSON(resAttrs string, records ...string) []byte {
	return []byte(`{"resourceLogs":[{"resource":{"attributes":[` + resAttrs + `]},"scopeLogs":[{"logRecords":[` +
		strings.Join(records, ",") + `]}]}]}`)
}

// evalLog is a gen_ai.evaluation.result log record; traceID may be empty.
func evalLog(traceID, name string, score float64, attrs ...string) string {
	ids := ""
	if traceID != "" {
		ids = `"traceId":"` + traceID + `","spanId":"00f067aa0ba902b7",`
	}
	attrs = append([]string{strAttr("gen_ai.evaluation.name", name), fmt.Sprintf(`{"key":"gen_ai.evaluation.score.value","value":{"doubleValue":%g}}`, score)}, attrs...)
	return `{"timeUnixNano":"1764095660000000000",` + ids + `"eventName":"gen_ai.evaluation.result","attributes":[` + strings.Join(attrs, ",") + `]}`
}

// TestTraceIndexJoin: spans (protobuf) then evaluation logs (JSON) that
// name only their trace: the evaluations join the spans' rollout and
// version; an unknown trace or none stays unknown.
func TestTraceIndexJoin(t *testing.T) {
	set := metrics.NewSet()
	idx := NewTraceIndex(16, set)
	spans := OTLPTraces(OTLPConfig{Traces: idx, Metrics: set})()
	// Two execute_tool spans of trace 5b8e…, weather-agent 1.5.0-rc.1.
	if _, err := decode(spans, readFixture(t, "genai-execute-tool-span.otlp.pb")); err != nil {
		t.Fatal(err)
	}
	if idx.Len() != 1 {
		t.Fatalf("index holds %d traces; want 1", idx.Len())
	}
	// The evaluator runs as a service of its own, without a version.
	evaluator := strAttr("service.name", "evaluator")
	logs := OTLPLogs(OTLPConfig{Encoding: EncodingOTLPJSON, Traces: idx, Metrics: set})()
	got, err := decode(logs, logsJSON(evaluator,
		evalLog("5B8EFFF798038103D269B633813FC60C", "relevance", 0.9), // upper-case hex is the same trace
		evalLog("0123456789abcdef0123456789abcdef", "relevance", 0.4),
		evalLog("", "relevance", 0.5),
		// A version of its own wins: no lookup. (service.version on the
		// record would not count: the default rule reads it on the resource.)
		evalLog("5b8efff798038103d269b633813fc60c", "relevance", 0.7, strAttr("gen_ai.agent.version", "9.9")),
	))
	if err != nil {
		t.Fatal(err)
	}
	type rv struct{ rollout, version string }
	want := []rv{{"weather-agent", "1.5.0-rc.1"}, {"evaluator", "unknown"}, {"evaluator", "unknown"}, {"evaluator", "9.9"}}
	if len(got) != len(want) {
		t.Fatalf("got %d events; want %d", len(got), len(want))
	}
	for i, w := range want {
		if g := (rv{got[i].Rollout, got[i].Version}); g != w || got[i].Kind != "eval" {
			t.Errorf("event %d: %s %+v; want eval %+v", i, got[i].Kind, g, w)
		}
	}
	for name, want := range map[string]uint64{
		`canaryd_otlp_trace_joins_total{result="joined"}`:                 1,
		`canaryd_otlp_trace_joins_total{result="unknown_trace"}`:          1,
		`canaryd_otlp_trace_joins_total{result="no_trace_id"}`:            1,
		`canaryd_otlp_unattributed_total{signal="logs",field="version"}`:  2,
		`canaryd_otlp_unattributed_total{signal="spans",field="version"}`: 0,
		`canaryd_otlp_trace_index_evictions_total`:                        0,
		`canaryd_otlp_unattributed_total{signal="logs",field="rollout"}`:  0,
	} {
		if n := set.GetOrCreateCounter(name).Get(); n != want {
			t.Errorf("%s = %d; want %d", name, n, want)
		}
	}

	// TraceFirst: the trace wins over the record's own version.
	first := OTLPLogs(OTLPConfig{Encoding: EncodingOTLPJSON, Traces: idx, TraceFirst: true})()
	got, err = decode(first, logsJSON(evaluator+","+strAttr("service.version", "9.9"),
		evalLog("5b8efff798038103d269b633813fc60c", "relevance", 0.7),
		evalLog("0123456789abcdef0123456789abcdef", "relevance", 0.4)))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Rollout != "weather-agent" || got[0].Version != "1.5.0-rc.1" ||
		got[1].Rollout != "evaluator" || got[1].Version != "9.9" {
		t.Errorf("TraceFirst: %+v", got)
	}

	// Without an index, no join.
	got, err = decode(OTLPLogs(OTLPConfig{Encoding: EncodingOTLPJSON})(), logsJSON(evaluator, evalLog("5b8efff798038103d269b633813fc60c", "relevance", 0.9)))
	if err != nil || len(got) != 1 || got[0].Version != "unknown" {
		t.Errorf("no index: %+v, %v", got, err)
	}
}

// TestTraceIndexPairs: spans filed under unknown are not
// indexed, and the agent span's pair wins over its children's.
func TestTraceIndexPairs(t *testing.T) {
	idx := NewTraceIndex(8, nil)
	tr := []byte("4bf92f3577b34da6a3ce929d0e0e4736")
	ev := func(kind schemas.Kind, r, v string) schemas.Event {
		return schemas.Event{Kind: kind, Rollout: []byte(r), Version: []byte(v), TraceID: tr}
	}
	unknown := []byte("unknown")
	lookup := func() string {
		r, v, ok := idx.Lookup(tr)
		if !ok {
			return ""
		}
		return string(r) + "@" + string(v)
	}
	idx.putSpans([]schemas.Event{ev(schemas.KindLLM, "svc", "unknown"), ev(schemas.KindEval, "svc", "1")}, unknown)
	if got := lookup(); got != "" {
		t.Fatalf("unattributed and eval events indexed: %s", got)
	}
	// Children first, then the agent span: the agent's pair.
	idx.putSpans([]schemas.Event{ev(schemas.KindLLM, "svc", "1"), ev(schemas.KindTool, "svc", "1"), ev(schemas.KindAgent, "agent", "1")}, unknown)
	if got := lookup(); got != "agent@1" {
		t.Fatalf("got %s; want agent@1", got)
	}
	// A later child span does not displace it; a later agent span does.
	idx.putSpans([]schemas.Event{ev(schemas.KindLLM, "svc", "2")}, unknown)
	if got := lookup(); got != "agent@1" {
		t.Fatalf("got %s; want agent@1", got)
	}
	idx.putSpans([]schemas.Event{ev(schemas.KindTask, "agent", "2")}, unknown)
	if got := lookup(); got != "agent@2" {
		t.Fatalf("got %s; want agent@2", got)
	}
	for _, bad := range []string{"", "4bf92f35", strings.Repeat("g", 32)} {
		if _, _, ok := idx.Lookup([]byte(bad)); ok {
			t.Errorf("Lookup(%q) found", bad)
		}
	}
}

// TestTraceIndexLRU checks the index against a simple model under random
// puts and lookups with a small capacity (many evictions and table
// deletions).
func TestTraceIndexLRU(t *testing.T) {
	set := metrics.NewSet()
	const capacity = 37
	idx := NewTraceIndex(capacity, set)
	var order []string           // model LRU: most recent last
	model := map[string]string{} // trace → version
	touch := func(k string) {
		for i, o := range order {
			if o == k {
				order = append(order[:i], order[i+1:]...)
				break
			}
		}
		order = append(order, k)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	evictions := 0
	for i := range 20000 {
		tr := fmt.Sprintf("%032x", rng.IntN(100))
		if rng.IntN(3) == 0 {
			r, v, ok := idx.Lookup([]byte(tr))
			want, wok := model[tr]
			if ok != wok || ok && (string(r) != "agent" || string(v) != want) {
				t.Fatalf("op %d: Lookup(%s) = %s %s %v; want %s %v", i, tr, r, v, ok, want, wok)
			}
			if ok {
				touch(tr)
			}
			continue
		}
		v := fmt.Sprint(rng.IntN(5))
		idx.putSpans([]schemas.Event{{Kind: schemas.KindAgent, Rollout: []byte("agent"), Version: []byte(v), TraceID: []byte(tr)}}, []byte("unknown"))
		if _, ok := model[tr]; !ok && len(model) == capacity {
			delete(model, order[0])
			order = order[1:]
			evictions++
		}
		model[tr] = v
		touch(tr)
		if idx.Len() != len(model) {
			t.Fatalf("op %d: Len %d; want %d", i, idx.Len(), len(model))
		}
	}
	if n := set.GetOrCreateCounter("canaryd_otlp_trace_index_evictions_total").Get(); n != uint64(evictions) || evictions == 0 {
		t.Errorf("evictions = %d; want %d (> 0)", n, evictions)
	}
}

// TestTraceIndexPairLimit: at most maxTracePairs distinct pairs; pairs no
// trace refers to any more are reclaimed when room is needed.
func TestTraceIndexPairLimit(t *testing.T) {
	set := metrics.NewSet()
	idx := NewTraceIndex(maxTracePairs, set)
	put := func(trace, version int) {
		idx.putSpans([]schemas.Event{{Kind: schemas.KindLLM, Rollout: []byte("r"), Version: []byte(fmt.Sprint(version)),
			TraceID: []byte(fmt.Sprintf("%032x", trace))}}, []byte("unknown"))
	}
	for i := range maxTracePairs {
		put(i, i)
	}
	// Full of traces, each with its own pair: a new trace evicts the
	// oldest, whose pair is then free for reuse.
	put(maxTracePairs, maxTracePairs)
	if n := set.GetOrCreateCounter("canaryd_otlp_trace_index_dropped_total").Get(); n != 0 {
		t.Errorf("dropped = %d; want 0", n)
	}
	if _, v, ok := idx.Lookup([]byte(fmt.Sprintf("%032x", maxTracePairs))); !ok || string(v) != fmt.Sprint(maxTracePairs) {
		t.Errorf("new trace: %s %v", v, ok)
	}
	if _, _, ok := idx.Lookup([]byte(fmt.Sprintf("%032x", 0))); ok {
		t.Errorf("oldest trace not evicted")
	}
	// Re-filing a held trace under a new pair while every pair is in use
	// keeps the old one and counts the drop.
	put(1, maxTracePairs+1)
	if n := set.GetOrCreateCounter("canaryd_otlp_trace_index_dropped_total").Get(); n != 1 {
		t.Errorf("dropped = %d; want 1", n)
	}
	if _, v, _ := idx.Lookup([]byte(fmt.Sprintf("%032x", 1))); string(v) != "1" {
		t.Errorf("trace 1 version %s; want 1", v)
	}
}

// TestTraceIndexConcurrent: spans decoders of several partitions fill the
// index while logs decoders read it (run with -race).
func TestTraceIndexConcurrent(t *testing.T) {
	idx := NewTraceIndex(64, nil)
	rec := readFixture(t, "bench-genai-50.otlp.pb")
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			d := OTLPTraces(OTLPConfig{Traces: idx})()
			for range 200 {
				if err := d.Decode(rec, func(*schemas.Event) {}); err != nil {
					t.Error(err)
					return
				}
			}
		})
		wg.Go(func() {
			d := OTLPLogs(OTLPConfig{Encoding: EncodingOTLPJSON, Traces: idx})()
			r := logsJSON(strAttr("service.name", "evaluator"), evalLog("4bf92f3577b34da6a3ce929d0e0e4736", "x", 1))
			for range 200 {
				if err := d.Decode(r, func(*schemas.Event) {}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if idx.Len() != 10 {
		t.Errorf("index holds %d traces; want the bench record's 10", idx.Len())
	}
}

// TestTraceIndexAllocs: indexing spans and joining evaluations allocate
// nothing once warm.
func TestTraceIndexAllocs(t *testing.T) {
	idx := NewTraceIndex(1024, nil)
	rec := readFixture(t, "bench-genai-50.otlp.pb")
	spans := OTLPTraces(OTLPConfig{Traces: idx})()
	logs := OTLPLogs(OTLPConfig{Encoding: EncodingOTLPJSON, Traces: idx})()
	var trace []byte
	emit := func(e *schemas.Event) {
		if trace == nil {
			trace = append([]byte(nil), e.TraceID...)
		}
	}
	_ = spans.Decode(rec, emit)
	lrec := logsJSON(strAttr("service.name", "evaluator"), evalLog(string(trace), "x", 1))
	joined := false
	lemit := func(e *schemas.Event) { joined = string(e.Version) != "unknown" }
	_ = logs.Decode(lrec, lemit)
	if !joined {
		t.Fatalf("evaluation of trace %s not joined", trace)
	}
	if n := testing.AllocsPerRun(100, func() {
		_ = spans.Decode(rec, emit)
		_ = logs.Decode(lrec, lemit)
	}); n > 0 {
		t.Fatalf("%v allocations per pair of records; want 0", n)
	}
}

// BenchmarkOTLPProtoTraceIndex is BenchmarkOTLPProto filling a trace index.
func BenchmarkOTLPProtoTraceIndex(b *testing.B) {
	rec := readFixture(b, "bench-genai-50.otlp.pb")
	benchDecode(b, OTLPTraces(OTLPConfig{Traces: NewTraceIndex(DefaultTraceIndexCapacity, nil)})(), rec)
}
