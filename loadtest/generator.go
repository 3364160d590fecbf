package loadtest

import (
	"math"
	"time"

	"github.com/inferensys/canaryd/schemas"
)

// generatorStart is the event time at which every Generator begins:
// 2026-01-01T00:00:00Z, fixed so that runs are reproducible.
var generatorStart = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano()

// Generator produces the records of a simulated fleet in memory, without
// Kafka and without a clock: event time starts at 2026-01-01T00:00:00Z and
// advances with the rollouts' session rates, so the same seed and rollouts
// give the same records, byte for byte. Weights start at each rollout's
// InitialWeight and change only by SetWeight. The format (FormatJSON unless
// GeneratorFormat says otherwise) decides what a record is: one event, or one
// finished session in OTLP; the same seed gives the same sessions in every
// format.
//
// A Generator is not safe for concurrent use. After warm-up, Next allocates
// nothing when dst has room.
type Generator struct {
	sim    *sim
	format string
	counts [][2]Counts // OTLP formats: the sessions written so far
	key    [32]byte    // OTLP formats: the last record's key
}

// GeneratorOption configures a Generator.
type GeneratorOption func(*Generator)

// GeneratorFormat sets the format of the records: FormatJSON (the default),
// FormatOTLPProto or FormatOTLPJSON. NewGenerator panics on another value.
func GeneratorFormat(format string) GeneratorOption {
	return func(g *Generator) { g.format = format }
}

// NewGenerator returns a Generator for rollouts. It panics if a rollout is
// invalid (see Rollout.Validate) or an option is: its input is a benchmark's
// or test's constant.
func NewGenerator(seed int64, rollouts []Rollout, opts ...GeneratorOption) *Generator {
	if err := validateRollouts(rollouts); err != nil {
		panic("loadtest: NewGenerator: " + err.Error())
	}
	g := &Generator{format: FormatJSON}
	for _, o := range opts {
		o(g)
	}
	if !validFormat(g.format) {
		panic("loadtest: NewGenerator: unknown format " + g.format)
	}
	g.sim = newSim(seed, rollouts, generatorStart)
	g.sim.keepReqs = g.format != FormatJSON
	g.counts = make([][2]Counts, len(rollouts))
	return g
}

// Format returns the generator's record format.
func (g *Generator) Format() string { return g.format }

// Next appends the next record to dst.
func (g *Generator) Next(dst []byte) []byte {
	_, dst = g.NextKeyed(dst)
	return dst
}

// NextKeyed appends the next record to dst and also returns its Kafka key.
// JSON: the rollout name, shared by every record of the rollout; it must not
// be modified. OTLP: the session's trace id in 32 hex digits (as the
// Collector's exporter keys records with partition_traces_by_id), valid
// until the next call.
func (g *Generator) NextKeyed(dst []byte) (key, record []byte) {
	s := g.sim
	for {
		if !s.next(math.MaxInt64) {
			panic("BUG: loadtest: generator ran out of events")
		}
		if g.format == FormatJSON {
			return s.rollouts[s.cur].key, schemas.AppendEvent(dst, &s.ev)
		}
		if ss := s.done; ss != nil {
			g.counts[ss.r][ss.ver].add(sessionCounts(ss))
			g.key = ss.trace
			return g.key[:], s.appendOTLP(dst, ss, g.format == FormatOTLPJSON)
		}
	}
}

// Records returns the next n records. They share a few large buffers, each
// capped at its own length so appending to one cannot overwrite another.
func (g *Generator) Records(n int) [][]byte {
	out := make([][]byte, n)
	var buf []byte
	for i := range out {
		if cap(buf)-len(buf) < 4096 {
			buf = make([]byte, 0, 1<<20)
		}
		start := len(buf)
		buf = g.Next(buf)
		out[i] = buf[start:len(buf):len(buf)]
	}
	return out
}

// SetWeight sets the canary's percent of the rollout's sessions that start
// from now on, as a set_weight command does in a Fleet, clamped to 0..100. It
// reports whether the generator has the rollout.
func (g *Generator) SetWeight(rollout string, weight int) bool {
	for i := range g.sim.rollouts {
		if r := &g.sim.rollouts[i]; r.name == rollout {
			r.weight.Store(int32(min(max(weight, 0), 100)))
			return true
		}
	}
	return false
}

// Now returns the event time of the last record (OTLP: the end of its
// session).
func (g *Generator) Now() time.Time {
	return time.Unix(0, g.sim.ev.TS).UTC()
}

// Counts returns what the records produced so far hold: rollout → version →
// counts. In the OTLP formats only finished sessions are written, so the
// requests of sessions in flight are not counted.
func (g *Generator) Counts() map[string]map[string]Counts {
	counts := g.sim.counts
	if g.format != FormatJSON {
		counts = g.counts
	}
	out := make(map[string]map[string]Counts, len(g.sim.rollouts))
	for i := range g.sim.rollouts {
		r := &g.sim.rollouts[i]
		out[r.name] = map[string]Counts{
			string(r.version[0]): counts[i][0],
			string(r.version[1]): counts[i][1],
		}
	}
	return out
}

// sessionCounts is what the OTLP record of the finished session ss holds:
// its requests (llm and tool spans) and one session (its agent span).
func sessionCounts(ss *session) Counts {
	n := int64(2*ss.steps + 1)
	c := Counts{Events: n + 1, Requests: n, Errors: int64(ss.errors), Sessions: 1}
	if ss.success {
		c.Successes = 1
	}
	return c
}

// eventCounts is what the JSON record of ev holds.
func eventCounts(ev *schemas.Event) Counts {
	c := Counts{Events: 1}
	if ev.Kind == schemas.KindAgent {
		c.Sessions = 1
		if ev.OutcomeSuccess {
			c.Successes = 1
		}
	} else {
		c.Requests = 1
		if ev.Error {
			c.Errors = 1
		}
	}
	return c
}
