package schemas

import (
	"errors"
	"math"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
	"unsafe"
)

// ErrTooLarge is returned by Decoder.Decode for a record longer than
// MaxRecordBytes. The record is refused before any parsing.
var ErrTooLarge = errors.New("schemas: record larger than MaxRecordBytes")

// DecodeError says why a record is not a valid agent event v1. Field is the
// JSON field at fault ("rollout", "outcome.score", …), or "" when the record as
// a whole is refused (not JSON, not an object). Field and Reason come from a
// small fixed set of constant strings, so both can label dead-letter metrics
// without raising their cardinality.
type DecodeError struct {
	Field  string
	Reason string
}

// Error returns e.g. "field duration_ms: negative" or "record: not JSON".
func (e *DecodeError) Error() string {
	if e.Field == "" {
		return "record: " + e.Reason
	}
	return "field " + e.Field + ": " + e.Reason
}

// Reasons of DecodeError. Constant so that they can label metrics.
const (
	reasonNotJSON       = "not JSON"
	reasonNotObject     = "not an object"
	reasonTooDeep       = "nested too deep"
	reasonMissing       = "missing"
	reasonEmpty         = "empty"
	reasonDuplicate     = "duplicate field"
	reasonNotString     = "not a string"
	reasonNotNumber     = "not a number"
	reasonNotInteger    = "not an integer"
	reasonNotBool       = "not a boolean"
	reasonNotArray      = "not an array"
	reasonNotTime       = "not an RFC 3339 string or an integer"
	reasonBadTime       = "invalid RFC 3339 time"
	reasonBeforeEpoch   = "not after the Unix epoch"
	reasonTimeRange     = "after year 2262 (beyond int64 nanoseconds)"
	reasonTooLong       = "too long"
	reasonBadUTF8       = "invalid UTF-8"
	reasonNegative      = "negative"
	reasonTooLarge      = "too large"
	reasonUnknownValue  = "unknown value"
	reasonOutside01     = "outside 0..1"
	reasonTooManyItems  = "too many items"
	reasonItemNotString = "item not a string"
	reasonItemEmpty     = "item empty"
	reasonItemTooLong   = "item too long"
	reasonItemBadUTF8   = "item invalid UTF-8"
	reasonTooManyAttrs  = "too many entries"
	reasonKeyEmpty      = "key empty"
	reasonKeyTooLong    = "key too long"
	reasonKeyBadUTF8    = "key invalid UTF-8"
	reasonKeyDuplicate  = "duplicate key"
	reasonValNotString  = "value not a string"
	reasonValTooLong    = "value too long"
	reasonValBadUTF8    = "value invalid UTF-8"
	reasonOverRequests  = "greater than requests"
)

// maxDepth bounds the nesting of the values the decoder skips (unknown fields
// and unknown outcome members), so that a hostile record cannot drive the
// recursion deep. The event object itself is level 1.
const maxDepth = 128

// Fields of the event object. The bit 1<<f marks a field as seen, so that a
// duplicate is refused rather than silently resolved: JSON parsers disagree
// on which of two duplicates wins, and the dead-letter topic must show it.
const (
	fRollout = iota
	fVersion
	fKind
	fName
	fTS
	fDuration
	fStatus
	fErrorType
	fInputTokens
	fOutputTokens
	fCost
	fContextTokens
	fContextLimit
	fTraceID
	fSpanID
	fParentSpanID
	fSessionID
	fDeploymentID
	fCommit
	fToolCalls
	fRequests
	fRequestErrors
	fRequestMedian
	fOutcome
	fAttrs
	numFields

	fUnknown = -1
)

// Decoder.seen and Decoder.set hold one bit per field.
var _ [32 - numFields]struct{}

