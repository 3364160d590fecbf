package judgebench

import (
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"

	"github.com/inferensys/canaryd/schemas"
	"github.com/inferensys/canaryd/window"
)

// Versions, as indexes into per-version arrays.
const (
	vBase   = 0
	vCanary = 1
)

// Names the simulated streams use.
const (
	rolloutName = "support-agent"
	baseName    = "v1"
	canaryName  = "v2"
)

var (
	versionNames = [2]string{baseName, canaryName}
	versionBytes = [2][]byte{[]byte(baseName), []byte(canaryName)}
)

// epochNS is the event time of a run's second 0.
const epochNS = 1_767_225_600 * int64(1e9) // 2026-01-01T00:00:00Z

// Segments, in the order canaryd's windows list series (kind, then name), so
// that a simulated window.Closed looks like one from window.Partition.
const (
	segLLM       = iota // llm/gpt-4o-mini
	segSQL              // tool/run_sql
	segSearch           // tool/search_docs
	segLookup           // tool/lookup_order: a small tool, only in scenarios with SmallTool > 0
	segAgent            // agent/support-agent: one session summary per session
	segComplaint        // other/user_complaint: a count without a denominator (an "incident")
	numSegs

	numReqSegs = segAgent // segments [0, numReqSegs) are requests
)

var segments = [numSegs]window.Segment{
	segLLM:       {Kind: schemas.KindLLM, Name: "gpt-4o-mini"},
	segSQL:       {Kind: schemas.KindTool, Name: "run_sql"},
	segSearch:    {Kind: schemas.KindTool, Name: "search_docs"},
	segLookup:    {Kind: schemas.KindTool, Name: "lookup_order"},
	segAgent:     {Kind: schemas.KindAgent, Name: rolloutName},
	segComplaint: {Kind: schemas.KindOther, Name: complaintName},
}

// complaintName names the complaint events; canaryd's spec lists it as an
// incident (a count compared with each version's share of the traffic).
const complaintName = "user_complaint"

// seriesOrder is the order window.Partition emits a window's series in:
// by kind (other < llm < tool < agent), then by name.
var seriesOrder = [numSegs]int{segComplaint, segLLM, segLookup, segSQL, segSearch, segAgent}

// Error types: index 0 is "_other", as in window.Partition.
const (
	etOther = iota
	etTimeout
	etRateLimit
	etToolError
)

var errorTypeNames = []string{window.OtherName, "timeout", "rate_limit", "tool_error"}

// reqProfile is how one request segment behaves in the baseline: a lognormal
// latency (median, sigma of its log) and an error probability.
type reqProfile struct {
	medianMS, sigma, errP float64
}

var reqProfiles = [numReqSegs]reqProfile{
	segLLM:    {900, 0.5, 0.01},
	segSQL:    {80, 0.7, 0.01},
	segSearch: {120, 0.5, 0.01},
	segLookup: {150, 0.5, 0.01},
}

// Token model of LLM calls: lognormal input and output tokens; a failed
// call uses none.
const (
	inTokMedian  = 1500
	outTokMedian = 250
	tokSigma     = 0.6
	inCostPerTok = 0.15e-6
	outCostPer   = 0.6e-6
	contextLimit = 128_000

	baseSQLShare    = 0.4   // share of tool calls going to run_sql
	baseComplaintP  = 0.03  // chance that a session ends with a user complaint
	hallucinationP  = 0.03  // chance that a session's outcome is flagged as a hallucination
	taskSuccess     = 0.92  // chance that a session without errors succeeds
	successAfterErr = 0.6   // multiplies it when a request failed
	daySeconds      = 86400 // period of the rate swing
	maxGap          = 63    // seconds; the due ring below has maxGap+1 slots
)

// Clustering says how strongly requests of one session are correlated: each
// session draws a frailty that multiplies its requests' error probability
// (lognormal with mean 1, log-sd ErrSigma) and a factor that multiplies
// their latencies (lognormal with median 1, log-sd LatSigma).
type Clustering struct {
	ErrSigma float64
	LatSigma float64
	// MeanSteps is the mean number of tool steps per session (at least 1);
	// a session makes 2·steps+1 requests: LLM, tool, LLM, …, LLM.
	MeanSteps float64
	// GapMean is the mean time between a session's requests, in seconds
	// (1 + a geometric number of seconds).
	GapMean float64
}

