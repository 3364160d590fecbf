package window

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/DataDog/sketches-go/ddsketch"
	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"

	"github.com/inferensys/canaryd/schemas"
)

// sessionEvent is an agent summary with its requests' totals; median < 0
// means none.
func sessionEvent(requests, errs uint32, median float64) *schemas.Event {
	e := &schemas.Event{Kind: schemas.KindAgent, Requests: requests, RequestErrors: errs}
	if median >= 0 {
		e.RequestMedianMS, e.HasRequestMedian = median, true
	}
	return e
}

// sketchCount returns how many values s holds (0 for nil).
func sketchCount(s *ddsketch.DDSketch) uint64 {
	if s == nil {
		return 0
	}
	return uint64(s.GetCount() + 0.5)
}

func TestAddSessionUnits(t *testing.T) {
	f := func(evs []*schemas.Event, want [4]uint64, medians uint64) {
		t.Helper()
		a := NewAgg()
		for _, e := range evs {
			a.Add(e, 0)
		}
		if got := [4]uint64{a.UnitSessions, a.ErrSessions, a.SessRequests, a.SessReqErrors}; got != want {
			t.Fatalf("sessions, error sessions, requests, request errors %v; want %v", got, want)
		}
		if got := sketchCount(a.SessMedian); got != medians {
			t.Fatalf("session medians %d; want %d", got, medians)
		}
		if medians == 0 && a.SessMedian != nil {
			t.Fatal("a session-median sketch without medians; want nil")
		}
		if a.Count != uint64(len(evs)) {
			t.Fatalf("count %d; want %d", a.Count, len(evs))
		}
	}
	req := &schemas.Event{Kind: schemas.KindLLM, HasDuration: true, DurationMS: 300}
	f([]*schemas.Event{req, req}, [4]uint64{}, 0)
	f([]*schemas.Event{sessionEvent(5, 2, 100)}, [4]uint64{1, 1, 5, 2}, 1)
	f([]*schemas.Event{sessionEvent(3, 0, -1), req, sessionEvent(4, 1, 80)}, [4]uint64{2, 1, 7, 1}, 1)
	// More errors than requests (the decoder refuses them) count as all.
	f([]*schemas.Event{sessionEvent(2, 9, 10)}, [4]uint64{1, 1, 2, 2}, 1)
	// Requests unknown: not a unit; a median, if any, still counts.
	f([]*schemas.Event{sessionEvent(0, 0, 50), sessionEvent(0, 0, -1)}, [4]uint64{}, 1)

	a := NewAgg()
	for _, ms := range []float64{100, 200, 300, 400, 500} {
		a.Add(sessionEvent(1, 0, ms), 0)
	}
	if !a.SessMedian.IndexMapping.Equals(Mapping) {
		t.Fatal("the session-median sketch is not on the shared Mapping")
	}
	if q, _ := a.SessMedian.GetValueAtQuantile(0.5); math.Abs(q-300)/300 > RelativeAccuracy {
		t.Fatalf("median of the session medians %v; want 300 ± 1%%", q)
	}
}

// TestAddAllocs: Add allocates nothing for a request event, and for a
// session summary once its series' sketch exists.
func TestAddAllocs(t *testing.T) {
	req := &schemas.Event{Kind: schemas.KindLLM, HasDuration: true, DurationMS: 300, HasCost: true, CostUSD: 0.01}
	sess := sessionEvent(4, 1, 120)
	sess.ToolCalls = [][]byte{[]byte("a"), []byte("a")}
	a := NewAgg()
	a.Add(sess, 0)
	for _, e := range []*schemas.Event{req, sess} {
		if n := testing.AllocsPerRun(100, func() { a.Add(e, 0) }); n != 0 {
			t.Fatalf("Add of a %s event: %v allocations; want 0", e.Kind, n)
		}
	}
}