// fieldNames are the wire names of the f* constants, for DecodeError.Field.
var fieldNames = [numFields]string{
	fRollout:       "rollout",
	fVersion:       "version",
	fKind:          "kind",
	fName:          "name",
	fTS:            "ts",
	fDuration:      "duration_ms",
	fStatus:        "status",
	fErrorType:     "error_type",
	fInputTokens:   "input_tokens",
	fOutputTokens:  "output_tokens",
	fCost:          "cost_usd",
	fContextTokens: "context_tokens",
	fContextLimit:  "context_limit",
	fTraceID:       "trace_id",
	fSpanID:        "span_id",
	fParentSpanID:  "parent_span_id",
	fSessionID:     "session_id",
	fDeploymentID:  "deployment_id",
	fCommit:        "commit",
	fToolCalls:     "tool_calls",
	fRequests:      "requests",
	fRequestErrors: "request_errors",
	fRequestMedian: "request_median_ms",
	fOutcome:       "outcome",
	fAttrs:         "attrs",
}

func fieldID(key []byte) int {
	switch string(key) {
	case "rollout":
		return fRollout
	case "version":
		return fVersion
	case "kind":
		return fKind
	case "name":
		return fName
	case "ts":
		return fTS
	case "duration_ms":
		return fDuration
	case "status":
		return fStatus
	case "error_type":
		return fErrorType
	case "input_tokens":
		return fInputTokens
	case "output_tokens":
		return fOutputTokens
	case "cost_usd":
		return fCost
	case "context_tokens":
		return fContextTokens
	case "context_limit":
		return fContextLimit
	case "trace_id":
		return fTraceID
	case "span_id":
		return fSpanID
	case "parent_span_id":
		return fParentSpanID
	case "session_id":
		return fSessionID
	case "deployment_id":
		return fDeploymentID
	case "commit":
		return fCommit
	case "tool_calls":
		return fToolCalls
	case "requests":
		return fRequests
	case "request_errors":
		return fRequestErrors
	case "request_median_ms":
		return fRequestMedian
	case "outcome":
		return fOutcome
	case "attrs":
		return fAttrs
	}
	return fUnknown
}

// Decoder decodes agent events v1 (agent-event.v1.json) from JSON records in
// one strict pass, allocating nothing once warm. It keeps a copy of the last
// record, which the decoded Event's byte slices point into (escaped strings
// are unescaped in place). The zero value is ready to use. A Decoder is not
// safe for concurrent use: keep one per partition goroutine.
//
// Why not a general JSON parser: on the records of BenchmarkDecode,
// github.com/valyala/fastjson alone (parse and visit the fields, no checks)
// takes about as long as the whole of Decode, and its parser is lenient (NaN,
// "+1", "01", raw control characters, bad escapes); a fastjson decoder made
// strict with its validator ran at 0.95M events/s against the 2M target. See
// README.md in this folder for the figures.
type Decoder struct {
	buf []byte // copy of the record; Event and attrs slices point into it
	i   int    // read position in buf

	// attrs holds key, value, key, value, … of the last record's attrs.
	attrs [][]byte

	// State of the Decode in progress.
	err  *DecodeError // first field error; a syntax error takes precedence
	deep bool         // the syntax error is nesting beyond maxDepth
	seen uint32       // fields present, 1<<f
	set  uint32       // fields present and not null, 1<<f
}

