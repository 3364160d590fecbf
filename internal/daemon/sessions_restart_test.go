package daemon_test

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/inferensys/canaryd/internal/daemon"
	"github.com/inferensys/canaryd/internal/kafkatest"
)

// otlpSpan is one span of otlpTraces: kind is the gen_ai.operation.name.
type otlpSpan struct {
	trace, id, parent string
	op, name          string
	start, end        time.Time
	failed            bool
}

// otlpTraces returns OTLP/JSON records of n agent sessions of rollout
// "otlp-agent" (20% on v2, whose tool calls fail more and loop), each trace
// spread over three records — two with some tool and chat spans, the last
// with the rest and the root agent span — and the records of different
// traces interleaved, as the Collector's exporter batches spans as they end.
func otlpTraces(n int, t0 time.Time) [][]byte {
	rng := rand.New(rand.NewPCG(8, 9))
	type rec struct {
		version string
		spans   []otlpSpan
	}
	var recs []rec
	tools := []string{"search_docs", "run_sql", "calc"}
	for i := range n {
		v := "v1"
		if rng.IntN(5) == 0 {
			v = "v2"
		}
		trace := fmt.Sprintf("%032x", 0x1000+i)
		root := fmt.Sprintf("%016x", 0xa000+i)
		base := t0.Add(time.Duration(i) * 100 * time.Millisecond)
		var spans []otlpSpan
		for k := range 2 + rng.IntN(5) {
			tool := tools[rng.IntN(3)]
			if v == "v2" && k > 0 && rng.IntN(3) == 0 {
				tool = spans[len(spans)-1].name // a loop
			}
			s := base.Add(time.Duration(k) * 200 * time.Millisecond)
			spans = append(spans,
				otlpSpan{trace: trace, id: fmt.Sprintf("%016x", 0x100000+i*64+2*k), parent: root, op: "chat", name: "gpt-4o",
					start: s, end: s.Add(80 * time.Millisecond)},
				otlpSpan{trace: trace, id: fmt.Sprintf("%016x", 0x100000+i*64+2*k+1), parent: root, op: "execute_tool", name: tool,
					start: s.Add(90 * time.Millisecond), end: s.Add(190 * time.Millisecond), failed: rng.Float64() < map[string]float64{"v1": 0.02, "v2": 0.08}[v]})
		}
		end := spans[len(spans)-1].end.Add(10 * time.Millisecond)
		agent := otlpSpan{trace: trace, id: root, op: "invoke_agent", name: "support", start: base, end: end}
		cut1, cut2 := len(spans)/3, 2*len(spans)/3
		recs = append(recs, rec{v, spans[:cut1]}, rec{v, spans[cut1:cut2]}, rec{v, append(spans[cut2:], agent)})
	}
	// Interleave: each trace's three records keep their order, spread over
	// the next few positions.
	out := make([][]byte, 0, len(recs))
	var pending []rec
	for i := 0; i < len(recs); i += 3 {
		pending = append(pending, recs[i:i+3]...)
		for len(pending) > 6 || (i+3 >= len(recs) && len(pending) > 0) {
			j := 0
			for j < len(pending)-1 && rng.IntN(2) == 0 && pending[j+1].spans[0].trace != pending[j].spans[0].trace {
				j++
			}
			// Take the first record of the chosen trace (order within a trace).
			tr := pending[j].spans[0].trace
			k := slices.IndexFunc(pending, func(r rec) bool { return len(r.spans) > 0 && r.spans[0].trace == tr })
			out = append(out, otlpJSON(pending[k].version, pending[k].spans))
			pending = slices.Delete(pending, k, k+1)
		}
	}
	return out
}

func otlpJSON(version string, spans []otlpSpan) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, `{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"otlp-agent"}},{"key":"service.version","value":{"stringValue":%q}}]},"scopeSpans":[{"scope":{"name":"test"},"spans":[`, version)
	for i, s := range spans {
		if i > 0 {
			b.WriteByte(',')
		}
		parent := ""
		if s.parent != "" {
			parent = fmt.Sprintf(`"parentSpanId":%q,`, s.parent)
		}
		nameKey := map[string]string{"chat": "gen_ai.request.model", "execute_tool": "gen_ai.tool.name", "invoke_agent": "agent.name"}[s.op] // not gen_ai.agent.name: the default rollout rule reads it first
		status := ""
		if s.failed {
			status = `,"status":{"code":2}`
		}
		fmt.Fprintf(&b, `{"traceId":%q,"spanId":%q,%s"name":"%s %s","kind":3,"startTimeUnixNano":"%d","endTimeUnixNano":"%d","attributes":[{"key":"gen_ai.operation.name","value":{"stringValue":%q}},{"key":%q,"value":{"stringValue":%q}}]%s}`,
			s.trace, s.id, parent, s.op, s.name, s.start.UnixNano(), s.end.UnixNano(), s.op, nameKey, s.name, status)
	}
	b.WriteString(`]}]}]}`)
	return []byte(b.String())
}

