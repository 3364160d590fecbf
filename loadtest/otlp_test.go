package loadtest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/inferensys/canaryd/schemas"
	"github.com/inferensys/canaryd/stream"
)

// The OTLP formats' tests decode the records with canaryd's own OTLP decoder
// wrapped in stream.Sessions, which is what the daemon runs on an otlp_spans
// topic. (The encoders were also checked against pdata's unmarshalers: the
// same ExportTraceServiceRequest from both encodings, pdata's JSON of the
// protobuf equal to ours.)

// sessionView is what one session's events say, from either format.
type sessionView struct {
	rollout, version string
	requests, errors int64
	tools            string
	in, out          int64
	success          bool
	ts               int64
	durationMS       float64
	// The agent event's request totals.
	reqTotal, reqErrors uint32
	reqMedian           float64
	hasReqMedian        bool
}

// tally collects sessions and per-version counts from decoded events.
type tally struct {
	counts   map[string]map[string]Counts
	sessions map[string]*sessionView // by trace id
	order    []string                // trace ids in the order of their agent events
}

func newTally() *tally {
	return &tally{counts: map[string]map[string]Counts{}, sessions: map[string]*sessionView{}}
}

func (ta *tally) add(t *testing.T, ev *schemas.Event) {
	t.Helper()
	if ev.Kind == schemas.KindEval {
		return
	}
	tr := string(ev.TraceID)
	s := ta.sessions[tr]
	if s == nil {
		s = &sessionView{rollout: string(ev.Rollout), version: string(ev.Version)}
		ta.sessions[tr] = s
	}
	if s.rollout != string(ev.Rollout) || s.version != string(ev.Version) {
		t.Fatalf("trace %s: event of %s/%s in a session of %s/%s", tr, ev.Rollout, ev.Version, s.rollout, s.version)
	}
	switch ev.Kind {
	case schemas.KindLLM, schemas.KindTool:
		s.requests++
		if ev.Error {
			s.errors++
		}
	case schemas.KindAgent:
		var tools []string
		for _, tc := range ev.ToolCalls {
			tools = append(tools, string(tc))
		}
		s.tools = strings.Join(tools, ",")
		s.in, s.out = ev.InputTokens, ev.OutputTokens
		if !ev.HasOutcome || !ev.HasOutcomeSuccess {
			t.Fatalf("trace %s: agent event without outcome success", tr)
		}
		s.success, s.ts, s.durationMS = ev.OutcomeSuccess, ev.TS, math.Round(ev.DurationMS*1e3)/1e3
		s.reqTotal, s.reqErrors, s.reqMedian, s.hasReqMedian = ev.Requests, ev.RequestErrors, ev.RequestMedianMS, ev.HasRequestMedian
		if int64(s.reqTotal) != s.requests || int64(s.reqErrors) != s.errors || !s.hasReqMedian {
			t.Fatalf("trace %s: agent event with %d requests, %d errors (median %v); the trace has %d and %d",
				tr, s.reqTotal, s.reqErrors, s.hasReqMedian, s.requests, s.errors)
		}
		ta.order = append(ta.order, tr)
		m := ta.counts[s.rollout]
		if m == nil {
			m = map[string]Counts{}
			ta.counts[s.rollout] = m
		}
		c := m[s.version]
		c.Events += s.requests + 1
		c.Requests += s.requests
		c.Errors += s.errors
		c.Sessions++
		if s.success {
			c.Successes++
		}
		m[s.version] = c
	default:
		t.Fatalf("trace %s: event of kind %v", tr, ev.Kind)
	}
}

func otlpRollouts() []Rollout {
	rs := []Rollout{testRollout("support-agent", 30), testRollout("billing-agent", 70)}
	rs[1].CanaryProfile.ErrorRateMult = 5
	return rs
}

// farClock keeps every generated event time in the past for Sessions'
// future check.
func farClock() time.Time { return time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC) }

