package window

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/DataDog/sketches-go/ddsketch"
)

// aggCodecVersion is the version of Agg's binary encoding (see AppendBinary).
// Version 2 added the session-unit counters and SessMedian, version 3
// NewSessions; decode still reads versions 1 and 2 (the fields they lack
// zero, SessMedian nil).
const aggCodecVersion = 3

// ErrCorrupt reports state bytes that do not decode.
var ErrCorrupt = errors.New("corrupt state")

// aggFloats and aggUints list Agg's fixed-width fields in encoding order.
// The columnar table (columnar.go) uses the same lists for its columns, so
// a field added to Agg is added here once and reaches every format. They
// are append-only: an older encoding holds a prefix of each (aggUintsV1),
// and a field added means a new aggCodecVersion and ColumnarVersion.
func aggFloats(a *Agg) [12]*float64 {
	return [...]*float64{&a.InputTokens, &a.OutputTokens, &a.Tokens2, &a.CostUSD, &a.CostUSD2,
		&a.ContextTokens, &a.ContextUse, &a.ContextUse2, &a.ScoreSum, &a.Score2, &a.ToolCalls, &a.ToolCalls2}
}

// floatNames and uintNames are the column names of aggFloats and aggUints.
var (
	floatNames = [...]string{"input_tokens", "output_tokens", "tokens_sq", "cost_usd", "cost_usd_sq",
		"context_tokens", "context_use", "context_use_sq", "score_sum", "score_sq", "tool_calls", "tool_calls_sq"}
	uintNames = [...]string{"count", "errors", "failed", "cost_n", "context_n", "successes", "failures",
		"hallucinations", "halluc_n", "score_n", "loops",
		"unit_sessions", "error_sessions", "session_requests", "session_request_errors",
		"new_sessions"}
)

func aggUints(a *Agg) [16]*uint64 {
	return [...]*uint64{&a.Count, &a.Errors, &a.Failed, &a.CostN, &a.ContextN, &a.Successes, &a.Failures,
		&a.Hallucination, &a.HallucN, &a.ScoreN, &a.Loops,
		&a.UnitSessions, &a.ErrSessions, &a.SessRequests, &a.SessReqErrors,
		&a.NewSessions}
}

// aggUintsV1 and aggUintsV2 are how many of aggUints versions 1 and 2 of
// the encoding and of the table hold.
const (
	aggUintsV1 = 11
	aggUintsV2 = 15
)

// AppendBinary appends a's encoding to dst: a version byte, the counters as
// uvarints, the sums as IEEE-754 bits (exact), the error-type and bigram
// counts, then the latency sketch and the session-median sketch, each as a
// uvarint length and DDSketch's own encoding without its mapping (every
// sketch uses Mapping); length 0 is an empty latency sketch and a nil (or
// empty) SessMedian.
func (a *Agg) AppendBinary(dst []byte) []byte {
	dst = append(dst, aggCodecVersion)
	for _, p := range aggUints(a) {
		dst = binary.AppendUvarint(dst, *p)
	}
	for _, p := range aggFloats(a) {
		dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(*p))
	}
	dst = appendCounts(dst, a.ErrorTypes)
	dst = appendCounts(dst, a.Bigrams)
	dst = appendSketch(dst, a.Latency)
	return appendSketch(dst, a.SessMedian)
}

// appendSketch appends s's encoding with its length (0 for nil).
func appendSketch(dst []byte, s *ddsketch.DDSketch) []byte {
	var sk []byte
	if s != nil {
		s.Encode(&sk, true)
	}
	dst = binary.AppendUvarint(dst, uint64(len(sk)))
	return append(dst, sk...)
}

func appendCounts(dst []byte, c []uint64) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(c)))
	for _, v := range c {
		dst = binary.AppendUvarint(dst, v)
	}
	return dst
}

// MarshalBinary implements encoding.BinaryMarshaler.
func (a *Agg) MarshalBinary() ([]byte, error) { return a.AppendBinary(nil), nil }

