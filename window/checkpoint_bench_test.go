package window

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/inferensys/canaryd/schemas"
)

// livePartition returns a partition holding about series live series (in
// one open window), each with a few hundred events of varied latency.
func livePartition(b *testing.B, series int) *Partition {
	b.Helper()
	p := NewPartition(0, Options{MaxRollouts: 100_000, MaxSegments: 64})
	t0 := time.Unix(1_700_000_000, 0)
	p.SetNow(t0)
	rng := rand.New(rand.NewPCG(1, 2))
	// series = rollouts × 2 versions × 10 segments
	rollouts := max(series/20, 1)
	var ev schemas.Event
	for i := range series * 200 {
		ev.Reset()
		r := rng.IntN(rollouts)
		ev.Rollout = []byte(fmt.Sprintf("r%d", r))
		ev.Version = []byte([]string{"v1", "v2"}[rng.IntN(2)])
		ev.Kind, ev.Name = schemas.KindTool, []byte(fmt.Sprintf("tool%d", rng.IntN(10)))
		ev.TS = t0.Add(time.Duration(rng.IntN(5000)) * time.Millisecond).UnixNano()
		ev.HasDuration, ev.DurationMS = true, 50*rng.ExpFloat64()*float64(1+rng.IntN(20))
		ev.InputTokens, ev.OutputTokens = int64(rng.IntN(2000)), int64(rng.IntN(300))
		if rng.IntN(50) == 0 {
			ev.Error, ev.ErrorType = true, []byte("timeout")
		}
		if err := p.Add(&ev, int64(i)); err != nil {
			b.Fatal(err)
		}
	}
	return p
}

func seriesOf(p *Partition) int {
	n := 0
	for _, r := range p.order {
		for _, w := range r.open {
			n += len(w.series)
		}
	}
	return n
}

// BenchmarkCheckpoint measures, for 10k live series: the columnar snapshot
// (Arrow IPC), its size per series, the Badger write (synced) and the
// restore.
func BenchmarkCheckpoint(b *testing.B) {
	p := livePartition(b, 10_000)
	n := seriesOf(p)
	var snap bytes.Buffer
	if err := p.Snapshot(&snap); err != nil {
		b.Fatal(err)
	}
	size := snap.Len()
	b.Run("snapshot", func(b *testing.B) {
		b.ReportAllocs()
		var buf bytes.Buffer
		for b.Loop() {
			buf.Reset()
			if err := p.Snapshot(&buf); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(n), "series")
		b.ReportMetric(float64(size), "bytes")
		b.ReportMetric(float64(size)/float64(n), "bytes/series")
	})
	b.Run("save", func(b *testing.B) {
		s, err := OpenStore(b.TempDir(), nil)
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		side := map[string][]byte{"judge/r0": bytes.Repeat([]byte{1}, 64<<10)}
		for b.Loop() {
			if err := s.Save("t", 0, Checkpoint{Next: 1, Snapshot: snap.Bytes()}, side); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(size), "bytes")
	})
	b.Run("restore", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := RestorePartition(0, Options{MaxRollouts: 100_000, MaxSegments: 64}, snap.Bytes()); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(n), "series")
	})
}

// BenchmarkLayout compares the per-event update of one series' aggregate as
// the hot path keeps it (one struct per series) with the same update into
// column slices (the layout of Arrow buffers), over 10k series.
func BenchmarkLayout(b *testing.B) {
	const series = 10_000
	rng := rand.New(rand.NewPCG(3, 4))
	idx := make([]int, 1<<16)
	for i := range idx {
		idx[i] = rng.IntN(series)
	}
	b.Run("struct", func(b *testing.B) {
		aggs := make([]Agg, series)
		i := 0
		for b.Loop() {
			a := &aggs[idx[i&(len(idx)-1)]]
			i++
			for _, p := range aggUints(a) {
				*p++
			}
			for _, p := range aggFloats(a) {
				*p += 1.5
			}
		}
	})
	b.Run("columns", func(b *testing.B) {
		var u [len(uintNames)][]uint64
		var f [len(floatNames)][]float64
		for i := range u {
			u[i] = make([]uint64, series)
		}
		for i := range f {
			f[i] = make([]float64, series)
		}
		i := 0
		for b.Loop() {
			s := idx[i&(len(idx)-1)]
			i++
			for c := range u {
				u[c][s]++
			}
			for c := range f {
				f[c][s] += 1.5
			}
		}
	})
}
