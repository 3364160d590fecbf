package loadtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"math"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/inferensys/canaryd/schemas"
)

// wireEvent is an agent event v1 as encoding/json sees it, for checking the
// records independently of schemas' decoder.
type wireEvent struct {
	Rollout       string   `json:"rollout"`
	Version       string   `json:"version"`
	Kind          string   `json:"kind"`
	Name          string   `json:"name"`
	TS            *int64   `json:"ts"`
	DurationMS    *float64 `json:"duration_ms"`
	Status        string   `json:"status"`
	ErrorType     string   `json:"error_type"`
	InputTokens   int64    `json:"input_tokens"`
	OutputTokens  int64    `json:"output_tokens"`
	CostUSD       *float64 `json:"cost_usd"`
	ContextTokens int64    `json:"context_tokens"`
	ContextLimit  int64    `json:"context_limit"`
	TraceID       string   `json:"trace_id"`
	SpanID        string   `json:"span_id"`
	ParentSpanID  string   `json:"parent_span_id"`
	SessionID     string   `json:"session_id"`
	DeploymentID  string   `json:"deployment_id"`
	Commit        string   `json:"commit"`
	ToolCalls     []string `json:"tool_calls"`
	Requests      int64    `json:"requests"`
	RequestErrors int64    `json:"request_errors"`
	RequestMedian *float64 `json:"request_median_ms"`
	Outcome       *struct {
		Success       *bool    `json:"success"`
		Score         *float64 `json:"score"`
		Hallucination *bool    `json:"hallucination"`
	} `json:"outcome"`
}

func decodeWire(t testing.TB, rec []byte) wireEvent {
	t.Helper()
	var ev wireEvent
	d := json.NewDecoder(bytes.NewReader(rec))
	d.DisallowUnknownFields()
	if err := d.Decode(&ev); err != nil {
		t.Fatalf("decode %s: %v", rec, err)
	}
	return ev
}

func testRollout(name string, weight int) Rollout {
	return Rollout{
		Name:            name,
		Baseline:        "v1",
		Canary:          "v2",
		BaselineProfile: DefaultProfile(),
		CanaryProfile:   DefaultProfile(),
		InitialWeight:   weight,
		Rate:            50,
	}
}

func TestDefaultProfileValid(t *testing.T) {
	p := DefaultProfile()
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	r := testRollout("support-agent", 0)
	if err := r.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestValidateErrors(t *testing.T) {
	for name, f := range map[string]func(r *Rollout){
		"no name":        func(r *Rollout) { r.Name = "" },
		"same versions":  func(r *Rollout) { r.Canary = r.Baseline },
		"weight":         func(r *Rollout) { r.InitialWeight = 101 },
		"rate":           func(r *Rollout) { r.Rate = -1 },
		"no tools":       func(r *Rollout) { r.CanaryProfile.Tools = nil },
		"error rate":     func(r *Rollout) { r.BaselineProfile.LLM.ErrorRate = 1.5 },
		"median":         func(r *Rollout) { r.BaselineProfile.Tools[0].LatencyMedianMS = 0 },
		"steps":          func(r *Rollout) { r.BaselineProfile.MinSteps = 5 },
		"dup tool":       func(r *Rollout) { r.BaselineProfile.Tools[1].Name = r.BaselineProfile.Tools[0].Name },
		"no model":       func(r *Rollout) { r.CanaryProfile.LLM.Model = "" },
		"multiplier":     func(r *Rollout) { r.CanaryProfile.ErrorRateMult = -1 },
		"error type":     func(r *Rollout) { r.CanaryProfile.ToolErrorTypes[0].Name = "" },
		"task success":   func(r *Rollout) { r.CanaryProfile.TaskSuccess = 2 },
		"long version":   func(r *Rollout) { r.Canary = strings.Repeat("x", 513) },
		"zero weights":   func(r *Rollout) { r.CanaryProfile.LLMErrorTypes = []ErrorType{{Name: "x"}} },
		"negative sigma": func(r *Rollout) { r.CanaryProfile.LLM.LatencySigma = -0.1 },
	} {
		t.Run(name, func(t *testing.T) {
			r := testRollout("a", 0)
			f(&r)
			if err := r.Validate(); !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("got %v; want ErrInvalidConfig", err)
			}
		})
	}

	ok := []Rollout{testRollout("a", 0)}
	for name, cfg := range map[string]FleetConfig{
		"no brokers":   {Rollouts: ok},
		"no rollouts":  {Brokers: []string{"x:9092"}},
		"dup rollouts": {Brokers: []string{"x:9092"}, Rollouts: []Rollout{ok[0], ok[0]}},
		"same topics":  {Brokers: []string{"x:9092"}, Rollouts: ok, EventsTopic: "t", ControlTopic: "t"},
		"speed":        {Brokers: []string{"x:9092"}, Rollouts: ok, Speed: -1},
		"max events":   {Brokers: []string{"x:9092"}, Rollouts: ok, MaxEvents: -1},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := NewFleet(cfg); !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("got %v; want ErrInvalidConfig", err)
			}
		})
	}
}

