package daemon_test

import (
	"fmt"
	"math"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/inferensys/canaryd/detector"
	"github.com/inferensys/canaryd/internal/daemon"
	"github.com/inferensys/canaryd/internal/kafkatest"
	"github.com/inferensys/canaryd/stream"
)

const evalJoinSpecs = `
rollout: evalagent
baseline: v1
canary: v2
steps:
  - {weight: 20, min_duration: 1h, min_canary_events: 1000000}
  - {weight: 100}
`

// evalJoinSpans is one OTLP/JSON spans record: a chat span of trace i of
// rollout evalagent, version v2 for every fifth trace, else v1.
func evalJoinSpans(i int, rollout, version string, ts time.Time) []byte {
	start := ts.UnixNano()
	return fmt.Appendf(nil, `{"resourceSpans":[{"resource":{"attributes":[`+
		`{"key":"service.name","value":{"stringValue":%q}},{"key":"service.version","value":{"stringValue":%q}}]},`+
		`"scopeSpans":[{"scope":{"name":"test"},"spans":[{"traceId":"%032x","spanId":"%016x","name":"chat gpt-4o","kind":3,`+
		`"startTimeUnixNano":"%d","endTimeUnixNano":"%d","attributes":[`+
		`{"key":"gen_ai.operation.name","value":{"stringValue":"chat"}},{"key":"gen_ai.request.model","value":{"stringValue":"gpt-4o"}},`+
		`{"key":"gen_ai.usage.input_tokens","value":{"intValue":"800"}},{"key":"gen_ai.usage.output_tokens","value":{"intValue":"120"}}],`+
		`"status":{}}]}]}]}`,
		rollout, version, i+1, i+1, start, start+int64(400*time.Millisecond))
}

// evalJoinLog is one OTLP/JSON logs record: a gen_ai.evaluation.result of
// trace i written by an evaluator whose resource names no version. With
// version set, the record names its own (to close windows).
func evalJoinLog(i int, service, version string, score float64, ts time.Time) []byte {
	res := fmt.Sprintf(`{"key":"service.name","value":{"stringValue":%q}}`, service)
	if version != "" {
		res += fmt.Sprintf(`,{"key":"service.version","value":{"stringValue":%q}}`, version)
	}
	return fmt.Appendf(nil, `{"resourceLogs":[{"resource":{"attributes":[%s]},"scopeLogs":[{"scope":{"name":"evaluator"},`+
		`"logRecords":[{"timeUnixNano":"%d","eventName":"gen_ai.evaluation.result","traceId":"%032x","spanId":"%016x",`+
		`"attributes":[{"key":"gen_ai.evaluation.name","value":{"stringValue":"relevance"}},`+
		`{"key":"gen_ai.evaluation.score.value","value":{"doubleValue":%s}}]}]}]}]}`,
		res, ts.UnixNano(), i+1, i+1, strconv.FormatFloat(score, 'f', -1, 64))
}

