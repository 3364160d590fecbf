package loadtest

import (
	"encoding/binary"
	"math"
	"strconv"
	"unicode/utf8"
)

// Record formats of the fleet and the generator.
const (
	// FormatJSON is canaryd's agent event v1: one record per event, key =
	// rollout name. The default.
	FormatJSON = "json"
	// FormatOTLPProto is an OTLP ExportTraceServiceRequest in protobuf, as
	// the OpenTelemetry Collector's Kafka exporter writes by default: one
	// record per finished session, key = the trace id in hex.
	FormatOTLPProto = "otlp_proto"
	// FormatOTLPJSON is the same request in OTLP/JSON (the exporter's
	// otlp_json encoding).
	FormatOTLPJSON = "otlp_json"
)

// DefaultOTLPTopic is the events topic of the OTLP formats: the Collector's
// Kafka exporter's default traces topic.
const DefaultOTLPTopic = "otlp_spans"

func validFormat(f string) bool {
	return f == FormatJSON || f == FormatOTLPProto || f == FormatOTLPJSON
}

// What the OTLP records say besides the simulation: the GenAI semantic
// conventions' names (all "Development" status) and a Python OpenTelemetry SDK
// resource.
const (
	otlpScopeName    = "github.com/inferensys/canaryd/loadtest"
	otlpScopeVersion = "1.0.0"
	otlpProvider     = "openai"
	otlpServer       = "api.openai.com"
	otlpNamespace    = "agents"
	otlpTaskFailed   = "task_failed" // error.type of a failed session whose requests did not fail it

	spanKindInternal = 1
	spanKindClient   = 3
	statusError      = 2
)

// appendOTLP appends the OTLP record of ss, the session whose agent event s.ev
// has just been emitted: one resource (the version's service) and one scope
// holding its requests in the order they ended, then its invoke_agent span,
// the parent of all of them. It allocates nothing when dst has room.
func (s *sim) appendOTLP(dst []byte, ss *session, json bool) []byte {
	sr := &s.rollouts[ss.r]
	p := ss.prof
	ver := sr.version[ss.ver]
	w := otlpWriter{json: json, b: dst}
	var trace [16]byte
	binary.BigEndian.PutUint64(trace[:8], ss.traceHi)
	binary.BigEndian.PutUint64(trace[8:], ss.traceLo)

	w.beginRecord()
	attr(&w, "service.name", sr.key)
	attr(&w, "service.version", ver)
	attr(&w, "k8s.namespace.name", otlpNamespace)
	attr(&w, "k8s.pod.label.app.kubernetes.io/version", ver)
	attr(&w, "telemetry.sdk.language", "python")
	attr(&w, "telemetry.sdk.name", "opentelemetry")
	attr(&w, "telemetry.sdk.version", "1.38.0")
	w.beginSpans()

	for i := range ss.reqs {
		r := &ss.reqs[i]
		if r.tool < 0 {
			w.beginSpan(&trace, r.span, ss.rootID, "chat ", p.model, spanKindClient, r.start, r.end)
			attr(&w, "gen_ai.operation.name", "chat")
			attr(&w, "gen_ai.provider.name", otlpProvider)
			attr(&w, "gen_ai.request.model", p.model)
			attr(&w, "gen_ai.conversation.id", ss.sid[:])
			attr(&w, "server.address", otlpServer)
			if r.errType == nil {
				attr(&w, "gen_ai.response.model", p.model)
				w.attrInt("gen_ai.usage.input_tokens", r.in)
				w.attrInt("gen_ai.usage.output_tokens", r.out)
			}
		} else {
			name := p.tools[r.tool].name
			w.beginSpan(&trace, r.span, ss.rootID, "execute_tool ", name, spanKindInternal, r.start, r.end)
			attr(&w, "gen_ai.operation.name", "execute_tool")
			attr(&w, "gen_ai.tool.name", name)
			attr(&w, "gen_ai.tool.type", "function")
			var call [21]byte
			copy(call[:], "call_")
			putHex(call[5:], r.span)
			attr(&w, "gen_ai.tool.call.id", call[:])
			attr(&w, "gen_ai.conversation.id", ss.sid[:])
		}
		if r.errType != nil {
			attr(&w, "error.type", r.errType)
		}
		w.endSpan(r.errType != nil)
	}

	w.beginSpan(&trace, ss.rootID, 0, "invoke_agent ", sr.key, spanKindInternal, ss.start, ss.end)
	attr(&w, "gen_ai.operation.name", "invoke_agent")
	attr(&w, "gen_ai.provider.name", otlpProvider)
	attr(&w, "gen_ai.agent.name", sr.key)
	attr(&w, "gen_ai.agent.version", ver)
	attr(&w, "gen_ai.request.model", p.model)
	attr(&w, "gen_ai.conversation.id", ss.sid[:])
	if !ss.success {
		if ss.finalErr != nil {
			attr(&w, "error.type", ss.finalErr)
		} else {
			attr(&w, "error.type", otlpTaskFailed)
		}
	}
	w.event(ss.end, "gen_ai.evaluation.result")
	attr(&w, "gen_ai.evaluation.name", "task_success")
	w.attrDouble("gen_ai.evaluation.score.value", ss.score)
	if ss.success {
		attr(&w, "gen_ai.evaluation.score.label", "pass")
	} else {
		attr(&w, "gen_ai.evaluation.score.label", "fail")
	}
	w.event(ss.end, "gen_ai.evaluation.result")
	attr(&w, "gen_ai.evaluation.name", "hallucination")
	if ss.halluc {
		attr(&w, "gen_ai.evaluation.score.label", "hallucinated")
	} else {
		attr(&w, "gen_ai.evaluation.score.label", "grounded")
	}
	w.endSpan(!ss.success)
	w.endRecord()
	return w.b
}