func TestGeneratorDeterministic(t *testing.T) {
	rs := []Rollout{testRollout("a", 30), testRollout("b", 70)}
	g1, g2, g3 := NewGenerator(7, rs), NewGenerator(7, rs), NewGenerator(8, rs)
	recs := NewGenerator(7, rs).Records(5000)
	differ := false
	var b1, b2, b3 []byte
	for i := range 5000 {
		k1, r1 := g1.NextKeyed(b1[:0])
		b1 = r1
		b2 = g2.Next(b2[:0])
		b3 = g3.Next(b3[:0])
		if !bytes.Equal(b1, b2) {
			t.Fatalf("record %d differs for the same seed:\n%s\n%s", i, b1, b2)
		}
		if !bytes.Equal(b1, recs[i]) {
			t.Fatalf("Records()[%d] = %s; want %s", i, recs[i], b1)
		}
		if ev := decodeWire(t, b1); ev.Rollout != string(k1) {
			t.Fatalf("key %q for rollout %q", k1, ev.Rollout)
		}
		differ = differ || !bytes.Equal(b1, b3)
	}
	if !differ {
		t.Fatal("seeds 7 and 8 gave the same records")
	}
	if g1.Now() != g2.Now() || !g1.Now().After(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)) {
		t.Fatalf("Now %v, %v", g1.Now(), g2.Now())
	}
}

func TestGeneratorSetWeight(t *testing.T) {
	g := NewGenerator(2, []Rollout{testRollout("a", 0)})
	if g.SetWeight("nope", 50) {
		t.Fatal("SetWeight of an unknown rollout reported true")
	}
	var buf []byte
	for range 2000 {
		if buf = g.Next(buf[:0]); decodeWire(t, buf).Version != "v1" {
			t.Fatalf("canary event at weight 0: %s", buf)
		}
	}
	if !g.SetWeight("a", 100) {
		t.Fatal("SetWeight of a known rollout reported false")
	}
	// Sessions that started before the change end as baseline; every
	// session that starts after it is canary.
	started := map[string]string{}
	for range 5000 {
		ev := decodeWire(t, g.Next(buf[:0]))
		if v, ok := started[ev.SessionID]; ok && v != ev.Version {
			t.Fatalf("session %s changed version", ev.SessionID)
		}
		started[ev.SessionID] = ev.Version
	}
	canary := 0
	for _, v := range started {
		if v == "v2" {
			canary++
		}
	}
	if canary < len(started)*3/4 {
		t.Fatalf("%d of %d sessions canary after SetWeight 100", canary, len(started))
	}
}

func TestGeneratorAllocs(t *testing.T) {
	g := NewGenerator(1, []Rollout{testRollout("a", 50)})
	buf := make([]byte, 0, 4096)
	for range 10_000 {
		buf = g.Next(buf[:0])
	}
	if n := testing.AllocsPerRun(10_000, func() { buf = g.Next(buf[:0]) }); n > 0.01 {
		t.Fatalf("Next allocates %v per event; want 0", n)
	}
}

