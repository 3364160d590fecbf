// Package stream reads agent events from Kafka: a franz-go consumer group on
// the events topic, one goroutine owning each assigned partition (the only
// writer of that partition's window state), decoding records without
// allocating and counting them into windows. Malformed records go to the
// dead-letter callback with their reason; offsets are committed only for
// records whose windows have reached the detector.
//
// Metrics (on Options.Metrics):
//
//	canaryd_records_total                       records consumed
//	canaryd_records_rejected_total{reason="…"}  records sent to the DLQ, by reason
//	canaryd_events_late_total{rollout="…"}      events behind the watermark, dropped (at most the window's MaxRollouts rollouts per partition, then "_other"); logged at most every 10 s per partition
//	canaryd_consumer_lag{topic,partition}       the broker's end offset − next offset to process (end offsets
//	                                            listed every LagInterval; kept, not zeroed, while the broker is away)
//	canaryd_partitions_assigned                 partitions owned by this instance
//	canaryd_broker_contact_age_seconds          seconds since the broker last answered (lists, fetches)
//	canaryd_dead_letters_unwritten_total        dead letters given up at shutdown (their offsets stay uncommitted)
//	canaryd_fetch_errors_total                  fetch errors (the client retries)
//	canaryd_checkpoints_total                   checkpoints written
//	canaryd_checkpoint_errors_total             checkpoints that failed (offsets not committed)
//	canaryd_checkpoint_healthy                  1 when the last checkpoint succeeded, else 0
//	canaryd_checkpoint_seconds                  time to write a checkpoint (summary)
//	canaryd_checkpoint_bytes                    size of the last checkpoint written
//	canaryd_checkpoint_restores_total{result}   partitions assigned: restored, stale, corrupt, none
//	canaryd_rollouts_limit_total                events refused: partition at its live-rollout limit
//	canaryd_records_replayed_total              records decoded again after a restore to rebuild session assembly (events dropped)
//	canaryd_live_rollouts{topic,partition}      rollouts with state in a partition (evicted when idle)
package stream

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/inferensys/canaryd/schemas"
	"github.com/inferensys/canaryd/window"
)

// DeadLetter is a record refused with its reason.
type DeadLetter struct {
	Record *kgo.Record
	Reason string
}

// Options configure a Consumer.
type Options struct {
	Brokers []string
	// Topics to consume, each with the decoder of its format. Required.
	Topics map[string]NewDecoder
	// Group is the consumer group. Required.
	Group string
	// Window configures each partition's windows; its Emit is set by the
	// Consumer to OnClosed.
	Window window.Options
	// OnClosed receives every closed window, from the partition goroutines
	// concurrently. Required.
	OnClosed func(window.Closed)
	// Partials, when set, receives each partition's closed windows instead
	// of OnClosed: two-stage aggregation's stage 1 (DESIGN.md), which
	// writes them to the partials topic. It is called on the partition
	// goroutine after each batch and tick, before any offset past the
	// windows' records is checkpointed or marked for commit, and must
	// return only once they are durable. A failure is retried with backoff;
	// given up (the partition stops), nothing further of the partition is
	// checkpointed or committed, so that its windows are rebuilt and
	// published again (stage 2 ignores the ones it has).
	Partials func(context.Context, []window.Closed) error
	// DeadLetters writes refused records durably before their offsets are
	// committed (for example to the DLQ topic). Required.
	DeadLetters func(context.Context, []DeadLetter) error
	// Metrics receives the consumer's metrics; nil means none.
	Metrics *metrics.Set
	// Logger; nil means none.
	Logger *slog.Logger
	// Clock gives the wall time for idleness and future checks. Default time.Now.
	Clock func() time.Time
	// KgoOpts are extra client options (TLS, SASL, …).
	KgoOpts []kgo.Opt
	// LagInterval between listings of the assigned partitions' end offsets
	// (lag, broker contact, group size for readiness). Default 2s.
	LagInterval time.Duration
	// OnListed, when set, receives the consumer's health after each
	// successful listing, on the lister's goroutine. Optional.
	OnListed func(Health)

	// Checkpoints, when set, makes partition state durable: each partition
	// goroutine writes its open windows and offsets there every
	// CheckpointInterval, on revoke and at shutdown, and commits to Kafka
	// only offsets a checkpoint holds. An assigned partition resumes from its
	// checkpoint unless the group went past it. Nil: state is in memory only;
	// windows are flushed on revoke and a restart replays from the commits.
	Checkpoints *window.Store
	// CheckpointInterval between a busy partition's checkpoints. Required
	// with Checkpoints.
	CheckpointInterval time.Duration
	// SideState returns entries to write in the same transaction as a
	// partition's checkpoint (the detector's state), and a function called
	// once they are durable. Calls are serialised with the writes, so an
	// entry never overwrites a newer one. Optional.
	SideState func() (side map[string][]byte, saved func())

	// Handover, when set with Checkpoints, carries partitions between
	// instances: a partition revoked (rebalance, shutdown) is published with
	// HandoverSide's entries for its rollouts, and a newly assigned partition
	// continues from the published checkpoint when it is newer than the
	// local one; OnHandover then receives its side entries. Optional.
	Handover     Handover
	HandoverSide func(rollouts []string) map[string][]byte
	OnHandover   func(topic string, partition int32, side map[string][]byte)
}

// Handover publishes and fetches partition checkpoints (sink.StateTopic).
type Handover interface {
	Publish(ctx context.Context, topic string, partition int32, value []byte) error
	Fetch(ctx context.Context, topic string, partitions []int32) (map[int32][]byte, error)
}