// otlpWriter appends one ExportTraceServiceRequest of one resource and one
// scope, in protobuf or in OTLP/JSON as pdata's marshalers write them (JSON:
// lowerCamelCase names, ids in hex, 64-bit integers as strings, enums as
// numbers, compact). Calls go: beginRecord, resource attributes, beginSpans,
// then per span beginSpan, attributes, per span event (event, attributes),
// endSpan; then endRecord.
//
// Protobuf field numbers (opentelemetry-proto, as stream/otlp_proto.go reads
// them): ExportTraceServiceRequest.resource_spans = 1; ResourceSpans.resource
// = 1, .scope_spans = 2; Resource.attributes = 1; ScopeSpans.scope = 1,
// .spans = 2; InstrumentationScope.name = 1, .version = 2; Span.trace_id = 1,
// .span_id = 2, .parent_span_id = 4, .name = 5, .kind = 6,
// .start_time_unix_nano = 7 and .end_time_unix_nano = 8 (fixed64),
// .attributes = 9, .events = 11, .status = 15; Span.Event.time_unix_nano = 1
// (fixed64), .name = 2, .attributes = 3; Status.code = 3; KeyValue.key = 1,
// .value = 2; AnyValue.string_value = 1, .int_value = 3 (varint),
// .double_value = 4 (fixed64).
type otlpWriter struct {
	json bool
	b    []byte
	// protobuf: where the open messages' 2-byte length placeholders are.
	marks [4]int
	depth int
	// attrField is the protobuf field of the attributes being written: 1 in
	// the resource, 9 in a span, 3 in a span event.
	attrField uint64
	// JSON: no element written yet in the open array; inEvent: a span event
	// is open.
	first, inEvent bool
}

const (
	wtVarint = 0
	wtI64    = 1
	wtLen    = 2
)

func (w *otlpWriter) beginRecord() {
	if w.json {
		w.b = append(w.b, `{"resourceSpans":[{"resource":{"attributes":[`...)
		w.first = true
		return
	}
	w.open(1) // resource_spans
	w.open(1) // resource
	w.attrField = 1
}

func (w *otlpWriter) beginSpans() {
	if w.json {
		w.b = append(w.b, `]},"scopeSpans":[{"scope":{"name":`...)
		w.b = appendJSONString(w.b, otlpScopeName)
		w.b = append(w.b, `,"version":`...)
		w.b = appendJSONString(w.b, otlpScopeVersion)
		w.b = append(w.b, `},"spans":[`...)
		w.first = true
		return
	}
	w.close() // resource
	w.open(2) // scope_spans
	w.b = appendTag(w.b, 1, wtLen)
	w.b = appendVarint(w.b, uint64(2+len(otlpScopeName)+2+len(otlpScopeVersion)))
	w.b = appendLenField(w.b, 1, otlpScopeName)
	w.b = appendLenField(w.b, 2, otlpScopeVersion)
}

func (w *otlpWriter) endRecord() {
	if w.json {
		w.b = append(w.b, `]}]}]}`...)
		return
	}
	w.close() // scope_spans
	w.close() // resource_spans
}

