package stream

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/VictoriaMetrics/metrics"

	"github.com/inferensys/canaryd/schemas"
)

// t0 is the event time of the session tests' spans; the clock stands an hour
// later, so no span is in the future.
var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func sessionClock() time.Time { return t0.Add(time.Hour) }

// tspan is a test span: times in ms after t0, ids short strings padded to
// hex ids ("a" → 0x…0a).
type tspan struct {
	trace, id, parent string
	kind              schemas.Kind
	name              string
	start, end        int64
	in, out           int64
	cost              float64
	err               bool
	noDur             bool   // no duration_ms
	requests          uint32 // the producer's own Requests (agent/task spans)
	outcome           int    // 0 none, 1 success, 2 failure
	tools             []string
}

func hexID(s string, n int) string {
	if s == "" {
		return ""
	}
	return strings.Repeat("0", n-len(s)) + s
}

// fakeSpans decodes test records: a record's value is the index of one of
// recs. Every event's byte slices are written into one buffer that is
// scribbled over after each emit, as a real decoder reuses its buffers, so
// that Sessions must copy what it keeps.
type fakeSpans struct {
	recs [][]tspan
	buf  []byte
	ev   schemas.Event
}

var errFake = errors.New("fake: bad record")

func (f *fakeSpans) Decode(value []byte, emit func(*schemas.Event)) error {
	if len(value) == 1 && value[0] == 0xff {
		return errFake
	}
	for _, s := range f.recs[value[0]] {
		f.buf = f.buf[:0]
		put := func(v string) []byte {
			if v == "" {
				return nil
			}
			start := len(f.buf)
			f.buf = append(f.buf, v...)
			return f.buf[start:len(f.buf):len(f.buf)]
		}
		f.buf = slices.Grow(f.buf, 1024) // no reallocation below
		ev := &f.ev
		ev.Reset()
		ev.Rollout, ev.Version, ev.Name = put("agent"), put("v1"), put(s.name)
		ev.Kind = s.kind
		ev.TS = t0.Add(time.Duration(s.end) * time.Millisecond).UnixNano()
		if !s.noDur {
			ev.DurationMS, ev.HasDuration = float64(s.end-s.start), true
		}
		ev.Requests = s.requests
		ev.TraceID, ev.SpanID, ev.ParentSpanID = put(hexID(s.trace, 32)), put(hexID(s.id, 16)), put(hexID(s.parent, 16))
		ev.InputTokens, ev.OutputTokens = s.in, s.out
		if s.cost > 0 {
			ev.CostUSD, ev.HasCost = s.cost, true
		}
		if s.err {
			ev.Error, ev.ErrorType = true, put("boom")
		}
		if s.outcome != 0 {
			ev.HasOutcome, ev.HasOutcomeSuccess, ev.OutcomeSuccess = true, true, s.outcome == 1
		}
		for _, t := range s.tools {
			ev.ToolCalls = append(ev.ToolCalls, put(t))
		}
		emit(ev)
		for i := range f.buf[:cap(f.buf)] {
			f.buf[:cap(f.buf)][i] = 'X'
		}
	}
	return nil
}

// sev is an emitted event as the session tests compare it.
type sev struct {
	Kind, Name, Trace, Span string
	TS                      int64
	Tools                   string
	In, Out                 int64
	Cost                    float64
	HasCost                 bool
	Error                   bool
	HasOutcome, Success     bool
	Requests, ReqErrors     uint32
	ReqMedian               float64
	HasReqMedian            bool
}

func toSev(e *schemas.Event) sev {
	var tools []string
	for _, t := range e.ToolCalls {
		tools = append(tools, string(t))
	}
	trace := strings.TrimLeft(string(e.TraceID), "0")
	return sev{Kind: e.Kind.String(), Name: string(e.Name), Trace: trace, Span: strings.TrimLeft(string(e.SpanID), "0"),
		TS: e.TS, Tools: strings.Join(tools, ","), In: e.InputTokens, Out: e.OutputTokens, Cost: math.Round(e.CostUSD*1e9) / 1e9,
		HasCost: e.HasCost, Error: e.Error, HasOutcome: e.HasOutcome, Success: e.OutcomeSuccess,
		Requests: e.Requests, ReqErrors: e.RequestErrors, ReqMedian: e.RequestMedianMS, HasReqMedian: e.HasRequestMedian}
}

// sessionRig runs fake records through one Sessions decoder.
type sessionRig struct {
	t    *testing.T
	fake *fakeSpans
	dec  Decoder
	set  *metrics.Set
}

