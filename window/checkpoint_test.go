package window

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/inferensys/canaryd/schemas"
)

// randomEvents returns a reproducible stream over a few rollouts, versions,
// segments, error types and tool sequences, in roughly increasing time. Most
// agent events carry their requests' totals, some a median too (derived from
// i, so that the random draws, and the events of older fixtures, are the
// same as before those fields).
func randomEvents(seed uint64, n int, t0 time.Time) []*schemas.Event {
	rng := rand.New(rand.NewPCG(seed, 1))
	tools := []string{"search", "fetch", "calc", "mail", "sql"}
	out := make([]*schemas.Event, n)
	for i := range out {
		ts := t0.Add(time.Duration(i)*20*time.Millisecond + time.Duration(rng.IntN(3000))*time.Millisecond)
		kinds := []schemas.Kind{schemas.KindLLM, schemas.KindTool, schemas.KindAgent}
		k := kinds[rng.IntN(3)]
		e := ev(fmt.Sprintf("r%d", rng.IntN(3)), fmt.Sprintf("v%d", rng.IntN(2)), k, tools[rng.IntN(len(tools))], ts,
			rng.ExpFloat64()*300, rng.IntN(20) == 0)
		if e.Error {
			e.ErrorType = []byte([]string{"timeout", "rate_limit", "tool_error"}[rng.IntN(3)])
		}
		e.InputTokens, e.OutputTokens = int64(rng.IntN(2000)), int64(rng.IntN(500))
		e.HasCost, e.CostUSD = true, rng.Float64()/100
		e.ContextTokens, e.ContextLimit = int64(rng.IntN(100000)), 128000
		if k == schemas.KindAgent {
			for range 1 + rng.IntN(5) {
				e.ToolCalls = append(e.ToolCalls, []byte(tools[rng.IntN(len(tools))]))
			}
			e.HasOutcome, e.HasOutcomeSuccess, e.OutcomeSuccess = true, true, rng.IntN(10) > 0
			if i%5 != 0 {
				e.Requests = uint32(1 + i%9)
				e.RequestErrors = uint32(i % 7 / 5) // 0 or 1
			}
			if i%3 != 0 {
				e.RequestMedianMS, e.HasRequestMedian = e.DurationMS/4, true
			}
		}
		out[i] = e
	}
	return out
}

// closedBytes encodes closed windows for exact comparison.
func closedBytes(cs []Closed) []byte {
	var b []byte
	for _, c := range cs {
		b = fmt.Appendf(b, "%s %d %d %d %v %v\n", c.Rollout, c.Start, c.End, c.Watermark, c.ErrorTypes, c.Bigrams)
		for _, s := range c.Series {
			b = fmt.Appendf(b, "%s %s ", s.Version, s.Segment)
			b = s.Agg.AppendBinary(b)
			b = append(b, '\n')
		}
	}
	return b
}

// TestSnapshotRestoreIsExact cuts a stream at several points, snapshots and
// restores the partition, and checks that the windows emitted from then on
// equal an uninterrupted partition's, byte for byte.
func TestSnapshotRestoreIsExact(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	evs := randomEvents(7, 20000, t0)
	opts := Options{Width: 10 * time.Second, Lateness: 2 * time.Second, MaxSegments: 8, MaxErrorTypes: 3, MaxBigrams: 6, MaxTools: 4}
	run := func(cuts map[int]bool) ([]Closed, int) {
		var got []Closed
		o := opts
		o.Emit = func(c Closed) { got = append(got, c) }
		p := NewPartition(3, o)
		p.SetNow(t0.Add(time.Hour))
		restores := 0
		for i, e := range evs {
			if cuts[i] {
				var buf bytes.Buffer
				if err := p.Snapshot(&buf); err != nil {
					t.Fatal(err)
				}
				var err error
				if p, err = RestorePartition(3, o, buf.Bytes()); err != nil {
					t.Fatalf("restore at %d: %v", i, err)
				}
				p.SetNow(t0.Add(time.Hour))
				restores++
			}
			_ = p.Add(e, int64(i))
			if i%100 == 99 {
				p.Advance()
			}
		}
		p.Flush()
		return got, restores
	}
	want, _ := run(nil)
	got, n := run(map[int]bool{1: true, 777: true, 5000: true, 12345: true, 19999: true})
	if n != 5 || len(want) == 0 {
		t.Fatalf("restores %d windows %d", n, len(want))
	}
	if !bytes.Equal(closedBytes(got), closedBytes(want)) {
		t.Fatalf("windows after restore differ from an uninterrupted run (%d vs %d windows)", len(got), len(want))
	}
}