// Decode fills ev from one JSON record b, calling ev.Reset first. On success
// ev's byte slices point into d's copy of b and stay valid until the next
// Decode on d; b itself may be reused at once. Decode allocates nothing once
// d and ev have seen records of the same shape (ev.ToolCalls keeps its
// capacity across Reset, so reuse ev too). On error ev is left reset.
//
// The record must be one JSON object (RFC 8259: no NaN or Infinity, no
// leading zeros or '+', no raw control characters or bad escapes in strings,
// no trailing data) of at most MaxRecordBytes, else the error is ErrTooLarge
// or a *DecodeError with an empty Field. Each field is then checked as
// agent-event.v1.json says, and the first fault in record order is returned
// as a *DecodeError naming the field; then request_errors greater than
// requests (when both are given); then a missing rollout, version or ts.
// Unknown fields are skipped (still checked as JSON, nesting at most
// maxDepth); a known field given twice is refused; a known field set to null
// counts as absent. Strings the decoder keeps must be valid UTF-8; a lone
// UTF-16 surrogate escape becomes U+FFFD, as encoding/json does.
//
// ts is either an RFC 3339 string (YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM), T and
// Z in either case, fraction digits past nanoseconds truncated, no leap
// second) or a JSON integer of unix nanoseconds. There is no guessing of
// seconds or milliseconds: an integer is always nanoseconds. Either way the
// time must be after the Unix epoch and before year 2262 (int64 nanoseconds).
func (d *Decoder) Decode(b []byte, ev *Event) error {
	ev.Reset()
	d.attrs = d.attrs[:0]
	if len(b) > MaxRecordBytes {
		return ErrTooLarge
	}
	d.buf = append(d.buf[:0], b...)
	d.i = 0
	d.err, d.deep, d.seen, d.set = nil, false, 0, 0

	err := d.record(ev)
	if err == nil {
		const bothCounts = 1<<fRequests | 1<<fRequestErrors
		switch {
		case d.set&bothCounts == bothCounts && ev.RequestErrors > ev.Requests:
			// Only now are both known: they may come in either order.
			err = &DecodeError{Field: "request_errors", Reason: reasonOverRequests}
		case d.set&(1<<fRollout) == 0:
			err = &DecodeError{Field: "rollout", Reason: reasonMissing}
		case d.set&(1<<fVersion) == 0:
			err = &DecodeError{Field: "version", Reason: reasonMissing}
		case d.set&(1<<fTS) == 0:
			err = &DecodeError{Field: "ts", Reason: reasonMissing}
		default:
			return nil
		}
	}
	ev.Reset()
	d.attrs = d.attrs[:0]
	return err
}

// Attr returns the value of key in the attrs of the record last decoded
// successfully by d. The value points into d's buffer like the Event's fields.
func (d *Decoder) Attr(key string) (value []byte, ok bool) {
	for i := 0; i+1 < len(d.attrs); i += 2 {
		if string(d.attrs[i]) == key {
			return d.attrs[i+1], true
		}
	}
	return nil, false
}

// VisitAttrs calls f for each attrs entry of the record last decoded
// successfully by d, in record order. f must not keep key or value past the
// next Decode on d.
func (d *Decoder) VisitAttrs(f func(key, value []byte)) {
	for i := 0; i+1 < len(d.attrs); i += 2 {
		f(d.attrs[i], d.attrs[i+1])
	}
}

// record parses the event object and returns a syntax error, else d.err.
func (d *Decoder) record(ev *Event) error {
	d.ws()
	if d.peek() != '{' {
		if d.i < len(d.buf) && d.skipValue(1) && d.end() {
			return &DecodeError{Reason: reasonNotObject}
		}
		return d.syntaxError()
	}
	d.i++
	d.ws()
	if d.peek() == '}' {
		d.i++
		return d.finish()
	}
	for {
		if d.peek() != '"' {
			return d.syntaxError()
		}
		key, _, ok := d.str()
		if !ok {
			return d.syntaxError()
		}
		d.ws()
		if d.peek() != ':' {
			return d.syntaxError()
		}
		d.i++
		d.ws()
		if !d.member(fieldID(key), ev) {
			return d.syntaxError()
		}
		d.ws()
		switch d.peek() {
		case ',':
			d.i++
			d.ws()
			continue
		case '}':
			d.i++
			return d.finish()
		}
		return d.syntaxError()
	}
}

// finish checks that nothing but white space follows the event object.
func (d *Decoder) finish() error {
	if !d.end() {
		return d.syntaxError()
	}
	if d.err != nil {
		return d.err
	}
	return nil
}

func (d *Decoder) syntaxError() error {
	if d.deep {
		return &DecodeError{Reason: reasonTooDeep}
	}
	return &DecodeError{Reason: reasonNotJSON}
}

