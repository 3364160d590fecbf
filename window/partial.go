package window

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
)

// Partials: the closed windows that stage 1 of two-stage aggregation
// publishes (DESIGN.md, "Two-stage aggregation"). A partial is one rollout's
// closed window in one source partition, as the table's Arrow IPC stream
// (the columns of a checkpoint and of the export; sketches on the shared
// mapping, so stage 2 merges them exactly) with the window's identity in the
// schema metadata. (Source, Partition, Rollout, Start) identifies it: a
// replay publishes the same window again, and the judge ignores it
// (detector.Judge.Observe).

// Schema metadata keys of a partial, beside the table's own.
const (
	metaRollout    = "canaryd.rollout"
	metaSource     = "canaryd.source"
	metaPartition  = "canaryd.partition"
	metaStart      = "canaryd.start"
	metaEnd        = "canaryd.end"
	metaWatermark  = "canaryd.watermark"
	metaWall       = "canaryd.wall"
	metaErrorTypes = "canaryd.error_types"
	metaBigrams    = "canaryd.bigrams"
)

// EncodePartial returns c as a partial. The window's error-type and bigram
// ids are its partition's; their names travel with it.
func EncodePartial(c Closed) ([]byte, error) {
	t := NewTable()
	defer t.Release()
	for _, r := range ClosedRows(c) {
		t.Append(r)
	}
	et, err := json.Marshal(c.ErrorTypes)
	if err != nil {
		return nil, err
	}
	bg, err := json.Marshal(c.Bigrams)
	if err != nil {
		return nil, err
	}
	meta := map[string]string{
		metaRollout:    c.Rollout,
		metaSource:     c.Source,
		metaPartition:  strconv.Itoa(int(c.Partition)),
		metaStart:      strconv.FormatInt(c.Start, 10),
		metaEnd:        strconv.FormatInt(c.End, 10),
		metaWatermark:  strconv.FormatInt(c.Watermark, 10),
		metaWall:       strconv.FormatInt(c.Wall, 10),
		metaErrorTypes: string(et),
		metaBigrams:    string(bg),
	}
	var buf bytes.Buffer
	if err := t.WriteIPC(&buf, meta); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// DecodePartial parses EncodePartial's output. A value that is not a
// partial, or is inconsistent, is refused with ErrCorrupt.
func DecodePartial(b []byte) (Closed, error) {
	rows, meta, err := ReadIPC(bytes.NewReader(b))
	if err != nil {
		return Closed{}, err
	}
	c := Closed{Rollout: meta[metaRollout], Source: meta[metaSource]}
	if c.Rollout == "" || c.Source == "" {
		return Closed{}, fmt.Errorf("%w: partial without rollout or source", ErrCorrupt)
	}
	ints := []struct {
		key string
		v   *int64
	}{{metaStart, &c.Start}, {metaEnd, &c.End}, {metaWatermark, &c.Watermark}, {metaWall, &c.Wall}}
	for _, f := range ints {
		v, err := strconv.ParseInt(meta[f.key], 10, 64)
		if err != nil {
			return Closed{}, fmt.Errorf("%w: partial %s: %v", ErrCorrupt, f.key, err)
		}
		*f.v = v
	}
	p, err := strconv.ParseInt(meta[metaPartition], 10, 32)
	if err != nil {
		return Closed{}, fmt.Errorf("%w: partial partition: %v", ErrCorrupt, err)
	}
	c.Partition = int32(p)
	if err := json.Unmarshal([]byte(meta[metaErrorTypes]), &c.ErrorTypes); err != nil {
		return Closed{}, fmt.Errorf("%w: partial error types: %v", ErrCorrupt, err)
	}
	if err := json.Unmarshal([]byte(meta[metaBigrams]), &c.Bigrams); err != nil {
		return Closed{}, fmt.Errorf("%w: partial bigrams: %v", ErrCorrupt, err)
	}
	c.Series = make([]Series, len(rows))
	for i, r := range rows {
		if r.Rollout != c.Rollout || r.Start != c.Start || r.End != c.End {
			return Closed{}, fmt.Errorf("%w: partial row %d is not of window %s [%d, %d)", ErrCorrupt, i, c.Rollout, c.Start, c.End)
		}
		if len(r.Agg.ErrorTypes) > len(c.ErrorTypes) || len(r.Agg.Bigrams) > len(c.Bigrams) {
			return Closed{}, fmt.Errorf("%w: partial row %d refers to unnamed error types or bigrams", ErrCorrupt, i)
		}
		c.Series[i] = Series{Version: r.Version, Segment: r.Segment, Agg: r.Agg}
	}
	return c, nil
}
