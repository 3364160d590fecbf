package stream

import (
	"errors"
	"fmt"
	"hash/maphash"
	"math"
	"math/bits"
	"slices"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/inferensys/canaryd/schemas"
)

// Session assembly: a span decoder emits one event per span, but an agent's
// session signals (the tools it called, in order; the tokens it spent; whether
// it succeeded) are spread over the spans of its trace. Sessions wraps a span
// decoder, remembers each trace's request spans and, when an agent or task
// span arrives, emits it enriched with what its descendants did. otlp.md
// ("Sessions") describes the rules and their limits.
//
// Metrics (on SessionConfig.Metrics):
//
//	canaryd_sessions_assembled_total             agent/task events enriched from at least one remembered span
//	canaryd_sessions_unassembled_total           agent/task events that found no remembered span of their trace
//	canaryd_sessions_evicted_total{reason}       traces dropped with spans no agent/task span had covered (timeout|max_traces)
//	canaryd_sessions_truncated_total             traces that reached MaxSpansPerTrace (later spans not remembered)

// Defaults of SessionConfig.
const (
	DefaultSessionMaxTraces        = 10_000
	DefaultSessionMaxSpansPerTrace = 256
	DefaultSessionTimeout          = 5 * time.Minute
	DefaultSessionMaxFuture        = time.Minute
)

// Upper bounds of SessionConfig's limits.
const (
	MaxSessionTraces        = 1 << 24
	MaxSessionSpansPerTrace = 1 << 16
)

// SessionConfig configures Sessions. The zero value means every default.
type SessionConfig struct {
	// MaxTraces bounds the traces one decoder (one partition) remembers.
	// When a new trace would exceed it, the least recently active trace is
	// dropped, preferring traces whose spans every agent/task span has
	// already covered. Default DefaultSessionMaxTraces (10 000), at most
	// MaxSessionTraces.
	MaxTraces int
	// MaxSpansPerTrace bounds the spans remembered per trace; later spans of
	// the trace are still emitted but left out of its sessions. Default
	// DefaultSessionMaxSpansPerTrace (256), at most MaxSessionSpansPerTrace.
	MaxSpansPerTrace int
	// Timeout drops a trace that has had no span for this long in event
	// time, measured against the newest span end time the decoder has seen.
	// Default DefaultSessionTimeout (5 min).
	Timeout time.Duration
	// MaxFuture: a span ending more than MaxFuture after Clock is passed
	// through untouched, neither remembered nor moving the decoder's event
	// time (the window refuses it anyway), so that one span with a broken
	// clock cannot time out every trace. Default DefaultSessionMaxFuture (1
	// min, as window.Options.MaxFuture).
	MaxFuture time.Duration
	// Clock gives the wall time for MaxFuture, read once per record. Default
	// time.Now.
	Clock func() time.Time
	// Metrics receives the counters; nil means none.
	Metrics *metrics.Set
}