// TestOTLPRoundTrip: for one seed, the sessions of the OTLP formats, decoded
// with stream.OTLPTraces in stream.Sessions, give the same per-version
// requests, errors, sessions and successes as the JSON format, and each
// assembled agent event the same tool calls, tokens, time, outcome and request
// totals (to the bit, median included) as the JSON agent event.
func TestOTLPRoundTrip(t *testing.T) {
	const sessions = 4000
	rs := otlpRollouts()

	want := newTally()
	var dec schemas.Decoder
	var ev schemas.Event
	g := NewGenerator(9, rs)
	var buf []byte
	for len(want.order) < sessions {
		buf = g.Next(buf[:0])
		if err := dec.Decode(buf, &ev); err != nil {
			t.Fatal(err)
		}
		want.add(t, &ev)
	}

	for _, format := range []string{FormatOTLPProto, FormatOTLPJSON} {
		t.Run(format, func(t *testing.T) {
			set := metrics.NewSet()
			d := stream.Sessions(stream.OTLPTraces(stream.OTLPConfig{Encoding: format}),
				stream.SessionConfig{Clock: farClock, Metrics: set})()
			g := NewGenerator(9, rs, GeneratorFormat(format))
			if g.Format() != format {
				t.Fatalf("Format() = %q", g.Format())
			}
			got := newTally()
			evals := 0
			for i := range sessions {
				key, rec := g.NextKeyed(buf[:0])
				buf = rec
				var trace string
				err := d.Decode(rec, func(ev *schemas.Event) {
					if ev.Kind == schemas.KindEval {
						evals++
					}
					if trace == "" {
						trace = string(ev.TraceID)
					} else if trace != string(ev.TraceID) {
						t.Fatalf("record %d holds traces %s and %s", i, trace, ev.TraceID)
					}
					got.add(t, ev)
				})
				if err != nil {
					t.Fatalf("record %d: %v", i, err)
				}
				if string(key) != trace {
					t.Fatalf("record %d: key %q; want the trace id %q", i, key, trace)
				}
			}
			if !mapsEqual(got.counts, want.counts) {
				t.Fatalf("counts %v; want (JSON) %v", got.counts, want.counts)
			}
			if c := g.Counts(); !mapsEqual(c, want.counts) {
				t.Fatalf("Counts() %v; want %v", c, want.counts)
			}
			if !slices.Equal(got.order, want.order) {
				t.Fatal("sessions end in another order than in JSON")
			}
			for _, tr := range want.order {
				if g, w := *got.sessions[tr], *want.sessions[tr]; g != w {
					t.Fatalf("trace %s: OTLP session %+v; JSON %+v", tr, g, w)
				}
			}
			if evals != 2*sessions {
				t.Fatalf("%d evaluation events; want 2 per session", evals)
			}
			for name, want := range map[string]uint64{
				"canaryd_sessions_assembled_total":                                sessions,
				"canaryd_sessions_unassembled_total":                              0,
				`canaryd_sessions_evicted_total{reason="timeout"}`:                0,
				`canaryd_sessions_evicted_total{reason="max_traces"}`:             0,
				`canaryd_otlp_unattributed_total{signal="spans",field="version"}`: 0,
			} {
				if n := set.GetOrCreateCounter(name).Get(); n != want {
					t.Errorf("%s = %d; want %d", name, n, want)
				}
			}
			if t.Failed() {
				return
			}
			t.Logf("%d sessions, %v", sessions, got.counts)
		})
	}
}

// otlpJSONRequest is the OTLP/JSON ExportTraceServiceRequest as pdata's
// marshaler writes it, for checking the otlp_json records independently of
// canaryd's decoder.
type otlpJSONRequest struct {
	ResourceSpans []struct {
		Resource struct {
			Attributes []otlpJSONKV `json:"attributes"`
		} `json:"resource"`
		ScopeSpans []struct {
			Scope struct {
				Name    string `json:"name"`
				Version string `json:"version"`
			} `json:"scope"`
			Spans []struct {
				TraceID           string       `json:"traceId"`
				SpanID            string       `json:"spanId"`
				ParentSpanID      string       `json:"parentSpanId"`
				Name              string       `json:"name"`
				Kind              int          `json:"kind"`
				StartTimeUnixNano string       `json:"startTimeUnixNano"`
				EndTimeUnixNano   string       `json:"endTimeUnixNano"`
				Attributes        []otlpJSONKV `json:"attributes"`
				Events            []struct {
					TimeUnixNano string       `json:"timeUnixNano"`
					Name         string       `json:"name"`
					Attributes   []otlpJSONKV `json:"attributes"`
				} `json:"events"`
				Status struct {
					Code int `json:"code"`
				} `json:"status"`
			} `json:"spans"`
		} `json:"scopeSpans"`
	} `json:"resourceSpans"`
}

