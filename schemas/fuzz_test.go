package schemas

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"regexp"
	"testing"
	"time"
	"unicode/utf8"
)

// warmRecord is decoded by a Decoder and into an Event before the fuzzed
// record, so that state left over from a previous record would show.
var warmRecord = []byte(`{"rollout":"warm","version":"w","kind":"agent","name":"n","ts":5,"duration_ms":1,
	"status":"error","error_type":"e","input_tokens":1,"output_tokens":2,"cost_usd":3,"context_tokens":4,
	"context_limit":5,"trace_id":"t","span_id":"s","parent_span_id":"p","session_id":"x","deployment_id":"d",
	"commit":"c","tool_calls":["a","b","c","d","e","f","g","h"],"requests":9,"request_errors":8,"request_median_ms":7,
	"outcome":{"success":true,"score":1,"hallucination":true},"attrs":{"k":"v"}}`)

func FuzzDecode(f *testing.F) {
	for _, r := range benchRecords {
		f.Add(r)
	}
	for _, s := range []string{
		`{"rollout":"r","version":"v","ts":1}`,
		`{"rollout":"r","version":"v","ts":"2025-11-26T00:04:12.5+05:30","outcome":{"score":0.5}}`,
		`{"rollout":"r\u00e9\ud83d\ude00\ud800","version":"v\"\\\/\b\f\n\r\t","ts":"1970-01-01t00:00:00.000000001z"}`,
		`{"rollout":"r","version":"v","ts":1,"x":[{"y":[null,true,false,-0.5e-3,"\u0000"]}],"attrs":{"a":"b","c":""}}`,
		`{"rollout":"r","version":"v","ts":1,"duration_ms":1e400,"cost_usd":-0,"input_tokens":100000000}`,
		`{"rollout":"r","version":"v","ts":1,"duration_ms":0.1000000000000000055511151231257827}`,
		`{"rollout":"r","version":"v","ts":9223372036854775807,"tool_calls":[]}`,
		`{"rollout":"r","version":"v","ts":1,"kind":"agent","requests":5,"request_errors":2,"request_median_ms":30}`,
		`{"rollout":"r","version":"v","ts":1,"request_errors":2,"requests":2147483647,"request_median_ms":86400000}`,
		`{"rollout":"r","version":"v","ts":1,"requests":2,"request_errors":3}`,
		`{"rollout":"r","version":"v","ts":1,"requests":null,"request_errors":3,"request_median_ms":-0}`,
		`{"rollout":"r","version":"v","ts":1,"requests":2147483648,"request_errors":1.0,"request_median_ms":1e400}`,
		`{"rollout":"r","rollout":"r","version":"v","ts":1}`,
		`{"rollout":"r","version":"v","ts":1,"duration_ms":"NaN"}`,
		`{"rollout":"r","version":"v","ts":1,"duration_ms":NaN}`,
		"{\"rollout\":\"\xff\",\"version\":\"v\",\"ts\":1}",
		`{"rollout":"r","version":"v","ts":true}`,
		`[{"rollout":"r"}]`,
		`{"rollout":"r","version":"v","ts":1,"a":[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]}`,
		`{"rollout":"r",`,
		``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var d Decoder
		var ev Event
		err := d.Decode(b, &ev)
		checkDecodeResult(t, b, &ev, err)
		if err != nil {
			return
		}

		// A used decoder and event give the same result.
		var dw Decoder
		var evw Event
		if err := dw.Decode(warmRecord, &evw); err != nil {
			t.Fatalf("BUG: warm record: %v", err)
		}
		if err := dw.Decode(b, &evw); err != nil {
			t.Fatalf("Decode after another record: %v; fresh decoder: ok", err)
		}
		if diff := eventDiff(&evw, &ev); diff != "" {
			t.Fatalf("Decode after another record differs from a fresh decode:\n%s", diff)
		}

		// AppendEvent → Decode round-trips.
		enc := AppendEvent(nil, &ev)
		if !json.Valid(enc) {
			t.Fatalf("AppendEvent wrote invalid JSON: %s", enc)
		}
		var d2 Decoder
		var ev2 Event
		if err := d2.Decode(enc, &ev2); err != nil {
			t.Fatalf("Decode(AppendEvent(ev)) = %v; record %s", err, enc)
		}
		if diff := eventDiff(&ev2, &ev); diff != "" {
			t.Fatalf("round trip through %s:\n%s", enc, diff)
		}
	})
}

