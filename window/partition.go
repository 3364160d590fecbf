package window

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/inferensys/canaryd/schemas"
)

// Options configure a Partition. The zero value of a field means its default.
type Options struct {
	// Width of the event-time tumbling windows. Default 10s.
	Width time.Duration
	// Lateness is how far behind the partition's event time an event may
	// arrive and still be counted: the watermark is the Quorum-th newest
	// event time counted minus Lateness, and a window closes once its end is
	// at or below it. Default 5s.
	Lateness time.Duration
	// Quorum is how many counted events must have reached an event time
	// before the watermark follows it: the watermark is the Quorum-th
	// largest event time counted (minus Lateness), so that up to Quorum−1
	// events from a clock that runs ahead cannot close the windows the
	// other producers are still writing. 1: the newest event time. Default 3.
	Quorum int
	// Idle: when the partition's event time has not moved for this long in
	// wall-clock time, its watermark follows the wall clock so that the last
	// windows of a quiet stream still close — but only as far as the
	// producers' observed lag allows: to the wall clock minus the largest
	// arrival lag of the recent batches (how far their newest event time
	// was behind the wall clock when they arrived) minus Lateness, so that
	// a producer whose events arrive 20 s behind the wall clock is not
	// dropped as late once the partition goes quiet. Default 3×Width.
	Idle time.Duration
	// MaxFuture refuses events whose time is this far ahead of the wall
	// clock (a *FutureError, errors.Is ErrFuture, with the times in its
	// message): a clock that runs far ahead would otherwise move the
	// watermark. Default 1m.
	MaxFuture time.Duration
	// MaxRollouts per partition; events of further rollouts are refused
	// (ErrTooManyRoll) until idle ones are evicted. Default 1000.
	MaxRollouts int
	// EvictAfter: a rollout whose newest event is this far behind the
	// watermark (event time) and that has no open window is dropped with its
	// dictionaries, so that finished rollouts do not hold memory or slots.
	// Default 1h.
	EvictAfter time.Duration
	// MaxVersions per rollout; further versions are folded into "_other".
	// Default 16.
	MaxVersions int
	// MaxSegments per rollout; further (kind, name) pairs are folded into
	// (kind, "_other"). Default 64.
	MaxSegments int
	// MaxErrorTypes per rollout; further types count as "_other". Default 32.
	MaxErrorTypes int
	// MaxTools per rollout whose tool-call bigrams are told apart; calls to
	// further tools form bigrams with "_other". Default 32.
	MaxTools int
	// MaxBigrams per rollout; further bigrams count as "_other". Default 64.
	MaxBigrams int
	// SessionTimeout: a session id (schemas.Event.SessionID) with no event
	// for this long in event time (behind the watermark) is forgotten, and
	// counted again (Agg.NewSessions) if it comes back. Default 10m.
	SessionTimeout time.Duration
	// MaxSessions bounds the session ids the partition remembers over all
	// its rollouts; while it is full, sessions not yet seen are neither
	// counted nor remembered (SessionsUntracked counts them). Default
	// 200 000.
	MaxSessions int
	// Source names the partition's stream (its topic) in Closed.Source.
	Source string
	// Emit receives every closed window, in window order per rollout, on the
	// goroutine that calls Advance. It takes ownership of the Aggs.
	Emit func(Closed)
}

// OtherName is what names beyond a cap are folded into.
const OtherName = "_other"

func (o *Options) setDefaults() {
	if o.Width <= 0 {
		o.Width = 10 * time.Second
	}
	if o.Lateness < 0 {
		o.Lateness = 0
	} else if o.Lateness == 0 {
		o.Lateness = 5 * time.Second
	}
	if o.Quorum <= 0 {
		o.Quorum = 3
	}
	if o.Idle <= 0 {
		o.Idle = 3 * o.Width
	}
	if o.MaxFuture <= 0 {
		o.MaxFuture = time.Minute
	}
	if o.MaxRollouts <= 0 {
		o.MaxRollouts = 1000
	}
	if o.EvictAfter <= 0 {
		o.EvictAfter = time.Hour
	}
	if o.MaxVersions <= 0 {
		o.MaxVersions = 16
	}
	if o.MaxSegments <= 0 {
		o.MaxSegments = 64
	}
	if o.MaxErrorTypes <= 0 {
		o.MaxErrorTypes = 32
	}
	if o.MaxTools <= 0 {
		o.MaxTools = 32
	}
	if o.MaxBigrams <= 0 {
		o.MaxBigrams = 64
	}
	if o.SessionTimeout <= 0 {
		o.SessionTimeout = 10 * time.Minute
	}
	if o.MaxSessions <= 0 {
		o.MaxSessions = 200_000
	}
}

