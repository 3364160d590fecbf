package detector

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/inferensys/canaryd/schemas"
	"github.com/inferensys/canaryd/window"
)

// agentWindows returns closed windows of a stream that exercises every test:
// tool and llm requests with error types and latencies, agent sessions with
// tool sequences, outcomes and scores, eval events, incidents.
func agentWindows(seed uint64, n int, worse float64) []window.Closed {
	rng := rand.New(rand.NewPCG(seed, 2))
	var out []window.Closed
	p := window.NewPartition(0, window.Options{Width: 10 * time.Second, Lateness: time.Second, Source: "t",
		Emit: func(c window.Closed) { out = append(out, c) }})
	t0 := time.Unix(1_700_000_000, 0)
	tools := []string{"search", "fetch", "calc"}
	errTypes := []string{"timeout", "rate_limit", "tool_error"}
	for i := range n {
		ts := t0.Add(time.Duration(i) * 40 * time.Millisecond)
		p.SetNow(ts)
		v, f := "v1", 1.0
		if rng.IntN(10) < 3 {
			v, f = "v2", worse
		}
		var e schemas.Event
		e.Rollout, e.Version, e.TS = []byte("r"), []byte(v), ts.UnixNano()
		switch x := rng.IntN(20); {
		case x < 10:
			e.Kind, e.Name = schemas.KindTool, []byte(tools[rng.IntN(3)])
			e.HasDuration, e.DurationMS = true, 100*f*math.Exp(0.5*rng.NormFloat64())
			if rng.Float64() < 0.02*f {
				e.Error, e.ErrorType = true, []byte(errTypes[rng.IntN(3)])
			}
		case x < 16:
			e.Kind, e.Name = schemas.KindLLM, []byte("gpt")
			e.HasDuration, e.DurationMS = true, 800*math.Exp(0.4*rng.NormFloat64())
			e.InputTokens, e.OutputTokens = int64(1000*f*rng.Float64()), int64(200*rng.Float64())
			e.HasCost, e.CostUSD = true, 0.001*f*rng.Float64()
			e.ContextTokens, e.ContextLimit = int64(60000*f*rng.Float64()), 128000
		case x < 18:
			e.Kind, e.Name = schemas.KindAgent, []byte("support")
			for range 1 + rng.IntN(4) {
				e.ToolCalls = append(e.ToolCalls, []byte(tools[rng.IntN(3)]))
			}
			e.HasOutcome, e.HasOutcomeSuccess, e.OutcomeSuccess = true, true, rng.Float64() > 0.1*f
			e.HasHallucination, e.OutcomeHallucinated = true, rng.Float64() < 0.05*f
			e.Requests = uint32(2*len(e.ToolCalls) + 1)
			if !e.OutcomeSuccess {
				e.RequestErrors = 1
			}
			e.HasRequestMedian, e.RequestMedianMS = true, 500*f*math.Exp(0.3*rng.NormFloat64())
		case x < 19:
			e.Kind, e.Name = schemas.KindEval, []byte("judge")
			e.HasOutcome, e.HasOutcomeScore, e.OutcomeScore = true, true, min(1, rng.Float64()/f)
		default:
			e.Kind, e.Name = schemas.KindOther, []byte("crash")
		}
		_ = p.Add(&e, int64(i))
		p.Advance()
	}
	p.Flush()
	return out
}

func stateSpec() Spec {
	s := testSpec()
	s.Metrics.Incidents.Names = []string{"crash"}
	// The stream sends 30% to the canary throughout.
	s.Steps = []Step{{Weight: 30, MinDuration: Duration(20 * time.Minute), MinCanaryEvents: 200}, {Weight: 100}}
	if err := s.validate(nilNode()); err != nil {
		panic(err)
	}
	return s
}

// decisions feeds windows to j and returns each Decide's verdict and command
// as JSON, one line per window.
func decisions(t *testing.T, j *Judge, ws []window.Closed) []string {
	t.Helper()
	var out []string
	for _, c := range ws {
		if !j.Observe(c) {
			out = append(out, "replayed")
			continue
		}
		v, cmd := j.Decide(c.Watermark)
		// Every test's evidence (e-values, bounds, counts), not only the
		// verdict's: a state field lost in a restore shows up here.
		b, err := json.Marshal(struct {
			V Verdict
			C *schemas.Command
			T []TestEvidence
			S Status
		}{v, cmd, j.tests(), j.Status()})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, string(b))
	}
	return out
}

// TestJudgeStateRoundTrip stops a judge at several points, restores its
// state into a new judge, and checks that every later verdict and command is
// the one an uninterrupted judge gives.
func TestJudgeStateRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		units string
		worse float64
	}{{UnitsRequests, 1}, {UnitsRequests, 1.15}, {UnitsSessions, 1}, {UnitsSessions, 1.15}} {
		worse := tc.worse
		spec := stateSpec()
		spec.Units = tc.units
		t.Run(fmt.Sprint(tc.units, "/worse=", worse), func(t *testing.T) {
			ws := agentWindows(3, 120_000, worse)
			want := decisions(t, NewJudge(spec), ws)
			var got []string
			j := NewJudge(spec)
			for from, cut := 0, 0; from < len(ws); from = cut {
				cut = min(len(ws), from+1+len(ws)/5)
				got = append(got, decisions(t, j, ws[from:cut])...)
				b, err := j.MarshalState()
				if err != nil {
					t.Fatal(err)
				}
				j = NewJudge(spec)
				if err := j.UnmarshalState(b); err != nil {
					t.Fatal(err)
				}
			}
			if len(got) != len(want) {
				t.Fatalf("%d decisions; want %d", len(got), len(want))
			}
			for i := range want {
				if got[i] != want[i] {
					t.Fatalf("window %d after restores:\n got %s\nwant %s", i, got[i], want[i])
				}
			}
			if worse > 1 && j.Final() != schemas.ActionRollback {
				t.Fatalf("final %q; want rollback for a canary %.2f× worse", j.Final(), worse)
			}
			t.Logf("%d windows, final %q", len(ws), j.Final())
		})
	}
}

