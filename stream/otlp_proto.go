package stream

import "encoding/binary"

// otlp_proto: the protobuf wire format of ExportTraceServiceRequest and
// ExportLogsServiceRequest, read in place. Field numbers are those of
// opentelemetry-proto (trace/v1/trace.proto, logs/v1/logs.proto,
// common/v1/common.proto); they are stable. Every field on the path to a
// span or log record is checked as pdata's ProtoUnmarshaler checks it (tag,
// wire type, length, id sizes); the contents of fields the mapping does not
// read (scope, links, bodies, unmapped attribute values) are skipped as
// length-delimited bytes without being parsed.

// Protobuf wire types.
const (
	wtVarint     = 0
	wtI64        = 1
	wtLen        = 2
	wtStartGroup = 3
	wtEndGroup   = 4
	wtI32        = 5
)

// Reasons of protobuf OTLPErrors.
const (
	reasonTruncated     = "truncated"
	reasonVarint        = "varint overflows 64 bits"
	reasonFieldZero     = "field number 0"
	reasonWireType      = "wrong wire type"
	reasonBadWireType   = "invalid wire type"
	reasonGroupEnd      = "unexpected end of group"
	reasonGroupDepth    = "groups nested too deep"
	reasonTraceIDLength = "length not 16 bytes"
	reasonSpanIDLength  = "length not 8 bytes"
)

// pfield is one field read by pnext. For wtLen, b is its bytes; for
// wtVarint, wtI64 and wtI32, v is its value.
type pfield struct {
	num uint64
	wt  uint8
	v   uint64
	b   []byte
}

// pvarint reads a varint at b[i:]; next is -1 when it is truncated or
// longer than 10 bytes.
func pvarint(b []byte, i int) (v uint64, next int) {
	if i < len(b) && b[i] < 0x80 {
		return uint64(b[i]), i + 1
	}
	for shift := uint(0); shift < 64; shift += 7 {
		if i >= len(b) {
			return 0, -1
		}
		c := b[i]
		i++
		v |= uint64(c&0x7f) << shift
		if c < 0x80 {
			return v, i
		}
	}
	return 0, -2
}

// pnext reads the field at b[i:] into f and returns the position after it,
// or -1 and a reason.
func pnext(b []byte, i int, f *pfield) (int, string) {
	tag, i := pvarint(b, i)
	if i < 0 {
		return -1, varintReason(i)
	}
	f.num, f.wt = tag>>3, uint8(tag&7)
	if f.num == 0 {
		return -1, reasonFieldZero
	}
	switch f.wt {
	case wtVarint:
		f.v, i = pvarint(b, i)
		if i < 0 {
			return -1, varintReason(i)
		}
	case wtI64:
		if len(b)-i < 8 {
			return -1, reasonTruncated
		}
		f.v = binary.LittleEndian.Uint64(b[i:])
		i += 8
	case wtI32:
		if len(b)-i < 4 {
			return -1, reasonTruncated
		}
		f.v = uint64(binary.LittleEndian.Uint32(b[i:]))
		i += 4
	case wtLen:
		var n uint64
		n, i = pvarint(b, i)
		if i < 0 {
			return -1, varintReason(i)
		}
		if n > uint64(len(b)-i) {
			return -1, reasonTruncated
		}
		f.b = b[i : i+int(n) : i+int(n)]
		i += int(n)
	case wtStartGroup:
		return pskipGroup(b, i)
	case wtEndGroup:
		return -1, reasonGroupEnd
	default:
		return -1, reasonBadWireType
	}
	return i, ""
}

func varintReason(next int) string {
	if next == -1 {
		return reasonTruncated
	}
	return reasonVarint
}

// pskipGroup skips a (deprecated) group up to its end tag, as pdata does
// for unknown fields.
func pskipGroup(b []byte, i int) (int, string) {
	depth := 1
	for i < len(b) {
		tag, next := pvarint(b, i)
		if next < 0 {
			return -1, varintReason(next)
		}
		i = next
		if tag>>3 == 0 {
			return -1, reasonFieldZero
		}
		switch tag & 7 {
		case wtVarint:
			if _, i = pvarint(b, i); i < 0 {
				return -1, reasonTruncated
			}
		case wtI64:
			if i += 8; i > len(b) {
				return -1, reasonTruncated
			}
		case wtI32:
			if i += 4; i > len(b) {
				return -1, reasonTruncated
			}
		case wtLen:
			var n uint64
			if n, i = pvarint(b, i); i < 0 || n > uint64(len(b)-i) {
				return -1, reasonTruncated
			}
			i += int(n)
		case wtStartGroup:
			if depth++; depth > maxOTLPDepth {
				return -1, reasonGroupDepth
			}
		case wtEndGroup:
			if depth--; depth == 0 {
				return i, ""
			}
		default:
			return -1, reasonBadWireType
		}
	}
	return -1, reasonTruncated
}