func (c SessionConfig) withDefaults() SessionConfig {
	if c.MaxTraces == 0 {
		c.MaxTraces = DefaultSessionMaxTraces
	}
	if c.MaxSpansPerTrace == 0 {
		c.MaxSpansPerTrace = DefaultSessionMaxSpansPerTrace
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultSessionTimeout
	}
	if c.MaxFuture == 0 {
		c.MaxFuture = DefaultSessionMaxFuture
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	return c
}

// Validate reports whether c is usable: limits within their bounds,
// durations not negative.
func (c SessionConfig) Validate() error {
	switch {
	case c.MaxTraces < 0 || c.MaxTraces > MaxSessionTraces:
		return fmt.Errorf("stream: sessions MaxTraces %d outside 0..%d", c.MaxTraces, MaxSessionTraces)
	case c.MaxSpansPerTrace < 0 || c.MaxSpansPerTrace > MaxSessionSpansPerTrace:
		return fmt.Errorf("stream: sessions MaxSpansPerTrace %d outside 0..%d", c.MaxSpansPerTrace, MaxSessionSpansPerTrace)
	case c.Timeout < 0 || c.MaxFuture < 0:
		return errors.New("stream: sessions Timeout and MaxFuture must be >= 0")
	}
	return nil
}

// Sessions returns a NewDecoder whose decoders wrap next's and assemble agent
// sessions from the spans of each trace:
//
//   - a span event of kind llm, tool, retrieval or other is emitted at once,
//     unchanged, and remembered under its trace id (its ids, start time =
//     TS − duration, duration, error, kind, tool name, tokens and cost);
//   - an event of kind agent or task is held until the record has been
//     decoded whole, then emitted enriched from the remembered spans below it
//     (its descendants through the parent span ids): ToolCalls = their tool
//     names ordered by start time, InputTokens/OutputTokens/CostUSD = the sums
//     over their llm spans, each only when the event has none of its own;
//     Requests/RequestErrors/RequestMedianMS = the number of their request
//     spans (llm, tool, retrieval, other), of those in error, and the median
//     (the lower middle for an even count) of their durations, unless the
//     event carries Requests already; and, unless it has an outcome, outcome
//     success = not in error;
//   - a trace is forgotten when its root span (one without a parent) has
//     been seen, when it has had no span for Timeout of event time, or when
//     MaxTraces would be exceeded.
//
// Events without a trace id and eval events pass through untouched. Each
// partition's decoder has its own memory, so all the spans of a trace must
// reach one partition (the Collector's partition_traces_by_id). It panics if
// cfg.Validate fails.
func Sessions(next NewDecoder, cfg SessionConfig) NewDecoder {
	if err := cfg.Validate(); err != nil {
		panic(err)
	}
	cfg = cfg.withDefaults()
	c := &sessionShared{
		next:      next,
		maxTraces: cfg.MaxTraces,
		maxSpans:  cfg.MaxSpansPerTrace,
		timeout:   int64(cfg.Timeout),
		maxFuture: int64(cfg.MaxFuture),
		clock:     cfg.Clock,
		seed:      maphash.MakeSeed(),
		seed2:     maphash.MakeSeed(),
	}
	set := cfg.Metrics
	if set == nil {
		set = metrics.NewSet()
	}
	c.assembled = set.GetOrCreateCounter("canaryd_sessions_assembled_total")
	c.unassembled = set.GetOrCreateCounter("canaryd_sessions_unassembled_total")
	c.truncated = set.GetOrCreateCounter("canaryd_sessions_truncated_total")
	for r := range numEvictReasons {
		c.evicted[r] = set.GetOrCreateCounter(`canaryd_sessions_evicted_total{reason="` + evictNames[r] + `"}`)
	}
	return func() Decoder { return newSessionDecoder(c) }
}

// evictReason is why a trace with uncovered spans was dropped.
type evictReason uint8

const (
	evictTimeout evictReason = iota
	evictMaxTraces
	numEvictReasons
)

var evictNames = [numEvictReasons]string{evictTimeout: "timeout", evictMaxTraces: "max_traces"}

// sessionShared is what every partition's session decoder of one topic
// shares; immutable but for the counters, which are atomic.
type sessionShared struct {
	next               NewDecoder
	maxTraces          int
	maxSpans           int
	timeout, maxFuture int64
	clock              func() time.Time
	seed, seed2        maphash.Seed // ids that are not hex are hashed with them

	assembled, unassembled, truncated *metrics.Counter
	evicted                           [numEvictReasons]*metrics.Counter
}

// traceKey is a trace id: its 16 bytes when it is 32 hex digits (as every
// OTLP trace id is), else a 128-bit hash of it.
type traceKey [16]byte

// spanNode is one remembered span of a trace: 64 bytes (TestSpanNodeSize),
// its flags packed into one byte to stay so.
type spanNode struct {
	id, parent uint64 // 0 when absent
	start      int64
	in, out    int64 // llm spans
	cost       float64
	durMS      float64 // when nodeHasDuration
	nameOff    uint32  // tool spans: the name in traceSlot.names
	nameLen    uint16
	kind       schemas.Kind
	flags      uint8 // node*
}

// Bits of spanNode.flags.
const (
	nodeHasCost     uint8 = 1 << iota
	nodeHasDuration       // durMS is set
	nodeError             // the span is in error (status error)
	nodeCovered           // below an agent/task span already emitted
)

// traceSlot is one remembered trace. Slots are reused through a free list and
// linked, by index, into one of two lists in order of last activity.
type traceSlot struct {
	key        traceKey
	prev, next int32
	list       uint8 // listOpen or listSettled
	truncated  bool
	pending    int32 // llm, tool and retrieval spans no agent/task span has covered
	last       int64 // newest end time of the trace's spans
	firstOff   int64 // Kafka offset of the record of its first span (SetOffset)
	nodes      []spanNode
	names      []byte
}

// The two activity lists: traces with pending spans, and settled traces
// (only covered or non-request spans: dropping them loses nothing unless an
// enclosing agent span is still to come).
const (
	listOpen = iota
	listSettled
)

type slotList struct{ head, tail int32 }

// Slots whose buffers grew beyond these are given back to the GC when freed.
const (
	keepNodes = 64
	keepNames = 4 << 10
)

// ref is a byte range in sessionDecoder.arena.
type ref struct{ off, n uint32 }

// heldEvent is an agent/task event held until its record has been decoded,
// its byte slices copied into the arena.
type heldEvent struct {
	ev           schemas.Event // byte slices nil
	refs         [numHeldFields]ref
	tool0, tool1 int32 // its own ToolCalls: heldTools[tool0:tool1]
	key          traceKey
	id           uint64 // its span id, 0 when absent
}

const numHeldFields = 10

// sessionDecoder is one partition's session decoder. It is used by one
// goroutine.
type sessionDecoder struct {
	c     *sessionShared
	inner Decoder
	emit  func(*schemas.Event) // the caller's, during Decode
	onEv  func(*schemas.Event) // d.event, bound once

	newest int64 // newest end time seen, unix ns
	future int64 // spans ending after it pass through (this record)
	off    int64 // offset of the record being decoded (SetOffset)

	index map[traceKey]int32
	slots []traceSlot
	free  []int32
	lists [2]slotList

	// The current record.
	held      []heldEvent
	heldTools []ref
	arena     []byte
	ended     []traceKey // traces whose root span was seen

	// Assembly scratch, reused.
	out   schemas.Event
	tools [][]byte
	order []toolStart
	durs  []float64 // durations of the request spans below the agent
	memo  []uint8
	table []int32
	stack []int32

	// Per-record counts, added to the counters at the end of Decode.
	nAssembled, nUnassembled, nTruncated int
	nEvicted                             [numEvictReasons]int
}

// toolStart is a tool span below the agent being assembled.
type toolStart struct {
	start   int64
	seq     int32
	nameOff uint32
	nameLen uint16
}

var (
	_ Decoder  = (*sessionDecoder)(nil)
	_ Stateful = (*sessionDecoder)(nil)
)

// SetOffset implements Stateful.
func (d *sessionDecoder) SetOffset(off int64) { d.off = off }

// OldestHeld implements Stateful: the offset of the record of the oldest
// remembered trace's first span.
func (d *sessionDecoder) OldestHeld() int64 {
	oldest := int64(-1)
	for _, i := range d.index {
		if o := d.slots[i].firstOff; oldest < 0 || o < oldest {
			oldest = o
		}
	}
	return oldest
}

func newSessionDecoder(c *sessionShared) *sessionDecoder {
	d := &sessionDecoder{c: c, inner: c.next(), index: map[traceKey]int32{}}
	d.lists[listOpen] = slotList{-1, -1}
	d.lists[listSettled] = slotList{-1, -1}
	d.onEv = d.event
	return d
}

// Decode implements Decoder. Request events are emitted as the inner decoder
// emits them; agent/task events after the inner decoder has returned. Events
// and their byte slices are valid only during emit.
func (d *sessionDecoder) Decode(value []byte, emit func(*schemas.Event)) error {
	d.emit = emit
	d.future = math.MaxInt64
	if now := d.c.clock().UnixNano(); now < math.MaxInt64-d.c.maxFuture {
		d.future = now + d.c.maxFuture
	}
	d.held, d.heldTools, d.arena, d.ended = d.held[:0], d.heldTools[:0], d.arena[:0], d.ended[:0]
	err := d.inner.Decode(value, d.onEv)
	if err == nil {
		for i := range d.held {
			d.assemble(&d.held[i])
		}
	}
	for _, k := range d.ended {
		if i, ok := d.index[k]; ok {
			d.drop(i)
		}
	}
	d.expire()
	d.flushCounts()
	d.emit = nil
	return err
}

func (d *sessionDecoder) flushCounts() {
	c := d.c
	if d.nAssembled > 0 {
		c.assembled.Add(d.nAssembled)
	}
	if d.nUnassembled > 0 {
		c.unassembled.Add(d.nUnassembled)
	}
	if d.nTruncated > 0 {
		c.truncated.Add(d.nTruncated)
	}
	for r, n := range d.nEvicted {
		if n > 0 {
			c.evicted[r].Add(n)
		}
	}
	d.nAssembled, d.nUnassembled, d.nTruncated, d.nEvicted = 0, 0, 0, [numEvictReasons]int{}
}

// event receives the inner decoder's events.
func (d *sessionDecoder) event(ev *schemas.Event) {
	if ev.Kind == schemas.KindEval || len(ev.TraceID) == 0 || ev.TS > d.future {
		d.emit(ev)
		return
	}
	d.newest = max(d.newest, ev.TS)
	key := d.traceKey(ev.TraceID)
	id, parent := d.spanID(ev.SpanID), d.spanID(ev.ParentSpanID)
	session := ev.Kind == schemas.KindAgent || ev.Kind == schemas.KindTask
	if session {
		d.hold(ev, key, id)
	} else {
		d.emit(ev)
	}
	if parent == 0 && id != 0 {
		// A root span ends its trace: the trace is forgotten once the
		// record's agent/task spans have been assembled. Nothing chains
		// through a root, so it is not remembered.
		d.ended = append(d.ended, key)
		return
	}
	d.remember(key, id, parent, ev)
}

// remember adds a span to its trace.
func (d *sessionDecoder) remember(key traceKey, id, parent uint64, ev *schemas.Event) {
	i := d.slot(key)
	s := &d.slots[i]
	s.last = max(s.last, ev.TS)
	if len(s.nodes) >= d.c.maxSpans {
		if !s.truncated {
			s.truncated = true
			d.nTruncated++
		}
		d.relist(i)
		return
	}
	n := spanNode{id: id, parent: parent, start: ev.TS, kind: ev.Kind}
	if ev.HasDuration {
		n.start -= int64(math.Round(ev.DurationMS * 1e6))
		n.durMS = ev.DurationMS
		n.flags |= nodeHasDuration
	}
	if ev.Error {
		n.flags |= nodeError
	}
	switch ev.Kind {
	case schemas.KindLLM:
		n.in, n.out = ev.InputTokens, ev.OutputTokens
		if ev.HasCost {
			n.cost = ev.CostUSD
			n.flags |= nodeHasCost
		}
	case schemas.KindTool:
		name := ev.Name[:min(len(ev.Name), schemas.MaxStringBytes)]
		n.nameOff, n.nameLen = uint32(len(s.names)), uint16(len(name))
		s.names = append(s.names, name...)
	}
	if pendingKind(n.kind) {
		s.pending++
	}
	s.nodes = append(s.nodes, n)
	d.relist(i)
}

// pendingKind tells whether a span of kind k is a request an agent/task span
// should cover: only these make a dropped trace count as evicted.
func pendingKind(k schemas.Kind) bool {
	return k == schemas.KindLLM || k == schemas.KindTool || k == schemas.KindRetrieval
}

// requestKind tells whether a span of kind k counts in a session's request
// totals (Event.Requests, RequestErrors, RequestMedianMS): the kinds the
// detector counts as requests (detector.IsRequest), which stream does not
// import.
func requestKind(k schemas.Kind) bool {
	switch k {
	case schemas.KindLLM, schemas.KindTool, schemas.KindRetrieval, schemas.KindOther:
		return true
	}
	return false
}

// hold copies an agent/task event until the end of the record.
func (d *sessionDecoder) hold(ev *schemas.Event, key traceKey, id uint64) {
	d.held = append(d.held, heldEvent{})
	h := &d.held[len(d.held)-1]
	h.ev = *ev
	for f, b := range [numHeldFields][]byte{ev.Rollout, ev.Version, ev.Name, ev.ErrorType, ev.TraceID,
		ev.SpanID, ev.ParentSpanID, ev.SessionID, ev.DeploymentID, ev.Commit} {
		h.refs[f] = d.keep(b)
	}
	h.ev.Rollout, h.ev.Version, h.ev.Name, h.ev.ErrorType, h.ev.TraceID = nil, nil, nil, nil, nil
	h.ev.SpanID, h.ev.ParentSpanID, h.ev.SessionID, h.ev.DeploymentID, h.ev.Commit = nil, nil, nil, nil, nil
	h.ev.ToolCalls = nil
	h.tool0 = int32(len(d.heldTools))
	for _, t := range ev.ToolCalls {
		d.heldTools = append(d.heldTools, d.keep(t))
	}
	h.tool1 = int32(len(d.heldTools))
	h.key, h.id = key, id
}

func (d *sessionDecoder) keep(b []byte) ref {
	r := ref{off: uint32(len(d.arena)), n: uint32(len(b))}
	d.arena = append(d.arena, b...)
	return r
}

func (d *sessionDecoder) bytes(r ref) []byte {
	if r.n == 0 {
		return nil
	}
	return d.arena[r.off : r.off+r.n : r.off+r.n]
}

// assemble emits a held agent/task event enriched from its trace.
func (d *sessionDecoder) assemble(h *heldEvent) {
	out := &d.out
	*out = h.ev
	out.Rollout, out.Version, out.Name = d.bytes(h.refs[0]), d.bytes(h.refs[1]), d.bytes(h.refs[2])
	out.ErrorType, out.TraceID, out.SpanID = d.bytes(h.refs[3]), d.bytes(h.refs[4]), d.bytes(h.refs[5])
	out.ParentSpanID, out.SessionID = d.bytes(h.refs[6]), d.bytes(h.refs[7])
	out.DeploymentID, out.Commit = d.bytes(h.refs[8]), d.bytes(h.refs[9])
	d.tools = d.tools[:0]
	for _, r := range d.heldTools[h.tool0:h.tool1] {
		d.tools = append(d.tools, d.bytes(r))
	}
	ownTools := len(d.tools) > 0

	found := 0
	var in, outTok int64
	var cost float64
	hasCost := false
	var requests, reqErrors uint32
	d.durs = d.durs[:0]
	if i, ok := d.index[h.key]; ok {
		s := &d.slots[i]
		d.below(s, h.id)
		d.order = d.order[:0]
		for j := range s.nodes {
			n := &s.nodes[j]
			if d.memo[j] != memoBelow || n.kind == schemas.KindAgent || n.kind == schemas.KindTask {
				continue
			}
			found++
			switch n.kind {
			case schemas.KindLLM:
				in += n.in
				outTok += n.out
				if n.flags&nodeHasCost != 0 {
					cost += n.cost
					hasCost = true
				}
			case schemas.KindTool:
				d.order = append(d.order, toolStart{start: n.start, seq: int32(j), nameOff: n.nameOff, nameLen: n.nameLen})
			}
			if requestKind(n.kind) {
				requests++
				if n.flags&nodeError != 0 {
					reqErrors++
				}
				if n.flags&nodeHasDuration != 0 {
					d.durs = append(d.durs, n.durMS)
				}
			}
			if n.flags&nodeCovered == 0 {
				n.flags |= nodeCovered
				if pendingKind(n.kind) {
					s.pending--
				}
			}
		}
		if !ownTools {
			slices.SortFunc(d.order, func(a, b toolStart) int {
				if a.start != b.start {
					if a.start < b.start {
						return -1
					}
					return 1
				}
				return int(a.seq - b.seq)
			})
			for _, t := range d.order[:min(len(d.order), schemas.MaxToolCalls)] {
				d.tools = append(d.tools, s.names[t.nameOff:t.nameOff+uint32(t.nameLen):t.nameOff+uint32(t.nameLen)])
			}
		}
		d.relist(i)
	}
	out.ToolCalls = d.tools
	if out.InputTokens == 0 && out.OutputTokens == 0 {
		out.InputTokens, out.OutputTokens = min(in, schemas.MaxTokens), min(outTok, schemas.MaxTokens)
	}
	if !out.HasCost && hasCost {
		out.CostUSD, out.HasCost = min(cost, schemas.MaxCostUSD), true
	}
	if out.Requests == 0 && requests > 0 {
		out.Requests, out.RequestErrors = requests, reqErrors
		out.RequestMedianMS, out.HasRequestMedian = 0, false
		if len(d.durs) > 0 {
			// The lower middle for an even count: a duration that was
			// measured, as for an odd count, and no float arithmetic.
			slices.Sort(d.durs)
			out.RequestMedianMS, out.HasRequestMedian = d.durs[(len(d.durs)-1)/2], true
		}
	}
	if !out.HasOutcome {
		out.HasOutcome = true
		out.OutcomeSuccess, out.HasOutcomeSuccess = !out.Error, true
	}
	if found > 0 {
		d.nAssembled++
	} else {
		d.nUnassembled++
	}
	d.emit(out)
}

// Values of memo.
const (
	memoUnknown = iota
	memoBelow   // the agent span itself or one of its descendants
	memoOther
)

// below sets memo[j], for each node of s, to whether the node is the span id
// or one of its descendants through the remembered parent ids. Every node is
// below an agent span that has no span id.
func (d *sessionDecoder) below(s *traceSlot, id uint64) {
	n := len(s.nodes)
	d.memo = slices.Grow(d.memo[:0], n)[:n]
	if id == 0 {
		for j := range d.memo {
			d.memo[j] = memoBelow
		}
		return
	}
	clear(d.memo)
	// An open-addressing index of span ids, at most half full.
	size := 4
	for size < 2*n {
		size <<= 1
	}
	d.table = slices.Grow(d.table[:0], size)[:size]
	for j := range d.table {
		d.table[j] = -1
	}
	shift := 64 - uint(bits.TrailingZeros(uint(size)))
	mask := uint64(size - 1)
	for j := range s.nodes {
		if s.nodes[j].id == 0 {
			continue
		}
		for k := (s.nodes[j].id * 0x9e3779b97f4a7c15) >> shift; ; k = (k + 1) & mask {
			if d.table[k] < 0 {
				d.table[k] = int32(j)
				break
			}
			if s.nodes[d.table[k]].id == s.nodes[j].id {
				break // a duplicate span id: the first one stands
			}
		}
	}
	lookup := func(id uint64) int32 {
		for k := (id * 0x9e3779b97f4a7c15) >> shift; ; k = (k + 1) & mask {
			j := d.table[k]
			if j < 0 || s.nodes[j].id == id {
				return j
			}
		}
	}
	for j := range s.nodes {
		if d.memo[j] != memoUnknown {
			continue
		}
		d.stack = d.stack[:0]
		res := uint8(memoOther)
		for k := int32(j); ; {
			if m := d.memo[k]; m != memoUnknown {
				res = m
				break
			}
			if s.nodes[k].id == id {
				res = memoBelow
				break
			}
			d.stack = append(d.stack, k)
			p := s.nodes[k].parent
			if p == id {
				res = memoBelow
				break
			}
			if p == 0 || len(d.stack) > n { // a root, or a cycle of parent ids
				break
			}
			if k = lookup(p); k < 0 {
				break // the parent is not remembered: not below
			}
		}
		for _, k := range d.stack {
			d.memo[k] = res
		}
	}
}

// slot returns the index of key's trace, making one (and dropping the least
// recently active trace when MaxTraces are held).
func (d *sessionDecoder) slot(key traceKey) int32 {
	if i, ok := d.index[key]; ok {
		return i
	}
	if len(d.index) >= d.c.maxTraces {
		if h := d.lists[listSettled].head; h >= 0 {
			d.drop(h)
		} else {
			d.evict(d.lists[listOpen].head, evictMaxTraces)
		}
	}
	var i int32
	if n := len(d.free); n > 0 {
		i = d.free[n-1]
		d.free = d.free[:n-1]
	} else {
		d.slots = append(d.slots, traceSlot{})
		i = int32(len(d.slots) - 1)
	}
	s := &d.slots[i]
	s.key, s.truncated, s.pending, s.last, s.firstOff = key, false, 0, math.MinInt64, d.off
	s.nodes, s.names = s.nodes[:0], s.names[:0]
	s.list = listSettled
	d.link(i)
	d.index[key] = i
	return i
}

// relist moves slot i to the tail of the list its pending count puts it in.
func (d *sessionDecoder) relist(i int32) {
	s := &d.slots[i]
	want := uint8(listSettled)
	if s.pending > 0 {
		want = listOpen
	}
	if s.list == want && d.lists[want].tail == i {
		return
	}
	d.unlink(i)
	s.list = want
	d.link(i)
}

func (d *sessionDecoder) link(i int32) {
	s := &d.slots[i]
	l := &d.lists[s.list]
	s.prev, s.next = l.tail, -1
	if l.tail >= 0 {
		d.slots[l.tail].next = i
	} else {
		l.head = i
	}
	l.tail = i
}

func (d *sessionDecoder) unlink(i int32) {
	s := &d.slots[i]
	l := &d.lists[s.list]
	if s.prev >= 0 {
		d.slots[s.prev].next = s.next
	} else {
		l.head = s.next
	}
	if s.next >= 0 {
		d.slots[s.next].prev = s.prev
	} else {
		l.tail = s.prev
	}
	s.prev, s.next = -1, -1
}

// evict drops slot i, counting it when it held pending spans.
func (d *sessionDecoder) evict(i int32, why evictReason) {
	if d.slots[i].pending > 0 {
		d.nEvicted[why]++
	}
	d.drop(i)
}

// drop forgets slot i.
func (d *sessionDecoder) drop(i int32) {
	d.unlink(i)
	s := &d.slots[i]
	delete(d.index, s.key)
	if cap(s.nodes) > keepNodes {
		s.nodes = nil
	}
	if cap(s.names) > keepNames {
		s.names = nil
	}
	d.free = append(d.free, i)
}

// expire drops the traces that have had no span for Timeout of event time.
func (d *sessionDecoder) expire() {
	if d.newest < math.MinInt64+d.c.timeout {
		return
	}
	cutoff := d.newest - d.c.timeout
	for l := range d.lists {
		for h := d.lists[l].head; h >= 0 && d.slots[h].last < cutoff; h = d.lists[l].head {
			d.evict(h, evictTimeout)
		}
	}
}

// traceKey maps a trace id to its key.
func (d *sessionDecoder) traceKey(id []byte) traceKey {
	var k traceKey
	if len(id) == 32 {
		if hi, ok := parseHex64(id[:16]); ok {
			if lo, ok := parseHex64(id[16:]); ok {
				putU64(k[:8], hi)
				putU64(k[8:], lo)
				return k
			}
		}
	}
	putU64(k[:8], maphash.Bytes(d.c.seed, id))
	putU64(k[8:], maphash.Bytes(d.c.seed2, id))
	return k
}

// spanID maps a span id to a number, 0 when it is empty: its value when it
// is 16 hex digits (as every OTLP span id is), else a hash of it.
func (d *sessionDecoder) spanID(id []byte) uint64 {
	if len(id) == 0 {
		return 0
	}
	if len(id) == 16 {
		if v, ok := parseHex64(id); ok && v != 0 {
			return v
		}
	}
	if v := maphash.Bytes(d.c.seed, id); v != 0 {
		return v
	}
	return 1
}

// parseHex64 parses up to 16 hex digits, either case.
func parseHex64(b []byte) (uint64, bool) {
	var v uint64
	var bad uint8
	for _, c := range b {
		x := hexValue[c]
		bad |= x
		v = v<<4 | uint64(x&0xf)
	}
	return v, bad&0x80 == 0
}

// hexValue maps a hex digit to its value and any other byte to 0xff.
var hexValue = func() (t [256]uint8) {
	for c := range t {
		switch {
		case c >= '0' && c <= '9':
			t[c] = uint8(c - '0')
		case c >= 'a' && c <= 'f':
			t[c] = uint8(c - 'a' + 10)
		case c >= 'A' && c <= 'F':
			t[c] = uint8(c - 'A' + 10)
		default:
			t[c] = 0xff
		}
	}
	return t
}()

func putU64(b []byte, v uint64) {
	_ = b[7]
	for i := 7; i >= 0; i-- {
		b[i] = byte(v)
		v >>= 8
	}
}
