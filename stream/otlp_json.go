package stream

import (
	"encoding/binary"
	"math"
	"math/bits"
	"strconv"
	"unicode/utf8"
	"unsafe"

	"github.com/inferensys/canaryd/internal/jsonesc"
)

// otlp_json: OTLP/JSON (the protobuf JSON mapping with the OTLP rules: ids
// as hex strings, enums as integers, 64-bit integers as strings or numbers)
// read in one pass without building values. Field names are accepted in
// lowerCamelCase and in the proto's snake_case, as pdata's JSONUnmarshaler
// accepts them; unknown fields are skipped. The whole record is checked to be
// JSON (strings the mapping does not keep are skipped without checking their
// escapes, as jsoniter does); the members on the path to spans and log
// records, and the values the mapping reads, must have their OTLP types.

// Reasons of JSON OTLPErrors.
const (
	reasonJSONEnd      = "unexpected end of JSON"
	reasonJSONSyntax   = "invalid JSON"
	reasonJSONTrailing = "data after the JSON value"
	reasonJSONDepth    = "nested too deep"
	reasonNotObject    = "not an object"
	reasonNotArray     = "not an array"
	reasonNotString    = "not a string"
	reasonNotInt       = "not an integer"
	reasonNotNumber    = "not a number"
	reasonNotBool      = "not a boolean"
	reasonBadString    = "invalid string"
	reasonNotHex       = "not hex"
	reasonHexLength    = "wrong length"
	reasonEnum         = "unknown enum value"
	reasonNoTraces     = "no resourceSpans (not an OTLP/JSON traces record)"
	reasonNoLogs       = "no resourceLogs (not an OTLP/JSON logs record)"
)

// jsonScan is the read position in a JSON record.
type jsonScan struct {
	b   []byte
	i   int
	err *OTLPError // the first error; parsing stops at it
}

// fail records the first error and returns false.
func (s *jsonScan) fail(field, reason string) bool {
	if s.err == nil {
		s.err = &OTLPError{Encoding: EncodingOTLPJSON, Field: field, Reason: reason, Offset: s.i}
	}
	return false
}

func (s *jsonScan) ws() {
	if s.i < len(s.b) && s.b[s.i] > ' ' {
		return // compact JSON, as the exporter writes it
	}
	s.wsSlow()
}

func (s *jsonScan) wsSlow() {
	for s.i < len(s.b) {
		c := s.b[s.i]
		if c > ' ' || c != ' ' && c != '\t' && c != '\n' && c != '\r' {
			return
		}
		s.i++
	}
}

func (s *jsonScan) peek() byte {
	if s.i < len(s.b) {
		return s.b[s.i]
	}
	return 0
}

func (s *jsonScan) lit(w string) bool {
	if len(s.b)-s.i >= len(w) && string(s.b[s.i:s.i+len(w)]) == w {
		s.i += len(w)
		return true
	}
	return false
}

// open consumes c ('{' or '[') after white space. A null is an empty value:
// open returns false without an error.
func (s *jsonScan) open(c byte, field string) bool {
	s.ws()
	if s.peek() == c {
		s.i++
		return true
	}
	if s.lit("null") {
		return false
	}
	if s.i >= len(s.b) {
		return s.fail(field, reasonJSONEnd)
	}
	if c == '{' {
		return s.fail(field, reasonNotObject)
	}
	return s.fail(field, reasonNotArray)
}

// more reports whether another member or element follows in the object or
// array that open entered; n counts those seen. It consumes the comma before
// the next one, or the closing byte. On a syntax error it returns false and
// sets s.err.
func (s *jsonScan) more(close byte, n *int) bool {
	// Fast path: compact JSON, the closing byte or a comma right before the
	// next value.
	if i := s.i; i+1 < len(s.b) {
		if c := s.b[i]; c == close {
			s.i = i + 1
			return false
		} else if c == ',' && *n > 0 && s.b[i+1] > ' ' && s.b[i+1] != close {
			s.i = i + 1
			*n++
			return true
		}
	}
	return s.moreSlow(close, n)
}

