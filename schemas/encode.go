package schemas

import (
	"math"
	"strconv"
)

// AppendEvent appends ev to dst as one agent event v1 JSON object and returns
// the extended buffer. It allocates only when dst must grow.
//
// ts is written as integer unix nanoseconds, kind and status always, the
// optional fields only when set: strings when non-empty, tokens, requests and
// request_errors when non-zero, duration_ms, cost_usd and request_median_ms
// when HasDuration, HasCost and HasRequestMedian, outcome when HasOutcome
// (with its members whose Has flags are set). Floats use the shortest decimal
// that parses back to the same value, so for any ev that Decode produced,
// Decode(AppendEvent(nil, ev)) yields the same values (an empty string field
// comes back nil, as it is omitted).
//
// AppendEvent does not validate: values outside the limits of Decode, and
// RequestErrors greater than a non-zero Requests, are written as they are and
// will be refused by Decode, except NaN and ±Inf, which JSON cannot carry and
// are written as null (absent). Strings are written as they are, escaped for
// JSON; invalid UTF-8 is copied unchanged and Decode will refuse it.
func AppendEvent(dst []byte, ev *Event) []byte {
	dst = append(dst, `{"rollout":`...)
	dst = appendString(dst, ev.Rollout)
	dst = append(dst, `,"version":`...)
	dst = appendString(dst, ev.Version)
	dst = append(dst, `,"kind":"`...)
	dst = append(dst, ev.Kind.String()...)
	dst = append(dst, '"')
	dst = appendStringField(dst, `,"name":`, ev.Name)
	dst = append(dst, `,"ts":`...)
	dst = strconv.AppendInt(dst, ev.TS, 10)
	if ev.HasDuration {
		dst = append(dst, `,"duration_ms":`...)
		dst = appendFloat(dst, ev.DurationMS)
	}
	if ev.Error {
		dst = append(dst, `,"status":"error"`...)
	} else {
		dst = append(dst, `,"status":"ok"`...)
	}
	dst = appendStringField(dst, `,"error_type":`, ev.ErrorType)
	dst = appendIntField(dst, `,"input_tokens":`, ev.InputTokens)
	dst = appendIntField(dst, `,"output_tokens":`, ev.OutputTokens)
	if ev.HasCost {
		dst = append(dst, `,"cost_usd":`...)
		dst = appendFloat(dst, ev.CostUSD)
	}
	dst = appendIntField(dst, `,"context_tokens":`, ev.ContextTokens)
	dst = appendIntField(dst, `,"context_limit":`, ev.ContextLimit)
	dst = appendStringField(dst, `,"trace_id":`, ev.TraceID)
	dst = appendStringField(dst, `,"span_id":`, ev.SpanID)
	dst = appendStringField(dst, `,"parent_span_id":`, ev.ParentSpanID)
	dst = appendStringField(dst, `,"session_id":`, ev.SessionID)
	dst = appendStringField(dst, `,"deployment_id":`, ev.DeploymentID)
	dst = appendStringField(dst, `,"commit":`, ev.Commit)
	if len(ev.ToolCalls) > 0 {
		dst = append(dst, `,"tool_calls":[`...)
		for i, tc := range ev.ToolCalls {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendString(dst, tc)
		}
		dst = append(dst, ']')
	}
	dst = appendIntField(dst, `,"requests":`, int64(ev.Requests))
	dst = appendIntField(dst, `,"request_errors":`, int64(ev.RequestErrors))
	if ev.HasRequestMedian {
		dst = append(dst, `,"request_median_ms":`...)
		dst = appendFloat(dst, ev.RequestMedianMS)
	}
	if ev.HasOutcome {
		dst = append(dst, `,"outcome":{`...)
		sep := false
		if ev.HasOutcomeSuccess {
			dst = append(dst, `"success":`...)
			dst = strconv.AppendBool(dst, ev.OutcomeSuccess)
			sep = true
		}
		if ev.HasOutcomeScore {
			if sep {
				dst = append(dst, ',')
			}
			dst = append(dst, `"score":`...)
			dst = appendFloat(dst, ev.OutcomeScore)
			sep = true
		}
		if ev.HasHallucination {
			if sep {
				dst = append(dst, ',')
			}
			dst = append(dst, `"hallucination":`...)
			dst = strconv.AppendBool(dst, ev.OutcomeHallucinated)
		}
		dst = append(dst, '}')
	}
	return append(dst, '}')
}

func appendStringField(dst []byte, key string, s []byte) []byte {
	if len(s) == 0 {
		return dst
	}
	dst = append(dst, key...)
	return appendString(dst, s)
}

func appendIntField(dst []byte, key string, n int64) []byte {
	if n == 0 {
		return dst
	}
	dst = append(dst, key...)
	return strconv.AppendInt(dst, n, 10)
}

// appendFloat writes f as encoding/json does: the shortest representation
// that parses back to f, in exponent form only for very small or large values.
func appendFloat(dst []byte, f float64) []byte {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return append(dst, "null"...)
	}
	fmt := byte('f')
	if a := math.Abs(f); a != 0 && (a < 1e-6 || a >= 1e21) {
		fmt = 'e'
	}
	return strconv.AppendFloat(dst, f, fmt, -1, 64)
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string: '"', '\\' and control characters
// are escaped, everything else (UTF-8 or not) is copied.
func appendString(dst []byte, s []byte) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		dst = append(dst, s[start:i]...)
		switch c {
		case '"', '\\':
			dst = append(dst, '\\', c)
		case '\n':
			dst = append(dst, '\\', 'n')
		case '\r':
			dst = append(dst, '\\', 'r')
		case '\t':
			dst = append(dst, '\\', 't')
		default:
			dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		}
		start = i + 1
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