func newSessionRig(t *testing.T, cfg SessionConfig, recs ...[]tspan) *sessionRig {
	t.Helper()
	r := &sessionRig{t: t, fake: &fakeSpans{recs: recs}, set: metrics.NewSet()}
	cfg.Metrics = r.set
	if cfg.Clock == nil {
		cfg.Clock = sessionClock
	}
	r.dec = Sessions(func() Decoder { return r.fake }, cfg)()
	return r
}

// decode decodes record i and returns what it emitted.
func (r *sessionRig) decode(i int) []sev {
	r.t.Helper()
	var out []sev
	if err := r.dec.Decode([]byte{byte(i)}, func(e *schemas.Event) { out = append(out, toSev(e)) }); err != nil {
		r.t.Fatalf("record %d: %v", i, err)
	}
	return out
}

func (r *sessionRig) counter(name string) uint64 { return r.set.GetOrCreateCounter(name).Get() }

// agents returns the agent and task events of evs.
func agents(evs []sev) []sev {
	var out []sev
	for _, e := range evs {
		if e.Kind == "agent" || e.Kind == "task" {
			out = append(out, e)
		}
	}
	return out
}

// turn is one agent session in trace tr under root span "a<tr>": chat,
// search (starts first, ends last), chat, calc, chat; then the agent span.
func turn(tr string, base int64) []tspan {
	root := "a" + tr
	return []tspan{
		{trace: tr, id: "1" + tr, parent: root, kind: schemas.KindLLM, name: "gpt", start: base, end: base + 100, in: 10, out: 5, cost: 0.01},
		{trace: tr, id: "3" + tr, parent: root, kind: schemas.KindLLM, name: "gpt", start: base + 110, end: base + 200, in: 20, out: 6, cost: 0.02},
		{trace: tr, id: "4" + tr, parent: root, kind: schemas.KindTool, name: "calc", start: base + 210, end: base + 250},
		{trace: tr, id: "2" + tr, parent: root, kind: schemas.KindTool, name: "search", start: base + 105, end: base + 400},
		{trace: tr, id: "5" + tr, parent: root, kind: schemas.KindLLM, name: "gpt", start: base + 400, end: base + 500, in: 30, err: true},
		{trace: tr, id: root, kind: schemas.KindAgent, name: "support", start: base, end: base + 510},
	}
}

func wantAgent(tr string, base int64) sev {
	return sev{Kind: "agent", Name: "support", Trace: tr, Span: "a" + tr, TS: t0.Add(time.Duration(base+510) * time.Millisecond).UnixNano(),
		Tools: "search,calc", In: 60, Out: 11, Cost: 0.03, HasCost: true, HasOutcome: true, Success: true,
		// Durations 100, 90, 40, 295, 100: the median is 100.
		Requests: 5, ReqErrors: 1, ReqMedian: 100, HasReqMedian: true}
}

func TestSessionsOneRecord(t *testing.T) {
	spans := turn("1", 0)
	r := newSessionRig(t, SessionConfig{}, spans)
	got := r.decode(0)
	if len(got) != len(spans) {
		t.Fatalf("%d events; want %d", len(got), len(spans))
	}
	for i, s := range spans[:5] { // requests pass through unchanged, in order
		if got[i].Span != s.id || got[i].Tools != "" || got[i].In != s.in {
			t.Fatalf("event %d = %+v; want span %s unchanged", i, got[i], s.id)
		}
	}
	if got[5] != wantAgent("1", 0) {
		t.Fatalf("agent event %+v; want %+v", got[5], wantAgent("1", 0))
	}
	if n := r.counter("canaryd_sessions_assembled_total"); n != 1 {
		t.Fatalf("assembled %d; want 1", n)
	}
	if n := len(r.dec.(*sessionDecoder).index); n != 0 {
		t.Fatalf("%d traces remembered after the root agent span; want 0", n)
	}
}

// TestSessionsAgentFirst: a record may list the agent span before its
// children (as pdata-written fixtures do); it is held to the record's end.
func TestSessionsAgentFirst(t *testing.T) {
	spans := turn("1", 0)
	spans = append([]tspan{spans[5]}, spans[:5]...)
	got := newSessionRig(t, SessionConfig{}, spans).decode(0)
	if len(got) != 6 || got[5] != wantAgent("1", 0) {
		t.Fatalf("events %+v; want the 5 requests then %+v", got, wantAgent("1", 0))
	}
}