// Segment is the (kind, name) part of a series key.
type Segment struct {
	Kind schemas.Kind
	Name string
}

func (s Segment) String() string { return s.Kind.String() + "/" + s.Name }

// Series is one series' aggregate in a closed window.
type Series struct {
	Version string
	Segment Segment
	Agg     *Agg
}

// Closed is one closed window of one rollout in one partition.
type Closed struct {
	Rollout string
	// Source (the topic) and Partition name where the window was counted.
	Source     string
	Partition  int32
	Start, End int64 // event time, unix ns; End = Start + Width
	// Watermark is the event time the window is judged at: its End, the
	// event time up to which the window's data is complete. It depends on
	// the window alone — not on how records were batched, nor on how much
	// backlog the batch that closed it held — so that a replay after a
	// crash decides at the same times as an uninterrupted run.
	Watermark int64
	// Wall is the partition's wall clock (SetNow) when the window closed,
	// unix ns; 0 when none was set. The judge holds a step's minimum
	// duration in wall time too, so that clocks running ahead cannot
	// shorten it.
	Wall   int64
	Series []Series
	// ErrorTypes names the indexes of Agg.ErrorTypes (index 0 is "_other").
	// Append-only: safe to read while the partition goes on.
	ErrorTypes []string
	// Bigrams names the indexes of Agg.Bigrams ("search→fetch"; index 0 is
	// "_other"). Append-only.
	Bigrams []string
}

// Refusals of Add. The event is not counted; the caller dead-letters or
// counts it.
var (
	ErrLate        = errors.New("event time behind the watermark (window already closed)")
	ErrFuture      = errors.New("event time too far in the future")
	ErrTooManyRoll = errors.New("too many live rollouts in this partition")
)

// FutureError refuses an event whose time is further ahead of the wall
// clock than MaxFuture. errors.Is(err, ErrFuture) holds. Its message
// starts with ErrFuture's, then says by how much:
//
//	event time too far in the future: 2026-12-03T13:09:00Z is 9m0s ahead of the wall clock (limit 1m0s)
type FutureError struct {
	TS, Now int64 // the event's time and the wall clock, unix ns
	Limit   time.Duration
}

func (e *FutureError) Error() string {
	return fmt.Sprintf("%s: %s is %s ahead of the wall clock (limit %s)", ErrFuture, time.Unix(0, e.TS).UTC().Format(time.RFC3339Nano),
		time.Duration(e.TS-e.Now).Round(time.Millisecond), e.Limit)
}

// Unwrap returns ErrFuture.
func (e *FutureError) Unwrap() error { return ErrFuture }

// Partition holds the open windows of one Kafka partition.
type Partition struct {
	opts  Options
	id    int32
	width int64

	now       int64 // wall clock, unix ns, set by SetNow
	maxTS     int64 // newest event time seen
	watermark int64
	// quorum holds the Quorum largest event times counted, ascending
	// (math.MinInt64 in slots not yet filled): quorum[0] is the newest event
	// time that Quorum events have reached, which the watermark follows. A
	// function of the events in offset order, so a replay from a checkpoint
	// (which holds it) moves the watermark at the same events.
	quorum    []int64
	closedAt  int64 // watermark at the last pass that closed windows
	idleSince int64 // wall time at which quorum[0] last moved
	idleBase  int64 // quorum[0] at idleSince
	idleHold  bool  // HoldIdle: the idle rule is suspended
	// Arrival lags of the recent batches, for the idle rule: the wall clock
	// minus the newest event time counted in a batch (at least 0), in a
	// ring of lagBatches.
	batchMax int64 // newest event time counted since the last Advance; math.MinInt64: none
	lags     [lagBatches]int64
	nLags    int // filled slots
	lagNext  int // next slot written

	rollouts map[string]*rollout
	order    []*rollout // in creation order, for deterministic emission
	last     *rollout   // cache: consecutive events mostly share a rollout
	evicted  int

	// Session ids (see countSession): how many the rollouts remember, the
	// watermark of the last sweep of forgotten ones, sessions not tracked
	// because the memory was full, and the event time before which no
	// session is counted (a checkpoint restored without session memory).
	nSessions   int
	sweptAt     int64
	sweeps      int // sweeps of the session memory so far (tests read it)
	untracked   int
	blindBefore int64
}

