package loadtest

import (
	"math"
	"time"

	"github.com/inferensys/canaryd/schemas"
)

// generatorStart is the event time at which every Generator begins:
// 2026-01-01T00:00:00Z, fixed so that runs are reproducible.
var generatorStart = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano()

// Generator produces the events of a simulated fleet in memory, without Kafka
// and without a clock: event time starts at 2026-01-01T00:00:00Z and advances
// with the rollouts' session rates, so the same seed and rollouts give the same
// records, byte for byte. Weights start at each rollout's InitialWeight and
// change only by SetWeight.
//
// A Generator is not safe for concurrent use. After warm-up, Next allocates
// nothing when dst has room.
type Generator struct {
	sim *sim
}

// NewGenerator returns a Generator for rollouts. It panics if a rollout is
// invalid (see Rollout.Validate): its input is a benchmark's or test's
// constant.
func NewGenerator(seed int64, rollouts []Rollout) *Generator {
	if err := validateRollouts(rollouts); err != nil {
		panic("loadtest: NewGenerator: " + err.Error())
	}
	return &Generator{sim: newSim(seed, rollouts, generatorStart)}
}

// Next appends the next event's JSON record to dst.
func (g *Generator) Next(dst []byte) []byte {
	_, dst = g.NextKeyed(dst)
	return dst
}

// NextKeyed appends the next event's JSON record to dst and also returns its
// Kafka key, the rollout name. The key is shared by every record of the
// rollout and must not be modified.
func (g *Generator) NextKeyed(dst []byte) (key, record []byte) {
	if !g.sim.next(math.MaxInt64) {
		panic("BUG: loadtest: generator ran out of events")
	}
	return g.sim.rollouts[g.sim.cur].key, schemas.AppendEvent(dst, &g.sim.ev)
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

// Now returns the event time of the last record.
func (g *Generator) Now() time.Time {
	return time.Unix(0, g.sim.ev.TS).UTC()
}

// Counts returns what the generator has produced so far: rollout → version →
// counts.
func (g *Generator) Counts() map[string]map[string]Counts {
	out := make(map[string]map[string]Counts, len(g.sim.rollouts))
	for i := range g.sim.rollouts {
		r := &g.sim.rollouts[i]
		out[r.name] = map[string]Counts{
			string(r.version[0]): g.sim.counts[i][0],
			string(r.version[1]): g.sim.counts[i][1],
		}
	}
	return out
}