func TestSessionsSpreadOverRecords(t *testing.T) {
	spans := turn("1", 0)
	r := newSessionRig(t, SessionConfig{}, spans[:2], spans[2:3], spans[3:5], spans[5:])
	var all []sev
	for i := range 4 {
		evs := r.decode(i)
		if i < 3 && len(agents(evs)) > 0 {
			t.Fatalf("record %d emitted an agent event", i)
		}
		all = append(all, evs...)
	}
	if a := agents(all); len(a) != 1 || a[0] != wantAgent("1", 0) {
		t.Fatalf("agent events %+v; want %+v", a, wantAgent("1", 0))
	}
	if len(all) != 6 {
		t.Fatalf("%d events; want 6", len(all))
	}
}

// TestSessionsToolOrder: tools are ordered by start time, not by end or
// arrival; equal starts keep their arrival order.
func TestSessionsToolOrder(t *testing.T) {
	r := newSessionRig(t, SessionConfig{}, []tspan{
		{trace: "7", id: "c", parent: "a", kind: schemas.KindTool, name: "third", start: 300, end: 310},
		{trace: "7", id: "b", parent: "a", kind: schemas.KindTool, name: "second", start: 200, end: 900},
		{trace: "7", id: "d", parent: "a", kind: schemas.KindTool, name: "first", start: 100, end: 950},
		{trace: "7", id: "e", parent: "a", kind: schemas.KindTool, name: "fourth", start: 300, end: 320},
	}, []tspan{
		{trace: "7", id: "a", kind: schemas.KindAgent, name: "ag", start: 0, end: 1000, in: 5},
	})
	r.decode(0)
	a := agents(r.decode(1))
	if len(a) != 1 || a[0].Tools != "first,second,third,fourth" || a[0].In != 5 || a[0].Out != 0 || a[0].HasCost {
		t.Fatalf("agent %+v; want tools first,second,third,fourth and its own 5 input tokens", a)
	}
}

// TestSessionsInterleaved: three traces' spans interleaved over records;
// each agent gets only its own trace's spans.
func TestSessionsInterleaved(t *testing.T) {
	a, b, c := turn("1", 0), turn("2", 50), turn("3", 70)
	var recs [][]tspan
	for i := range 6 {
		recs = append(recs, []tspan{a[i], b[i]})
	}
	recs[2] = append(recs[2], c...) // c whole, amid the others
	r := newSessionRig(t, SessionConfig{}, recs...)
	var got []sev
	for i := range recs {
		got = append(got, agents(r.decode(i))...)
	}
	want := []sev{wantAgent("3", 70), wantAgent("1", 0), wantAgent("2", 50)}
	if !slices.Equal(got, want) {
		t.Fatalf("agents\n%+v; want\n%+v", got, want)
	}
}

func TestSessionsOutcome(t *testing.T) {
	r := newSessionRig(t, SessionConfig{}, []tspan{
		{trace: "1", id: "a", kind: schemas.KindAgent, name: "x", end: 10, err: true},
		{trace: "2", id: "a", kind: schemas.KindTask, name: "x", end: 10, err: true, outcome: 1},
		{trace: "3", id: "a", kind: schemas.KindAgent, name: "x", end: 10, outcome: 2, tools: []string{"own"}},
		{trace: "4", id: "a", kind: schemas.KindAgent, name: "x", end: 10},
	})
	got := r.decode(0)
	for i, want := range []struct {
		success bool
		tools   string
	}{{false, ""}, {true, ""}, {false, "own"}, {true, ""}} {
		if !got[i].HasOutcome || got[i].Success != want.success || got[i].Tools != want.tools {
			t.Errorf("event %d %+v; want outcome success %v, tools %q", i, got[i], want.success, want.tools)
		}
	}
	if n := r.counter("canaryd_sessions_unassembled_total"); n != 4 {
		t.Fatalf("unassembled %d; want 4", n)
	}
}