type rollout struct {
	name     string
	versions []string
	segIDs   [schemas.NumKinds]map[string]uint16
	segs     []Segment
	errIDs   map[string]int
	errNames []string
	toolIDs  map[string]uint16 // tool name → id (0: "_other")
	bigIDs   map[uint32]int    // tool id pair → bigram id (0: "_other")
	bigNames []string
	open     []*openWin // ascending start
	lastTS   int64      // newest event time counted
	// sessions maps a session id's hash (sessionHash) to the newest event
	// time seen with it.
	sessions map[uint64]int64
}

type openWin struct {
	start     int64
	minOffset int64           // smallest Kafka offset counted in the window
	series    map[uint32]*Agg // version<<16 | segment
}

// lagBatches is how many recent batches' arrival lags the idle rule
// remembers. Batches, not wall time: a partition that gets a batch every few
// minutes still remembers how late its events arrive.
const lagBatches = 16

// NewPartition returns an empty Partition for Kafka partition id.
func NewPartition(id int32, opts Options) *Partition {
	opts.setDefaults()
	p := &Partition{
		opts:     opts,
		id:       id,
		width:    int64(opts.Width),
		rollouts: make(map[string]*rollout),
		quorum:   make([]int64, opts.Quorum),
		batchMax: math.MinInt64,
	}
	for i := range p.quorum {
		p.quorum[i] = math.MinInt64
	}
	return p
}

// SetNow sets the wall clock used for the future limit and idleness; call it
// once per batch.
func (p *Partition) SetNow(now time.Time) { p.now = now.UnixNano() }

// HoldIdle suspends the idle rule while hold is true, and restarts its
// clock when the hold ends: the caller holds it while the wall clock says
// nothing about the stream (a backlog to read, a broker that does not answer),
// so that a stall does not close windows whose events are still coming.
func (p *Partition) HoldIdle(hold bool) { p.idleHold = hold }

// IdleAfter returns the Idle option in effect (defaults applied).
func (p *Partition) IdleAfter() time.Duration { return p.opts.Idle }

// RolloutLimit returns the MaxRollouts option in effect (defaults applied).
func (p *Partition) RolloutLimit() int { return p.opts.MaxRollouts }

// Watermark returns the event time up to which the partition's data is
// complete: an event of a window that ends at or before it is late. Windows
// behind it close at the next Advance.
func (p *Partition) Watermark() int64 { return p.watermark }

// Add counts ev, read at Kafka offset off, in its window, and moves the
// watermark when Quorum events have passed it. It refuses late and
// far-future events (a *FutureError) and events of a rollout beyond
// MaxRollouts.
func (p *Partition) Add(ev *schemas.Event, off int64) error {
	if p.now != 0 && ev.TS > p.now+int64(p.opts.MaxFuture) {
		return &FutureError{TS: ev.TS, Now: p.now, Limit: p.opts.MaxFuture}
	}
	start := ev.TS - mod(ev.TS, p.width)
	if start+p.width <= p.watermark {
		return ErrLate
	}
	r := p.last
	if r == nil || r.name != string(ev.Rollout) {
		r = p.rollouts[string(ev.Rollout)]
		if r == nil {
			if len(p.rollouts) >= p.opts.MaxRollouts {
				return ErrTooManyRoll
			}
			r = &rollout{name: string(ev.Rollout), errIDs: map[string]int{}, errNames: []string{OtherName},
				toolIDs: map[string]uint16{}, bigIDs: map[uint32]int{}, bigNames: []string{OtherName}}
			p.rollouts[r.name] = r
			p.order = append(p.order, r)
		}
		p.last = r
	}
	key := uint32(p.version(r, ev.Version))<<16 | uint32(p.segment(r, ev.Kind, ev.Name))
	w := r.window(start)
	w.minOffset = min(w.minOffset, off)
	a := w.series[key]
	if a == nil {
		a = NewAgg()
		w.series[key] = a
	}
	et := 0
	if ev.Error && len(ev.ErrorType) > 0 {
		et = p.errType(r, ev.ErrorType)
	}
	a.Add(ev, et)
	if len(ev.SessionID) > 0 && ev.Kind != schemas.KindEval {
		p.countSession(r, ev, a)
	}
	r.lastTS = max(r.lastTS, ev.TS)
	for i := 1; i < len(ev.ToolCalls); i++ {
		a.AddBigram(p.bigram(r, ev.ToolCalls[i-1], ev.ToolCalls[i]))
	}
	if ev.TS > p.maxTS {
		p.maxTS = ev.TS
	}
	if ev.TS > p.batchMax {
		p.batchMax = ev.TS
	}
	if ev.TS > p.quorum[0] {
		p.pushQuorum(ev.TS)
	}
	return nil
}