// checkDecodeResult checks the invariants of one Decode, and compares a
// success with what encoding/json makes of the same record.
func checkDecodeResult(t *testing.T, b []byte, ev *Event, err error) {
	t.Helper()
	valid := json.Valid(b)
	if err != nil {
		if diff := eventDiff(ev, &Event{}); diff != "" {
			t.Fatalf("event not reset after error %v:\n%s", err, diff)
		}
		if errors.Is(err, ErrTooLarge) {
			if len(b) <= MaxRecordBytes {
				t.Fatalf("ErrTooLarge for %d bytes", len(b))
			}
			return
		}
		var de *DecodeError
		if !errors.As(err, &de) {
			t.Fatalf("error %v (%T) is neither ErrTooLarge nor a *DecodeError", err, err)
		}
		switch {
		case de.Field == "" && de.Reason == reasonNotJSON && valid:
			t.Fatalf("Decode says not JSON; encoding/json says valid: %q", b)
		case de.Field == "" && de.Reason == reasonNotObject && !valid:
			t.Fatalf("Decode says not an object; encoding/json says not JSON: %q", b)
		case de.Field != "" && !valid:
			t.Fatalf("Decode reports field error %v on a record encoding/json says is not JSON: %q", err, b)
		case de.Field == "" && de.Reason != reasonNotJSON && de.Reason != reasonNotObject && de.Reason != reasonTooDeep:
			t.Fatalf("unexpected record-level reason %q", de.Reason)
		case de.Reason == reasonOverRequests:
			var m map[string]json.RawMessage
			var n, errs int64
			if json.Unmarshal(b, &m) != nil || json.Unmarshal(m["requests"], &n) != nil ||
				json.Unmarshal(m["request_errors"], &errs) != nil || errs <= n {
				t.Fatalf("Decode says request_errors > requests; encoding/json reads requests %s, request_errors %s",
					m["requests"], m["request_errors"])
			}
		}
		return
	}

	if len(b) > MaxRecordBytes {
		t.Fatalf("accepted a record of %d bytes", len(b))
	}
	if !valid {
		t.Fatalf("Decode accepted a record encoding/json says is not JSON: %q", b)
	}
	if len(ev.Rollout) == 0 || len(ev.Version) == 0 {
		t.Fatalf("accepted with empty rollout %q or version %q", ev.Rollout, ev.Version)
	}
	if ev.TS <= 0 {
		t.Fatalf("accepted with TS %d", ev.TS)
	}
	for _, s := range [][]byte{ev.Rollout, ev.Version, ev.Name, ev.ErrorType, ev.TraceID, ev.SpanID,
		ev.ParentSpanID, ev.SessionID, ev.DeploymentID, ev.Commit} {
		if len(s) > MaxStringBytes || !utf8.Valid(s) {
			t.Fatalf("accepted string %q: longer than MaxStringBytes or invalid UTF-8", s)
		}
	}
	if len(ev.ToolCalls) > MaxToolCalls {
		t.Fatalf("accepted %d tool calls", len(ev.ToolCalls))
	}
	for _, s := range ev.ToolCalls {
		if len(s) == 0 || len(s) > MaxStringBytes || !utf8.Valid(s) {
			t.Fatalf("accepted tool call %q", s)
		}
	}
	finite := func(name string, v, max float64) {
		if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 || v > max || math.Signbit(v) {
			t.Fatalf("accepted %s = %v", name, v)
		}
	}
	finite("duration_ms", ev.DurationMS, MaxDurationMS)
	finite("cost_usd", ev.CostUSD, MaxCostUSD)
	finite("outcome.score", ev.OutcomeScore, 1)
	finite("request_median_ms", ev.RequestMedianMS, MaxDurationMS)
	for _, n := range []int64{ev.InputTokens, ev.OutputTokens, ev.ContextTokens, ev.ContextLimit} {
		if n < 0 || n > MaxTokens {
			t.Fatalf("accepted token count %d", n)
		}
	}
	if ev.Requests > MaxRequests || ev.RequestErrors > MaxRequests {
		t.Fatalf("accepted requests %d, request_errors %d", ev.Requests, ev.RequestErrors)
	}
	if !ev.HasDuration && ev.DurationMS != 0 || !ev.HasCost && ev.CostUSD != 0 ||
		!ev.HasRequestMedian && ev.RequestMedianMS != 0 ||
		!ev.HasOutcome && (ev.HasOutcomeScore || ev.HasOutcomeSuccess || ev.HasHallucination) ||
		!ev.HasOutcomeScore && ev.OutcomeScore != 0 || !ev.HasOutcomeSuccess && ev.OutcomeSuccess ||
		!ev.HasHallucination && ev.OutcomeHallucinated || ev.Kind >= numKinds {
		t.Fatalf("inconsistent presence flags or kind: %+v", ev)
	}

	// encoding/json's reading of the same record.
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("encoding/json: %v", err)
	}
	str := func(key string, got []byte) {
		raw, ok := m[key]
		var want *string
		if ok {
			if err := json.Unmarshal(raw, &want); err != nil {
				t.Fatalf("%s: encoding/json: %v", key, err)
			}
		}
		if want == nil && len(got) != 0 || want != nil && *want != string(got) {
			t.Fatalf("%s: Decode %q; encoding/json %v", key, got, raw)
		}
	}
	str("rollout", ev.Rollout)
	str("version", ev.Version)
	str("name", ev.Name)
	str("error_type", ev.ErrorType)
	str("trace_id", ev.TraceID)
	str("span_id", ev.SpanID)
	str("parent_span_id", ev.ParentSpanID)
	str("session_id", ev.SessionID)
	str("deployment_id", ev.DeploymentID)
	str("commit", ev.Commit)
	kind, status := ev.Kind.String(), "ok"
	if ev.Error {
		status = "error"
	}
	if _, ok := m["kind"]; ok && string(m["kind"]) != "null" {
		str("kind", []byte(kind))
	}
	if _, ok := m["status"]; ok && string(m["status"]) != "null" {
		str("status", []byte(status))
	}
	float := func(key string, raw json.RawMessage, has bool, got float64) {
		var want *float64
		if raw != nil {
			if err := json.Unmarshal(raw, &want); err != nil {
				t.Fatalf("%s: encoding/json: %v", key, err)
			}
		}
		if (want != nil) != has || want != nil && *want != got {
			t.Fatalf("%s: Decode %v (present %v); encoding/json %s", key, got, has, raw)
		}
	}
	float("duration_ms", m["duration_ms"], ev.HasDuration, ev.DurationMS)
	float("cost_usd", m["cost_usd"], ev.HasCost, ev.CostUSD)
	float("request_median_ms", m["request_median_ms"], ev.HasRequestMedian, ev.RequestMedianMS)
	integer := func(key string, got int64) {
		var want int64
		if raw, ok := m[key]; ok {
			if err := json.Unmarshal(raw, &want); err != nil {
				t.Fatalf("%s: encoding/json: %v", key, err)
			}
		}
		if want != got {
			t.Fatalf("%s: Decode %d; encoding/json %d", key, got, want)
		}
	}
	integer("input_tokens", ev.InputTokens)
	integer("output_tokens", ev.OutputTokens)
	integer("context_tokens", ev.ContextTokens)
	integer("context_limit", ev.ContextLimit)
	integer("requests", int64(ev.Requests))
	integer("request_errors", int64(ev.RequestErrors))
	given := func(key string) bool { raw, ok := m[key]; return ok && string(raw) != "null" }
	if given("requests") && given("request_errors") && ev.RequestErrors > ev.Requests {
		t.Fatalf("accepted request_errors %d > requests %d", ev.RequestErrors, ev.Requests)
	}
	if raw := m["ts"]; len(raw) > 0 && raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			t.Fatal(err)
		}
		// time.Parse wants upper-case T and Z.
		up := []byte(s)
		up[10] = 'T'
		if up[len(up)-1] == 'z' {
			up[len(up)-1] = 'Z'
		}
		tm, err := time.Parse(time.RFC3339Nano, string(up))
		if err != nil || tm.UnixNano() != ev.TS {
			t.Fatalf("ts %q: Decode %d; time.Parse %v, %v", s, ev.TS, tm.UnixNano(), err)
		}
	} else {
		integer("ts", ev.TS)
	}
	var calls []string
	if raw, ok := m["tool_calls"]; ok {
		if err := json.Unmarshal(raw, &calls); err != nil {
			t.Fatal(err)
		}
	}
	if len(calls) != len(ev.ToolCalls) {
		t.Fatalf("tool_calls: Decode %q; encoding/json %q", ev.ToolCalls, calls)
	}
	for i := range calls {
		if calls[i] != string(ev.ToolCalls[i]) {
			t.Fatalf("tool_calls: Decode %q; encoding/json %q", ev.ToolCalls, calls)
		}
	}
	var out map[string]json.RawMessage
	if raw, ok := m["outcome"]; ok {
		if err := json.Unmarshal(raw, &out); err != nil {
			t.Fatal(err)
		}
	}
	if (out != nil) != ev.HasOutcome {
		t.Fatalf("outcome: Decode present %v; encoding/json %s", ev.HasOutcome, m["outcome"])
	}
	boolean := func(key string, raw json.RawMessage, has, got bool) {
		var want *bool
		if raw != nil {
			if err := json.Unmarshal(raw, &want); err != nil {
				t.Fatal(err)
			}
		}
		if (want != nil) != has || want != nil && *want != got {
			t.Fatalf("%s: Decode %v (present %v); encoding/json %s", key, got, has, raw)
		}
	}
	boolean("outcome.success", out["success"], ev.HasOutcomeSuccess, ev.OutcomeSuccess)
	boolean("outcome.hallucination", out["hallucination"], ev.HasHallucination, ev.OutcomeHallucinated)
	float("outcome.score", out["score"], ev.HasOutcomeScore, ev.OutcomeScore)

	// No known field twice.
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.Token() // {
	counts := map[string]int{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			t.Fatal(err)
		}
		counts[tok.(string)]++
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			t.Fatal(err)
		}
	}
	for _, k := range fieldNames {
		if counts[k] > 1 {
			t.Fatalf("accepted a record with %d %q fields", counts[k], k)
		}
	}
}