func TestStoreSaveLoadAndCorruption(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenStore(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Unix(1_700_000_000, 0)
	p := NewPartition(0, Options{})
	p.SetNow(t0)
	for i, e := range randomEvents(1, 500, t0) {
		_ = p.Add(e, int64(i))
	}
	var snap bytes.Buffer
	if err := p.Snapshot(&snap); err != nil {
		t.Fatal(err)
	}
	ck := Checkpoint{Next: 500, Epoch: 2, Commit: 17, Replay: 480, SavedAt: t0.UnixNano(), Snapshot: snap.Bytes()}
	if err := s.Save("agent.events", 0, ck, map[string][]byte{"judge/r0": []byte("state")}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Load("agent.events", 1); !errors.Is(err, ErrNoCheckpoint) {
		t.Fatalf("load of a partition never saved: %v; want ErrNoCheckpoint", err)
	}
	// Reopen: durable.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err = OpenStore(dir, nil); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err := s.Load("agent.events", 0)
	if err != nil {
		t.Fatal(err)
	}
	if got.Next != 500 || got.Epoch != 2 || got.Commit != 17 || got.Replay != 480 || !bytes.Equal(got.Snapshot, ck.Snapshot) {
		t.Fatalf("loaded %d/%d/%d; want 500/2/17 and the same snapshot", got.Next, got.Epoch, got.Commit)
	}
	side, bad, err := s.Side()
	if err != nil || len(bad) != 0 || string(side["judge/r0"]) != "state" {
		t.Fatalf("side %q bad %v err %v", side, bad, err)
	}
	// One flipped bit anywhere, or a truncation, is caught by the checksum.
	raw := EncodeCheckpoint(ck)
	for _, bad := range [][]byte{flip(raw, len(raw)/2), flip(raw, len(raw)-1), raw[:len(raw)-7], raw[:5]} {
		if err := s.RawSet("agent.events", 0, bad); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Load("agent.events", 0); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("corrupt checkpoint loaded: err %v; want ErrCorrupt", err)
		}
	}
}

func flip(b []byte, i int) []byte {
	c := bytes.Clone(b)
	c[i] ^= 0x10
	return c
}

// loadFixture loads the fixture of checkpoint format version under
// testdata, checks its envelope's version, its header and its 200 events in
// 3 windows, and returns the windows it holds. CANARYD_WRITE_FIXTURE=1
// writes the fixture of CheckpointVersion first, and only that one: a
// released version's fixture stays as it was written.
func loadFixture(t *testing.T, version uint16) []Closed {
	t.Helper()
	path := filepath.Join("testdata", fmt.Sprintf("checkpoint.v%d.bin", version))
	t0 := time.Unix(1_700_000_000, 0)
	if version == CheckpointVersion && os.Getenv("CANARYD_WRITE_FIXTURE") != "" {
		p := NewPartition(0, Options{})
		p.SetNow(t0)
		for i, e := range randomEvents(11, 200, t0) {
			// From version 4 the partition remembers session ids.
			e.SessionID = fixtureSessionID(i)
			_ = p.Add(e, int64(100+i))
			if i == 99 {
				// From version 3 the batches' arrival lags are kept: one.
				p.SetNow(t0.Add(9 * time.Second))
				p.Advance()
			}
		}
		var snap bytes.Buffer
		if err := p.Snapshot(&snap); err != nil {
			t.Fatal(err)
		}
		ck := Checkpoint{Next: 300, Epoch: 1, Commit: 100, Replay: 250, SavedAt: t0.UnixNano(), Snapshot: snap.Bytes()}
		if err := os.WriteFile(path, EncodeCheckpoint(ck), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(raw) < envelopeLen || binary.LittleEndian.Uint16(raw[4:]) != version {
		t.Fatalf("%s: not an envelope of version %d", path, version)
	}
	ck, err := DecodeCheckpoint(raw)
	if err != nil {
		t.Fatal(err)
	}
	if ck.Next != 300 || ck.Commit != 100 || ck.Epoch != 1 || ck.Replay != 250 {
		t.Fatalf("fixture header next %d commit %d epoch %d replay %d; want 300/100/1/250", ck.Next, ck.Commit, ck.Epoch, ck.Replay)
	}
	p, err := RestorePartition(0, Options{}, ck.Snapshot)
	if err != nil {
		t.Fatal(err)
	}
	// Written again in this version and restored, it holds the same.
	var snap bytes.Buffer
	if err := p.Snapshot(&snap); err != nil {
		t.Fatal(err)
	}
	p2, err := RestorePartition(0, Options{}, snap.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	commit := p.CommitOffset(300)
	var got, again []Closed
	p.opts.Emit = func(c Closed) { got = append(got, c) }
	p.Flush()
	p2.opts.Emit = func(c Closed) { again = append(again, c) }
	p2.Flush()
	if !bytes.Equal(closedBytes(got), closedBytes(again)) {
		t.Fatal("the fixture's windows differ once snapshotted again and restored")
	}
	var n uint64
	for _, c := range got {
		for _, s := range c.Series {
			n += s.Agg.Count
		}
	}
	if n != 200 || len(got) != 3 || commit != 100 {
		t.Fatalf("fixture holds %d events in %d windows, commit %d; want 200 in 3, commit 100", n, len(got), commit)
	}
	return got
}

// TestCheckpointFixtureV1 loads the checkpoint of format version 1 (table
// version 1) kept under testdata: a released format must stay readable. It
// has no session-unit columns: they read as zero, SessMedian as nil.
func TestCheckpointFixtureV1(t *testing.T) {
	for _, c := range loadFixture(t, 1) {
		for _, s := range c.Series {
			if a := s.Agg; a.UnitSessions != 0 || a.ErrSessions != 0 || a.SessRequests != 0 || a.SessReqErrors != 0 || a.SessMedian != nil {
				t.Fatalf("%s %s: session units %d/%d/%d/%d median %v in a version 1 table; want zero and nil",
					s.Version, s.Segment, a.UnitSessions, a.ErrSessions, a.SessRequests, a.SessReqErrors, a.SessMedian)
			}
		}
	}
}

// TestCheckpointFixtureV2 loads the checkpoint of format version 2 (table
// version 2: session units) kept under testdata.
func TestCheckpointFixtureV2(t *testing.T) {
	var sum [5]uint64 // unit sessions, error sessions, requests, request errors, medians
	var withMedian, withoutMedian int
	for _, c := range loadFixture(t, 2) {
		for _, s := range c.Series {
			a := s.Agg
			var medians uint64
			if a.SessMedian != nil {
				medians = uint64(a.SessMedian.GetCount() + 0.5)
				withMedian++
			} else {
				withoutMedian++
			}
			for i, v := range [...]uint64{a.UnitSessions, a.ErrSessions, a.SessRequests, a.SessReqErrors, medians} {
				sum[i] += v
			}
		}
	}
	if want := [5]uint64{62, 14, 285, 14, 48}; sum != want {
		t.Fatalf("fixture session units (sessions, error sessions, requests, request errors, medians) %v; want %v", sum, want)
	}
	if withMedian == 0 || withoutMedian == 0 {
		t.Fatalf("%d series with a session-median sketch, %d without; want both", withMedian, withoutMedian)
	}
}

// TestEnvelopeVersions: envelopes of every version from the oldest on are
// read, others are corrupt.
func TestEnvelopeVersions(t *testing.T) {
	raw := EncodeCheckpoint(Checkpoint{Next: 3, Commit: 2, Replay: 1})
	for v := uint16(0); v <= CheckpointVersion+1; v++ {
		binary.LittleEndian.PutUint16(raw[4:], v)
		_, err := DecodeCheckpoint(raw)
		if ok := v >= oldestCheckpointVersion && v <= CheckpointVersion; ok != (err == nil) || err != nil && !errors.Is(err, ErrCorrupt) {
			t.Fatalf("envelope version %d: %v; want ok %v (or ErrCorrupt)", v, err, ok)
		}
	}
}

// fixturePartition restores the partition of the checkpoint fixture of a
// format version.
func fixturePartition(t *testing.T, version int) *Partition {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", fmt.Sprintf("checkpoint.v%d.bin", version)))
	if err != nil {
		t.Fatal(err)
	}
	ck, err := DecodeCheckpoint(raw)
	if err != nil {
		t.Fatal(err)
	}
	p, err := RestorePartition(0, Options{}, ck.Snapshot)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestCheckpointFixtureV3 loads the checkpoint of format version 3 (the
// watermark quorum and the arrival lags) kept under testdata.
func TestCheckpointFixtureV3(t *testing.T) {
	loadFixture(t, 3)
	p := fixturePartition(t, 3)
	t0 := time.Unix(1_700_000_000, 0)
	var ts []int64
	for _, e := range randomEvents(11, 200, t0) {
		ts = append(ts, e.TS)
	}
	slices.Sort(ts)
	if want := ts[len(ts)-3:]; !slices.Equal(p.quorum, want) {
		t.Fatalf("quorum %v; want the 3 newest event times %v", p.quorum, want)
	}
	if want := p.quorum[0] - int64(5*time.Second); p.watermark != want {
		t.Fatalf("watermark %d; want the quorum's %d", p.watermark, want)
	}
	if p.nLags != 1 || p.lags[0] <= 0 {
		t.Fatalf("lags %v (%d); want the one batch's", p.lags, p.nLags)
	}
}

// fixtureSessionID is the session id of event i of the fixtures from
// version 4 on.
func fixtureSessionID(i int) []byte { return fmt.Appendf(nil, "s%d", i%23) }

// TestCheckpointFixtureV4 loads the checkpoint of format version 4 (the
// session memory and the new_sessions column) kept under testdata: each
// (rollout, session id) is counted once, and restored, the partition still
// knows them all — an event of one of them counts no new session.
func TestCheckpointFixtureV4(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	want := map[string]bool{}
	evs := randomEvents(11, 200, t0)
	for i, e := range evs {
		want[string(e.Rollout)+"/"+string(fixtureSessionID(i))] = true
	}
	var n uint64
	for _, c := range loadFixture(t, 4) {
		for _, s := range c.Series {
			n += s.Agg.NewSessions
		}
	}
	// The flushed windows hold every event but one window's worth closed
	// before the snapshot: count the sessions of the whole fixture from
	// the partition's memory instead, and those still in open windows.
	p := fixturePartition(t, 4)
	if p.nSessions != len(want) || p.blindBefore != 0 {
		t.Fatalf("restored %d session ids (blind before %d); want %d (and not blind)", p.nSessions, p.blindBefore, len(want))
	}
	if n == 0 || n > uint64(len(want)) {
		t.Fatalf("%d new sessions in the fixture's open windows; want 1..%d", n, len(want))
	}
	var got []Closed
	p.opts.Emit = func(c Closed) { got = append(got, c) }
	e := evs[len(evs)-1]
	e.SessionID = fixtureSessionID(len(evs) - 1)
	if err := p.Add(e, 400); err != nil {
		t.Fatal(err)
	}
	p.Flush()
	var again uint64
	for _, c := range got {
		for _, s := range c.Series {
			again += s.Agg.NewSessions
		}
	}
	if again != n {
		t.Fatalf("an event of a known session made %d new sessions of %d; want none", again-n, n)
	}
}

// TestOldCheckpointIsBlindToSessions: a checkpoint without session memory
// (version 3) restores blind for SessionTimeout past its watermark: the
// sessions in flight were counted before it, so a session first seen then is
// remembered but not counted; after it, sessions count again.
func TestOldCheckpointIsBlindToSessions(t *testing.T) {
	p := fixturePartition(t, 3)
	if want := p.watermark + int64(10*time.Minute); p.blindBefore != want {
		t.Fatalf("blind before %d; want the watermark + 10m, %d", p.blindBefore, want)
	}
	var got []Closed
	p.opts.Emit = func(c Closed) { got = append(got, c) }
	at := time.Unix(0, p.maxTS)
	for i, d := range []time.Duration{time.Second, 11 * time.Minute, 11*time.Minute + time.Second} {
		e := ev("r0", "v0", schemas.KindTool, "x", at.Add(d), 1, false)
		e.SessionID = []byte([]string{"old", "new", "old"}[i])
		if err := p.Add(e, int64(400+i)); err != nil {
			t.Fatal(err)
		}
	}
	p.Flush()
	var n uint64
	for _, c := range got {
		for _, s := range c.Series {
			n += s.Agg.NewSessions
		}
	}
	if n != 1 {
		t.Fatalf("%d new sessions; want 1 (the session first seen after the blind period)", n)
	}
}

// TestOldCheckpointKeepsItsWatermark: a checkpoint older than the quorum
// (version 2) restores it as its newest event time in every slot — the
// watermark it followed — so the watermark neither jumps nor stalls.
func TestOldCheckpointKeepsItsWatermark(t *testing.T) {
	p := fixturePartition(t, 2)
	for _, q := range p.quorum {
		if q != p.maxTS || q == 0 {
			t.Fatalf("quorum %v of a version 2 checkpoint; want max_ts %d in every slot", p.quorum, p.maxTS)
		}
	}
	if p.nLags != 0 {
		t.Fatalf("%d lags in a version 2 checkpoint", p.nLags)
	}
	// One event newer than any: the watermark follows the checkpoint's
	// newest event time, as a version 2 canaryd's did, not the new event's.
	maxTS := p.maxTS
	if err := p.Add(ev("r0", "v0", schemas.KindTool, "x", time.Unix(0, maxTS+int64(time.Second)), 1, false), 400); err != nil {
		t.Fatal(err)
	}
	if want := maxTS - int64(5*time.Second); p.watermark != want {
		t.Fatalf("watermark %d after one event; want the checkpoint's newest event time minus Lateness, %d", p.watermark, want)
	}
}