// Delivery says how batches reach canaryd. Each second of each version's
// events is one batch (one producer flush). A batch normally arrives within
// the second after its events; with probability OOOProb it is late by
// 1–OOOMaxS seconds (out of order, but within the allowed lateness), and with
// probability LateProb by LateMinS–LateMaxS seconds: a batch that arrives
// after its window closed is dropped (counted late), as window.Partition does.
type Delivery struct {
	OOOProb  float64
	OOOMaxS  float64
	LateProb float64
	LateMinS float64
	LateMaxS float64
}

// session is one in-flight agent session.
type session struct {
	canary bool
	uErr   float64 // multiplies error probabilities
	latMul float64 // multiplies latencies
	steps  int
	idx    int // next request: 0..2·steps (even: LLM, odd: tool)
	start  int // second
	tools  [][]byte
	inTok  int64
	outTok int64
	cost   float64
	errs   int
	last   bool    // the last request failed
	lastMS float64 // its latency
	sid    []byte  // session_id
	// counted: the session is in a window's NewSessions (its first event
	// that reached a 10 s window), as window.Partition counts it.
	counted bool

	toolSegs []uint8   // segments of the tools called, for bigrams
	lat      []float64 // its requests' latencies, for the summary's median
}

// Shared, read-only samplers, built once per distinct parameter.
var (
	samplersMu sync.Mutex
	lnCache    = map[float64]*lognormal{}
	geomCache  = map[float64]*geomTable{}
)

func lognormals(sigma float64) *lognormal {
	samplersMu.Lock()
	defer samplersMu.Unlock()
	l := lnCache[sigma]
	if l == nil {
		l = newLognormal(sigma)
		lnCache[sigma] = l
	}
	return l
}

func geoms(mean float64) *geomTable {
	samplersMu.Lock()
	defer samplersMu.Unlock()
	g := geomCache[mean]
	if g == nil {
		g = newGeomTable(mean)
		geomCache[mean] = g
	}
	return g
}

// effects are the multipliers in force for one version during one second.
type effects struct {
	errMult    float64
	latMult    float64
	tailFrac   float64 // share of requests that get TailMS added
	tailMS     float64
	tokMult    float64
	sqlShare   float64
	complaintP float64
	// segErrMult and segLatMult act on the small tool only.
	segErrMult, segLatMult float64
}

var toolNames = [numReqSegs][]byte{segSQL: []byte("run_sql"), segSearch: []byte("search_docs"), segLookup: []byte("lookup_order")}

// sim generates one run's stream, second by second. Every random draw comes
// from one PCG stream in a fixed order, so a (seed, scenario, run) always
// gives the same stream whatever the parallelism.
type sim struct {
	sc    *Scenario
	rng   *rand.Rand
	phase float64 // of the daily swing, in days
	share float64 // the router's share of new sessions (Scenario.ActualShare; a ramp moves it)
	// lost[v]: version v's batch of the current second reaches no 10 s
	// window (it arrives after its window closed); set by the caller of
	// second.
	lost [2]bool

	onset    int // second the regression starts (Scenario.Regression)
	incident int // second the shared incident starts, or -1

	sessions []session
	free     []int32
	due      [maxGap + 1][]int32 // ring by second: sessions whose next request is due

	// served[t] is the number of canary requests with event time before
	// second t: the exposure ledger.
	served []int64

	nextSID uint64
	lat     [numReqSegs]*lognormal
	tok     *lognormal
	steps   *geomTable
	gap     *geomTable

	// Tool-call bigram ids, assigned in order of first appearance as
	// window.Partition does (0 is "_other").
	bigramID [numReqSegs][numReqSegs]int
	bigrams  []string
	ev       [numSegs]schemas.Event // reused templates, one per segment
}