type otlpJSONKV struct {
	Key   string `json:"key"`
	Value struct {
		StringValue *string  `json:"stringValue"`
		IntValue    *string  `json:"intValue"`
		DoubleValue *float64 `json:"doubleValue"`
	} `json:"value"`
}

func attrMap(kvs []otlpJSONKV) map[string]string {
	m := map[string]string{}
	for _, kv := range kvs {
		switch v := kv.Value; {
		case v.StringValue != nil:
			m[kv.Key] = *v.StringValue
		case v.IntValue != nil:
			m[kv.Key] = "int:" + *v.IntValue
		case v.DoubleValue != nil:
			m[kv.Key] = fmt.Sprint("double:", *v.DoubleValue)
		}
	}
	return m
}

// TestOTLPJSONShape checks otlp_json records with encoding/json: the
// resource, one invoke_agent root span last, its chat and execute_tool
// children, ids in hex, times as strings, statuses and the evaluation events.
func TestOTLPJSONShape(t *testing.T) {
	rs := otlpRollouts()
	rs[0].Name = "wéird \"agent\"\n\t<&>"
	g := NewGenerator(4, rs, GeneratorFormat(FormatOTLPJSON))
	failed, errored := 0, 0
	for i := range 2000 {
		rec := g.Next(nil)
		var req otlpJSONRequest
		d := json.NewDecoder(bytes.NewReader(rec))
		d.DisallowUnknownFields()
		if err := d.Decode(&req); err != nil {
			t.Fatalf("record %d: %v\n%s", i, err, rec)
		}
		if len(req.ResourceSpans) != 1 || len(req.ResourceSpans[0].ScopeSpans) != 1 {
			t.Fatalf("record %d: want one resource and one scope", i)
		}
		res := attrMap(req.ResourceSpans[0].Resource.Attributes)
		rollout, version := res["service.name"], res["service.version"]
		if rollout != rs[0].Name && rollout != rs[1].Name || version != "v1" && version != "v2" ||
			res["k8s.pod.label.app.kubernetes.io/version"] != version {
			t.Fatalf("record %d: resource %v", i, res)
		}
		spans := req.ResourceSpans[0].ScopeSpans[0].Spans
		root := spans[len(spans)-1]
		ra := attrMap(root.Attributes)
		if root.ParentSpanID != "" || ra["gen_ai.operation.name"] != "invoke_agent" || ra["gen_ai.agent.name"] != rollout ||
			ra["gen_ai.agent.version"] != version || !strings.HasPrefix(ra["gen_ai.conversation.id"], "ses-") ||
			root.Name != "invoke_agent "+rollout {
			t.Fatalf("record %d: root span %+v", i, root)
		}
		if (root.Status.Code == 2) != (ra["error.type"] != "") {
			t.Fatalf("record %d: root status %d error.type %q", i, root.Status.Code, ra["error.type"])
		}
		if root.Status.Code == 2 {
			failed++
		}
		if len(root.Events) != 2 || root.Events[0].Name != "gen_ai.evaluation.result" || root.Events[0].TimeUnixNano != root.EndTimeUnixNano {
			t.Fatalf("record %d: root events %+v", i, root.Events)
		}
		ea := attrMap(root.Events[0].Attributes)
		if ea["gen_ai.evaluation.name"] != "task_success" || !strings.HasPrefix(ea["gen_ai.evaluation.score.value"], "double:") ||
			(ea["gen_ai.evaluation.score.label"] == "fail") != (root.Status.Code == 2) {
			t.Fatalf("record %d: evaluation %v, status %d", i, ea, root.Status.Code)
		}
		prevEnd := root.StartTimeUnixNano
		for j, s := range spans[:len(spans)-1] {
			a := attrMap(s.Attributes)
			if s.TraceID != root.TraceID || len(s.TraceID) != 32 || len(s.SpanID) != 16 || s.ParentSpanID != root.SpanID {
				t.Fatalf("record %d span %d: ids %s %s %s", i, j, s.TraceID, s.SpanID, s.ParentSpanID)
			}
			if s.StartTimeUnixNano != prevEnd { // requests run one after another
				t.Fatalf("record %d span %d: starts at %s, the previous ended at %s", i, j, s.StartTimeUnixNano, prevEnd)
			}
			prevEnd = s.EndTimeUnixNano
			op := a["gen_ai.operation.name"]
			switch {
			case op == "chat" && j%2 == 0 && s.Kind == 3 && s.Name == "chat gpt-4o-mini" && a["gen_ai.provider.name"] == "openai":
				if s.Status.Code == 0 && !strings.HasPrefix(a["gen_ai.usage.input_tokens"], "int:") {
					t.Fatalf("record %d span %d: chat without usage: %v", i, j, a)
				}
			case op == "execute_tool" && j%2 == 1 && s.Kind == 1 && s.Name == "execute_tool "+a["gen_ai.tool.name"]:
			default:
				t.Fatalf("record %d span %d: %+v", i, j, s)
			}
			if (s.Status.Code == 2) != (a["error.type"] != "") {
				t.Fatalf("record %d span %d: status %d error.type %q", i, j, s.Status.Code, a["error.type"])
			}
			if s.Status.Code == 2 {
				errored++
			}
		}
		if prevEnd != root.EndTimeUnixNano {
			t.Fatalf("record %d: root ends at %s, its last request at %s", i, root.EndTimeUnixNano, prevEnd)
		}
	}
	if failed == 0 || errored == 0 {
		t.Fatalf("%d failed sessions, %d failed requests; want some of each", failed, errored)
	}
}

