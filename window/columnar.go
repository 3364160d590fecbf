package window

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strconv"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/inferensys/canaryd/schemas"
)

// The columnar layout of window state: one row per series-window. It is the
// checkpoint's payload (Partition.Snapshot), the HTTP export
// (application/vnd.apache.arrow.stream) and what a reader that is not ours
// sees. columnar.md documents it; ColumnarVersion changes with it. Version
// 2 added the session-unit columns, version 3 new_sessions; ReadIPC still
// reads versions 1 and 2.
const (
	ColumnarVersion = 3
	// MetaFormat, MetaVersion and MetaPartition are schema metadata keys.
	MetaFormat    = "canaryd.format"
	MetaVersion   = "canaryd.version"
	MetaPartition = "canaryd.partition" // JSON partitionMeta, on checkpoints only
	formatName    = "canaryd.windows"
)

// Column indexes of the fixed (non-Agg) leading columns.
const (
	colRollout = iota
	colVersion
	colKind
	colName
	colStart
	colEnd
	colMinOffset
	colSeriesKey
	colFirstUint // then len(uintNames) uint64 columns, then floats, then the rest
)

var (
	colFirstFloat = colFirstUint + len(uintNames)
	colErrorTypes = colFirstFloat + len(floatNames)
	colBigrams    = colErrorTypes + 1
	colSketch     = colBigrams + 1
	colP50        = colSketch + 1 // p50, p95, p99 follow: derived, for readers
	colSessMedian = colP50 + 3
)

// Schema is the Arrow schema of the series-window table (without metadata).
var Schema = func() *arrow.Schema {
	ts := &arrow.TimestampType{Unit: arrow.Nanosecond, TimeZone: "UTC"}
	f := []arrow.Field{
		{Name: "rollout", Type: arrow.BinaryTypes.String},
		{Name: "version", Type: arrow.BinaryTypes.String},
		{Name: "kind", Type: arrow.BinaryTypes.String},
		{Name: "name", Type: arrow.BinaryTypes.String},
		{Name: "window_start", Type: ts},
		{Name: "window_end", Type: ts},
		{Name: "min_offset", Type: arrow.PrimitiveTypes.Int64},
		{Name: "series_key", Type: arrow.PrimitiveTypes.Uint32},
	}
	for _, n := range uintNames {
		f = append(f, arrow.Field{Name: n, Type: arrow.PrimitiveTypes.Uint64})
	}
	for _, n := range floatNames {
		f = append(f, arrow.Field{Name: n, Type: arrow.PrimitiveTypes.Float64})
	}
	f = append(f,
		arrow.Field{Name: "error_types", Type: arrow.ListOf(arrow.PrimitiveTypes.Uint64)},
		arrow.Field{Name: "bigrams", Type: arrow.ListOf(arrow.PrimitiveTypes.Uint64)},
		arrow.Field{Name: "latency_sketch", Type: arrow.BinaryTypes.Binary},
		arrow.Field{Name: "latency_p50_ms", Type: arrow.PrimitiveTypes.Float64, Nullable: true},
		arrow.Field{Name: "latency_p95_ms", Type: arrow.PrimitiveTypes.Float64, Nullable: true},
		arrow.Field{Name: "latency_p99_ms", Type: arrow.PrimitiveTypes.Float64, Nullable: true},
		arrow.Field{Name: "session_median_sketch", Type: arrow.BinaryTypes.Binary, Nullable: true},
	)
	return arrow.NewSchema(f, nil)
}()

// schemaV1 is Schema as version 1 wrote it: without the session-unit
// columns (unit_sessions … session_request_errors, new_sessions and
// session_median_sketch).
var schemaV1 = func() *arrow.Schema {
	var f []arrow.Field
	for i, fd := range Schema.Fields() {
		if i >= colFirstUint+aggUintsV1 && i < colFirstFloat || i == colSessMedian {
			continue
		}
		f = append(f, fd)
	}
	return arrow.NewSchema(f, nil)
}()

// schemaV2 is Schema as version 2 wrote it: without new_sessions (the last
// uint64 column).
var schemaV2 = func() *arrow.Schema {
	var f []arrow.Field
	for i, fd := range Schema.Fields() {
		if i >= colFirstUint+aggUintsV2 && i < colFirstFloat {
			continue
		}
		f = append(f, fd)
	}
	return arrow.NewSchema(f, nil)
}()

// tableSchemas holds the schema of each version ReadIPC reads.
var tableSchemas = [...]*arrow.Schema{1: schemaV1, 2: schemaV2, 3: Schema}

