package loadtest

import (
	"math"
	"math/rand/v2"
	"slices"
	"sync/atomic"

	"github.com/inferensys/canaryd/schemas"
)

// sim is the simulation shared by Generator and Fleet: Poisson session
// arrivals per rollout, each session an agent loop of sequential requests,
// and a heap of in-flight sessions keyed by the end time of their next event,
// so events come out in event-time order, interleaved across sessions the way
// a real fleet writes them. One goroutine drives a sim; only the weights are
// shared (atomics written by the Fleet's control consumer).
//
// Every random draw comes from one PCG stream in a fixed order, so a seed and
// a configuration give the same events.
type sim struct {
	rng      *rand.Rand
	rollouts []simRollout
	heap     []*session // min-heap on (t, serial)
	free     []*session
	serial   uint64

	// Filled by next and valid until the following call.
	ev      schemas.Event
	cur     int // rollout index of ev
	curVer  int // 0 baseline, 1 canary
	spanHex [16]byte
	counts  [][2]Counts // emitted, per rollout and version
	// done is the session whose agent event ev is, nil when ev is a request.
	// Its fields (and reqs) stay valid until the following call.
	done *session

	// keepReqs makes sessions keep their requests (session.reqs), which the
	// OTLP formats write as one record per session.
	keepReqs bool
}

type simRollout struct {
	name    string
	key     []byte // rollout name: record key, event rollout and agent name
	version [2][]byte
	prof    [2]compiledProfile
	dep     []byte
	commit  []byte
	// weight is the canary's percent of new sessions. Written by the Fleet's
	// control consumer, read when a session starts.
	weight      atomic.Int32
	meanGapNS   float64 // mean time between session arrivals
	nextArrival int64
}

// session is one in-flight agent session. Its next event is fully drawn when
// the session is pushed, so t (the event's time) orders the heap.
type session struct {
	serial   uint64
	r        int
	ver      int
	prof     *compiledProfile
	trace    [32]byte // hex of traceHi, traceLo
	sid      [20]byte // "ses-" + 16 hex
	root     [16]byte // hex of rootID, the span id of the agent event, parent of every request
	traceHi  uint64
	traceLo  uint64
	rootID   uint64
	start    int64
	end      int64 // end of the last emitted request
	steps    int
	idx      int // index of the next event: requests 0..2·steps, then the agent event
	t        int64
	toolIdx  []int
	durs     []float64 // durations of the emitted requests, for the agent event's median
	errors   int
	finalErr []byte // error type of a failed final LLM call
	sumIn    int64
	sumOut   int64
	sumCost  float64
	reqs     []simRequest // emitted requests, when sim.keepReqs

	// The outcome, set when the agent event is emitted.
	success bool
	score   float64
	halluc  bool

	// The next request, when idx <= 2·steps.
	tool    int // -1 for an LLM call
	durMS   float64
	errType []byte // nil when ok
	inTok   int64
	outTok  int64
	cost    float64
	span    uint64
}

// simRequest is one emitted request of a session, kept for the OTLP formats.
type simRequest struct {
	tool       int // -1 for an LLM call
	start, end int64
	span       uint64
	errType    []byte // nil when ok
	in, out    int64
}

func newSim(seed int64, rs []Rollout, start int64) *sim {
	s := &sim{
		rng:      rand.New(rand.NewPCG(uint64(seed), 0x9e3779b97f4a7c15)),
		rollouts: make([]simRollout, len(rs)),
		counts:   make([][2]Counts, len(rs)),
	}
	for i := range rs {
		r, sr := &rs[i], &s.rollouts[i]
		sr.name = r.Name
		sr.key = []byte(r.Name)
		sr.version = [2][]byte{[]byte(r.Baseline), []byte(r.Canary)}
		sr.prof = [2]compiledProfile{r.BaselineProfile.compile(), r.CanaryProfile.compile()}
		if r.DeploymentID != "" {
			sr.dep = []byte(r.DeploymentID)
		}
		if r.Commit != "" {
			sr.commit = []byte(r.Commit)
		}
		sr.weight.Store(int32(r.InitialWeight))
		rate := r.Rate
		if rate == 0 {
			rate = DefaultRate
		}
		sr.meanGapNS = 1e9 / rate
	}
	s.reset(start)
	return s
}

// reset drops in-flight sessions and restarts arrivals at start.
func (s *sim) reset(start int64) {
	s.free = append(s.free, s.heap...)
	s.heap = s.heap[:0]
	for i := range s.rollouts {
		s.rollouts[i].nextArrival = start + s.gap(i)
	}
}

func (s *sim) gap(r int) int64 {
	return int64(s.rng.ExpFloat64()*s.rollouts[r].meanGapNS) + 1
}

