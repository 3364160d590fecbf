package window

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/inferensys/canaryd/schemas"
)

// The tests of this file are the regression tests of the event-time faults
// of issue 11 ("Hardening"); each failed before its fix.

// liveStream returns n events of rollout "r", one every gap of wall time from
// t0, each stamped behind (lag > 0) or ahead of the wall clock at its
// arrival, and their arrival times.
func liveStream(n int, t0 time.Time, gap, lag time.Duration) (evs []*schemas.Event, at []time.Time) {
	for i := range n {
		now := t0.Add(time.Duration(i) * gap)
		evs = append(evs, ev("r", "v1", schemas.KindTool, "search", now.Add(-lag), 100, false))
		at = append(at, now)
	}
	return evs, at
}

// TestFutureEventRefusedWithReason: an event 9 minutes ahead of the wall
// clock — inside the old fixed 10-minute limit, where it moved the watermark
// and 9,272 real events were dropped late — is refused (ErrFuture, the DLQ's
// reason says by how much and the limit), and the stream goes on unharmed.
func TestFutureEventRefusedWithReason(t *testing.T) {
	var closed int
	p := NewPartition(0, Options{Emit: func(Closed) { closed++ }})
	t0 := time.Date(2026, 12, 3, 13, 0, 0, 0, time.UTC)
	evs, at := liveStream(600, t0, 100*time.Millisecond, 0)
	late := 0
	for i, e := range evs {
		p.SetNow(at[i])
		if i == 100 {
			err := p.Add(ev("r", "v1", schemas.KindTool, "search", at[i].Add(9*time.Minute), 1, false), 10_000)
			if !errors.Is(err, ErrFuture) {
				t.Fatalf("an event 9m ahead of the wall clock: %v; want ErrFuture", err)
			}
			want := "event time too far in the future: 2026-12-03T13:09:10Z is 9m0s ahead of the wall clock (limit 1m0s)"
			if err.Error() != want {
				t.Fatalf("reason %q; want %q", err, want)
			}
		}
		if err := p.Add(e, int64(i)); errors.Is(err, ErrLate) {
			late++
		} else if err != nil {
			t.Fatal(err)
		}
		p.Advance()
	}
	if late != 0 {
		t.Fatalf("%d of %d on-time events dropped late after a refused future event; want 0", late, len(evs))
	}
	if closed == 0 {
		t.Fatal("no window closed: the stream did not move the watermark")
	}
}

// TestOneEventAheadDoesNotMoveWatermark: one record 50 s ahead of the wall
// clock (inside MaxFuture) among on-time records does not move the
// watermark: it never passes the newest on-time event time minus Lateness,
// and no on-time event is dropped late.
func TestOneEventAheadDoesNotMoveWatermark(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 13, 0, 0, 0, time.UTC)
	evs, at := liveStream(600, t0, 100*time.Millisecond, 0)
	p := NewPartition(0, Options{}) // Lateness 5s
	late := 0
	for i, e := range evs {
		p.SetNow(at[i])
		if i == 100 {
			if err := p.Add(ev("r", "v1", schemas.KindTool, "search", at[i].Add(50*time.Second), 1, false), 10_000); err != nil {
				t.Fatalf("an event 50s ahead (inside MaxFuture): %v", err)
			}
		}
		if err := p.Add(e, int64(i)); errors.Is(err, ErrLate) {
			late++
		} else if err != nil {
			t.Fatal(err)
		}
		p.Advance()
		if bound := e.TS - int64(5*time.Second); p.Watermark() > bound {
			t.Fatalf("after event %d the watermark is %v, ahead of the on-time events' %v",
				i, time.Unix(0, p.Watermark()).UTC(), time.Unix(0, bound).UTC())
		}
	}
	if late != 0 {
		t.Fatalf("%d of %d on-time events dropped late after one event 50s ahead; want 0", late, len(evs))
	}
}

