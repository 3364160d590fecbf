package stream

// Stage 2 of two-stage aggregation (DESIGN.md): the partials topic, keyed by
// rollout, is consumed in a consumer group of its own; the owner of a
// rollout's partition there runs the rollout's one judge on the partials of
// every source partition.
//
//	canaryd_partials_received_total{result}  partials read: "ok" (handed to the judge), "corrupt" (not a partial: skipped)
//	canaryd_stage2_saves_total               stage-2 states published to the state topic
//	canaryd_stage2_save_errors_total         stage-2 states that could not be published (offsets not committed)
//	canaryd_stage2_partitions_assigned       partials partitions owned
//	canaryd_stage2_restores_total{result}    assigned partials partitions: "published" (continued from the state topic), "none" (no state yet)

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/inferensys/canaryd/window"
)

// Stage2Options configure stage 2.
type Stage2Options struct {
	Brokers []string
	KgoOpts []kgo.Opt
	// ClientID names this instance in the group: other instances read it
	// (Owners) to learn where a partition is judged. Default canaryd-stage2.
	ClientID string
	// Group is stage 2's consumer group (not stage 1's: the partials
	// topic's partitions are spread over the instances on their own).
	Group string
	// Topic is the partials topic.
	Topic string
	// State keeps each partials partition's state (its judges and the
	// offset they have seen up to), published every SaveInterval, on revoke
	// and at shutdown; an instance assigned the partition continues from
	// it. Required.
	State        Handover
	SaveInterval time.Duration
	// OnPartial judges one partial; called on Stage2's goroutine, one
	// partition's partials in their order.
	OnPartial func(window.Closed)
	// Side returns the state of the judges of rollouts, to publish.
	Side func(rollouts []string) map[string][]byte
	// Restore continues the judges of an assigned partition from the side
	// entries it was published with, and returns their rollouts.
	Restore func(partition int32, side map[string][]byte) []string
	// Release: the rollouts of a revoked or lost partition are judged
	// elsewhere from now on.
	Release func(rollouts []string)
	Metrics *metrics.Set
	Logger  *slog.Logger
}

// Stage2 consumes the partials topic. Its goroutine (Run) polls, judges and
// publishes state; franz-go's rebalance callbacks publish and restore
// partitions' state. The client blocks rebalances from a poll's return to
// the next poll (kgo.BlockRebalanceOnPoll), so the callbacks never run while
// Run judges or saves: a revoke's state is never overwritten by an older
// one. mu guards parts for the gauge and is never held across I/O.
type Stage2 struct {
	opts Stage2Options
	cl   *kgo.Client

	mu    sync.Mutex
	parts map[int32]*stage2Part
	// owned is a copy of parts' keys, replaced when they change, for Owns
	// to read without mu: the judges' lock (held by Owns' callers) is taken
	// while mu is held (OnPartial, Restore, Release), never the other way.
	owned atomic.Pointer[map[int32]bool]
	// closing is set when Run leaves the group at its end.
	closing atomic.Bool

	ok, corrupt, saves, saveErrs *metrics.Counter
}

// stage2Part is one owned partition of the partials topic.
type stage2Part struct {
	rollouts map[string]bool // rollouts whose partials it carried (and whose judges it holds)
	next     int64           // offset after the last partial judged; -1 none yet
	epoch    int32
	saved    int64 // next at the last published state
}