// next fills s.ev with the next event whose time is <= limit and reports
// whether there was one.
func (s *sim) next(limit int64) bool {
	for {
		ar, at := 0, int64(math.MaxInt64)
		for i := range s.rollouts {
			if t := s.rollouts[i].nextArrival; t < at {
				ar, at = i, t
			}
		}
		if len(s.heap) > 0 && s.heap[0].t <= at {
			ss := s.heap[0]
			if ss.t > limit {
				return false
			}
			s.emit(ss)
			return true
		}
		if at > limit {
			return false
		}
		s.startSession(ar, at)
		s.rollouts[ar].nextArrival = at + s.gap(ar)
	}
}

func (s *sim) startSession(r int, at int64) {
	var ss *session
	if n := len(s.free); n > 0 {
		ss = s.free[n-1]
		s.free = s.free[:n-1]
	} else {
		ss = new(session)
	}
	sr := &s.rollouts[r]
	ver := 0
	if s.rng.IntN(100) < int(sr.weight.Load()) {
		ver = 1
	}
	p := &sr.prof[ver]
	s.serial++
	*ss = session{
		serial:  s.serial,
		r:       r,
		ver:     ver,
		prof:    p,
		start:   at,
		end:     at,
		steps:   p.minSteps + s.rng.IntN(p.maxSteps-p.minSteps+1),
		toolIdx: ss.toolIdx[:0],
		durs:    ss.durs[:0],
		reqs:    ss.reqs[:0],
	}
	ss.traceHi = s.rng.Uint64()
	ss.traceLo = s.rng.Uint64()
	putHex(ss.trace[:16], ss.traceHi)
	putHex(ss.trace[16:], ss.traceLo)
	copy(ss.sid[:], "ses-")
	putHex(ss.sid[4:], s.rng.Uint64())
	ss.rootID = s.rng.Uint64()
	putHex(ss.root[:], ss.rootID)
	s.drawRequest(ss)
	s.push(ss)
}

// lognormal returns exp(mu + sigma·Z).
func (s *sim) lognormal(mu, sigma float64) float64 {
	return math.Exp(mu + sigma*s.rng.NormFloat64())
}

// drawRequest draws request ss.idx and sets ss.t to its end.
func (s *sim) drawRequest(ss *session) {
	p := ss.prof
	ss.span = s.rng.Uint64()
	ss.errType, ss.inTok, ss.outTok, ss.cost = nil, 0, 0, 0
	var ms, latencyMS float64
	if ss.idx%2 == 0 { // LLM call
		ss.tool = -1
		if s.rng.Float64() < p.llmErr {
			ss.errType, latencyMS = p.llmErrs.pick(s.rng.Float64())
		}
		ms = s.lognormal(p.llmMu, p.llmSigma)
		if ss.errType == nil {
			ss.inTok = int64(math.Round(s.lognormal(p.inMu, p.tokSigma)))
			ss.outTok = int64(math.Round(s.lognormal(p.outMu, p.tokSigma)))
			if p.ctxLimit > 0 && ss.inTok > p.ctxLimit {
				ss.inTok = p.ctxLimit
			}
			ss.cost = roundCost(float64(ss.inTok)*p.inCost + float64(ss.outTok)*p.outCost)
		}
	} else {
		ss.tool = p.pickTool(s.rng.Float64())
		t := &p.tools[ss.tool]
		if s.rng.Float64() < t.err {
			ss.errType, latencyMS = p.toolErrs.pick(s.rng.Float64())
		}
		ms = s.lognormal(t.mu, t.sigma)
	}
	if latencyMS > 0 {
		ms = latencyMS
	}
	// Microsecond resolution keeps the JSON short and the sums exact.
	ss.durMS = math.Max(0.001, math.Round(ms*1000)/1000)
	ss.t = ss.end + int64(math.Round(ss.durMS*1e6))
}

// roundCost rounds to a billionth of a dollar, so the shortest decimal form
// stays short.
func roundCost(c float64) float64 { return math.Round(c*1e9) / 1e9 }