func newSim(sc *Scenario, rng *rand.Rand) *sim {
	s := &sim{sc: sc, rng: rng, served: make([]int64, 1, sc.Horizon+1), incident: -1, bigrams: []string{window.OtherName}}
	s.phase = rng.Float64()
	s.share = sc.ActualShare
	if len(sc.Ramp) > 0 {
		s.share = sc.ActualShare / float64(sc.Share) * float64(sc.Ramp[0])
	}
	if r := sc.Regression; r.active() {
		s.onset = r.OnsetMin + rng.IntN(r.OnsetMax-r.OnsetMin+1)
	}
	if in := sc.Incident; in.DurationS > 0 {
		s.incident = in.StartMin + rng.IntN(in.StartMax-in.StartMin+1)
	}
	for i, p := range reqProfiles {
		s.lat[i] = lognormals(p.sigma)
	}
	s.tok = lognormals(tokSigma)
	s.steps = geoms(sc.Clustering.MeanSteps - 1)
	s.gap = geoms(sc.Clustering.GapMean - 1)
	for i := range s.ev {
		s.ev[i].Kind = segments[i].Kind
		s.ev[i].Name = []byte(segments[i].Name)
		s.ev[i].Rollout = []byte(rolloutName)
	}
	s.ev[segLLM].ContextLimit = contextLimit
	return s
}

// effectsAt returns the multipliers for version v at second t.
func (s *sim) effectsAt(v, t int) effects {
	sc := s.sc
	e := effects{errMult: 1, latMult: 1, tokMult: 1, sqlShare: baseSQLShare, complaintP: baseComplaintP, segErrMult: 1, segLatMult: 1}
	if s.incident >= 0 && t >= s.incident && t < s.incident+sc.Incident.DurationS {
		e.errMult *= sc.Incident.ErrMult
	}
	if d := sc.Drift; d.ErrPerHour != 0 || d.LatPerHour != 0 {
		h := float64(t) / 3600
		e.errMult *= 1 + d.ErrPerHour*h
		e.latMult *= 1 + d.LatPerHour*h
	}
	if v != vCanary {
		return e
	}
	r := sc.Regression
	if !r.active() || t < s.onset {
		return e
	}
	f := 1.0
	if r.RampS > 0 {
		f = min(1, float64(t-s.onset+1)/float64(r.RampS))
	}
	lerp := func(to float64) float64 { return 1 + (to-1)*f }
	if r.ErrMult > 0 {
		e.errMult *= lerp(r.ErrMult)
	}
	if r.LatMult > 0 {
		e.latMult *= lerp(r.LatMult)
	}
	if r.TailFrac > 0 {
		e.tailFrac, e.tailMS = r.TailFrac*f, r.TailMS
	}
	if r.TokMult > 0 {
		e.tokMult = lerp(r.TokMult)
	}
	if r.SQLShare > 0 {
		e.sqlShare = baseSQLShare + (r.SQLShare-baseSQLShare)*f
	}
	if r.ComplaintMult > 0 {
		e.complaintP = baseComplaintP * lerp(r.ComplaintMult)
	}
	if r.SegErrMult > 0 {
		e.segErrMult = lerp(r.SegErrMult)
	}
	if r.SegLatMult > 0 {
		e.segLatMult = lerp(r.SegLatMult)
	}
	return e
}

// batchDelay draws how long after the end of its second a batch arrives.
func (s *sim) batchDelay() float64 {
	d := s.sc.Delivery
	u := s.rng.Float64()
	switch {
	case u < d.LateProb:
		return d.LateMinS + s.rng.Float64()*(d.LateMaxS-d.LateMinS)
	case u < d.LateProb+d.OOOProb:
		return 1 + s.rng.Float64()*(d.OOOMaxS-1)
	}
	return s.rng.Float64()
}

// rateAt is the mean request rate at second t: the scenario's rate with a
// daily swing.
func (s *sim) rateAt(t int) float64 {
	return s.sc.Rate * (1 + s.sc.Swing*math.Sin(2*math.Pi*(s.phase+float64(t)/daySeconds)))
}

