package stream

import (
	"bytes"
	"hash/maphash"
	"sync"

	"github.com/VictoriaMetrics/metrics"

	"github.com/inferensys/canaryd/schemas"
)

// TraceIndex remembers, for the most recently seen traces, the rollout and
// version their spans were filed under, so that evaluation results that
// name only their trace (gen_ai.evaluation.result log records without a
// version attribute) join the version they judge. The spans decoders of
// every partition fill it (OTLPConfig.Traces on OTLPTraces); the logs
// decoders read it (the same index on OTLPLogs' config). It is safe for
// concurrent use: one mutex, taken once per spans record and once per
// evaluation record that needs it.
//
// Memory is fixed at creation: capacity traces, the least recently put or
// read one evicted to make room (counted), plus at most maxTracePairs
// distinct (rollout, version) pairs, each stored once. A warm index
// allocates nothing.
//
// Metrics (on the set given to NewTraceIndex):
//
//	canaryd_otlp_trace_index_traces           traces held
//	canaryd_otlp_trace_index_evictions_total  traces dropped to make room
//	canaryd_otlp_trace_index_dropped_total    traces not indexed: maxTracePairs pairs all in use
type TraceIndex struct {
	seed maphash.Seed

	mu sync.Mutex // guards everything below
	// slots holds the traces; a slot is in the LRU list (head: most recent)
	// or in the free list (through next). -1 ends a list.
	slots      []indexedTrace
	head, tail int32
	free       int32
	n          int
	// table is open addressing with linear probing over slots: slot+1, 0
	// for empty. Deletion shifts entries back, so there are no tombstones.
	table []int32
	mask  uint64
	// pairs are the distinct (rollout, version) values, referenced by
	// slots. A pair no trace refers to stays (so that a version's traces
	// coming and going allocate nothing) until room is needed.
	pairs     []indexedPair
	pairIdx   map[string]int32 // rollout + "\xff" + version → index in pairs
	freePairs []int32
	scratch   []byte

	evictions, dropped *metrics.Counter
}

type indexedTrace struct {
	key        [16]byte
	hash       uint64
	pair       int32
	agent      bool // filed from an agent or task span, which wins over the others
	prev, next int32
}

type indexedPair struct {
	rollout, version []byte // never written after creation: readers keep them
	refs             int32
}

// DefaultTraceIndexCapacity is the capacity the daemon uses: at 1000 traces
// per second, evaluations up to two minutes late still join.
const DefaultTraceIndexCapacity = 1 << 17

// maxTracePairs bounds the distinct (rollout, version) pairs of an index.
const maxTracePairs = 4096

// NewTraceIndex returns an index of at most capacity traces (at least 1).
// set receives its metrics; nil means none.
func NewTraceIndex(capacity int, set *metrics.Set) *TraceIndex {
	capacity = max(capacity, 1)
	size := 2
	for size < 2*capacity {
		size <<= 1
	}
	x := &TraceIndex{
		seed:    maphash.MakeSeed(),
		slots:   make([]indexedTrace, capacity),
		head:    -1,
		tail:    -1,
		table:   make([]int32, size),
		mask:    uint64(size - 1),
		pairIdx: map[string]int32{},
	}
	for i := range x.slots {
		x.slots[i].next = int32(i + 1)
	}
	x.slots[capacity-1].next = -1
	if set == nil {
		set = metrics.NewSet()
	}
	x.evictions = set.GetOrCreateCounter("canaryd_otlp_trace_index_evictions_total")
	x.dropped = set.GetOrCreateCounter("canaryd_otlp_trace_index_dropped_total")
	set.GetOrCreateGauge("canaryd_otlp_trace_index_traces", func() float64 { return float64(x.Len()) })
	return x
}

// Len returns the number of traces held.
func (x *TraceIndex) Len() int {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.n
}