// member decodes the value of field f at d.i into ev. It returns false on a
// syntax error; field errors go to d.err, and after the first one the rest of
// the record is only checked as JSON.
func (d *Decoder) member(f int, ev *Event) bool {
	if f == fUnknown || d.err != nil {
		return d.skipValue(2)
	}
	if d.seen&(1<<f) != 0 {
		return d.refuse(fieldNames[f], reasonDuplicate, 2)
	}
	d.seen |= 1 << f
	if d.peek() == 'n' {
		return d.lit("null") // absent
	}
	ok := true
	switch f {
	case fRollout:
		ev.Rollout, ok = d.stringField(f, true)
	case fVersion:
		ev.Version, ok = d.stringField(f, true)
	case fName:
		ev.Name, ok = d.stringField(f, false)
	case fErrorType:
		ev.ErrorType, ok = d.stringField(f, false)
	case fTraceID:
		ev.TraceID, ok = d.stringField(f, false)
	case fSpanID:
		ev.SpanID, ok = d.stringField(f, false)
	case fParentSpanID:
		ev.ParentSpanID, ok = d.stringField(f, false)
	case fSessionID:
		ev.SessionID, ok = d.stringField(f, false)
	case fDeploymentID:
		ev.DeploymentID, ok = d.stringField(f, false)
	case fCommit:
		ev.Commit, ok = d.stringField(f, false)
	case fKind:
		var s []byte
		if s, ok = d.stringField(f, false); ok && s != nil {
			var known bool
			if ev.Kind, known = ParseKind(s); !known {
				d.fieldErr(fieldNames[f], reasonUnknownValue)
			}
		}
	case fStatus:
		var s []byte
		if s, ok = d.stringField(f, false); ok && s != nil {
			switch string(s) {
			case "ok":
			case "error":
				ev.Error = true
			default:
				d.fieldErr(fieldNames[f], reasonUnknownValue)
			}
		}
	case fTS:
		ev.TS, ok = d.timeField()
	case fDuration:
		ev.DurationMS, ev.HasDuration, ok = d.floatField(fieldNames[f], MaxDurationMS, 2)
	case fCost:
		ev.CostUSD, ev.HasCost, ok = d.floatField(fieldNames[f], MaxCostUSD, 2)
	case fInputTokens:
		ev.InputTokens, ok = d.intField(f, MaxTokens)
	case fOutputTokens:
		ev.OutputTokens, ok = d.intField(f, MaxTokens)
	case fContextTokens:
		ev.ContextTokens, ok = d.intField(f, MaxTokens)
	case fContextLimit:
		ev.ContextLimit, ok = d.intField(f, MaxTokens)
	case fRequests:
		var n int64
		n, ok = d.intField(f, MaxRequests)
		ev.Requests = uint32(n)
	case fRequestErrors:
		var n int64
		n, ok = d.intField(f, MaxRequests)
		ev.RequestErrors = uint32(n)
	case fRequestMedian:
		ev.RequestMedianMS, ev.HasRequestMedian, ok = d.floatField(fieldNames[f], MaxDurationMS, 2)
	case fToolCalls:
		ok = d.toolCalls(ev)
	case fOutcome:
		ok = d.outcome(ev)
	case fAttrs:
		ok = d.attrsObject()
	}
	if ok && d.err == nil {
		d.set |= 1 << f
	}
	return ok
}

func (d *Decoder) fieldErr(field, reason string) {
	if d.err == nil {
		d.err = &DecodeError{Field: field, Reason: reason}
	}
}

// refuse records a field error (unless one is already recorded) and skips
// the value, which is at level depth.
func (d *Decoder) refuse(field, reason string, depth int) bool {
	d.fieldErr(field, reason)
	return d.skipValue(depth)
}