// TestSessionsNested: a request root (HTTP server span) above an outer agent
// above an inner agent. The inner agent gets its own subtree, the outer one
// everything below it; the trace is forgotten when its root arrives.
func TestSessionsNested(t *testing.T) {
	r := newSessionRig(t, SessionConfig{}, []tspan{
		{trace: "9", id: "11", parent: "2", kind: schemas.KindTool, name: "inner_tool", start: 20, end: 30},
		{trace: "9", id: "12", parent: "2", kind: schemas.KindLLM, name: "gpt", start: 10, end: 19, in: 7, out: 1},
		{trace: "9", id: "2", parent: "1", kind: schemas.KindAgent, name: "inner", start: 5, end: 40},
	}, []tspan{
		{trace: "9", id: "21", parent: "1", kind: schemas.KindTool, name: "outer_tool", start: 2, end: 4},
		{trace: "9", id: "31", parent: "21", kind: schemas.KindOther, name: "GET /api", start: 2, end: 3},
		{trace: "9", id: "32", parent: "31", kind: schemas.KindTool, name: "deep_tool", start: 3, end: 3},
		{trace: "9", id: "1", parent: "0f", kind: schemas.KindAgent, name: "outer", start: 0, end: 50},
	}, []tspan{
		{trace: "9", id: "0f", kind: schemas.KindOther, name: "POST /chat", start: 0, end: 60},
	})
	d := r.dec.(*sessionDecoder)
	a := agents(r.decode(0))
	if len(a) != 1 || a[0].Name != "inner" || a[0].Tools != "inner_tool" || a[0].In != 7 {
		t.Fatalf("inner agent %+v", a)
	}
	a = agents(r.decode(1))
	if len(a) != 1 || a[0].Name != "outer" || a[0].Tools != "outer_tool,deep_tool,inner_tool" || a[0].In != 7 {
		t.Fatalf("outer agent %+v", a)
	}
	if len(d.index) != 1 {
		t.Fatalf("%d traces remembered before the root; want 1", len(d.index))
	}
	r.decode(2)
	if len(d.index) != 0 || r.counter(`canaryd_sessions_evicted_total{reason="timeout"}`) != 0 {
		t.Fatalf("%d traces remembered after the root; want 0, none evicted", len(d.index))
	}
	if n := r.counter("canaryd_sessions_assembled_total"); n != 2 {
		t.Fatalf("assembled %d; want 2", n)
	}
}

func TestSessionsTimeout(t *testing.T) {
	min := int64(60_000)
	r := newSessionRig(t, SessionConfig{Timeout: 5 * time.Minute}, []tspan{
		{trace: "1", id: "11", parent: "a", kind: schemas.KindTool, name: "lost", start: 0, end: 10},
	}, []tspan{
		{trace: "2", id: "21", parent: "b", kind: schemas.KindTool, name: "kept", start: 2 * min, end: 2 * min},
	}, []tspan{ // 5 min after trace 1's last span: not yet expired
		{trace: "3", id: "31", parent: "c", kind: schemas.KindTool, name: "x", start: 5 * min, end: 5*min + 10},
	}, []tspan{ // 5 min + 11 ms: trace 1 expires
		{trace: "3", id: "32", parent: "c", kind: schemas.KindTool, name: "y", start: 5 * min, end: 5*min + 11},
	}, []tspan{
		{trace: "1", id: "a", kind: schemas.KindAgent, name: "late", end: 5*min + 20},
		{trace: "2", id: "b", kind: schemas.KindAgent, name: "ok", end: 5*min + 20},
	})
	d := r.dec.(*sessionDecoder)
	for i := range 3 {
		r.decode(i)
	}
	if len(d.index) != 3 {
		t.Fatalf("%d traces; want 3", len(d.index))
	}
	r.decode(3)
	if n := r.counter(`canaryd_sessions_evicted_total{reason="timeout"}`); n != 1 || len(d.index) != 2 {
		t.Fatalf("evicted %d, %d traces left; want 1 and 2", n, len(d.index))
	}
	a := agents(r.decode(4))
	if len(a) != 2 || a[0].Tools != "" || a[1].Tools != "kept" {
		t.Fatalf("agents %+v; want the late one without tools, the other with kept", a)
	}
	if u, as := r.counter("canaryd_sessions_unassembled_total"), r.counter("canaryd_sessions_assembled_total"); u != 1 || as != 1 {
		t.Fatalf("unassembled %d assembled %d; want 1 and 1", u, as)
	}
}