// emit fills s.ev from the next event of ss (the heap's top) and advances ss.
func (s *sim) emit(ss *session) {
	sr := &s.rollouts[ss.r]
	p := ss.prof
	ev := &s.ev
	ev.Reset()
	ev.Rollout = sr.key
	ev.Version = sr.version[ss.ver]
	ev.TS = ss.t
	ev.TraceID = ss.trace[:]
	ev.SessionID = ss.sid[:]
	if ss.ver == 1 {
		ev.DeploymentID, ev.Commit = sr.dep, sr.commit
	}
	s.cur, s.curVer = ss.r, ss.ver
	s.done = nil
	c := &s.counts[ss.r][ss.ver]
	c.Events++

	nReq := 2*ss.steps + 1
	if ss.idx < nReq {
		c.Requests++
		ev.DurationMS, ev.HasDuration = ss.durMS, true
		ss.durs = append(ss.durs, ss.durMS)
		putHex(s.spanHex[:], ss.span)
		ev.SpanID = s.spanHex[:]
		ev.ParentSpanID = ss.root[:]
		if ss.errType != nil {
			c.Errors++
			ss.errors++
			ev.Error, ev.ErrorType = true, ss.errType
		}
		if ss.tool < 0 {
			ev.Kind = schemas.KindLLM
			ev.Name = p.model
			if ss.errType == nil {
				ev.InputTokens, ev.OutputTokens = ss.inTok, ss.outTok
				ev.CostUSD, ev.HasCost = ss.cost, true
				ev.ContextTokens = ss.inTok
				ss.sumIn += ss.inTok
				ss.sumOut += ss.outTok
				ss.sumCost += ss.cost
			} else if ss.idx == nReq-1 {
				ss.finalErr = ss.errType
			}
			ev.ContextLimit = p.ctxLimit
		} else {
			ev.Kind = schemas.KindTool
			ev.Name = p.tools[ss.tool].name
			ss.toolIdx = append(ss.toolIdx, ss.tool)
		}
		if s.keepReqs {
			ss.reqs = append(ss.reqs, simRequest{tool: ss.tool, start: ss.end, end: ss.t, span: ss.span,
				errType: ss.errType, in: ev.InputTokens, out: ev.OutputTokens})
		}
		ss.end = ss.t
		ss.idx++
		if ss.idx < nReq {
			s.drawRequest(ss)
		} // else the agent event, at ss.end = ss.t
		s.down(0)
		return
	}

	// The session's summary.
	c.Sessions++
	ev.Kind = schemas.KindAgent
	ev.Name = sr.key
	ev.DurationMS, ev.HasDuration = float64(ss.end-ss.start)/1e6, true
	ev.SpanID = ss.root[:]
	ev.InputTokens, ev.OutputTokens = ss.sumIn, ss.sumOut
	ev.CostUSD, ev.HasCost = roundCost(ss.sumCost), true
	for _, ti := range ss.toolIdx {
		ev.ToolCalls = append(ev.ToolCalls, p.tools[ti].name)
	}
	// The request totals, as stream.Sessions assembles them from the OTLP
	// spans: the median is the lower middle for an even count.
	ev.Requests, ev.RequestErrors = uint32(nReq), uint32(ss.errors)
	slices.Sort(ss.durs)
	ev.RequestMedianMS, ev.HasRequestMedian = ss.durs[(len(ss.durs)-1)/2], true
	pSuccess := p.success
	if ss.errors > 0 {
		pSuccess = p.successErr
	}
	success := s.rng.Float64() < pSuccess && ss.finalErr == nil
	var score float64
	if success {
		score = 0.6 + 0.4*s.rng.Float64()
		c.Successes++
	} else {
		score = 0.5 * s.rng.Float64()
	}
	ev.HasOutcome = true
	ev.OutcomeSuccess, ev.HasOutcomeSuccess = success, true
	ev.OutcomeScore, ev.HasOutcomeScore = math.Round(score*1000)/1000, true
	ev.OutcomeHallucinated, ev.HasHallucination = s.rng.Float64() < p.halluc, true
	if ss.finalErr != nil {
		ev.Error, ev.ErrorType = true, ss.finalErr
	}
	ss.success, ss.score, ss.halluc = success, ev.OutcomeScore, ev.OutcomeHallucinated
	s.done = ss
	s.pop()
	// ss is reused by a later startSession, not before the next call.
	s.free = append(s.free, ss)
}

// The heap is hand-written on []*session: container/heap would box every
// push and pop.

func (s *sim) less(i, j int) bool {
	a, b := s.heap[i], s.heap[j]
	return a.t < b.t || (a.t == b.t && a.serial < b.serial)
}

func (s *sim) push(ss *session) {
	s.heap = append(s.heap, ss)
	i := len(s.heap) - 1
	for i > 0 {
		p := (i - 1) / 2
		if !s.less(i, p) {
			break
		}
		s.heap[i], s.heap[p] = s.heap[p], s.heap[i]
		i = p
	}
}

func (s *sim) pop() {
	n := len(s.heap) - 1
	s.heap[0] = s.heap[n]
	s.heap[n] = nil
	s.heap = s.heap[:n]
	if n > 0 {
		s.down(0)
	}
}

func (s *sim) down(i int) {
	n := len(s.heap)
	for {
		l := 2*i + 1
		if l >= n {
			return
		}
		m := l
		if r := l + 1; r < n && s.less(r, l) {
			m = r
		}
		if !s.less(m, i) {
			return
		}
		s.heap[i], s.heap[m] = s.heap[m], s.heap[i]
		i = m
	}
}

const hexDigits = "0123456789abcdef"

// putHex writes v as 16 lowercase hex digits into dst[:16].
func putHex(dst []byte, v uint64) {
	_ = dst[15]
	for i := 15; i >= 0; i-- {
		dst[i] = hexDigits[v&0xf]
		v >>= 4
	}
}