// TestGeneratorRecords checks every record against encoding/json and
// schemas.Decoder, and the structure of each session.
func TestGeneratorRecords(t *testing.T) {
	rs := []Rollout{testRollout("a", 50), testRollout("b", 20)}
	rs[1].DeploymentID, rs[1].Commit = "dep-42", "abc123"
	g := NewGenerator(3, rs)

	type sess struct {
		rollout, version, trace, root string
		tools                         []string
		in, out                       int64
		cost                          float64
		requests, errors              int
		durs                          []float64
		start, end                    int64
	}
	open := map[string]*sess{}
	counts := map[string]map[string]Counts{"a": {}, "b": {}}
	var dec schemas.Decoder
	var sev schemas.Event
	var lastTS int64
	var buf []byte
	for i := range 30_000 {
		buf = g.Next(buf[:0])
		if err := dec.Decode(buf, &sev); err != nil {
			t.Fatalf("record %d: schemas decode: %v\n%s", i, err, buf)
		}
		ev := decodeWire(t, buf)
		if ev.TS == nil || ev.DurationMS == nil || ev.Rollout == "" || ev.Version == "" || ev.Name == "" ||
			ev.TraceID == "" || ev.SpanID == "" || ev.SessionID == "" || (ev.Status != "ok" && ev.Status != "error") {
			t.Fatalf("record %d lacks a required field: %s", i, buf)
		}
		if len(ev.TraceID) != 32 || len(ev.SpanID) != 16 {
			t.Fatalf("record %d: trace %q span %q", i, ev.TraceID, ev.SpanID)
		}
		if *ev.TS < lastTS {
			t.Fatalf("record %d: ts %d before %d", i, *ev.TS, lastTS)
		}
		lastTS = *ev.TS
		if (ev.Status == "error") != (ev.ErrorType != "") {
			t.Fatalf("record %d: status %q error_type %q", i, ev.Status, ev.ErrorType)
		}
		canary := ev.Version == "v2"
		if want := canary && ev.Rollout == "b"; (ev.DeploymentID == "dep-42" && ev.Commit == "abc123") != want {
			t.Fatalf("record %d: deployment %q commit %q", i, ev.DeploymentID, ev.Commit)
		}
		c := counts[ev.Rollout][ev.Version]
		c.Events++
		s := open[ev.SessionID]
		switch ev.Kind {
		case "llm", "tool":
			c.Requests++
			if ev.Status == "error" {
				c.Errors++
			}
			if s == nil {
				s = &sess{rollout: ev.Rollout, version: ev.Version, trace: ev.TraceID, root: ev.ParentSpanID,
					start: *ev.TS - int64(math.Round(*ev.DurationMS*1e6))}
				open[ev.SessionID] = s
			}
			if s.trace != ev.TraceID || s.root != ev.ParentSpanID || s.version != ev.Version || s.rollout != ev.Rollout {
				t.Fatalf("record %d: session %s changed identity: %s", i, ev.SessionID, buf)
			}
			s.requests++
			if ev.Status == "error" {
				s.errors++
			}
			s.durs = append(s.durs, *ev.DurationMS)
			s.end = *ev.TS
			if ev.Requests != 0 || ev.RequestErrors != 0 || ev.RequestMedian != nil {
				t.Fatalf("record %d: request event with session totals: %s", i, buf)
			}
			if ev.Kind == "tool" {
				s.tools = append(s.tools, ev.Name)
				if ev.CostUSD != nil || ev.InputTokens != 0 {
					t.Fatalf("record %d: tool event with tokens: %s", i, buf)
				}
			} else {
				if ev.Name != "gpt-4o-mini" || ev.ContextLimit != 128_000 {
					t.Fatalf("record %d: llm event %s", i, buf)
				}
				if ev.Status == "ok" && (ev.InputTokens <= 0 || ev.OutputTokens <= 0 || ev.CostUSD == nil || ev.ContextTokens != ev.InputTokens) {
					t.Fatalf("record %d: llm event without usage: %s", i, buf)
				}
				s.in += ev.InputTokens
				s.out += ev.OutputTokens
				if ev.CostUSD != nil {
					s.cost += *ev.CostUSD
				}
			}
		case "agent":
			c.Sessions++
			if ev.Outcome == nil || ev.Outcome.Success == nil || ev.Outcome.Score == nil || ev.Outcome.Hallucination == nil {
				t.Fatalf("record %d: agent event without outcome: %s", i, buf)
			}
			if *ev.Outcome.Success {
				c.Successes++
			}
			if s == nil {
				t.Fatalf("record %d: agent event of an unknown session: %s", i, buf)
			}
			delete(open, ev.SessionID)
			if ev.SpanID != s.root || ev.ParentSpanID != "" || ev.TraceID != s.trace {
				t.Fatalf("record %d: agent span %q parent %q; want %q and none", i, ev.SpanID, ev.ParentSpanID, s.root)
			}
			if !slices.Equal(ev.ToolCalls, s.tools) {
				t.Fatalf("record %d: tool_calls %v; want %v", i, ev.ToolCalls, s.tools)
			}
			if s.requests != 2*len(s.tools)+1 || len(s.tools) < 1 || len(s.tools) > 4 {
				t.Fatalf("record %d: %d requests for %d tool calls", i, s.requests, len(s.tools))
			}
			if ev.InputTokens != s.in || ev.OutputTokens != s.out || math.Abs(*ev.CostUSD-s.cost) > 1e-8 {
				t.Fatalf("record %d: agent usage %d/%d/%v; want %d/%d/%v", i, ev.InputTokens, ev.OutputTokens, *ev.CostUSD, s.in, s.out, s.cost)
			}
			slices.Sort(s.durs)
			if med := s.durs[(len(s.durs)-1)/2]; ev.Requests != int64(s.requests) || ev.RequestErrors != int64(s.errors) ||
				ev.RequestMedian == nil || *ev.RequestMedian != med {
				t.Fatalf("record %d: agent %s; want requests %d, request_errors %d, request_median_ms %v (the lower middle of %v)",
					i, buf, s.requests, s.errors, med, s.durs)
			}
			if *ev.TS != s.end || math.Abs(*ev.DurationMS-float64(s.end-s.start)/1e6) > 1e-6 {
				t.Fatalf("record %d: agent ts %d duration %v; want %d and %v", i, *ev.TS, *ev.DurationMS, s.end, float64(s.end-s.start)/1e6)
			}
		default:
			t.Fatalf("record %d: kind %q", i, ev.Kind)
		}
		counts[ev.Rollout][ev.Version] = c
	}
	if got := g.Counts(); !mapsEqual(got, counts) {
		t.Fatalf("Counts() = %v; want %v", got, counts)
	}
}

