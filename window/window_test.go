package window

import (
	"errors"
	"math"
	"testing"
	"time"

	"github.com/inferensys/canaryd/schemas"
)

func ev(rollout, version string, kind schemas.Kind, name string, ts time.Time, ms float64, failed bool) *schemas.Event {
	e := &schemas.Event{Rollout: []byte(rollout), Version: []byte(version), Kind: kind, Name: []byte(name),
		TS: ts.UnixNano(), DurationMS: ms, HasDuration: true, Error: failed}
	if failed {
		e.ErrorType = []byte("timeout")
	}
	return e
}

func TestWindowsCloseBehindWatermark(t *testing.T) {
	var got []Closed
	p := NewPartition(0, Options{Width: 10 * time.Second, Lateness: 5 * time.Second, Emit: func(c Closed) { got = append(got, c) }})
	t0 := time.Unix(1_700_000_000, 0) // a multiple of 10 s
	p.SetNow(t0)
	add := func(e *schemas.Event, off int64) error { return p.Add(e, off) }
	for i := range 10 {
		if err := add(ev("r", "v1", schemas.KindTool, "search", t0.Add(time.Duration(i)*time.Second), 100, i == 3), int64(i)); err != nil {
			t.Fatal(err)
		}
	}
	add(ev("r", "v2", schemas.KindTool, "search", t0.Add(2*time.Second), 200, false), 10)
	p.Advance()
	if len(got) != 0 {
		t.Fatalf("closed %d windows before the watermark passed; want 0", len(got))
	}
	if off := p.CommitOffset(11); off != 0 {
		t.Fatalf("commit offset %d with the window open; want 0 (its first record)", off)
	}
	// One event at t0+15s does not move the watermark (the default quorum
	// is 3 events); the third moves it to t0+10s: the first window closes.
	add(ev("r", "v1", schemas.KindLLM, "gpt", t0.Add(15*time.Second), 900, false), 11)
	p.Advance()
	if len(got) != 0 {
		t.Fatalf("one event moved the watermark: %d windows closed; want 0", len(got))
	}
	add(ev("r", "v1", schemas.KindLLM, "gpt", t0.Add(15*time.Second), 900, false), 11)
	add(ev("r", "v1", schemas.KindLLM, "gpt", t0.Add(15*time.Second), 900, false), 11)
	p.Advance()
	if len(got) != 1 {
		t.Fatalf("closed %d windows; want 1", len(got))
	}
	c := got[0]
	if c.Start != t0.UnixNano() || c.End != t0.Add(10*time.Second).UnixNano() || c.Rollout != "r" {
		t.Fatalf("closed window %+v", c)
	}
	if len(c.Series) != 2 || c.Series[0].Version != "v1" || c.Series[1].Version != "v2" {
		t.Fatalf("series %+v; want v1 and v2", c.Series)
	}
	a := c.Series[0].Agg
	if a.Count != 10 || a.Errors != 1 || a.ErrorTypes[1] != 1 || c.ErrorTypes[1] != "timeout" {
		t.Fatalf("v1 agg count %d errors %d types %v names %v", a.Count, a.Errors, a.ErrorTypes, c.ErrorTypes)
	}
	if q := a.Quantile(0.5); math.Abs(q-100) > 1 {
		t.Fatalf("median %v; want 100 ± 1%%", q)
	}
	if off := p.CommitOffset(12); off != 11 {
		t.Fatalf("commit offset %d; want 11 (the open window's first record)", off)
	}
	// A late event for the closed window is refused and not counted.
	if err := add(ev("r", "v1", schemas.KindTool, "search", t0.Add(time.Second), 1, false), 12); !errors.Is(err, ErrLate) {
		t.Fatalf("late event: %v; want ErrLate", err)
	}
	// An event within lateness of an open window still counts.
	if err := add(ev("r", "v1", schemas.KindTool, "search", t0.Add(11*time.Second), 1, false), 13); err != nil {
		t.Fatalf("event within lateness: %v", err)
	}
	// Far future events are refused.
	if err := add(ev("r", "v1", schemas.KindTool, "search", t0.Add(time.Hour), 1, false), 14); !errors.Is(err, ErrFuture) {
		t.Fatalf("future event: %v; want ErrFuture", err)
	}
	p.Flush()
	if len(got) != 2 || got[1].Series[0].Agg.Count != 3 || got[1].Series[1].Agg.Count != 1 {
		t.Fatalf("flush: %d windows; want the second with 3 llm and a tool event", len(got))
	}
}

