package schemas

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// eventDiff returns "" when a and b hold the same event, else what differs.
// nil and empty byte slices are equal: both mean "no value".
func eventDiff(a, b *Event) string {
	var diffs []string
	bs := func(name string, x, y []byte) {
		if !bytes.Equal(x, y) {
			diffs = append(diffs, fmt.Sprintf("%s: got %q; want %q", name, x, y))
		}
	}
	eq := func(name string, x, y any) {
		if x != y {
			diffs = append(diffs, fmt.Sprintf("%s: got %v; want %v", name, x, y))
		}
	}
	bs("Rollout", a.Rollout, b.Rollout)
	bs("Version", a.Version, b.Version)
	eq("Kind", a.Kind, b.Kind)
	bs("Name", a.Name, b.Name)
	eq("TS", a.TS, b.TS)
	eq("DurationMS", a.DurationMS, b.DurationMS)
	eq("Error", a.Error, b.Error)
	bs("ErrorType", a.ErrorType, b.ErrorType)
	eq("InputTokens", a.InputTokens, b.InputTokens)
	eq("OutputTokens", a.OutputTokens, b.OutputTokens)
	eq("CostUSD", a.CostUSD, b.CostUSD)
	eq("ContextTokens", a.ContextTokens, b.ContextTokens)
	eq("ContextLimit", a.ContextLimit, b.ContextLimit)
	bs("TraceID", a.TraceID, b.TraceID)
	bs("SpanID", a.SpanID, b.SpanID)
	bs("ParentSpanID", a.ParentSpanID, b.ParentSpanID)
	bs("SessionID", a.SessionID, b.SessionID)
	bs("DeploymentID", a.DeploymentID, b.DeploymentID)
	bs("Commit", a.Commit, b.Commit)
	if len(a.ToolCalls) != len(b.ToolCalls) {
		diffs = append(diffs, fmt.Sprintf("ToolCalls: got %q; want %q", a.ToolCalls, b.ToolCalls))
	} else {
		for i := range a.ToolCalls {
			bs(fmt.Sprintf("ToolCalls[%d]", i), a.ToolCalls[i], b.ToolCalls[i])
		}
	}
	eq("Requests", a.Requests, b.Requests)
	eq("RequestErrors", a.RequestErrors, b.RequestErrors)
	eq("RequestMedianMS", a.RequestMedianMS, b.RequestMedianMS)
	eq("HasRequestMedian", a.HasRequestMedian, b.HasRequestMedian)
	eq("HasDuration", a.HasDuration, b.HasDuration)
	eq("HasCost", a.HasCost, b.HasCost)
	eq("HasOutcome", a.HasOutcome, b.HasOutcome)
	eq("OutcomeSuccess", a.OutcomeSuccess, b.OutcomeSuccess)
	eq("HasOutcomeSuccess", a.HasOutcomeSuccess, b.HasOutcomeSuccess)
	eq("OutcomeScore", a.OutcomeScore, b.OutcomeScore)
	eq("HasOutcomeScore", a.HasOutcomeScore, b.HasOutcomeScore)
	eq("OutcomeHallucinated", a.OutcomeHallucinated, b.OutcomeHallucinated)
	eq("HasHallucination", a.HasHallucination, b.HasHallucination)
	return strings.Join(diffs, "\n")
}

func ts(s string) int64 {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	return t.UnixNano()
}