func (s *jsonScan) moreSlow(close byte, n *int) bool {
	s.ws()
	if s.i >= len(s.b) {
		return s.fail("record", reasonJSONEnd)
	}
	c := s.b[s.i]
	if c == close {
		s.i++
		return false
	}
	if *n > 0 {
		if c != ',' {
			return s.fail("record", reasonJSONSyntax)
		}
		s.i++
		s.ws()
		if s.peek() == close {
			return s.fail("record", reasonJSONSyntax) // trailing comma
		}
	}
	*n++
	return true
}

// skip skips one JSON value, checking its syntax.
func (s *jsonScan) skip(depth int) bool {
	s.ws()
	if s.i >= len(s.b) {
		return s.fail("record", reasonJSONEnd)
	}
	switch c := s.b[s.i]; c {
	case '"':
		return s.skipStr()
	case '{', '[':
		if depth > maxOTLPDepth {
			return s.fail("record", reasonJSONDepth)
		}
		s.i++
		if c == '{' {
			return s.skipMembers(depth, 0)
		}
		n := 0
		for s.more(']', &n) {
			if !s.skip(depth + 1) {
				return false
			}
		}
		return s.err == nil
	case 't':
		if s.lit("true") {
			return true
		}
	case 'f':
		if s.lit("false") {
			return true
		}
	case 'n':
		if s.lit("null") {
			return true
		}
	default:
		_, ok := s.number()
		return ok
	}
	return s.fail("record", reasonJSONSyntax)
}

// skipMembers skips the rest of an object whose first n members are read.
func (s *jsonScan) skipMembers(depth, n int) bool {
	for s.more('}', &n) {
		s.ws()
		if s.peek() != '"' {
			return s.fail("record", reasonJSONSyntax)
		}
		if !s.skipStr() || !s.colon() || !s.skip(depth+1) {
			return false
		}
	}
	return s.err == nil
}

// skipValue skips an AnyValue, as skip(1) does, with fast paths for the
// one-member objects that most attributes have, {"stringValue":"…"} first.
func (s *jsonScan) skipValue() bool {
	b, i := s.b, s.i
	if len(b)-i >= 16 && le64(b[i:]) == wStringValue0 && le64(b[i+8:]) == wStringValue1 {
		s.i = i + len(`{"stringValue":`)
		if !s.skipStr() {
			return false
		}
	} else if i+1 < len(b) && b[i] == '{' && b[i+1] == '"' {
		s.i++
		if !s.skipStr() || !s.colon() || !s.skip(2) {
			return false
		}
	} else {
		return s.skip(1)
	}
	if s.i < len(b) && b[s.i] == '}' {
		s.i++
		return true
	}
	return s.skipMembers(1, 1)
}

func (s *jsonScan) colon() bool {
	s.ws()
	if s.peek() != ':' {
		return s.fail("record", reasonJSONSyntax)
	}
	s.i++
	return true
}

// skipStr skips the string at s.i. Its escapes are not checked: no quote
// or backslash can hide in a valid one, so a backslash escapes the byte
// after it and the closing quote is the first other one. Skipped strings
// are short: eight bytes at a time beats bytes.IndexByte's call here.
func (s *jsonScan) skipStr() bool {
	b := s.b
	i := s.i + 1
	for {
		for ; i+8 <= len(b); i += 8 {
			w := binary.LittleEndian.Uint64(b[i:])
			q, bs := w^(ones*'"'), w^(ones*'\\')
			if m := ((q-ones)&^q | (bs-ones)&^bs) & highs; m != 0 {
				i += bits.TrailingZeros64(m) / 8
				break
			}
		}
		for i < len(b) && b[i] != '"' && b[i] != '\\' {
			i++
		}
		if i >= len(b) {
			return s.fail("record", reasonJSONEnd)
		}
		if b[i] == '"' {
			s.i = i + 1
			return true
		}
		i += 2
	}
}

// number consumes a JSON number and returns its text.
func (s *jsonScan) number() ([]byte, bool) {
	b, i := s.b, s.i
	start := i
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
	default:
		return nil, s.fail("record", reasonJSONSyntax)
	}
	if i < len(b) && b[i] == '.' {
		i++
		d := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		if i == d {
			return nil, s.fail("record", reasonJSONSyntax)
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		d := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		if i == d {
			return nil, s.fail("record", reasonJSONSyntax)
		}
	}
	s.i = i
	return b[start:i], true
}

const (
	ones  = 0x0101010101010101
	highs = 0x8080808080808080
)