// rfc3339Grammar is the RFC 3339 date-time grammar parseRFC3339 accepts
// (agent-event.v1.json's pattern for ts).
var rfc3339Grammar = regexp.MustCompile(`^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})$`)

// FuzzParseRFC3339 compares the hand parser with time.Parse.
func FuzzParseRFC3339(f *testing.F) {
	for _, s := range []string{
		"2025-11-25T18:34:12Z", "2025-11-25T18:34:12.123456789+05:30", "2024-02-29t23:59:59.5z",
		"1970-01-01T00:00:00.000000001Z", "2262-04-11T23:47:16.854775807Z", "2025-02-29T00:00:00Z",
		"2025-11-25T18:34:12.1234567891234-23:59",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, reason := parseRFC3339([]byte(s))
		up := []byte(s)
		if len(up) > 10 && up[10] == 't' {
			up[10] = 'T'
		}
		if len(up) > 0 && up[len(up)-1] == 'z' {
			up[len(up)-1] = 'Z'
		}
		tm, err := time.Parse(time.RFC3339Nano, string(up))
		strict := rfc3339Grammar.MatchString(s)
		if strict && s[len(s)-1] != 'Z' && s[len(s)-1] != 'z' {
			// RFC 3339 offsets are 00:00 to 23:59; time.Parse's fallback
			// takes 24:00 and more.
			hh, mm := s[len(s)-5:len(s)-3], s[len(s)-2:]
			strict = hh < "24" && mm < "60"
		}
		switch {
		case reason == "" && !strict:
			t.Fatalf("parseRFC3339(%q) = %d; not RFC 3339", s, got)
		case reason == "" && err != nil:
			t.Fatalf("parseRFC3339(%q) = %d; time.Parse: %v", s, got, err)
		case reason == "" && tm.UnixNano() != got:
			t.Fatalf("parseRFC3339(%q) = %d; time.Parse: %d", s, got, tm.UnixNano())
		case reason == reasonBadTime && err == nil && strict:
			// time.Parse is laxer (one-digit hours, a comma before the
			// fraction, offset hours past 23), but it must not take a
			// strict RFC 3339 time that parseRFC3339 refuses.
			t.Fatalf("parseRFC3339(%q) refused; time.Parse: %v", s, tm)
		case reason == reasonBeforeEpoch && err == nil && tm.After(time.Unix(0, 0)):
			t.Fatalf("parseRFC3339(%q): before the epoch; time.Parse: %v", s, tm)
		case reason == reasonTimeRange && err == nil && tm.Before(time.Unix(0, math.MaxInt64)):
			t.Fatalf("parseRFC3339(%q): out of range; time.Parse: %v", s, tm)
		}
	})
}