// TestOTLPWriterLengths checks the protobuf writer's length placeholders
// around every varint size boundary.
func TestOTLPWriterLengths(t *testing.T) {
	for _, n := range []int{0, 1, 127, 128, 129, 16383, 16384, 16385, 1<<21 - 1, 1 << 21} {
		w := otlpWriter{b: []byte{0xee}}
		w.open(1)
		w.open(2)
		w.b = append(w.b, bytes.Repeat([]byte{0x5a}, n)...)
		w.close()
		w.close()
		b := w.b[1:]
		// Outer: tag 0x0a, len; inner: tag 0x12, len, n bytes.
		outer := varintLen(uint64(n)) + 1 + n
		want := append(appendVarint([]byte{0x0a}, uint64(outer)), appendVarint([]byte{0x12}, uint64(n))...)
		want = append(want, bytes.Repeat([]byte{0x5a}, n)...)
		if !bytes.Equal(b, want) {
			t.Fatalf("n=%d: got %x…; want %x…", n, b[:min(8, len(b))], want[:min(8, len(want))])
		}
	}
}

// TestAppendJSONString compares the JSON string escaper with encoding/json
// (HTML escaping off, as in pdata).
func TestAppendJSONString(t *testing.T) {
	for _, s := range []string{"", "plain", `q"uote\back`, "ctl\x00\x01\x1f\n\r\t", "utf8 é 😀", "bad \xff\xfe utf8", "trunc \xe2\x82", "<&>\u2028"} {
		var want bytes.Buffer
		e := json.NewEncoder(&want)
		e.SetEscapeHTML(false)
		if err := e.Encode(s); err != nil {
			t.Fatal(err)
		}
		got := appendJSONString(nil, s)
		var back string
		if err := json.Unmarshal(got, &back); err != nil {
			t.Fatalf("%q: %s is not JSON: %v", s, got, err)
		}
		var wantBack string
		_ = json.Unmarshal(want.Bytes(), &wantBack)
		if back != wantBack {
			t.Fatalf("%q: decodes to %q; encoding/json's to %q", s, back, wantBack)
		}
	}
}