func TestIdleWatermarkFollowsWallClock(t *testing.T) {
	var got []Closed
	p := NewPartition(0, Options{Width: time.Second, Lateness: time.Second, Idle: 2 * time.Second, Emit: func(c Closed) { got = append(got, c) }})
	t0 := time.Unix(1_700_000_000, 0)
	p.SetNow(t0)
	p.Add(ev("r", "v1", schemas.KindTool, "x", t0, 1, false), 0)
	p.Advance()
	p.SetNow(t0.Add(time.Second))
	p.Advance()
	if len(got) != 0 {
		t.Fatalf("closed before idle timeout")
	}
	p.SetNow(t0.Add(3 * time.Second))
	p.Advance()
	if len(got) != 1 {
		t.Fatalf("closed %d windows after the idle timeout; want 1", len(got))
	}
}

func TestCardinalityCaps(t *testing.T) {
	var got []Closed
	p := NewPartition(0, Options{MaxSegments: 3, MaxVersions: 3, MaxErrorTypes: 2, MaxRollouts: 2, Emit: func(c Closed) { got = append(got, c) }})
	t0 := time.Unix(1_700_000_000, 0)
	p.SetNow(t0)
	for i, name := range []string{"a", "b", "c", "d", "e"} {
		e := ev("r", "v1", schemas.KindTool, name, t0, 1, true)
		e.ErrorType = []byte(name)
		p.Add(e, int64(i))
	}
	for i, v := range []string{"v2", "v3", "v4"} {
		p.Add(ev("r", v, schemas.KindTool, "a", t0, 1, false), int64(10+i))
	}
	p.Add(ev("r2", "v1", schemas.KindTool, "a", t0, 1, false), 20)
	if err := p.Add(ev("r3", "v1", schemas.KindTool, "a", t0, 1, false), 21); !errors.Is(err, ErrTooManyRoll) {
		t.Fatalf("third rollout: %v; want ErrTooManyRoll", err)
	}
	p.Flush()
	segs, versions := map[string]bool{}, map[string]bool{}
	for _, c := range got {
		if c.Rollout != "r" {
			continue
		}
		for _, s := range c.Series {
			segs[s.Segment.Name] = true
			versions[s.Version] = true
		}
		if len(c.ErrorTypes) != 2 {
			t.Fatalf("error types %v; want 2 (_other + one)", c.ErrorTypes)
		}
	}
	if len(segs) != 4 || !segs[OtherName] {
		t.Fatalf("segments %v; want 3 named + %s", segs, OtherName)
	}
	if len(versions) != 3 || !versions[OtherName] {
		t.Fatalf("versions %v; want v1, v2, %s", versions, OtherName)
	}
}

func TestMergeAndCountAbove(t *testing.T) {
	a, b := NewAgg(), NewAgg()
	var e schemas.Event
	e.HasDuration = true
	for i := 1; i <= 1000; i++ {
		e.DurationMS = float64(i)
		a.Add(&e, 0)
		b.Add(&e, 0)
	}
	a.Merge(b)
	if a.Count != 2000 || a.LatencyCount() != 2000 {
		t.Fatalf("merged count %d / %d; want 2000", a.Count, a.LatencyCount())
	}
	idx := Mapping.Index(900)
	n := a.CountAbove(idx)
	// Exactly the values whose bucket lies above 900's bucket: ~2×(1000−900·(1+1%)).
	if n < 160 || n > 200 {
		t.Fatalf("CountAbove(900) = %d; want ≈ 180", n)
	}
	if q := a.Quantile(0.95); math.Abs(q-950)/950 > 0.02 {
		t.Fatalf("p95 %v; want 950 ± 2%%", q)
	}
}