// second generates the events of second t into sink[version][segment].
func (s *sim) second(t int, sink *[2][numSegs]*window.Agg) {
	rng := s.rng
	cl := &s.sc.Clustering
	var eff [2]effects
	eff[vBase], eff[vCanary] = s.effectsAt(vBase, t), s.effectsAt(vCanary, t)

	// New sessions: Poisson arrivals at the rate that gives Rate requests/s.
	reqPerSession := 2*cl.MeanSteps + 1
	n := poisson(rng, s.rateAt(t)/reqPerSession)
	slot := t % len(s.due)
	for range n {
		id := s.alloc()
		ss := &s.sessions[id]
		ss.canary = rng.Float64() < s.share
		ss.uErr = math.Exp(cl.ErrSigma*rng.NormFloat64() - cl.ErrSigma*cl.ErrSigma/2)
		ss.latMul = math.Exp(cl.LatSigma * rng.NormFloat64())
		ss.steps = 1 + s.steps.draw(rng)
		ss.start = t
		s.nextSID++
		ss.sid = strconv.AppendUint(append(ss.sid[:0], "ses-"...), s.nextSID, 16)
		s.due[slot] = append(s.due[slot], id)
	}

	ts := epochNS + int64(t)*1e9
	for i := range s.ev {
		s.ev[i].TS = ts
	}
	var canaryReqs int64
	ids := s.due[slot]
	s.due[slot] = ids[len(ids):] // reuse the backing array for later seconds
	for _, id := range ids {
		ss := &s.sessions[id]
		v := vBase
		if ss.canary {
			v = vCanary
			canaryReqs++
		}
		s.request(ss, &eff[v], sink[v])
		ss.idx++
		if ss.idx > 2*ss.steps {
			s.finish(ss, &eff[v], sink[v], t)
			s.free = append(s.free, id)
			continue
		}
		gap := 1 + s.gap.draw(rng)
		next := (t + min(gap, maxGap)) % len(s.due)
		s.due[next] = append(s.due[next], id)
	}
	s.served = append(s.served, s.served[len(s.served)-1]+canaryReqs)
}

// request emits session ss's next request.
func (s *sim) request(ss *session, e *effects, sink [numSegs]*window.Agg) {
	rng := s.rng
	seg := segLLM
	if ss.idx%2 == 1 {
		seg = segSearch
		if rng.Float64() < e.sqlShare {
			seg = segSQL
		}
		// Drawn only in scenarios with the small tool: the others' streams
		// stay as they were.
		if s.sc.SmallTool > 0 && rng.Float64() < s.sc.SmallTool {
			seg = segLookup
		}
		ss.tools = append(ss.tools, toolNames[seg])
		ss.toolSegs = append(ss.toolSegs, uint8(seg))
	}
	p := &reqProfiles[seg]
	ev := &s.ev[seg]
	ev.SessionID, ev.Version = ss.sid, versionBytes[b2i(ss.canary)]
	segErr, segLat := 1.0, 1.0
	if seg == segLookup {
		segErr, segLat = e.segErrMult, e.segLatMult
	}
	pe := min(p.errP*ss.uErr*e.errMult*segErr, 0.95)
	ev.Error = rng.Float64() < pe
	ev.HasDuration = true
	ms := p.medianMS * s.lat[seg].draw(rng) * ss.latMul * e.latMult * segLat
	if e.tailFrac > 0 && rng.Float64() < e.tailFrac {
		ms += e.tailMS
	}
	ev.DurationMS = min(ms, schemas.MaxDurationMS)
	ss.lat = append(ss.lat, ev.DurationMS)
	et := 0
	if ev.Error {
		ss.errs++
		u := rng.Float64()
		switch {
		case seg == segLLM && u < 0.5:
			et = etRateLimit
		case seg != segLLM && u < 0.6:
			et = etToolError
		case u < 0.85:
			et = etTimeout
		}
	}
	ss.last, ss.lastMS = ev.Error, ev.DurationMS
	if seg == segLLM {
		if ev.Error {
			ev.InputTokens, ev.OutputTokens, ev.ContextTokens = 0, 0, 0
			ev.HasCost, ev.CostUSD = false, 0
		} else {
			in := int64(inTokMedian * e.tokMult * s.tok.draw(rng))
			out := int64(outTokMedian * e.tokMult * s.tok.draw(rng))
			ev.InputTokens, ev.OutputTokens, ev.ContextTokens = in, out, min(in, contextLimit)
			ev.HasCost, ev.CostUSD = true, float64(in)*inCostPerTok+float64(out)*outCostPer
			ss.inTok += in
			ss.outTok += out
			ss.cost += ev.CostUSD
		}
	}
	sink[seg].Add(ev, et)
	s.countSession(ss, sink[seg])
}