func TestGeneratorOTLPAllocs(t *testing.T) {
	for _, format := range []string{FormatOTLPProto, FormatOTLPJSON} {
		g := NewGenerator(1, []Rollout{testRollout("a", 50)}, GeneratorFormat(format))
		buf := make([]byte, 0, 64<<10)
		for range 2000 {
			buf = g.Next(buf[:0])
		}
		if n := testing.AllocsPerRun(2000, func() { buf = g.Next(buf[:0]) }); n > 0.01 {
			t.Fatalf("%s: Next allocates %v per record; want 0", format, n)
		}
	}
}

func TestGeneratorFormatInvalid(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("NewGenerator accepted format xml")
		}
	}()
	NewGenerator(1, []Rollout{testRollout("a", 0)}, GeneratorFormat("xml"))
}

// TestFleetOTLP runs a Fleet in otlp_proto against kfake and reads its
// records back through Sessions: they land on the OTLP topic, keyed by trace
// id, and hold what Produced says.
func TestFleetOTLP(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, DefaultOTLPTopic, DefaultControlTopic))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	brokers := c.ListenAddrs()
	var now = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { now = now.Add(time.Minute); return now } // read by Run's goroutine only
	if _, err := NewFleet(FleetConfig{Brokers: brokers, Rollouts: otlpRollouts(), Format: "xml"}); err == nil {
		t.Fatal("NewFleet accepted format xml")
	}
	f, err := NewFleet(FleetConfig{Brokers: brokers, Rollouts: otlpRollouts(), Format: FormatOTLPProto,
		MaxEvents: 5000, Clock: clock, Tick: time.Millisecond, CatchUpTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := f.Run(ctx); err != nil {
		t.Fatal(err)
	}
	produced := f.Produced()
	var events, sessions int64
	for _, vs := range produced {
		for _, c := range vs {
			events += c.Events
			sessions += c.Sessions
		}
	}
	if events < 5000 || events > 5000+2*maxSteps+2 {
		t.Fatalf("produced %d events; want 5000 up to one session more", events)
	}

	cons := newClient(t, kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(DefaultOTLPTopic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	d := stream.Sessions(stream.OTLPTraces(stream.OTLPConfig{}), stream.SessionConfig{Clock: farClock})()
	got := newTally()
	var records int64
	for records < sessions {
		fs := cons.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %d of %d records", records, sessions)
		}
		fs.EachError(func(_ string, _ int32, err error) { t.Fatal(err) })
		fs.EachRecord(func(r *kgo.Record) {
			records++
			err := d.Decode(r.Value, func(ev *schemas.Event) {
				if string(ev.TraceID) != string(r.Key) {
					t.Fatalf("key %q for trace %s", r.Key, ev.TraceID)
				}
				got.add(t, ev)
			})
			if err != nil {
				t.Fatal(err)
			}
		})
	}
	if !mapsEqual(got.counts, produced) {
		t.Fatalf("consumed %v; Produced() %v", got.counts, produced)
	}
}

// BenchmarkGeneratorFormats measures the generator in each format: events/s
// counts requests and agent events (in OTLP, spans), B/event the record
// bytes per event.
func BenchmarkGeneratorFormats(b *testing.B) {
	for _, format := range []string{FormatJSON, FormatOTLPProto, FormatOTLPJSON} {
		b.Run(format, func(b *testing.B) {
			g := NewGenerator(1, []Rollout{testRollout("support-agent", 20)}, GeneratorFormat(format))
			buf := make([]byte, 0, 64<<10)
			var size int
			b.ReportAllocs()
			for b.Loop() {
				buf = g.Next(buf[:0])
				size += len(buf)
			}
			var events, records int64
			for _, vs := range g.Counts() {
				for _, c := range vs {
					events += c.Events
				}
			}
			records = int64(b.N)
			b.ReportMetric(float64(events)/b.Elapsed().Seconds(), "events/s")
			b.ReportMetric(float64(records)/b.Elapsed().Seconds(), "records/s")
			b.ReportMetric(float64(size)/float64(events), "B/event")
		})
	}
}