// Lookup returns the rollout and version that the trace's spans were filed
// under. traceID is 32 hex digits, as events carry it. The slices are never
// modified: they may be kept.
func (x *TraceIndex) Lookup(traceID []byte) (rollout, version []byte, ok bool) {
	key, ok := parseTraceID(traceID)
	if !ok {
		return nil, nil, false
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	s, _ := x.find(key, x.hash(key))
	if s < 0 {
		return nil, nil, false
	}
	x.touch(s)
	p := &x.pairs[x.slots[s].pair]
	return p.rollout, p.version, true
}

// putSpans indexes the trace of every attributed span event in evs (one
// decoded record): kinds other than eval, with a trace id, and a rollout
// and version other than unknown. A trace filed under several pairs keeps
// the latest from an agent or task span, else the latest.
func (x *TraceIndex) putSpans(evs []schemas.Event, unknown []byte) {
	x.mu.Lock()
	defer x.mu.Unlock()
	var last []byte // trace id of the previous event indexed
	var lastAgent bool
	var lastR, lastV []byte
	for i := range evs {
		ev := &evs[i]
		if ev.Kind == schemas.KindEval || len(ev.TraceID) != 32 ||
			bytes.Equal(ev.Rollout, unknown) || bytes.Equal(ev.Version, unknown) {
			continue
		}
		agent := ev.Kind == schemas.KindAgent || ev.Kind == schemas.KindTask
		// Spans of one trace come together: skip the repeats.
		if last != nil && bytes.Equal(ev.TraceID, last) && bytes.Equal(ev.Rollout, lastR) && bytes.Equal(ev.Version, lastV) && (lastAgent || !agent) {
			continue
		}
		key, ok := parseTraceID(ev.TraceID)
		if !ok {
			continue
		}
		x.put(key, ev.Rollout, ev.Version, agent)
		last, lastR, lastV, lastAgent = ev.TraceID, ev.Rollout, ev.Version, agent
	}
}

func (x *TraceIndex) put(key [16]byte, rollout, version []byte, agent bool) {
	h := x.hash(key)
	s, _ := x.find(key, h)
	if s >= 0 {
		sl := &x.slots[s]
		x.touch(s)
		if sl.agent && !agent {
			return
		}
		old := sl.pair
		if p := &x.pairs[old]; bytes.Equal(p.rollout, rollout) && bytes.Equal(p.version, version) {
			sl.agent = sl.agent || agent
			return
		}
		np := x.pair(rollout, version) // may grow pairs: no pointer into it across the call
		if np < 0 {
			return
		}
		x.pairs[old].refs--
		sl.pair, sl.agent = np, agent
		return
	}
	if x.free < 0 {
		x.evict()
	}
	np := x.pair(rollout, version)
	if np < 0 {
		return
	}
	s = x.free
	sl := &x.slots[s]
	x.free = sl.next
	*sl = indexedTrace{key: key, hash: h, pair: np, agent: agent, prev: -1, next: x.head}
	if x.head >= 0 {
		x.slots[x.head].prev = s
	}
	x.head = s
	if x.tail < 0 {
		x.tail = s
	}
	x.n++
	_, pos := x.find(key, h)
	x.table[pos] = s + 1
}

// pair returns the index of (rollout, version) in pairs with one more
// reference, creating it when needed; -1 when maxTracePairs are all in use.
func (x *TraceIndex) pair(rollout, version []byte) int32 {
	x.scratch = append(append(append(x.scratch[:0], rollout...), 0xff), version...)
	if i, ok := x.pairIdx[string(x.scratch)]; ok {
		x.pairs[i].refs++
		return i
	}
	if len(x.pairIdx) >= maxTracePairs {
		for k, i := range x.pairIdx {
			if x.pairs[i].refs == 0 {
				delete(x.pairIdx, k)
				x.freePairs = append(x.freePairs, i)
			}
		}
		if len(x.pairIdx) >= maxTracePairs {
			x.dropped.Inc()
			return -1
		}
	}
	p := indexedPair{rollout: bytes.Clone(rollout), version: bytes.Clone(version), refs: 1}
	var i int32
	if n := len(x.freePairs); n > 0 {
		i = x.freePairs[n-1]
		x.freePairs = x.freePairs[:n-1]
		x.pairs[i] = p
	} else {
		i = int32(len(x.pairs))
		x.pairs = append(x.pairs, p)
	}
	x.pairIdx[string(x.scratch)] = i
	return i
}

// evict drops the least recently used trace.
func (x *TraceIndex) evict() {
	s := x.tail
	if s < 0 {
		panic("BUG: TraceIndex full with an empty LRU list")
	}
	sl := &x.slots[s]
	x.unlink(s)
	_, pos := x.find(sl.key, sl.hash)
	x.deleteAt(pos)
	x.pairs[sl.pair].refs--
	sl.next = x.free
	x.free = s
	x.n--
	x.evictions.Inc()
}

// find returns the slot holding key (or -1) and its table position (or the
// empty position where it would go).
func (x *TraceIndex) find(key [16]byte, h uint64) (slot int32, pos uint64) {
	for i := h & x.mask; ; i = (i + 1) & x.mask {
		e := x.table[i]
		if e == 0 {
			return -1, i
		}
		if x.slots[e-1].key == key {
			return e - 1, i
		}
	}
}

// deleteAt empties table position i and shifts back the entries after it
// that would no longer be found (linear probing without tombstones).
func (x *TraceIndex) deleteAt(i uint64) {
	for {
		x.table[i] = 0
		j := i
		for {
			j = (j + 1) & x.mask
			e := x.table[j]
			if e == 0 {
				return
			}
			k := x.slots[e-1].hash & x.mask // e's home position
			// e stays when its home lies cyclically in (i, j].
			if i <= j && i < k && k <= j || i > j && (i < k || k <= j) {
				continue
			}
			x.table[i] = e
			i = j
			break
		}
	}
}

func (x *TraceIndex) unlink(s int32) {
	sl := &x.slots[s]
	if sl.prev >= 0 {
		x.slots[sl.prev].next = sl.next
	} else {
		x.head = sl.next
	}
	if sl.next >= 0 {
		x.slots[sl.next].prev = sl.prev
	} else {
		x.tail = sl.prev
	}
	sl.prev, sl.next = -1, -1
}

// touch moves slot s to the head of the LRU list.
func (x *TraceIndex) touch(s int32) {
	if x.head == s {
		return
	}
	x.unlink(s)
	sl := &x.slots[s]
	sl.next = x.head
	x.slots[x.head].prev = s
	x.head = s
}

func (x *TraceIndex) hash(key [16]byte) uint64 { return maphash.Bytes(x.seed, key[:]) }

// parseTraceID parses 32 hex digits (either case).
func parseTraceID(b []byte) (key [16]byte, ok bool) {
	if len(b) != 32 {
		return key, false
	}
	for i := range key {
		hi, ok1 := unhex(b[2*i])
		lo, ok2 := unhex(b[2*i+1])
		if !ok1 || !ok2 {
			return key, false
		}
		key[i] = hi<<4 | lo
	}
	return key, true
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}