// beginSpan starts a span named namePrefix+name; parent 0 is none.
func (w *otlpWriter) beginSpan(trace *[16]byte, id, parent uint64, namePrefix string, name []byte, kind int, start, end int64) {
	w.inEvent = false
	if w.json {
		if !w.first {
			w.b = append(w.b, ',')
		}
		w.b = append(w.b, `{"traceId":"`...)
		w.b = appendHexBytes(w.b, trace[:])
		w.b = append(w.b, `","spanId":"`...)
		w.b = appendHex64(w.b, id)
		if parent != 0 {
			w.b = append(w.b, `","parentSpanId":"`...)
			w.b = appendHex64(w.b, parent)
		}
		w.b = append(w.b, `","name":"`...)
		w.b = appendJSONChars(w.b, namePrefix)
		w.b = appendJSONChars(w.b, name)
		w.b = append(w.b, `","kind":`...)
		w.b = strconv.AppendInt(w.b, int64(kind), 10)
		w.b = append(w.b, `,"startTimeUnixNano":"`...)
		w.b = strconv.AppendInt(w.b, start, 10)
		w.b = append(w.b, `","endTimeUnixNano":"`...)
		w.b = strconv.AppendInt(w.b, end, 10)
		w.b = append(w.b, `","attributes":[`...)
		w.first = true
		return
	}
	w.open(2) // spans
	w.b = appendTag(w.b, 1, wtLen)
	w.b = append(w.b, 16)
	w.b = append(w.b, trace[:]...)
	w.b = appendTag(w.b, 2, wtLen)
	w.b = append(w.b, 8)
	w.b = binary.BigEndian.AppendUint64(w.b, id)
	if parent != 0 {
		w.b = appendTag(w.b, 4, wtLen)
		w.b = append(w.b, 8)
		w.b = binary.BigEndian.AppendUint64(w.b, parent)
	}
	w.b = appendTag(w.b, 5, wtLen)
	w.b = appendVarint(w.b, uint64(len(namePrefix)+len(name)))
	w.b = append(w.b, namePrefix...)
	w.b = append(w.b, name...)
	w.b = appendTag(w.b, 6, wtVarint)
	w.b = appendVarint(w.b, uint64(kind))
	w.b = appendTag(w.b, 7, wtI64)
	w.b = binary.LittleEndian.AppendUint64(w.b, uint64(start))
	w.b = appendTag(w.b, 8, wtI64)
	w.b = binary.LittleEndian.AppendUint64(w.b, uint64(end))
	w.attrField = 9
}

// event starts a span event; its attributes follow.
func (w *otlpWriter) event(ts int64, name string) {
	if w.json {
		if w.inEvent {
			w.b = append(w.b, `]},{"timeUnixNano":"`...)
		} else {
			w.b = append(w.b, `],"events":[{"timeUnixNano":"`...)
		}
		w.b = strconv.AppendInt(w.b, ts, 10)
		w.b = append(w.b, `","name":`...)
		w.b = appendJSONString(w.b, name)
		w.b = append(w.b, `,"attributes":[`...)
		w.first = true
		w.inEvent = true
		return
	}
	if w.inEvent {
		w.close()
	}
	w.inEvent = true
	w.open(11)
	w.b = appendTag(w.b, 1, wtI64)
	w.b = binary.LittleEndian.AppendUint64(w.b, uint64(ts))
	w.b = appendLenField(w.b, 2, name)
	w.attrField = 3
}

// endSpan closes the span with status ERROR when failed, else UNSET.
func (w *otlpWriter) endSpan(failed bool) {
	if w.json {
		if w.inEvent {
			w.b = append(w.b, `]}]`...)
		} else {
			w.b = append(w.b, ']')
		}
		if failed {
			w.b = append(w.b, `,"status":{"code":2}}`...)
		} else {
			w.b = append(w.b, `,"status":{}}`...)
		}
		w.first, w.inEvent = false, false
		return
	}
	if w.inEvent {
		w.close()
		w.inEvent = false
	}
	w.b = appendTag(w.b, 15, wtLen)
	if failed {
		w.b = append(w.b, 2, 3<<3|wtVarint, statusError)
	} else {
		w.b = append(w.b, 0)
	}
	w.close()
}

// attr appends a string attribute.
func attr[S string | []byte](w *otlpWriter, key string, val S) {
	if w.json {
		w.jsonKey(key)
		w.b = append(w.b, `{"stringValue":`...)
		w.b = appendJSONString(w.b, val)
		w.b = append(w.b, `}}`...)
		return
	}
	anyLen := 1 + varintLen(uint64(len(val))) + len(val)
	w.kvHead(key, anyLen)
	w.b = appendTag(w.b, 1, wtLen)
	w.b = appendVarint(w.b, uint64(len(val)))
	w.b = append(w.b, val...)
}

// attrInt appends an int attribute.
func (w *otlpWriter) attrInt(key string, v int64) {
	if w.json {
		w.jsonKey(key)
		w.b = append(w.b, `{"intValue":"`...)
		w.b = strconv.AppendInt(w.b, v, 10)
		w.b = append(w.b, `"}}`...)
		return
	}
	w.kvHead(key, 1+varintLen(uint64(v)))
	w.b = appendTag(w.b, 3, wtVarint)
	w.b = appendVarint(w.b, uint64(v))
}