func mapsEqual(a, b map[string]map[string]Counts) bool {
	if len(a) != len(b) {
		return false
	}
	for k, av := range a {
		bv, ok := b[k]
		if !ok || len(av) != len(bv) {
			return false
		}
		for v, c := range av {
			if bv[v] != c {
				return false
			}
		}
	}
	return true
}

// segmentStats collects per (version, kind/name) statistics of decoded
// records.
type segmentStats struct {
	n, errors int
	okLatency []float64
	in, out   float64
	nUsage    int
}

func collect(t *testing.T, g *Generator, n int) (map[string]map[string]*segmentStats, time.Duration, int) {
	t.Helper()
	out := map[string]map[string]*segmentStats{}
	var dec schemas.Decoder
	var ev schemas.Event
	var buf []byte
	var first, last int64
	sessions := 0
	for i := range n {
		buf = g.Next(buf[:0])
		if err := dec.Decode(buf, &ev); err != nil {
			t.Fatalf("decode: %v", err)
		}
		if i == 0 {
			first = ev.TS
		}
		last = ev.TS
		if ev.Kind == schemas.KindAgent {
			sessions++
			continue
		}
		v := string(ev.Version)
		if out[v] == nil {
			out[v] = map[string]*segmentStats{}
		}
		seg := ev.Kind.String() + "/" + string(ev.Name)
		s := out[v][seg]
		if s == nil {
			s = &segmentStats{}
			out[v][seg] = s
		}
		for _, all := range []string{ev.Kind.String() + "/*", "*"} {
			a := out[v][all]
			if a == nil {
				a = &segmentStats{}
				out[v][all] = a
			}
			a.n++
			if ev.Error {
				a.errors++
			}
		}
		s.n++
		if ev.Error {
			s.errors++
			continue
		}
		s.okLatency = append(s.okLatency, ev.DurationMS)
		if ev.Kind == schemas.KindLLM {
			s.in += float64(ev.InputTokens)
			s.out += float64(ev.OutputTokens)
			s.nUsage++
		}
	}
	return out, time.Duration(last - first), sessions
}

