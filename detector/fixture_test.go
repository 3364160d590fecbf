package detector

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/inferensys/canaryd/window"
)

// fixtureSpec is the spec of the judge-state fixtures: one judged step at
// 20% (5 minutes, 200 canary requests), then promotion.
func fixtureSpec() Spec {
	s := Spec{Rollout: "r", Baseline: "v1", Canary: "v2",
		Steps: []Step{{Weight: 20, MinDuration: Duration(5 * time.Minute), MinCanaryEvents: 200}, {Weight: 100}}}
	if err := s.validate(nilNode()); err != nil {
		panic(err)
	}
	return s
}

// fixtureWindows are the windows of the judge-state fixtures: 10-second
// windows from a fixed seed, 20% of 2500 requests per window to the canary,
// which is as good as the baseline. The judge starts its step at the first,
// passes it (promotes) after 5 minutes.
func fixtureWindows() []window.Closed {
	rng := rand.New(rand.NewPCG(17, 1))
	start := time.Unix(1_700_000_000, 0)
	ws := make([]window.Closed, 60)
	for i := range ws {
		ws[i] = simWindow(rng, start.Add(time.Duration(i)*10*time.Second), 10*time.Second,
			arm{version: "v1", perWindow: 2000, errRate: 0.05, latMedian: 100, latSigma: 0.5},
			arm{version: "v2", perWindow: 500, errRate: 0.05, latMedian: 100, latSigma: 0.5})
		ws[i].Source = "t"
		// Closed by a partition whose wall clock is 2 s past the window's
		// end: wall time does not bind (a version 1 judge had none).
		ws[i].Wall = ws[i].End + int64(2*time.Second)
	}
	return ws
}

// fixtureCut is how many of fixtureWindows the fixtures' judge observed.
const fixtureCut = 20

// TestJudgeStateFixtures restores the state a judge of every state version
// (testdata/judge-state.v<N>.bin) wrote after fixtureCut windows, and checks
// that it then decides the remaining windows exactly as a judge that never
// stopped. CANARYD_WRITE_FIXTURE=1 writes the fixture of StateVersion first,
// and only that one: a released version's fixture stays as it was written.
func TestJudgeStateFixtures(t *testing.T) {
	ws := fixtureWindows()
	want := decisions(t, NewJudge(fixtureSpec()), ws)
	for v := 1; v <= StateVersion; v++ {
		t.Run(fmt.Sprint("v", v), func(t *testing.T) {
			path := filepath.Join("testdata", fmt.Sprintf("judge-state.v%d.bin", v))
			if v == StateVersion && os.Getenv("CANARYD_WRITE_FIXTURE") != "" {
				j := NewJudge(fixtureSpec())
				decisions(t, j, ws[:fixtureCut])
				b, err := j.MarshalState()
				if err != nil {
					t.Fatal(err)
				}
				if err := os.MkdirAll("testdata", 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, b, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			raw, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			j := NewJudge(fixtureSpec())
			if err := j.UnmarshalState(raw); err != nil {
				t.Fatalf("state of version %d: %v", v, err)
			}
			if st := j.Status(); st.Windows != fixtureCut || st.Step != 0 {
				t.Fatalf("restored %d windows at step %d; want %d at step 0", st.Windows, st.Step, fixtureCut)
			}
			if hasWall := j.wall != 0 && j.stepWall != 0; hasWall != (v >= 2) {
				t.Fatalf("version %d state restored wall clocks %d (step start %d)", v, j.wall, j.stepWall)
			}
			got := decisions(t, j, ws[fixtureCut:])
			if v < 3 {
				// States before version 3 hold no per-segment tests
				// (segments.go): those start afresh at the restore, a
				// valid e-process whose values differ from an
				// uninterrupted judge's. The outcome is checked below.
				got = nil
			}
			for i, g := range got {
				w := want[fixtureCut+i]
				if v < 4 {
					// States before version 4 hold no per-segment totals:
					// the status's segments count from the restore.
					g, w = withoutSegments(t, g), withoutSegments(t, w)
				}
				if g != w {
					t.Fatalf("window %d after restoring a version %d state:\n got %s\nwant %s", fixtureCut+i, v, g, want[fixtureCut+i])
				}
			}
			if j.Final() != "promote" {
				t.Fatalf("final %q; want promote (the test would compare nothing that matters)", j.Final())
			}
		})
	}
}

// withoutSegments returns a decision of decisions() without its status's
// segments.
func withoutSegments(t *testing.T, d string) string {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal([]byte(d), &m); err != nil {
		return d // "replayed"
	}
	var st map[string]json.RawMessage
	if err := json.Unmarshal(m["S"], &st); err != nil {
		t.Fatal(err)
	}
	delete(st, "segments")
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	m["S"] = b
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}