// TestReplayedWindowsIgnored: windows observed again (a replay from older
// offsets) change nothing.
func TestReplayedWindowsIgnored(t *testing.T) {
	ws := agentWindows(5, 30_000, 1)
	a, b := NewJudge(stateSpec()), NewJudge(stateSpec())
	decisions(t, a, ws)
	decisions(t, b, ws[:20])
	if got := decisions(t, b, ws[10:20]); got[0] != "replayed" || got[9] != "replayed" {
		t.Fatalf("replayed windows observed: %v", got)
	}
	decisions(t, b, ws[20:])
	sa, _ := a.MarshalState()
	sb, _ := b.MarshalState()
	ja, jb := NewJudge(stateSpec()), NewJudge(stateSpec())
	_ = ja.UnmarshalState(sa)
	_ = jb.UnmarshalState(sb)
	if x, y := mustJSON(t, ja.Status()), mustJSON(t, jb.Status()); x != y {
		t.Fatalf("status after a replay differs:\n%s\n%s", y, x)
	}
}

func TestStateOfAnotherSpecRefused(t *testing.T) {
	j := NewJudge(stateSpec())
	decisions(t, j, agentWindows(1, 5000, 1))
	b, err := j.MarshalState()
	if err != nil {
		t.Fatal(err)
	}
	s := stateSpec()
	s.Alpha = 0.01
	if err := NewJudge(s).UnmarshalState(b); !errors.Is(err, ErrStateMismatch) {
		t.Fatalf("state restored into another spec: %v; want ErrStateMismatch", err)
	}
	if err := NewJudge(stateSpec()).UnmarshalState(b[:len(b)/2]); err == nil {
		t.Fatal("truncated state restored")
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestTotalsKeepNamesAcrossRenumbering: the same windows with their
// partition's error-type and bigram ids numbered differently (as a partition
// rebuilt after a replay or a move numbers them) give the same totals.
func TestTotalsKeepNamesAcrossRenumbering(t *testing.T) {
	ws := agentWindows(9, 20_000, 1.3)
	renum := make([]window.Closed, len(ws))
	for i, c := range ws {
		if i < len(ws)/2 {
			renum[i] = c // the second half is numbered anew, as after a rebuild
			continue
		}
		// Reverse ids 1..n-1 (0 stays "_other").
		perm := func(names []string) ([]string, func([]uint64) []uint64) {
			n := len(names)
			out := slices.Clone(names)
			for k := 1; k < n; k++ {
				out[k] = names[n-k]
			}
			return out, func(cs []uint64) []uint64 {
				if len(cs) == 0 {
					return nil
				}
				r := make([]uint64, n)
				for k, v := range cs {
					if k == 0 {
						r[0] += v
					} else {
						r[n-k] += v
					}
				}
				return r
			}
		}
		et, pe := perm(c.ErrorTypes)
		bg, pb := perm(c.Bigrams)
		d := c
		d.ErrorTypes, d.Bigrams, d.Series = et, bg, nil
		for _, s := range c.Series {
			a := *s.Agg
			a.ErrorTypes, a.Bigrams = pe(s.Agg.ErrorTypes), pb(s.Agg.Bigrams)
			d.Series = append(d.Series, window.Series{Version: s.Version, Segment: s.Segment, Agg: &a})
		}
		renum[i] = d
	}
	a, b := NewJudge(stateSpec()), NewJudge(stateSpec())
	decisions(t, a, ws)
	decisions(t, b, renum)
	// Digests differ (each judge numbers names as it first sees them);
	// the totals by name must not.
	if x, y := mustJSON(t, a.Status().Totals), mustJSON(t, b.Status().Totals); x != y {
		t.Fatalf("totals differ after renumbering:\n%s\n%s", x, y)
	}
	if !strings.Contains(mustJSON(t, a.Status().Totals), "rate_limit") {
		t.Fatal("no error type in the totals: the test compares nothing")
	}
}

// TestAlphaWeights: a spec's alpha_weights move alpha between tests and
// keep the sum at the rollout's alpha.
func TestAlphaWeights(t *testing.T) {
	s := stateSpec()
	def := NewJudge(s)
	s.AlphaWeights = map[string]float64{"error_rate": 100}
	heavy := NewJudge(s)
	sum := func(j *Judge) float64 {
		t := 0.0
		for _, n := range j.enabledRollback() {
			t += j.alphaFor(n)
		}
		return t
	}
	if a, b := def.alphaFor("error_rate"), heavy.alphaFor("error_rate"); !(b > 2*a) {
		t.Fatalf("error_rate alpha %g with weight 100; default %g", b, a)
	}
	for _, j := range []*Judge{def, heavy} {
		if got := sum(j); math.Abs(got-s.Alpha) > 1e-12 {
			t.Fatalf("alpha shares sum to %g; want %g", got, s.Alpha)
		}
	}
}

// TestStatusCarriesEvidence: the HTTP API's status shows each test's
// evidence of the latest verdict, not only its reason.
func TestStatusCarriesEvidence(t *testing.T) {
	j := NewJudge(stateSpec())
	decisions(t, j, agentWindows(2, 20_000, 1))
	st := j.Status()
	if len(st.Verdict.Tests) == 0 {
		t.Fatalf("status verdict %q without test evidence", st.Verdict.Reason)
	}
}