// TestOTLPLogsTraceJoin: spans of a rollout's two versions on the OTLP
// spans topic, then evaluation log records that carry only their trace id
// (the evaluator's resource has no version) on the OTLP logs topic. canaryd
// joins each evaluation to its trace's version: the judge's eval_score
// evidence counts every evaluation under the version of its trace, with
// that version's scores, and none goes to "unknown".
func TestOTLPLogsTraceJoin(t *testing.T) {
	t.Parallel()
	const (
		traces = 200
		// The canary scores better, so that eval_score's rollback test
		// never ends the rollout before every evaluation is counted.
		scoreV1 = 0.4
		scoreV2 = 0.9
	)
	for _, kind := range kafkatest.Kinds() {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			brokers := kafkatest.Brokers(t, kind)
			tp := newTopics(t)
			spans, logs := tp.events+".otlp_spans", tp.events+".otlp_logs"
			kafkatest.CreateTopics(t, brokers, 3, spans, logs)
			ms := metrics.NewSet()
			// The judge's eval_score evidence counts the evaluations of each
			// version over the rollout; verdicts carry it.
			var (
				mu sync.Mutex
				ev detector.TestEvidence
			)
			startDaemon(t, brokers, tp, evalJoinSpecs, ms, func(c *daemon.Config) {
				c.OTLPSpansTopic, c.OTLPLogsTopic, c.OTLPEncoding = spans, logs, stream.EncodingOTLPJSON
				c.OnVerdict = func(v detector.Verdict, _ bool) {
					for _, e := range v.Tests {
						if v.Rollout == "evalagent" && e.Name == "eval_score" && e.Role == "rollback" {
							mu.Lock()
							ev = e
							mu.Unlock()
						}
					}
				}
			})

			t0 := time.Now().Truncate(time.Second)
			at := func(i int) time.Time { return t0.Add(time.Duration(i) * 10 * time.Millisecond) }
			version := func(i int) string {
				if i%5 == 0 {
					return "v2"
				}
				return "v1"
			}
			var recs []*kgo.Record
			for i := range traces {
				recs = append(recs, &kgo.Record{Topic: spans, Partition: int32(i % 3), Value: evalJoinSpans(i, "evalagent", version(i), at(i))})
			}
			produceRecords(t, brokers, recs)
			// The spans must be indexed before their evaluations are read:
			// canaryd does not hold back an evaluation whose trace it has
			// not seen.
			waitFor(t, 60*time.Second, "spans indexed", func() bool {
				return ms.GetOrCreateGauge("canaryd_otlp_trace_index_traces", nil).Get() >= traces
			})

			recs = recs[:0]
			wantN := map[string]uint64{}
			for i := range traces {
				score := scoreV1
				if version(i) == "v2" {
					score = scoreV2
				}
				wantN[version(i)]++
				recs = append(recs, &kgo.Record{Topic: logs, Partition: int32(i % 3), Value: evalJoinLog(i, "evaluator", "", score, at(i).Add(500*time.Millisecond))})
			}
			// An hour later, on every partition of both topics, a record of
			// another rollout closes every window.
			end := t0.Add(time.Hour)
			for p := range 3 {
				recs = append(recs,
					&kgo.Record{Topic: spans, Partition: int32(p), Value: evalJoinSpans(traces+p, "evalend", "v1", end)},
					&kgo.Record{Topic: logs, Partition: int32(p), Value: evalJoinLog(traces+p, "evalend", "v1", 0.5, end)})
			}
			produceRecords(t, brokers, recs)

			joined := ms.GetOrCreateCounter(`canaryd_otlp_trace_joins_total{result="joined"}`)
			waitFor(t, 60*time.Second, "evaluations joined", func() bool { return joined.Get() >= traces })
			waitFor(t, 60*time.Second, "eval_score evidence of every evaluation", func() bool {
				mu.Lock()
				defer mu.Unlock()
				return ev.NBaseline+ev.NCanary >= traces
			})
			mu.Lock()
			got := ev
			mu.Unlock()
			if got.NBaseline != wantN["v1"] || got.NCanary != wantN["v2"] {
				t.Fatalf("eval_score evidence counts v1 %d, v2 %d; want %d, %d", got.NBaseline, got.NCanary, wantN["v1"], wantN["v2"])
			}
			if math.Abs(float64(got.Baseline)-scoreV1) > 1e-9 || math.Abs(float64(got.Canary)-scoreV2) > 1e-9 {
				t.Fatalf("eval_score means v1 %v, v2 %v; want %v, %v (scores filed under the wrong version)", got.Baseline, got.Canary, scoreV1, scoreV2)
			}
			for _, r := range []string{"unknown_trace", "no_trace_id"} {
				if n := ms.GetOrCreateCounter(`canaryd_otlp_trace_joins_total{result="` + r + `"}`).Get(); n != 0 {
					t.Fatalf("%d evaluations %s; want 0", n, r)
				}
			}
			if n := joined.Get(); n != traces {
				t.Fatalf("%d evaluations joined; want %d", n, traces)
			}
			t.Logf("eval_score: v1 n=%d mean %.2f, v2 n=%d mean %.2f", got.NBaseline, float64(got.Baseline), got.NCanary, float64(got.Canary))
		})
	}
}
