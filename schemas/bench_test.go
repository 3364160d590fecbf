package schemas

import "testing"

// benchRecords is a realistic mix as agent platforms write it: LLM and tool
// spans, an agent step with its tool calls and outcome, an error, RFC 3339 and
// integer times, and fields the decoder skips. 385 bytes on average.
var benchRecords = [][]byte{
	[]byte(`{"rollout":"support-agent","version":"v42","kind":"llm","name":"gpt-4o-mini","ts":"2025-11-25T18:34:12.123456Z","duration_ms":812.5,"status":"ok","input_tokens":1843,"output_tokens":212,"cost_usd":0.000404,"context_tokens":2055,"context_limit":128000,"trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","span_id":"00f067aa0ba902b7","parent_span_id":"a3ce929d0e0e4736","session_id":"sess-8f14e45f","deployment_id":"support-agent-7d9c6","commit":"3f2c1ab"}`),
	[]byte(`{"rollout":"support-agent","version":"v42","kind":"tool","name":"search_orders","ts":1764095652123456789,"duration_ms":48.2,"status":"ok","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","span_id":"b7ad6b7169203331","parent_span_id":"00f067aa0ba902b7","session_id":"sess-8f14e45f","attrs":{"region":"eu-west-1","tenant":"acme"}}`),
	[]byte(`{"rollout":"support-agent","version":"v43","kind":"agent","name":"resolve_ticket","ts":"2025-11-25T19:34:13.5+01:00","duration_ms":5120,"status":"ok","input_tokens":6120,"output_tokens":844,"cost_usd":0.0021,"trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","span_id":"a3ce929d0e0e4736","session_id":"sess-8f14e45f","tool_calls":["search_orders","get_order","refund","send_email"],"outcome":{"success":true,"score":0.92,"hallucination":false},"sdk":"openinference"}`),
	[]byte(`{"rollout":"support-agent","version":"v43","kind":"llm","name":"gpt-4o-mini","ts":1764095653000000000,"duration_ms":30000,"status":"error","error_type":"timeout","input_tokens":2210,"trace_id":"0af7651916cd43dd8448eb211c80319c","span_id":"b9c7c989f97918e1","session_id":"sess-c9f0f895"}`),
}

func benchBytes() int64 {
	n := 0
	for _, r := range benchRecords {
		n += len(r)
	}
	return int64(n / len(benchRecords))
}

// BenchmarkDecode measures Decode on benchRecords, one Decoder and one Event
// reused as a partition goroutine does. Run with -cpu=1 for the one-core rate.
func BenchmarkDecode(b *testing.B) {
	var d Decoder
	var ev Event
	for _, r := range benchRecords {
		if err := d.Decode(r, &ev); err != nil {
			b.Fatalf("Decode(%s): %v", r, err)
		}
	}
	b.SetBytes(benchBytes())
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if err := d.Decode(benchRecords[i%len(benchRecords)], &ev); err != nil {
			b.Fatal(err)
		}
		i++
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkAppendEvent measures the encoder the load generator uses.
func BenchmarkAppendEvent(b *testing.B) {
	evs := make([]Event, len(benchRecords))
	size := 0
	for i, r := range benchRecords {
		// One Decoder per event, since an Event points into its decoder.
		if err := new(Decoder).Decode(r, &evs[i]); err != nil {
			b.Fatal(err)
		}
		size += len(AppendEvent(nil, &evs[i]))
	}
	b.SetBytes(int64(size / len(evs)))
	b.ReportAllocs()
	buf := make([]byte, 0, 4096)
	i := 0
	for b.Loop() {
		buf = AppendEvent(buf[:0], &evs[i%len(evs)])
		i++
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}