// plain marks the bytes that stand for themselves inside a JSON string.
var plain = func() (t [256]bool) {
	for c := 0x20; c < 256; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// strEndWords returns the index of the first quote, backslash or control
// character at or after i, and true; or false and where it stopped when
// fewer than eight bytes remain, for strEndTail to finish. It reads eight
// bytes at a time and is small enough to inline in the hot loops.
func strEndWords(b []byte, i int) (int, bool) {
	// A quote, backslash or control byte makes q-1, bs-1 or w-0x20 set its
	// high bit while w has it clear (q and bs share w's high bits, so one
	// &^w serves all three). Borrows only run upwards, so the lowest
	// flagged byte is exact.
	for ; i+8 <= len(b); i += 8 {
		w := le64(b[i:])
		q, bs := w^(ones*'"'), w^(ones*'\\')
		if m := ((q - ones) | (bs - ones) | (w - ones*0x20)) &^ w & highs; m != 0 {
			return i + bits.TrailingZeros64(m)/8, true
		}
	}
	return i, false
}

// strEndTail is strEndWords byte by byte: it returns the index of the first
// quote, backslash or control character at or after i, or len(b).
func strEndTail(b []byte, i int) int {
	for i < len(b) && plain[b[i]] {
		i++
	}
	return i
}

// jstr reads a string (null is empty). Unescaped strings point into the
// record; escaped ones are unescaped into the arena.
func (d *otlpDecoder) jstr(field string) ([]byte, bool) {
	s := &d.js
	s.ws()
	if s.peek() != '"' {
		if s.lit("null") {
			return nil, true
		}
		return nil, s.fail(field, reasonNotString)
	}
	b := s.b
	start := s.i + 1
	i, ok := strEndWords(b, start)
	if !ok {
		i = strEndTail(b, i)
	}
	if i < len(b) && b[i] == '"' {
		s.i = i + 1
		return b[start:i:i], true
	}
	if i < len(b) && b[i] == '\\' {
		return d.jstrEscaped(field, start, i)
	}
	s.i = i
	return nil, s.fail(field, reasonBadString) // end of record or a control character
}

func (d *otlpDecoder) jstrEscaped(field string, start, i int) ([]byte, bool) {
	s := &d.js
	b := s.b
	out := len(d.arena)
	d.arena = append(d.arena, b[start:i]...)
	for i < len(b) {
		c := b[i]
		if c == '"' {
			s.i = i + 1
			return d.arena[out:len(d.arena):len(d.arena)], true
		}
		if c < 0x20 {
			break
		}
		if c != '\\' {
			d.arena = append(d.arena, c)
			i++
			continue
		}
		r, n, ok := jsonesc.Decode(b, i)
		if !ok {
			break
		}
		d.arena = utf8.AppendRune(d.arena, r)
		i += n
	}
	s.i = i
	return nil, s.fail(field, reasonBadString)
}

// jkey reads a member name and its colon.
func (d *otlpDecoder) jkey() ([]byte, bool) {
	s := &d.js
	if b, i := s.b, s.i; i < len(b) && b[i] == '"' {
		// Fast path: a name without escapes right before its colon.
		j, ok := strEndWords(b, i+1)
		if !ok {
			j = strEndTail(b, j)
		}
		if j+1 < len(b) && b[j] == '"' && b[j+1] == ':' {
			s.i = j + 2
			return b[i+1 : j : j], true
		}
	}
	return d.jkeySlow()
}

func (d *otlpDecoder) jkeySlow() ([]byte, bool) {
	s := &d.js
	s.ws()
	if s.peek() != '"' {
		return nil, s.fail("record", reasonJSONSyntax)
	}
	k, ok := d.jstr("record")
	return k, ok && s.colon()
}

// jnumText reads a number given as a JSON number or a string; quoted tells
// which.
func (d *otlpDecoder) jnumText(field string) (t []byte, quoted, ok bool) {
	s := &d.js
	s.ws()
	switch c := s.peek(); {
	case c == '"':
		t, ok = d.jstr(field)
		return t, true, ok
	case c == '-' || c >= '0' && c <= '9':
		t, ok = s.number()
		return t, false, ok
	case s.lit("null"):
		return nil, false, true
	}
	return nil, false, s.fail(field, reasonNotNumber)
}

// juint reads an unsigned 64-bit integer (fixed64 times): a number or a
// decimal string.
func (d *otlpDecoder) juint(field string) uint64 {
	t, _, ok := d.jnumText(field)
	if !ok || len(t) == 0 {
		return 0
	}
	v, ok := parseUint(t)
	if !ok {
		d.js.fail(field, reasonNotInt)
	}
	return v
}

// jint reads a signed 64-bit integer: a number or a decimal string.
func (d *otlpDecoder) jint(field string) (int64, bool) {
	t, _, ok := d.jnumText(field)
	if !ok {
		return 0, false
	}
	neg := len(t) > 0 && t[0] == '-'
	if neg {
		t = t[1:]
	}
	u, ok := parseUint(t)
	if !ok || u > math.MaxInt64+1 || !neg && u > math.MaxInt64 {
		return 0, d.js.fail(field, reasonNotInt)
	}
	if neg {
		return -int64(u), true
	}
	return int64(u), true
}

// jfloat reads a double: a number, or a string holding one or NaN,
// Infinity, -Infinity.
func (d *otlpDecoder) jfloat(field string) (float64, bool) {
	t, _, ok := d.jnumText(field)
	if !ok || len(t) == 0 {
		return 0, ok
	}
	f, err := strconv.ParseFloat(unsafe.String(&t[0], len(t)), 64)
	if err != nil && !isRangeErr(err) { // out of range: ±Inf or 0, refused where it matters
		return 0, d.js.fail(field, reasonNotNumber)
	}
	return f, true
}

func isRangeErr(err error) bool {
	ne, ok := err.(*strconv.NumError)
	return ok && ne.Err == strconv.ErrRange
}

// digits8 parses eight decimal digits, the first in the lowest byte of w.
func digits8(w uint64) (uint64, bool) {
	d := w - ones*'0'
	// Each byte must now be 0–9. The lowest byte that is not is exact (a
	// borrow or carry comes only from a lower byte that is not either), and
	// it is flagged: below '0' it wrapped to 0xd0 or more.
	if (d|(d+ones*6))&(ones*0xf0) != 0 {
		return 0, false
	}
	d = (d*10 + d>>8) & 0x00ff00ff00ff00ff
	d = (d*100 + d>>16) & 0x0000ffff0000ffff
	return (d*10000 + d>>32) & 0xffffffff, true
}

// parseUint parses decimal digits.
func parseUint(t []byte) (uint64, bool) {
	if len(t) == 0 || len(t) > 20 {
		return 0, false
	}
	var v uint64
	if len(t) < 20 { // at most 19 digits: no overflow
		for len(t) >= 8 {
			d, ok := digits8(le64(t))
			if !ok {
				return 0, false
			}
			v, t = v*1e8+d, t[8:]
		}
		for _, c := range t {
			if c < '0' || c > '9' {
				return 0, false
			}
			v = v*10 + uint64(c-'0')
		}
		return v, true
	}
	for _, c := range t {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := uint64(c - '0')
		if v > (math.MaxUint64-d)/10 {
			return 0, false
		}
		v = v*10 + d
	}
	return v, true
}

// jbool reads true, false or null.
func (d *otlpDecoder) jbool(field string) bool {
	s := &d.js
	s.ws()
	switch {
	case s.lit("true"):
		return true
	case s.lit("false"), s.lit("null"):
		return false
	}
	return s.fail(field, reasonNotBool)
}

// jid reads a hex trace or span id of size bytes and returns it in lower
// case (in place when it already is, else in the arena); empty and
// all-zero ids are nil.
func (d *otlpDecoder) jid(size int, field string) []byte {
	s := &d.js
	if b, i := s.b, s.i; i+2*size+1 < len(b) && b[i] == '"' && b[i+2*size+1] == '"' {
		// Fast path: lower-case hex, not all zero, eight digits at a time.
		hex, nz := true, false
		for k := i + 1; k < i+1+2*size; k += 8 {
			w := le64(b[k:])
			hex = hex && lowerHex(w)
			nz = nz || w != ones*'0'
		}
		if hex && nz {
			s.i = i + 2*size + 2
			return b[i+1 : i+1+2*size : i+1+2*size]
		}
	}
	h, ok := d.jstr(field)
	if !ok || len(h) == 0 {
		return nil
	}
	if len(h) != 2*size {
		return d.idFail(field, reasonHexLength)
	}
	var class, nz byte
	for _, c := range h {
		class |= hexClass[c]
		nz |= c ^ '0'
	}
	if class&hexBad != 0 {
		return d.idFail(field, reasonNotHex)
	}
	if nz == 0 {
		return nil // all zero
	}
	if class&hexUpper == 0 {
		return h
	}
	start := len(d.arena)
	for _, c := range h {
		if c >= 'A' && c <= 'F' {
			c += 'a' - 'A'
		}
		d.arena = append(d.arena, c)
	}
	return d.arena[start:len(d.arena):len(d.arena)]
}

// lowerHex reports whether the eight bytes of w are all lower-case hex
// digits. Below 0x80, adding 0x80-lo sets a byte's high bit when it is at
// least lo, adding 0x7f-hi when it is above hi, and neither carries.
func lowerHex(w uint64) bool {
	digit := (w + ones*(0x80-'0')) &^ (w + ones*(0x7f-'9'))
	letter := (w + ones*(0x80-'a')) &^ (w + ones*(0x7f-'f'))
	return w&highs == 0 && (digit|letter)&highs == highs
}

// hexClass classifies bytes for jid.
const (
	hexUpper = 1
	hexBad   = 2
)

var hexClass = func() (t [256]byte) {
	for c := range t {
		switch {
		case c >= '0' && c <= '9', c >= 'a' && c <= 'f':
		case c >= 'A' && c <= 'F':
			t[c] = hexUpper
		default:
			t[c] = hexBad
		}
	}
	return t
}()

func (d *otlpDecoder) idFail(field, reason string) []byte {
	d.js.fail(field, reason)
	return nil
}

// jsonRecord parses one OTLP/JSON ExportTraceServiceRequest or
// ExportLogsServiceRequest.
func (d *otlpDecoder) jsonRecord(b []byte) error {
	s := &d.js
	s.b, s.i, s.err = b, 0, nil
	d.jrecord()
	err := s.err
	s.b, s.err = nil, nil // keep no reference to the record
	if err != nil {
		return err
	}
	return nil
}

func (d *otlpDecoder) jrecord() {
	s := &d.js
	s.ws()
	if s.peek() != '{' {
		if s.i < len(s.b) && s.skip(1) {
			s.fail("record", reasonNotObject)
		}
		s.fail("record", reasonJSONSyntax)
		return
	}
	s.i++
	found := false
	n := 0
	for s.more('}', &n) {
		key, ok := d.jkey()
		if !ok {
			return
		}
		if d.c.logs && (string(key) == "resourceLogs" || string(key) == "resource_logs") ||
			!d.c.logs && (string(key) == "resourceSpans" || string(key) == "resource_spans") {
			found = true
			d.jresources()
		} else {
			s.skip(1)
		}
		if s.err != nil {
			return
		}
	}
	if s.err != nil {
		return
	}
	s.ws()
	if s.i != len(s.b) {
		s.fail("record", reasonJSONTrailing)
		return
	}
	if !found && n > 0 {
		s.i = 0
		if d.c.logs {
			s.fail("record", reasonNoLogs)
		} else {
			s.fail("record", reasonNoTraces)
		}
	}
}

// jresources reads the resourceSpans / resourceLogs array.
func (d *otlpDecoder) jresources() {
	s := &d.js
	if !s.open('[', d.c.resItem) {
		return
	}
	n := 0
	for s.more(']', &n) {
		d.jresource()
		if s.err != nil {
			return
		}
	}
}

// jresource reads one ResourceSpans / ResourceLogs. Its scope lists are
// read after its resource, wherever the resource stands.
func (d *otlpDecoder) jresource() {
	s := &d.js
	d.res.reset()
	if !s.open('{', d.c.resItem) {
		return
	}
	d.pending = d.pending[:0]
	haveRes := false
	n := 0
	for s.more('}', &n) {
		key, ok := d.jkey()
		if !ok {
			return
		}
		switch {
		case string(key) == "resource":
			d.jresourceObj()
			haveRes = true
		case d.c.logs && (string(key) == "scopeLogs" || string(key) == "scope_logs") ||
			!d.c.logs && (string(key) == "scopeSpans" || string(key) == "scope_spans"):
			if haveRes {
				d.jscopes()
			} else {
				s.ws()
				d.pending = append(d.pending, s.i)
				s.skip(1)
			}
		default:
			s.skip(1)
		}
		if s.err != nil {
			return
		}
	}
	if s.err != nil || len(d.pending) == 0 {
		return
	}
	end := s.i
	for _, off := range d.pending {
		s.i = off
		if d.jscopes(); s.err != nil {
			return
		}
	}
	s.i = end
}

func (d *otlpDecoder) jresourceObj() {
	s := &d.js
	if !s.open('{', "resource") {
		return
	}
	n := 0
	for s.more('}', &n) {
		key, ok := d.jkey()
		if !ok {
			return
		}
		if string(key) == "attributes" {
			d.jattrs(&d.res, "resource.attributes")
		} else {
			s.skip(1)
		}
		if s.err != nil {
			return
		}
	}
}

// jscopes reads a scopeSpans / scopeLogs array.
func (d *otlpDecoder) jscopes() {
	s := &d.js
	if !s.open('[', d.c.scopeItem) {
		return
	}
	n := 0
	for s.more(']', &n) {
		if !s.open('{', d.c.scopeItem) {
			if s.err != nil {
				return
			}
			continue
		}
		m := 0
		for s.more('}', &m) {
			key, ok := d.jkey()
			if !ok {
				return
			}
			switch {
			case !d.c.logs && string(key) == "spans":
				d.jitems()
			case d.c.logs && (string(key) == "logRecords" || string(key) == "log_records"):
				d.jitems()
			default:
				s.skip(1)
			}
			if s.err != nil {
				return
			}
		}
		if s.err != nil {
			return
		}
	}
}

// jitems reads a spans / logRecords array.
func (d *otlpDecoder) jitems() {
	s := &d.js
	item := "spans"
	if d.c.logs {
		item = "log_records"
	}
	if !s.open('[', item) {
		return
	}
	n := 0
	for s.more(']', &n) {
		if d.c.logs {
			d.jlog()
		} else {
			d.jspan()
		}
		if s.err != nil {
			return
		}
	}
}

func (d *otlpDecoder) jspan() {
	s := &d.js
	sp := &d.sp
	sp.reset()
	if !s.open('{', "span") {
		return
	}
	n := 0
	for s.more('}', &n) {
		key, ok := d.jkey()
		if !ok {
			return
		}
		switch string(key) {
		case "traceId", "trace_id":
			sp.traceID = d.jid(16, "span.trace_id")
		case "spanId", "span_id":
			sp.spanID = d.jid(8, "span.span_id")
		case "parentSpanId", "parent_span_id":
			sp.parentID = d.jid(8, "span.parent_span_id")
		case "name":
			sp.name, _ = d.jstr("span.name")
		case "startTimeUnixNano", "start_time_unix_nano":
			sp.start = d.juint("span.start_time_unix_nano")
		case "endTimeUnixNano", "end_time_unix_nano":
			sp.end = d.juint("span.end_time_unix_nano")
		case "attributes":
			d.jattrs(&sp.attrs, "span.attributes")
		case "events":
			d.jevents(sp)
		case "status":
			d.jstatus(sp)
		default:
			s.skip(1)
		}
		if s.err != nil {
			return
		}
	}
	if s.err == nil && !d.span(sp) {
		s.fail("record", reasonTooManyEvents)
	}
}

func (d *otlpDecoder) jstatus(sp *spanState) {
	s := &d.js
	if !s.open('{', "span.status") {
		return
	}
	n := 0
	for s.more('}', &n) {
		key, ok := d.jkey()
		if !ok {
			return
		}
		if string(key) != "code" {
			s.skip(1)
		} else if s.ws(); s.peek() == '"' {
			name, _ := d.jstr("span.status.code")
			switch string(name) {
			case "STATUS_CODE_UNSET":
				sp.code = 0
			case "STATUS_CODE_OK":
				sp.code = 1
			case "STATUS_CODE_ERROR":
				sp.code = 2
			default:
				s.fail("span.status.code", reasonEnum)
			}
		} else {
			c, ok := d.jint("span.status.code")
			if ok && (c < math.MinInt32 || c > math.MaxInt32) {
				s.fail("span.status.code", reasonNotInt)
			}
			sp.code = uint64(c)
		}
		if s.err != nil {
			return
		}
	}
}

func (d *otlpDecoder) jevents(sp *spanState) {
	s := &d.js
	if !s.open('[', "span.events") {
		return
	}
	n := 0
	for s.more(']', &n) {
		d.evTab.reset()
		if !s.open('{', "span.event") {
			if s.err != nil {
				return
			}
			continue
		}
		var name []byte
		var ts uint64
		m := 0
		for s.more('}', &m) {
			key, ok := d.jkey()
			if !ok {
				return
			}
			switch string(key) {
			case "timeUnixNano", "time_unix_nano":
				ts = d.juint("span.event.time_unix_nano")
			case "name":
				name, _ = d.jstr("span.event.name")
			case "attributes":
				d.jattrs(&d.evTab, "span.event.attributes")
			default:
				s.skip(1)
			}
			if s.err != nil {
				return
			}
		}
		if s.err != nil {
			return
		}
		d.spanEvent(sp, name, ts)
	}
}

func (d *otlpDecoder) jlog() {
	s := &d.js
	lr := &d.lr
	lr.reset()
	if !s.open('{', "log_record") {
		return
	}
	n := 0
	for s.more('}', &n) {
		key, ok := d.jkey()
		if !ok {
			return
		}
		switch string(key) {
		case "timeUnixNano", "time_unix_nano":
			lr.time = d.juint("log_record.time_unix_nano")
		case "observedTimeUnixNano", "observed_time_unix_nano":
			lr.observed = d.juint("log_record.observed_time_unix_nano")
		case "traceId", "trace_id":
			lr.traceID = d.jid(16, "log_record.trace_id")
		case "spanId", "span_id":
			lr.spanID = d.jid(8, "log_record.span_id")
		case "eventName", "event_name":
			lr.eventName, _ = d.jstr("log_record.event_name")
		case "attributes":
			d.jattrs(&lr.attrs, "log_record.attributes")
		default:
			s.skip(1)
		}
		if s.err != nil {
			return
		}
	}
	if s.err == nil && !d.log(lr) {
		s.fail("record", reasonTooManyEvents)
	}
}

// le64 reads eight bytes of b as a little-endian word, to compare with the
// w… constants below in one go.
func le64(b []byte) uint64 { return binary.LittleEndian.Uint64(b) }

func word(lit string) uint64 { return le64([]byte(lit)) }

var (
	wKey          = word(`{"key":"`)
	wValue        = word(`,"value"`)
	wStringValue0 = word(`{"string`)
	wStringValue1 = word(`Value":"`)
	wIntValue0    = word(`{"intVal`)
)

// jattrs reads a KeyValue array into t, parsing the values of the keys the
// mapping reads and skipping the others.
func (d *otlpDecoder) jattrs(t *attrTab, field string) {
	s := &d.js
	if !s.open('[', field) {
		return
	}
	n := 0
	for s.more(']', &n) {
	element:
		var key []byte
		haveKey, matched := false, false
		var ki keyInfo
		var v anyVal
		valAt := -1
		m := 0
		// Fast path: {"key":"…","value":{…}}, the form pdata writes,
		// matched eight bytes at a time. Anything else continues in the
		// loop below, in the state the fast path reached.
		if b, i := s.b, s.i; len(b)-i >= 8 && le64(b[i:]) == wKey {
			j, ok := strEndWords(b, i+8)
			if !ok {
				j = strEndTail(b, j)
			}
			if j < len(b) && b[j] == '"' {
				key, s.i = b[i+8:j:j], j+1
			} else {
				s.i = i + 7
				if key, _ = d.jstr("attribute.key"); s.err != nil {
					return
				}
			}
			haveKey, m = true, 1
			if i = s.i; len(b)-i >= 9 && le64(b[i:]) == wValue && b[i+8] == ':' {
				s.i = i + 9
				m = 2
				if ki, matched = d.rs.keys.lookup(key); matched {
					v = d.janyValue()
				} else {
					s.skipValue()
				}
				if s.err != nil {
					return
				}
				if s.i < len(b) && b[s.i] == '}' {
					s.i++ // the attribute's end, as more('}') would take it
					if matched {
						t.set(ki, v)
					}
					if s.i+1 < len(b) && b[s.i] == ',' && b[s.i+1] == '{' {
						s.i++ // the next one, as more(']') would take it
						goto element
					}
					continue
				}
			}
		} else if !s.open('{', field) {
			if s.err != nil {
				return
			}
			continue
		}
		for s.more('}', &m) {
			k, ok := d.jkey()
			if !ok {
				return
			}
			switch string(k) {
			case "key":
				key, _ = d.jstr("attribute.key")
				haveKey = true
			case "value":
				if !haveKey {
					s.ws()
					valAt = s.i
					s.skip(1)
				} else if ki, matched = d.rs.keys.lookup(key); matched {
					v = d.janyValue()
				} else {
					s.skipValue()
				}
			default:
				s.skip(1)
			}
			if s.err != nil {
				return
			}
		}
		if s.err != nil {
			return
		}
		if valAt >= 0 && haveKey && !matched {
			if ki, matched = d.rs.keys.lookup(key); matched {
				end := s.i
				s.i = valAt
				v = d.janyValue()
				s.i = end
				if s.err != nil {
					return
				}
			}
		}
		if matched {
			t.set(ki, v)
		}
	}
}

// jintValue is janyValue's fast path for {"intValue":"…"}, 64-bit integers
// as pdata writes them: up to 18 digits, so no range check. It reports
// false, having read nothing, for anything else.
func (d *otlpDecoder) jintValue() (anyVal, bool) {
	b, i := d.js.b, d.js.i
	if len(b)-i < 16 || le64(b[i:]) != wIntValue0 || string(b[i+8:i+13]) != `ue":"` {
		return anyVal{}, false
	}
	j := i + 13
	neg := b[j] == '-'
	if neg {
		j++
	}
	var u uint64
	k := j
	for ; k < len(b) && b[k] >= '0' && b[k] <= '9'; k++ {
		u = u*10 + uint64(b[k]-'0')
	}
	if k == j || k-j > 18 || k+1 >= len(b) || b[k] != '"' || b[k+1] != '}' {
		return anyVal{}, false
	}
	d.js.i = k + 2
	if neg {
		u = -u
	}
	return anyVal{t: vInt, n: u}, true
}

// janyValue reads an AnyValue object.
func (d *otlpDecoder) janyValue() anyVal {
	s := &d.js
	var v anyVal
	n := 0
	// Fast path: {"stringValue":"…"}, most attribute values as pdata writes
	// them. Further members go through the loop below.
	if b, i := s.b, s.i; len(b)-i >= 16 && le64(b[i:]) == wStringValue0 && le64(b[i+8:]) == wStringValue1 {
		j, ok := strEndWords(b, i+16)
		if !ok {
			j = strEndTail(b, j)
		}
		if j+1 < len(b) && b[j] == '"' && b[j+1] == '}' {
			s.i = j + 2
			return anyVal{t: vStr, s: b[i+16 : j : j]}
		}
		s.i = i + len(`{"stringValue":`)
		str, _ := d.jstr("attribute.value")
		if s.err != nil {
			return v
		}
		v, n = anyVal{t: vStr, s: str}, 1
		if s.peek() == '}' {
			s.i++
			return v
		}
	} else if v, ok := d.jintValue(); ok {
		return v
	} else if !s.open('{', "attribute.value") {
		return v
	}
	for s.more('}', &n) {
		key, ok := d.jkey()
		if !ok {
			return v
		}
		switch string(key) {
		case "stringValue", "string_value":
			str, _ := d.jstr("attribute.value")
			v = anyVal{t: vStr, s: str}
		case "boolValue", "bool_value":
			v = anyVal{t: vBool}
			if d.jbool("attribute.value") {
				v.n = 1
			}
		case "intValue", "int_value":
			i, _ := d.jint("attribute.value")
			v = anyVal{t: vInt, n: uint64(i)}
		case "doubleValue", "double_value":
			f, _ := d.jfloat("attribute.value")
			v = anyVal{t: vDouble, n: math.Float64bits(f)}
		case "arrayValue", "array_value", "kvlistValue", "kvlist_value", "bytesValue", "bytes_value":
			s.skip(1)
			v = anyVal{t: vOther}
		default:
			s.skip(1)
		}
		if s.err != nil {
			return v
		}
	}
	return v
}