func median(x []float64) float64 {
	s := slices.Clone(x)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// checkRate fails unless errors/n is within 4.5 binomial standard deviations
// of p.
func checkRate(t *testing.T, what string, errors, n int, p float64) {
	t.Helper()
	sd := math.Sqrt(float64(n) * p * (1 - p))
	if d := math.Abs(float64(errors) - float64(n)*p); d > 4.5*sd {
		t.Errorf("%s: %d errors in %d; want %.1f ± %.1f", what, errors, n, float64(n)*p, 4.5*sd)
	}
}

func checkNear(t *testing.T, what string, got, want, rel float64) {
	t.Helper()
	if math.Abs(got-want) > rel*want {
		t.Errorf("%s = %.4g; want %.4g ± %.0f%%", what, got, want, rel*100)
	}
}

// TestGeneratorMatchesProfile checks error rates, latency medians, token
// means and the session rate of 100k events against DefaultProfile.
func TestGeneratorMatchesProfile(t *testing.T) {
	r := testRollout("a", 0)
	r.Rate = 40
	p := DefaultProfile()
	stats, span, sessions := collect(t, NewGenerator(11, []Rollout{r}), 100_000)
	base := stats["v1"]
	if len(stats) != 1 || base == nil {
		t.Fatalf("versions %v; want only v1 at weight 0", stats)
	}

	llm := base["llm/"+p.LLM.Model]
	checkRate(t, "llm error rate", llm.errors, llm.n, p.LLM.ErrorRate)
	checkNear(t, "llm median latency", median(llm.okLatency), p.LLM.LatencyMedianMS, 0.03)
	checkNear(t, "input tokens mean", llm.in/float64(llm.nUsage), p.LLM.InputTokensMean, 0.03)
	checkNear(t, "output tokens mean", llm.out/float64(llm.nUsage), p.LLM.OutputTokensMean, 0.03)
	for _, tool := range p.Tools {
		s := base["tool/"+tool.Name]
		if s == nil {
			t.Fatalf("no events of tool %s", tool.Name)
		}
		checkRate(t, tool.Name+" error rate", s.errors, s.n, tool.ErrorRate)
		checkNear(t, tool.Name+" median latency", median(s.okLatency), tool.LatencyMedianMS, 0.05)
	}
	// The mix: Steps+1 LLM calls per Steps tool calls, tools by weight.
	steps := float64(p.MinSteps+p.MaxSteps) / 2
	wsum, toolErr := 0.0, 0.0
	for _, tool := range p.Tools {
		wsum += tool.Weight
		toolErr += tool.Weight * tool.ErrorRate
	}
	want := ((steps+1)*p.LLM.ErrorRate + steps*toolErr/wsum) / (2*steps + 1)
	all := base["*"]
	checkRate(t, "request error rate", all.errors, all.n, want)
	if rate := float64(all.errors) / float64(all.n); rate < 0.008 || rate > 0.012 {
		t.Errorf("DefaultProfile request error rate %.4f; want about 1%%", rate)
	}
	checkNear(t, "sessions per second", float64(sessions)/span.Seconds(), r.Rate, 0.05)
}

// TestCanaryMultipliers checks that a canary's multipliers show in its events
// next to a baseline of the same profile at 50% weight.
func TestCanaryMultipliers(t *testing.T) {
	r := testRollout("a", 50)
	r.CanaryProfile.ErrorRateMult = 3
	r.CanaryProfile.LatencyMult = 1.5
	r.CanaryProfile.ToolLatencyMult = 2
	r.CanaryProfile.TokensMult = 0.5
	stats, _, _ := collect(t, NewGenerator(5, []Rollout{r}), 100_000)
	b, c := stats["v1"], stats["v2"]

	br := float64(b["*"].errors) / float64(b["*"].n)
	cr := float64(c["*"].errors) / float64(c["*"].n)
	// The ratio's standard error is about 3·sqrt(1/500 + 1/1500) ≈ 0.15.
	if ratio := cr / br; ratio < 2.4 || ratio > 3.6 {
		t.Errorf("canary/baseline error rate %.4f/%.4f = %.2f; want 3 ± 0.6", cr, br, ratio)
	}
	model := "llm/" + DefaultProfile().LLM.Model
	checkNear(t, "llm latency ratio", median(c[model].okLatency)/median(b[model].okLatency), 1.5, 0.04)
	checkNear(t, "tool latency ratio", median(c["tool/search_docs"].okLatency)/median(b["tool/search_docs"].okLatency), 3, 0.06)
	checkNear(t, "tokens ratio", (c[model].in/float64(c[model].nUsage))/(b[model].in/float64(b[model].nUsage)), 0.5, 0.04)
	if share := float64(c["*"].n) / float64(c["*"].n+b["*"].n); share < 0.47 || share > 0.53 {
		t.Errorf("canary share of requests %.3f; want 0.5", share)
	}
}

// newCluster starts an in-process Kafka with the two topics.
func newCluster(t *testing.T) []string {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, DefaultEventsTopic, DefaultControlTopic))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c.ListenAddrs()
}