// stringField decodes a string field; nil on a field error.
func (d *Decoder) stringField(f int, required bool) ([]byte, bool) {
	if d.peek() != '"' {
		return nil, d.refuse(fieldNames[f], reasonNotString, 2)
	}
	s, nonASCII, ok := d.str()
	if !ok {
		return nil, false
	}
	reason := ""
	switch {
	case len(s) == 0 && required:
		reason = reasonEmpty
	case len(s) > MaxStringBytes:
		reason = reasonTooLong
	case nonASCII && !utf8.Valid(s):
		reason = reasonBadUTF8
	default:
		return s, true
	}
	d.fieldErr(fieldNames[f], reason)
	return nil, true
}

// floatField decodes a number in 0..max, at level depth.
func (d *Decoder) floatField(field string, max float64, depth int) (float64, bool, bool) {
	if c := d.peek(); c != '-' && (c < '0' || c > '9') {
		return 0, false, d.refuse(field, reasonNotNumber, depth)
	}
	n, ok := d.number()
	if !ok {
		return 0, false, false
	}
	if n.zero {
		return 0, true, true // also -0, which would otherwise keep its sign
	}
	if n.neg {
		d.fieldErr(field, reasonNegative)
		return 0, false, true
	}
	// An overflow parses as +Inf, which is too large as well.
	if f := n.float(d.buf); f <= max {
		return f, true, true
	}
	d.fieldErr(field, reasonTooLarge)
	return 0, false, true
}

// intField decodes a JSON integer in 0..max.
func (d *Decoder) intField(f int, max int64) (int64, bool) {
	if c := d.peek(); c != '-' && (c < '0' || c > '9') {
		return 0, d.refuse(fieldNames[f], reasonNotNumber, 2)
	}
	n, ok := d.number()
	if !ok {
		return 0, false
	}
	v, reason := n.int(max)
	if reason != "" {
		d.fieldErr(fieldNames[f], reason)
		return 0, true
	}
	return v, true
}

// timeField decodes ts: an RFC 3339 string or integer unix nanoseconds.
func (d *Decoder) timeField() (int64, bool) {
	c := d.peek()
	switch {
	case c == '"':
		s, _, ok := d.str()
		if !ok {
			return 0, false
		}
		ts, reason := parseRFC3339(s)
		if reason != "" {
			d.fieldErr("ts", reason)
		}
		return ts, true
	case c == '-' || c >= '0' && c <= '9':
		n, ok := d.number()
		if !ok {
			return 0, false
		}
		ts, reason := n.int(math.MaxInt64)
		switch {
		case reason == reasonTooLarge:
			reason = reasonTimeRange
		case reason == reasonNegative || reason == "" && ts == 0:
			reason = reasonBeforeEpoch
		}
		if reason != "" {
			d.fieldErr("ts", reason)
			return 0, true
		}
		return ts, true
	}
	return 0, d.refuse("ts", reasonNotTime, 2)
}

func (d *Decoder) toolCalls(ev *Event) bool {
	if d.peek() != '[' {
		return d.refuse("tool_calls", reasonNotArray, 2)
	}
	d.i++
	d.ws()
	if d.peek() == ']' {
		d.i++
		ev.ToolCalls = ev.ToolCalls[:0] // present and empty
		return true
	}
	for n := 1; ; n++ {
		if d.err != nil {
			if !d.skipValue(3) {
				return false
			}
		} else if d.peek() != '"' {
			if !d.refuse("tool_calls", reasonItemNotString, 3) {
				return false
			}
		} else {
			s, nonASCII, ok := d.str()
			if !ok {
				return false
			}
			switch {
			case n > MaxToolCalls:
				d.fieldErr("tool_calls", reasonTooManyItems)
			case len(s) == 0:
				d.fieldErr("tool_calls", reasonItemEmpty)
			case len(s) > MaxStringBytes:
				d.fieldErr("tool_calls", reasonItemTooLong)
			case nonASCII && !utf8.Valid(s):
				d.fieldErr("tool_calls", reasonItemBadUTF8)
			default:
				ev.ToolCalls = append(ev.ToolCalls, s)
			}
		}
		d.ws()
		switch d.peek() {
		case ',':
			d.i++
			d.ws()
			continue
		case ']':
			d.i++
			return true
		}
		return false
	}
}