// Row is one series-window.
type Row struct {
	Rollout    string
	Version    string
	Segment    Segment
	Start, End int64 // event time, unix ns
	// MinOffset is the smallest Kafka offset counted in an open window; -1 in
	// closed windows.
	MinOffset int64
	// Key is the partition's internal series id (version<<16 | segment),
	// meaningful only inside a checkpoint.
	Key uint32
	Agg *Agg
}

// Table accumulates rows column by column in Arrow builders.
type Table struct {
	b   *array.RecordBuilder
	sk  []byte
	out int
}

// NewTable returns an empty table.
func NewTable() *Table {
	return &Table{b: array.NewRecordBuilder(memory.DefaultAllocator, Schema)}
}

// Append adds one row.
func (t *Table) Append(r Row) {
	b := t.b
	b.Field(colRollout).(*array.StringBuilder).Append(r.Rollout)
	b.Field(colVersion).(*array.StringBuilder).Append(r.Version)
	b.Field(colKind).(*array.StringBuilder).Append(r.Segment.Kind.String())
	b.Field(colName).(*array.StringBuilder).Append(r.Segment.Name)
	b.Field(colStart).(*array.TimestampBuilder).Append(arrow.Timestamp(r.Start))
	b.Field(colEnd).(*array.TimestampBuilder).Append(arrow.Timestamp(r.End))
	b.Field(colMinOffset).(*array.Int64Builder).Append(r.MinOffset)
	b.Field(colSeriesKey).(*array.Uint32Builder).Append(r.Key)
	for i, p := range aggUints(r.Agg) {
		b.Field(colFirstUint + i).(*array.Uint64Builder).Append(*p)
	}
	for i, p := range aggFloats(r.Agg) {
		b.Field(colFirstFloat + i).(*array.Float64Builder).Append(*p)
	}
	for _, c := range []struct {
		col int
		v   []uint64
	}{{colErrorTypes, r.Agg.ErrorTypes}, {colBigrams, r.Agg.Bigrams}} {
		lb := b.Field(c.col).(*array.ListBuilder)
		lb.Append(true)
		lb.ValueBuilder().(*array.Uint64Builder).AppendValues(c.v, nil)
	}
	t.sk = t.sk[:0]
	r.Agg.Latency.Encode(&t.sk, true)
	b.Field(colSketch).(*array.BinaryBuilder).Append(t.sk)
	for i, q := range []float64{0.5, 0.95, 0.99} {
		fb := b.Field(colP50 + i).(*array.Float64Builder)
		if v := r.Agg.Quantile(q); math.IsNaN(v) {
			fb.AppendNull()
		} else {
			fb.Append(v)
		}
	}
	sb := b.Field(colSessMedian).(*array.BinaryBuilder)
	if s := r.Agg.SessMedian; s == nil || s.IsEmpty() {
		sb.AppendNull()
	} else {
		t.sk = t.sk[:0]
		s.Encode(&t.sk, true)
		sb.Append(t.sk)
	}
	t.out++
}

// Len returns the number of rows appended.
func (t *Table) Len() int { return t.out }

// WriteIPC writes the rows as an Arrow IPC stream (one record batch) with
// meta added to the schema's format metadata, and resets the table.
func (t *Table) WriteIPC(w io.Writer, meta map[string]string) error {
	keys := []string{MetaFormat, MetaVersion}
	vals := []string{formatName, strconv.Itoa(ColumnarVersion)}
	for _, k := range slices.Sorted(maps.Keys(meta)) {
		keys, vals = append(keys, k), append(vals, meta[k])
	}
	md := arrow.NewMetadata(keys, vals)
	schema := arrow.NewSchema(Schema.Fields(), &md)
	rec := t.b.NewRecordBatch()
	defer rec.Release()
	t.out = 0
	wr := ipc.NewWriter(w, ipc.WithSchema(schema))
	if err := wr.Write(array.NewRecordBatch(schema, rec.Columns(), rec.NumRows())); err != nil {
		wr.Close()
		return err
	}
	return wr.Close()
}

// Release frees the table's builders.
func (t *Table) Release() { t.b.Release() }