func TestMergeSessionUnits(t *testing.T) {
	// with returns an Agg holding session summaries with these medians (<0:
	// none).
	with := func(medians ...float64) *Agg {
		a := NewAgg()
		for _, m := range medians {
			a.Add(sessionEvent(3, 1, m), 0)
		}
		return a
	}
	f := func(a, b *Agg, wantMedians uint64) {
		t.Helper()
		units := a.UnitSessions + b.UnitSessions
		a.Merge(b)
		if a.UnitSessions != units || a.ErrSessions != units || a.SessRequests != 3*units || a.SessReqErrors != units {
			t.Fatalf("merged %d/%d/%d/%d; want %d sessions, all with errors, 3 requests and one error each",
				a.UnitSessions, a.ErrSessions, a.SessRequests, a.SessReqErrors, units)
		}
		if got := sketchCount(a.SessMedian); got != wantMedians || wantMedians == 0 && a.SessMedian != nil {
			t.Fatalf("merged medians %d (sketch %p); want %d", got, a.SessMedian, wantMedians)
		}
		if a.SessMedian != nil && a.SessMedian == b.SessMedian {
			t.Fatal("Merge shares b's session-median sketch")
		}
	}
	f(with(), with(), 0)
	f(with(-1), with(-1), 0)
	f(with(), with(10, 20), 2)
	f(with(10, 20), with(), 2)
	f(with(10, 20), with(30), 3)
	f(with(-1), with(30, -1), 1)
	empty := with()
	empty.SessMedian = NewSketch()
	f(with(), empty, 0)
	f(empty, with(5), 1)

	// b goes on after the merge: a does not change.
	a, b := with(), with(10)
	a.Merge(b)
	b.Add(sessionEvent(1, 0, 99), 0)
	if sketchCount(a.SessMedian) != 1 {
		t.Fatalf("a holds %d medians after b changed; want 1", sketchCount(a.SessMedian))
	}
}

// richAgg returns an aggregate with every field set, session units too.
func richAgg() *Agg {
	a := NewAgg()
	for i, e := range randomEvents(21, 400, time.Unix(1_700_000_000, 0)) {
		et := 0
		if e.Error {
			et = 1 + i%3
		}
		a.Add(e, et)
		for j := 1; j < len(e.ToolCalls); j++ {
			a.AddBigram((i + j) % 4)
		}
	}
	e := &schemas.Event{HasOutcome: true, HasHallucination: true, OutcomeHallucinated: true, HasOutcomeScore: true, OutcomeScore: 0.75}
	a.Add(e, 0)
	a.NewSessions = 17
	return a
}

func TestAggBinaryRoundTrip(t *testing.T) {
	noMedian := richAgg()
	noMedian.SessMedian = nil
	emptyMedian := richAgg()
	emptyMedian.SessMedian = NewSketch()
	for name, a := range map[string]*Agg{"empty": NewAgg(), "rich": richAgg(), "no median": noMedian, "empty median": emptyMedian} {
		enc := a.AppendBinary([]byte("prefix"))[len("prefix"):]
		var got Agg
		if err := got.UnmarshalBinary(enc); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if re := got.AppendBinary(nil); !bytes.Equal(re, enc) {
			t.Fatalf("%s: decoded and encoded again differs", name)
		}
		if g, w := [4]uint64{got.UnitSessions, got.ErrSessions, got.SessRequests, got.SessReqErrors},
			[4]uint64{a.UnitSessions, a.ErrSessions, a.SessRequests, a.SessReqErrors}; g != w {
			t.Fatalf("%s: session units %v; want %v", name, g, w)
		}
		if sketchCount(got.SessMedian) != sketchCount(a.SessMedian) || (got.SessMedian == nil) != (sketchCount(a.SessMedian) == 0) {
			t.Fatalf("%s: %d session medians (sketch %p); want %d", name, sketchCount(got.SessMedian), got.SessMedian, sketchCount(a.SessMedian))
		}
		if got.Latency == nil || got.LatencyCount() != a.LatencyCount() {
			t.Fatalf("%s: latency sketch %v; want %d values", name, got.Latency, a.LatencyCount())
		}
		// Every proper prefix fails to decode, and so does a trailing byte.
		for n := range len(enc) {
			if err := new(Agg).UnmarshalBinary(enc[:n]); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("%s: %d of %d bytes: %v; want ErrCorrupt", name, n, len(enc), err)
			}
		}
		if err := new(Agg).UnmarshalBinary(append(enc, 0)); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("%s: trailing byte: %v; want ErrCorrupt", name, err)
		}
	}
	rich := richAgg()
	if rich.UnitSessions == 0 || rich.ErrSessions == 0 || rich.SessMedian == nil || rich.HallucN == 0 || len(rich.Bigrams) == 0 {
		t.Fatal("richAgg leaves fields unset")
	}
	enc := rich.AppendBinary(nil)
	enc[0] = aggCodecVersion + 1
	if err := new(Agg).UnmarshalBinary(enc); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("version %d: %v; want ErrCorrupt", enc[0], err)
	}
}

