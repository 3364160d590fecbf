package stream

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/inferensys/canaryd/schemas"
)

// The OTLP benchmarks decode testdata/otlp/bench-genai-50.otlp: one record
// of 50 GenAI spans (10 agent turns of invoke_agent, 2 chat, 2 execute_tool;
// 10–16 attributes each, 12 resource attributes), as the Collector's Kafka
// exporter batches them. BenchmarkJSONPath decodes the same 50 events as
// canaryd's own JSON events, one per record, so that events/s compare. Run
// them together, on one core:
//
//	go test -run '^$' -bench 'OTLP|JSONPath' -cpu 1 ./stream/

func benchOTLP(b *testing.B, enc string, rec []byte) {
	benchDecode(b, OTLPTraces(OTLPConfig{Encoding: enc})(), rec)
}

// benchDecode measures d on one record decoded over and over, in bytes/s
// and events/s.
func benchDecode(b *testing.B, d Decoder, rec []byte) {
	n := 0
	emit := func(*schemas.Event) { n++ }
	if err := d.Decode(rec, emit); err != nil {
		b.Fatal(err)
	}
	perRecord := n
	b.SetBytes(int64(len(rec)))
	b.ReportAllocs()
	for b.Loop() {
		if err := d.Decode(rec, emit); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(perRecord)*float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkOTLPProto measures otlp_proto, the Collector's default encoding.
func BenchmarkOTLPProto(b *testing.B) {
	benchOTLP(b, EncodingOTLPProto, readFixture(b, "bench-genai-50.otlp.pb"))
}

// BenchmarkOTLPJSON measures otlp_json on the same record, compact as the
// exporter writes it.
func BenchmarkOTLPJSON(b *testing.B) {
	var rec bytes.Buffer
	if err := json.Compact(&rec, readFixture(b, "bench-genai-50.otlp.json")); err != nil {
		b.Fatal(err)
	}
	benchOTLP(b, EncodingOTLPJSON, rec.Bytes())
}

// BenchmarkJSONPath measures JSONDecoder on the bench record's 50 events
// encoded as agent events v1, one record each.
func BenchmarkJSONPath(b *testing.B) {
	var recs [][]byte
	err := OTLPTraces(OTLPConfig{})().Decode(readFixture(b, "bench-genai-50.otlp.pb"), func(e *schemas.Event) {
		recs = append(recs, schemas.AppendEvent(nil, e))
	})
	if err != nil {
		b.Fatal(err)
	}
	size := 0
	for _, r := range recs {
		size += len(r)
	}
	d := JSONDecoder()
	emit := func(*schemas.Event) {}
	for _, r := range recs {
		if err := d.Decode(r, emit); err != nil {
			b.Fatalf("%s: %v", r, err)
		}
	}
	b.SetBytes(int64(size / len(recs)))
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if err := d.Decode(recs[i%len(recs)], emit); err != nil {
			b.Fatal(err)
		}
		i++
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}