// ReadIPC reads an Arrow IPC stream written by WriteIPC, of this version or
// an older one: its rows and its schema metadata. It checks the format name,
// the version and that the schema is that version's. Columns an older
// version lacks read as zero (nil for SessMedian).
func ReadIPC(r io.Reader) ([]Row, map[string]string, error) {
	rd, err := ipc.NewReader(r)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: arrow ipc: %v", ErrCorrupt, err)
	}
	defer rd.Release()
	md := rd.Schema().Metadata()
	meta := map[string]string{}
	for i, k := range md.Keys() {
		meta[k] = md.Values()[i]
	}
	if meta[MetaFormat] != formatName {
		return nil, nil, fmt.Errorf("%w: not a canaryd window table (format %q)", ErrCorrupt, meta[MetaFormat])
	}
	v, _ := strconv.Atoi(meta[MetaVersion])
	if v < 1 || v > ColumnarVersion {
		return nil, nil, fmt.Errorf("%w: window table version %q, this canaryd reads 1 to %d", ErrCorrupt, meta[MetaVersion], ColumnarVersion)
	}
	if !rd.Schema().Equal(tableSchemas[v]) {
		return nil, nil, fmt.Errorf("%w: window table schema differs from version %d's", ErrCorrupt, v)
	}
	var rows []Row
	for rd.Next() {
		rows, err = appendRows(rows, rd.RecordBatch())
		if err != nil {
			return nil, nil, err
		}
	}
	if err := rd.Err(); err != nil {
		return nil, nil, fmt.Errorf("%w: arrow ipc: %v", ErrCorrupt, err)
	}
	return rows, meta, nil
}

// appendRows appends rec's rows. rec's schema is one of tableSchemas: the
// leading columns are at the same indexes in every version, the others are
// found by name, and those an older version lacks are left zero.
func appendRows(rows []Row, rec arrow.RecordBatch) ([]Row, error) {
	col := func(name string) arrow.Array {
		if i := rec.Schema().FieldIndices(name); len(i) == 1 {
			return rec.Column(i[0])
		}
		return nil
	}
	str := func(c int) *array.String { return rec.Column(c).(*array.String) }
	tss := func(c int) *array.Timestamp { return rec.Column(c).(*array.Timestamp) }
	minOff := rec.Column(colMinOffset).(*array.Int64)
	keys := rec.Column(colSeriesKey).(*array.Uint32)
	var uints [len(uintNames)]*array.Uint64
	for j, n := range uintNames {
		uints[j], _ = col(n).(*array.Uint64)
	}
	var floats [len(floatNames)]*array.Float64
	for j, n := range floatNames {
		floats[j] = col(n).(*array.Float64)
	}
	errTypes := col("error_types").(*array.List)
	bigrams := col("bigrams").(*array.List)
	sk := col("latency_sketch").(*array.Binary)
	sessMedian, _ := col("session_median_sketch").(*array.Binary)
	for i := 0; i < int(rec.NumRows()); i++ {
		k, ok := schemas.ParseKind([]byte(str(colKind).Value(i)))
		if !ok {
			return nil, fmt.Errorf("%w: row %d: kind %q", ErrCorrupt, i, str(colKind).Value(i))
		}
		a := &Agg{Latency: NewSketch()}
		for j, p := range aggUints(a) {
			if uints[j] != nil {
				*p = uints[j].Value(i)
			}
		}
		for j, p := range aggFloats(a) {
			*p = floats[j].Value(i)
		}
		a.ErrorTypes = listValues(errTypes, i)
		a.Bigrams = listValues(bigrams, i)
		if b := sk.Value(i); len(b) > 0 {
			if err := a.Latency.DecodeAndMergeWith(b); err != nil {
				return nil, fmt.Errorf("%w: row %d: sketch: %v", ErrCorrupt, i, err)
			}
		}
		if sessMedian != nil && sessMedian.IsValid(i) {
			var err error
			if a.SessMedian, err = sketchFrom(sessMedian.Value(i)); err != nil {
				return nil, fmt.Errorf("row %d: session median: %w", i, err)
			}
		}
		rows = append(rows, Row{
			Rollout: str(colRollout).Value(i), Version: str(colVersion).Value(i),
			Segment: Segment{Kind: k, Name: str(colName).Value(i)},
			Start:   int64(tss(colStart).Value(i)), End: int64(tss(colEnd).Value(i)),
			MinOffset: minOff.Value(i), Key: keys.Value(i), Agg: a,
		})
	}
	return rows, nil
}

func listValues(l *array.List, i int) []uint64 {
	lo, hi := l.ValueOffsets(i)
	if hi == lo {
		return nil
	}
	return slices.Clone(l.ListValues().(*array.Uint64).Uint64Values()[lo:hi])
}