// TestAggDecodeV1 decodes an aggregate of encoding version 1 (kept under
// testdata; before session units): its fields are as written, the session
// units zero and SessMedian nil.
func TestAggDecodeV1(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("testdata", "agg.v1.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if raw[0] != 1 {
		t.Fatalf("fixture of encoding version %d; want 1", raw[0])
	}
	var a Agg
	if err := a.UnmarshalBinary(raw); err != nil {
		t.Fatal(err)
	}
	got := fmt.Sprint(a.Count, a.Errors, a.Failed, a.Loops, a.ErrorTypes, a.Bigrams, a.LatencyCount(), a.InputTokens,
		a.ContextN, a.Successes, a.Failures, a.ToolCalls)
	if want := "500 19 33 56 [0 6 8 5] [60 64 57 70 66] 500 506467 500 140 15 472"; got != want {
		t.Fatalf("version 1 fixture decodes as %s; want %s", got, want)
	}
	if a.UnitSessions != 0 || a.ErrSessions != 0 || a.SessRequests != 0 || a.SessReqErrors != 0 || a.SessMedian != nil {
		t.Fatalf("session units %d/%d/%d/%d median %v; want zero and nil", a.UnitSessions, a.ErrSessions, a.SessRequests, a.SessReqErrors, a.SessMedian)
	}
	// Encoded in the current version, it decodes to the same.
	var b Agg
	if err := b.UnmarshalBinary(a.AppendBinary(nil)); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b.AppendBinary(nil), a.AppendBinary(nil)) {
		t.Fatal("version 1 fixture encoded again and decoded differs")
	}
}

// TestAggDecodeV2: an aggregate in encoding version 2 (testdata/agg.v2.bin,
// richAgg as a version 2 canaryd encoded it; before NewSessions) decodes
// to richAgg without its NewSessions.
func TestAggDecodeV2(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("testdata", "agg.v2.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if raw[0] != 2 {
		t.Fatalf("fixture of encoding version %d; want 2", raw[0])
	}
	var a Agg
	if err := a.UnmarshalBinary(raw); err != nil {
		t.Fatal(err)
	}
	want := richAgg()
	want.NewSessions = 0
	if !bytes.Equal(a.AppendBinary(nil), want.AppendBinary(nil)) {
		t.Fatal("version 2 fixture decodes differently from richAgg without NewSessions")
	}
}

func FuzzAggDecode(f *testing.F) {
	if raw, err := os.ReadFile(filepath.Join("testdata", "agg.v1.bin")); err == nil {
		f.Add(raw)
	}
	f.Add(NewAgg().AppendBinary(nil))
	f.Add(richAgg().AppendBinary(nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		var a Agg
		if err := a.UnmarshalBinary(b); err != nil {
			return
		}
		enc := a.AppendBinary(nil)
		var again Agg
		if err := again.UnmarshalBinary(enc); err != nil {
			t.Fatalf("an aggregate decoded, encoded again, does not decode: %v", err)
		}
		if !bytes.Equal(again.AppendBinary(nil), enc) {
			t.Fatal("an aggregate decoded and encoded again changes on a second round")
		}
	})
}

