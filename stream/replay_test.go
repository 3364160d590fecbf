package stream

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/inferensys/canaryd/schemas"
)

// TestSessionsReplayFromOldestHeld is the contract a checkpoint relies on
// (Stateful): a fresh session decoder fed again the records from
// OldestHeld() up to a cut, their events dropped, then the rest, emits from
// the cut on exactly what an uninterrupted decoder emits — sessions whose
// spans began before the cut included.
func TestSessionsReplayFromOldestHeld(t *testing.T) {
	// 60 traces, each spread over several records, interleaved: a record
	// holds a few spans of several traces; roots (agent spans) come last.
	rng := rand.New(rand.NewPCG(4, 5))
	var spans []tspan
	for i := range 60 {
		spans = append(spans, turn(fmt.Sprintf("%x", 0x100+i), int64(i)*300)...)
	}
	var recs [][]tspan
	for len(spans) > 0 {
		n := min(len(spans), 1+rng.IntN(5))
		recs = append(recs, spans[:n])
		spans = spans[n:]
	}
	if len(recs) > 250 {
		t.Fatalf("%d records: fake records are indexed by one byte", len(recs))
	}
	run := func(dec Decoder, from, mutedUntil int) (out []sev) {
		st := dec.(Stateful)
		for i := from; i < len(recs); i++ {
			st.SetOffset(int64(i))
			emit := func(e *schemas.Event) { out = append(out, toSev(e)) }
			if i < mutedUntil {
				emit = func(*schemas.Event) {}
			}
			if err := dec.Decode([]byte{byte(i)}, emit); err != nil {
				t.Fatal(err)
			}
		}
		return out
	}
	newDec := func() Decoder {
		f := &fakeSpans{recs: recs}
		return Sessions(func() Decoder { return f }, SessionConfig{Clock: sessionClock})()
	}
	replays := 0
	for cut := 1; cut < len(recs); cut += 7 {
		// The uninterrupted decoder, and where a checkpoint at the cut
		// would replay from.
		ref := newDec()
		var before, after []sev
		st := ref.(Stateful)
		for i := range recs {
			if i == cut {
				h := st.OldestHeld()
				if h < 0 {
					h = int64(cut)
				}
				if h < int64(cut) {
					replays++
				}
				got := run(newDec(), int(h), cut)
				after = run(ref, cut, 0)
				if !slices.Equal(got, after) {
					t.Fatalf("cut %d, replay from %d: %d events; want %d (the uninterrupted decoder's)", cut, h, len(got), len(after))
				}
				break
			}
			st.SetOffset(int64(i))
			if err := ref.Decode([]byte{byte(i)}, func(e *schemas.Event) { before = append(before, toSev(e)) }); err != nil {
				t.Fatal(err)
			}
		}
	}
	if replays == 0 {
		t.Fatal("no cut fell inside a trace: the test replays nothing")
	}
	// Without the replay (from the cut itself), sessions in flight lose
	// their earlier spans: the test would see it.
	ref := newDec()
	full := run(ref, 0, 0)
	cut := len(recs) / 2
	if late := run(newDec(), cut, 0); slices.Equal(late, full[len(full)-len(late):]) {
		t.Fatal("starting mid-stream without replay gave the same events: the test cannot tell")
	}
}