// partitionMeta is a checkpoint's partition state besides its rows.
type partitionMeta struct {
	MaxTS     int64 `json:"max_ts"`
	Watermark int64 `json:"watermark"`
	// From checkpoint version 3: the Quorum largest event times counted,
	// ascending (math.MinInt64 in slots not filled), and the arrival lags of
	// the recent batches, oldest first. Absent in older checkpoints, whose
	// watermark followed the newest event time: the quorum restores as
	// max_ts in every slot, which keeps that watermark.
	Quorum   []int64        `json:"quorum,omitempty"`
	Lags     []int64        `json:"lags,omitempty"`
	Rollouts []rolloutDicts `json:"rollouts"`
	// From checkpoint version 4: the rollouts' session memory is in their
	// Sessions (SessionMemory true), and sessions first seen at an event
	// time before BlindBefore are not counted. A checkpoint without session
	// memory restores blind for SessionTimeout past its watermark: the
	// sessions in flight then were counted already.
	SessionMemory bool  `json:"session_memory,omitempty"`
	BlindBefore   int64 `json:"sessions_blind_before,omitempty"`
}

// rolloutDicts are a rollout's interned names, in id order, so that ids and
// caps continue exactly where they were.
type rolloutDicts struct {
	Name       string      `json:"name"`
	Versions   []string    `json:"versions"`
	Segments   [][2]string `json:"segments"` // kind, name
	ErrorTypes []string    `json:"error_types"`
	Tools      []string    `json:"tools"` // tool id i+1
	Bigrams    []string    `json:"bigrams"`
	BigramKeys []uint32    `json:"bigram_keys"` // tool id pair of Bigrams[i]; 0 for "_other"
	LastTS     int64       `json:"last_ts"`     // newest event time (eviction)
	// Sessions (checkpoint version 4): the session ids remembered, as
	// 16-byte little-endian pairs (id hash, newest event time) in ascending
	// hash order.
	Sessions []byte `json:"sessions,omitempty"`
}

// Snapshot writes the partition's open windows and its watermark state as
// an Arrow IPC stream: the checkpoint payload.
func (p *Partition) Snapshot(w io.Writer) error {
	t := NewTable()
	defer t.Release()
	meta := partitionMeta{MaxTS: p.maxTS, Watermark: p.watermark, Quorum: p.quorum, SessionMemory: true, BlindBefore: p.blindBefore}
	for i := range p.nLags {
		meta.Lags = append(meta.Lags, p.lags[(p.lagNext-p.nLags+i+lagBatches)%lagBatches])
	}
	for _, r := range p.order {
		d := rolloutDicts{Name: r.name, Versions: r.versions, ErrorTypes: r.errNames, Bigrams: r.bigNames, LastTS: r.lastTS,
			Tools: make([]string, len(r.toolIDs)), BigramKeys: make([]uint32, len(r.bigNames))}
		for _, s := range r.segs {
			d.Segments = append(d.Segments, [2]string{s.Kind.String(), s.Name})
		}
		for n, id := range r.toolIDs {
			d.Tools[id-1] = n
		}
		for k, id := range r.bigIDs {
			d.BigramKeys[id] = k
		}
		for _, h := range slices.Sorted(maps.Keys(r.sessions)) {
			d.Sessions = binary.LittleEndian.AppendUint64(d.Sessions, h)
			d.Sessions = binary.LittleEndian.AppendUint64(d.Sessions, uint64(r.sessions[h]))
		}
		meta.Rollouts = append(meta.Rollouts, d)
		for _, ow := range r.open {
			for _, k := range slices.Sorted(maps.Keys(ow.series)) {
				t.Append(Row{Rollout: r.name, Version: r.versions[k>>16], Segment: r.segs[k&0xffff],
					Start: ow.start, End: ow.start + p.width, MinOffset: ow.minOffset, Key: k, Agg: ow.series[k]})
			}
		}
	}
	mj, err := json.Marshal(meta)
	if err != nil {
		return err
	}
	return t.WriteIPC(w, map[string]string{MetaPartition: string(mj)})
}