func TestDecodeValid(t *testing.T) {
	b := func(s string) []byte { return []byte(s) }
	ns := ts("2025-11-25T18:34:12.123456789Z")
	f := func(name, rec string, want Event) {
		t.Helper()
		var d Decoder
		var ev Event
		if err := d.Decode([]byte(rec), &ev); err != nil {
			t.Fatalf("%s: Decode(%s): unexpected error: %v", name, rec, err)
		}
		if diff := eventDiff(&ev, &want); diff != "" {
			t.Fatalf("%s: Decode(%s):\n%s", name, rec, diff)
		}
	}

	f("minimal", `{"rollout":"r","version":"v1","ts":"2025-11-25T18:34:12Z"}`,
		Event{Rollout: b("r"), Version: b("v1"), TS: ts("2025-11-25T18:34:12Z")})
	f("integer ts is unix nanoseconds", `{"rollout":"r","version":"v1","ts":1764095652123456789}`,
		Event{Rollout: b("r"), Version: b("v1"), TS: 1764095652123456789})
	f("max int64 ts", `{"rollout":"r","version":"v1","ts":9223372036854775807}`,
		Event{Rollout: b("r"), Version: b("v1"), TS: math.MaxInt64})
	f("first nanosecond", `{"rollout":"r","version":"v1","ts":1}`,
		Event{Rollout: b("r"), Version: b("v1"), TS: 1})

	for _, tc := range []struct{ in, want string }{
		{"2025-11-25T18:34:12.1Z", "2025-11-25T18:34:12.1Z"},
		{"2025-11-25T18:34:12.123Z", "2025-11-25T18:34:12.123Z"},
		{"2025-11-25T18:34:12.123456Z", "2025-11-25T18:34:12.123456Z"},
		{"2025-11-25T18:34:12.123456789Z", "2025-11-25T18:34:12.123456789Z"},
		{"2025-11-25T18:34:12.123456789999Z", "2025-11-25T18:34:12.123456789Z"}, // truncated
		{"2025-11-26T00:04:12.5+05:30", "2025-11-25T18:34:12.5Z"},
		{"2025-11-25T10:34:12-08:00", "2025-11-25T18:34:12Z"},
		{"2025-11-25T18:34:12+00:00", "2025-11-25T18:34:12Z"},
		{"2025-11-25T18:34:12-00:00", "2025-11-25T18:34:12Z"},
		{"2025-11-25t18:34:12z", "2025-11-25T18:34:12Z"},
		{"2024-02-29T23:59:59.999999999Z", "2024-02-29T23:59:59.999999999Z"},
		{"2000-02-29T00:00:00Z", "2000-02-29T00:00:00Z"},
		{"1970-01-01T00:00:00.000000001Z", "1970-01-01T00:00:00.000000001Z"},
		{"1970-01-01T00:30:00+00:29", "1970-01-01T00:01:00Z"},
		{"1969-12-31T23:30:00-01:00", "1970-01-01T00:30:00Z"},
		{"2262-04-11T23:47:16.854775807Z", "2262-04-11T23:47:16.854775807Z"},
	} {
		f("ts "+tc.in, `{"rollout":"r","version":"v1","ts":"`+tc.in+`"}`,
			Event{Rollout: b("r"), Version: b("v1"), TS: ts(tc.want)})
	}

	f("every field", `{
		"rollout": "support-agent", "version": "v42", "kind": "agent", "name": "resolve_ticket",
		"ts": "2025-11-25T18:34:12.123456789Z", "duration_ms": 812.5, "status": "error",
		"error_type": "tool_timeout", "input_tokens": 1843, "output_tokens": 212, "cost_usd": 0.000404,
		"context_tokens": 2055, "context_limit": 128000, "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
		"span_id": "00f067aa0ba902b7", "parent_span_id": "a3ce929d0e0e4736", "session_id": "sess-1",
		"deployment_id": "support-agent-7d9c6", "commit": "3f2c1ab",
		"tool_calls": ["search_orders", "refund", "search_orders"],
		"requests": 7, "request_errors": 2, "request_median_ms": 95.5,
		"outcome": {"success": false, "score": 0.25, "hallucination": true},
		"attrs": {"region": "eu-west-1"}
	}`, Event{
		Rollout: b("support-agent"), Version: b("v42"), Kind: KindAgent, Name: b("resolve_ticket"),
		TS: ns, DurationMS: 812.5, HasDuration: true, Error: true, ErrorType: b("tool_timeout"),
		InputTokens: 1843, OutputTokens: 212, CostUSD: 0.000404, HasCost: true,
		ContextTokens: 2055, ContextLimit: 128000, TraceID: b("4bf92f3577b34da6a3ce929d0e0e4736"),
		SpanID: b("00f067aa0ba902b7"), ParentSpanID: b("a3ce929d0e0e4736"), SessionID: b("sess-1"),
		DeploymentID: b("support-agent-7d9c6"), Commit: b("3f2c1ab"),
		ToolCalls: [][]byte{b("search_orders"), b("refund"), b("search_orders")},
		Requests:  7, RequestErrors: 2, RequestMedianMS: 95.5, HasRequestMedian: true,
		HasOutcome: true, OutcomeSuccess: false, HasOutcomeSuccess: true, OutcomeScore: 0.25,
		HasOutcomeScore: true, OutcomeHallucinated: true, HasHallucination: true,
	})

	for i, name := range kindNames {
		f("kind "+name, `{"rollout":"r","version":"v","ts":1,"kind":"`+name+`"}`,
			Event{Rollout: b("r"), Version: b("v"), TS: 1, Kind: Kind(i)})
	}
	f("status ok", `{"rollout":"r","version":"v","ts":1,"status":"ok","error_type":""}`,
		Event{Rollout: b("r"), Version: b("v"), TS: 1})
	f("nulls are absent", `{"rollout":"r","version":"v","ts":1,"kind":null,"name":null,
		"duration_ms":null,"status":null,"input_tokens":null,"cost_usd":null,"tool_calls":null,
		"outcome":null,"attrs":null,"trace_id":null,"requests":null,"request_errors":null,"request_median_ms":null}`,
		Event{Rollout: b("r"), Version: b("v"), TS: 1})
	f("unknown fields are skipped", `{"x":{"a":[1,{"b":null},"c",true,false,-1.5e-3]},
		"rollout":"r","y":[],"version":"v","z":{},"ts":1,"Rollout":5,"w":"\u00e9\n"}`,
		Event{Rollout: b("r"), Version: b("v"), TS: 1})
	f("escapes", `{"rollout":"r\"\\\/\b\f\n\r\t","version":"\u0076\u00e9\u20ac\ud83d\ude00",
		"name":"lone \ud800 surrogate \udc00 \ud800\u0041","ts":1}`,
		Event{Rollout: b("r\"\\/\b\f\n\r\t"), Version: b("vé€😀"),
			Name: b("lone \uFFFD surrogate \uFFFD \uFFFDA"), TS: 1})
	f("deepest unknown value", `{"a":`+strings.Repeat("[", maxDepth-1)+strings.Repeat("]", maxDepth-1)+`,"rollout":"r","version":"v","ts":1}`,
		Event{Rollout: b("r"), Version: b("v"), TS: 1})
	f("escaped key", `{"roll\u006fut":"r","version":"v","ts":1}`,
		Event{Rollout: b("r"), Version: b("v"), TS: 1})
	f("raw UTF-8", `{"rollout":"ロールアウト","version":"v","ts":1,"tool_calls":["検索"]}`,
		Event{Rollout: b("ロールアウト"), Version: b("v"), TS: 1, ToolCalls: [][]byte{b("検索")}})
	f("white space", " \t\r\n{ \"rollout\" : \"r\" ,\n\"version\":\"v\",\"ts\" :1 , \"tool_calls\" : [ \"a\" , \"b\" ] }\n ",
		Event{Rollout: b("r"), Version: b("v"), TS: 1, ToolCalls: [][]byte{b("a"), b("b")}})
	f("empty outcome", `{"rollout":"r","version":"v","ts":1,"outcome":{}}`,
		Event{Rollout: b("r"), Version: b("v"), TS: 1, HasOutcome: true})
	f("partial outcome", `{"rollout":"r","version":"v","ts":1,"outcome":{"score":0,"judge":"gpt","success":null}}`,
		Event{Rollout: b("r"), Version: b("v"), TS: 1, HasOutcome: true, HasOutcomeScore: true})
	f("outcome score 1", `{"rollout":"r","version":"v","ts":1,"outcome":{"score":1.0,"success":true}}`,
		Event{Rollout: b("r"), Version: b("v"), TS: 1, HasOutcome: true, OutcomeScore: 1,
			HasOutcomeScore: true, OutcomeSuccess: true, HasOutcomeSuccess: true})
	f("empty tool_calls", `{"rollout":"r","version":"v","ts":1,"tool_calls":[]}`,
		Event{Rollout: b("r"), Version: b("v"), TS: 1})
	f("zero and negative zero", `{"rollout":"r","version":"v","ts":1,"duration_ms":-0.0,"cost_usd":0,"input_tokens":-0,
		"requests":-0,"request_errors":0,"request_median_ms":-0}`,
		Event{Rollout: b("r"), Version: b("v"), TS: 1, HasDuration: true, HasCost: true, HasRequestMedian: true})
	// request_errors ≤ requests holds whichever comes first; either alone is
	// taken as it is (null is absent, so it does not count as given).
	f("request_errors before requests", `{"rollout":"r","version":"v","ts":1,"request_errors":3,"requests":3}`,
		Event{Rollout: b("r"), Version: b("v"), TS: 1, Requests: 3, RequestErrors: 3})
	f("request_errors alone", `{"rollout":"r","version":"v","ts":1,"request_errors":3,"requests":null}`,
		Event{Rollout: b("r"), Version: b("v"), TS: 1, RequestErrors: 3})
	f("requests alone", `{"rollout":"r","version":"v","ts":1,"requests":12,"request_median_ms":1.5e2}`,
		Event{Rollout: b("r"), Version: b("v"), TS: 1, Requests: 12, RequestMedianMS: 150, HasRequestMedian: true})
	f("number forms", `{"rollout":"r","version":"v","ts":1,"duration_ms":1.5e3,"cost_usd":25E-2}`,
		Event{Rollout: b("r"), Version: b("v"), TS: 1, DurationMS: 1500, HasDuration: true, CostUSD: 0.25, HasCost: true})
	f("long mantissa", `{"rollout":"r","version":"v","ts":1,"duration_ms":0.1000000000000000055511151231257827}`,
		Event{Rollout: b("r"), Version: b("v"), TS: 1, DurationMS: 0.1, HasDuration: true})
	f("limits", fmt.Sprintf(`{"rollout":%q,"version":"v","ts":1,"input_tokens":%d,"output_tokens":%d,
		"context_tokens":%d,"context_limit":%d,"duration_ms":%d,"cost_usd":%d,
		"requests":%d,"request_errors":%d,"request_median_ms":%d}`,
		strings.Repeat("r", MaxStringBytes), MaxTokens, MaxTokens, MaxTokens, MaxTokens, MaxDurationMS, MaxCostUSD,
		MaxRequests, MaxRequests, MaxDurationMS),
		Event{Rollout: b(strings.Repeat("r", MaxStringBytes)), Version: b("v"), TS: 1,
			InputTokens: MaxTokens, OutputTokens: MaxTokens, ContextTokens: MaxTokens, ContextLimit: MaxTokens,
			DurationMS: MaxDurationMS, HasDuration: true, CostUSD: MaxCostUSD, HasCost: true,
			Requests: MaxRequests, RequestErrors: MaxRequests, RequestMedianMS: MaxDurationMS, HasRequestMedian: true})

	var calls []string
	var want [][]byte
	for i := range MaxToolCalls {
		calls = append(calls, fmt.Sprintf("%q", fmt.Sprint("tool", i)))
		want = append(want, b(fmt.Sprint("tool", i)))
	}
	f("MaxToolCalls", `{"rollout":"r","version":"v","ts":1,"tool_calls":[`+strings.Join(calls, ",")+`]}`,
		Event{Rollout: b("r"), Version: b("v"), TS: 1, ToolCalls: want})
}