func TestSessionsCapacity(t *testing.T) {
	r := newSessionRig(t, SessionConfig{MaxTraces: 2}, []tspan{
		{trace: "1", id: "11", parent: "a", kind: schemas.KindTool, name: "t1", end: 1},
		{trace: "2", id: "21", parent: "b", kind: schemas.KindTool, name: "t2", end: 2},
	}, []tspan{
		{trace: "3", id: "31", parent: "c", kind: schemas.KindTool, name: "t3", end: 3}, // evicts trace 1
	}, []tspan{
		// An inner agent settles trace 2 (its only request is covered) ...
		{trace: "2", id: "b", parent: "r", kind: schemas.KindAgent, name: "inner", end: 4},
	}, []tspan{
		// ... so a new trace drops trace 2 before the open trace 3, uncounted.
		{trace: "4", id: "41", parent: "d", kind: schemas.KindTool, name: "t4", end: 5},
		{trace: "3", id: "c", kind: schemas.KindAgent, name: "a3", end: 6},
		{trace: "1", id: "a", kind: schemas.KindAgent, name: "a1", end: 6},
	})
	d := r.dec.(*sessionDecoder)
	r.decode(0)
	r.decode(1)
	if n := r.counter(`canaryd_sessions_evicted_total{reason="max_traces"}`); n != 1 {
		t.Fatalf("evicted %d; want 1", n)
	}
	if a := agents(r.decode(2)); len(a) != 1 || a[0].Tools != "t2" {
		t.Fatalf("inner agent %+v", a)
	}
	a := agents(r.decode(3))
	if len(a) != 2 || a[0].Tools != "t3" || a[1].Tools != "" {
		t.Fatalf("agents %+v; want a3 with t3, a1 without tools", a)
	}
	if n := r.counter(`canaryd_sessions_evicted_total{reason="max_traces"}`); n != 1 {
		t.Fatalf("evicted %d; want still 1 (the settled trace goes uncounted)", n)
	}
	if len(d.index) != 1 { // trace 4
		t.Fatalf("%d traces; want 1", len(d.index))
	}
}

func TestSessionsMaxSpans(t *testing.T) {
	var spans []tspan
	for i := range 5 {
		spans = append(spans, tspan{trace: "1", id: fmt.Sprint(i + 1), parent: "a", kind: schemas.KindTool, name: fmt.Sprint("t", i), start: int64(i), end: int64(i)})
	}
	spans = append(spans, tspan{trace: "1", id: "a", kind: schemas.KindAgent, name: "x", end: 10})
	r := newSessionRig(t, SessionConfig{MaxSpansPerTrace: 3}, spans)
	got := r.decode(0)
	if len(got) != 6 {
		t.Fatalf("%d events; want 6: every span is still emitted", len(got))
	}
	if a := agents(got); a[0].Tools != "t0,t1,t2" {
		t.Fatalf("tools %q; want the first 3", a[0].Tools)
	}
	if n := r.counter("canaryd_sessions_truncated_total"); n != 1 {
		t.Fatalf("truncated %d; want 1", n)
	}
}

// TestSessionsRequestTotals: an agent's request totals count its request
// spans below it (llm, tool, retrieval, other; not nested agent/task spans
// nor evals), those in error, and the median of their durations.
func TestSessionsRequestTotals(t *testing.T) {
	r := newSessionRig(t, SessionConfig{}, []tspan{
		// Below the inner task "b": durations 10 (error) and 20.
		{trace: "1", id: "11", parent: "b", kind: schemas.KindLLM, name: "gpt", start: 5, end: 15, err: true},
		{trace: "1", id: "12", parent: "b", kind: schemas.KindTool, name: "search", start: 15, end: 35},
		{trace: "1", id: "e", parent: "b", kind: schemas.KindEval, name: "score", start: 36, end: 36},
		{trace: "1", id: "b", parent: "a", kind: schemas.KindTask, name: "inner", start: 5, end: 100, err: true},
	}, []tspan{
		// Below the outer agent "a" directly: 30 (error), 40 (under the
		// retrieval), 50; and the inner task with its two.
		{trace: "1", id: "13", parent: "a", kind: schemas.KindRetrieval, name: "kb", start: 100, end: 130, err: true},
		{trace: "1", id: "14", parent: "13", kind: schemas.KindOther, name: "GET /kb", start: 100, end: 140},
		{trace: "1", id: "15", parent: "a", kind: schemas.KindLLM, name: "gpt", start: 140, end: 190},
		{trace: "1", id: "a", kind: schemas.KindAgent, name: "outer", start: 0, end: 200},
	})
	inner := agents(r.decode(0))
	// An even count: the lower middle, 10, not 15.
	if len(inner) != 1 || inner[0].Requests != 2 || inner[0].ReqErrors != 1 || inner[0].ReqMedian != 10 || !inner[0].HasReqMedian {
		t.Fatalf("inner task %+v; want 2 requests, 1 error, median 10", inner)
	}
	outer := agents(r.decode(1))
	if len(outer) != 1 || outer[0].Requests != 5 || outer[0].ReqErrors != 2 || outer[0].ReqMedian != 30 || !outer[0].HasReqMedian {
		t.Fatalf("outer agent %+v; want 5 requests, 2 errors, median 30", outer)
	}
	if outer[0].Tools != "search" || outer[0].Error {
		t.Fatalf("outer agent %+v; want tools search, not in error (the inner task's error is not a request's)", outer[0])
	}
}