func (o *Options) validate() error {
	if len(o.Brokers) == 0 {
		return errors.New("stream: no brokers")
	}
	if o.OnClosed == nil || o.DeadLetters == nil {
		return errors.New("stream: OnClosed and DeadLetters are required")
	}
	if len(o.Topics) == 0 || o.Group == "" {
		return errors.New("stream: Topics and Group are required")
	}
	if o.Checkpoints != nil && o.CheckpointInterval <= 0 {
		return errors.New("stream: CheckpointInterval is required with Checkpoints")
	}
	if o.Metrics == nil {
		o.Metrics = metrics.NewSet()
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Clock == nil {
		o.Clock = time.Now
	}
	if o.LagInterval <= 0 {
		o.LagInterval = 2 * time.Second
	}
	return nil
}

// Consumer consumes the events topic in a consumer group.
//
// Goroutines: Run's poll loop (owns the client's polling), one goroutine per
// assigned partition (started on assign, stopped and waited on revoke, loss
// and shutdown), and Run's lag lister. franz-go runs the rebalance callbacks
// (assigned, revoked, lost, adjustOffsets) on its own goroutine. c.mu guards
// only the parts map and is never held while sending to a partition, waiting
// for one, or doing I/O.
type Consumer struct {
	opts Options
	cl   *kgo.Client
	// abort ends when Run's abort context does: the I/O that stopping
	// waits on gives up (dead letters, handovers, the final commit). Made
	// in New, because the group's callbacks may run before Run.
	abort    context.Context
	abortNow context.CancelFunc

	mu    sync.Mutex // guards parts; held only for map reads and writes
	parts map[tp]*partConsumer

	records, fetchErrors *metrics.Counter
	rejected             sync.Map // reason label → *metrics.Counter

	// ckMu serialises checkpoint writes with the SideState calls that feed
	// them: see Options.SideState.
	ckMu                  sync.Mutex
	checkpoints, ckErrors *metrics.Counter
	ckHealthy             atomic.Bool
	ckSeconds             *metrics.Summary
	ckBytes               atomic.Int64
	rolloutLimit          *metrics.Counter
	sessionsUntracked     *metrics.Counter
	replayedRecords       *metrics.Counter
	unwritten             *metrics.Counter
	lastFetchErr          atomic.Int64 // wall clock, unix ns
	lastContact           atomic.Int64 // wall clock, unix ns: the broker last answered
	groupMembers          atomic.Int64 // members of the group at the last listing, -1 unknown
	topicPartitions       atomic.Int64 // partitions of the consumed topics at the last listing
}

// New validates opts and creates the Kafka client; it starts no goroutine
// until Run.
func New(opts Options) (*Consumer, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	c := &Consumer{opts: opts, parts: map[tp]*partConsumer{}}
	c.abort, c.abortNow = context.WithCancel(context.Background())
	topics := make([]string, 0, len(opts.Topics))
	for t := range opts.Topics {
		topics = append(topics, t)
	}
	c.records = opts.Metrics.NewCounter("canaryd_records_total")
	c.fetchErrors = opts.Metrics.NewCounter("canaryd_fetch_errors_total")
	c.checkpoints = opts.Metrics.NewCounter("canaryd_checkpoints_total")
	c.ckErrors = opts.Metrics.NewCounter("canaryd_checkpoint_errors_total")
	c.ckSeconds = opts.Metrics.NewSummary("canaryd_checkpoint_seconds")
	c.rolloutLimit = opts.Metrics.NewCounter("canaryd_rollouts_limit_total")
	c.sessionsUntracked = opts.Metrics.NewCounter("canaryd_sessions_untracked_total")
	c.replayedRecords = opts.Metrics.NewCounter("canaryd_records_replayed_total")
	c.unwritten = opts.Metrics.NewCounter("canaryd_dead_letters_unwritten_total")
	c.groupMembers.Store(-1)
	opts.Metrics.NewGauge("canaryd_broker_contact_age_seconds", func() float64 {
		last := c.lastContact.Load()
		if last == 0 {
			return -1
		}
		return float64(c.opts.Clock().UnixNano()-last) / 1e9
	})
	c.ckHealthy.Store(true)
	opts.Metrics.NewGauge("canaryd_checkpoint_healthy", func() float64 {
		if c.ckHealthy.Load() {
			return 1
		}
		return 0
	})
	opts.Metrics.NewGauge("canaryd_checkpoint_bytes", func() float64 { return float64(c.ckBytes.Load()) })
	opts.Metrics.NewGauge("canaryd_partitions_assigned", func() float64 {
		c.mu.Lock()
		defer c.mu.Unlock()
		return float64(len(c.parts))
	})
	kopts := append([]kgo.Opt{
		kgo.SeedBrokers(opts.Brokers...),
		kgo.ConsumerGroup(opts.Group),
		kgo.ConsumeTopics(topics...),
		kgo.AutoCommitMarks(),
		kgo.AutoCommitInterval(time.Second),
		kgo.OnPartitionsAssigned(c.assigned),
		kgo.OnPartitionsRevoked(c.revoked),
		kgo.OnPartitionsLost(c.lost),
		kgo.AdjustFetchOffsetsFn(c.adjustOffsets),
		kgo.FetchMaxPartitionBytes(4 << 20),
		kgo.ClientID("canaryd"),
	}, opts.KgoOpts...)
	cl, err := kgo.NewClient(kopts...)
	if err != nil {
		return nil, fmt.Errorf("stream: kafka client: %w", err)
	}
	c.cl = cl
	return c, nil
}

// Client returns the underlying Kafka client (for lag and admin queries).
func (c *Consumer) Client() *kgo.Client { return c.cl }

// Run polls until ctx is done, then stops every partition goroutine
// (flushing their open windows), commits, leaves the group and closes the
// client. The I/O of stopping (dead letters, handovers, the final commit)
// is retried until abort ends. It returns nil on a clean stop.
func (c *Consumer) Run(ctx, abort context.Context) error {
	stopAbort := context.AfterFunc(abort, c.abortNow)
	defer func() { stopAbort(); c.abortNow() }()
	defer c.cl.Close()
	lagCtx, stopLag := context.WithCancel(ctx)
	lagDone := make(chan struct{})
	go func() {
		defer close(lagDone)
		c.listLag(lagCtx)
	}()
	defer func() { stopLag(); <-lagDone }()
	for {
		fetches := c.cl.PollRecords(ctx, 10_000)
		if fetches.IsClientClosed() || ctx.Err() != nil {
			break
		}
		fetches.EachError(func(t string, p int32, err error) {
			c.fetchErrors.Inc()
			c.lastFetchErr.Store(c.opts.Clock().UnixNano())
			c.opts.Logger.Warn("fetch error", "topic", t, "partition", p, "err", err)
		})
		// Hand each partition's records to its goroutine and poll again at
		// once: fetching and decoding overlap. The send waits while the
		// partition is queueBatches behind, which bounds memory, but never
		// under c.mu, and it gives up when the partition is stopped (its
		// records are then its next owner's) or Run's context ends.
		fetches.EachPartition(func(ftp kgo.FetchTopicPartition) {
			if len(ftp.Records) == 0 {
				return
			}
			c.mu.Lock()
			pc := c.parts[tp{ftp.Topic, ftp.Partition}]
			c.mu.Unlock()
			if pc == nil {
				return
			}
			select {
			case pc.work <- ftp:
			case <-pc.quit:
			case <-ctx.Done():
			}
		})
	}
	// Shutdown, in order: stop partition goroutines (they flush their windows
	// and mark their offsets), commit what was marked, then leave the group
	// (the deferred Close). Each step's I/O gives up when abort ends.
	c.stopAll(c.allParts(), stopRevoke)
	cctx, cancel := context.WithTimeout(c.abort, 10*time.Second)
	defer cancel()
	if err := c.cl.CommitMarkedOffsets(cctx); err != nil {
		c.opts.Logger.Warn("final commit failed", "err", err)
	}
	return nil
}

// listLag lists the end offsets of the assigned partitions and the group's
// size every LagInterval until ctx ends: the lag gauges, the broker contact
// time and the group size that readiness reads. It runs on its own
// goroutine and takes c.mu only to copy the assignment.
func (c *Consumer) listLag(ctx context.Context) {
	adm := kadm.NewClient(c.cl)
	topics := make([]string, 0, len(c.opts.Topics))
	for t := range c.opts.Topics {
		topics = append(topics, t)
	}
	tick := time.NewTicker(c.opts.LagInterval)
	defer tick.Stop()
	for {
		lctx, cancel := context.WithTimeout(ctx, max(c.opts.LagInterval, 5*time.Second))
		ends, err := adm.ListEndOffsets(lctx, topics...)
		if err == nil {
			err = ends.Error()
		}
		var members int64 = -1
		if err == nil {
			if gs, gerr := adm.DescribeGroups(lctx, c.opts.Group); gerr == nil {
				if g, ok := gs[c.opts.Group]; ok && g.Err == nil {
					members = int64(len(g.Members))
				}
			}
		}
		cancel()
		if err == nil {
			c.lastContact.Store(c.opts.Clock().UnixNano())
			c.groupMembers.Store(members)
			n := int64(0)
			ends.Each(func(o kadm.ListedOffset) { n++ })
			c.topicPartitions.Store(n)
			c.mu.Lock()
			for k, pc := range c.parts {
				if o, ok := ends.Lookup(k.topic, k.p); ok && o.Err == nil {
					pc.end.Store(o.Offset)
					if pos := pc.pos.Load(); pos >= 0 {
						pc.lagGauge.Set(float64(max(o.Offset-pos, 0)))
					}
				}
			}
			c.mu.Unlock()
			if c.opts.OnListed != nil {
				c.opts.OnListed(c.Health())
			}
		} else if ctx.Err() == nil {
			c.opts.Logger.Debug("listing end offsets failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// Health describes the consumer for readiness checks.
type Health struct {
	Assigned int // partitions owned by this instance
	// LastContact is when the broker last answered a listing (zero: never).
	LastContact time.Time
	// GroupMembers is the group's size at the last listing, -1 when unknown;
	// TopicPartitions the consumed topics' partitions then.
	GroupMembers, TopicPartitions int
}

// Health returns the consumer's health. It takes no lock held across I/O.
func (c *Consumer) Health() Health {
	c.mu.Lock()
	n := len(c.parts)
	c.mu.Unlock()
	h := Health{Assigned: n, GroupMembers: int(c.groupMembers.Load()), TopicPartitions: int(c.topicPartitions.Load())}
	if t := c.lastContact.Load(); t != 0 {
		h.LastContact = time.Unix(0, t)
	}
	return h
}

// tp names one partition of one topic.
type tp struct {
	topic string
	p     int32
}

func (c *Consumer) allParts() map[string][]int32 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string][]int32{}
	for k := range c.parts {
		out[k.topic] = append(out[k.topic], k.p)
	}
	return out
}

func (c *Consumer) assigned(ctx context.Context, _ *kgo.Client, assigned map[string][]int32) {
	var fresh []*partConsumer
	c.mu.Lock()
	for topic, ps := range assigned {
		for _, p := range ps {
			if c.parts[tp{topic, p}] == nil {
				fresh = append(fresh, c.newPart(topic, p))
			}
		}
	}
	c.mu.Unlock()
	// Checkpoints are read before the partitions are registered (and c.mu
	// taken again): the poll loop is not held up meanwhile.
	for _, pc := range fresh {
		pc.loadCheckpoint()
	}
	c.fetchHandovers(ctx, fresh)
	c.mu.Lock()
	for _, pc := range fresh {
		c.parts[tp{pc.topic, pc.id}] = pc
		go pc.run()
	}
	c.mu.Unlock()
	c.opts.Logger.Info("partitions assigned", "partitions", assigned)
}

// fetchHandovers reads the published checkpoints of newly assigned
// partitions and keeps each one that is newer (further in the partition)
// than the local checkpoint, for adjustOffsets to decide on.
func (c *Consumer) fetchHandovers(ctx context.Context, pcs []*partConsumer) {
	if c.opts.Handover == nil || c.opts.Checkpoints == nil || len(pcs) == 0 {
		return
	}
	byTopic := map[string][]int32{}
	for _, pc := range pcs {
		byTopic[pc.topic] = append(byTopic[pc.topic], pc.id)
	}
	fctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	got := map[tp][]byte{}
	for topic, ps := range byTopic {
		vs, err := c.opts.Handover.Fetch(fctx, topic, ps)
		if err != nil {
			c.opts.Logger.Error("reading the state topic failed: these partitions start from their local checkpoint or the commit", "partitions_of", topic, "err", err)
			continue
		}
		for p, v := range vs {
			got[tp{topic, p}] = v
		}
	}
	for _, pc := range pcs {
		v := got[tp{pc.topic, pc.id}]
		if v == nil {
			continue
		}
		ck, side, err := window.DecodeHandover(v)
		var part *window.Partition
		if err == nil {
			part, err = window.RestorePartition(pc.id, pc.wopts, ck.Snapshot)
		}
		if err != nil {
			c.restoreCounter("handover_corrupt").Inc()
			c.opts.Logger.Error("published checkpoint corrupt: ignored", "topic", pc.topic, "partition", pc.id, "err", err)
			continue
		}
		if pc.pending != nil && pc.pending.Next >= ck.Next {
			continue // the local one is as new
		}
		pc.pending, pc.pendingPart, pc.pendingSide = &ck, part, side
		pc.handedOver = true
	}
}

// adjustOffsets runs after the group's committed offsets of newly assigned
// partitions are fetched and before fetching starts: a partition whose
// checkpoint is at least as new as the group's commit resumes at the
// checkpoint's offset, with its open windows; otherwise (the group went
// past it: another instance consumed the partition meanwhile) the
// checkpoint is stale and consumption starts at the commit.
func (c *Consumer) adjustOffsets(_ context.Context, offsets map[string]map[int32]kgo.Offset) (map[string]map[int32]kgo.Offset, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for topic, ps := range offsets {
		for p, o := range ps {
			pc := c.parts[tp{topic, p}]
			if pc == nil || pc.pending == nil {
				continue
			}
			ck, part, side, handedOver := pc.pending, pc.pendingPart, pc.pendingSide, pc.handedOver
			pc.pending, pc.pendingPart, pc.pendingSide = nil, nil, nil
			committed := o.EpochOffset().Offset
			if committed >= 0 && committed > ck.Commit {
				c.restoreCounter("stale").Inc()
				c.opts.Logger.Warn("checkpoint stale: the group committed past it; replaying from the commit",
					"topic", topic, "partition", p, "checkpoint_commit", ck.Commit, "checkpoint_next", ck.Next, "group_commit", committed)
				continue
			}
			result := "restored"
			if handedOver {
				result = "handed_over"
				if c.opts.OnHandover != nil {
					c.opts.OnHandover(topic, p, side)
				}
			}
			c.restoreCounter(result).Inc()
			at := ck.Next
			if pc.state != nil {
				at = ck.Replay // rebuild the decoder's state (see muteUntil)
			}
			ps[p] = kgo.NewOffset().At(at).WithEpoch(-1)
			pc.resume <- resumeState{part: part, next: ck.Next, replay: ck.Replay, epoch: ck.Epoch, commit: ck.Commit}
			c.opts.Logger.Info("partition resumes from its checkpoint", "topic", topic, "partition", p, "offset", ck.Next, "handed_over", handedOver,
				"group_commit", committed, "open_windows", part.OpenWindows(), "saved", time.Unix(0, ck.SavedAt).UTC())
		}
	}
	return offsets, nil
}

func (c *Consumer) restoreCounter(result string) *metrics.Counter {
	return c.opts.Metrics.GetOrCreateCounter(`canaryd_checkpoint_restores_total{result="` + result + `"}`)
}

func (c *Consumer) revoked(ctx context.Context, cl *kgo.Client, revoked map[string][]int32) {
	c.stopAll(revoked, stopRevoke)
	if err := cl.CommitMarkedOffsets(ctx); err != nil {
		c.opts.Logger.Warn("commit on revoke failed", "err", err)
	}
	c.opts.Logger.Info("partitions revoked", "partitions", revoked)
}

func (c *Consumer) lost(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
	// Lost partitions may already be someone else's: do not flush half
	// windows into the detector as if they were complete, and commit
	// nothing. With checkpoints, the state is saved (not committed): if the
	// partition comes back and nobody went past it, it resumes from there.
	c.stopAll(lost, stopLost)
	c.opts.Logger.Warn("partitions lost", "partitions", lost)
}

// How a partition goroutine stops.
type stopMode int

const (
	stopRevoke stopMode = iota // revoke or shutdown: save (flush without checkpoints) and mark
	stopLost                   // lost: save a checkpoint if there are checkpoints; mark nothing
)

func (c *Consumer) stopAll(tps map[string][]int32, mode stopMode) {
	var stopped []*partConsumer
	c.mu.Lock()
	for topic, ps := range tps {
		for _, p := range ps {
			if pc := c.parts[tp{topic, p}]; pc != nil {
				delete(c.parts, tp{topic, p})
				stopped = append(stopped, pc)
			}
		}
	}
	c.mu.Unlock()
	for _, pc := range stopped {
		pc.mode = mode
		close(pc.quit)
		// A stopping partition's retries (dead letters) give up after
		// stopGrace, or at once when Run's abort context ends.
		t := time.AfterFunc(stopGrace, pc.ioCancel)
		defer t.Stop()
	}
	for _, pc := range stopped {
		<-pc.done
	}
}

// stopGrace bounds how long a stopping partition retries its dead letters.
const stopGrace = 10 * time.Second

func (c *Consumer) rejectCounter(reason string) *metrics.Counter {
	label := reasonLabel(reason)
	if v, ok := c.rejected.Load(label); ok {
		return v.(*metrics.Counter)
	}
	ctr := c.opts.Metrics.GetOrCreateCounter(`canaryd_records_rejected_total{reason="` + label + `"}`)
	c.rejected.Store(label, ctr)
	return ctr
}

// reasonLabel reduces a reason to a bounded metric label: the field name of
// a DecodeError, or a fixed word.
func reasonLabel(reason string) string {
	for i := 0; i < len(reason); i++ {
		if reason[i] == ':' {
			reason = reason[:i]
			break
		}
	}
	if len(reason) > 40 {
		reason = reason[:40]
	}
	b := []byte(reason)
	for i, ch := range b {
		if !(ch >= 'a' && ch <= 'z' || ch >= '0' && ch <= '9' || ch == '_' || ch == '.' || ch == ' ') {
			b[i] = '_'
		}
	}
	return string(b)
}

// queueBatches is how many polled batches a partition may have waiting.
const queueBatches = 4

// partConsumer owns one partition: its goroutine is the only writer of part.
type partConsumer struct {
	c     *Consumer
	topic string
	id    int32
	part  *window.Partition
	wopts window.Options
	dec   Decoder
	state Stateful                     // dec, when it holds state across records
	emit  func(*schemas.Event)         // pc.add, bound once
	mute  func(*schemas.Event)         // drops events of replayed records
	off   int64                        // offset of the record being decoded
	err   error                        // first refusal of an event of the record
	work  chan kgo.FetchTopicPartition // batches from the poll loop
	quit  chan struct{}                // closed to stop; work is drained first
	done  chan struct{}
	mode  stopMode // set before quit is closed
	// ioCtx bounds the partition's retried writes (dead letters): it ends
	// stopGrace after quit, or with Run's abort context.
	ioCtx    context.Context
	ioCancel context.CancelFunc
	end      atomic.Int64 // the broker's end offset at the last listing (listLag)
	pos      atomic.Int64 // next, for listLag
	// holdAt caps the offsets marked for commit: the offset of the first
	// dead letter that could not be written (-1: none), so that it is read
	// again rather than lost.
	holdAt int64
	// closed holds the windows closed since the last publish (with
	// Options.Partials); stuck is set when publishing them was given up:
	// nothing further is checkpointed or marked.
	closed []window.Closed
	stuck  bool
	// untracked is the partition's SessionsUntracked at the last batch.
	untracked int

	next     int64 // offset after the last record processed
	epoch    int32
	dead     []DeadLetter
	lagGauge *metrics.Gauge
	started  time.Time // wall clock at assignment
	// muteUntil: records before it are decoded again only to rebuild the
	// decoder's state after a restore (checkpoint.Replay); their events
	// were counted before the checkpoint.
	muteUntil   int64
	liveGauge   *metrics.Gauge
	limitLogged bool // the live-rollout limit was reported
	late        lateEvents
	backlog     bool // the last batch ended behind the high watermark

	// Checkpoints. pending and pendingPart are the loaded checkpoint until
	// adjustOffsets decides on it (under c.mu); resume carries the decision
	// to the goroutine before any record is fetched.
	pending     *window.Checkpoint
	pendingPart *window.Partition
	pendingSide map[string][]byte // side entries of a published checkpoint
	handedOver  bool              // pending came from the state topic
	resume      chan resumeState
	lastCk      time.Time
	ckNext      int64 // next at the last checkpoint
	ckOpen      int   // open windows at the last checkpoint
	ckBuf       bytes.Buffer
}

// resumeState is a checkpoint to resume from.
type resumeState struct {
	part   *window.Partition
	next   int64
	replay int64
	epoch  int32
	commit int64 // the checkpoint's commit offset
}

func (c *Consumer) newPart(topic string, id int32) *partConsumer {
	wopts := c.opts.Window
	wopts.Emit = c.opts.OnClosed
	wopts.Source = topic
	pc := &partConsumer{c: c, topic: topic, id: id, part: window.NewPartition(id, wopts), wopts: wopts, dec: c.opts.Topics[topic](),
		work: make(chan kgo.FetchTopicPartition, queueBatches), quit: make(chan struct{}), done: make(chan struct{}), next: -1, epoch: -1,
		resume: make(chan resumeState, 1), started: c.opts.Clock(), ckNext: -1, holdAt: -1}
	if c.opts.Partials != nil {
		pc.wopts.Emit = func(cw window.Closed) { pc.closed = append(pc.closed, cw) }
		pc.part = window.NewPartition(id, pc.wopts)
	}
	pc.ioCtx, pc.ioCancel = context.WithCancel(c.abort)
	pc.end.Store(-1)
	pc.pos.Store(-1)
	pc.emit = pc.add
	pc.mute = func(*schemas.Event) {}
	pc.state, _ = pc.dec.(Stateful)
	// One gauge per partition, whoever owns it over time: the latest owner's
	// positions are read.
	lag := c.opts.Metrics.GetOrCreateGauge(`canaryd_consumer_lag{topic="`+topic+`",partition="`+strconv.Itoa(int(id))+`"}`, nil)
	pc.lagGauge = lag
	pc.liveGauge = c.opts.Metrics.GetOrCreateGauge(`canaryd_live_rollouts{topic="`+topic+`",partition="`+strconv.Itoa(int(id))+`"}`, nil)
	return pc
}

// loadCheckpoint reads the partition's checkpoint into pending, for
// adjustOffsets to decide on. A corrupt one is reported and ignored:
// recovery then replays from the group's commit, which never runs ahead of
// a checkpoint that was written.
func (pc *partConsumer) loadCheckpoint() {
	c := pc.c
	if c.opts.Checkpoints == nil {
		return
	}
	ck, err := c.opts.Checkpoints.Load(pc.topic, pc.id)
	var part *window.Partition
	if err == nil {
		part, err = window.RestorePartition(pc.id, pc.wopts, ck.Snapshot)
	}
	switch {
	case errors.Is(err, window.ErrNoCheckpoint):
		c.restoreCounter("none").Inc()
	case errors.Is(err, window.ErrCorrupt):
		c.restoreCounter("corrupt").Inc()
		c.opts.Logger.Error("checkpoint corrupt: ignored; replaying from the group's committed offset", "topic", pc.topic, "partition", pc.id, "err", err)
	case err != nil:
		c.restoreCounter("error").Inc()
		c.opts.Logger.Error("checkpoint unreadable: ignored; replaying from the group's committed offset", "topic", pc.topic, "partition", pc.id, "err", err)
	default:
		pc.pending, pc.pendingPart = &ck, part
	}
}

// add counts one decoded event; late events are counted per rollout, logged
// (rate-limited: late.go) and dropped, other refusals send the record to the
// DLQ.
func (pc *partConsumer) add(ev *schemas.Event) {
	if err := pc.part.Add(ev, pc.off); err != nil {
		if errors.Is(err, window.ErrLate) {
			pc.countLate(ev)
			return
		}
		if errors.Is(err, window.ErrTooManyRoll) {
			pc.c.rolloutLimit.Inc()
			if !pc.limitLogged {
				pc.limitLogged = true
				pc.c.opts.Logger.Error("partition at its live-rollout limit: events of new rollouts go to the DLQ until idle rollouts are evicted (raise window MaxRollouts or lower EvictAfter)",
					"topic", pc.topic, "partition", pc.id, "live", pc.part.LiveRollouts())
			}
		}
		if pc.err == nil {
			pc.err = err
		}
	}
}

func (pc *partConsumer) run() {
	defer close(pc.done)
	defer pc.ioCancel()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case ftp := <-pc.work:
			pc.applyResume()
			pc.process(ftp)
		case <-pc.quit:
			// Batches already handed over are processed before stopping.
			for {
				select {
				case ftp := <-pc.work:
					pc.applyResume()
					pc.process(ftp)
					continue
				default:
				}
				break
			}
			pc.stop()
			return
		case <-tick.C:
			pc.applyResume()
			// Quiet partitions still close windows as the wall clock moves.
			pc.setNow()
			pc.part.Advance()
			pc.publishPartials()
			pc.reportLate() // the rest of a burst of late events, 10 s on
			pc.save()
		}
	}
}

func (pc *partConsumer) applyResume() {
	select {
	case r := <-pc.resume:
		pc.part, pc.next, pc.epoch = r.part, r.next, r.epoch
		pc.untracked = pc.part.SessionsUntracked()
		if pc.state != nil {
			pc.muteUntil = r.next
		}
		pc.ckNext, pc.ckOpen = r.next, r.part.OpenWindows()
		pc.lastCk = pc.c.opts.Clock()
		// The checkpoint is durable: its commit may be committed now. A
		// crash between a checkpoint and its commit would otherwise leave
		// the group's offset behind until new records arrive.
		pc.mark(r.commit)
	default:
	}
}

// setNow gives the partition the wall clock, and holds its idle rule while
// the wall clock says nothing about the stream's progress: while the
// partition has a backlog, while fetches fail (a broker outage: producers
// buffer meanwhile), and for Idle after assignment (a restart's backlog).
func (pc *partConsumer) setNow() {
	now := pc.c.opts.Clock()
	pc.part.SetNow(now)
	idle := pc.part.IdleAfter()
	hold := pc.backlog || now.Sub(pc.started) < idle || now.UnixNano()-pc.c.lastFetchErr.Load() < int64(idle)
	pc.part.HoldIdle(hold)
}

func (pc *partConsumer) stop() {
	pc.applyResume()
	if pc.c.opts.Checkpoints == nil {
		switch {
		case pc.mode != stopRevoke:
		case pc.c.opts.Partials != nil:
			// Two stages: one judge sees every owner's windows of the
			// partition, and ignores a window it has seen, so an open
			// window flushed here would lose the rest of its records,
			// which the next owner would publish under the same identity.
			// Commit at the oldest open window (and the oldest record the
			// decoder holds): the next owner rebuilds those windows whole,
			// and its replays of windows published here are ignored.
			pc.mark(min(pc.part.CommitOffset(pc.next), pc.replayFrom()))
		default:
			// One stage: the windows are judged here as far as they go;
			// the rest of their records go to the next owner's judge.
			pc.part.Flush()
			pc.mark(pc.part.CommitOffset(pc.next))
		}
		return
	}
	// With checkpoints, open windows are saved, not flushed: whoever
	// resumes the partition completes them.
	pc.checkpoint(pc.mode == stopRevoke)
	if pc.mode == stopRevoke {
		pc.publish()
	}
}

// publish hands the partition over: its checkpoint and its rollouts' judge
// states go to the state topic before the revoke commits, so that the next
// owner continues from them. A failure is logged: the next owner then
// replays from the commit.
func (pc *partConsumer) publish() {
	c := pc.c
	if c.opts.Handover == nil || pc.next < 0 || pc.holdAt >= 0 || pc.stuck {
		return
	}
	var buf bytes.Buffer
	if err := pc.part.Snapshot(&buf); err != nil {
		panic("BUG: snapshot of a partition failed: " + err.Error())
	}
	replay := pc.replayFrom()
	ck := window.Checkpoint{Next: pc.next, Epoch: pc.epoch, Commit: min(pc.part.CommitOffset(pc.next), replay), Replay: replay,
		SavedAt: c.opts.Clock().UnixNano(), Snapshot: buf.Bytes()}
	var side map[string][]byte
	if c.opts.HandoverSide != nil {
		side = c.opts.HandoverSide(pc.part.Rollouts())
	}
	v := window.EncodeHandover(ck, side)
	ctx, cancel := context.WithTimeout(c.abort, 10*time.Second)
	defer cancel()
	if err := c.opts.Handover.Publish(ctx, pc.topic, pc.id, v); err != nil {
		c.opts.Logger.Error("handing the partition over failed: its next owner replays from the commit", "topic", pc.topic, "partition", pc.id, "err", err)
		return
	}
	c.opts.Logger.Info("partition handed over", "topic", pc.topic, "partition", pc.id, "offset", pc.next, "bytes", len(v), "judges", len(side))
}

func (pc *partConsumer) process(ftp kgo.FetchTopicPartition) {
	c := pc.c
	pc.setNow()
	for _, r := range ftp.Records {
		pc.off, pc.err = r.Offset, nil
		if pc.state != nil {
			pc.state.SetOffset(r.Offset)
		}
		if r.Offset < pc.muteUntil {
			// Counted before the checkpoint (and dead-lettered, if bad):
			// decoded only to rebuild the decoder's state.
			_ = pc.dec.Decode(r.Value, pc.mute)
			c.replayedRecords.Inc()
			continue
		}
		if err := pc.dec.Decode(r.Value, pc.emit); err != nil {
			pc.dead = append(pc.dead, DeadLetter{Record: r, Reason: err.Error()})
		} else if pc.err != nil {
			pc.dead = append(pc.dead, DeadLetter{Record: r, Reason: pc.err.Error()})
		}
		pc.next = r.Offset + 1
		pc.epoch = r.LeaderEpoch
	}
	c.records.Add(len(ftp.Records))
	pc.part.Advance()
	pc.publishPartials()
	if len(pc.dead) > 0 {
		pc.writeDead()
	}
	pc.liveGauge.Set(float64(pc.part.LiveRollouts()))
	if n := pc.part.SessionsUntracked(); n > pc.untracked {
		c.sessionsUntracked.Add(n - pc.untracked)
		pc.untracked = n
	}
	pc.pos.Store(pc.next)
	end := ftp.HighWatermark
	if end > 0 {
		pc.backlog = pc.next < end
	}
	if e := pc.end.Load(); e > end {
		end = e
	}
	if end > 0 {
		pc.lagGauge.Set(float64(max(end-pc.next, 0)))
	}
	pc.save()
}

// writeDead writes the batch's dead letters before the offsets that pass
// them are marked, retrying with backoff until they are written or ioCtx
// ends (the partition is stopping, or shutdown is out of time). Dead letters
// given up are counted and logged, and the offsets marked from then on stay
// at the first of them, so that they are read again rather than lost.
func (pc *partConsumer) writeDead() {
	c := pc.c
	err := pc.retry("dead-letter write failed; retrying", "records", len(pc.dead), func() error {
		return c.opts.DeadLetters(pc.ioCtx, pc.dead)
	})
	if err == nil {
		for _, d := range pc.dead {
			c.rejectCounter(d.Reason).Inc()
		}
	} else {
		if pc.holdAt < 0 {
			pc.holdAt = pc.dead[0].Record.Offset
		}
		c.unwritten.Add(len(pc.dead))
		c.opts.Logger.Error("dead letters not written: stopping; their offsets are not committed, so they are read again",
			"topic", pc.topic, "partition", pc.id, "records", len(pc.dead), "first_offset", pc.dead[0].Record.Offset, "err", err)
	}
	clear(pc.dead)
	pc.dead = pc.dead[:0]
}

// retry calls write until it returns nil or ioCtx ends, logging each failure
// with msg and waiting 100 ms, doubling to 5 s, in between; it returns the
// last error when ioCtx ended first.
func (pc *partConsumer) retry(msg, countKey string, count int, write func() error) error {
	backoff := 100 * time.Millisecond
	for {
		err := write()
		if err == nil || pc.ioCtx.Err() != nil {
			return err
		}
		pc.c.opts.Logger.Error(msg, "topic", pc.topic, "partition", pc.id, countKey, count, "retry_in", backoff, "err", err)
		select {
		case <-pc.ioCtx.Done():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// publishPartials hands the windows closed since the last call to
// Options.Partials, retrying with backoff until they are durable or ioCtx
// ends; given up, the partition is stuck: no later checkpoint or mark, so
// that a restart rebuilds and publishes them again.
func (pc *partConsumer) publishPartials() {
	c := pc.c
	if len(pc.closed) == 0 || pc.stuck {
		return
	}
	err := pc.retry("publishing partials failed; retrying", "windows", len(pc.closed), func() error {
		return c.opts.Partials(pc.ioCtx, pc.closed)
	})
	if err != nil {
		pc.stuck = true
		c.opts.Logger.Error("partials not published: stopping; the partition's offsets are not committed past them, so they are rebuilt and published again",
			"topic", pc.topic, "partition", pc.id, "windows", len(pc.closed), "err", err)
	}
	clear(pc.closed)
	pc.closed = pc.closed[:0]
}

// save marks offsets for commit: at once without checkpoints, or through a
// checkpoint every CheckpointInterval.
func (pc *partConsumer) save() {
	if pc.c.opts.Checkpoints == nil {
		if pc.next >= 0 {
			pc.mark(pc.part.CommitOffset(pc.next))
		}
		return
	}
	if pc.c.opts.Clock().Sub(pc.lastCk) >= pc.c.opts.CheckpointInterval {
		pc.checkpoint(true)
	}
}

// checkpoint writes the partition's open windows and offsets, with the
// detector's state, in one transaction; once it is durable, and if mark,
// the offset it holds is marked for commit. A failed write is counted and
// logged, and nothing is marked: the committed offset stays behind what no
// checkpoint holds, and judging goes on from memory.
func (pc *partConsumer) checkpoint(mark bool) {
	c := pc.c
	pc.lastCk = c.opts.Clock()
	if pc.next < 0 || pc.next == pc.ckNext && pc.part.OpenWindows() == pc.ckOpen {
		return // nothing consumed, or nothing changed since the last one
	}
	if pc.holdAt >= 0 || pc.stuck {
		// A dead letter or a partial was given up (see writeDead,
		// publishPartials): the last checkpoint, from before it, stays the
		// one to resume from, so that it is read and written again.
		return
	}
	start := time.Now()
	pc.ckBuf.Reset()
	if err := pc.part.Snapshot(&pc.ckBuf); err != nil {
		panic("BUG: snapshot of a partition failed: " + err.Error())
	}
	replay := pc.replayFrom()
	commit := min(pc.part.CommitOffset(pc.next), replay)
	ck := window.Checkpoint{Next: pc.next, Epoch: pc.epoch, Commit: commit, Replay: replay, SavedAt: pc.lastCk.UnixNano(), Snapshot: pc.ckBuf.Bytes()}
	c.ckMu.Lock()
	var side map[string][]byte
	var saved func()
	if c.opts.SideState != nil {
		side, saved = c.opts.SideState()
	}
	err := c.opts.Checkpoints.Save(pc.topic, pc.id, ck, side)
	if err == nil && saved != nil {
		saved()
	}
	c.ckMu.Unlock()
	if err != nil {
		c.ckErrors.Inc()
		if c.ckHealthy.Swap(false) {
			c.opts.Logger.Error("checkpoint failed: judging goes on from memory; offsets are not committed until a checkpoint succeeds",
				"topic", pc.topic, "partition", pc.id, "err", err)
		}
		return
	}
	if !c.ckHealthy.Swap(true) {
		c.opts.Logger.Info("checkpoints succeed again", "topic", pc.topic, "partition", pc.id)
	}
	c.checkpoints.Inc()
	c.ckSeconds.UpdateDuration(start)
	c.ckBytes.Store(int64(pc.ckBuf.Len()))
	pc.ckNext, pc.ckOpen = pc.next, pc.part.OpenWindows()
	if mark {
		pc.mark(commit)
	}
}

// replayFrom returns where a recovery from a checkpoint taken now reads
// from: the oldest record the decoder still holds data of, else next.
func (pc *partConsumer) replayFrom() int64 {
	if pc.state != nil {
		if h := pc.state.OldestHeld(); h >= 0 && h < pc.next {
			return h
		}
	}
	return pc.next
}

// mark marks off for commit: every record before it has reached the
// detector (or the DLQ), or is in a checkpoint.
func (pc *partConsumer) mark(off int64) {
	if pc.stuck {
		return
	}
	if pc.holdAt >= 0 {
		off = min(off, pc.holdAt)
	}
	pc.c.cl.MarkCommitOffsets(map[string]map[int32]kgo.EpochOffset{
		pc.topic: {pc.id: {Epoch: pc.epoch, Offset: off}},
	})
}