// TestIdleKeepsLaggingProducer: a quiet partition whose producer stamps its
// events 20 s behind the wall clock, one every 40 s (longer than Idle): the
// idle rule used to move the watermark to the wall clock minus Lateness and
// drop every one of them late. It closes the windows still, once the
// producer's lag has passed.
func TestIdleKeepsLaggingProducer(t *testing.T) {
	var closed []Closed
	p := NewPartition(0, Options{Emit: func(c Closed) { closed = append(closed, c) }}) // Idle 30s, Lateness 5s
	t0 := time.Date(2026, 12, 3, 13, 0, 0, 0, time.UTC)
	evs, at := liveStream(20, t0, 40*time.Second, 20*time.Second)
	late := 0
	for i, e := range evs {
		// The consumer advances the partition every second, events or not.
		for s := at[i].Add(-39 * time.Second); i > 0 && s.Before(at[i]); s = s.Add(time.Second) {
			p.SetNow(s)
			p.Advance()
		}
		p.SetNow(at[i])
		if err := p.Add(e, int64(i)); errors.Is(err, ErrLate) {
			late++
		} else if err != nil {
			t.Fatal(err)
		}
		p.Advance()
	}
	if late != 0 {
		t.Fatalf("%d of %d events 20s behind the wall clock dropped late by the idle rule; want 0", late, len(evs))
	}
	// Quiet from here: the idle rule closes the last window once the wall
	// clock is Idle past the last event and the lag plus Lateness past its end.
	last := at[len(at)-1]
	for s := last; s.Before(last.Add(time.Minute)); s = s.Add(time.Second) {
		p.SetNow(s)
		p.Advance()
	}
	if p.OpenWindows() != 0 {
		t.Fatalf("%d windows still open a minute after the last event", p.OpenWindows())
	}
	var n uint64
	for _, c := range closed {
		for _, s := range c.Series {
			n += s.Agg.Count
		}
	}
	if n != uint64(len(evs)) {
		t.Fatalf("closed windows hold %d events; want %d", n, len(evs))
	}
}

// TestWatermarkIndependentOfBatching: the same records, out of order by up
// to 8 s with Lateness 5 s (some late), advanced after every record or once
// per 1,000 records, refuse the same records as late and close the same
// windows with the same contents and decision times (Closed.Watermark = the
// window's end). The watermark used to move only at Advance, so which
// records were late depended on how the records were batched.
func TestWatermarkIndependentOfBatching(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	rng := rand.New(rand.NewPCG(5, 5))
	evs := make([]*schemas.Event, 20_000)
	for i := range evs {
		ts := t0.Add(time.Duration(i)*10*time.Millisecond - time.Duration(rng.IntN(8000))*time.Millisecond)
		evs[i] = ev(fmt.Sprint("r", i%3), "v1", schemas.KindTool, "search", ts, 100, false)
	}
	run := func(batch int) (closed []byte, late []int) {
		var cs []Closed
		p := NewPartition(0, Options{Width: 10 * time.Second, Lateness: 5 * time.Second, Emit: func(c Closed) { cs = append(cs, c) }})
		p.SetNow(t0.Add(time.Hour))
		for i, e := range evs {
			if err := p.Add(e, int64(i)); errors.Is(err, ErrLate) {
				late = append(late, i)
			} else if err != nil {
				t.Fatal(err)
			}
			if i%batch == batch-1 {
				p.Advance()
			}
		}
		p.Advance()
		for _, c := range cs {
			if c.Watermark != c.End {
				t.Fatalf("window [%d, %d) judged at %d; want its end", c.Start, c.End, c.Watermark)
			}
		}
		return closedBytes(cs), late
	}
	c1, l1 := run(1)
	c2, l2 := run(1000)
	if len(l1) == 0 || len(l1) == len(evs) {
		t.Fatalf("%d late records: the test compares nothing", len(l1))
	}
	if fmt.Sprint(l1) != fmt.Sprint(l2) {
		t.Fatalf("late records depend on batching: %d advancing every record, %d every 1000", len(l1), len(l2))
	}
	if !bytes.Equal(c1, c2) {
		t.Fatal("closed windows depend on batching")
	}
}

// TestAddAllocatesNothing: counting an event into an open window, with the
// watermark quorum and the lag kept, allocates nothing.
func TestAddAllocatesNothing(t *testing.T) {
	p := NewPartition(0, Options{})
	t0 := time.Unix(1_700_000_000, 0)
	p.SetNow(t0)
	e := ev("r", "v1", schemas.KindTool, "search", t0, 100, false)
	_ = p.Add(e, 0)
	var i int64
	allocs := testing.AllocsPerRun(1000, func() {
		i++
		e.TS = t0.UnixNano() + i // newer each time: every event moves the quorum
		if err := p.Add(e, i); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("Add allocates %v times per event; want 0", allocs)
	}
}