// TestSessionsRequestTotalsDurations: only the spans with a duration make the
// median; none, no median. An event carrying its own Requests keeps its
// totals; one without request spans below it gets none.
func TestSessionsRequestTotalsDurations(t *testing.T) {
	r := newSessionRig(t, SessionConfig{}, []tspan{
		{trace: "1", id: "11", parent: "a", kind: schemas.KindLLM, name: "gpt", start: 0, end: 70},
		{trace: "1", id: "12", parent: "a", kind: schemas.KindTool, name: "calc", noDur: true, err: true},
		{trace: "1", id: "13", parent: "a", kind: schemas.KindLLM, name: "gpt", start: 0, end: 10},
		{trace: "1", id: "a", kind: schemas.KindAgent, name: "mixed", end: 100},

		{trace: "2", id: "21", parent: "a", kind: schemas.KindTool, name: "calc", noDur: true},
		{trace: "2", id: "a", kind: schemas.KindAgent, name: "none", end: 100},

		{trace: "3", id: "31", parent: "a", kind: schemas.KindTool, name: "calc", start: 0, end: 5},
		{trace: "3", id: "a", kind: schemas.KindAgent, name: "own", end: 100, requests: 9},

		{trace: "4", id: "b", parent: "a", kind: schemas.KindTask, name: "step", start: 0, end: 5},
		{trace: "4", id: "a", kind: schemas.KindAgent, name: "only-steps", end: 100},
	})
	got := agents(r.decode(0))
	want := []struct {
		requests, errors uint32
		median           float64
		hasMedian        bool
	}{{3, 1, 10, true}, {1, 0, 0, false}, {9, 0, 0, false}, {0, 0, 0, false}, {0, 0, 0, false}}
	if len(got) != len(want) {
		t.Fatalf("%d agent/task events; want %d", len(got), len(want))
	}
	for i, w := range want {
		g := got[i]
		if g.Requests != w.requests || g.ReqErrors != w.errors || g.ReqMedian != w.median || g.HasReqMedian != w.hasMedian {
			t.Errorf("%s: requests %d errors %d median %v (%v); want %d %d %v (%v)", g.Name,
				g.Requests, g.ReqErrors, g.ReqMedian, g.HasReqMedian, w.requests, w.errors, w.median, w.hasMedian)
		}
	}
}

// TestSessionsRequestTotalsTruncated: past MaxSpansPerTrace, spans are left
// out of the totals as they are out of the tool calls.
func TestSessionsRequestTotalsTruncated(t *testing.T) {
	var spans []tspan
	for i := range 5 { // durations 50, 40, 30, 20, 10; the 2nd and the 4th in error
		d := int64(50 - 10*i)
		spans = append(spans, tspan{trace: "1", id: fmt.Sprint(i + 1), parent: "a", kind: schemas.KindTool,
			name: fmt.Sprint("t", i), start: int64(100 * i), end: int64(100*i) + d, err: i%2 == 1})
	}
	spans = append(spans, tspan{trace: "1", id: "a", kind: schemas.KindAgent, name: "x", end: 1000})
	for _, tc := range []struct {
		max              int
		tools            string
		requests, errors uint32
		median           float64
	}{
		{3, "t0,t1,t2", 3, 1, 40},
		{4, "t0,t1,t2,t3", 4, 2, 30}, // even: 20 30 | 40 50 → 30
		{0, "t0,t1,t2,t3,t4", 5, 2, 30},
	} {
		a := agents(newSessionRig(t, SessionConfig{MaxSpansPerTrace: tc.max}, spans).decode(0))
		if len(a) != 1 || a[0].Tools != tc.tools || a[0].Requests != tc.requests || a[0].ReqErrors != tc.errors ||
			a[0].ReqMedian != tc.median || !a[0].HasReqMedian {
			t.Errorf("MaxSpansPerTrace %d: agent %+v; want tools %s, %d requests, %d errors, median %v",
				tc.max, a, tc.tools, tc.requests, tc.errors, tc.median)
		}
	}
}

// TestSpanNodeSize: otlp.md states the memory of a remembered span.
func TestSpanNodeSize(t *testing.T) {
	if n := unsafe.Sizeof(spanNode{}); n != 64 {
		t.Fatalf("spanNode is %d bytes; want 64 (otlp.md, Sessions: Memory)", n)
	}
}