func (d *Decoder) outcome(ev *Event) bool {
	if d.peek() != '{' {
		return d.refuse("outcome", reasonNotObject, 2)
	}
	ev.HasOutcome = true
	var seen uint8
	return d.object(2, func(key []byte) bool {
		if d.err != nil {
			return d.skipValue(3)
		}
		var bit uint8
		var field string
		switch string(key) {
		case "success":
			bit, field = 1, "outcome.success"
		case "score":
			bit, field = 2, "outcome.score"
		case "hallucination":
			bit, field = 4, "outcome.hallucination"
		default:
			return d.skipValue(3)
		}
		if seen&bit != 0 {
			return d.refuse(field, reasonDuplicate, 3)
		}
		seen |= bit
		c := d.peek()
		switch {
		case c == 'n':
			return d.lit("null")
		case bit == 2:
			f, ok, syntaxOK := d.floatField(field, maxOutcomeScore, 3)
			if d.err != nil && d.err.Field == field &&
				(d.err.Reason == reasonNegative || d.err.Reason == reasonTooLarge) {
				d.err.Reason = reasonOutside01
			}
			ev.OutcomeScore, ev.HasOutcomeScore = f, ok
			return syntaxOK
		case c == 't' || c == 'f':
			v := c == 't'
			if bit == 1 {
				ev.OutcomeSuccess, ev.HasOutcomeSuccess = v, true
			} else {
				ev.OutcomeHallucinated, ev.HasHallucination = v, true
			}
			if v {
				return d.lit("true")
			}
			return d.lit("false")
		}
		return d.refuse(field, reasonNotBool, 3)
	})
}

func (d *Decoder) attrsObject() bool {
	if d.peek() != '{' {
		return d.refuse("attrs", reasonNotObject, 2)
	}
	return d.object(2, func(key []byte) bool {
		if d.err != nil {
			return d.skipValue(3)
		}
		if d.peek() != '"' {
			return d.refuse("attrs", reasonValNotString, 3)
		}
		v, nonASCII, ok := d.str()
		if !ok {
			return false
		}
		reason := ""
		switch {
		case len(d.attrs) >= 2*MaxAttrs:
			reason = reasonTooManyAttrs
		case len(key) == 0:
			reason = reasonKeyEmpty
		case len(key) > MaxStringBytes:
			reason = reasonKeyTooLong
		case !utf8.Valid(key):
			reason = reasonKeyBadUTF8
		case len(v) > MaxStringBytes:
			reason = reasonValTooLong
		case nonASCII && !utf8.Valid(v):
			reason = reasonValBadUTF8
		default:
			for i := 0; i < len(d.attrs); i += 2 {
				if string(d.attrs[i]) == string(key) {
					reason = reasonKeyDuplicate
					break
				}
			}
		}
		if reason != "" {
			d.fieldErr("attrs", reason)
			return true
		}
		d.attrs = append(d.attrs, key, v)
		return true
	})
}

// object parses the object at d.i, calling member for each key with d.i at
// the value; member must consume the value. depth is the object's level.
func (d *Decoder) object(depth int, member func(key []byte) bool) bool {
	if depth > maxDepth {
		d.deep = true
		return false
	}
	d.i++ // '{'
	d.ws()
	if d.peek() == '}' {
		d.i++
		return true
	}
	for {
		if d.peek() != '"' {
			return false
		}
		key, _, ok := d.str()
		if !ok {
			return false
		}
		d.ws()
		if d.peek() != ':' {
			return false
		}
		d.i++
		d.ws()
		if !member(key) {
			return false
		}
		d.ws()
		switch d.peek() {
		case ',':
			d.i++
			d.ws()
			continue
		case '}':
			d.i++
			return true
		}
		return false
	}
}