// NewStage2 returns stage 2's consumer; Run starts it.
func NewStage2(o Stage2Options) (*Stage2, error) {
	if o.State == nil || o.OnPartial == nil || o.Side == nil || o.Restore == nil || o.Release == nil || o.Topic == "" || o.Group == "" {
		return nil, errors.New("stream: stage 2 needs State, OnPartial, Side, Restore, Release, Topic and Group")
	}
	if o.ClientID == "" {
		o.ClientID = "canaryd-stage2"
	}
	if o.SaveInterval <= 0 {
		o.SaveInterval = 5 * time.Second
	}
	if o.Metrics == nil {
		o.Metrics = metrics.NewSet()
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Stage2{opts: o, parts: map[int32]*stage2Part{},
		ok:       o.Metrics.NewCounter(`canaryd_partials_received_total{result="ok"}`),
		corrupt:  o.Metrics.NewCounter(`canaryd_partials_received_total{result="corrupt"}`),
		saves:    o.Metrics.NewCounter("canaryd_stage2_saves_total"),
		saveErrs: o.Metrics.NewCounter("canaryd_stage2_save_errors_total"),
	}
	o.Metrics.NewGauge("canaryd_stage2_partitions_assigned", func() float64 {
		s.mu.Lock()
		defer s.mu.Unlock()
		return float64(len(s.parts))
	})
	return s, nil
}

// Run judges partials until ctx ends; then it goes on until drain ends or
// a poll of at most a second returns nothing (the partials that stage 1
// published while stopping), publishes every owned partition's state,
// commits, and leaves the group. It joins the group only now, so that no
// judge is restored before the caller has set them up.
func (s *Stage2) Run(ctx, drain context.Context) {
	o := s.opts
	var err error
	s.cl, err = kgo.NewClient(append([]kgo.Opt{
		kgo.SeedBrokers(o.Brokers...),
		kgo.ConsumerGroup(o.Group),
		kgo.ConsumeTopics(o.Topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ClientID(o.ClientID),
		kgo.OnPartitionsAssigned(s.assigned),
		kgo.OnPartitionsRevoked(s.revoked),
		kgo.OnPartitionsLost(s.lost),
	}, o.KgoOpts...)...)
	if err != nil {
		// Options only: kgo.NewClient does not dial.
		panic("BUG: stage 2 client options: " + err.Error())
	}
	defer s.cl.Close()
	tick := time.Now()
	for {
		pctx := ctx
		var cancel context.CancelFunc = func() {}
		if ctx.Err() != nil {
			pctx, cancel = context.WithTimeout(drain, time.Second)
		}
		fs := s.cl.PollFetches(pctx)
		cancel()
		if s.cl.Context().Err() != nil {
			return
		}
		fs.EachError(func(t string, p int32, err error) {
			if !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
				s.opts.Logger.Warn("partials fetch failed", "topic", t, "partition", p, "err", err)
			}
		})
		n := 0
		s.mu.Lock()
		fs.EachPartition(func(ftp kgo.FetchTopicPartition) {
			st := s.parts[ftp.Partition]
			if st == nil {
				return // revoked meanwhile
			}
			for _, r := range ftp.Records {
				n++
				st.next, st.epoch = r.Offset+1, r.LeaderEpoch
				c, err := window.DecodePartial(r.Value)
				if err != nil {
					s.corrupt.Inc()
					s.opts.Logger.Error("not a partial: skipped", "topic", r.Topic, "partition", r.Partition, "offset", r.Offset, "err", err)
					continue
				}
				s.ok.Inc()
				st.rollouts[c.Rollout] = true
				s.opts.OnPartial(c)
			}
		})
		s.mu.Unlock()
		stopping := ctx.Err() != nil
		if stopping && (n == 0 || drain.Err() != nil) {
			break
		}
		if stopping || time.Since(tick) >= s.opts.SaveInterval {
			tick = time.Now()
			s.save(drain, nil)
		}
		s.cl.AllowRebalance()
	}
	s.save(drain, nil)
	// Close leaves the group (the revoke callback finds nothing new to
	// save, and releases no judge: this process is stopping, and its
	// judges' final totals are still to be logged); a rebalance still
	// blocked by the last poll would hold it.
	s.closing.Store(true)
	s.cl.AllowRebalance()
}

// save publishes the state of the owned partitions (of ps; nil: all) that
// judged partials since their last save, and commits their offsets once it
// is durable.
func (s *Stage2) save(ctx context.Context, ps []int32) {
	type snap struct {
		p     int32
		next  int64
		epoch int32
		v     []byte
	}
	var snaps []snap
	s.mu.Lock()
	for p, st := range s.parts {
		if ps != nil && !slices.Contains(ps, p) || st.next < 0 || st.next == st.saved {
			continue
		}
		side := s.opts.Side(sortedKeys(st.rollouts))
		ck := window.Checkpoint{Next: st.next, Epoch: st.epoch, Commit: st.next, Replay: st.next, SavedAt: time.Now().UnixNano()}
		snaps = append(snaps, snap{p, st.next, st.epoch, window.EncodeHandover(ck, side)})
	}
	s.mu.Unlock()
	commit := map[int32]kgo.EpochOffset{}
	for _, sn := range snaps {
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := s.opts.State.Publish(pctx, s.opts.Topic, sn.p, sn.v)
		cancel()
		if err != nil {
			s.saveErrs.Inc()
			s.opts.Logger.Error("stage-2 state not published: its offset is not committed (the partials after the last save are judged again, and ignored as seen)", "partition", sn.p, "err", err)
			continue
		}
		s.saves.Inc()
		commit[sn.p] = kgo.EpochOffset{Epoch: sn.epoch, Offset: sn.next}
		s.mu.Lock()
		if st := s.parts[sn.p]; st != nil {
			st.saved = max(st.saved, sn.next)
		}
		s.mu.Unlock()
	}
	if len(commit) == 0 {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	s.cl.CommitOffsetsSync(cctx, map[string]map[int32]kgo.EpochOffset{s.opts.Topic: commit}, func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, _ *kmsg.OffsetCommitResponse, err error) {
		if err != nil {
			s.opts.Logger.Warn("stage-2 commit failed (the published state is ahead of it; a replay is ignored as seen)", "err", err)
		}
	})
}

// assigned continues each newly assigned partition from its published
// state, before any of its partials is fetched.
func (s *Stage2) assigned(ctx context.Context, _ *kgo.Client, as map[string][]int32) {
	ps := as[s.opts.Topic]
	if len(ps) == 0 {
		return
	}
	fctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	vs, err := s.opts.State.Fetch(fctx, s.opts.Topic, ps)
	cancel()
	if err != nil {
		s.opts.Logger.Error("reading stage-2 states failed: these partials partitions start with fresh judges from the group's commit", "partitions", ps, "err", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	defer s.noteOwned()
	for _, p := range ps {
		st := &stage2Part{rollouts: map[string]bool{}, next: -1, saved: -1}
		s.parts[p] = st
		v, ok := vs[p]
		if !ok {
			s.opts.Metrics.GetOrCreateCounter(`canaryd_stage2_restores_total{result="none"}`).Inc()
			continue
		}
		ck, side, err := window.DecodeHandover(v)
		if err != nil {
			s.opts.Metrics.GetOrCreateCounter(`canaryd_stage2_restores_total{result="corrupt"}`).Inc()
			s.opts.Logger.Error("published stage-2 state corrupt: ignored", "partition", p, "err", err)
			continue
		}
		for _, id := range s.opts.Restore(p, side) {
			st.rollouts[id] = true
		}
		st.saved = ck.Next
		s.opts.Metrics.GetOrCreateCounter(`canaryd_stage2_restores_total{result="published"}`).Inc()
		s.opts.Logger.Info("partials partition continues from its published state", "partition", p, "offset", ck.Next, "judges", len(st.rollouts))
	}
}

// revoked publishes the state of revoked partitions and releases their
// rollouts.
func (s *Stage2) revoked(ctx context.Context, _ *kgo.Client, rs map[string][]int32) {
	ps := rs[s.opts.Topic]
	if len(ps) == 0 {
		return
	}
	s.save(ctx, ps)
	s.drop(ps)
}

// lost releases lost partitions' rollouts: their new owner continues from
// the last published state.
func (s *Stage2) lost(_ context.Context, _ *kgo.Client, ls map[string][]int32) {
	s.drop(ls[s.opts.Topic])
}

func (s *Stage2) drop(ps []int32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var rollouts []string
	for _, p := range ps {
		if st := s.parts[p]; st != nil {
			rollouts = append(rollouts, sortedKeys(st.rollouts)...)
			delete(s.parts, p)
		}
	}
	s.noteOwned()
	if len(rollouts) > 0 && !s.closing.Load() {
		s.opts.Release(rollouts)
	}
}

// Owns reports whether partition p of the partials topic is judged here.
// It takes no lock.
func (s *Stage2) Owns(p int32) bool {
	m := s.owned.Load()
	return m != nil && (*m)[p]
}

// noteOwned refreshes owned from parts; mu is held.
func (s *Stage2) noteOwned() {
	m := make(map[int32]bool, len(s.parts))
	for p := range s.parts {
		m[p] = true
	}
	s.owned.Store(&m)
}

// Owners returns, per partition of the partials topic, the client id of
// the group member it is assigned to (the group's view at the broker).
func Owners(ctx context.Context, cl *kgo.Client, group, topic string) (map[int32]string, error) {
	gs, err := kadm.NewClient(cl).DescribeGroups(ctx, group)
	if err != nil {
		return nil, err
	}
	g, ok := gs[group]
	if !ok {
		return nil, fmt.Errorf("group %s not described", group)
	}
	if g.Err != nil {
		return nil, g.Err
	}
	out := map[int32]string{}
	for _, m := range g.Members {
		a, ok := m.Assigned.AsConsumer()
		if !ok {
			continue
		}
		for _, t := range a.Topics {
			if t.Topic != topic {
				continue
			}
			for _, p := range t.Partitions {
				out[p] = m.ClientID
			}
		}
	}
	return out, nil
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