func newClient(t *testing.T, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

func sendCommand(t *testing.T, cl *kgo.Client, c schemas.Command) {
	t.Helper()
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: DefaultControlTopic, Key: []byte(c.Rollout), Value: b}).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

func command(rollout, canary string, seq uint64, action schemas.Action, weight int) schemas.Command {
	return schemas.Command{
		CommandID: schemas.CommandID(rollout, "v1", canary, action, int(seq), weight),
		Seq:       seq,
		Rollout:   rollout,
		Baseline:  "v1",
		Canary:    canary,
		Action:    action,
		Weight:    weight,
		Step:      int(seq),
		Reason:    "test",
		DecidedAt: time.Now(),
	}
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func sessionsOf(p map[string]map[string]Counts, rollout string) (baseline, canary int64) {
	return p[rollout]["v1"].Sessions, p[rollout]["v2"].Sessions
}

func TestFleetKafka(t *testing.T) {
	brokers := newCluster(t)
	rs := []Rollout{testRollout("support-agent", 10), testRollout("other-agent", 50)}
	rs[0].CanaryProfile.ErrorRateMult = 3
	rs[1].Rate = 5
	f, err := NewFleet(FleetConfig{Brokers: brokers, Rollouts: rs, Seed: 1, Speed: 10})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var runErr error
	var wg sync.WaitGroup
	wg.Go(func() { runErr = f.Run(ctx) })

	// Phase 1: the initial weight.
	waitFor(t, "300 sessions", 30*time.Second, func() bool {
		b, c := sessionsOf(f.Produced(), "support-agent")
		return b+c >= 300
	})
	b0, c0 := sessionsOf(f.Produced(), "support-agent")
	if share := float64(c0) / float64(b0+c0); share > 0.2 {
		t.Errorf("canary share at weight 10: %.3f of %d sessions", share, b0+c0)
	}
	if w := f.Weight("support-agent"); w != 10 {
		t.Fatalf("Weight = %d; want 10", w)
	}
	if w := f.Weight("nope"); w != -1 {
		t.Fatalf("Weight(unknown) = %d; want -1", w)
	}

	// Phase 2: canaryd raises the weight. The duplicate, the command for
	// other versions and the other rollout's command must change nothing here.
	ctl := newClient(t, kgo.SeedBrokers(brokers...))
	set := command("support-agent", "v2", 1, schemas.ActionSetWeight, 80)
	sendCommand(t, ctl, set)
	sendCommand(t, ctl, set)
	sendCommand(t, ctl, command("support-agent", "v0-old", 1, schemas.ActionRollback, 0))
	sendCommand(t, ctl, command("unknown-agent", "v2", 1, schemas.ActionRollback, 0))
	waitFor(t, "weight 80", 10*time.Second, func() bool { return f.Weight("support-agent") == 80 })
	// Sessions that started before the change end within a few simulated
	// seconds; let them drain, then measure only new sessions.
	time.Sleep(time.Second)
	b1, c1 := sessionsOf(f.Produced(), "support-agent")
	waitFor(t, "800 more sessions", 30*time.Second, func() bool {
		b, c := sessionsOf(f.Produced(), "support-agent")
		return b+c-b1-c1 >= 800
	})
	b2, c2 := sessionsOf(f.Produced(), "support-agent")
	n := float64(b2 + c2 - b1 - c1)
	share := float64(c2-c1) / n
	t.Logf("canary share of sessions: %.3f of %d at weight 10, %.3f of %.0f after set_weight 80", float64(c0)/float64(b0+c0), b0+c0, share, n)
	if sd := math.Sqrt(0.8 * 0.2 / n); math.Abs(share-0.8) > 5*sd {
		t.Errorf("canary share after set_weight 80: %.3f of %.0f sessions; want 0.8 ± %.3f", share, n, 5*sd)
	}

	// Phase 3: rollback.
	sendCommand(t, ctl, command("support-agent", "v2", 2, schemas.ActionRollback, 0))
	waitFor(t, "weight 0", 10*time.Second, func() bool { return f.Weight("support-agent") == 0 })
	cmds := f.Commands("support-agent")
	if len(cmds) != 2 || cmds[0].Action != schemas.ActionSetWeight || cmds[1].Action != schemas.ActionRollback {
		t.Fatalf("Commands = %+v; want set_weight then rollback", cmds)
	}
	if got := f.Commands("other-agent"); len(got) != 0 || f.Weight("other-agent") != 50 {
		t.Fatalf("other-agent: commands %v weight %d; want none and 50", got, f.Weight("other-agent"))
	}

	cancel()
	wg.Wait()
	if runErr != nil {
		t.Fatalf("Run: %v", runErr)
	}
	if err := f.Run(context.Background()); !errors.Is(err, ErrAlreadyRun) {
		t.Fatalf("second Run: %v; want ErrAlreadyRun", err)
	}

	// Read everything back and compare with Produced.
	produced := f.Produced()
	var total int64
	for _, vs := range produced {
		for _, c := range vs {
			total += c.Events
		}
	}
	consumed := map[string]map[string]Counts{"support-agent": {}, "other-agent": {}}
	cons := newClient(t, kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(DefaultEventsTopic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	var got int64
	rctx, rcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer rcancel()
	var dec schemas.Decoder
	var ev schemas.Event
	for got < total {
		fs := cons.PollFetches(rctx)
		if rctx.Err() != nil {
			t.Fatalf("read %d of %d events", got, total)
		}
		fs.EachError(func(_ string, _ int32, err error) { t.Fatal(err) })
		fs.EachRecord(func(r *kgo.Record) {
			got++
			if err := dec.Decode(r.Value, &ev); err != nil {
				t.Fatalf("decode %s: %v", r.Value, err)
			}
			if string(r.Key) != string(ev.Rollout) {
				t.Fatalf("key %q for rollout %q", r.Key, ev.Rollout)
			}
			m := consumed[string(ev.Rollout)]
			c := m[string(ev.Version)]
			c.Events++
			switch ev.Kind {
			case schemas.KindAgent:
				c.Sessions++
				if ev.OutcomeSuccess {
					c.Successes++
				}
				// 2·steps+1 requests: an odd count.
				if ev.Requests%2 != 1 || ev.RequestErrors > ev.Requests || !ev.HasRequestMedian {
					t.Fatalf("agent event without its request totals: %s", r.Value)
				}
			default:
				c.Requests++
				if ev.Error {
					c.Errors++
				}
			}
			m[string(ev.Version)] = c
		})
	}
	// Nothing more should arrive.
	qctx, qcancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer qcancel()
	if extra := cons.PollFetches(qctx).NumRecords(); extra > 0 {
		t.Fatalf("%d records beyond the %d produced", extra, total)
	}
	if !mapsEqual(consumed, produced) {
		t.Fatalf("consumed %v; Produced() %v", consumed, produced)
	}
	if f.Failed() != 0 {
		t.Fatalf("Failed = %d", f.Failed())
	}
	t.Logf("produced %d events: %v", total, produced)
}

func TestFleetMaxEventsAndClient(t *testing.T) {
	brokers := newCluster(t)
	prod := newClient(t, kgo.SeedBrokers(brokers...))
	// A clock that jumps a minute on every read: event time far outruns the
	// wall clock, so MaxEvents, not time, ends the run.
	var mu sync.Mutex
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		now = now.Add(time.Minute)
		return now
	}
	f, err := NewFleet(FleetConfig{Client: prod, Rollouts: []Rollout{testRollout("a", 50)}, MaxEvents: 2000, Clock: clock, Tick: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := f.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if ctx.Err() != nil {
		t.Fatal("Run ended by timeout, not MaxEvents")
	}
	var events int64
	for _, c := range f.Produced()["a"] {
		events += c.Events
	}
	if events != 2000 {
		t.Fatalf("produced %d events; want 2000", events)
	}

	// The events carry the injected clock's time.
	cons := newClient(t, kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(DefaultEventsTopic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	fs := cons.PollFetches(ctx)
	if fs.NumRecords() == 0 {
		t.Fatal("no records")
	}
	ev := decodeWire(t, fs.Records()[0].Value)
	if ts := time.Unix(0, *ev.TS); ts.Before(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)) {
		t.Fatalf("ts %v; want after the injected clock's start", ts)
	}
}

func BenchmarkGenerator(b *testing.B) {
	rs := []Rollout{testRollout("support-agent", 20)}
	g := NewGenerator(1, rs)
	buf := make([]byte, 0, 4096)
	var bytes int
	b.ReportAllocs()
	for b.Loop() {
		buf = g.Next(buf[:0])
		bytes += len(buf)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(float64(bytes)/float64(b.N), "B/event")
}

// BenchmarkFleet produces b.N events through a Fleet to an in-process kfake
// broker, as fast as the producer goes: a clock that jumps a minute per read
// makes every event due at once. kfake shares the CPU, so this is a lower
// bound on the producer's rate against a real broker.
func BenchmarkFleet(b *testing.B) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, DefaultEventsTopic, DefaultControlTopic))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	now := time.Now()
	var mu sync.Mutex
	clock := func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		now = now.Add(time.Minute)
		return now
	}
	f, err := NewFleet(FleetConfig{Brokers: c.ListenAddrs(), Rollouts: []Rollout{testRollout("a", 50)}, MaxEvents: int64(b.N), Clock: clock})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	if err := f.Run(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// TestFleetSignedCommands checks that a fleet with a signing key obeys the
// control topic as the router library does: signed commands verified on the
// received bytes (a reason with <, > and & is escaped by encoding/json), an
// unsigned, a forged and a stale command ignored.
func TestFleetSignedCommands(t *testing.T) {
	brokers := newCluster(t)
	key := []byte("fleet-key")
	f, err := NewFleet(FleetConfig{Brokers: brokers, Rollouts: []Rollout{testRollout("support-agent", 10)}, Seed: 1,
		Speed: 10, SigningKey: key})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var runErr error
	var wg sync.WaitGroup
	wg.Go(func() { runErr = f.Run(ctx) })

	ctl := newClient(t, kgo.SeedBrokers(brokers...))
	signed := func(c schemas.Command) schemas.Command {
		if err := c.Sign(key); err != nil {
			t.Fatal(err)
		}
		return c
	}
	set := command("support-agent", "v2", 1, schemas.ActionSetWeight, 80)
	set.Reason = "p95 < 1000 ms & errors > 0"
	sendCommand(t, ctl, signed(set))
	waitFor(t, "weight 80", 10*time.Second, func() bool { return f.Weight("support-agent") == 80 })

	sendCommand(t, ctl, command("support-agent", "v2", 2, schemas.ActionRollback, 0)) // unsigned
	forged := signed(command("support-agent", "v2", 3, schemas.ActionPromote, 100))
	forged.Weight = 0
	sendCommand(t, ctl, forged)
	sendCommand(t, ctl, signed(command("support-agent", "v2", 1, schemas.ActionSetWeight, 20))) // stale seq
	// Records of one rollout share a partition, so once this one is applied
	// the three before it have been read.
	sendCommand(t, ctl, signed(command("support-agent", "v2", 4, schemas.ActionRollback, 0)))
	waitFor(t, "weight 0", 10*time.Second, func() bool { return f.Weight("support-agent") == 0 })
	cmds := f.Commands("support-agent")
	if len(cmds) != 2 || cmds[0].Seq != 1 || cmds[1].Seq != 4 {
		t.Fatalf("Commands = %+v; want seq 1 and 4 only", cmds)
	}
	cancel()
	wg.Wait()
	if runErr != nil {
		t.Fatalf("Run: %v", runErr)
	}
}