// skipValue checks the JSON value at d.i and moves past it. depth is the
// value's level: the event object is level 1, its members' values level 2.
func (d *Decoder) skipValue(depth int) bool {
	switch c := d.peek(); {
	case c == '"':
		_, _, ok := d.str()
		return ok
	case c == '{':
		return d.object(depth, func([]byte) bool { return d.skipValue(depth + 1) })
	case c == '[':
		return d.skipArray(depth)
	case c == 't':
		return d.lit("true")
	case c == 'f':
		return d.lit("false")
	case c == 'n':
		return d.lit("null")
	case c == '-' || c >= '0' && c <= '9':
		_, ok := d.number()
		return ok
	}
	return false
}

func (d *Decoder) skipArray(depth int) bool {
	if depth > maxDepth {
		d.deep = true
		return false
	}
	d.i++ // '['
	d.ws()
	if d.peek() == ']' {
		d.i++
		return true
	}
	for {
		if !d.skipValue(depth + 1) {
			return false
		}
		d.ws()
		switch d.peek() {
		case ',':
			d.i++
			d.ws()
			continue
		case ']':
			d.i++
			return true
		}
		return false
	}
}

// peek returns the byte at d.i, or 0 at the end (0 is never valid there).
func (d *Decoder) peek() byte {
	if d.i < len(d.buf) {
		return d.buf[d.i]
	}
	return 0
}

// ws skips JSON white space.
func (d *Decoder) ws() {
	b, i := d.buf, d.i
	for i < len(b) && (b[i] == ' ' || b[i] == '\n' || b[i] == '\r' || b[i] == '\t') {
		i++
	}
	d.i = i
}

// end skips white space and reports whether the record ends there.
func (d *Decoder) end() bool {
	d.ws()
	return d.i == len(d.buf)
}

// lit consumes the literal word (true, false, null).
func (d *Decoder) lit(word string) bool {
	if len(d.buf)-d.i < len(word) || string(d.buf[d.i:d.i+len(word)]) != word {
		return false
	}
	d.i += len(word)
	return true
}