func (d *otlpDecoder) perr(field, reason string) error {
	return &OTLPError{Encoding: EncodingOTLPProto, Field: field, Reason: reason, Offset: -1}
}

// wantWT checks a known field's wire type.
func (d *otlpDecoder) wantWT(f *pfield, wt uint8, field string) error {
	if f.wt != wt {
		return d.perr(field, reasonWireType)
	}
	return nil
}

// protoRecord parses TracesData or LogsData: resource_spans / resource_logs = 1.
func (d *otlpDecoder) protoRecord(b []byte) error {
	var f pfield
	for i := 0; i < len(b); {
		var reason string
		if i, reason = pnext(b, i, &f); i < 0 {
			return d.perr("record", reason)
		}
		if f.num == 1 {
			if err := d.wantWT(&f, wtLen, d.c.resItem); err != nil {
				return err
			}
			if err := d.protoResourceItems(f.b); err != nil {
				return err
			}
		}
	}
	return nil
}

// protoResourceItems parses ResourceSpans / ResourceLogs: resource = 1,
// scope_spans / scope_logs = 2, schema_url = 3, deprecated scope lists =
// 1000. The resource is read first wherever it stands, since every item of
// the scopes resolves its rules against it.
func (d *otlpDecoder) protoResourceItems(b []byte) error {
	d.res.reset()
	var f pfield
	for i := 0; i < len(b); {
		var reason string
		if i, reason = pnext(b, i, &f); i < 0 {
			return d.perr(d.c.resItem, reason)
		}
		var err error
		switch f.num {
		case 1:
			if err = d.wantWT(&f, wtLen, "resource"); err == nil {
				err = d.protoResource(f.b)
			}
		case 2, 1000:
			err = d.wantWT(&f, wtLen, d.c.scopeItem)
		case 3:
			err = d.wantWT(&f, wtLen, "schema_url")
		}
		if err != nil {
			return err
		}
	}
	for i := 0; i < len(b); {
		i, _ = pnext(b, i, &f) // checked above
		if f.num == 2 || f.num == 1000 {
			if err := d.protoScopeItems(f.b); err != nil {
				return err
			}
		}
	}
	return nil
}