// countSession counts ev's session in a (Agg.NewSessions) when the rollout
// has not seen its id within SessionTimeout, and remembers the id's newest
// event time. Evaluations do not count: they can come long after their
// session. Whether an id is remembered depends on the watermark at the
// event (not on when sweeps ran), so a replay from a checkpoint counts the
// same sessions.
//
// Why sessions, first seen: a router assigns sessions, not requests, to the
// canary (sticky), each with probability the weight, independently of
// every other session. A session counted once, in the window of its first
// event, is one such draw; requests are clumps of the same draw, whose
// counts vary far more than binomially (detector's SRM check).
func (p *Partition) countSession(r *rollout, ev *schemas.Event, a *Agg) {
	h := sessionHash(ev.SessionID)
	if r.sessions == nil {
		r.sessions = map[uint64]int64{}
	}
	last, ok := r.sessions[h]
	if ok && last >= p.watermark-int64(p.opts.SessionTimeout) {
		r.sessions[h] = max(last, ev.TS)
		return
	}
	if !ok && p.nSessions >= p.opts.MaxSessions {
		p.sweepSessions(true)
		if p.nSessions >= p.opts.MaxSessions {
			p.untracked++
			return
		}
	}
	if !ok {
		p.nSessions++
	}
	r.sessions[h] = ev.TS
	if ev.TS >= p.blindBefore {
		a.NewSessions++
	}
}

// sweepSessions forgets the session ids with no event within
// SessionTimeout behind the watermark, at most once a minute of event time,
// or once a second when forced (the memory is full: a sweep per event there
// would scan MaxSessions ids per event, and ids age out by the second).
func (p *Partition) sweepSessions(force bool) {
	every := int64(time.Minute)
	if force {
		every = int64(time.Second)
	}
	if p.watermark-p.sweptAt < every {
		return
	}
	p.sweptAt = p.watermark
	p.sweeps++
	limit := p.watermark - int64(p.opts.SessionTimeout)
	p.forgetBefore(limit)
	if force && p.nSessions >= p.opts.MaxSessions {
		// Still full: more sessions began within SessionTimeout than the
		// memory holds (at 200k ids and 10 minutes, above 333 new sessions
		// a second). Forget the older half, by last event: a session idle
		// since then that comes back is counted again (a repeated draw of
		// the same assignment, for sessions idle longer than the memory
		// now spans), which beats counting no new session at all until
		// ids time out, which starved the SRM check.
		lasts := make([]int64, 0, p.nSessions)
		for _, r := range p.order {
			for _, last := range r.sessions {
				lasts = append(lasts, last)
			}
		}
		slices.Sort(lasts)
		cut := lasts[len(lasts)/2]
		if p.forgetBefore(cut); p.nSessions >= p.opts.MaxSessions {
			p.forgetBefore(cut + 1)
		}
	}
}

// forgetBefore forgets the session ids whose last event is before limit.
func (p *Partition) forgetBefore(limit int64) {
	for _, r := range p.order {
		for h, last := range r.sessions {
			if last < limit {
				delete(r.sessions, h)
				p.nSessions--
			}
		}
	}
}

// SessionsUntracked returns how many sessions were neither counted nor
// remembered because MaxSessions ids were remembered already.
func (p *Partition) SessionsUntracked() int { return p.untracked }

// sessionHash is FNV-1a (64 bits) of a session id: stable across processes,
// so that a checkpoint's session memory means the same after a restart.
func sessionHash(id []byte) uint64 {
	h := uint64(14695981039346656037)
	for _, c := range id {
		h ^= uint64(c)
		h *= 1099511628211
	}
	return h
}