func TestDecodeAttrs(t *testing.T) {
	var entries []string
	for i := range MaxAttrs {
		entries = append(entries, fmt.Sprintf(`"k%d":"v%d"`, i, i))
	}
	rec := `{"rollout":"r","version":"v","ts":1,"attrs":{` + strings.Join(entries, ",") + `,"k\u00e9":""}}`
	var d Decoder
	var ev Event
	if err := d.Decode([]byte(rec), &ev); err == nil {
		t.Fatalf("Decode with %d attrs: got nil error; want too many entries", MaxAttrs+1)
	}
	rec = `{"rollout":"r","version":"v","ts":1,"attrs":{` + strings.Join(entries[1:], ",") + `,"k\u00e9":""}}`
	if err := d.Decode([]byte(rec), &ev); err != nil {
		t.Fatalf("Decode with %d attrs: %v", MaxAttrs, err)
	}
	if v, ok := d.Attr("k7"); !ok || string(v) != "v7" {
		t.Fatalf(`Attr("k7") = %q, %v; want "v7", true`, v, ok)
	}
	if v, ok := d.Attr("ké"); !ok || len(v) != 0 {
		t.Fatalf(`Attr("ké") = %q, %v; want "", true`, v, ok)
	}
	if v, ok := d.Attr("k0"); ok {
		t.Fatalf(`Attr("k0") = %q, %v; want absent`, v, ok)
	}
	n := 0
	d.VisitAttrs(func(k, v []byte) {
		if n < MaxAttrs-1 && (string(k) != fmt.Sprint("k", n+1) || string(v) != fmt.Sprint("v", n+1)) {
			t.Errorf("VisitAttrs entry %d: got %q=%q", n, k, v)
		}
		n++
	})
	if n != MaxAttrs {
		t.Fatalf("VisitAttrs visited %d entries; want %d", n, MaxAttrs)
	}
	// A failed decode and a record without attrs leave none.
	if err := d.Decode([]byte(`{"rollout":"r","version":"v","ts":1}`), &ev); err != nil {
		t.Fatal(err)
	}
	if _, ok := d.Attr("k7"); ok {
		t.Fatalf("Attr after a record without attrs: found a stale entry")
	}
}