// countSession counts ss in a's NewSessions at its first event that
// reaches a window, as window.Partition does (a late event is refused
// before the partition sees its session id).
func (s *sim) countSession(ss *session, a *window.Agg) {
	if !ss.counted && !s.lost[b2i(ss.canary)] {
		ss.counted = true
		a.NewSessions++
	}
}

// finish emits the session's agent event and, sometimes, a complaint.
func (s *sim) finish(ss *session, e *effects, sink [numSegs]*window.Agg, t int) {
	rng := s.rng
	ev := &s.ev[segAgent]
	ev.SessionID, ev.Version = ss.sid, versionBytes[b2i(ss.canary)]
	ev.ToolCalls = append(ev.ToolCalls[:0], ss.tools...)
	ev.HasDuration = true
	ev.DurationMS = float64(t-ss.start)*1000 + ss.lastMS
	ev.Error = ss.last
	ev.InputTokens, ev.OutputTokens, ev.ContextTokens = ss.inTok, ss.outTok, min(ss.inTok, contextLimit)
	ev.HasCost, ev.CostUSD = true, ss.cost
	pOK := taskSuccess
	if ss.errs > 0 {
		pOK *= successAfterErr
	}
	ok := !ss.last && rng.Float64() < pOK
	ev.HasOutcome, ev.HasOutcomeSuccess, ev.OutcomeSuccess = true, true, ok
	ev.HasOutcomeScore, ev.OutcomeScore = true, 0.5+0.5*b2f(ok)*rng.Float64()
	ev.HasHallucination, ev.OutcomeHallucinated = true, rng.Float64() < hallucinationP
	// The session's request totals, as canaryd's session assembly sets them.
	ev.Requests, ev.RequestErrors = uint32(len(ss.lat)), uint32(ss.errs)
	slices.Sort(ss.lat)
	ev.RequestMedianMS, ev.HasRequestMedian = ss.lat[(len(ss.lat)-1)/2], true
	if !s.sc.NoSummaries {
		agg := sink[segAgent]
		agg.Add(ev, etOther)
		s.countSession(ss, agg)
		for i := 1; i < len(ss.toolSegs); i++ {
			agg.AddBigram(s.bigram(ss.toolSegs[i-1], ss.toolSegs[i]))
		}
	}
	if rng.Float64() < e.complaintP {
		s.ev[segComplaint].SessionID, s.ev[segComplaint].Version = ss.sid, ev.Version
		sink[segComplaint].Add(&s.ev[segComplaint], etOther)
	}
}

// bigram returns the id of the tool-call pair from→to.
func (s *sim) bigram(from, to uint8) int {
	id := s.bigramID[from][to]
	if id == 0 {
		id = len(s.bigrams)
		s.bigramID[from][to] = id
		s.bigrams = append(s.bigrams, segments[from].Name+"→"+segments[to].Name)
	}
	return id
}

func (s *sim) alloc() int32 {
	if n := len(s.free); n > 0 {
		id := s.free[n-1]
		s.free = s.free[:n-1]
		old := &s.sessions[id]
		s.sessions[id] = session{tools: old.tools[:0], sid: old.sid[:0], toolSegs: old.toolSegs[:0], lat: old.lat[:0]}
		return id
	}
	s.sessions = append(s.sessions, session{})
	return int32(len(s.sessions) - 1)
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// poisson draws a Poisson count: exact (Knuth) for small means, a rounded
// normal above 30, which is plenty for arrival counts.
func poisson(rng *rand.Rand, mean float64) int {
	if mean <= 0 {
		return 0
	}
	if mean < 30 {
		l, p, k := math.Exp(-mean), 1.0, 0
		for {
			p *= rng.Float64()
			if p <= l {
				return k
			}
			k++
		}
	}
	return max(0, int(math.Round(mean+math.Sqrt(mean)*rng.NormFloat64())))
}

// geometric draws the number of failures before a success with the given
// mean (0 for a mean ≤ 0), capped at 1000.
func geometric(rng *rand.Rand, mean float64) int {
	if mean <= 0 {
		return 0
	}
	p := 1 / (1 + mean)
	u := 1 - rng.Float64() // (0, 1]
	return min(int(math.Log(u)/math.Log1p(-p)), 1000)
}