// pushQuorum puts ts, larger than quorum[0], among the Quorum largest event
// times (dropping the smallest) and moves the watermark to the new
// quorum[0] minus Lateness.
func (p *Partition) pushQuorum(ts int64) {
	q := p.quorum
	i := 1
	for ; i < len(q) && q[i] < ts; i++ {
		q[i-1] = q[i]
	}
	q[i-1] = ts
	if q[0] != math.MinInt64 {
		p.watermark = max(p.watermark, q[0]-int64(p.opts.Lateness))
	}
}

func (p *Partition) version(r *rollout, v []byte) int {
	for i, s := range r.versions {
		if s == string(v) {
			return i
		}
	}
	if len(r.versions) >= p.opts.MaxVersions-1 {
		// The last slot is "_other".
		if i := slices.Index(r.versions, OtherName); i >= 0 {
			return i
		}
		r.versions = append(r.versions, OtherName)
		return len(r.versions) - 1
	}
	r.versions = append(r.versions, string(v))
	return len(r.versions) - 1
}

func (p *Partition) segment(r *rollout, k schemas.Kind, name []byte) int {
	m := r.segIDs[k]
	if id, ok := m[string(name)]; ok {
		return int(id)
	}
	if m == nil {
		m = make(map[string]uint16)
		r.segIDs[k] = m
	}
	n := string(name)
	if len(r.segs) >= p.opts.MaxSegments {
		if id, ok := m[OtherName]; ok {
			return int(id)
		}
		n = OtherName // one "_other" per kind, even beyond the cap
	}
	id := uint16(len(r.segs))
	r.segs = append(r.segs, Segment{Kind: k, Name: n})
	m[n] = id
	return int(id)
}

func (p *Partition) errType(r *rollout, t []byte) int {
	if id, ok := r.errIDs[string(t)]; ok {
		return id
	}
	if len(r.errNames) >= p.opts.MaxErrorTypes {
		return 0
	}
	id := len(r.errNames)
	r.errNames = append(r.errNames, string(t))
	r.errIDs[string(t)] = id
	return id
}

func (p *Partition) tool(r *rollout, name []byte) uint16 {
	if id, ok := r.toolIDs[string(name)]; ok {
		return id
	}
	if len(r.toolIDs) >= p.opts.MaxTools-1 {
		return 0
	}
	id := uint16(len(r.toolIDs) + 1)
	r.toolIDs[string(name)] = id
	return id
}

func (p *Partition) bigram(r *rollout, from, to []byte) int {
	a, b := p.tool(r, from), p.tool(r, to)
	key := uint32(a)<<16 | uint32(b)
	if id, ok := r.bigIDs[key]; ok {
		return id
	}
	if a == 0 || b == 0 || len(r.bigNames) >= p.opts.MaxBigrams {
		return 0
	}
	id := len(r.bigNames)
	r.bigNames = append(r.bigNames, string(from)+"→"+string(to))
	r.bigIDs[key] = id
	return id
}

func (r *rollout) window(start int64) *openWin {
	// Most events fall in the newest window: search from the end.
	for i := len(r.open) - 1; i >= 0; i-- {
		w := r.open[i]
		if w.start == start {
			return w
		}
		if w.start < start {
			nw := newOpenWin(start)
			r.open = slices.Insert(r.open, i+1, nw)
			return nw
		}
	}
	nw := newOpenWin(start)
	r.open = slices.Insert(r.open, 0, nw)
	return nw
}

func newOpenWin(start int64) *openWin {
	return &openWin{start: start, minOffset: math.MaxInt64, series: make(map[uint32]*Agg)}
}

// CommitOffset returns the offset to commit for this partition when next is
// the offset after the last record processed: the smallest offset still
// counted only in an open window, so that a restart replays every event whose
// window never reached the detector.
func (p *Partition) CommitOffset(next int64) int64 {
	for _, r := range p.order {
		for _, w := range r.open {
			next = min(next, w.minOffset)
		}
	}
	return next
}