// TestSessionsAcrossRestart stops canaryd while sessions are in flight —
// traces whose spans span several records, their root span not yet read —
// and starts it again on the same state directory. The checkpoint records
// where to read from (the oldest record session assembly still held); the
// restarted canaryd decodes those records again with their events dropped,
// so the sessions in flight are assembled whole. Its session totals and
// aggregate digests (tool-call sequences, loops, outcomes) equal those of
// one uninterrupted run.
func TestSessionsAcrossRestart(t *testing.T) {
	t.Parallel()
	for _, kind := range kafkatest.Kinds() {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			brokers := kafkatest.Brokers(t, kind)
			tp := newTopics(t)
			spans := tp.events + ".otlp"
			kafkatest.CreateTopics(t, brokers, 1, spans)
			specs := `rollout: otlp-agent
baseline: v1
canary: v2
steps: [{weight: 20, min_duration: 1h}, {weight: 100}]
`
			t0 := time.Now().Add(-2 * time.Hour).Truncate(time.Second)
			recs := otlpTraces(600, t0)
			produce := func(vals [][]byte) map[int32]int64 {
				var rs []*kgo.Record
				for _, v := range vals {
					rs = append(rs, &kgo.Record{Topic: spans, Partition: 0, Value: v})
				}
				return produceRecords(t, brokers, rs)
			}
			config := func(name, group, control, dir string) daemon.Config {
				cfg := testConfig(t, brokers, tp, specs)
				cfg.Group, cfg.ControlTopic, cfg.StateDir, cfg.StateTopic = group, control, dir, tp.events+".state"
				cfg.OTLPSpansTopic, cfg.OTLPEncoding = spans, "otlp_json"
				cfg.Window.Lateness = 2 * time.Second
				cfg.Logger = testLogger(t, name)
				return cfg
			}
			consumed := func(in *instance, n int) func() bool {
				return func() bool {
					return in.metric("canaryd_records_total")-in.metric("canaryd_records_replayed_total") >= float64(n) && in.metric("canaryd_consumer_lag") == 0
				}
			}
			closing := otlpJSON("v1", []otlpSpan{{trace: fmt.Sprintf("%032x", 0xffff), id: fmt.Sprintf("%016x", 0xffff), op: "chat", name: "close",
				start: t0.Add(2 * time.Hour), end: t0.Add(2*time.Hour + time.Millisecond)}})
			closing = []byte(strings.Replace(string(closing), `"otlp-agent"`, `"zz-close"`, 1))

			// The restarted run: a reads half, stops; b continues on a's disk.
			group, dir := tp.events+".restart", t.TempDir()
			half := len(recs) / 2
			produce(recs[:half])
			a := runDaemon(t, config("a", group, tp.control, dir))
			waitFor(t, time.Minute, "a consumed the first half", consumed(a, half))
			if err := a.stop(t); err != nil {
				t.Fatalf("a: %v", err)
			}
			// As many closing records as the watermark's quorum (3).
			produce(append(slices.Clone(recs[half:]), closing, closing, closing))
			b := runDaemon(t, config("b", group, tp.control, dir))
			waitFor(t, time.Minute, "b consumed the rest", consumed(b, len(recs)+3-half))
			replayed := b.metric("canaryd_records_replayed_total")

			// The reference: one run over everything, beside b.
			ref := runDaemon(t, config("ref", tp.events+".ref", tp.control+".ref", t.TempDir()))
			waitFor(t, time.Minute, "the reference consumed everything", consumed(ref, len(recs)+3))
			// Both have read every record, the closing one included, so
			// their totals are final (the lag gauge is set after a batch's
			// windows are closed and judged); poll rather than read once, in
			// case a judge lags its partition.
			var got, want map[string]string
			deadline := time.Now().Add(30 * time.Second)
			for {
				got, want = totalsOf(b.d), totalsOf(ref.d)
				if len(want) == 2 && maps.Equal(got, want) || time.Now().After(deadline) {
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
			if err := b.stop(t); err != nil {
				t.Fatalf("b: %v", err)
			}
			if err := ref.stop(t); err != nil {
				t.Fatalf("ref: %v", err)
			}
			t.Logf("b decoded %v records again to rebuild the sessions in flight", replayed)
			if replayed == 0 {
				t.Errorf("no record replayed: no session was in flight at the stop, the test checks nothing")
			}
			if len(want) != 2 {
				t.Fatalf("reference totals %v", want)
			}
			for _, k := range slices.Sorted(maps.Keys(want)) {
				t.Logf("%s: %s", k, want[k])
				if got[k] != want[k] {
					t.Errorf("%s after a restart with sessions in flight:\n  got  %s\n  want %s", k, got[k], want[k])
				}
			}
		})
	}
}