// TestTableRoundTrip: a table with session units, with and without a
// session-median sketch, reads back exactly; a nil sketch is a null.
func TestTableRoundTrip(t *testing.T) {
	noMedian := richAgg()
	noMedian.SessMedian = nil
	aggs := []*Agg{richAgg(), noMedian, NewAgg()}
	tb := NewTable()
	defer tb.Release()
	for i, a := range aggs {
		tb.Append(Row{Rollout: "r", Version: "v" + strconv.Itoa(i), Segment: Segment{Kind: schemas.KindAgent, Name: "plan"},
			Start: 10, End: 20, MinOffset: int64(i), Key: uint32(i), Agg: a})
	}
	var buf bytes.Buffer
	if err := tb.WriteIPC(&buf, map[string]string{"canaryd.rollout": "r"}); err != nil {
		t.Fatal(err)
	}
	rows, meta, err := ReadIPC(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if meta[MetaVersion] != strconv.Itoa(ColumnarVersion) || len(rows) != len(aggs) {
		t.Fatalf("version %q, %d rows; want %d, %d", meta[MetaVersion], len(rows), ColumnarVersion, len(aggs))
	}
	for i, r := range rows {
		if !bytes.Equal(r.Agg.AppendBinary(nil), aggs[i].AppendBinary(nil)) {
			t.Fatalf("row %d reads back differently", i)
		}
		if (r.Agg.SessMedian == nil) != (aggs[i].SessMedian == nil) {
			t.Fatalf("row %d: session-median sketch %p; want nil: %v", i, r.Agg.SessMedian, aggs[i].SessMedian == nil)
		}
	}
	rd, err := ipc.NewReader(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Release()
	rd.Next()
	if n := rd.RecordBatch().Column(colSessMedian).NullN(); n != 2 {
		t.Fatalf("%d null session-median sketches; want 2 (no median, empty)", n)
	}
}

// TestReadIPCRefusesOtherVersions: a table whose schema is not its
// version's, or of a version this canaryd does not know, is corrupt.
func TestReadIPCRefusesOtherVersions(t *testing.T) {
	tb := NewTable()
	defer tb.Release()
	tb.Append(Row{Rollout: "r", Version: "v", Segment: Segment{Kind: schemas.KindLLM, Name: "m"}, Start: 0, End: 1, Agg: richAgg()})
	rec := tb.b.NewRecordBatch()
	defer rec.Release()
	for _, v := range []string{"1", "2", "4", "0", ""} {
		md := arrow.NewMetadata([]string{MetaFormat, MetaVersion}, []string{formatName, v})
		schema := arrow.NewSchema(Schema.Fields(), &md)
		var buf bytes.Buffer
		w := ipc.NewWriter(&buf, ipc.WithSchema(schema))
		if err := w.Write(array.NewRecordBatch(schema, rec.Columns(), rec.NumRows())); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		if _, _, err := ReadIPC(&buf); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("version %q with version %d's schema: %v; want ErrCorrupt", v, ColumnarVersion, err)
		}
	}
}

// BenchmarkAdd measures the per-event hot path: Agg.Add of a request event
// and of a session summary (with its requests' totals), and Partition.Add
// over a mixed stream of live series in one open window.
func BenchmarkAdd(b *testing.B) {
	req := &schemas.Event{Kind: schemas.KindLLM, HasDuration: true, DurationMS: 420, InputTokens: 1200, OutputTokens: 300,
		HasCost: true, CostUSD: 0.003, ContextTokens: 5000, ContextLimit: 128000}
	sess := &schemas.Event{Kind: schemas.KindAgent, HasDuration: true, DurationMS: 9000,
		ToolCalls:  [][]byte{[]byte("search"), []byte("fetch"), []byte("fetch")},
		HasOutcome: true, HasOutcomeSuccess: true, OutcomeSuccess: true,
		Requests: 7, RequestErrors: 1, RequestMedianMS: 380, HasRequestMedian: true}
	for _, c := range []struct {
		name string
		ev   *schemas.Event
	}{{"agg/request", req}, {"agg/session", sess}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			a := NewAgg()
			a.Add(c.ev, 0)
			for b.Loop() {
				a.Add(c.ev, 0)
			}
		})
	}
	b.Run("partition", func(b *testing.B) {
		t0 := time.Unix(1_700_000_000, 0)
		p := NewPartition(0, Options{Width: time.Hour})
		p.SetNow(t0)
		rng := rand.New(rand.NewPCG(5, 6))
		evs := make([]*schemas.Event, 1<<12)
		for i := range evs {
			k := []schemas.Kind{schemas.KindLLM, schemas.KindTool, schemas.KindAgent}[rng.IntN(3)]
			e := ev(fmt.Sprintf("r%d", rng.IntN(4)), fmt.Sprintf("v%d", rng.IntN(2)), k, fmt.Sprintf("n%d", rng.IntN(8)),
				t0.Add(time.Duration(rng.IntN(1000))*time.Millisecond), rng.ExpFloat64()*300, rng.IntN(50) == 0)
			if k == schemas.KindAgent {
				e.ToolCalls = [][]byte{[]byte("search"), []byte("fetch")}
				e.Requests, e.RequestErrors = uint32(1+rng.IntN(9)), uint32(rng.IntN(2))
				e.RequestMedianMS, e.HasRequestMedian = rng.ExpFloat64()*200, true
			}
			evs[i] = e
		}
		for i, e := range evs { // every series exists before timing
			if err := p.Add(e, int64(i)); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if err := p.Add(evs[i&(len(evs)-1)], int64(i)); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
}