// Advance records the batch's arrival lag, moves the watermark by the idle
// rule when the partition has been idle, and emits every window behind the
// watermark. Call it after each batch.
func (p *Partition) Advance() {
	if p.batchMax != math.MinInt64 {
		if p.now != 0 {
			p.lags[p.lagNext] = max(p.now-p.batchMax, 0)
			p.lagNext = (p.lagNext + 1) % lagBatches
			p.nLags = min(p.nLags+1, lagBatches)
		}
		p.batchMax = math.MinInt64
	}
	if p.quorum[0] != p.idleBase || p.idleHold {
		p.idleBase = p.quorum[0]
		p.idleSince = p.now
	}
	if p.now != 0 && p.idleSince != 0 && p.now-p.idleSince >= int64(p.opts.Idle) {
		p.watermark = max(p.watermark, p.now-p.ObservedLag()-int64(p.opts.Lateness))
	}
	if p.watermark <= p.closedAt {
		return
	}
	wm := p.watermark
	p.closedAt = wm
	for _, r := range p.order {
		n := 0
		for _, w := range r.open {
			if w.start+p.width > wm {
				break
			}
			p.emit(r, w)
			n++
		}
		if n > 0 {
			r.open = slices.Delete(r.open, 0, n)
		}
	}
	p.evict()
	p.sweepSessions(false)
}

// ObservedLag returns how far behind the wall clock the partition's events
// arrive: the largest arrival lag (wall clock minus the newest event time
// counted) of the last batches that counted events; 0 before any.
func (p *Partition) ObservedLag() int64 {
	var l int64
	for _, v := range p.lags[:p.nLags] {
		l = max(l, v)
	}
	return l
}

// evict drops rollouts with no open window whose newest event is EvictAfter
// behind the watermark. Event time, not wall time, decides: a replay evicts
// at the same point.
func (p *Partition) evict() {
	limit := p.watermark - int64(p.opts.EvictAfter)
	n := 0
	for _, r := range p.order {
		if len(r.open) == 0 && r.lastTS < limit {
			p.nSessions -= len(r.sessions)
			delete(p.rollouts, r.name)
			if p.last == r {
				p.last = nil
			}
			p.evicted++
			continue
		}
		p.order[n] = r
		n++
	}
	clear(p.order[n:])
	p.order = p.order[:n]
}

// Evicted returns how many rollouts the partition has evicted.
func (p *Partition) Evicted() int { return p.evicted }

// LiveRollouts returns how many rollouts the partition holds.
func (p *Partition) LiveRollouts() int { return len(p.order) }

// Flush closes every open window regardless of the watermark (at shutdown,
// or when the partition is revoked).
func (p *Partition) Flush() {
	for _, r := range p.order {
		for _, w := range r.open {
			p.emit(r, w)
		}
		r.open = r.open[:0]
	}
}

func (p *Partition) emit(r *rollout, w *openWin) {
	series := make([]Series, 0, len(w.series))
	for k, a := range w.series {
		series = append(series, Series{Version: r.versions[k>>16], Segment: r.segs[k&0xffff], Agg: a})
	}
	// Deterministic order: by version, then segment.
	slices.SortFunc(series, func(a, b Series) int {
		if a.Version != b.Version {
			if a.Version < b.Version {
				return -1
			}
			return 1
		}
		if a.Segment.Kind != b.Segment.Kind {
			return int(a.Segment.Kind) - int(b.Segment.Kind)
		}
		if a.Segment.Name < b.Segment.Name {
			return -1
		} else if a.Segment.Name > b.Segment.Name {
			return 1
		}
		return 0
	})
	if p.opts.Emit != nil {
		p.opts.Emit(Closed{
			Rollout:    r.name,
			Source:     p.opts.Source,
			Partition:  p.id,
			Start:      w.start,
			End:        w.start + p.width,
			Watermark:  w.start + p.width,
			Wall:       p.now,
			Series:     series,
			ErrorTypes: r.errNames[:len(r.errNames):len(r.errNames)],
			Bigrams:    r.bigNames[:len(r.bigNames):len(r.bigNames)],
		})
	}
}

// OpenWindows returns the number of open windows over all rollouts.
func (p *Partition) OpenWindows() int {
	n := 0
	for _, r := range p.order {
		n += len(r.open)
	}
	return n
}

// String describes the partition for logs.
func (p *Partition) String() string {
	return fmt.Sprintf("partition %d: %d rollouts, %d open windows, watermark %s",
		p.id, len(p.rollouts), p.OpenWindows(), time.Unix(0, p.watermark).UTC().Format(time.RFC3339))
}

func mod(a, b int64) int64 {
	m := a % b
	if m < 0 {
		m += b
	}
	return m
}