// TestSessionsPassThrough: events without a trace id, eval events and
// events from the future pass untouched and are not remembered.
func TestSessionsPassThrough(t *testing.T) {
	future := sessionClock().Add(11 * time.Minute).Sub(t0).Milliseconds()
	r := newSessionRig(t, SessionConfig{}, []tspan{
		{kind: schemas.KindAgent, name: "no-trace", end: 1},
		{trace: "1", id: "b", parent: "a", kind: schemas.KindEval, name: "score", end: 1},
		{trace: "1", id: "c", parent: "a", kind: schemas.KindTool, name: "future", end: future},
		{trace: "2", id: "d", parent: "e", kind: schemas.KindTool, name: "now", end: 2},
	})
	d := r.dec.(*sessionDecoder)
	got := r.decode(0)
	if len(got) != 4 || got[0].HasOutcome || got[0].Kind != "agent" {
		t.Fatalf("events %+v", got)
	}
	if len(d.index) != 1 || d.newest != t0.Add(2*time.Millisecond).UnixNano() {
		t.Fatalf("%d traces, newest %d; want only trace 2, at 2 ms", len(d.index), d.newest)
	}
}

// TestSessionsNonHexIDs: ids that are not hex (agent events v1 may carry
// any string) are hashed, and assembly works the same.
func TestSessionsNonHexIDs(t *testing.T) {
	r := newSessionRig(t, SessionConfig{}, []tspan{
		{trace: "run-42", id: "step-1", parent: "agent-root", kind: schemas.KindTool, name: "search", start: 1, end: 2},
		{trace: "run-43", id: "step-1", parent: "agent-root", kind: schemas.KindTool, name: "other", start: 1, end: 2},
		{trace: "run-42", id: "step-2", parent: "agent-root", kind: schemas.KindLLM, name: "gpt", start: 0, end: 1, in: 3},
		{trace: "run-42", id: "agent-root", kind: schemas.KindAgent, name: "ag", start: 0, end: 3},
	})
	a := agents(r.decode(0))
	if len(a) != 1 || a[0].Tools != "search" || a[0].In != 3 {
		t.Fatalf("agent %+v; want tools search, 3 input tokens", a)
	}
}

func TestSessionsDecodeError(t *testing.T) {
	r := newSessionRig(t, SessionConfig{})
	n := 0
	if err := r.dec.Decode([]byte{0xff}, func(*schemas.Event) { n++ }); !errors.Is(err, errFake) || n != 0 {
		t.Fatalf("err %v, %d events; want errFake and none", err, n)
	}
}

func TestSessionsConfig(t *testing.T) {
	for _, c := range []SessionConfig{{MaxTraces: -1}, {MaxSpansPerTrace: MaxSessionSpansPerTrace + 1}, {Timeout: -1}, {MaxFuture: -time.Second}} {
		if c.Validate() == nil {
			t.Errorf("%+v: valid; want an error", c)
		}
	}
	defer func() {
		if recover() == nil {
			t.Fatal("Sessions accepted an invalid config")
		}
	}()
	Sessions(JSONDecoder, SessionConfig{MaxTraces: -1})
}

// otlpAgents decodes records with Sessions(OTLPTraces) and returns the agent
// events and the number of events.
func otlpAgents(t *testing.T, enc string, recs ...[]byte) ([]sev, int) {
	t.Helper()
	d := Sessions(OTLPTraces(OTLPConfig{Encoding: enc}), SessionConfig{Clock: func() time.Time { return time.Unix(1764095656, 0) }})()
	var out []sev
	n := 0
	for _, rec := range recs {
		if err := d.Decode(rec, func(e *schemas.Event) {
			n++
			if e.Kind == schemas.KindAgent {
				out = append(out, toSev(e))
			}
		}); err != nil {
			t.Fatal(err)
		}
	}
	return out, n
}