// attrDouble appends a double attribute.
func (w *otlpWriter) attrDouble(key string, v float64) {
	if w.json {
		w.jsonKey(key)
		w.b = append(w.b, `{"doubleValue":`...)
		w.b = strconv.AppendFloat(w.b, v, 'g', -1, 64)
		w.b = append(w.b, `}}`...)
		return
	}
	w.kvHead(key, 9)
	w.b = appendTag(w.b, 4, wtI64)
	w.b = binary.LittleEndian.AppendUint64(w.b, math.Float64bits(v))
}

func (w *otlpWriter) jsonKey(key string) {
	if !w.first {
		w.b = append(w.b, ',')
	}
	w.first = false
	w.b = append(w.b, `{"key":`...)
	w.b = appendJSONString(w.b, key)
	w.b = append(w.b, `,"value":`...)
}

// kvHead appends a KeyValue's tag, length, key and the value's tag and
// length, for a value (AnyValue) of anyLen bytes.
func (w *otlpWriter) kvHead(key string, anyLen int) {
	kvLen := 1 + varintLen(uint64(len(key))) + len(key) + 1 + varintLen(uint64(anyLen)) + anyLen
	w.b = appendTag(w.b, w.attrField, wtLen)
	w.b = appendVarint(w.b, uint64(kvLen))
	w.b = appendLenField(w.b, 1, key)
	w.b = appendTag(w.b, 2, wtLen)
	w.b = appendVarint(w.b, uint64(anyLen))
}

// open starts a length-delimited field whose length is not known yet: two
// bytes are reserved for it (16 KiB), and close moves the content when its
// varint needs another size.
func (w *otlpWriter) open(field uint64) {
	w.b = appendTag(w.b, field, wtLen)
	w.marks[w.depth] = len(w.b)
	w.depth++
	w.b = append(w.b, 0, 0)
}

func (w *otlpWriter) close() {
	w.depth--
	m := w.marks[w.depth]
	n := len(w.b) - m - 2
	switch size := varintLen(uint64(n)); {
	case size == 2:
		w.b[m], w.b[m+1] = byte(n)|0x80, byte(n>>7)
	case size == 1:
		copy(w.b[m+1:], w.b[m+2:])
		w.b = w.b[:len(w.b)-1]
		w.b[m] = byte(n)
	default:
		w.b = append(w.b, make([]byte, size-2)...)
		copy(w.b[m+size:], w.b[m+2:m+2+n])
		appendVarint(w.b[m:m], uint64(n)) // in place: w.b[m:m] has the capacity
	}
}

func appendTag(b []byte, field uint64, wt byte) []byte {
	return appendVarint(b, field<<3|uint64(wt))
}

func appendVarint(b []byte, v uint64) []byte {
	for v >= 0x80 {
		b = append(b, byte(v)|0x80)
		v >>= 7
	}
	return append(b, byte(v))
}

func varintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

func appendLenField[S string | []byte](b []byte, field uint64, s S) []byte {
	b = appendTag(b, field, wtLen)
	b = appendVarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendHex64(b []byte, v uint64) []byte {
	var h [16]byte
	putHex(h[:], v)
	return append(b, h[:]...)
}

func appendHexBytes(b, src []byte) []byte {
	for _, c := range src {
		b = append(b, hexDigits[c>>4], hexDigits[c&0xf])
	}
	return b
}

// appendJSONString appends s as a JSON string.
func appendJSONString[S string | []byte](b []byte, s S) []byte {
	b = append(b, '"')
	b = appendJSONChars(b, s)
	return append(b, '"')
}

// appendJSONChars appends s escaped for a JSON string: quotes, backslashes
// and control characters escaped, invalid UTF-8 replaced, as encoding/json
// does (but for HTML characters, which pdata does not escape either).
func appendJSONChars[S string | []byte](b []byte, s S) []byte {
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			i++
			continue
		}
		if c >= utf8.RuneSelf {
			r, size := utf8.DecodeRuneInString(string(s[i:min(i+utf8.UTFMax, len(s))]))
			if r != utf8.RuneError || size != 1 {
				i += size
				continue
			}
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i++
			start = i
			continue
		}
		b = append(b, s[start:i]...)
		switch c {
		case '"', '\\':
			b = append(b, '\\', c)
		case '\n':
			b = append(b, '\\', 'n')
		case '\r':
			b = append(b, '\\', 'r')
		case '\t':
			b = append(b, '\\', 't')
		default:
			b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		}
		i++
		start = i
	}
	return append(b, s[start:]...)
}