func TestDecodeMalformed(t *testing.T) {
	const ok = `"rollout":"r","version":"v","ts":1`
	f := func(rec, field, reason string) {
		t.Helper()
		var d Decoder
		ev := Event{Rollout: []byte("stale"), TS: 42}
		err := d.Decode([]byte(rec), &ev)
		var de *DecodeError
		if !errors.As(err, &de) {
			t.Fatalf("Decode(%.200q): got error %v; want a *DecodeError", rec, err)
		}
		if de.Field != field || de.Reason != reason {
			t.Fatalf("Decode(%.200q): got Field %q Reason %q; want %q %q", rec, de.Field, de.Reason, field, reason)
		}
		if diff := eventDiff(&ev, &Event{}); diff != "" {
			t.Fatalf("Decode(%.200q): event not reset after an error:\n%s", rec, diff)
		}
	}

	// Not JSON, or not an object.
	for _, rec := range []string{
		``, ` `, `hello`, `{`, `{"rollout":"r"`, `{'rollout':'r'}`, `{rollout:"r"}`, `{"a":1,}`, `{"a" 1}`,
		`{"a":1}{}`, `{"a":1} x`, `{"a":[1,]}`, `{"a":[1 2]}`, `{"a":tru}`, `{"a":nul}`, `{"a":True}`,
		`{"a":NaN}`, `{"a":Infinity}`, `{"a":-Infinity}`, `{"a":+1}`, `{"a":01}`, `{"a":1.}`, `{"a":.5}`,
		`{"a":1e}`, `{"a":1e+}`, `{"a":-}`, `{"a":0x10}`, `{"a":"x` + "\t" + `"}`, `{"a":"\q"}`, `{"a":"\u12"}`,
		`{"a":"\u12g4"}`, `{"a":"x}`, `{"a":"\`, "{\"a\":\"\x00\"}", `{"a":1}` + "\x00", `{"a":{"b":}}`,
		`{"a":[}`, `{"a":{]}`, `{"a":"b":"c"}`, `{"a":1 "b":2}`, `{,}`, `{"a"}`,
		`{` + ok + `,"duration_ms":NaN}`, `{` + ok + `,"duration_ms":-Inf}`, `{` + ok + `,"input_tokens":012}`,
		// A field error before a syntax error: the syntax error wins.
		`{"duration_ms":"x",` + ok + `,}`,
	} {
		f(rec, "", "not JSON")
	}
	for _, rec := range []string{`[1,2]`, `"rollout"`, `null`, `true`, `1`, ` [] `} {
		f(rec, "", "not an object")
	}
	f(`{"a":`+strings.Repeat("[", maxDepth)+strings.Repeat("]", maxDepth)+`,`+ok+`}`, "", "nested too deep")
	f(`{"a":`+strings.Repeat(`{"a":`, maxDepth)+`1`+strings.Repeat("}", maxDepth)+`,`+ok+`}`, "", "nested too deep")

	// Required fields.
	f(`{}`, "rollout", "missing")
	f(`{"version":"v","ts":1}`, "rollout", "missing")
	f(`{"rollout":null,"version":"v","ts":1}`, "rollout", "missing")
	f(`{"rollout":"","version":"v","ts":1}`, "rollout", "empty")
	f(`{"rollout":"r","ts":1}`, "version", "missing")
	f(`{"rollout":"r","version":"","ts":1}`, "version", "empty")
	f(`{"rollout":"r","version":"v"}`, "ts", "missing")
	f(`{"rollout":"r","version":"v","ts":null}`, "ts", "missing")
	f(`{"rollout":"r","version":"v","ts":""}`, "ts", "invalid RFC 3339 time")

	// Wrong types.
	f(`{"rollout":5,"version":"v","ts":1}`, "rollout", "not a string")
	f(`{"rollout":"r","version":["v"],"ts":1}`, "version", "not a string")
	f(`{`+ok+`,"name":{}}`, "name", "not a string")
	f(`{`+ok+`,"kind":1}`, "kind", "not a string")
	f(`{`+ok+`,"trace_id":123}`, "trace_id", "not a string")
	f(`{`+ok+`,"duration_ms":"12"}`, "duration_ms", "not a number")
	f(`{`+ok+`,"duration_ms":"NaN"}`, "duration_ms", "not a number")
	f(`{`+ok+`,"cost_usd":"Infinity"}`, "cost_usd", "not a number")
	f(`{`+ok+`,"cost_usd":true}`, "cost_usd", "not a number")
	f(`{`+ok+`,"input_tokens":"100"}`, "input_tokens", "not a number")
	f(`{`+ok+`,"output_tokens":1.5}`, "output_tokens", "not an integer")
	f(`{`+ok+`,"context_tokens":1e3}`, "context_tokens", "not an integer")
	f(`{`+ok+`,"context_limit":128000.0}`, "context_limit", "not an integer")
	f(`{`+ok+`,"requests":"5"}`, "requests", "not a number")
	f(`{`+ok+`,"requests":5.0}`, "requests", "not an integer")
	f(`{`+ok+`,"requests":5e0}`, "requests", "not an integer")
	f(`{`+ok+`,"request_errors":true}`, "request_errors", "not a number")
	f(`{`+ok+`,"request_errors":0.5}`, "request_errors", "not an integer")
	f(`{`+ok+`,"request_median_ms":"30"}`, "request_median_ms", "not a number")
	f(`{`+ok+`,"request_median_ms":[30]}`, "request_median_ms", "not a number")
	f(`{"rollout":"r","version":"v","ts":true}`, "ts", "not an RFC 3339 string or an integer")
	f(`{"rollout":"r","version":"v","ts":{}}`, "ts", "not an RFC 3339 string or an integer")
	f(`{"rollout":"r","version":"v","ts":1.7e18}`, "ts", "not an integer")
	f(`{"rollout":"r","version":"v","ts":1764095652.5}`, "ts", "not an integer")
	f(`{`+ok+`,"status":false}`, "status", "not a string")
	f(`{`+ok+`,"tool_calls":"search"}`, "tool_calls", "not an array")
	f(`{`+ok+`,"tool_calls":["a",1]}`, "tool_calls", "item not a string")
	f(`{`+ok+`,"tool_calls":[null]}`, "tool_calls", "item not a string")
	f(`{`+ok+`,"outcome":"ok"}`, "outcome", "not an object")
	f(`{`+ok+`,"outcome":[]}`, "outcome", "not an object")
	f(`{`+ok+`,"outcome":{"success":"yes"}}`, "outcome.success", "not a boolean")
	f(`{`+ok+`,"outcome":{"hallucination":0}}`, "outcome.hallucination", "not a boolean")
	f(`{`+ok+`,"outcome":{"score":"high"}}`, "outcome.score", "not a number")
	f(`{`+ok+`,"attrs":[]}`, "attrs", "not an object")
	f(`{`+ok+`,"attrs":"a=b"}`, "attrs", "not an object")
	f(`{`+ok+`,"attrs":{"a":1}}`, "attrs", "value not a string")
	f(`{`+ok+`,"attrs":{"a":null}}`, "attrs", "value not a string")
	f(`{`+ok+`,"attrs":{"a":{"b":"c"}}}`, "attrs", "value not a string")

	// Bad values.
	f(`{`+ok+`,"kind":"robot"}`, "kind", "unknown value")
	f(`{`+ok+`,"kind":"LLM"}`, "kind", "unknown value")
	f(`{`+ok+`,"kind":""}`, "kind", "unknown value")
	f(`{`+ok+`,"status":"failed"}`, "status", "unknown value")
	f(`{`+ok+`,"duration_ms":-1}`, "duration_ms", "negative")
	f(`{`+ok+`,"duration_ms":-1e-400}`, "duration_ms", "negative")
	f(`{`+ok+`,"duration_ms":86400000.001}`, "duration_ms", "too large")
	f(`{`+ok+`,"duration_ms":1e400}`, "duration_ms", "too large")
	f(`{`+ok+`,"cost_usd":-0.01}`, "cost_usd", "negative")
	f(`{`+ok+`,"cost_usd":10000.5}`, "cost_usd", "too large")
	f(`{`+ok+`,"input_tokens":-1}`, "input_tokens", "negative")
	f(`{`+ok+`,"input_tokens":100000001}`, "input_tokens", "too large")
	f(`{`+ok+`,"output_tokens":99999999999999999999999999}`, "output_tokens", "too large")
	f(`{`+ok+`,"output_tokens":-99999999999999999999999999}`, "output_tokens", "negative")
	f(`{`+ok+`,"context_limit":9223372036854775808}`, "context_limit", "too large")
	f(`{`+ok+`,"requests":-1}`, "requests", "negative")
	f(`{`+ok+`,"requests":2147483648}`, "requests", "too large")
	f(`{`+ok+`,"requests":99999999999999999999999999}`, "requests", "too large")
	f(`{`+ok+`,"request_errors":-3}`, "request_errors", "negative")
	f(`{`+ok+`,"request_errors":4294967296}`, "request_errors", "too large")
	f(`{`+ok+`,"request_median_ms":-0.5}`, "request_median_ms", "negative")
	f(`{`+ok+`,"request_median_ms":86400000.001}`, "request_median_ms", "too large")
	f(`{`+ok+`,"request_median_ms":1e400}`, "request_median_ms", "too large")
	f(`{`+ok+`,"requests":2,"request_errors":3}`, "request_errors", "greater than requests")
	f(`{"request_errors":1,"requests":0,`+ok+`}`, "request_errors", "greater than requests")
	f(`{`+ok+`,"outcome":{"score":1.5}}`, "outcome.score", "outside 0..1")
	f(`{`+ok+`,"outcome":{"score":-0.1}}`, "outcome.score", "outside 0..1")
	f(`{`+ok+`,"outcome":{"score":1e999}}`, "outcome.score", "outside 0..1")

	// Time.
	for _, s := range []string{
		"yesterday", "2025-11-25", "2025-11-25T18:34:12", "2025-11-25 18:34:12Z", "2025-11-25T18:34:12.Z",
		"2025-11-25T18:34:12+0100", "2025-11-25T18:34:12+01", "2025-11-25T18:34:12+24:00", "2025-11-25T18:34:12+01:60",
		"2025-13-01T00:00:00Z", "2025-00-01T00:00:00Z", "2025-02-29T00:00:00Z", "2025-04-31T00:00:00Z",
		"1900-02-29T00:00:00Z", "2025-11-00T00:00:00Z", "2025-11-25T24:00:00Z", "2025-11-25T23:60:00Z",
		"2025-11-25T23:59:60Z", "2025-11-25T18:34:12ZZ", "2025-11-25T18:34:12.1.2Z", "+2025-11-25T18:34:12Z",
		"2025-1-25T18:34:12Z", "2025-11-25T18:34:1aZ", "1764095652123456789", "2025-11-25T18:34:12,5Z",
		"２０２５-11-25T18:34:12Z",
	} {
		f(`{"rollout":"r","version":"v","ts":"`+s+`"}`, "ts", "invalid RFC 3339 time")
	}
	f(`{"rollout":"r","version":"v","ts":"1970-01-01T00:00:00Z"}`, "ts", "not after the Unix epoch")
	f(`{"rollout":"r","version":"v","ts":"1969-12-31T23:59:59.999999999Z"}`, "ts", "not after the Unix epoch")
	f(`{"rollout":"r","version":"v","ts":"0000-01-01T00:00:00Z"}`, "ts", "not after the Unix epoch")
	f(`{"rollout":"r","version":"v","ts":"1970-01-01T00:30:00+01:00"}`, "ts", "not after the Unix epoch")
	f(`{"rollout":"r","version":"v","ts":0}`, "ts", "not after the Unix epoch")
	f(`{"rollout":"r","version":"v","ts":-0}`, "ts", "not after the Unix epoch")
	f(`{"rollout":"r","version":"v","ts":-1764095652123456789}`, "ts", "not after the Unix epoch")
	f(`{"rollout":"r","version":"v","ts":"2262-04-11T23:47:16.854775808Z"}`, "ts", "after year 2262 (beyond int64 nanoseconds)")
	f(`{"rollout":"r","version":"v","ts":"9999-12-31T23:59:59Z"}`, "ts", "after year 2262 (beyond int64 nanoseconds)")
	f(`{"rollout":"r","version":"v","ts":9223372036854775808}`, "ts", "after year 2262 (beyond int64 nanoseconds)")

	// Sizes and counts.
	long := strings.Repeat("x", MaxStringBytes+1)
	f(`{"rollout":"`+long+`","version":"v","ts":1}`, "rollout", "too long")
	f(`{`+ok+`,"name":"`+long+`"}`, "name", "too long")
	f(`{`+ok+`,"commit":"`+long+`"}`, "commit", "too long")
	f(`{`+ok+`,"session_id":"`+strings.Repeat(`\u00e9`, MaxStringBytes/2+1)+`"}`, "session_id", "too long")
	f(`{`+ok+`,"tool_calls":["`+long+`"]}`, "tool_calls", "item too long")
	f(`{`+ok+`,"tool_calls":["a",""]}`, "tool_calls", "item empty")
	f(`{`+ok+`,"tool_calls":[`+strings.Repeat(`"t",`, MaxToolCalls)+`"t"]}`, "tool_calls", "too many items")
	f(`{`+ok+`,"attrs":{"`+long+`":"v"}}`, "attrs", "key too long")
	f(`{`+ok+`,"attrs":{"k":"`+long+`"}}`, "attrs", "value too long")
	f(`{`+ok+`,"attrs":{"":"v"}}`, "attrs", "key empty")
	f(`{`+ok+`,"attrs":{"k":"a","k":"b"}}`, "attrs", "duplicate key")

	// Invalid UTF-8 in strings the decoder keeps.
	for _, bad := range []string{"\xff", "\xc3", "\xc3\x28", "\xed\xa0\x80", "\xf4\x90\x80\x80", "ok\xe2\x82"} {
		f(`{"rollout":"r`+bad+`","version":"v","ts":1}`, "rollout", "invalid UTF-8")
		f(`{"rollout":"r","version":"`+bad+`","ts":1}`, "version", "invalid UTF-8")
		f(`{`+ok+`,"name":"`+bad+`"}`, "name", "invalid UTF-8")
		f(`{`+ok+`,"error_type":"\n`+bad+`"}`, "error_type", "invalid UTF-8")
		f(`{`+ok+`,"span_id":"`+bad+`"}`, "span_id", "invalid UTF-8")
		f(`{`+ok+`,"tool_calls":["a","`+bad+`"]}`, "tool_calls", "item invalid UTF-8")
		f(`{`+ok+`,"attrs":{"k":"`+bad+`"}}`, "attrs", "value invalid UTF-8")
		f(`{`+ok+`,"attrs":{"`+bad+`":"v"}}`, "attrs", "key invalid UTF-8")
	}

	// Duplicates: JSON parsers disagree on which one wins.
	f(`{"rollout":"a",`+ok+`}`, "rollout", "duplicate field")
	f(`{`+ok+`,"ts":"2025-11-25T18:34:12Z"}`, "ts", "duplicate field")
	f(`{`+ok+`,"name":null,"name":"x"}`, "name", "duplicate field")
	f(`{`+ok+`,"outcome":{"score":0.5,"score":0.9}}`, "outcome.score", "duplicate field")
	f(`{`+ok+`,"requests":1,"requests":1}`, "requests", "duplicate field")
	f(`{`+ok+`,"request_median_ms":null,"request_median_ms":1}`, "request_median_ms", "duplicate field")

	// The first field error in record order is reported.
	f(`{"duration_ms":-1,"cost_usd":-1,`+ok+`}`, "duration_ms", "negative")
	f(`{"cost_usd":-1,"duration_ms":-1,`+ok+`}`, "cost_usd", "negative")
	f(`{"cost_usd":-1,"version":5}`, "cost_usd", "negative")
	// request_errors over requests comes after the field errors (it is known
	// only at the end), before a missing required field.
	f(`{"requests":1,"request_errors":2,"duration_ms":-1,`+ok+`}`, "duration_ms", "negative")
	f(`{"requests":1,"request_errors":2}`, "request_errors", "greater than requests")
}

func TestDecodeTooLarge(t *testing.T) {
	var d Decoder
	var ev Event
	big := []byte(`{"rollout":"r","version":"v","ts":1,"pad":"` + strings.Repeat("x", 2<<20) + `"}`)
	if err := d.Decode(big, &ev); err != ErrTooLarge {
		t.Fatalf("Decode(2 MiB record): got %v; want ErrTooLarge", err)
	}
	// Exactly MaxRecordBytes is accepted.
	head := `{"rollout":"r","version":"v","ts":1,"pad":"`
	rec := []byte(head + strings.Repeat("x", MaxRecordBytes-len(head)-2) + `"}`)
	if len(rec) != MaxRecordBytes {
		t.Fatalf("BUG: test record is %d bytes", len(rec))
	}
	if err := d.Decode(rec, &ev); err != nil {
		t.Fatalf("Decode(MaxRecordBytes record): %v", err)
	}
	if err := d.Decode(append(rec, ' '), &ev); err != ErrTooLarge {
		t.Fatalf("Decode(MaxRecordBytes+1 record): got %v; want ErrTooLarge", err)
	}
}

func TestDecodeErrorString(t *testing.T) {
	for _, tc := range []struct {
		err  DecodeError
		want string
	}{
		{DecodeError{Field: "duration_ms", Reason: "negative"}, "field duration_ms: negative"},
		{DecodeError{Reason: "not JSON"}, "record: not JSON"},
	} {
		if got := tc.err.Error(); got != tc.want {
			t.Errorf("Error() = %q; want %q", got, tc.want)
		}
	}
}

// TestDecodeAliasing checks that the event points into the decoder's copy,
// not into the caller's buffer, and that slices cannot be appended over it.
func TestDecodeAliasing(t *testing.T) {
	rec := []byte(`{"rollout":"r","version":"v","ts":1,"name":"n","tool_calls":["a","b"]}`)
	var d Decoder
	var ev Event
	if err := d.Decode(rec, &ev); err != nil {
		t.Fatal(err)
	}
	for i := range rec {
		rec[i] = 'X'
	}
	_ = append(ev.ToolCalls[0], "ZZZ"...)
	if string(ev.Rollout) != "r" || string(ev.Name) != "n" || string(ev.ToolCalls[0]) != "a" || string(ev.ToolCalls[1]) != "b" {
		t.Fatalf("event changed with the caller's buffer or an append: %q %q %q", ev.Rollout, ev.Name, ev.ToolCalls)
	}
}

func TestDecodeAllocs(t *testing.T) {
	var d Decoder
	var ev Event
	for _, rec := range benchRecords {
		if err := d.Decode(rec, &ev); err != nil {
			t.Fatalf("Decode(%s): %v", rec, err)
		}
	}
	for _, rec := range benchRecords {
		allocs := testing.AllocsPerRun(100, func() {
			if err := d.Decode(rec, &ev); err != nil {
				t.Fatal(err)
			}
		})
		if allocs != 0 {
			t.Errorf("Decode(%s): %v allocs per run; want 0", rec, allocs)
		}
	}
	// Nor does a session summary with its request totals.
	summary := []byte(`{"rollout":"support-agent","version":"v43","kind":"agent","name":"resolve_ticket","ts":1764095653500000000,` +
		`"duration_ms":5120,"tool_calls":["search_orders","refund"],"requests":5,"request_errors":1,"request_median_ms":812.25}`)
	if err := d.Decode(summary, &ev); err != nil || ev.Requests != 5 || ev.RequestErrors != 1 || !ev.HasRequestMedian {
		t.Fatalf("Decode(%s): %v, %+v", summary, err, ev)
	}
	if allocs := testing.AllocsPerRun(100, func() { _ = d.Decode(summary, &ev) }); allocs != 0 {
		t.Errorf("Decode(%s): %v allocs per run; want 0", summary, allocs)
	}
	// Attr and VisitAttrs do not allocate either.
	n := 0
	allocs := testing.AllocsPerRun(100, func() {
		if err := d.Decode(benchRecords[1], &ev); err != nil {
			t.Fatal(err)
		}
		if _, ok := d.Attr("tenant"); !ok {
			t.Fatal("Attr(tenant) not found")
		}
		d.VisitAttrs(func(k, v []byte) { n += len(k) + len(v) })
	})
	if allocs != 0 {
		t.Errorf("Decode+Attr+VisitAttrs: %v allocs per run; want 0", allocs)
	}
}

func TestAppendEventRoundTrip(t *testing.T) {
	var d Decoder
	var ev, got Event
	var buf []byte
	for _, rec := range benchRecords {
		if err := d.Decode(rec, &ev); err != nil {
			t.Fatal(err)
		}
		buf = AppendEvent(buf[:0], &ev)
		if !json.Valid(buf) {
			t.Fatalf("AppendEvent wrote invalid JSON: %s", buf)
		}
		var d2 Decoder
		if err := d2.Decode(buf, &got); err != nil {
			t.Fatalf("Decode(AppendEvent(%s)) = %v; record %s", rec, err, buf)
		}
		if diff := eventDiff(&got, &ev); diff != "" {
			t.Fatalf("round trip of %s through %s:\n%s", rec, buf, diff)
		}
	}

	// Random events within the limits, with awkward strings and floats.
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := []string{"a", "Z", "0", "-", "\"", "\\", "/", "\n", "\t", "\x00", "\x1f", "\x7f", "é", "€", "😀", "\u2028", " "}
	str := func(max int) []byte {
		var s []byte
		for n := rng.IntN(max + 1); n > 0; n-- {
			s = append(s, alphabet[rng.IntN(len(alphabet))]...)
		}
		return s
	}
	float := func(max float64) float64 {
		switch rng.IntN(4) {
		case 0:
			return 0
		case 1:
			return max
		case 2:
			return math.Float64frombits(rng.Uint64N(math.Float64bits(max) + 1))
		}
		return rng.Float64() * max
	}
	for i := range 20000 {
		ev := Event{
			Rollout: append(str(20), 'r'), Version: append(str(20), 'v'), Kind: Kind(rng.IntN(NumKinds)),
			Name: str(30), TS: 1 + rng.Int64N(math.MaxInt64), Error: rng.IntN(2) == 0, ErrorType: str(10),
			InputTokens: rng.Int64N(MaxTokens + 1), OutputTokens: rng.Int64N(MaxTokens + 1),
			ContextTokens: rng.Int64N(MaxTokens + 1), ContextLimit: rng.Int64N(MaxTokens + 1),
			TraceID: str(32), SpanID: str(16), ParentSpanID: str(16), SessionID: str(8),
			DeploymentID: str(8), Commit: str(8),
		}
		if rng.IntN(2) == 0 {
			ev.DurationMS, ev.HasDuration = float(MaxDurationMS), true
		}
		if rng.IntN(2) == 0 {
			ev.CostUSD, ev.HasCost = float(MaxCostUSD), true
		}
		for n := rng.IntN(6); n > 0; n-- {
			ev.ToolCalls = append(ev.ToolCalls, append(str(10), 't'))
		}
		if rng.IntN(2) == 0 {
			ev.Requests = uint32(rng.Int64N(MaxRequests + 1))
			ev.RequestErrors = uint32(rng.Int64N(int64(ev.Requests) + 1))
		}
		if rng.IntN(2) == 0 {
			ev.RequestMedianMS, ev.HasRequestMedian = float(MaxDurationMS), true
		}
		if rng.IntN(2) == 0 {
			ev.HasOutcome = true
			ev.OutcomeSuccess, ev.HasOutcomeSuccess = rng.IntN(2) == 0, rng.IntN(2) == 0
			ev.OutcomeHallucinated, ev.HasHallucination = rng.IntN(2) == 0, rng.IntN(2) == 0
			if rng.IntN(2) == 0 {
				ev.OutcomeScore, ev.HasOutcomeScore = float(1), true
			}
			if !ev.HasOutcomeSuccess {
				ev.OutcomeSuccess = false
			}
			if !ev.HasHallucination {
				ev.OutcomeHallucinated = false
			}
		}
		buf = AppendEvent(buf[:0], &ev)
		if !json.Valid(buf) {
			t.Fatalf("event %d: AppendEvent wrote invalid JSON: %s", i, buf)
		}
		if err := d.Decode(buf, &got); err != nil {
			t.Fatalf("event %d: Decode(%s): %v", i, buf, err)
		}
		if diff := eventDiff(&got, &ev); diff != "" {
			t.Fatalf("event %d: round trip through %s:\n%s", i, buf, diff)
		}
	}
}

func TestAppendEventFormat(t *testing.T) {
	ev := Event{
		Rollout: []byte("r"), Version: []byte("v\"1\""), Kind: KindTool, Name: []byte("a\nb\x01"),
		TS: 1764095652123456789, DurationMS: 1e-7, HasDuration: true, CostUSD: 12.5, HasCost: true,
		InputTokens: 3, ToolCalls: [][]byte{[]byte("x")}, HasOutcome: true, OutcomeScore: 0.5, HasOutcomeScore: true,
		Requests: 5, RequestErrors: 1, RequestMedianMS: 30, HasRequestMedian: true,
	}
	got := string(AppendEvent([]byte("prefix "), &ev))
	want := `prefix {"rollout":"r","version":"v\"1\"","kind":"tool","name":"a\nb\u0001","ts":1764095652123456789,` +
		`"duration_ms":1e-07,"status":"ok","input_tokens":3,"cost_usd":12.5,"tool_calls":["x"],` +
		`"requests":5,"request_errors":1,"request_median_ms":30,"outcome":{"score":0.5}}`
	if got != want {
		t.Fatalf("AppendEvent:\ngot  %s\nwant %s", got, want)
	}
	ev = Event{Rollout: []byte("r"), Version: []byte("v"), TS: 1, Error: true, DurationMS: math.NaN(), HasDuration: true,
		CostUSD: math.Inf(1), HasCost: true, HasOutcome: true, RequestErrors: 2, RequestMedianMS: math.NaN(), HasRequestMedian: true}
	got = string(AppendEvent(nil, &ev))
	want = `{"rollout":"r","version":"v","kind":"other","ts":1,"duration_ms":null,"status":"error","cost_usd":null,` +
		`"request_errors":2,"request_median_ms":null,"outcome":{}}`
	if got != want {
		t.Fatalf("AppendEvent:\ngot  %s\nwant %s", got, want)
	}
	buf := make([]byte, 0, 1024)
	if allocs := testing.AllocsPerRun(100, func() { buf = AppendEvent(buf[:0], &ev) }); allocs != 0 {
		t.Fatalf("AppendEvent: %v allocs per run; want 0", allocs)
	}
}

// TestParseRFC3339MatchesTime compares the hand parser with time.Parse on
// the times both accept.
func TestParseRFC3339MatchesTime(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for range 100000 {
		sec := 1 + rng.Int64N(9223372036)
		ns := rng.Int64N(1e9)
		tm := time.Unix(sec, ns).In(time.FixedZone("", (rng.IntN(48)-24)*900))
		s := tm.Format(time.RFC3339Nano)
		got, reason := parseRFC3339([]byte(s))
		want := tm.UnixNano()
		if reason != "" && want > 0 || reason == "" && got != want {
			t.Fatalf("parseRFC3339(%q) = %d, %q; want %d", s, got, reason, want)
		}
	}
}