// TestEvictionFreesRolloutSlots: a rollout silent for EvictAfter (event
// time) with no open window is dropped, and its slot serves a new rollout.
func TestEvictionFreesRolloutSlots(t *testing.T) {
	var closed int
	p := NewPartition(0, Options{Width: 10 * time.Second, Lateness: time.Second, MaxRollouts: 2, EvictAfter: time.Hour,
		Emit: func(Closed) { closed++ }})
	t0 := time.Unix(1_700_000_000, 0)
	p.SetNow(t0.Add(3 * time.Hour))
	for _, r := range []string{"a", "b"} {
		if err := p.Add(ev(r, "v1", schemas.KindTool, "x", t0, 10, false), 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Add(ev("c", "v1", schemas.KindTool, "x", t0, 10, false), 1); !errors.Is(err, ErrTooManyRoll) {
		t.Fatalf("third rollout: %v; want ErrTooManyRoll", err)
	}
	// b goes on for two hours; a is silent.
	for m := 1; m <= 120; m++ {
		if err := p.Add(ev("b", "v1", schemas.KindTool, "x", t0.Add(time.Duration(m)*time.Minute), 10, false), int64(1+m)); err != nil {
			t.Fatal(err)
		}
		p.Advance()
	}
	if p.LiveRollouts() != 1 || p.Evicted() != 1 {
		t.Fatalf("live %d evicted %d; want a evicted, b live", p.LiveRollouts(), p.Evicted())
	}
	if err := p.Add(ev("c", "v1", schemas.KindTool, "x", t0.Add(2*time.Hour), 10, false), 200); err != nil {
		t.Fatalf("c after a's eviction: %v", err)
	}
	if closed == 0 {
		t.Fatal("no window closed")
	}
}

// TestHoldIdle: while held (a backlog, a broker that does not answer), the
// idle rule closes nothing however long the wall clock runs; released, it
// waits a whole Idle period again before it does.
func TestHoldIdle(t *testing.T) {
	var closed int
	p := NewPartition(0, Options{Width: time.Second, Lateness: 500 * time.Millisecond, Idle: 3 * time.Second,
		Emit: func(Closed) { closed++ }})
	t0 := time.Unix(1_700_000_000, 0)
	p.SetNow(t0)
	if err := p.Add(ev("r", "v1", schemas.KindTool, "x", t0, 10, false), 0); err != nil {
		t.Fatal(err)
	}
	p.Advance()
	p.HoldIdle(true)
	for s := 1; s <= 60; s++ { // a minute-long stall
		p.SetNow(t0.Add(time.Duration(s) * time.Second))
		p.Advance()
	}
	if closed != 0 {
		t.Fatalf("%d windows closed by the idle rule while it was held", closed)
	}
	// The backlog arrives: an event of the open window is still counted.
	if err := p.Add(ev("r", "v1", schemas.KindTool, "x", t0.Add(100*time.Millisecond), 10, false), 1); err != nil {
		t.Fatalf("backlog event refused after a held stall: %v", err)
	}
	p.HoldIdle(false)
	p.SetNow(t0.Add(61 * time.Second))
	p.Advance()
	p.SetNow(t0.Add(62 * time.Second))
	p.Advance()
	if closed != 0 {
		t.Fatal("closed before a whole Idle period after the hold ended")
	}
	p.SetNow(t0.Add(64 * time.Second))
	p.Advance()
	if closed != 1 {
		t.Fatalf("%d windows closed after Idle unheld; want 1", closed)
	}
}