// protoResource parses Resource: attributes = 1, dropped_attributes_count =
// 2, entity_refs = 3.
func (d *otlpDecoder) protoResource(b []byte) error {
	var f pfield
	for i := 0; i < len(b); {
		var reason string
		if i, reason = pnext(b, i, &f); i < 0 {
			return d.perr("resource", reason)
		}
		var err error
		switch f.num {
		case 1:
			if err = d.wantWT(&f, wtLen, "resource.attributes"); err == nil {
				err = d.protoKV(f.b, &d.res)
			}
		case 2:
			err = d.wantWT(&f, wtVarint, "resource.dropped_attributes_count")
		case 3:
			err = d.wantWT(&f, wtLen, "resource.entity_refs")
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// protoScopeItems parses ScopeSpans / ScopeLogs: scope = 1, spans /
// log_records = 2, schema_url = 3.
func (d *otlpDecoder) protoScopeItems(b []byte) error {
	var f pfield
	for i := 0; i < len(b); {
		var reason string
		if i, reason = pnext(b, i, &f); i < 0 {
			return d.perr(d.c.scopeItem, reason)
		}
		var err error
		switch f.num {
		case 1:
			err = d.wantWT(&f, wtLen, "scope")
		case 2:
			if d.c.logs {
				if err = d.wantWT(&f, wtLen, "log_record"); err == nil {
					err = d.protoLog(f.b)
				}
			} else if err = d.wantWT(&f, wtLen, "span"); err == nil {
				err = d.protoSpan(f.b)
			}
		case 3:
			err = d.wantWT(&f, wtLen, "schema_url")
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// protoSpan parses Span and maps it.
func (d *otlpDecoder) protoSpan(b []byte) error {
	sp := &d.sp
	sp.reset()
	var f pfield
	for i := 0; i < len(b); {
		var reason string
		if i, reason = pnext(b, i, &f); i < 0 {
			return d.perr("span", reason)
		}
		var err error
		switch f.num {
		case 1:
			if err = d.wantWT(&f, wtLen, "span.trace_id"); err == nil {
				sp.traceID, err = d.protoID(f.b, 16, "span.trace_id")
			}
		case 2:
			if err = d.wantWT(&f, wtLen, "span.span_id"); err == nil {
				sp.spanID, err = d.protoID(f.b, 8, "span.span_id")
			}
		case 3:
			err = d.wantWT(&f, wtLen, "span.trace_state")
		case 4:
			if err = d.wantWT(&f, wtLen, "span.parent_span_id"); err == nil {
				sp.parentID, err = d.protoID(f.b, 8, "span.parent_span_id")
			}
		case 5:
			if err = d.wantWT(&f, wtLen, "span.name"); err == nil {
				sp.name = f.b
			}
		case 6:
			err = d.wantWT(&f, wtVarint, "span.kind")
		case 7:
			if err = d.wantWT(&f, wtI64, "span.start_time_unix_nano"); err == nil {
				sp.start = f.v
			}
		case 8:
			if err = d.wantWT(&f, wtI64, "span.end_time_unix_nano"); err == nil {
				sp.end = f.v
			}
		case 9:
			if err = d.wantWT(&f, wtLen, "span.attributes"); err == nil {
				err = d.protoKV(f.b, &sp.attrs)
			}
		case 10, 12, 14:
			err = d.wantWT(&f, wtVarint, "span.dropped_count")
		case 11:
			if err = d.wantWT(&f, wtLen, "span.events"); err == nil {
				err = d.protoEvent(f.b, sp)
			}
		case 13:
			err = d.wantWT(&f, wtLen, "span.links")
		case 15:
			if err = d.wantWT(&f, wtLen, "span.status"); err == nil {
				err = d.protoStatus(f.b, sp)
			}
		case 16:
			err = d.wantWT(&f, wtI32, "span.flags")
		}
		if err != nil {
			return err
		}
	}
	if !d.span(sp) {
		return d.perr("record", reasonTooManyEvents)
	}
	return nil
}

// protoStatus parses Status: message = 2, code = 3.
func (d *otlpDecoder) protoStatus(b []byte, sp *spanState) error {
	var f pfield
	for i := 0; i < len(b); {
		var reason string
		if i, reason = pnext(b, i, &f); i < 0 {
			return d.perr("span.status", reason)
		}
		switch f.num {
		case 2:
			if err := d.wantWT(&f, wtLen, "span.status.message"); err != nil {
				return err
			}
		case 3:
			if err := d.wantWT(&f, wtVarint, "span.status.code"); err != nil {
				return err
			}
			sp.code = uint64(int32(f.v)) // an enum is an int32
		}
	}
	return nil
}

// protoEvent parses Span.Event: time_unix_nano = 1, name = 2, attributes =
// 3, dropped_attributes_count = 4.
func (d *otlpDecoder) protoEvent(b []byte, sp *spanState) error {
	t := &d.evTab
	t.reset()
	var f pfield
	var name []byte
	var ts uint64
	for i := 0; i < len(b); {
		var reason string
		if i, reason = pnext(b, i, &f); i < 0 {
			return d.perr("span.event", reason)
		}
		var err error
		switch f.num {
		case 1:
			if err = d.wantWT(&f, wtI64, "span.event.time_unix_nano"); err == nil {
				ts = f.v
			}
		case 2:
			if err = d.wantWT(&f, wtLen, "span.event.name"); err == nil {
				name = f.b
			}
		case 3:
			if err = d.wantWT(&f, wtLen, "span.event.attributes"); err == nil {
				err = d.protoKV(f.b, t)
			}
		case 4:
			err = d.wantWT(&f, wtVarint, "span.event.dropped_attributes_count")
		}
		if err != nil {
			return err
		}
	}
	d.spanEvent(sp, name, ts)
	return nil
}

// spanEvent keeps what the mapping reads of a span event parsed into evTab.
func (d *otlpDecoder) spanEvent(sp *spanState, name []byte, ts uint64) {
	switch string(name) {
	case exceptionEventName:
		if sp.excType == nil {
			sp.excType, _ = d.evTab.str(aExceptionType)
		}
	case evalEventName:
		sp.evals = append(sp.evals, evalFromTab(&d.evTab, ts))
	}
}

// protoLog parses LogRecord and maps it: time_unix_nano = 1,
// severity_number = 2, severity_text = 3, body = 5, attributes = 6,
// dropped_attributes_count = 7, flags = 8, trace_id = 9, span_id = 10,
// observed_time_unix_nano = 11, event_name = 12.
func (d *otlpDecoder) protoLog(b []byte) error {
	lr := &d.lr
	lr.reset()
	var f pfield
	for i := 0; i < len(b); {
		var reason string
		if i, reason = pnext(b, i, &f); i < 0 {
			return d.perr("log_record", reason)
		}
		var err error
		switch f.num {
		case 1:
			if err = d.wantWT(&f, wtI64, "log_record.time_unix_nano"); err == nil {
				lr.time = f.v
			}
		case 2, 7:
			err = d.wantWT(&f, wtVarint, "log_record.severity_number")
		case 3, 5:
			err = d.wantWT(&f, wtLen, "log_record.body")
		case 6:
			if err = d.wantWT(&f, wtLen, "log_record.attributes"); err == nil {
				err = d.protoKV(f.b, &lr.attrs)
			}
		case 8:
			err = d.wantWT(&f, wtI32, "log_record.flags")
		case 9:
			if err = d.wantWT(&f, wtLen, "log_record.trace_id"); err == nil {
				lr.traceID, err = d.protoID(f.b, 16, "log_record.trace_id")
			}
		case 10:
			if err = d.wantWT(&f, wtLen, "log_record.span_id"); err == nil {
				lr.spanID, err = d.protoID(f.b, 8, "log_record.span_id")
			}
		case 11:
			if err = d.wantWT(&f, wtI64, "log_record.observed_time_unix_nano"); err == nil {
				lr.observed = f.v
			}
		case 12:
			if err = d.wantWT(&f, wtLen, "log_record.event_name"); err == nil {
				lr.eventName = f.b
			}
		}
		if err != nil {
			return err
		}
	}
	if !d.log(lr) {
		return d.perr("record", reasonTooManyEvents)
	}
	return nil
}

// protoID checks a trace or span id's size and returns its lower-case hex
// in the arena; empty and all-zero ids (invalid per the spec) are nil.
func (d *otlpDecoder) protoID(b []byte, size int, field string) ([]byte, error) {
	if len(b) == 0 {
		return nil, nil
	}
	if len(b) != size {
		if size == 16 {
			return nil, d.perr(field, reasonTraceIDLength)
		}
		return nil, d.perr(field, reasonSpanIDLength)
	}
	if allZero(b) {
		return nil, nil
	}
	start := len(d.arena)
	d.arena = appendHex(d.arena, b)
	return d.arena[start:len(d.arena):len(d.arena)], nil
}

// protoKV parses KeyValue (key = 1, value = 2) into t when the mapping reads
// its key.
func (d *otlpDecoder) protoKV(b []byte, t *attrTab) error {
	var f pfield
	var key, val []byte
	hasVal := false
	for i := 0; i < len(b); {
		var reason string
		if i, reason = pnext(b, i, &f); i < 0 {
			return d.perr("attribute", reason)
		}
		switch f.num {
		case 1:
			if err := d.wantWT(&f, wtLen, "attribute.key"); err != nil {
				return err
			}
			key = f.b
		case 2:
			if err := d.wantWT(&f, wtLen, "attribute.value"); err != nil {
				return err
			}
			val, hasVal = f.b, true
		}
	}
	if !hasVal {
		return nil
	}
	ki, ok := d.rs.keys.lookup(key)
	if !ok {
		return nil
	}
	v, err := d.protoAny(val)
	if err != nil {
		return err
	}
	t.set(ki, v)
	return nil
}

// protoAny parses AnyValue: string_value = 1, bool_value = 2, int_value = 3,
// double_value = 4, array_value = 5, kvlist_value = 6, bytes_value = 7,
// string_value_strindex = 8 (profiles only). The last of a oneof wins.
func (d *otlpDecoder) protoAny(b []byte) (anyVal, error) {
	var f pfield
	var v anyVal
	for i := 0; i < len(b); {
		var reason string
		if i, reason = pnext(b, i, &f); i < 0 {
			return v, d.perr("attribute.value", reason)
		}
		want := uint8(wtLen)
		switch f.num {
		case 1:
			v = anyVal{t: vStr, s: f.b}
		case 2:
			want = wtVarint
			v = anyVal{t: vBool}
			if f.v != 0 {
				v.n = 1
			}
		case 3:
			want = wtVarint
			v = anyVal{t: vInt, n: f.v}
		case 4:
			want = wtI64
			v = anyVal{t: vDouble, n: f.v}
		case 5, 6, 7:
			v = anyVal{t: vOther}
		case 8:
			want = wtVarint
			v = anyVal{t: vOther}
		default:
			continue
		}
		if f.wt != want {
			return v, d.perr("attribute.value", reasonWireType)
		}
	}
	return v, nil
}