// TestSessionsOTLPFixture assembles the 10 agent turns of bench-genai-50
// through the OTLP decoders: from one record in each encoding, and from one
// record per span.
func TestSessionsOTLPFixture(t *testing.T) {
	pb, _ := otlpAgents(t, EncodingOTLPProto, readFixture(t, "bench-genai-50.otlp.pb"))
	js, _ := otlpAgents(t, EncodingOTLPJSON, readFixture(t, "bench-genai-50.otlp.json"))
	if len(pb) != 10 || !slices.Equal(pb, js) {
		t.Fatalf("proto %d agents, json %d; want the same 10", len(pb), len(js))
	}
	errs := uint32(0)
	for _, a := range pb {
		// The agent spans carry their own usage (3610/402), which stands.
		if a.Tools != "search_orders,search_orders" || a.In != 3610 || a.Out != 402 || !a.HasOutcome || !a.Success {
			t.Fatalf("agent %+v", a)
		}
		// Two chat spans of 812.5 ms, two tool spans of 48.2 ms: the
		// lower middle is 48.2.
		if a.Requests != 4 || a.ReqMedian != 48.2 || !a.HasReqMedian {
			t.Fatalf("agent %+v; want 4 requests, median 48.2 ms", a)
		}
		errs += a.ReqErrors
	}
	if errs != 1 { // turn 7's second tool call timed out
		t.Fatalf("%d request errors over the agents; want 1", errs)
	}

	// One record per span, spans in reverse order (children first).
	var doc map[string][]map[string]any
	if err := json.Unmarshal(readFixture(t, "bench-genai-50.otlp.json"), &doc); err != nil {
		t.Fatal(err)
	}
	rs := doc["resourceSpans"][0]
	scope := rs["scopeSpans"].([]any)[0].(map[string]any)
	spans := scope["spans"].([]any)
	var recs [][]byte
	for i := len(spans) - 1; i >= 0; i-- {
		one := map[string]any{"resource": rs["resource"], "scopeSpans": []any{map[string]any{"scope": scope["scope"], "spans": []any{spans[i]}}}}
		b, err := json.Marshal(map[string]any{"resourceSpans": []any{one}})
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, b)
	}
	split, n := otlpAgents(t, EncodingOTLPJSON, recs...)
	slices.Reverse(split) // reverse order of traces, same agents
	if n != 50 || !slices.Equal(split, pb) {
		t.Fatalf("%d events, agents %+v; want 50 and %+v", n, split, pb)
	}
}

// TestSessionsAllocs: a warm Sessions decoder over OTLP allocates nothing.
func TestSessionsAllocs(t *testing.T) {
	rec := readFixture(t, "bench-genai-50.otlp.pb")
	d := Sessions(OTLPTraces(OTLPConfig{}), SessionConfig{Clock: func() time.Time { return time.Unix(1764095656, 0) }})()
	emit := func(*schemas.Event) {}
	for range 10 {
		if err := d.Decode(rec, emit); err != nil {
			t.Fatal(err)
		}
	}
	if n := testing.AllocsPerRun(100, func() { _ = d.Decode(rec, emit) }); n > 0 {
		t.Fatalf("%v allocations per record; want 0", n)
	}
}

// BenchmarkSessionsOTLPProto measures Sessions(OTLPTraces) on the 50-span
// bench record; compare with BenchmarkOTLPProto.
func BenchmarkSessionsOTLPProto(b *testing.B) {
	rec := readFixture(b, "bench-genai-50.otlp.pb")
	benchDecode(b, Sessions(OTLPTraces(OTLPConfig{}), SessionConfig{})(), rec)
}

// FuzzSessions decodes two OTLP records (the input cut in two) through
// Sessions with small limits: no panic, every agent event within the event
// limits, and its request totals within the spans it can cover.
func FuzzSessions(f *testing.F) {
	for _, name := range []string{"bench-genai-50.otlp.pb", "multi-resource.otlp.pb", "genai-execute-tool-span.otlp.pb"} {
		b := readFixture(f, name)
		f.Add(b, uint16(len(b)/2))
	}
	f.Fuzz(func(t *testing.T, b []byte, cut uint16) {
		d := Sessions(OTLPTraces(OTLPConfig{}), SessionConfig{MaxTraces: 3, MaxSpansPerTrace: 4, Timeout: time.Second})()
		c := min(int(cut), len(b))
		for _, rec := range [][]byte{b[:c], b[c:], b} {
			_ = d.Decode(rec, func(e *schemas.Event) {
				if len(e.ToolCalls) > schemas.MaxToolCalls || e.InputTokens < 0 || e.InputTokens > schemas.MaxTokens ||
					e.HasCost && !(e.CostUSD >= 0 && e.CostUSD <= schemas.MaxCostUSD) {
					t.Fatalf("event out of limits: %+v", e)
				}
				if e.Requests > 4 || e.RequestErrors > e.Requests || e.HasRequestMedian && e.Requests == 0 ||
					!(e.RequestMedianMS >= 0 && e.RequestMedianMS <= schemas.MaxDurationMS) || !e.HasRequestMedian && e.RequestMedianMS != 0 {
					t.Fatalf("request totals beyond the 4 spans a trace keeps: %+v", e)
				}
			})
		}
	})
}