// RestorePartition rebuilds a Partition from a Snapshot.
func RestorePartition(id int32, opts Options, snap []byte) (*Partition, error) {
	rows, meta, err := ReadIPC(bytes.NewReader(snap))
	if err != nil {
		return nil, err
	}
	var pm partitionMeta
	if err := json.Unmarshal([]byte(meta[MetaPartition]), &pm); err != nil {
		return nil, fmt.Errorf("%w: partition metadata: %v", ErrCorrupt, err)
	}
	if !slices.IsSorted(pm.Quorum) || slices.ContainsFunc(pm.Lags, func(l int64) bool { return l < 0 }) {
		return nil, fmt.Errorf("%w: partition metadata: quorum %v not ascending or a negative lag in %v", ErrCorrupt, pm.Quorum, pm.Lags)
	}
	p := NewPartition(id, opts)
	p.maxTS, p.watermark = pm.MaxTS, pm.Watermark
	restoreQuorum(p.quorum, pm)
	for _, l := range pm.Lags[max(len(pm.Lags)-lagBatches, 0):] {
		p.lags[p.lagNext] = l
		p.lagNext = (p.lagNext + 1) % lagBatches
		p.nLags = min(p.nLags+1, lagBatches)
	}
	// Idleness restarts: the wall clock says nothing about a backlog that
	// accumulated while canaryd was down.
	p.idleBase = p.quorum[0]
	p.blindBefore = pm.BlindBefore
	if !pm.SessionMemory {
		p.blindBefore = pm.Watermark + int64(p.opts.SessionTimeout)
	}
	for _, d := range pm.Rollouts {
		r := &rollout{name: d.Name, versions: d.Versions, errIDs: map[string]int{}, errNames: d.ErrorTypes,
			toolIDs: map[string]uint16{}, bigIDs: map[uint32]int{}, bigNames: d.Bigrams, lastTS: d.LastTS}
		if len(r.errNames) == 0 || len(r.bigNames) == 0 || len(d.BigramKeys) != len(d.Bigrams) {
			return nil, fmt.Errorf("%w: rollout %q: bad dictionaries", ErrCorrupt, d.Name)
		}
		for _, s := range d.Segments {
			k, ok := schemas.ParseKind([]byte(s[0]))
			if !ok {
				return nil, fmt.Errorf("%w: rollout %q: segment kind %q", ErrCorrupt, d.Name, s[0])
			}
			if r.segIDs[k] == nil {
				r.segIDs[k] = map[string]uint16{}
			}
			r.segIDs[k][s[1]] = uint16(len(r.segs))
			r.segs = append(r.segs, Segment{Kind: k, Name: s[1]})
		}
		for i, n := range r.errNames[1:] {
			r.errIDs[n] = i + 1
		}
		for i, n := range d.Tools {
			r.toolIDs[n] = uint16(i + 1)
		}
		for i, k := range d.BigramKeys[1:] {
			r.bigIDs[k] = i + 1
		}
		if len(d.Sessions)%16 != 0 {
			return nil, fmt.Errorf("%w: rollout %q: session memory of %d bytes", ErrCorrupt, d.Name, len(d.Sessions))
		}
		if len(d.Sessions) > 0 {
			r.sessions = make(map[uint64]int64, len(d.Sessions)/16)
			for b := d.Sessions; len(b) > 0; b = b[16:] {
				r.sessions[binary.LittleEndian.Uint64(b)] = int64(binary.LittleEndian.Uint64(b[8:]))
			}
			p.nSessions += len(r.sessions)
		}
		p.rollouts[r.name] = r
		p.order = append(p.order, r)
	}
	for i, row := range rows {
		r := p.rollouts[row.Rollout]
		v, s := int(row.Key>>16), int(row.Key&0xffff)
		if r == nil || v >= len(r.versions) || s >= len(r.segs) || r.versions[v] != row.Version || r.segs[s] != row.Segment ||
			row.End-row.Start != p.width {
			return nil, fmt.Errorf("%w: row %d (%s %s %s) does not match the partition's dictionaries or window width", ErrCorrupt, i, row.Rollout, row.Version, row.Segment)
		}
		w := r.window(row.Start)
		w.minOffset = min(w.minOffset, row.MinOffset)
		w.series[row.Key] = row.Agg
	}
	return p, nil
}

// restoreQuorum fills q (Quorum slots) from a checkpoint's: its largest
// values when Quorum was lowered since, padded with empty slots at the bottom
// when it was raised; a checkpoint older than the quorum (version 1 or 2)
// restores as max_ts in every slot, the newest event time its watermark
// followed.
func restoreQuorum(q []int64, pm partitionMeta) {
	saved := pm.Quorum
	if saved == nil && pm.MaxTS != 0 {
		for i := range q {
			q[i] = pm.MaxTS
		}
		return
	}
	saved = saved[max(len(saved)-len(q), 0):]
	copy(q[len(q)-len(saved):], saved)
}

// ClosedRows returns a closed window's rows (MinOffset -1, Key 0).
func ClosedRows(c Closed) []Row {
	rows := make([]Row, len(c.Series))
	for i, s := range c.Series {
		rows[i] = Row{Rollout: c.Rollout, Version: s.Version, Segment: s.Segment, Start: c.Start, End: c.End, MinOffset: -1, Agg: s.Agg}
	}
	return rows
}