// plain marks the bytes that a string scan passes over: not '"', not '\\',
// not a control character.
var plain = func() (t [256]bool) {
	for c := 0x20; c < 256; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// str consumes the string at d.i (d.buf[d.i] == '"') and returns its
// unescaped bytes, unescaped in place, and whether it may hold non-ASCII bytes
// (then the caller checks UTF-8 if it keeps the string). The slice's capacity
// is its length, so appending to it cannot overwrite the buffer.
func (d *Decoder) str() (s []byte, nonASCII, ok bool) {
	b := d.buf
	start := d.i + 1
	i := start
	// Byte by byte: an 8-bytes-at-a-time scan measured slower on the short
	// strings of real events.
	var or byte
	for i < len(b) && plain[b[i]] {
		or |= b[i]
		i++
	}
	if i < len(b) && b[i] == '"' {
		d.i = i + 1
		return b[start:i:i], or >= utf8.RuneSelf, true
	}
	if i < len(b) && b[i] == '\\' {
		return d.strEscaped(start, i)
	}
	return nil, false, false // end of record or a control character
}

// strEscaped finishes str from the first backslash at i. It decodes escapes
// itself rather than through internal/jsonesc (which the OTLP/JSON decoder
// uses): with the call to jsonesc.Decode here, BenchmarkDecode ran 10% slower
// (393–409 vs 350–365 ns/op, six interleaved runs of each binary) although
// its records hold no escape at all — a code-layout effect on this hot path
// that the duplicated 60 lines are worth avoiding. TestDecodeAsEncodingJSON
// (internal/jsonesc) and FuzzDecode check both against encoding/json.
func (d *Decoder) strEscaped(start, i int) ([]byte, bool, bool) {
	b := d.buf
	w := i // write position; never past i
	for i < len(b) {
		c := b[i]
		if c == '"' {
			d.i = i + 1
			return b[start:w:w], true, true
		}
		if c < 0x20 {
			return nil, false, false
		}
		if c != '\\' {
			b[w] = c
			w++
			i++
			continue
		}
		if i+1 >= len(b) {
			return nil, false, false
		}
		switch b[i+1] {
		case '"', '\\', '/':
			b[w] = b[i+1]
		case 'b':
			b[w] = '\b'
		case 'f':
			b[w] = '\f'
		case 'n':
			b[w] = '\n'
		case 'r':
			b[w] = '\r'
		case 't':
			b[w] = '\t'
		case 'u':
			r, ok := hex4(b, i+2)
			if !ok {
				return nil, false, false
			}
			i += 6
			if utf16.IsSurrogate(r) {
				r2 := rune(-1)
				if r < 0xdc00 && i+6 <= len(b) && b[i] == '\\' && b[i+1] == 'u' {
					r2, _ = hex4(b, i+2)
				}
				if r2 >= 0xdc00 && r2 < 0xe000 {
					r = utf16.DecodeRune(r, r2)
					i += 6
				} else {
					r = utf8.RuneError // a lone surrogate, as encoding/json does
				}
			}
			// At most 4 bytes for at least 6 read: w stays behind i.
			w += utf8.EncodeRune(b[w:], r)
			continue
		default:
			return nil, false, false
		}
		w++
		i += 2
	}
	return nil, false, false
}

// hex4 parses the 4 hex digits at b[i:].
func hex4(b []byte, i int) (rune, bool) {
	if i+4 > len(b) {
		return 0, false
	}
	var r rune
	for _, c := range b[i : i+4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c -= 'a' - 10
		case c >= 'A' && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

// numLit is a JSON number as scanned: its text span and, while it has at most
// 19 digits, its digits as an integer.
type numLit struct {
	start, end int
	mant       uint64 // the digits (integer and fraction) as one integer
	digits     int    // count of digits in the integer and fraction parts
	frac       int    // count of digits in the fraction part
	neg        bool
	zero       bool // every digit is 0
	exp        bool // has an exponent part
}

// pow10 holds the powers of ten that float64 represents exactly.
var pow10 = [...]float64{1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10,
	1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22}

// number consumes the JSON number at d.i, strictly per RFC 8259.
func (d *Decoder) number() (n numLit, ok bool) {
	b, i := d.buf, d.i
	n.start = i
	n.zero = true
	if i < len(b) && b[i] == '-' {
		n.neg = true
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		n.digits = 1
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			n.add(b[i])
			i++
		}
	default:
		return n, false
	}
	if i < len(b) && b[i] == '.' {
		i++
		j := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			n.add(b[i])
			i++
		}
		if i == j {
			return n, false
		}
		n.frac = i - j
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		n.exp = true
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		j := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		if i == j {
			return n, false
		}
	}
	n.end = i
	d.i = i
	return n, true
}

func (n *numLit) add(c byte) {
	if n.digits < 19 {
		n.mant = n.mant*10 + uint64(c-'0')
	}
	n.digits++
	if c != '0' {
		n.zero = false
	}
}

// float returns the value of n, correctly rounded.
func (n *numLit) float(b []byte) float64 {
	if !n.exp && n.digits <= 15 {
		// Exact: the digits fit in 53 bits and the power of ten is exact,
		// so the one division rounds correctly (Clinger's fast path).
		f := float64(n.mant)
		if n.frac > 0 {
			f /= pow10[n.frac]
		}
		if n.neg {
			f = -f
		}
		return f
	}
	// On overflow ParseFloat returns ±Inf with an error: Inf is the answer.
	f, _ := strconv.ParseFloat(unsafe.String(&b[n.start], n.end-n.start), 64)
	return f
}

// int returns the value of n if it is an integer (no fraction, no exponent)
// in 0..max, else why not.
func (n *numLit) int(max int64) (int64, string) {
	switch {
	case n.frac > 0 || n.exp:
		return 0, reasonNotInteger
	case n.zero:
		return 0, ""
	case n.neg:
		return 0, reasonNegative
	case n.digits > 19 || n.mant > uint64(max):
		return 0, reasonTooLarge
	}
	return int64(n.mant), ""
}