// UnmarshalBinary implements encoding.BinaryUnmarshaler.
func (a *Agg) UnmarshalBinary(b []byte) error {
	rest, err := a.decode(b)
	if err == nil && len(rest) != 0 {
		err = fmt.Errorf("%w: %d trailing bytes after an aggregate", ErrCorrupt, len(rest))
	}
	return err
}

// decode reads one aggregate, of version 1, 2 or 3, from b and returns the
// bytes after it.
func (a *Agg) decode(b []byte) ([]byte, error) {
	*a = Agg{Latency: NewSketch()}
	if len(b) == 0 || b[0] < 1 || b[0] > aggCodecVersion {
		return nil, fmt.Errorf("%w: aggregate encoding version %v, want 1 to %d", ErrCorrupt, b[:min(1, len(b))], aggCodecVersion)
	}
	v := b[0]
	b = b[1:]
	uints := aggUints(a)
	n := len(uints)
	switch v {
	case 1:
		n = aggUintsV1
	case 2:
		n = aggUintsV2
	}
	var ok bool
	for _, p := range uints[:n] {
		if *p, b, ok = uvarint(b); !ok {
			return nil, fmt.Errorf("%w: truncated aggregate", ErrCorrupt)
		}
	}
	for _, p := range aggFloats(a) {
		if len(b) < 8 {
			return nil, fmt.Errorf("%w: truncated aggregate", ErrCorrupt)
		}
		*p = math.Float64frombits(binary.LittleEndian.Uint64(b))
		b = b[8:]
	}
	if a.ErrorTypes, b, ok = decodeCounts(b); !ok {
		return nil, fmt.Errorf("%w: bad error-type counts", ErrCorrupt)
	}
	if a.Bigrams, b, ok = decodeCounts(b); !ok {
		return nil, fmt.Errorf("%w: bad bigram counts", ErrCorrupt)
	}
	lat, b, err := decodeSketch(b)
	if err != nil {
		return nil, err
	}
	if lat != nil {
		a.Latency = lat
	}
	if v == 1 {
		return b, nil
	}
	if a.SessMedian, b, err = decodeSketch(b); err != nil {
		return nil, err
	}
	return b, nil
}

// decodeSketch reads a sketch that appendSketch wrote: nil when it is empty.
func decodeSketch(b []byte) (*ddsketch.DDSketch, []byte, error) {
	n, b, ok := uvarint(b)
	if !ok || n > uint64(len(b)) {
		return nil, nil, fmt.Errorf("%w: bad sketch length", ErrCorrupt)
	}
	s, err := sketchFrom(b[:n])
	if err != nil {
		return nil, nil, err
	}
	return s, b[n:], nil
}

// sketchFrom decodes a sketch's encoding (mapping omitted) onto Mapping:
// nil when it holds nothing.
func sketchFrom(b []byte) (*ddsketch.DDSketch, error) {
	if len(b) == 0 {
		return nil, nil
	}
	s := NewSketch()
	if err := s.DecodeAndMergeWith(b); err != nil {
		return nil, fmt.Errorf("%w: sketch: %v", ErrCorrupt, err)
	}
	if s.IsEmpty() {
		return nil, nil
	}
	return s, nil
}

func uvarint(b []byte) (uint64, []byte, bool) {
	v, n := binary.Uvarint(b)
	if n <= 0 {
		return 0, nil, false
	}
	return v, b[n:], true
}

// maxCounts bounds a decoded count list (caps are far below it).
const maxCounts = 1 << 16

func decodeCounts(b []byte) ([]uint64, []byte, bool) {
	n, b, ok := uvarint(b)
	if !ok || n > maxCounts {
		return nil, nil, false
	}
	if n == 0 {
		return nil, b, true
	}
	c := make([]uint64, n)
	for i := range c {
		if c[i], b, ok = uvarint(b); !ok {
			return nil, nil, false
		}
	}
	return c, b, true
}
