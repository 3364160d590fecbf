package window

import (
	"fmt"
	"testing"
	"time"

	"github.com/inferensys/canaryd/schemas"
)

// TestNewSessions: a session id is counted once per rollout, in the window
// and on the series of its first event, whatever segments its later events
// are in; again only after SessionTimeout without events; never for an
// evaluation; and when MaxSessions ids are remembered, the older half is
// forgotten to make room.
func TestNewSessions(t *testing.T) {
	var got []Closed
	p := NewPartition(0, Options{Quorum: 1, SessionTimeout: time.Minute, MaxSessions: 4, Emit: func(c Closed) { got = append(got, c) }})
	t0 := time.Unix(1_700_000_000, 0)
	add := func(rollout, version string, kind schemas.Kind, sid string, at time.Duration) {
		t.Helper()
		e := ev(rollout, version, kind, "x", t0.Add(at), 1, false)
		e.SessionID = []byte(sid)
		if err := p.Add(e, 0); err != nil {
			t.Fatal(err)
		}
		p.Advance()
	}
	add("r", "v1", schemas.KindLLM, "a", 0)              // new, window 0
	add("r", "v1", schemas.KindTool, "a", 3*time.Second) // seen
	add("r", "v2", schemas.KindLLM, "b", 12*time.Second) // new, window 10 s
	add("r", "v1", schemas.KindAgent, "a", 14*time.Second)
	add("r", "v1", schemas.KindEval, "c", 15*time.Second) // evaluations do not count
	add("q", "v1", schemas.KindLLM, "a", 16*time.Second)  // another rollout's "a": new
	add("r", "v1", schemas.KindLLM, "d", 17*time.Second)  // new: 4 ids remembered now
	add("r", "v1", schemas.KindLLM, "e", 18*time.Second)  // memory full: the older half (b at 12 s, a at 14 s) forgotten, e new
	add("r", "v1", schemas.KindLLM, "a", 85*time.Second)  // new again: forgotten to make room
	// The watermark is 80 s now: b, last seen at 12 s, is forgotten.
	add("r", "v2", schemas.KindLLM, "b", 90*time.Second) // new again
	p.Flush()
	count := map[string]uint64{}
	for _, c := range got {
		for _, s := range c.Series {
			if s.Agg.NewSessions > 0 {
				count[c.Rollout+" "+time.Duration(c.Start-t0.UnixNano()).String()+" "+s.Version+" "+s.Segment.String()] += s.Agg.NewSessions
			}
		}
	}
	want := map[string]uint64{"r 0s v1 llm/x": 1, "r 10s v2 llm/x": 1, "q 10s v1 llm/x": 1, "r 10s v1 llm/x": 2, "r 1m20s v1 llm/x": 1, "r 1m30s v2 llm/x": 1}
	if len(count) != len(want) {
		t.Fatalf("new sessions %v; want %v", count, want)
	}
	for k, v := range want {
		if count[k] != v {
			t.Fatalf("new sessions %v; want %v", count, want)
		}
	}
	if p.SessionsUntracked() != 0 {
		t.Fatalf("%d sessions untracked; want 0 (a full memory forgets its older half)", p.SessionsUntracked())
	}
}

// TestFullSessionMemorySweepsRarely: with the session memory full and every
// event a new session (the end-to-end tests' traffic: a session id per
// request), the memory is swept at most once a second of event time, not
// once per event (which scanned MaxSessions ids per event and made canaryd
// fall behind its input: late events dropped in the Argo scenario).
func TestFullSessionMemorySweepsRarely(t *testing.T) {
	p := NewPartition(0, Options{Quorum: 1, SessionTimeout: time.Minute, MaxSessions: 100, Emit: func(Closed) {}})
	t0 := time.Unix(1_700_000_000, 0)
	const n = 20_000 // one a millisecond: 20 s of event time
	for i := range n {
		e := ev("r", "v1", schemas.KindLLM, "x", t0.Add(time.Duration(i)*time.Millisecond), 1, false)
		e.SessionID = []byte(fmt.Sprint("s", i))
		if err := p.Add(e, 0); err != nil {
			t.Fatal(err)
		}
	}
	if p.sweeps > 21 {
		t.Fatalf("%d sweeps of the full session memory over 20 s of event time; want at most one a second", p.sweeps)
	}
	// Each forced sweep forgets the older half (50 ids): new sessions go
	// on being counted, at least 50 a second here, rather than none until
	// ids time out (which starved the SRM check of a busy rollout).
	if u := p.SessionsUntracked(); u > n-20*50 {
		t.Errorf("%d of %d sessions untracked; want at most %d", u, n, n-20*50)
	}
}
